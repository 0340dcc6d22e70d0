"""Rejected by accounts: the supplier is asked for a corrected invoice."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    ctx.run["rejected"] = task.get("comment")
    ctx.slack.post("#purchasing", text=f"Invoice {task['invoice']} for order {task['order_id']} was rejected: "
                                       f"{task.get('comment') or 'no reason given'}")
