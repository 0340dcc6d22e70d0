"""Check the ticket and hand it to the team."""

from engine import Context, PayloadError, Task

PRIORITIES = ("low", "normal", "high")


def run(task: Task, ctx: Context) -> None:
    summary = str(task.get("summary") or "").strip()
    if not summary:
        raise PayloadError('a ticket needs a summary: /flowbot start helpdesk summary="..."')
    priority = str(task.get("priority") or "normal").lower()
    ctx.send("ticket", {
        "summary": summary,
        "priority": priority if priority in PRIORITIES else "normal",
        "requester": task.get("started_by") or ctx.run.get("started_by"),
    })
