"""Accounts decides on an invoice that does not match its order."""

from engine import Context, Task
from engine.forms import Approval


def form(task: Task) -> Approval:
    return Approval(
        "Invoice does not match its order",
        {"Invoice": "{invoice}", "Order": "{order_id}", "Invoiced": "{amount} {currency}",
         "Ordered": "{ordered_amount} {currency}", "Difference": "{difference}"},
    )


def run(task: Task, answers: dict, ctx: Context) -> None:
    ctx.send(answers["decision"], {**task.payload, "comment": answers.get("comment")})
