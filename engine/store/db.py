"""The connector: the only module that talks to the database driver.

Everything else gets a ``Database`` and runs the named statements of ``engine.store.queries`` through
it. Driver errors are translated at this boundary into ``engine.errors.DatabaseError``, and into
``DatabaseUnavailable`` when the server cannot be reached or cannot take work right now (a restart,
a failover, a pooler without servers): callers retry those, the HTTP edges answer 503.

Surviving a database that goes away: a pooled connection found closed at checkout is discarded
(the driver notices a closed socket without a round trip), and one that fails while in use, or
whose transaction could not begin, end or roll back, is invalidated rather than pooled again.
LISTEN runs on a dedicated connection that is re-established after a loss (``listen``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import asyncpg
import sqlalchemy.exc
from sqlalchemy import TextClause, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from engine import metrics
from engine.errors import ConfigError, DatabaseError, DatabaseUnavailable, SchemaNotReady
from engine.store import dburl, pgcopy, queries, trigger_queries

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "flowbot_tasks"
#: What wakes the outbox dispatcher: statements that write outbox rows (effects, form tasks'
#: assignments) notify it, so a DM leaves right after the commit, not at the next poll.
OUTBOX_CHANNEL = "flowbot_outbox"

Row = Mapping[str, Any]


#: SQLSTATEs that mean "not now" rather than "not this": shutting down, crashed, starting up,
#: out of connections, and read-only (a primary demoted during a failover). Class 08 (connection
#: exceptions, which PgBouncer uses for its own "no server" errors) counts too.
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03", "53300", "25006"})


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) says the database cannot be reached or take work now."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DatabaseUnavailable | OSError | asyncpg.ConnectionDoesNotExistError
                      | sqlalchemy.exc.TimeoutError):
            return True  # OSError: refused, reset, unreachable, unknown host, connect timeout
        if isinstance(current, asyncpg.InterfaceError) and "closed" in str(current):
            return True  # "connection is closed"
        if isinstance(current, asyncpg.exceptions.InternalClientError):
            # "cannot switch to state ...; another operation is in progress": the server's FATAL
            # reached a pooled connection before the socket closed (it is unusable, and discarded).
            return True
        state = getattr(current, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state in _UNAVAILABLE_STATES):
            return True
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


@contextlib.contextmanager
def wrap_exceptions() -> Any:
    """Turn driver and SQLAlchemy errors into flowbot's DatabaseError (DatabaseUnavailable for an
    outage)."""
    try:
        yield
    except (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError, asyncpg.PostgresError,
            asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, OSError) as exc:
        metrics.database_error()
        message = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
        if unavailable(exc):
            raise DatabaseUnavailable(f"the database is unavailable: {message}") from exc
        raise DatabaseError(message) from exc


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

    async def copy_binary(self, target: trigger_queries.CopyTarget, rows: bytes | bytearray) -> None:
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
    """A pool of connections to one Postgres database (``url``; see ``engine.store.dburl`` for what
    its query string may say), and LISTEN on ``listen_url`` (default: ``url``, unless that is a
    transaction pooler: then nothing listens and workers poll)."""

    def __init__(self, url: str, *, pool_size: int = 10, listen_url: str | None = None) -> None:
        self.target = dburl.parse(url)
        self.url = self.target.url
        self.pool_size = pool_size
        self.engine: AsyncEngine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False,
            connect_args=self.target.connect_args(),
        )
        event.listen(self.engine.sync_engine, "connect", _json_codecs)
        if listen_url:
            self.listen_target: dburl.Target | None = dburl.parse(listen_url)
            if self.listen_target.pooled_by_transaction:
                raise ConfigError("FLOWBOT_LISTEN_URL must be a direct connection to Postgres: LISTEN does not "
                                  "work through a transaction-mode pooler")
        else:
            self.listen_target = None if self.target.pooled_by_transaction else self.target
        #: When the current outage began (monotonic), None while the database answers.
        self.down_since: float | None = None
        #: Whether the database ever answered: a database never reached is no outage (the command
        #: that opened it says what is wrong in one line) and is not logged as one.
        self.answered_once = False

    @property
    def poll_only(self) -> bool:
        """Whether nothing can LISTEN (a transaction pooler and no direct ``listen_url``)."""
        return self.listen_target is None

    async def close(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    # -- outages ----------------------------------------------------------------------------

    def _failed(self, exc: BaseException) -> None:
        """A statement found the database unavailable: say so once per outage."""
        if self.down_since is None:
            self.down_since = time.monotonic()
            if not self.answered_once:
                return
            log.warning("database unavailable (answering 503, retrying until it is back): %s",
                        wrap_message(exc.__cause__ or exc), extra={"action": "db_unavailable"})

    def _answered(self) -> None:
        if self.down_since is not None:
            took, self.down_since = time.monotonic() - self.down_since, None
            if self.answered_once:
                log.warning("database is back (unavailable for %.1f s)", took, extra={"action": "db_back"})

    @contextlib.contextmanager
    def _watch(self) -> Any:
        try:
            yield
        except DatabaseUnavailable as exc:
            self._failed(exc)
            raise
        if self.down_since is not None:
            self._answered()
        self.answered_once = True

    # -- connections --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[tuple[AsyncConnection, asyncpg.Connection]]:
        """A pooled connection and its driver (asyncpg) connection. Statements go to the driver
        directly, with its prepared-statement cache; SQLAlchemy only keeps the pool (it never
        begins a transaction of its own here, so returning the connection costs no round trip).

        A pooled connection whose socket closed meanwhile (the server restarted, failed over,
        or ended it) is discarded and the next one taken: after an outage each one is found
        dead once, at no cost to the others."""
        for _ in range(2 * self.pool_size + 1):
            conn = await self.engine.connect()
            try:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
            except BaseException:
                await _discard(conn)
                raise
            if not driver.is_closed():
                break
            await _discard(conn)
        else:
            raise DatabaseUnavailable("the database is unavailable: every pooled connection is closed")
        try:
            yield conn, driver
        except BaseException:
            if driver.is_closed():
                await _discard(conn)
            else:
                await conn.close()
            raise
        await conn.close()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """A transaction: committed when the block ends, rolled back if it raises. A connection
        left in doubt (its transaction could not begin, roll back or commit: lost, or cancelled
        mid-statement) is not reused."""
        with self._watch(), wrap_exceptions():
            async with self._connection() as (conn, driver):
                transaction = driver.transaction()
                try:
                    await transaction.start()
                except BaseException:
                    await _discard(conn)
                    raise
                try:
                    yield Tx(driver, self.engine.dialect)
                except BaseException as exc:
                    try:
                        await transaction.rollback()
                    except BaseException:
                        await _discard(conn)
                    if isinstance(exc, DatabaseUnavailable):
                        await _discard(conn)
                    raise
                try:
                    await transaction.commit()
                except BaseException:
                    await _discard(conn)
                    raise

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
        with self._watch(), wrap_exceptions():
            async with self._connection() as (conn, driver):
                try:
                    if one:
                        row = await driver.fetchrow(sql, *args)
                        return [dict(row)] if row is not None else []
                    return [dict(r) for r in await driver.fetch(sql, *args)]
                except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError,
                        OSError) as exc:
                    metrics.database_error()
                    if unavailable(exc):
                        await _discard(conn)
                    raise
                except asyncio.CancelledError:
                    # Cancelled mid-statement: the driver may still be reading its answer.
                    await _discard(conn)
                    raise

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
            await self.fetch_one(queries.PING)
            return True
        except DatabaseError:
            return False

    async def check_schema(self, expected_heads: Sequence[str]) -> None:
        """Refuse to run on a database that is not migrated to this flowbot's revision."""
        try:
            rows = await self.fetch_all(queries.SCHEMA_VERSION)
        except DatabaseUnavailable:
            raise
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
    ) -> AsyncIterator[Listener]:
        """LISTEN on a channel for the duration of the block, on a dedicated connection that is
        re-established whenever it is lost (``callback("")`` then runs once: notifications sent
        meanwhile were lost). The block starts once the first attempt to connect is over,
        whether it worked or not; callers keep polling as the fallback either way. With no
        listen target (a transaction pooler) nothing listens."""
        listener = Listener(self.listen_target, channel, callback)
        if self.listen_target is None:
            yield listener
            return
        running = asyncio.create_task(listener.run())
        try:
            await listener.attempted.wait()
            yield listener
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


async def _discard(conn: AsyncConnection) -> None:
    """Close ``conn`` for good (never back to the pool): it is lost or in doubt."""
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()


#: Seconds between tries of a loop (claims, outbox) while the database is unavailable: the first,
#: and the most (so that it is busy again within about a second of the database coming back).
OUTAGE_BACKOFF_FIRST = 0.05
OUTAGE_BACKOFF_MAX = 1.0


def outage_backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` tries in a row found the database unavailable."""
    return min(OUTAGE_BACKOFF_FIRST * 2 ** max(0, failures - 1), OUTAGE_BACKOFF_MAX)


#: Seconds between attempts to re-establish a lost LISTEN connection: the first, and the most.
LISTEN_RETRY_FIRST = 0.05
LISTEN_RETRY_MAX = 0.5


class Listener:
    """LISTEN on one channel through a dedicated connection, re-established after a loss
    (``Database.listen``)."""

    def __init__(self, target: dburl.Target | None, channel: str,
                 callback: Callable[[str], Awaitable[None] | None]) -> None:
        self.target = target
        self.channel = channel
        self.callback = callback
        #: Set once the first attempt to connect is over (worked or not).
        self.attempted = asyncio.Event()
        #: Whether LISTEN is in place right now.
        self.connected = False
        #: How many times the connection was re-established after a loss.
        self.reconnects = 0
        # Callbacks must not block the driver: coroutines run as tasks, kept here until they
        # finish (the loop holds only weak references to tasks).
        self._pending: set[asyncio.Future[None]] = set()

    def _notify(self, payload: str) -> None:
        result = self.callback(payload)
        if result is not None:
            future = asyncio.ensure_future(result)
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)

    async def run(self) -> None:
        """Keep LISTEN in place until cancelled."""
        delay, lost_at, ever = LISTEN_RETRY_FIRST, None, False
        while True:
            try:
                conn, closed = await self._connect()
            except Exception as exc:  # whatever it is, try again: the poll covers meanwhile
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.warning("LISTEN %s: cannot connect (%s); polling until it can", self.channel,
                                wrap_message(exc), extra={"action": "listen_down", "channel": self.channel})
                self.attempted.set()
                await asyncio.sleep(delay)
                delay = min(delay * 2, LISTEN_RETRY_MAX)
                continue
            self.connected = True
            self.attempted.set()
            if lost_at is not None:
                self.reconnects += ever
                log.warning("LISTEN %s in place after %.1f s without", self.channel, time.monotonic() - lost_at,
                            extra={"action": "listen_back", "channel": self.channel})
                self._notify("")  # what was sent while nobody listened
            ever, lost_at, delay = True, None, LISTEN_RETRY_FIRST
            try:
                await closed.wait()
            finally:
                self.connected = False
                if not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 1.0)
                    conn.terminate()
            lost_at = time.monotonic()
            log.warning("LISTEN %s: connection lost; polling until it is back", self.channel,
                        extra={"action": "listen_lost", "channel": self.channel})

    async def _connect(self) -> tuple[asyncpg.Connection, asyncio.Event]:
        """A new connection listening on the channel, and an event set when it is lost."""
        assert self.target is not None
        conn = await asyncpg.connect(**self.target.asyncpg_args())
        closed = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: closed.set())
            await conn.add_listener(self.channel, lambda _c, _p, _ch, payload: self._notify(payload))
        except BaseException:
            conn.terminate()
            raise
        return conn, closed


def wrap_message(exc: BaseException) -> str:
    """A short reason for a connection error (its message, else its type)."""
    return str(exc) or type(exc).__name__
