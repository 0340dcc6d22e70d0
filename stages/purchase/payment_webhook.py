"""POST /hooks/purchase/payments: the supplier tells us an order was paid.

Body: ``{"order_id": "PO-000042", "amount": 1200.0}``. The payment is published as the event
``payment.received`` keyed by the order id: it completes the purchase run waiting on that order
(or waits for it, if the payment comes before the run reaches its wait). Answers 200
``{"ok": true}``, 422 naming what is missing.
"""

from engine import Context, HookRequest, HookResponse


def run(request: HookRequest, ctx: Context) -> HookResponse | dict:
    body = request.data if isinstance(request.data, dict) else {}
    order_id, amount = str(body.get("order_id") or "").strip(), body.get("amount")
    errors = {}
    if not order_id:
        errors["order_id"] = "required"
    if isinstance(amount, bool) or not isinstance(amount, int | float) or amount <= 0:
        errors["amount"] = "must be a number above 0"
    if errors:
        return HookResponse(422, json={"error": "not a payment", "errors": errors})
    ctx.emit("payment.received", key=order_id, payload={"paid_amount": amount, "payment_id": body.get("id")})
    return {"ok": True}
