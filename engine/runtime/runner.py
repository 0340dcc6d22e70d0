"""Calling stage code: async functions on the loop, sync ones in a thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

from engine import logs, metrics
from engine.context import Context, Task
from engine.store.db import Row
from engine.store.tasks import Failed, Finished, plan
from engine.workflow import Stage

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 600.0

T = TypeVar("T")


def backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (exponential: 2, 4, 8... capped at 10 minutes)."""
    return float(min(BACKOFF_BASE_SECONDS * 2 ** max(attempt - 1, 0), BACKOFF_MAX_SECONDS))


async def call(fn: Callable[..., Any], *args: Any, executor: Executor | None = None) -> Any:
    """Await ``fn(*args)``: directly when it is async, in ``executor`` (threads) when it is sync."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    loop = asyncio.get_running_loop()
    ctx = contextvars.copy_context()
    result = await loop.run_in_executor(executor, functools.partial(ctx.run, fn, *args))
    if inspect.isawaitable(result):  # a sync wrapper returning a coroutine
        result = await result
    return result


class StageThreads(ThreadPoolExecutor):
    """The threads sync stages run in, knowing which tasks' stages are in them right now.

    A thread cannot be stopped: at shutdown, a stage still running in one after the grace period
    must not run again elsewhere until this process is gone (``busy`` says which)."""

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="stage")
        self._busy: dict[int, int] = {}
        self._lock = threading.Lock()

    @property
    def busy(self) -> set[int]:
        """Tasks whose stage was handed to a thread and has not returned (nor been cancelled)."""
        with self._lock:
            return set(self._busy)

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn`` in a thread, counted against the task whose stage runs (``logs.TASK``)."""
        future = super().submit(fn, *args, **kwargs)
        row = logs.TASK.get()
        task_id = row.get("id") if row is not None else None
        if task_id is not None:
            with self._lock:
                self._busy[task_id] = self._busy.get(task_id, 0) + 1

            def done(_f: Future[T]) -> None:
                with self._lock:
                    left = self._busy.pop(task_id, 1) - 1
                    if left:
                        self._busy[task_id] = left

            future.add_done_callback(done)
        return future


def task_of(row: Row) -> Task:
    """The read-only Task a stage receives for a task row."""
    return Task(row["id"], row["type"], row["payload"], row["run_id"], row["stage"])


async def run_script(stage: Stage, row: Row, *, max_payload_bytes: int,
                     executor: Executor | None = None) -> Finished | Failed:
    """Run a script stage on one claimed task; never raises for the stage's own errors."""
    ctx = Context(
        stage_key=stage.key,
        run_context=row.get("run_context"),
        attempt=row["attempts"],
        max_payload_bytes=max_payload_bytes,
        task_id=row["id"],
        run_id=str(row["run_id"]),
    )
    token = logs.TASK.set(row)
    started = time.perf_counter()
    try:
        try:
            await call(stage.entry("run"), task_of(row), ctx, executor=executor)
        finally:
            metrics.stage_ran(row["workflow"], row["stage"], time.perf_counter() - started)
        outcome = ctx.finish()
        return Finished(row, outcome, plan(stage, outcome, task_id=row["id"]))
    except Exception as exc:
        return failure(row, exc, ctx)
    finally:
        logs.TASK.reset(token)


def failure(row: Row, exc: BaseException, ctx: Context | None = None) -> Failed:
    """A Failed result keeping the error and its traceback; the sends are dropped."""
    tb = "".join(traceback.format_exception(exc))
    log = list(ctx.outcome.log) if ctx else []
    return Failed(row, f"{type(exc).__name__}: {exc}\n{tb}", log, backoff(row["attempts"]))
