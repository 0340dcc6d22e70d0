"""Purchase request: approved by two people of purchasing, ordered, paid by the supplier's webhook;
every night the supplier's invoices are fanned out to the invoice-processing workflow.

    /flowbot start purchase                     the request form (item, supplier, amount)
    POST /hooks/purchase/payments               the supplier's payment webhook
        (Authorization: Bearer $SUPPLIER_WEBHOOK_TOKEN)  {"order_id": "PO-000042", "amount": 1200}

The request goes to the @purchasing team: two of its members must approve it (not the person who
asked), any decline declines it. Without two approvals within two business days (Berlin time) it
goes to the finance leads, who have one more business day; then it is declined. An approved
request is ordered and then waits, by order id, for the supplier's payment webhook: a payment
that arrives before the wait begins still counts, and a payment that has not arrived after two
weeks is chased. At 02:00 each night the supplier's new invoices each start a run of
invoice-processing.
"""

from engine import BearerAuth, Escalate, Team, Workflow

workflow = Workflow(
    "purchase",
    title="Purchase request",
    description="Purchases approved by two people of purchasing, ordered, and paid by the supplier's webhook.",
    timezone="Europe/Berlin",                                      # business days and the nightly job
)

request = workflow.form("request")                                 # start form: /flowbot start purchase
approve = workflow.form(                                           # two approvals: see approve.py
    "approve",
    assignee=Team("@purchasing"),
    timeout="2 business days",
    on_timeout=Escalate(to=["cfo@example.com", "finance-director@example.com"],
                        timeout="1 business day", on_timeout="declined"),
)
order = workflow.script("order")
payment = workflow.wait("payment", event="payment.received", key="{order_id}",
                        timeout="14d", on_timeout="payment_overdue")
paid = workflow.script("record-payment")
chase = workflow.script("chase-payment")
declined = workflow.script("notify-declined")

# The supplier's side: a webhook that announces payments, a nightly job that fans invoices out.
webhook = workflow.hook("payment-webhook", path="purchase/payments",
                        auth=BearerAuth(secret_env="SUPPLIER_WEBHOOK_TOKEN"))
invoices = workflow.job("nightly-invoices", schedule="daily at 02:00", timezone="Europe/Berlin")

workflow.transition(request, approve, on="purchase")
workflow.transition(approve, order, on="approved")
workflow.transition(approve, declined, on="declined")
workflow.transition(order, payment, on="ordered")
workflow.transition(payment, paid, on="payment.received")
workflow.transition(payment, chase, on="payment_overdue")
