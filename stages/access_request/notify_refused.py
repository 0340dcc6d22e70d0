"""Declined: tell the requester, with the approver's comment."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    ctx.run["refused"] = task.get("comment")
    if task.get("requester"):
        ctx.slack.dm(task["requester"], f":no_entry: Your {task['system']} access request was declined: "
                                        f"{task.get('comment') or 'no reason given'}")
