"""The HTTP edge: the aiohttp server (``server``) and the JSON API under ``/api``: who is acting
and the reading routes (``api``), the operations (``api_ops``), its OpenAPI document
(``openapi``) and what handlers read from a request (``requests``).

May import: every engine layer below it (``triggers``, ``people``, ``runtime``, ``store``, the
authoring layer). Never ``cli`` or ``bot``.
"""
