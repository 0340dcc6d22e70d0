"""Access request: someone asks for access from Slack, their manager approves, IT grants it.

`/flowbot start access-request` opens the `request` start form in a modal; the chosen approver
gets an Approve / Decline DM; approval grants the access (here: recorded on the run) and tells
the requester, a decline tells them why.
"""

from engine import Workflow

workflow = Workflow(
    "access-request",
    title="Access request",
    description="Ask for access to a system from Slack; your manager approves it.",
)

request = workflow.form("request")                       # start form, opened by the slash command
approve = workflow.form("approve", assignee="{approver}", remind_after=4 * 3600)
grant = workflow.script("grant")
refuse = workflow.script("notify-refused")

workflow.transition(request, approve, on="requested")
workflow.transition(approve, grant, on="approved")
workflow.transition(approve, refuse, on="declined")
