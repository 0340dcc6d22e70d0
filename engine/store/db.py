"""The connector: the only module that talks to the database driver.

Everything else gets a ``Database`` and runs the named statements of ``engine.store.queries`` through
it. Driver errors are translated at this boundary into ``engine.errors.DatabaseError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import sqlalchemy.exc
from sqlalchemy import TextClause, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from engine import metrics
from engine.errors import DatabaseError, SchemaNotReady
from engine.store import pgcopy, queries
from engine.store.embedded import sqlalchemy_url

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "flowbot_tasks"

Row = Mapping[str, Any]


@contextlib.contextmanager
def wrap_exceptions() -> Any:
    """Turn driver and SQLAlchemy errors into flowbot's DatabaseError."""
    try:
        yield
    except (sqlalchemy.exc.DBAPIError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        metrics.database_error()
        raise DatabaseError(str(getattr(exc, "orig", None) or exc)) from exc


def _json_codecs(dbapi_connection: Any, _record: Any) -> None:
    """JSON in and out as Python values: queries pass dicts and lists, rows hold them.

    (SQLAlchemy's own codec expects pre-serialised strings from its JSON type, which plain
    ``text()`` statements do not have.)
    """

    async def setup(conn: Any) -> None:
        for typename in ("json", "jsonb"):
            await conn.set_type_codec(
                typename, encoder=_dumps, decoder=json.loads, schema="pg_catalog", format="text"
            )
        # The driver learns each array type a connection has not seen yet with a catalog query
        # (three round trips) in the middle of the statement that first passes one: a burst
        # paid that per connection and per type. All of them at once here instead.
        await conn.prepare(_ARRAY_TYPES)

    dbapi_connection.run_async(setup)


#: The array types statements pass (ids, counts, names, timestamps, JSON values).
_ARRAY_TYPES = ("SELECT CAST($1 AS uuid[]), CAST($2 AS bigint[]), CAST($3 AS int[]), CAST($4 AS text[]), "
                "CAST($5 AS jsonb[]), CAST($6 AS float8[]), CAST($7 AS timestamptz[]), CAST($8 AS bool[])")


#: One encoder for every value (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def _dumps(value: Any) -> str:
    # Empty values are the common case (no log, nothing unrouted, no run context).
    if not value and isinstance(value, list | dict):
        return "[]" if isinstance(value, list) else "{}"
    return _ENCODER.encode(value)


def json_text(value: Any) -> str:
    """``value`` as the JSON text the jsonb parameters of every statement are sent as (for rows
    built outside a statement: binary COPY data)."""
    return _dumps(value)


def jsonb_array(values: Iterable[Any]) -> list[str | None]:
    """A ``jsonb[]`` parameter: each element serialised (queries cast ``text[]`` to ``jsonb[]``).

    Passing nested Python lists straight to an array parameter would make them array dimensions.
    """
    return [None if v is None else _dumps(v) for v in values]


def compiled(query: TextClause, dialect: Any) -> tuple[str, tuple[str, ...]]:
    """``query`` as the driver runs it (``$n`` parameters) and its parameter names in order
    (compiled once per statement)."""
    found = _COMPILED.get(query)
    if found is None:
        c = query.compile(dialect=dialect)
        found = _COMPILED[query] = (c.string, tuple(c.positiontup or ()))
    return found


def _rowcount(status: str) -> int:
    """Rows a statement touched, from its command tag ("UPDATE 3", "INSERT 0 5")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


class Tx:
    """One open transaction on a pooled connection, with small query helpers.

    Statements run on the connection's driver (asyncpg) directly, with its prepared-statement
    cache; SQLAlchemy keeps the pool and compiles each ``engine.store.queries`` statement once. (Its
    execution layer and greenlet switches were the largest single share of a busy server's CPU.)
    """

    def __init__(self, driver: asyncpg.Connection, dialect: Any) -> None:
        self.driver = driver
        self._dialect = dialect

    def _args(self, query: TextClause, params: Mapping[str, Any] | None) -> tuple[str, list[Any]]:
        sql, names = compiled(query, self._dialect)
        values = params or {}
        return sql, [values[n] for n in names]

    async def execute(self, query: TextClause, params: Mapping[str, Any] | None = None) -> int:
        """Run a statement; return the number of rows it touched."""
        sql, args = self._args(query, params)
        with wrap_exceptions():
            return _rowcount(await self.driver.execute(sql, *args))

    async def fetch_all(self, query: TextClause, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run a query and return every row as a mapping."""
        sql, args = self._args(query, params)
        with wrap_exceptions():
            return [dict(r) for r in await self.driver.fetch(sql, *args)]

    async def fetch_one(self, query: TextClause, params: Mapping[str, Any] | None = None) -> Row | None:
        """Run a query and return its first row, or None."""
        sql, args = self._args(query, params)
        with wrap_exceptions():
            row = await self.driver.fetchrow(sql, *args)
        return dict(row) if row is not None else None

    async def fetch_value(self, query: TextClause, params: Mapping[str, Any] | None = None) -> Any:
        """Run a query and return the first column of its first row, or None."""
        sql, args = self._args(query, params)
        with wrap_exceptions():
            return await self.driver.fetchval(sql, *args)

    async def savepoint(self) -> Savepoint:
        """A savepoint started now: ``await sp.commit()`` keeps what ran since, ``await
        sp.rollback()`` undoes it (the transaction goes on either way)."""
        sp = self.driver.transaction()
        with wrap_exceptions():
            await sp.start()
        return Savepoint(sp)

    async def copy_binary(self, target: queries.CopyTarget, rows: bytes | bytearray) -> None:
        """Bulk-load ``rows`` (binary COPY rows, ``engine.store.pgcopy``) into ``target``, inside this
        transaction."""

        async def stream() -> AsyncIterator[bytes | memoryview]:
            yield pgcopy.HEADER
            view = memoryview(rows)
            for at in range(0, len(view), _COPY_PIECE):
                yield view[at:at + _COPY_PIECE]
            yield pgcopy.TRAILER

        with wrap_exceptions():
            await self.driver.copy_to_table(target.table, source=stream(), columns=target.columns, format="binary")

    async def notify(self) -> None:
        """Wake the workers once this transaction commits (one NOTIFY per transaction)."""
        await self.execute(queries.NOTIFY, {"channel": NOTIFY_CHANNEL})


class Savepoint:
    """A started savepoint of a ``Tx`` (``Tx.savepoint``)."""

    def __init__(self, transaction: Any) -> None:
        self._transaction = transaction

    async def commit(self) -> None:
        """Release the savepoint: what ran since it began stays in the transaction."""
        with wrap_exceptions():
            await self._transaction.commit()

    async def rollback(self) -> None:
        """Undo what ran since the savepoint began."""
        with wrap_exceptions():
            await self._transaction.rollback()


#: Bytes per COPY data message: Postgres starts on the first piece while the rest is sent.
_COPY_PIECE = 256 * 1024

#: Statements compiled for the driver (positional parameters), by statement.
_COMPILED: dict[TextClause, tuple[str, tuple[str, ...]]] = {}


class Database:
    """A pool of connections to one Postgres database."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = sqlalchemy_url(url)
        self.engine: AsyncEngine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False
        )
        event.listen(self.engine.sync_engine, "connect", _json_codecs)

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[tuple[AsyncConnection, asyncpg.Connection]]:
        """A pooled connection and its driver (asyncpg) connection. Statements go to the driver
        directly, with its prepared-statement cache; SQLAlchemy only keeps the pool (it never
        begins a transaction of its own here, so returning the connection costs no round trip)."""
        async with self.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            yield conn, driver

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A transaction: committed when the block ends, rolled back if it raises. A connection
        left in doubt (its rollback failed: cancelled mid-statement, or lost) is not reused."""
        with wrap_exceptions():
            async with self._connection() as (conn, driver):
                transaction = driver.transaction()
                await transaction.start()
                try:
                    yield Tx(driver, self.engine.dialect)
                except BaseException:
                    try:
                        await transaction.rollback()
                    except BaseException:
                        await conn.invalidate()
                    raise
                await transaction.commit()

    async def fetch_one(self, query: TextClause, params: Mapping[str, Any] | None = None) -> Row | None:
        """Run one statement as its own implicit transaction and return its first row: one round
        trip, no BEGIN/COMMIT (Postgres commits a lone statement when it returns). For a batch of
        statements that must commit together, use ``transaction``."""
        rows = await self._statement(query, params, one=True)
        return rows[0] if rows else None

    async def fetch_all(self, query: TextClause, params: Mapping[str, Any] | None = None) -> list[Row]:
        """``fetch_one``, every row."""
        return await self._statement(query, params, one=False)

    async def _statement(self, query: TextClause, params: Mapping[str, Any] | None, *, one: bool) -> list[Row]:
        sql, names = compiled(query, self.engine.dialect)
        values = params or {}
        args = [values[n] for n in names]
        with wrap_exceptions():
            async with self._connection() as (_conn, driver):
                try:
                    if one:
                        row = await driver.fetchrow(sql, *args)
                        return [dict(row)] if row is not None else []
                    return [dict(r) for r in await driver.fetch(sql, *args)]
                except Exception as exc:
                    metrics.database_error()
                    raise DatabaseError(str(exc)) from exc

    @contextlib.asynccontextmanager
    async def session_lock(self, lock: TextClause, unlock: TextClause) -> AsyncIterator[bool]:
        """Try a session-level lock (``lock`` returns whether it was taken) on a connection kept
        for the block, outside any transaction; ``unlock`` releases it at the end. A connection
        whose unlock fails is dropped, never pooled with the lock still held."""
        with wrap_exceptions():
            async with self._connection() as (conn, driver):
                sql, _ = compiled(lock, self.engine.dialect)
                taken = bool(await driver.fetchval(sql))
                try:
                    yield taken
                finally:
                    if taken:
                        try:
                            await driver.fetchval(compiled(unlock, self.engine.dialect)[0])
                        except BaseException:
                            await conn.invalidate()
                            raise

    async def ping(self) -> bool:
        """True when the database answers."""
        try:
            async with self.transaction() as tx:
                await tx.fetch_value(queries.PING)
            return True
        except DatabaseError:
            return False

    async def check_schema(self, expected_heads: Sequence[str]) -> None:
        """Refuse to run on a database that is not migrated to this flowbot's revision."""
        try:
            async with self.transaction() as tx:
                rows = await tx.fetch_all(queries.SCHEMA_VERSION)
        except DatabaseError as exc:
            if "alembic_version" in str(exc):
                raise SchemaNotReady(
                    "the database has no flowbot schema: run `flowbot migrate`"
                ) from None
            raise
        current = sorted(r["version_num"] for r in rows)
        if current != sorted(expected_heads):
            raise SchemaNotReady(
                f"the database schema is at {current or 'nothing'}, this flowbot needs "
                f"{sorted(expected_heads)}: run `flowbot migrate`"
            )

    @contextlib.asynccontextmanager
    async def listen(
        self, channel: str, callback: Callable[[str], Awaitable[None] | None]
    ) -> AsyncIterator[None]:
        """LISTEN on a channel for the duration of the block, on a dedicated connection."""
        with wrap_exceptions():
            async with self._connection() as (_conn, driver):
                # Listener callbacks must not block the driver: coroutines run as tasks, kept
                # here until they finish (the loop holds only weak references to tasks).
                pending: set[asyncio.Future[None]] = set()

                def _on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                    result = callback(payload)
                    if result is not None:
                        future = asyncio.ensure_future(result)
                        pending.add(future)
                        future.add_done_callback(pending.discard)

                await driver.add_listener(channel, _on_notify)
                try:
                    yield
                finally:
                    with contextlib.suppress(Exception):
                        await driver.remove_listener(channel, _on_notify)
