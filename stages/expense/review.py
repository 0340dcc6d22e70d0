"""The manager approves or declines the claim right in the DM."""

from engine import Context, Task
from engine.forms import Approval


def form(task: Task) -> Approval:
    return Approval(
        "Expense approval",
        {
            "Employee": "{employee}",
            "Amount": "{amount} {currency}",
            "For": "{description}",
        },
        text="An expense claim waits for your approval.",
    )


def run(task: Task, answers: dict, ctx: Context) -> None:
    ctx.run["decision"] = answers["decision"]
    ctx.send(answers["decision"], {**task.payload, "comment": answers.get("comment")})
