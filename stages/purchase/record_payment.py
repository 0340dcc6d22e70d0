"""Paid: the payment arrived (its fields merged into the order's); tell the requester."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    ctx.run["paid"] = task["paid_amount"]
    if task["paid_amount"] != task["amount"]:
        ctx.log("order %s: paid %s, ordered for %s", task["order_id"], task["paid_amount"], task["amount"])
    if task.get("requester"):
        ctx.slack.dm(task["requester"], f":white_check_mark: Order {task['order_id']} ({task['item']}) is paid.")
