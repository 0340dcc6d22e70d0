"""``tests/integration/test_api.py``, every test, through PgBouncer in transaction mode."""
# ruff: noqa: F401, F403 (the order matters: the scenario's names, then the pooler's fixtures)

import through_pgbouncer
from test_api import *
from through_pgbouncer import database_url, db, pooled
