"""The purchasing team approves or declines the request right in the DM."""

from engine import Context, Task
from engine.forms import Approval


def form(task: Task) -> Approval:
    return Approval(
        "Purchase request",
        {"Item": "{item}", "Supplier": "{supplier}", "Amount": "{amount} {currency}", "Requested by": "{requester}"},
        text="A purchase request waits for your approval.",
    )


def run(task: Task, answers: dict, ctx: Context) -> None:
    ctx.run["decision"] = answers["decision"]
    ctx.send(answers["decision"], {**task.payload, "comment": answers.get("comment")})
