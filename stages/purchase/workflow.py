"""Purchase request: approved by purchasing, ordered, paid by the supplier's webhook; every night
the supplier's invoices are fanned out to the invoice-processing workflow.

    /flowbot start purchase                     the request form (item, supplier, amount)
    POST /hooks/purchase/payments               the supplier's payment webhook
        (Authorization: Bearer $SUPPLIER_WEBHOOK_TOKEN)  {"order_id": "PO-000042", "amount": 1200}

The request goes to the @purchasing team; an approval nobody gives within two days goes to the
CFO. An approved request is ordered and then waits, by order id, for the supplier's payment
webhook: a payment that arrives before the wait begins still counts, and a payment that has not
arrived after two weeks is chased. At 02:00 each night (Berlin time) the supplier's new invoices
each start a run of invoice-processing.
"""

from engine import BearerAuth, Team, Workflow

workflow = Workflow(
    "purchase",
    title="Purchase request",
    description="Purchases approved by the purchasing team, ordered, and paid by the supplier's webhook.",
)

request = workflow.form("request")                                 # start form: /flowbot start purchase
approve = workflow.form(
    "approve",
    assignee=Team("@purchasing"),
    escalate_after=2 * 24 * 3600,                                  # nobody decided in two days: the CFO
    escalate_to="cfo@example.com",
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
