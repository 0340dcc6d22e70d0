"""What starts work without a person: HTTP hooks (``hooks``), cron jobs (``jobs``) and their
schedules.

May import: ``engine.people``, ``engine.runtime``, ``engine.store`` and the authoring layer.
Never ``web``, ``cli`` or ``bot``.
"""
