"""IT helpdesk: a ticket goes to the whole @it-helpdesk team; the first member to claim it owns it.

    /flowbot start helpdesk summary="VPN is down" priority=high

starts the `open` script with that payload (no start form); every member of the user group gets
the assignment DM, one claims it, fills in the resolution, and the requester is told.
"""

from engine import Team, Workflow

workflow = Workflow(
    "helpdesk",
    title="IT helpdesk",
    description="Tickets for the IT team: any member claims one and resolves it.",
)

open_ = workflow.script("open")                              # started by /flowbot start helpdesk k=v
resolve = workflow.form(
    "resolve",
    assignee=Team("@it-helpdesk"),
    remind_after=2 * 3600,
    escalate_after=8 * 3600,
    escalate_to="it-lead@example.com",
)
close = workflow.script("close")

workflow.transition(open_, resolve, on="ticket")
workflow.transition(resolve, close, on="resolved")
