"""Expense approval: an expense arrives by HTTP (or from Slack), the manager approves it in a DM.

    POST /hooks/expense  (Authorization: Bearer $EXPENSE_HOOK_TOKEN)
    {"employee": "Ann", "amount": 42.5, "currency": "EUR", "description": "Taxi",
     "manager_email": "bob@example.com"}

or `/flowbot start expense` in Slack (the `submit` start form). The manager gets a DM with the
facts and Approve / Decline buttons (declining asks for a comment), a reminder after a day, and
the task moves to finance after three days without an answer.
"""

from engine import BearerAuth, Workflow

workflow = Workflow(
    "expense",
    title="Expense approval",
    description="Expense claims approved by the manager in Slack, then paid.",
)

request = workflow.hook("request", path="expense", auth=BearerAuth(secret_env="EXPENSE_HOOK_TOKEN"))
submit = workflow.form("submit")                                   # start form: /flowbot start expense
review = workflow.form(
    "review",
    assignee="{manager_email}",
    remind_after=24 * 3600,                                        # DM a reminder after a day
    escalate_after=3 * 24 * 3600,                                  # then hand it to finance
    escalate_to="finance@example.com",
)
pay = workflow.script("pay")
declined = workflow.script("notify-declined")

workflow.transition(request, review, on="expense")
workflow.transition(submit, review, on="expense")
workflow.transition(review, pay, on="approved")
workflow.transition(review, declined, on="declined")
