"""Hook throughput and latency: flowbot's HMAC hook against a minimal aiohttp + asyncpg endpoint.

    python bench/hooks.py [--seconds 10] [--warmup 2] [--connections 32] [--rounds 2] [--no-fanout]

Starts its own embedded Postgres in a temporary directory (or uses ``DATABASE_URL``, which must
allow CREATE DATABASE) and two servers on loopback, each in its own process:

a) flowbot: the real ``flowbot web`` serving a hook with ``HmacAuth`` whose stage parses the JSON
   body and sends one task; each request verifies the signature, runs the stage and commits a new
   run, its first task and the delivery record before answering 200.
b) minimal: an aiohttp handler that inserts the raw body as one row with asyncpg (a pool of 10
   connections, like flowbot's) and answers 200: the floor for "HTTP in, one row, HTTP out".

The load generator (this process) is an aiohttp client keeping ``--connections`` requests in
flight over keep-alive connections, cycling through pre-signed bodies. Each round measures both
servers for ``--seconds`` after ``--warmup``; the best round of each is reported with its p50 and
p99 latency. Targets: flowbot at least 70% of the minimal endpoint's requests/s, p99 under 50 ms.
Then, unless ``--no-fanout``, ``bench/fanout.py``'s ``main()`` prints the job fan-out rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import common  # bench/common.py (puts the repository root on sys.path)
import psutil
from common import out

from engine.cli.main import run_async
from engine.store import migrate
from engine.triggers.hooks import sign_hmac
from engine.web.server import LISTEN_BACKLOG

ROOT = common.ROOT

SECRET = "bench-hook-secret"
THROUGHPUT_TARGET = 0.70
P99_TARGET_MS = 50.0
BODIES = 1000

STAGES = {
    "ingest/workflow.py": """
        from engine import HmacAuth, Workflow

        workflow = Workflow("ingest")
        event = workflow.hook("event", path="ingest/event", auth=HmacAuth("BENCH_HOOK_SECRET"))
        handle = workflow.script("handle")
        workflow.transition(event, handle, on="event")
    """,
    "ingest/event.py": """
        async def run(request, ctx):
            ctx.send("event", request.data)
            return {"ok": True}
    """,
    "ingest/handle.py": """
        async def run(task, ctx):
            pass
    """,
}

MINIMAL_SERVER = """
import asyncio, sys
import asyncpg
from aiohttp import web

async def main(port: int, url: str) -> None:
    pool = await asyncpg.create_pool(url, min_size=10, max_size=10)

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        await pool.execute("INSERT INTO items (body) VALUES ($1)", body.decode())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hooks/ingest/event", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # The listen backlog flowbot's server uses (engine.http.LISTEN_BACKLOG).
    await web.TCPSite(runner, "127.0.0.1", port, backlog=int(sys.argv[3])).start()
    await asyncio.Event().wait()

try:  # the event loop flowbot runs on (engine.cli.main.run_async)
    from uvloop import run
except ImportError:
    from asyncio import run
run(main(int(sys.argv[1]), sys.argv[2]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A server process (its stderr kept for the error message if it dies)."""
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def wait_listening(port: int, proc: subprocess.Popen[bytes], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"server exited ({proc.returncode}):\n{err[-3000:]}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"server did not listen on {port} within {within:g} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Result:
    """One measured window."""

    requests: int
    seconds: float
    latencies_ms: list[float]
    errors: int
    #: CPU seconds the server process used in the window (user + system).
    server_cpu: float = 0.0
    #: CPU seconds Postgres used in the window.
    pg_cpu: float = 0.0
    #: flowbot only: delivery rows, and transactions committed in its database over the whole run.
    deliveries: int = 0
    commits: int = 0

    @property
    def pg_ms_per_request(self) -> float:
        return self.pg_cpu / self.requests * 1000 if self.requests else float("nan")

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu / self.requests * 1000 if self.requests else float("nan")

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def signed_requests(n: int) -> list[tuple[bytes, dict[str, str]]]:
    """``n`` distinct JSON bodies with their HMAC headers (signed before the clock starts)."""
    requests = []
    for i in range(n):
        body = json.dumps({"event": "order.created", "order": {"id": i, "amount": 4200 + i,
                                                                 "currency": "EUR"}}).encode()
        requests.append((body, {"Content-Type": "application/json", **sign_hmac(SECRET, body)}))
    return requests


async def load(pg: common.Server, url: str, connections: int, warmup: float, seconds: float,
               requests: list[tuple[bytes, dict[str, str]]], pid: int | None = None) -> Result:
    """Keep ``connections`` requests in flight; measure the window after ``warmup`` (and the CPU
    time process ``pid`` used in it)."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    latencies: list[float] = []
    counted = errors = 0
    start_measure = time.perf_counter() + warmup
    end = start_measure + seconds
    server = psutil.Process(pid) if pid else None
    cpu: list[float] = []
    pg_cpu: list[float] = []

    async def sample_cpu() -> None:
        for at in (start_measure, end):
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            if server is not None:
                times = server.cpu_times()
                cpu.append(times.user + times.system)
            pg_cpu.append(common.postgres_cpu(pg) or 0.0)

    sampler = asyncio.ensure_future(sample_cpu())
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(offset: int) -> None:
            nonlocal counted, errors
            i = offset
            while True:
                body, headers = requests[i % len(requests)]
                i += connections
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    ok = resp.status == 200
                t1 = time.perf_counter()
                if t0 >= start_measure and t1 <= end:
                    if ok:
                        counted += 1
                        latencies.append((t1 - t0) * 1000)
                    else:
                        errors += 1

        await asyncio.gather(*(client(k) for k in range(connections)))
    await sampler
    return Result(counted, seconds, latencies, errors, cpu[1] - cpu[0] if len(cpu) == 2 else 0.0,
                  pg_cpu[1] - pg_cpu[0])


async def bench_flowbot(pg: common.Server, tmp: Path, args: argparse.Namespace,
                        requests: list[tuple[bytes, dict[str, str]]]) -> Result:
    db_url = await common.fresh_database(pg.url, "bench_hooks")
    await migrate.upgrade(db_url)
    stages = tmp / "stages"
    for rel, source in STAGES.items():
        (stages / rel).parent.mkdir(parents=True, exist_ok=True)
        (stages / rel).write_text(textwrap.dedent(source).lstrip())
    port = free_port()
    env = dict(os.environ, DATABASE_URL=db_url, FLOWBOT_STAGES=str(stages), FLOWBOT_HOME=str(tmp / "home"),
               FLOWBOT_API_TOKEN="bench", BENCH_HOOK_SECRET=SECRET, FLOWBOT_LOG_LEVEL="WARNING")
    for key in [k for k in env if k.startswith("SLACK_")]:
        del env[key]
    flowbot = shutil.which("flowbot")
    cmd = [flowbot] if flowbot else [sys.executable, "-m", "engine.cli.main"]
    proc = start([*cmd, "web", "--port", str(port)], env)
    try:
        await wait_listening(port, proc)
        result = await load(pg, f"http://127.0.0.1:{port}/hooks/ingest/event", args.connections, args.warmup,
                            args.seconds, requests, proc.pid)
    finally:
        stop(proc)
    conn = await asyncpg.connect(db_url)
    try:
        runs, tasks, deliveries = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM tasks), (SELECT count(*) FROM hook_deliveries)")
        # Transactions committed in this database (migrations, warm-up and the coalesced NOTIFYs
        # included; the server's backends have exited, so their counts are flushed).
        await asyncio.sleep(0.5)
        result.commits = int(await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await conn.close()
    result.deliveries = int(deliveries)
    # Every 200 was durable: one run, one task and one delivery row per accepted request (warm-up
    # included), and nothing for a request that got no 200.
    if not (runs == tasks == deliveries >= result.requests):
        raise SystemExit(f"flowbot: {runs} runs, {tasks} tasks, {deliveries} deliveries "
                         f"for {result.requests} measured 200s")
    return result


async def bench_minimal(pg: common.Server, args: argparse.Namespace,
                        requests: list[tuple[bytes, dict[str, str]]]) -> Result:
    db_url = await common.fresh_database(pg.url, "bench_hooks_minimal")
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("CREATE TABLE items (id bigserial PRIMARY KEY, body jsonb NOT NULL, "
                           "created_at timestamptz NOT NULL DEFAULT now())")
    finally:
        await conn.close()
    port = free_port()
    proc = start([sys.executable, "-c", MINIMAL_SERVER, str(port), db_url, str(LISTEN_BACKLOG)])
    try:
        await wait_listening(port, proc)
        return await load(pg, f"http://127.0.0.1:{port}/hooks/ingest/event", args.connections, args.warmup,
                          args.seconds, requests, proc.pid)
    finally:
        stop(proc)


def describe(name: str, r: Result) -> str:
    commits = f"; {r.deliveries:,} deliveries in {r.commits:,} commits" if r.commits else ""
    return (f"{name}: {r.rate:,.0f} req/s, p50 {r.pct(0.50):.1f} ms, p99 {r.pct(0.99):.1f} ms "
            f"({r.requests:,} requests in {r.seconds:g} s, {r.errors} non-200; "
            f"CPU per request: server {r.cpu_ms_per_request:.2f} ms, Postgres {r.pg_ms_per_request:.2f} ms"
            f"{commits})")


async def run(pg: common.Server, args: argparse.Namespace) -> tuple[Result, Result]:
    requests = signed_requests(BODIES)
    best: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="fbhook-") as tmp:
        for i in range(args.rounds):
            minimal = await bench_minimal(pg, args, requests)
            flow = await bench_flowbot(pg, Path(tmp) / f"r{i}", args, requests)
            out(f"  round {i + 1}: {describe('flowbot', flow)}")
            out(f"  round {i + 1}: {describe('minimal', minimal)}")
            for name, r in (("flowbot", flow), ("minimal", minimal)):
                if name not in best or r.rate > best[name].rate:
                    best[name] = r
    return best["flowbot"], best["minimal"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window per server and round")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-fanout", action="store_true", help="skip bench/fanout.py at the end")
    args = parser.parse_args(argv)
    out(f"hooks: HMAC-signed JSON POSTs, {args.connections} connections on loopback, "
        f"{args.seconds:g} s per server (after {args.warmup:g} s warm-up), best of {args.rounds}")
    with common.pg_server() as pg:
        flow, minimal = run_async(run(pg, args))  # the loop flowbot runs on; the minimal server too
        ratio = flow.rate / minimal.rate
        out(describe("flowbot hook (HMAC, 1 run + task + delivery per request)", flow))
        out(describe("minimal aiohttp + asyncpg insert", minimal))
        out(f"flowbot/minimal = {ratio:.2f} ({'meets' if ratio >= THROUGHPUT_TARGET else 'BELOW'} the "
            f"{THROUGHPUT_TARGET:.0%} target); flowbot p99 {flow.pct(0.99):.1f} ms "
            f"({'meets' if flow.pct(0.99) < P99_TARGET_MS else 'ABOVE'} the {P99_TARGET_MS:g} ms target)")
        fanout = ROOT / "bench" / "fanout.py"
        if not args.no_fanout and fanout.is_file():
            sys.path.insert(0, str(fanout.parent))
            import fanout as fanout_bench  # type: ignore[import-not-found]

            out("")
            fanout_bench.main([], url=pg.url)


if __name__ == "__main__":
    main()
