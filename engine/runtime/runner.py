"""Calling stage code: async functions on the loop, sync ones in a thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from engine import logs, metrics
from engine.context import Context, Task
from engine.store.db import Row
from engine.store.tasks import Failed, Finished, plan
from engine.workflow import Stage

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_MAX_SECONDS = 600.0


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
