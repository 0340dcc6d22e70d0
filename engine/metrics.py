"""Prometheus metrics of one flowbot process (``prometheus_client``), served at ``/metrics``.

Counters and histograms are kept in memory as things happen (tasks claimed and committed, stage
durations, outbox deliveries, hook requests, job fires, Slack API calls, database errors); gauges
about the database (open tasks by state, the age of the oldest pending one, outbox depth, open
runs) are read at scrape time by ``refresh_database`` with one cheap query (partial indexes over
open rows only; never a count of finished ones). Every part of flowbot may record here; ``bot/``
records its Slack calls here too (the arrow points from ``bot`` to ``engine``, never back).

Recording on the hot path is a dict lookup per task and batch-sized counter increments, and can be
switched off (``FLOWBOT_METRICS=off``: ``enabled = False``) to measure what it costs.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

#: Recording on (the entry point turns it off with FLOWBOT_METRICS=off).
enabled = True

# No ``*_created`` series beside each counter: they double the output and dashboards ignore them.
if hasattr(prometheus_client, "disable_created_metrics"):
    prometheus_client.disable_created_metrics()

#: flowbot's own registry: only what this module defines, plus the process's CPU, memory and
#: file descriptors (``process_*``) and the Python version.
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

#: The classic text format every Prometheus version reads (what ``generate_latest`` writes for
#: flowbot's metric names).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_TASK = ["workflow", "stage"]

#: Upper bounds of the stage duration histogram (seconds).
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


class _PerStage(Collector):
    """The per-task metrics (claimed, completed, retried, failed, stage durations) by workflow and
    stage, kept in plain dicts and turned into metrics only when scraped.

    They are updated for every task on the worker's event loop, where ``prometheus_client``'s own
    counters and histograms (a lock per increment, a child lookup per label set) cost several
    microseconds a task; here an update is a dict lookup and an addition. Every update and every
    scrape happens on the event loop's thread, so nothing else touches the dicts meanwhile.
    """

    COUNTERS = {
        "claimed": ("flowbot_tasks_claimed", "Script tasks claimed by workers."),
        "completed": ("flowbot_tasks_completed", "Tasks completed (by a worker or a person)."),
        "retried": ("flowbot_tasks_retried", "Stage runs that raised and will be retried."),
        "failed": ("flowbot_tasks_failed", "Tasks failed for good (attempts spent)."),
    }

    def __init__(self) -> None:
        self.counts: dict[str, dict[tuple[str, str], int]] = {k: {} for k in self.COUNTERS}
        #: (workflow, stage) -> [count per bucket (the last one: over every bound), sum of seconds]
        self.durations: dict[tuple[str, str], list[Any]] = {}

    def add(self, kind: str, rows: Iterable[Mapping[str, Any]]) -> None:
        counts = self.counts[kind]
        for row in rows:
            key = (row.get("workflow") or "", row.get("stage") or "")
            counts[key] = counts.get(key, 0) + 1

    def observe(self, workflow: str, stage: str, seconds: float) -> None:
        entry = self.durations.get((workflow, stage))
        if entry is None:
            entry = self.durations[(workflow, stage)] = [[0] * (len(STAGE_BUCKETS) + 1), 0.0]
        entry[0][bisect.bisect_left(STAGE_BUCKETS, seconds)] += 1
        entry[1] += seconds

    def collect(self) -> Iterator[Metric]:
        for kind, (name, doc) in self.COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=_TASK)
            for (workflow, stage), n in sorted(self.counts[kind].items()):
                family.add_metric([workflow, stage], n)
            yield family
        histogram = HistogramMetricFamily(
            "flowbot_stage_duration_seconds", "Time a script stage's run(task, ctx) took (successes and failures).",
            labels=_TASK)
        bounds = [*(repr(float(b)) for b in STAGE_BUCKETS), "+Inf"]
        for (workflow, stage), (buckets, total) in sorted(self.durations.items()):
            cumulative = list(zip(bounds, itertools.accumulate(buckets), strict=True))
            histogram.add_metric([workflow, stage], cumulative, sum_value=total)
        yield histogram


PER_STAGE = _PerStage()
REGISTRY.register(PER_STAGE)

TASKS_OPEN = Gauge("flowbot_tasks", "Open tasks by state (pending, locked) and kind (script, form), read at scrape.",
                   ("state", "kind"), registry=REGISTRY)
OLDEST_PENDING = Gauge("flowbot_oldest_pending_task_age_seconds",
                       "Age of the oldest due pending task by kind (script: since due; form: since created).",
                       ("kind",), registry=REGISTRY)
RUNS_OPEN = Gauge("flowbot_runs", "Open runs by status (running, waiting), read at scrape.", ("status",),
                  registry=REGISTRY)

OUTBOX_PENDING = Gauge("flowbot_outbox_pending", "Effects waiting for delivery, by kind, read at scrape.",
                       ("kind",), registry=REGISTRY)
OUTBOX_OLDEST = Gauge("flowbot_outbox_oldest_pending_age_seconds", "Age of the oldest due pending effect.",
                      registry=REGISTRY)
OUTBOX_DELIVERIES = Counter("flowbot_outbox_deliveries",
                            "Effect delivery attempts by kind and outcome (delivered, retry, failed).",
                            ("kind", "outcome"), registry=REGISTRY)

HOOK_REQUESTS = Counter("flowbot_hook_requests", "Requests to /hooks/<path> by hook and HTTP status.",
                        ("hook", "status"), registry=REGISTRY)
JOB_FIRES = Counter("flowbot_job_fires", "Job fire times by job and outcome (fired, failed, skipped).",
                    ("job", "outcome"), registry=REGISTRY)

SLACK_CALLS = Counter("flowbot_slack_api_calls", "Slack Web API calls by method and HTTP status.",
                      ("method", "status"), registry=REGISTRY)
SLACK_RATE_LIMITED = Counter("flowbot_slack_rate_limited", "Slack Web API calls answered 429 (rate limited).",
                             ("method",), registry=REGISTRY)

DB_POOL = Gauge("flowbot_db_pool_connections", "Database pool connections by state (in_use, idle), at scrape.",
                ("state",), registry=REGISTRY)
DB_ERRORS = Counter("flowbot_db_errors", "Database errors (statements that failed, connections lost).",
                    registry=REGISTRY)
DB_UP = Gauge("flowbot_db_up", "1 when the scrape's database query answered, else 0.", registry=REGISTRY)

PURGED = Counter("flowbot_purged_rows", "Rows deleted by retention, by table.", ("table",), registry=REGISTRY)

#: Outbox kinds seen pending at some scrape (reset to 0 once drained).
_outbox_kinds: set[str] = set()

def tasks_claimed(rows: Iterable[Mapping[str, Any]]) -> None:
    """A worker claimed these task rows."""
    if enabled:
        PER_STAGE.add("claimed", rows)


def tasks_committed(completed: Iterable[Mapping[str, Any]], retried: Iterable[Mapping[str, Any]] = (),
                    failed: Iterable[Mapping[str, Any]] = ()) -> None:
    """A commit completed, retried and failed these task rows (each with workflow and stage)."""
    if enabled:
        PER_STAGE.add("completed", completed)
        PER_STAGE.add("retried", retried)
        PER_STAGE.add("failed", failed)


def stage_ran(workflow: str, stage: str, seconds: float) -> None:
    """A stage's run function returned or raised after ``seconds``."""
    if enabled:
        PER_STAGE.observe(workflow, stage, seconds)


def outbox_delivery(kind: str, outcome: str) -> None:
    """An effect delivery attempt ended: delivered, retry or failed."""
    if enabled:
        OUTBOX_DELIVERIES.labels(kind, outcome).inc()


def hook_request(hook: str, status: int) -> None:
    """A hook request was answered with ``status``."""
    if enabled:
        HOOK_REQUESTS.labels(hook, str(status)).inc()


def job_fire(job: str, outcome: str) -> None:
    """A job's fire time ended as fired, failed or skipped."""
    if enabled:
        JOB_FIRES.labels(job, outcome).inc()


def slack_call(method: str, status: int | str) -> None:
    """A Slack Web API call got ``status`` (an HTTP status, or "error" when it got no answer)."""
    if enabled:
        SLACK_CALLS.labels(method, str(status)).inc()
        if status == 429:
            SLACK_RATE_LIMITED.labels(method).inc()


def database_error() -> None:
    """A database statement or connection failed."""
    if enabled:
        DB_ERRORS.inc()


def purged(counts: Mapping[str, int]) -> None:
    """Retention deleted rows (table -> count)."""
    for table, n in counts.items():
        if n:
            PURGED.labels(table).inc(n)


def set_pool(in_use: int, idle: int) -> None:
    """The database pool's connections right now."""
    DB_POOL.labels("in_use").set(in_use)
    DB_POOL.labels("idle").set(idle)


def set_database(row: Mapping[str, Any] | None, outbox: Iterable[Mapping[str, Any]], now: dt.datetime) -> None:
    """The gauges read from the database at scrape time (``row`` None: the database did not answer)."""
    DB_UP.set(0 if row is None else 1)
    if row is None:
        return
    TASKS_OPEN.labels("pending", "script").set(row["pending_script"])
    TASKS_OPEN.labels("pending", "form").set(row["pending_form"])
    TASKS_OPEN.labels("locked", "script").set(row["locked"])
    OLDEST_PENDING.labels("script").set(_age(row["oldest_script"], now))
    OLDEST_PENDING.labels("form").set(_age(row["oldest_form"], now))
    RUNS_OPEN.labels("running").set(row["runs_running"])
    RUNS_OPEN.labels("waiting").set(row["runs_waiting"])
    oldest = 0.0
    seen = set()
    for r in outbox:
        OUTBOX_PENDING.labels(r["kind"]).set(r["n"])
        oldest = max(oldest, _age(r["oldest"], now))
        seen.add(r["kind"])
    # Kinds drained since the last scrape go back to 0 (they stay listed, at 0).
    for kind in _outbox_kinds - seen:
        OUTBOX_PENDING.labels(kind).set(0)
    _outbox_kinds.update(seen)
    OUTBOX_OLDEST.set(oldest)


def _age(at: dt.datetime | None, now: dt.datetime) -> float:
    return max(0.0, (now - at).total_seconds()) if at is not None else 0.0


def exposition() -> bytes:
    """Every metric in the Prometheus text format."""
    return generate_latest(REGISTRY)
