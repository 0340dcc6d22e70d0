"""The weekly report as a Slack message: plain text (notifications) plus Block Kit blocks.

Pure functions of the figures, so the message can be checked without a database. Sizes stay
inside Block Kit's limits: a section's text is at most 3,000 characters, a message at most
50 blocks; long lists are cut with a "... and N more" line.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

SECTION_LIMIT = 3000
MAX_WORKFLOW_LINES = 40
STATUS_ORDER = ["completed", "failed", "running", "waiting", "cancelled"]
STATUS_ICON = {"completed": ":white_check_mark:", "failed": ":x:", "running": ":arrows_counterclockwise:",
               "waiting": ":hourglass_flowing_sand:", "cancelled": ":no_entry_sign:"}


def duration(seconds: float) -> str:
    """Seconds as a short human duration: 850 ms, 12.5 s, 4 min 10 s, 3 h 5 min, 2 d 4 h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _status_key(status: str) -> tuple[int, str]:
    return (STATUS_ORDER.index(status) if status in STATUS_ORDER else len(STATUS_ORDER), status)


def workflow_lines(counts: list[dict[str, Any]]) -> list[str]:
    """One line per workflow, busiest first: ``*expense* 14 runs: 12 completed · 2 failed``."""
    by_wf: dict[str, dict[str, int]] = {}
    for c in counts:
        by_wf.setdefault(c["workflow"], {})[c["status"]] = int(c["n"])
    ordered = sorted(by_wf.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    lines = []
    for wf, statuses in ordered:
        parts = " · ".join(f"{STATUS_ICON.get(s, '')} {n} {s}".strip()
                           for s, n in sorted(statuses.items(), key=lambda kv: _status_key(kv[0])))
        total = sum(statuses.values())
        lines.append(f"*{_escape(wf)}*  {total} run{'s' if total != 1 else ''}: {parts}")
    return lines


def _sections(lines: list[str]) -> list[dict[str, Any]]:
    """Lines packed into as few mrkdwn sections as the 3,000-character limit allows."""
    sections: list[str] = []
    for line in lines:
        line = line[: SECTION_LIMIT]
        if sections and len(sections[-1]) + 1 + len(line) <= SECTION_LIMIT:
            sections[-1] += "\n" + line
        else:
            sections.append(line)
    return [{"type": "section", "text": {"type": "mrkdwn", "text": s}} for s in sections]


def build_message(counts: list[dict[str, Any]], slowest: list[dict[str, Any]], since: dt.datetime,
                  until: dt.datetime) -> tuple[str, list[dict[str, Any]]]:
    """(text, blocks) for the week [since, until)."""
    total = sum(int(c["n"]) for c in counts)
    failed = sum(int(c["n"]) for c in counts if c["status"] == "failed")
    workflows = len({c["workflow"] for c in counts})
    period = f"{since:%a %d %b %Y %H:%M} to {until:%a %d %b %Y %H:%M} UTC"
    text = (f"Weekly flowbot report: {total} run{'s' if total != 1 else ''} in {workflows} "
            f"workflow{'s' if workflows != 1 else ''}, {failed} failed ({since:%d %b} to {until:%d %b %Y})")
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": "Weekly flowbot report", "emoji": True}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": period}]},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": f"*Runs*\n{total}"},
            {"type": "mrkdwn", "text": f"*Failed*\n{failed}"},
            {"type": "mrkdwn", "text": f"*Workflows*\n{workflows}"},
        ]},
        {"type": "divider"},
        {"type": "section", "text": {"type": "mrkdwn", "text": "*Runs by workflow*"}},
    ]
    lines = workflow_lines(counts)
    if not lines:
        lines = ["_No runs this week._"]
    elif len(lines) > MAX_WORKFLOW_LINES:
        more = len(lines) - MAX_WORKFLOW_LINES
        lines = [*lines[:MAX_WORKFLOW_LINES], f"_… and {more} more workflow{'s' if more != 1 else ''}_"]
    blocks += _sections(lines)
    blocks += [{"type": "divider"},
               {"type": "section", "text": {"type": "mrkdwn", "text": "*Slowest steps*"}}]
    steps = [
        f"{i}. *{_escape(s['workflow'])}* / `{_escape(s['stage'])}`: max {duration(s['max_seconds'])}, "
        f"avg {duration(s['avg_seconds'])} over {s['n']} task{'s' if s['n'] != 1 else ''}"
        for i, s in enumerate(slowest, 1)
    ] or ["_No steps finished this week._"]
    blocks += _sections(steps)
    return text, blocks[:50]
