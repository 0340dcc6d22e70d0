"""Group commit: callers that want to commit while a commit is in flight share the next one.

A lone item on an idle process commits at once; under a burst, one transaction (or statement)
commits every item that was waiting when it began. Hook deliveries (``engine.triggers.hooks.deliver``)
and Slack form completions (``bot.interactions``) both commit this way. ``GroupRead`` does the
same for reads by key (the form sessions of a burst of Slack modal submissions).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Generic, TypeVar

from engine.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Commits some items atomically; returns the indices (into its argument) of those that took
#: effect (the others lost a race: a delivery id already taken, a task no longer pending).
Execute = Callable[[list[T]], Awaitable[set[int]]]


class _Batches:
    """What group commits and group reads share: at most ``max_in_flight`` batches at a time, each
    taking what is waiting (up to ``max_batch``); when one ends and callers still wait, the next
    starts. A lone caller on an idle process goes at once."""

    def __init__(self, *, max_batch: int, max_in_flight: int) -> None:
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._in_flight = 0
        #: Batches in flight (the loop keeps only weak references to tasks).
        self._tasks: set[asyncio.Task[None]] = set()
        #: Sizes of the last batches taken (tests, diagnostics), most recent last.
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=1000)

    async def close(self) -> None:
        """Wait for the batches in flight (shutdown)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _kick(self) -> None:
        """A caller is waiting: start a batch if there is room for one."""
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            task = asyncio.ensure_future(self._run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        try:
            await self._batch()
        finally:
            self._in_flight -= 1
            if self._has_waiting():
                self._kick()

    def _has_waiting(self) -> bool:
        """Whether callers wait for a batch that has not started."""
        raise NotImplementedError

    async def _batch(self) -> None:
        """Take what is waiting (appending its size to ``batch_sizes``) and settle it."""
        raise NotImplementedError


class GroupCommit(_Batches, Generic[T]):
    """At most ``max_in_flight`` commits at a time, each of every waiting item (up to ``max_batch``).

    Two items with the same ``key`` never share a commit: the later one goes to the next, where it
    finds the first one's effect. When a commit of several items fails, each is retried alone, so
    one bad item fails only its own caller. Nobody hears "done" before the commit.
    """

    def __init__(self, execute: Execute[T], *, what: str, key: Callable[[T], Hashable | None] = lambda _: None,
                 max_batch: int = 100, max_in_flight: int = 1) -> None:
        super().__init__(max_batch=max_batch, max_in_flight=max_in_flight)
        self.execute = execute
        self.what = what
        self.key = key
        self._items: list[tuple[T, asyncio.Future[bool]]] = []

    def _has_waiting(self) -> bool:
        return bool(self._items)

    async def commit(self, item: T) -> bool:
        """Commit ``item``: True once committed, False if it lost (see ``Execute``). Raises the
        error of its commit when that failed (nothing of it was committed)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._items.append((item, future))
        self._kick()
        # The future is this caller's own: a caller that stops waiting cancels only it, and its
        # item is committed all the same (with the others).
        return await future

    def _take(self) -> list[tuple[T, asyncio.Future[bool]]]:
        """The waiting items for the next commit: up to ``max_batch``, one per key."""
        batch: list[tuple[T, asyncio.Future[bool]]] = []
        later: list[tuple[T, asyncio.Future[bool]]] = []
        keys: set[Hashable] = set()
        for entry in self._items:
            key = self.key(entry[0])
            if len(batch) >= self.max_batch or (key is not None and key in keys):
                later.append(entry)
                continue
            if key is not None:
                keys.add(key)
            batch.append(entry)
        self._items = later
        return batch

    async def _batch(self) -> None:
        batch = self._take()
        if batch:
            self.batch_sizes.append(len(batch))
            await self._commit(batch)

    async def _commit(self, entries: list[tuple[T, asyncio.Future[bool]]]) -> None:
        try:
            kept = await self.execute([item for item, _ in entries])
        except Exception as exc:
            if len(entries) == 1 or isinstance(exc, DatabaseUnavailable):
                # One item, or the database is unreachable (each would fail alone as well).
                for _, future in entries:
                    _settle(future, exc)
                return
            log.warning("a batch of %d %s failed (%s); committing them one by one", len(entries), self.what, exc,
                        extra={"action": "group_commit_failed"})
            for entry in entries:
                await self._commit([entry])
            return
        for n, (_, future) in enumerate(entries):
            _settle(future, n in kept)


def _settle(future: asyncio.Future[T], outcome: T | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


#: Reads the values of some keys at once; a key without a value is left out.
Fetch = Callable[[list[K]], Awaitable[Mapping[K, V]]]


class GroupRead(_Batches, Generic[K, V]):
    """Reads by key, at most ``max_in_flight`` at a time, each of every key waiting (up to
    ``max_batch``): a lone read on an idle process goes at once; under a burst, one statement
    reads what many callers asked for while the previous one was running. A failed read fails
    the callers of its batch (a read changes nothing; they may ask again).

    With ``settle`` (seconds), a batch starts only once ``QUIET_ITERATIONS`` iterations of the
    event loop in a row have brought no new key, or ``settle`` after the first key waiting,
    whichever comes first. A lone read waits two iterations; the requests of a burst, which
    reach the loop over a few long iterations (6-8 ms each while it accepts and reads 200 of
    them), are read in one statement instead of a small one and then, once the loop has handled
    its answer, one of the rest.
    """

    #: Iterations without a new key before a settling batch starts. One is not enough: within a
    #: burst, an iteration that only accepted connections (their requests are read in the next)
    #: brought none, and a read of the first 10-16 of 100 sessions went, crawling for 17-28 ms.
    QUIET_ITERATIONS = 2

    def __init__(self, fetch: Fetch[K, V], *, max_batch: int = 100, max_in_flight: int = 2,
                 settle: float = 0.0) -> None:
        super().__init__(max_batch=max_batch, max_in_flight=max_in_flight)
        self.fetch = fetch
        self.settle = settle
        self._keys: dict[K, list[asyncio.Future[V | None]]] = {}
        #: Cleared while a batch waits for the keys to stop coming (``settle``): since when, how
        #: many keys were waiting at the last look, and how many looks in a row found no new one.
        self._not_settling = asyncio.Event()
        self._not_settling.set()
        self._settling_since = 0.0
        self._keys_seen = 0
        self._quiet_iterations = 0

    def _has_waiting(self) -> bool:
        return bool(self._keys)

    def _kick(self) -> None:
        if not self.settle:
            super()._kick()
        elif self._not_settling.is_set() and self._in_flight < self.max_in_flight:
            loop = asyncio.get_running_loop()
            self._not_settling.clear()
            self._settling_since, self._keys_seen, self._quiet_iterations = loop.time(), len(self._keys), 0
            loop.call_soon(self._settled)

    def _settled(self) -> None:
        """Called once per loop iteration while settling: start the batch once the keys stopped
        coming (or the time is up)."""
        loop = asyncio.get_running_loop()
        came = len(self._keys) != self._keys_seen
        self._keys_seen = len(self._keys)
        self._quiet_iterations = 0 if came else self._quiet_iterations + 1
        if self._quiet_iterations < self.QUIET_ITERATIONS and loop.time() - self._settling_since < self.settle:
            loop.call_soon(self._settled)
            return
        self._not_settling.set()
        super()._kick()

    async def close(self) -> None:
        await self._not_settling.wait()  # a batch about to start (within ``settle``)
        await super().close()

    async def get(self, key: K) -> V | None:
        """The value of ``key`` (None when there is none)."""
        future: asyncio.Future[V | None] = asyncio.get_running_loop().create_future()
        self._keys.setdefault(key, []).append(future)
        self._kick()
        return await future  # this caller's own: cancelling it leaves the batch alone

    async def _batch(self) -> None:
        keys = list(self._keys)[:self.max_batch]
        batch = {key: self._keys.pop(key) for key in keys}
        if not batch:
            return
        self.batch_sizes.append(len(batch))
        try:
            found = await self.fetch(keys)
        except Exception as exc:
            for futures in batch.values():
                for future in futures:
                    _settle(future, exc)
            return
        for key, futures in batch.items():
            for future in futures:
                if not future.done():
                    future.set_result(found.get(key))
