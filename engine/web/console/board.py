"""The board's data: runs as columns (by status, or by stage of one workflow), with filters,
capped counts and keyset pagination. Every column is one index walk of at most ``limit`` rows.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.errors import FlowbotError
from engine.store import console_queries as q
from engine.store.db import Database, Row

STATUSES = ("running", "waiting", "failed", "completed", "cancelled")
FILTERS = ("workflow", "stage", "status", "assignee", "started_by", "since", "until", "text")
#: Cards per column.
PAGE = 20


class BadFilter(FlowbotError):
    """Raised when a board filter cannot be read (a date that is not one, a bad cursor)."""


@dataclass
class Column:
    """One column: its key and title, its cards, its count (capped), the cursor of its next page."""

    key: str
    title: str
    cards: list[dict[str, Any]] = field(default_factory=list)
    #: How many runs the column holds (None: not counted, see console_queries.UNCOUNTED).
    count: int | None = 0
    more: str | None = None

    @property
    def count_text(self) -> str:
        """The count as people read it ("1,000+" past the cap; "20+" when not counted)."""
        if self.count is None:
            return f"{len(self.cards)}+" if self.more else str(len(self.cards))
        return f"{q.COUNT_CAP:,}+" if self.count > q.COUNT_CAP else f"{self.count:,}"


def _moment(value: str, name: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadFilter(f"{name} must be a date or a date and time, got {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def read_filters(query: Mapping[str, str]) -> dict[str, Any]:
    """The filters a board's query string gives (empty ones left out)."""
    out: dict[str, Any] = {}
    for name in FILTERS:
        value = (query.get(name) or "").strip()
        if not value:
            continue
        if name in ("since", "until"):
            out[name] = _moment(value, name)
        elif name == "text":
            out[name] = "%" + value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        else:
            out[name] = value[:200]
    return out


def cursor_of(row: Row) -> str:
    """The keyset cursor after a card."""
    return f"{row['created_at'].isoformat()}|{row['id']}"


def read_cursor(value: str) -> tuple[dt.datetime, uuid.UUID]:
    """A cursor back into (created_at, id)."""
    at, _, run = value.partition("|")
    try:
        return dt.datetime.fromisoformat(at), uuid.UUID(run)
    except ValueError:
        raise BadFilter(f"not a board cursor: {value!r}") from None


async def status_columns(db: Database, statuses: list[str], filters: dict[str, Any], *,
                         limit: int = PAGE) -> list[Column]:
    """Status columns under ``filters``, newest first, with counts and where each run stands: one
    statement, one round trip, however many columns."""
    names = [f for f in FILTERS if f in filters]
    counted = not any(n in q.UNCOUNTED for n in names)
    rows = await db.fetch_all(q.board_columns(names, counted=counted),
                              {**filters, "statuses": statuses, "limit": limit + 1})
    by_status: dict[str, list[Row]] = {s: [] for s in statuses}
    counts: dict[str, int | None] = {}
    for row in rows:
        counts[row["column_key"]] = row["column_count"]
        if row["id"] is not None:
            by_status[row["column_key"]].append({**row, "at": row["at"] or []})
    return [_column(s, s.capitalize(), by_status[s], counts.get(s) if counted else None, limit) for s in statuses]


async def status_column(db: Database, status: str, filters: dict[str, Any], *, before: str | None = None,
                        limit: int = PAGE) -> Column:
    """The runs of one status under ``filters``, newest first."""
    params = {**filters, "status": status, "limit": limit + 1}
    names = [f for f in FILTERS if f in params and f != "stage"] + (["stage"] if "stage" in params else [])
    if before:
        params["before_at"], params["before_id"] = read_cursor(before)
        names.append("before")
    rows = await db.fetch_all(q.board_column(names), params)
    return _column(status, status.capitalize(), rows, await _count(db, q.board_count, names, params), limit)


async def _count(db: Database, query: Any, names: list[str], params: dict[str, Any]) -> int | None:
    if any(n in q.UNCOUNTED for n in names):
        return None
    counted = await db.fetch_one(query([n for n in names if n != "before"]), params)
    return int(counted["count"]) if counted else 0


async def stage_columns(db: Database, workflow: str, stages: list[str], filters: dict[str, Any], *,
                        limit: int = PAGE) -> list[Column]:
    """The stage columns of ``workflow``'s board under ``filters``: one statement."""
    names = [f for f in FILTERS if f in filters]
    counted = not any(n in q.UNCOUNTED for n in names)
    rows = await db.fetch_all(q.stage_columns(names, counted=counted),
                              {**filters, "workflow": workflow, "stages": stages, "limit": limit + 1})
    by_stage: dict[str, list[Row]] = {s: [] for s in stages}
    counts: dict[str, int | None] = {}
    for row in rows:
        counts[row["column_key"]] = row["column_count"]
        if row["id"] is not None:
            by_stage[row["column_key"]].append({**row, "at": row["at"] or []})
    columns = [_column(s, s, by_stage[s], counts.get(s) if counted else None, limit) for s in stages]
    for column in columns:
        column.more = None  # a stage column shows its newest; the filters narrow it
    return columns


def _column(key: str, title: str, rows: list[Row], count: int | None, limit: int) -> Column:
    more = cursor_of(rows[limit - 1]) if len(rows) > limit else None
    seen: set[Any] = set()
    cards = []
    for r in rows[:limit]:
        if r["id"] not in seen:  # a stage column lists tasks: a run with two shows once
            seen.add(r["id"])
            cards.append(dict(r))
    return Column(key, title, cards, count, more)


async def board(db: Database, filters: dict[str, Any], *, by: str = "status",
                stages: list[str] | None = None) -> list[Column]:
    """Every column of the board, in one statement."""
    if by == "stage" and stages is not None and "workflow" in filters:
        return await stage_columns(db, filters["workflow"], stages,
                                   {k: v for k, v in filters.items() if k not in ("workflow", "stage")})
    else:
        wanted = [filters["status"]] if filters.get("status") in STATUSES else list(STATUSES)
        return await status_columns(db, wanted, {k: v for k, v in filters.items() if k != "status"})
