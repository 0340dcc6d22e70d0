"""Everything that talks to Postgres.

The connector (``db``) and what a database URL says (``dburl``: TLS, a pooler in front), every
statement the engine sends (``queries``), the table models (``models`` and its siblings), the task
store (``tasks``), group commit, binary COPY, ids, fan-out rows, migrations and the embedded
Postgres.

May import: the authoring layer at the top of ``engine`` (workflows, context, routing, errors,
settings). Never ``runtime``, ``people``, ``triggers``, ``web``, ``cli`` or ``bot``.
"""
