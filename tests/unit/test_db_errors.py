"""Which driver errors mean "the database is unavailable" (a 503, retried) and which do not."""

from __future__ import annotations

import asyncpg
import pytest

from engine.errors import DatabaseError, DatabaseUnavailable
from engine.store.db import unavailable, wrap_exceptions

OUTAGES = [
    ConnectionRefusedError(111, "Connect call failed"),
    TimeoutError(),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("cannot perform operation: connection is closed"),
    asyncpg.exceptions.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
    asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
    asyncpg.exceptions.ProtocolViolationError("query_wait_timeout"),  # PgBouncer without a server
]
NOT_OUTAGES = [
    asyncpg.exceptions.UniqueViolationError("duplicate key value"),
    asyncpg.exceptions.DataError("invalid input for query argument"),
    asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"),
]


@pytest.mark.parametrize("exc", OUTAGES, ids=lambda e: type(e).__name__)
def test_an_outage_is_database_unavailable(exc: BaseException) -> None:
    assert unavailable(exc)
    with pytest.raises(DatabaseUnavailable), wrap_exceptions():
        raise exc


@pytest.mark.parametrize("exc", NOT_OUTAGES, ids=lambda e: type(e).__name__)
def test_an_error_of_the_statement_is_a_plain_database_error(exc: BaseException) -> None:
    assert not unavailable(exc)
    with pytest.raises(DatabaseError) as raised, wrap_exceptions():
        raise exc
    assert not isinstance(raised.value, DatabaseUnavailable)


def test_an_outage_wrapped_by_sqlalchemy_is_seen_through() -> None:
    import sqlalchemy.exc

    wrapped = sqlalchemy.exc.DBAPIError("SELECT 1", None, ConnectionResetError(104, "reset"))
    assert unavailable(wrapped)
