"""What a database URL says: where the server is, TLS, and whether a transaction pooler is in front.

flowbot takes libpq-style URLs (``postgres://``, ``postgresql://``) and reads three things from
their query string besides what the driver (asyncpg) understands itself:

- ``sslmode=disable|allow|prefer|require|verify-ca|verify-full``: TLS, as libpq spells it (asyncpg
  calls the parameter ``ssl``); ``connect_timeout=SECONDS`` likewise (asyncpg's ``timeout``).
- ``pool_mode=transaction``: the URL is a connection pooler in transaction mode (PgBouncer's
  ``pool_mode``). Prepared statements are then unnamed and never cached (a pooler hands each
  transaction to any server connection, where a named statement may be missing or taken), and
  ``LISTEN`` is never sent through it (see ``FLOWBOT_LISTEN_URL``). ``session`` (the default)
  is a direct connection or a session pooler: everything works.
- ``statement_cache_size=N``: prepared statements kept per connection (asyncpg's own parameter;
  100 by default, 0 with ``pool_mode=transaction``). PgBouncer 1.21 and newer with
  ``max_prepared_statements`` set can keep the cache in transaction mode: give it explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL, make_url

from engine.errors import ConfigError
from engine.store.embedded import sqlalchemy_url

#: Pool modes flowbot knows (PgBouncer's names; ``statement`` mode cannot run transactions).
POOL_MODES = ("session", "transaction")
#: asyncpg's default prepared-statement cache per connection.
DEFAULT_STATEMENT_CACHE = 100
#: Seconds a new connection may take (asyncpg waits 60 by default: a failover to an address
#: that drops packets would hold every request that long).
DEFAULT_CONNECT_TIMEOUT = 5.0


def _unnamed() -> str:
    # SQLAlchemy's own statements (migrations, its first-connect checks) as unnamed statements:
    # with the cache off, asyncpg sends them as Parse+Bind+Execute in one round trip.
    return ""


@dataclass(frozen=True)
class Target:
    """One database to connect to, as ``parse`` read it from a URL."""

    #: The SQLAlchemy asyncpg URL, without flowbot's own parameters.
    url: str
    pool_mode: str = "session"
    statement_cache: int = DEFAULT_STATEMENT_CACHE
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT

    @property
    def pooled_by_transaction(self) -> bool:
        """Whether a transaction-mode pooler is in front (no LISTEN, no session state)."""
        return self.pool_mode == "transaction"

    def connect_args(self) -> dict[str, Any]:
        """Keyword arguments for ``create_async_engine(connect_args=...)``."""
        args: dict[str, Any] = {"statement_cache_size": self.statement_cache, "timeout": self.connect_timeout}
        if self.statement_cache == 0:
            args["prepared_statement_cache_size"] = 0
            args["prepared_statement_name_func"] = _unnamed
        return args

    def asyncpg_args(self) -> dict[str, Any]:
        """Keyword arguments for ``asyncpg.connect`` (a connection outside the pool: LISTEN)."""
        from sqlalchemy.dialects.postgresql.asyncpg import dialect

        _, kwargs = dialect().create_connect_args(make_url(self.url))
        kwargs.pop("prepared_statement_cache_size", None)
        return {**kwargs, "statement_cache_size": self.statement_cache, "timeout": self.connect_timeout}

    def describe(self) -> str:
        """The URL without its password (for logs)."""
        return make_url(self.url).render_as_string(hide_password=True)


def parse(url: str) -> Target:
    """Read ``url`` (see the module); raises ConfigError for a parameter flowbot cannot use."""
    u: URL = make_url(sqlalchemy_url(url))
    query = dict(u.query)
    pool_mode = str(query.pop("pool_mode", "session"))
    if pool_mode not in POOL_MODES:
        raise ConfigError(f"pool_mode={pool_mode} in the database URL: flowbot runs with "
                          f"{' or '.join(POOL_MODES)} pooling")
    default_cache = 0 if pool_mode == "transaction" else DEFAULT_STATEMENT_CACHE
    cache = _number(query.pop("statement_cache_size", None), "statement_cache_size", default_cache)
    timeout = _number(query.pop("connect_timeout", query.pop("timeout", None)), "connect_timeout",
                      DEFAULT_CONNECT_TIMEOUT)
    if "sslmode" in query:
        query.setdefault("ssl", query["sslmode"])
        del query["sslmode"]
    u = u.set(query=query)
    return Target(u.render_as_string(hide_password=False), pool_mode, int(cache), float(timeout))


def _number(raw: Any, name: str, default: float) -> float:
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw} in the database URL is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw} in the database URL must not be negative")
    return value
