"""The pytest plugin installed with flowbot (entry point ``pytest11``: ``flowbot``): a test that
asks for the ``flow`` fixture gets a flowbot of its own (see ``engine.testing``).

Fixtures:

- ``flow``: a ``Flow`` on a fresh database with the workflows of ``flowbot_stages``.
- ``flowbot_stages``: the workflows directory (``$FLOWBOT_STAGES``, else ``stages/`` at pytest's
  root directory); override it in a conftest.py to test other workflows.
- ``flowbot_settings``: extra settings for the test's flowbot (a dict; empty by default).
- ``flowbot_postgres``: the session's Postgres server (embedded, or ``$FLOWBOT_TEST_DATABASE_URL``).

Nothing is imported from flowbot until a test uses a fixture, so pytest starts as fast with the
plugin as without it.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover: the kit needs it, installed with flowbot[testing]
    pytest_asyncio = None  # type: ignore[assignment]


@pytest.fixture(scope="session")
def flowbot_postgres() -> Iterator[Any]:
    """The session's Postgres server, with a migrated template database to copy per test."""
    from engine.testing.postgres import TestPostgres

    server = TestPostgres()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def flowbot_stages(request: pytest.FixtureRequest) -> Path:
    """The workflows the ``flow`` fixture loads: ``$FLOWBOT_STAGES``, else ``stages/`` at the root."""
    configured = os.environ.get("FLOWBOT_STAGES")
    return Path(configured) if configured else Path(request.config.rootpath) / "stages"


@pytest.fixture
def flowbot_settings() -> dict[str, Any]:
    """Settings (``engine.settings.Settings`` fields) changed for the test's flowbot."""
    return {}


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def flow(flowbot_postgres: Any, flowbot_stages: Path, flowbot_settings: dict[str, Any],
                   tmp_path: Path) -> AsyncIterator[Any]:
        """A flowbot of the test's own: fresh database, engine running, Slack fake, SMTP catcher,
        clock moved by the test."""
        from engine.testing.kit import open_flow

        template = await flowbot_postgres.template_async()
        async with flowbot_postgres.database("flow", template=template) as url, \
                open_flow(url, flowbot_stages, tmp_path / "flowbot-home", **flowbot_settings) as kit:
            yield kit

else:  # pragma: no cover

    @pytest.fixture
    def flow() -> None:
        """Refuses: the kit's fixtures are async and need pytest-asyncio."""
        raise pytest.UsageError("flowbot's test kit needs pytest-asyncio: pip install 'flowbot[testing]'")
