"""The start form of `/flowbot start expense`: the person who starts it files a claim."""

from engine import Context, Task
from engine.forms import Email, Form, LongText, Number, Select, Text

form = Form(
    "New expense",
    [
        Text("description", "What was it for?", max_length=200, default_from="description"),
        Number("amount", "Amount", min=0.01, decimal=True, default_from="amount"),
        Select("currency", "Currency", ["EUR", "USD", "GBP", "BRL"], default="EUR"),
        Email("manager_email", "Your manager's email", default_from="manager_email"),
        LongText("notes", "Notes", required=False),
    ],
    submit_label="Send for approval",
)


def run(task: Task, answers: dict, ctx: Context) -> None:
    # `/flowbot start` puts the Slack user who ran it in the payload (it cannot be typed in).
    requester = task.get("started_by") or ctx.run.get("started_by")
    ctx.send("expense", {
        "employee": f"<@{requester}>" if requester else "someone",
        "requester": requester,
        "amount": answers["amount"],
        "currency": answers["currency"],
        "description": answers["description"],
        "manager_email": answers["manager_email"],
        "notes": answers.get("notes"),
    })
