"""No payment two weeks after the order: tell purchasing to chase it."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    ctx.run["overdue"] = True
    ctx.slack.post("#purchasing", text=f":hourglass: Order {task['order_id']} ({task['item']} from "
                                       f"{task['supplier']}) is still unpaid after two weeks.")
