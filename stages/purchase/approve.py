"""Two people of the purchasing team approve the request right in their DMs (the person who asked
for it may not); the first decline declines it."""

from engine import Context, Task
from engine.forms import Approval


def form(task: Task) -> Approval:
    return Approval(
        "Purchase request",
        {"Item": "{item}", "Supplier": "{supplier}", "Amount": "{amount} {currency}", "Requested by": "{requester}"},
        text="A purchase request waits for two approvals.",
        approvers=2,
        allow_self_approval=False,
    )


def run(task: Task, answers: dict, ctx: Context) -> None:
    # answers["decisions"]: everyone's, in order: [{"by", "decision", "comment", "at"}, ...]
    ctx.run["decision"] = answers["decision"]
    ctx.run["approved_by"] = [d["by"] for d in answers["decisions"] if d["decision"] == "approved"]
    ctx.send(answers["decision"], {**task.payload, "comment": answers.get("comment")})
