"""The engine a test drives: flowbot opened in-process on the test's database, its parts running
in the background (HTTP server, worker, outbox dispatcher, what plugins add), and the passes that
depend on time (job schedules, timers and deadlines, reminders and escalations) run by the test
when it moves the clock, in the order their times come.

``settle()`` returns once the engine has nothing left to do at the clock's time: no task running
or due, no effect due to deliver. One snapshot of the database says so, since every change
commits what it caused (its next tasks, its effects) in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from engine.people.followups import Reminders, ReminderSettings
from engine.runtime.app import App
from engine.runtime.lifecycle import open_app
from engine.runtime.outbox import OutboxDispatcher
from engine.runtime.worker import Worker, WorkerOptions
from engine.settings import Settings
from engine.store import kit_queries, queries, waits
from engine.store.db import NOTIFY_CHANNEL, OUTBOX_CHANNEL
from engine.testing.clock import TestClock
from engine.triggers.jobs.scheduler import Scheduler
from engine.web.server import serve

#: Clock steps one ``advance`` may take before it gives up (a job every second for a year...).
MAX_STEPS = 20_000


class EngineStuck(AssertionError):
    """Raised when the engine does not settle in time, or a part of it crashed."""


async def _never(seconds: float, stop: asyncio.Event) -> None:  # the scheduler never sleeps here
    await stop.wait()


@dataclass
class Engine:
    """One flowbot opened for a test and the parts running in the background."""

    app: App
    clock: TestClock
    port: int
    scheduler: Scheduler
    reminders: Reminders
    stop: asyncio.Event
    parts: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: hooks, the API, the console, Slack's events."""
        return f"http://127.0.0.1:{self.port}"

    # --- settling ---------------------------------------------------------------------------

    def _check_parts(self) -> None:
        for part in self.parts:
            if part.done() and not part.cancelled() and part.exception() is not None:
                raise EngineStuck(f"a part of the engine crashed: {part.exception()!r}") from part.exception()

    async def busy(self) -> tuple[int, int]:
        """(tasks running or due, effects due) at the clock's time."""
        row = await self.app.db.fetch_one(kit_queries.KIT_BUSY, {
            "now": self.clock(), "kinds": sorted(self.app.outbox_handlers)})
        assert row is not None
        return int(row["tasks"]), int(row["effects"])

    async def settle(self, within: float = 30.0) -> None:
        """Return once nothing is left to do at the clock's time (``EngineStuck`` after ``within`` s)."""
        deadline = time.monotonic() + within
        delay = 0.005
        while True:
            self._check_parts()
            # Waits that end now (a deadline passed, every child finished) end here, not later.
            await waits.timer_pass(self.app.store)
            tasks, effects = await self.busy()
            if not tasks and not effects:
                return
            if time.monotonic() >= deadline:
                raise EngineStuck(f"the engine is still busy after {within:g} s: {tasks} task(s) running or due, "
                                  f"{effects} effect(s) not delivered (a stage that never returns?)")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def wake(self) -> None:
        """Wake the worker and the outbox dispatcher (the clock moved: more may be due)."""
        async with self.app.db.transaction() as tx:
            await tx.execute(queries.NOTIFY, {"channel": NOTIFY_CHANNEL})
            await tx.execute(queries.NOTIFY, {"channel": OUTBOX_CHANNEL})

    # --- time -------------------------------------------------------------------------------

    async def next_due(self) -> dt.datetime | None:
        """The earliest time after now at which something is due: a timed task, a wait's deadline,
        a job's fire time, a reminder or escalation, an effect's retry."""
        now = self.clock()
        times = [await waits.next_timer(self.app.store), self.scheduler.timetable.next_fire_time()
                 if self.scheduler.timetable else None]
        effect = await self.app.db.fetch_one(kit_queries.KIT_NEXT_EFFECT, {
            "now": now, "kinds": sorted(self.app.outbox_handlers)})
        times.append(effect["due"] if effect else None)
        follow = {(f.stage.workflow.name, f.stage.name): f for f in self.reminders.follow_ups}
        for row in await self.app.db.fetch_all(kit_queries.KIT_WAITING_FORMS, {}):
            f = follow.get((row["workflow"], row["stage"]))
            for after in (f.remind_after, f.escalate_after) if f else ():
                if after:
                    times.append(row["created_at"] + dt.timedelta(seconds=after))
        future = [t for t in times if t is not None and t > now]
        return min(future) if future else None

    async def passes(self) -> None:
        """What a running flowbot does when the time comes: fire due jobs, end due waits, remind and
        escalate; then wake the worker and the outbox for what became due."""
        await self.scheduler.tick()
        while (await waits.timer_pass(self.app.store))[0]:
            pass
        await self.reminders.tick()
        await self.wake()

    async def advance_to(self, target: dt.datetime) -> None:
        """Move the clock to ``target`` through every time something falls due on the way, letting
        the engine finish what each one caused before the next."""
        await self.settle()
        for _ in range(MAX_STEPS):
            nxt = await self.next_due()
            step = min(nxt, target) if nxt is not None else target
            self.clock.move_to(max(step, self.clock()))
            await self.passes()
            await self.settle()
            if self.clock() >= target:
                return
        raise EngineStuck(f"advancing the clock took more than {MAX_STEPS} steps (something falls due every "
                          f"moment?); it stands at {self.clock().isoformat()}")

    # --- lifecycle --------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the background parts (letting deliveries in flight finish)."""
        self.stop.set()
        await asyncio.gather(*self.parts, return_exceptions=True)


@contextlib.asynccontextmanager
async def running(settings: Settings, clock: TestClock) -> AsyncIterator[Engine]:
    """flowbot opened with ``settings`` on ``clock``, its parts running until the block ends."""
    async with open_app(settings, clock=clock, pool_size=5) as app:
        stop = asyncio.Event()
        bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        worker = Worker(app.store, WorkerOptions(
            concurrency=16, threads=4, max_payload_bytes=settings.max_payload_bytes,
            poll_interval=settings.poll_interval, shutdown_grace=2.0, before_claim=app.background_gate))
        dispatcher = OutboxDispatcher(app.db, app.outbox_handlers, clock=clock, poll_interval=settings.poll_interval)
        parts = [
            asyncio.create_task(serve(app, stop, host="127.0.0.1", port=0, ready=bound.set_result)),
            asyncio.create_task(worker.run(stop)),
            asyncio.create_task(dispatcher.run(stop)),
        ]
        # What plugins run beside (the Slack app's identity check...); their reminder loops only
        # pass once at start, as the interval is out of reach: the test's clock moves are the passes.
        parts += [asyncio.create_task(part(stop)) for part in app.background]
        engine = Engine(app=app, clock=clock, port=0, stop=stop, parts=parts,
                        scheduler=Scheduler(app.store, clock=clock, sleep=_never, owner="flowbot-test",
                                            max_payload_bytes=settings.max_payload_bytes),
                        reminders=Reminders(app, clock=clock, settings=ReminderSettings(
                            settings.remind_after and float(settings.remind_after), 1e9)))
        try:
            engine.port = await asyncio.wait_for(bound, 10)
            await engine.scheduler.start()
            yield engine
        finally:
            await engine.close()

