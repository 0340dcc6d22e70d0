"""The HTTP edge: the aiohttp server (``server``) and the JSON API under ``/api`` (``api``).

May import: every engine layer below it (``triggers``, ``people``, ``runtime``, ``store``, the
authoring layer). Never ``cli`` or ``bot``.
"""
