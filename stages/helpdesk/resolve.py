"""The member who claimed the ticket says how it was resolved."""

from engine import Context, Task
from engine.forms import Facts, Form, LongText, Radio

form = Form(
    "Resolve ticket",
    [
        Facts({"Summary": "{summary}", "Priority": "{priority}", "Requested by": "<@{requester}>"}),
        Radio("outcome", "Outcome", [("fixed", "Fixed"), ("workaround", "Workaround"),
                                     ("wontfix", "Won't fix")]),
        LongText("resolution", "What was done?", max_length=1000),
    ],
    submit_label="Resolve",
)


def run(task: Task, answers: dict, ctx: Context) -> None:
    ctx.send("resolved", {**task.payload, "outcome": answers["outcome"], "resolution": answers["resolution"]})
