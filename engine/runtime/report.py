"""Execution reports for people: waiting for a run, and rendering it as text."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from engine.store.tasks import Store

SETTLED = ("completed", "failed", "cancelled", "waiting")


async def wait_for(store: Store, run_id: str, *, within: float = 60.0, interval: float = 0.05) -> dict[str, Any]:
    """Poll until the run completes, fails, is cancelled or waits on a person (or ``within``
    seconds have passed: the report as it stands then)."""
    deadline = time.monotonic() + within
    while True:
        data = await store.report(run_id)
        assert data is not None, run_id
        if data["status"] in SETTLED or time.monotonic() >= deadline:
            return data
        await asyncio.sleep(interval)
        interval = min(interval * 1.5, 0.5)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for rows: timestamps as ISO 8601, anything else as text."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _duration(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    ms = (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds() * 1000
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def render(data: Mapping[str, Any]) -> str:
    """A run's execution report as text."""
    lines = [
        f"run {data['id']}",
        f"  workflow  {data['workflow']}",
        f"  status    {data['status']}" + (f"  ({_duration(data['created_at'], data['finished_at'])})"
                                           if data.get("finished_at") else ""),
        f"  trigger   {json.dumps(data.get('trigger') or {})}",
    ]
    if data.get("test"):
        lines.insert(1, "  test run  (left out of success rates; `flowbot runs purge --test` removes it)")
    if data.get("workflow_version") or data.get("versions"):
        lines.append(f"  version   {data.get('workflow_version') or '(not recorded)'}")
    if data.get("mixed_versions"):
        lines.append(f"  warning   steps ran on {len(data['versions'])} versions of the workflow: "
                     + ", ".join(data["versions"]))
    if data.get("error"):
        lines.append(f"  error     {data['error'].splitlines()[0]}")
    if data.get("parent_run_id"):
        lines.append(f"  parent    {data['parent_run_id']}")
    lines.append("  steps:")
    steps = data["steps"]
    stage_w = max([20, *(len(s["stage"]) for s in steps)])
    type_w = max([16, *(len(s["type"]) for s in steps)])
    for i, s in enumerate(steps, 1):
        lines.append(
            f"    {i:>2}. {s['stage']:<{stage_w}} {s['kind']:<6} {s['type']:<{type_w}} {s['status']:<9} "
            f"attempts {s['attempts']}  {_duration(s['started_at'], s['finished_at'])}".rstrip()
            + (f"  [{s['workflow_version']}]" if data.get("mixed_versions") and s.get("workflow_version") else "")
        )
        if s.get("due_at"):
            lines.append(f"        due: {s['due_at']}")
        if s.get("waiting_for"):
            w = s["waiting_for"]
            lines.append(f"        waiting for: {w['event']} (key {w['key']})"
                         + (f" until {w['deadline']}" if w.get("deadline") else ""))
        if s.get("error") and s["status"] != "completed":
            lines.append(f"        error: {s['error'].splitlines()[0]}")
        if s["kind"] == "form" and s["status"] == "pending":
            lines.append(f"        waiting on: {_assignee(s.get('assignee'))}"
                         + (f" (times out {s['deadline']})" if s.get("deadline") else ""))
            lines.append(f"        payload: {json.dumps(s.get('payload') or {}, default=json_default)}")
        for entry in s.get("log") or []:
            lines.append(f"        log: {entry.get('message')}")
    lines.append(f"  context   {json.dumps(data.get('context') or {}, default=str)}")
    unrouted = data.get("unrouted") or []
    lines.append(f"  unrouted  {len(unrouted)}" + "".join(
        f"\n    - {u['stage']} sent {u['type']!r} (no transition takes it)" for u in unrouted))
    counts = data.get("children_counts") or {}
    if counts:
        lines.append(f"  children  {sum(counts.values())}: "
                     + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        for child in data.get("children") or []:
            lines.append(f"    - {child['id']}  {child['workflow']}  {child['status']}")
    for j in data.get("waiting_joins") or []:
        lines.append(f"  join      {j['stage']} has {j['source_stage']!r}, waiting for the rest")
    if data.get("rerun_of"):
        lines.append(f"  rerun of  {data['rerun_of']}")
    for rerun in data.get("reruns") or []:
        lines.append(f"  rerun     {rerun}")
    trail = data.get("audit") or []
    if trail:
        lines.append("  audit:")
        lines += [f"    {audit_line(a)}" for a in trail]
    return "\n".join(lines)


def audit_line(entry: Mapping[str, Any], *, with_run: bool = False) -> str:
    """One audit record as a line: when, who (as what, through which edge), what, on what."""
    detail = dict(entry.get("detail") or {})
    who = str(entry["actor"])
    if entry.get("on_behalf_of"):
        who += f" (admin, for {entry['on_behalf_of']})"
    elif entry.get("acting_as"):
        who += f" ({entry['acting_as']})"
    what = str(entry["action"])
    if entry.get("task_id"):
        what += f" task {entry['task_id']}"
    if with_run and entry.get("run_id"):
        what += f" of run {entry['run_id']}"
    extra = "  ".join(f"{k}={json.dumps(v, default=str)}" for k, v in detail.items() if v not in (None, [], {}))
    at = str(entry.get("at") or "")[:19].replace("T", " ")
    return f"{at}  {who} via {entry['edge']}: {what}" + (f"  {extra}" if extra else "")
def _assignee(assignee: Any) -> str:
    """Who a form task waits on, as people read it (an email, a Slack id, a team, a list)."""
    if not assignee:
        return "nobody yet (no assignee)"
    if isinstance(assignee, list):
        return ", ".join(_assignee(a) for a in assignee)
    if isinstance(assignee, dict):
        if assignee.get("users"):
            return _assignee(assignee["users"])
        if assignee.get("team"):
            return f"team {assignee['team']}"
        return json.dumps(assignee, default=json_default)
    return str(assignee)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a plain text table."""
    if not rows:
        return "(none)"

    def cell(v: Any) -> str:
        if isinstance(v, dt.datetime):
            return v.isoformat(timespec="seconds")
        if isinstance(v, list | dict):
            return _assignee(v) if v else ""
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(out)
