"""What access, to what, and why; the approver is picked from Slack's people."""

from engine import Context, Task
from engine.forms import Form, LongText, Radio, Select, UserPicker

SYSTEMS = [("github", "GitHub"), ("aws", "AWS console"), ("grafana", "Grafana"), ("crm", "CRM")]

form = Form(
    "Request access",
    [
        Select("system", "System", SYSTEMS, default_from="system"),
        Radio("level", "Access level", [("read", "Read only"), ("write", "Read and write"),
                                        ("admin", "Admin")], default="read"),
        LongText("reason", "Why do you need it?", max_length=500, default_from="reason"),
        UserPicker("approver", "Who approves it? (your manager)"),
    ],
    submit_label="Request",
)


def run(task: Task, answers: dict, ctx: Context) -> None:
    ctx.send("requested", {
        "system": answers["system"],
        "level": answers["level"],
        "reason": answers["reason"],
        "approver": answers["approver"],
        "requester": task.get("started_by") or ctx.run.get("started_by"),
    })
