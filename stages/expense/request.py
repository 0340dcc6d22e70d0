"""POST /hooks/expense: check the claim and send it to the manager's review."""

from engine import Context

REQUIRED = ("employee", "amount", "description", "manager_email")


async def run(request, ctx: Context) -> dict:
    claim = await request.json()
    missing = [key for key in REQUIRED if not claim.get(key)]
    if missing:
        return {"accepted": False, "missing": missing}
    ctx.send("expense", {
        "employee": str(claim["employee"]),
        "amount": float(claim["amount"]),
        "currency": str(claim.get("currency") or "EUR"),
        "description": str(claim["description"]),
        "manager_email": str(claim["manager_email"]),
        "requester": claim.get("requester"),
    })
    return {"accepted": True}
