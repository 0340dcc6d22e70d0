"""Book the invoice (here: recorded on the run; a real workflow would call the ledger's API)."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    ctx.run["booked"] = {"invoice": task["invoice"], "amount": task["amount"], "currency": task["currency"]}
