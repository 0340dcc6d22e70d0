"""Console page times over a big database: board, filtered board, run page, inbox; and what 100
idle live boards cost.

    python bench/console.py [--runs 1000000] [--tasks-per-run 5] [--requests 200]

Loads ``--runs`` runs of the shipped example workflows and ``--tasks-per-run`` tasks each with
binary COPY (``engine.store.pgcopy``): most runs completed, some waiting on a person (the inbox's
pending forms), failed or running, spread over 90 days. Then it starts ``flowbot web`` in a
subprocess and times each page from a client on loopback (server time plus the loopback round
trip), beside a same-run baseline: a minimal aiohttp server (same event loop) answering a static
page of the same size. Finally it opens 100 live boards (Server-Sent Events) and reads the CPU the
web process and Postgres use over 30 idle seconds, against 30 seconds with no board open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import common
import psutil

from engine.loader import load_workflows
from engine.store import migrate, pgcopy
from engine.web.console.session import COOKIE, Signer
from engine.workflow import StageKind

ROOT = common.ROOT
KEY = "bench-secret"
PEOPLE = [f"person{i}@example.com" for i in range(5000)]
STATUSES = [("completed", 0.90), ("waiting", 0.05), ("failed", 0.03), ("running", 0.02)]


def _status(r: float) -> str:
    for status, share in STATUSES:
        if r < share:
            return status
        r -= share
    return "completed"


def build(n_runs: int, per_run: int, seed: int = 7) -> tuple[bytes, bytes, dict[str, list[str]]]:
    """COPY data of the runs and their tasks; a sample of ids to ask for."""
    rng = random.Random(seed)
    registry = load_workflows(ROOT / "stages")
    flows = []
    for wf in registry.workflows.values():
        stages = [s for s in wf.stages.values() if s.kind in (StageKind.SCRIPT, StageKind.FORM)]
        forms = [s for s in stages if s.kind is StageKind.FORM and not s.is_start] or stages
        if stages:
            flows.append((wf.name, stages, forms))
    now = dt.datetime.now(dt.UTC)
    runs = io.BytesIO()
    tasks = io.BytesIO()
    runs.write(pgcopy.HEADER)
    tasks.write(pgcopy.HEADER)
    sample: dict[str, list[str]] = {"runs": [], "people": []}
    empty = pgcopy.jsonb("{}")
    trigger_api = pgcopy.jsonb('{"kind": "api"}')
    for i in range(n_runs):
        name, stages, forms = flows[i % len(flows)]
        status = _status(rng.random())
        created = now - dt.timedelta(seconds=rng.random() * 90 * 86400)
        run_id = uuid.UUID(int=rng.getrandbits(128))
        starter = PEOPLE[rng.randrange(len(PEOPLE))]
        trigger = pgcopy.jsonb(json.dumps({"kind": "form", "user": starter})) if i % 3 == 0 else trigger_api
        runs.write(pgcopy.row_start(7) + pgcopy.uuid(run_id.bytes) + pgcopy.text(name) + trigger + empty
                   + pgcopy.text(status) + pgcopy.timestamptz(created) + pgcopy.timestamptz(created))
        if i % 5000 == 0:
            sample["runs"].append(str(run_id))
        for j in range(per_run):
            last = j == per_run - 1
            stage = forms[0] if last and status == "waiting" else stages[j % len(stages)]
            t_status = {"waiting": "pending", "failed": "failed", "running": "pending"}.get(status, "completed") \
                if last else "completed"
            assignee = None
            if stage.kind is StageKind.FORM:
                who = PEOPLE[rng.randrange(len(PEOPLE))]
                assignee = json.dumps({"users": [who]})
                if t_status == "pending" and len(sample["people"]) < 50:
                    sample["people"].append(who)
            payload = json.dumps({"n": i, "step": j, "note": f"claim {i} for customer {i % 9973}"})
            at = created + dt.timedelta(seconds=j)
            tasks.write(pgcopy.row_start(13) + pgcopy.uuid(run_id.bytes) + pgcopy.text(name)
                        + pgcopy.text(stage.name) + pgcopy.text(stage.kind.value) + pgcopy.text("next")
                        + pgcopy.jsonb(payload) + pgcopy.text(t_status) + pgcopy.int4(3) + pgcopy.int4(30)
                        + pgcopy.jsonb(assignee) + pgcopy.timestamptz(at) + pgcopy.timestamptz(at)
                        + pgcopy.text("engine"))
    runs.write(pgcopy.TRAILER)
    tasks.write(pgcopy.TRAILER)
    return runs.getvalue(), tasks.getvalue(), sample


async def load(url: str, n_runs: int, per_run: int) -> dict[str, list[str]]:
    await migrate.upgrade(url)
    conn = await asyncpg.connect(url)
    try:
        chunk = 100_000
        sample: dict[str, list[str]] = {"runs": [], "people": []}
        for start in range(0, n_runs, chunk):
            n = min(chunk, n_runs - start)
            runs, tasks, part = await asyncio.to_thread(build, n, per_run, start + 1)
            await conn.copy_to_table("runs", source=io.BytesIO(runs), format="binary",
                                     columns=["id", "workflow", "trigger", "context", "status", "created_at",
                                              "updated_at"])
            await conn.copy_to_table("tasks", source=io.BytesIO(tasks), format="binary",
                                     columns=["run_id", "workflow", "stage", "kind", "type", "payload", "status",
                                              "max_attempts", "lease_seconds", "assignee", "available_at",
                                              "created_at", "created_by"])
            sample["runs"] += part["runs"]
            sample["people"] += part["people"]
            common.out(f"  loaded {start + n:,} runs, {(start + n) * per_run:,} tasks")
        await conn.execute("UPDATE runs SET finished_at = updated_at + interval '5 minutes' "
                           "WHERE status IN ('completed', 'failed')")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return sample


@contextlib.contextmanager
def kept_server(directory: str) -> Iterator[common.Server]:
    """An embedded Postgres whose data stays in ``directory`` (stopped, not deleted, on exit)."""
    from engine.store.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(Path(directory) / "pg")
    url = pg.start()
    pid_file = Path(directory) / "pg" / "postmaster.pid"
    try:
        yield common.Server(url, int(pid_file.read_text().split("\n", 1)[0]) if pid_file.exists() else None)
    finally:
        pg.stop()


async def loaded_sample(url: str, n_runs: int) -> dict[str, list[str]] | None:
    """Ids to ask for from data an earlier run loaded (None when there is not as much)."""
    try:
        conn = await asyncpg.connect(url)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        if (await conn.fetchval("SELECT count(*) FROM runs")) < n_runs:
            return None
        runs = await conn.fetch("SELECT id FROM runs TABLESAMPLE SYSTEM (1) LIMIT 200")
        people = await conn.fetch("SELECT assignee -> 'users' ->> 0 AS who FROM tasks WHERE status = 'pending' "
                                  "AND kind = 'form' LIMIT 50")
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    common.out(f"reusing the {n_runs:,}+ runs loaded earlier")
    return {"runs": [str(r["id"]) for r in runs], "people": [str(r["who"]) for r in people]}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


BASELINE = """
import sys
from aiohttp import web
body = open(sys.argv[2]).read()
async def page(request):
    return web.Response(text=body, content_type="text/html")
app = web.Application()
app.router.add_get("/page", page)
try:
    import uvloop
    loop_factory = uvloop.new_event_loop
except ImportError:
    loop_factory = None
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None,
            **({"loop": loop_factory()} if loop_factory else {}))
"""


async def wait_up(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            try:
                async with http.get(url) as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


async def timed(http: aiohttp.ClientSession, urls: list[str], cookies: dict[str, str]) -> list[float]:
    out = []
    for url in urls:
        t0 = time.perf_counter()
        async with http.get(url, cookies=cookies) as resp:
            await resp.read()
            assert resp.status == 200, (url, resp.status)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def summary(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[int(0.95 * (len(ms) - 1))]
    return f"  {name:<22} p50 {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   max {ms[-1]:7.1f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--tasks-per-run", type=int, default=5)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=30.0)
    parser.add_argument("--keep", metavar="DIR", help="keep the embedded Postgres (and its data) in DIR, and "
                        "reuse the data loaded there by an earlier run with as many runs")
    args = parser.parse_args()
    with kept_server(args.keep) if args.keep else common.pg_server() as server:
        url = common.database_url(server.url, "bench_console")
        sample = await loaded_sample(url, args.runs) if args.keep else None
        if sample is None:
            url = await common.fresh_database(server.url, "bench_console")
            common.out(f"loading {args.runs:,} runs and {args.runs * args.tasks_per_run:,} tasks (binary COPY)...")
            t0 = time.monotonic()
            sample = await load(url, args.runs, args.tasks_per_run)
            common.out(f"  loaded in {time.monotonic() - t0:.0f} s")
        else:
            await migrate.upgrade(url)  # indexes added since the data was loaded
        common.out(f"  {await common.server_settings(url)}")
        port, base_port = _port(), _port()
        env = {**os.environ, "DATABASE_URL": url, "FLOWBOT_STAGES": str(ROOT / "stages"), "PORT": str(port),
               "FLOWBOT_SECRET_KEY": KEY, "FLOWBOT_API_TOKEN": "bench", "FLOWBOT_HOST": "127.0.0.1",
               "EXPENSE_HOOK_TOKEN": "x", "FLOWBOT_HOME": str(Path(server.url and "/tmp") / "fb-console-bench")}
        web = subprocess.Popen([sys.executable, "-m", "engine.cli", "web"], env=env, cwd=ROOT,  # noqa: ASYNC220
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        body_file = Path("/tmp") / f"fb-baseline-{os.getpid()}.html"
        baseline = None
        try:
            base = f"http://127.0.0.1:{port}"
            await wait_up(base + "/healthz")
            admin = {COOKIE: Signer(KEY).sign({"csrf": secrets.token_urlsafe(8), "person": "ops@example.com",
                                               "role": "admin", "exp": int(time.time()) + 86400})}
            rng = random.Random(1)
            n = args.requests
            pages = {
                "board": [base + "/console/board"] * n,
                "filtered board": [base + f"/console/board?workflow={w}&status={s}" for w, s in
                                   ((rng.choice(["expense", "helpdesk", "access_request"]),
                                     rng.choice(["failed", "waiting", "completed"])) for _ in range(n))],
                "board by stage": [base + "/console/board?workflow=expense&by=stage"] * n,
                "run page": [base + f"/console/runs/{rng.choice(sample['runs'])}" for _ in range(n)],
            }
            async with aiohttp.ClientSession() as http:
                async with http.get(base + "/console/board", cookies=admin) as resp:
                    body_file.write_text(await resp.text())
                baseline = subprocess.Popen(  # noqa: ASYNC220  (started once, before timing)
                    [sys.executable, "-c", BASELINE, str(base_port), str(body_file)])
                await wait_up(f"http://127.0.0.1:{base_port}/page")
                await timed(http, [base + "/console/board"] * 20, admin)  # warm up
                common.out(f"page times over loopback, {n} sequential requests each:")
                common.out(summary("baseline static page", await timed(
                    http, [f"http://127.0.0.1:{base_port}/page"] * n, {})))
                for name, urls in pages.items():
                    common.out(summary(name, await timed(http, urls, admin)))
                inbox_ms = []
                for person in (sample["people"] * (n // max(1, len(sample["people"])) + 1))[:n]:
                    cookie = {COOKIE: Signer(KEY).sign({"csrf": "x", "person": person, "role": "member",
                                                        "exp": int(time.time()) + 86400})}
                    inbox_ms += await timed(http, [base + "/console/inbox"], cookie)
                common.out(summary("inbox", inbox_ms))

                proc = psutil.Process(web.pid)

                def cpu() -> tuple[float, float]:
                    t = proc.cpu_times()
                    return t.user + t.system, common.postgres_cpu(server) or 0.0

                a = cpu()
                await asyncio.sleep(args.idle_seconds)
                b = cpu()
                common.out(f"idle, no board open, {args.idle_seconds:.0f} s: web {b[0] - a[0]:.3f} s CPU, "
                           f"postgres {b[1] - a[1]:.3f} s CPU")
                streams = []
                for _ in range(100):
                    resp = await http.get(base + "/console/board/live", cookies=admin)
                    assert resp.status == 200
                    await resp.content.readline()
                    streams.append(resp)
                await asyncio.sleep(2)
                a = cpu()
                await asyncio.sleep(args.idle_seconds)
                b = cpu()
                common.out(f"idle, 100 live boards open, {args.idle_seconds:.0f} s: web {b[0] - a[0]:.3f} s CPU, "
                           f"postgres {b[1] - a[1]:.3f} s CPU")
                for resp in streams:
                    resp.close()
        finally:
            web.terminate()
            web.wait(10)
            if baseline is not None:
                baseline.terminate()
                baseline.wait(10)
            body_file.unlink(missing_ok=True)


if __name__ == "__main__":
    from engine.cli.main import run_async

    run_async(main())
