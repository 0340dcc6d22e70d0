"""POST /hooks/expense: check the claim and send it to the manager's review.

Answers 200 ``{"ok": true, "run_ids": ["..."]}`` with the run it started; 400 when the body is not
a JSON object (or a form); 422 ``{"error": ..., "errors": {field: message}}`` naming every field
to fix. A claim too large for a task is refused with 413 by flowbot itself.
"""

from engine import Context, HookRequest, HookResponse

REQUIRED = ("employee", "amount", "description", "manager_email")


def run(request: HookRequest, ctx: Context) -> HookResponse | None:
    claim = request.data
    if not isinstance(claim, dict):
        return HookResponse(400, json={
            "error": "send the claim as a JSON object: "
                     '{"employee", "amount", "description", "manager_email", optional "currency", "requester"}'})
    errors = {key: "required" for key in REQUIRED if not claim.get(key)}
    amount = _amount(claim.get("amount"))
    if "amount" not in errors and amount is None:
        errors["amount"] = "must be a number above 0"
    if "manager_email" not in errors and "@" not in str(claim["manager_email"]):
        errors["manager_email"] = "must be an email address"
    if errors:
        return HookResponse(422, json={"error": "the claim is incomplete", "errors": errors})
    ctx.send("expense", {
        "employee": str(claim["employee"]),
        "amount": amount,
        "currency": str(claim.get("currency") or "EUR"),
        "description": str(claim["description"]),
        "manager_email": str(claim["manager_email"]),
        "requester": claim.get("requester"),
    })
    return None  # flowbot answers 200 {"ok": true, "run_ids": [the run this claim started]}


def _amount(value: object) -> float | None:
    """A positive amount from a number or its text (form bodies are text), else None."""
    if isinstance(value, bool):
        return None
    try:
        amount = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return amount if amount > 0 and amount != float("inf") else None
