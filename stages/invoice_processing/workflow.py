"""Invoice processing: each invoice (started by purchase's nightly job) is checked against its
order; a match is booked at once, a mismatch goes to accounts to approve or reject."""

from engine import Workflow

workflow = Workflow(
    "invoice-processing",
    title="Invoice processing",
    description="Supplier invoices checked against their orders and booked; mismatches reviewed by accounts.",
)

check = workflow.script("check")
review = workflow.form("review", assignee="accounts@example.com", remind_after=24 * 3600)
book = workflow.script("book")
reject = workflow.script("reject")

workflow.transition(check, book, on="matched")
workflow.transition(check, review, on="mismatch")
workflow.transition(review, book, on="approved")
workflow.transition(review, reject, on="declined")
