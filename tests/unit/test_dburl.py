"""What flowbot reads from a database URL: the driver URL, TLS, the pooler mode, the statement cache."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from engine.store import dburl


def test_a_plain_url_is_a_direct_connection_with_the_statement_cache() -> None:
    target = dburl.parse("postgres://u:p@db.example.com:5432/flowbot")
    assert target.url == "postgresql+asyncpg://u:p@db.example.com:5432/flowbot"
    assert target.pool_mode == "session" and not target.pooled_by_transaction
    assert target.connect_args()["statement_cache_size"] == 100
    assert "prepared_statement_name_func" not in target.connect_args()


def test_a_transaction_pooler_turns_the_cache_off_and_names_no_statement() -> None:
    target = dburl.parse("postgresql://u@pooler:6432/flowbot?pool_mode=transaction")
    assert "pool_mode" not in target.url
    assert target.pooled_by_transaction
    args = target.connect_args()
    assert args["statement_cache_size"] == 0 and args["prepared_statement_cache_size"] == 0
    assert args["prepared_statement_name_func"]() == ""  # unnamed: no name clashes on shared servers


def test_a_pooler_that_keeps_prepared_statements_may_keep_the_cache() -> None:
    target = dburl.parse("postgresql://u@pooler/flowbot?pool_mode=transaction&statement_cache_size=100")
    assert target.statement_cache == 100 and "statement_cache_size" not in target.url


def test_sslmode_and_connect_timeout_are_read_as_libpq_spells_them() -> None:
    target = dburl.parse("postgresql://u@db/flowbot?sslmode=require&connect_timeout=3")
    assert target.url.endswith("?ssl=require")
    assert target.connect_timeout == 3.0
    assert target.asyncpg_args()["ssl"] == "require" and target.asyncpg_args()["timeout"] == 3.0


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://u@db/f?pool_mode=statement", "pool_mode=statement"),
    ("postgresql://u@db/f?statement_cache_size=lots", "statement_cache_size=lots"),
    ("postgresql://u@db/f?connect_timeout=-1", "must not be negative"),
])
def test_a_parameter_flowbot_cannot_use_is_a_clear_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dburl.parse(url)


def test_a_listen_url_through_a_transaction_pooler_is_refused() -> None:
    from engine.store.db import Database

    with pytest.raises(ConfigError, match="FLOWBOT_LISTEN_URL must be a direct connection"):
        Database("postgresql://u@pooler/f?pool_mode=transaction", listen_url="postgresql://u@pooler/f?pool_mode=transaction")
