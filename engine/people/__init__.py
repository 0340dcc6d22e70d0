"""The engine side of people: submitting forms, claiming and reassigning tasks, form sessions.

Every edge (Slack, the API, the CLI) acts on a person's task through ``actions``.

May import: ``engine.runtime``, ``engine.store`` and the authoring layer. Never ``triggers``,
``web``, ``cli`` or ``bot``.
"""
