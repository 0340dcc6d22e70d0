"""Declined: tell the requester why."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    ctx.run["declined_because"] = task.get("comment")
    if task.get("requester"):
        ctx.slack.dm(task["requester"], f":x: Your purchase of {task['item']} was declined: "
                                        f"{task.get('comment') or 'no reason given'}")
