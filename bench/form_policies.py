"""What form timeouts and approvals needing several people cost, beside same-run baselines.

    python bench/form_policies.py [--tasks 500] [--repeat 3]

Starts its own embedded Postgres in a temporary directory (or uses ``DATABASE_URL``, which must
allow CREATE DATABASE) and a fresh migrated database. Rounds alternate between the measured case
and its baseline (``--repeat`` each), and medians are compared:

a) creating form tasks: ``--tasks`` runs started at an approval form one by one (each its own
   transaction), with ``timeout="48h"`` (the deadline row and the workers' wake-up written with
   the task) against the same form without a timeout;
b) answering: a single-approver submission (``people.submit``, the task completed) against the
   two decisions of an ``Approval(approvers=2)`` (the first kept, the second completing it; each
   its own transaction under the run's and the task's locks), in ms per decision;
c) firing deadlines: ``--tasks`` form deadlines ended by the workers' timer pass (100 per pass,
   each sending its ``on_timeout`` task) against as many ``workflow.wait`` timeouts, per second.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import statistics
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import common  # bench/common.py (puts the repository root on sys.path)
from common import out

from engine.loader import load_workflows
from engine.people import actions as people
from engine.store import migrate, waits
from engine.store.db import Database
from engine.store.tasks import Store

STAGES = {
    "buy/workflow.py": """
        from engine import Workflow

        workflow = Workflow("buy")
        plain = workflow.form("plain", assignee=["a@x.io", "b@x.io"], module="one")
        timed = workflow.form("timed", assignee=["a@x.io", "b@x.io"], module="one", timeout="48h",
                              on_timeout="declined")
        pair = workflow.form("pair", assignee=["a@x.io", "b@x.io"], module="two")
        wait = workflow.wait("wait", event="paid", key="{n}", timeout="48h", on_timeout="declined")
        done = workflow.script("done")
        for stage in (plain, timed, pair, wait):
            workflow.transition(stage, done)
    """,
    "buy/one.py": """
        from engine.forms import Approval
        form = Approval("Buy")
        def run(task, answers, ctx):
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/two.py": """
        from engine.forms import Approval
        form = Approval("Buy", approvers=2)
        def run(task, answers, ctx):
            ctx.send(answers["decision"], task.payload)
    """,
    "buy/done.py": "def run(task, ctx):\n    pass\n",
}


class Everyone:
    """A directory where entries are identities."""

    async def identity(self, entry: str) -> str:
        return entry

    async def is_member(self, team: str, actor: str) -> bool:
        return False


class Clock:
    """The store's clock, moved forward to make deadlines due."""

    def __init__(self) -> None:
        self.shift = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.shift


async def start(store: Store, stage: str, n: int) -> tuple[float, list[int]]:
    """``n`` runs started at ``stage``, one transaction each: (ms per run, their task ids)."""
    target = store.registry.get("buy").stage(stage)
    ids = []
    t0 = time.perf_counter()
    for i in range(n):
        _, task_id = await store.start_run(target, {"n": f"{stage}-{i}-{time.monotonic_ns()}"})
        ids.append(task_id)
    return 1000 * (time.perf_counter() - t0) / n, ids


async def answer(store: Store, task_ids: list[int], people_: list[str]) -> float:
    """ms per decision: each task decided by each of ``people_`` in turn."""
    decisions = 0
    t0 = time.perf_counter()
    for task_id in task_ids:
        for who in people_:
            result = await people.submit(store, task_id, {"decision": "approved", "comment": None}, who, Everyone(),
                                         max_payload_bytes=1 << 16)
            assert result.ok, result
            decisions += 1
    return 1000 * (time.perf_counter() - t0) / decisions


async def fire(store: Store, clock: Clock, n: int) -> float:
    """Deadlines ended per second by timer passes of 100, once ``n`` are due."""
    clock.shift += dt.timedelta(hours=49)
    ended = 0
    t0 = time.perf_counter()
    while ended < n:
        got = await waits.expire(store, limit=100)
        if not got:
            raise SystemExit(f"only {ended} of {n} deadlines ended")
        ended += got
    return ended / (time.perf_counter() - t0)


async def alternate(rounds: int, measured: Callable[[], Awaitable[float]],
                    baseline: Callable[[], Awaitable[float]]) -> tuple[float, float]:
    """Medians of ``measured`` and ``baseline``, rounds alternating."""
    a, b = [], []
    for _ in range(rounds):
        a.append(await measured())
        b.append(await baseline())
    return statistics.median(a), statistics.median(b)


async def run(url: str, n: int, repeat: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fbpolicies-") as tmp:
        for rel, source in STAGES.items():
            (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / rel).write_text(textwrap.dedent(source).lstrip())
        registry = load_workflows(Path(tmp))
    db_url = await common.fresh_database(url, "flowbot_bench_policies")
    await migrate.upgrade(db_url)
    db = Database(db_url, pool_size=2)
    clock = Clock()
    store = Store(db, registry, clock=clock)
    try:
        timed, plain = await alternate(repeat, lambda: _ms(start(store, "timed", n)),
                                       lambda: _ms(start(store, "plain", n)))
        out(f"a) form task created: {timed:.2f} ms with timeout=\"48h\" vs {plain:.2f} ms without "
            f"({n} runs per round, median of {repeat})")

        async def pair() -> float:
            _, ids = await start(store, "pair", n)
            return await answer(store, ids, ["a@x.io", "b@x.io"])

        async def single() -> float:
            _, ids = await start(store, "plain", n)
            return await answer(store, ids, ["a@x.io"])

        quorum, one = await alternate(repeat, pair, single)
        out(f"b) decision: {quorum:.2f} ms each for approvers=2 (one kept, one completing) vs {one:.2f} ms "
            f"for a single approver's submission ({n} tasks per round, median of {repeat})")

        async def forms() -> float:
            await start(store, "timed", n)
            return await fire(store, clock, n)

        async def waits_() -> float:
            await start(store, "wait", n)
            return await fire(store, clock, n)

        form_rate, wait_rate = await alternate(repeat, forms, waits_)
        out(f"c) deadlines fired: {form_rate:.0f}/s for form timeouts vs {wait_rate:.0f}/s for wait-stage "
            f"timeouts ({n} per round, passes of 100, median of {repeat})")
    finally:
        await db.close()


async def _ms(work: Awaitable[tuple[float, list[int]]]) -> float:
    return (await work)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with common.pg_server() as server:
        asyncio.run(run(server.url, args.tasks, args.repeat))


if __name__ == "__main__":
    main()
