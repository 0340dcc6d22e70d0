"""Approved: record the payment and tell the requester."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    # The task id is unique in the database (a run id's first characters are not: ids made in
    # the same minute share them) and stays the same if this stage is retried.
    reference = f"PAY-{task.id:08d}"
    ctx.run["payment"] = reference
    ctx.log("payment %s: %s %s to %s", reference, task["amount"], task["currency"], task["employee"])
    if task.get("requester"):
        ctx.slack.dm(task["requester"], f":moneybag: Your expense \"{task['description']}\" was approved "
                                        f"({task['amount']} {task['currency']}, payment {reference}).")
