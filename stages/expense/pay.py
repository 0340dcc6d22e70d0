"""Approved: record the payment and tell the requester."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    reference = f"PAY-{task.run_id[:8]}"
    ctx.run["payment"] = reference
    ctx.log("payment %s: %s %s to %s", reference, task["amount"], task["currency"], task["employee"])
    if task.get("requester"):
        ctx.slack.dm(task["requester"], f":moneybag: Your expense \"{task['description']}\" was approved "
                                        f"({task['amount']} {task['currency']}, payment {reference}).")
