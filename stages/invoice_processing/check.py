"""Does the invoice match its order?"""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    difference = round(float(task["amount"]) - float(task["ordered_amount"]), 2)
    ctx.run["invoice"] = task["invoice"]
    ctx.send("matched" if difference == 0 else "mismatch", {**task.payload, "difference": difference})
