"""Approved: place the order with the supplier; the run then waits for the supplier's payment."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    # The task id is unique and stays the same if this stage is retried: so does the order id.
    order_id = f"PO-{task.id:06d}"
    ctx.run["order_id"] = order_id
    ctx.log("order %s: %s from %s, %s %s", order_id, task["item"], task["supplier"], task["amount"],
            task["currency"])
    ctx.send("ordered", {**task.payload, "order_id": order_id})
    if task.get("requester"):
        ctx.slack.dm(task["requester"], f":package: Your purchase of {task['item']} was approved and ordered "
                                        f"from {task['supplier']} (order {order_id}).")
