"""Why the database could not be used, said in one line a person can act on.

A command that cannot open its database (a malformed ``DATABASE_URL``, nothing listening on the
port, a wrong password, a database that does not exist) raises ``DatabaseError`` with a message
that says it is the database, which one (password masked) and what to check; the driver's own
exception stays attached as the cause (``FLOWBOT_LOG_LEVEL=DEBUG`` prints it).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import asyncpg
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from engine.errors import DatabaseError, SchemaNotReady

#: What the driver and SQLAlchemy raise when a database cannot be used; anything else is a bug
#: and keeps its traceback.
EXPECTED = (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.DBAPIError,
            asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError, DatabaseError)


def masked(url: str) -> str:
    """``url`` with its password replaced by ``***`` (or a placeholder when it does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return "(a DATABASE_URL that is not a URL)"


def explain(url: str, exc: BaseException, *, embedded: bool = False) -> DatabaseError:
    """A ``DatabaseError`` saying what went wrong with the database at ``url`` and what to check."""
    if isinstance(exc, SchemaNotReady):
        return exc
    where = "the embedded database" if embedded else f"the database at {masked(url)}"
    cause = exc.__cause__ if isinstance(exc, DatabaseError) and exc.__cause__ is not None else exc
    reason = _first_line(cause)
    if isinstance(cause, sqlalchemy.exc.ArgumentError):
        return DatabaseError(f"DATABASE_URL is not a valid database URL ({reason}); "
                             "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    if isinstance(cause, sqlalchemy.exc.NoSuchModuleError):
        return DatabaseError(f"DATABASE_URL {masked(url)} is not a Postgres URL; "
                             "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    orig = _driver_error(cause)
    if isinstance(orig, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return DatabaseError(f"{where} refused the login ({_first_line(orig)}): check the user and "
                             "password in DATABASE_URL")
    if isinstance(orig, asyncpg.InvalidCatalogNameError):
        return DatabaseError(f"{where} answered but {_first_line(orig)}: create it, or fix the database "
                             "name in DATABASE_URL")
    if isinstance(orig, socket.gaierror):
        return DatabaseError(f"cannot reach {where}: its host name does not resolve ({reason}); "
                             "check the host in DATABASE_URL")
    if isinstance(orig, ConnectionRefusedError) or "Connection refused" in reason or "Connect call failed" in reason:
        return DatabaseError(f"cannot reach {where}: connection refused; check that Postgres is running "
                             "there and that the host and port in DATABASE_URL are right")
    if isinstance(orig, OSError | TimeoutError):
        return DatabaseError(f"cannot reach {where}: {reason or type(orig).__name__}; check that Postgres "
                             "is running there and reachable from this machine")
    return DatabaseError(f"{where} failed: {reason}")


def check_url(url: str) -> None:
    """Raise a one-line DatabaseError when ``url`` is not a Postgres URL at all."""
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise DatabaseError(f"DATABASE_URL is not a valid database URL ({_first_line(exc)}); "
                            "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE") from exc
    if not parsed.drivername.startswith("postgres"):
        raise DatabaseError(f"DATABASE_URL {masked(url)} is not a Postgres URL; "
                            "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE")


@contextlib.contextmanager
def explained(url: str, *, embedded: bool = False) -> Iterator[None]:
    """Turn the expected failures of opening the database at ``url`` into one-line DatabaseErrors
    (checking first that it is a Postgres URL)."""
    check_url(url)
    try:
        yield
    except EXPECTED as exc:
        raise explain(url, exc, embedded=embedded) from exc


def _driver_error(exc: BaseException) -> BaseException:
    """The driver's (or the OS's) own exception under SQLAlchemy's wrappers, else ``exc``."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        if isinstance(current, asyncpg.PostgresError | asyncpg.InterfaceError | OSError | TimeoutError):
            return current
        current = getattr(current, "orig", None) or current.__cause__
    return exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # SQLAlchemy appends "(Background on this error at: https://sqlalche.me/...)" and the statement.
    return text.splitlines()[0].strip() if text else type(exc).__name__
