"""The start form of `/flowbot start purchase`: what to buy, from whom, for how much."""

from engine import Context, Task
from engine.forms import Form, LongText, Number, Select, Text

form = Form(
    "New purchase request",
    [
        Text("item", "What do you want to buy?", max_length=200, default_from="item"),
        Text("supplier", "Supplier", max_length=100, default_from="supplier"),
        Number("amount", "Amount", min=0.01, decimal=True, default_from="amount"),
        Select("currency", "Currency", ["EUR", "USD", "GBP"], default="EUR"),
        LongText("reason", "Why?", max_length=500, required=False),
    ],
    submit_label="Ask for approval",
)


def run(task: Task, answers: dict, ctx: Context) -> None:
    requester = task.get("started_by") or ctx.run.get("started_by")
    ctx.run["requester"] = requester
    ctx.send("purchase", {
        "item": answers["item"],
        "supplier": answers["supplier"],
        "amount": answers["amount"],
        "currency": answers["currency"],
        "reason": answers.get("reason"),
        "requester": requester,
    })
