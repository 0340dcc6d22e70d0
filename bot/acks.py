"""Acks first: what a Slack listener does after its ack waits for the acks still due.

Slack drops an answer later than 3 seconds, and a modal submission's answer (errors, the next
page) rides on its ack; so under a burst every request's ack goes before any request's
follow-up work. ``Priority`` counts the requests awaiting their ack; ``deferring`` makes an
outbox handler wait for them; ``FollowUps`` runs the work listeners hand over after their ack.

Listeners run with Bolt's ``process_before_response=True``: Bolt answers the request when the
listener returns, so a listener acks, hands its slow work to ``FollowUps`` and returns. (In
Bolt's other mode each listener runs in a task of its own while the request polls every 10 ms
for the ack: every ack waited up to 10 ms, and a burst of 200 requests woke the event loop
20,000 times a second.)
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.runtime.outbox import OutboxHandler

log = logging.getLogger(__name__)

#: How many clicks' after-ack work (Approve, Decline, Claim) runs at once. A burst of clicks
#: otherwise fills the event loop with database work that delays every ack queued behind it
#: (the clicks' own and the modal submissions', whose answers wait on their work). Open stays
#: outside the limit: its trigger id expires 3 s after the click.
FOLLOW_UP_CONCURRENCY = 8
#: The longest after-ack work (a click's, an outbox delivery, a claim) defers to pending acks.
FOLLOW_UP_MAX_DEFER_SECONDS = 1.0
#: How long no request may await its ack before after-ack work goes (the requests of a burst
#: arrive closer together than this).
FOLLOW_UP_PAUSE_SECONDS = 0.005


class Priority:
    """Acks first. A modal submission's answer rides on its ack; a click's work, card updates,
    Home tab refreshes (outbox deliveries) and the worker's next claim come after acks. So
    while requests to Slack's endpoint are waiting for their ack (``urgent``), that later work
    waits, and clicks' after-ack work runs ``FOLLOW_UP_CONCURRENCY`` at a time.

    Later work goes once no request has awaited its ack for ``pause`` seconds: the requests of
    a burst arrive one by one while the first are already answered, and without the pause the
    first answered click's work slipped in between and held up the submissions of the burst
    (their group commit waited for its transaction).

    The wait is bounded: once requests have kept coming without such a pause for ``max_defer``,
    nothing waits any more until the next pause. A burst is answered first; a steady stream
    of requests never starves the rest.

    Python's cyclic garbage collector waits too, while any ack is due (for ``max_defer`` at
    most): a burst of 200 requests set off two or three young collections of 1.5-2.7 ms each
    on the event loop, ahead of the acks (bench/slack.py, p99 median over 20 rounds each,
    alternated: 90.2 -> 77.5 ms; under 100 ms in 12 -> 17 of them). It runs again once no ack
    is due, from the event loop's next turn (after the last answer is written); reference
    counting frees everything else meanwhile. A collector already disabled (by the program) is
    left alone.
    """

    def __init__(self, concurrency: int = FOLLOW_UP_CONCURRENCY,
                 max_defer: float = FOLLOW_UP_MAX_DEFER_SECONDS, pause: float = FOLLOW_UP_PAUSE_SECONDS) -> None:
        self.slots = asyncio.Semaphore(concurrency)
        self.max_defer = max_defer
        self.pause = pause
        #: Requests awaiting their ack.
        self.pending = 0
        self._busy_since = 0.0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._pausing: asyncio.Handle | None = None
        self._pause_due = 0.0
        self._pause_again = False
        #: This busy spell disabled the garbage collector (and enables it again).
        self._gc_held = False

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """Around a request until its ack (a submission answered in its ack, any request to
        ``/slack/events``)."""
        if not self.pending:
            if self._pausing is not None:  # within the pause: the same busy spell goes on
                self._pausing.cancel()
                self._pausing = None
            elif self._quiet.is_set():
                self._busy_since = time.monotonic()
                self._quiet.clear()
        self._hold_gc()
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1
            if not self.pending:
                if self.pause > 0:
                    self._arm_pause()
                else:
                    self._quiet.set()
                # Collecting again waits for the next turn of the event loop: a collection set
                # off right here (4-7 ms after a burst) would delay this request's answer.
                asyncio.get_running_loop().call_soon(self._release_gc_if_idle)

    def _hold_gc(self) -> None:
        """No cyclic garbage collection while acks are due, up to ``max_defer`` into a busy spell."""
        if self._gc_held:
            if time.monotonic() - self._busy_since > self.max_defer:
                self._release_gc()
        elif gc.isenabled() and time.monotonic() - self._busy_since <= self.max_defer:
            gc.disable()
            self._gc_held = True

    def _release_gc(self) -> None:
        if self._gc_held:
            self._gc_held = False
            gc.enable()

    def _release_gc_if_idle(self) -> None:
        """Collect again unless an ack became due meanwhile (the busy spell goes on)."""
        if not self.pending:
            self._release_gc()

    def is_quiet(self) -> bool:
        """No ack has been due for ``pause`` (``quiet`` would return at once)."""
        return self._quiet.is_set()

    def _arm_pause(self, *, again: bool = False) -> None:
        loop = asyncio.get_running_loop()
        # The deadline is kept here: uvloop returns a plain Handle without ``when()`` for a
        # timer due within half a millisecond (a pause that short, or a clock that moved on).
        self._pause_due = loop.time() + self.pause
        self._pausing = loop.call_at(self._pause_due, self._paused)
        self._pause_again = again

    def _paused(self) -> None:
        assert self._pausing is not None
        late = asyncio.get_running_loop().time() - self._pause_due
        if late > self.pause and not self._pause_again:
            # The event loop was too busy to run this timer on time: it was accepting and reading
            # the next requests of the burst, which have not reached the endpoint yet. Not quiet
            # yet; one more pause (once only: a loop that is always that late is just busy).
            self._arm_pause(again=True)
            return
        self._pausing = None
        self._quiet.set()

    async def quiet(self) -> None:
        """Return once no request has awaited its ack for ``pause``, or once requests have kept
        coming without such a pause for ``max_defer``."""
        if self._quiet.is_set():
            return
        remaining = self._busy_since + self.max_defer - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), remaining)

    @contextlib.asynccontextmanager
    async def after_ack(self) -> AsyncIterator[None]:
        """Around a click's work after its ack. (It defers before taking a slot, so the slots
        keep working at full rate.)"""
        await self.quiet()
        async with self.slots:
            yield


def deferring(priority: Priority, handler: OutboxHandler) -> OutboxHandler:
    """An outbox handler that first lets pending acks go out (``Priority.quiet``): a burst of
    completions otherwise sends its card updates and Home tab refreshes while later requests of
    the same burst still wait for their ack. (Well inside the outbox lease.)"""

    async def deliver(row: dict[str, Any]) -> dict[str, Any] | None:
        await priority.quiet()
        return await handler(row)

    return deliver


#: How long closing waits for follow-up work in progress (an acked click not decided yet)
#: before cancelling it.
CLOSE_GRACE_SECONDS = 5.0


class FollowUps:
    """Work listeners hand over after their ack, run as tracked background tasks.

    ``start(work, what)`` runs ``work()`` once pending acks are out and a follow-up slot is
    free (``Priority.after_ack``), or at once with ``defer=False`` (opening a modal: its
    trigger id expires 3 s after the click). A failure is logged with ``what``; it cannot
    reach the person any more through the ack. ``close`` lets work in progress finish for a
    few seconds, then cancels the rest: an acked Approve is not dropped by a clean stop.
    """

    def __init__(self, priority: Priority) -> None:
        self.priority = priority
        self._tasks: set[asyncio.Task[None]] = set()
        self._optional: set[asyncio.Task[None]] = set()
        #: Deferred work waiting for the acks due, and the one task waiting for them.
        self._queued: list[tuple[Callable[[], Awaitable[object]], str, bool]] = []
        self._waiter: asyncio.Task[None] | None = None
        self._closed = False

    def start(self, work: Callable[[], Awaitable[object]], what: str, *, defer: bool = True,
              optional: bool = False) -> None:
        """Run ``work()`` in the background (see the class). ``optional`` work (a Home tab
        refresh) is cancelled at once when the app closes, and skipped once it has.

        While acks are due, deferred work waits in a queue (one waiter for all of it, not a
        task each: a burst of clicks queues a hundred of them)."""
        if self._closed:
            if not optional:
                log.warning("%s after its ack: flowbot is stopping; not done", what,
                            extra={"action": "follow_up_dropped"})
            return
        if defer and not self.priority.is_quiet():
            self._queued.append((work, what, optional))
            if self._waiter is None:
                self._waiter = self._track(self._start_queued(), "flowbot follow-ups: queued", optional=False)
            return
        self._spawn(work, what, defer, optional)

    def _spawn(self, work: Callable[[], Awaitable[object]], what: str, defer: bool, optional: bool) -> None:
        self._track(self._run(work, what, defer), f"flowbot follow-up: {what}", optional=optional)

    def _track(self, coro: Coroutine[Any, Any, None], name: str, *, optional: bool) -> asyncio.Task[None]:
        """Run ``coro`` as a task kept in ``_optional`` or ``_tasks`` until it is done."""
        task = asyncio.create_task(coro, name=name)
        kept = self._optional if optional else self._tasks
        kept.add(task)
        task.add_done_callback(kept.discard)
        return task

    async def _start_queued(self) -> None:
        """Start the queued work once the acks due are out."""
        try:
            await self.priority.quiet()
        finally:
            self._start_all_queued()

    def _start_all_queued(self) -> None:
        self._waiter = None
        queued, self._queued = self._queued, []
        for work, what, optional in queued:
            if not self._closed:
                self._spawn(work, what, True, optional)
            elif not optional:  # stopping: acked work is done now, not after more acks
                self._spawn(work, what, False, optional)

    @property
    def running(self) -> int:
        """Follow-ups started or queued, and not finished."""
        return len(self._tasks) + len(self._optional) + len(self._queued) - (self._waiter is not None)

    async def _run(self, work: Callable[[], Awaitable[object]], what: str, defer: bool) -> None:
        try:
            if defer:
                async with self.priority.after_ack():
                    await work()
            else:
                await work()
        except Exception:
            log.exception("%s after its ack failed", what, extra={"action": "follow_up_error"})

    async def idle(self, within: float = 10.0, *, optional: bool = False) -> None:
        """Return once no follow-up is running (tests; at most ``within`` seconds), not counting
        optional ones unless ``optional``."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            running = self._tasks | self._optional if optional else set(self._tasks)
            if not running:
                return
            await asyncio.wait(running, timeout=deadline - time.monotonic())

    async def close(self, grace: float = CLOSE_GRACE_SECONDS) -> None:
        """Take no more work; wait up to ``grace`` seconds for work in progress, cancel the rest
        (optional work at once)."""
        self._closed = True
        if self._waiter is not None:
            self._waiter.cancel()
            await asyncio.gather(self._waiter, return_exceptions=True)
        self._start_all_queued()  # queued work starts now (what is not optional)
        optional = set(self._optional)
        for task in optional:
            task.cancel()
        await asyncio.gather(*optional, return_exceptions=True)
        if not self._tasks:
            return
        _done, late = await asyncio.wait(set(self._tasks), timeout=grace)
        for task in late:
            task.cancel()
        if late:
            log.warning("%d follow-ups cancelled at stop", len(late), extra={"action": "follow_ups_cancelled"})
            await asyncio.gather(*late, return_exceptions=True)
