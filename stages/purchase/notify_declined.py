"""Declined (by a decline, or by nobody approving in time): tell the requester why."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    reason = task.get("comment") or ("nobody approved it in time" if task.get("timed_out") else "no reason given")
    ctx.run["declined_because"] = reason
    if task.get("requester"):
        ctx.slack.dm(task["requester"], f":x: Your purchase of {task['item']} was declined: {reason}")
