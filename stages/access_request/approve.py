"""The approver decides in the DM."""

from engine import Context, Task
from engine.forms import Approval


def form(task: Task) -> Approval:
    return Approval(
        "Access request",
        {"Requested by": "<@{requester}>", "System": "{system}", "Level": "{level}", "Reason": "{reason}"},
        comment_on_decline=True,
    )


def run(task: Task, answers: dict, ctx: Context) -> None:
    ctx.send(answers["decision"], {**task.payload, "comment": answers.get("comment")})
