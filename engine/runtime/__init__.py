"""What runs stages: the worker, the stage runner, the outbox dispatcher, the app's lifecycle,
plugins and run reports.

May import: ``engine.store`` and the authoring layer. Never ``people``, ``triggers``, ``web``,
``cli`` or ``bot``.
"""
