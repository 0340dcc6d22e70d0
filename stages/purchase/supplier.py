"""The supplier's side, for the example: the invoices it issued (a real workflow would ask the
supplier's API or read its own mailbox)."""

from __future__ import annotations

import datetime as dt

#: What the supplier invoiced, and the amount each order was placed for.
INVOICES = [
    {"invoice": "INV-2001", "order_id": "PO-000101", "amount": 1200.0, "ordered_amount": 1200.0, "currency": "EUR"},
    {"invoice": "INV-2002", "order_id": "PO-000102", "amount": 89.9, "ordered_amount": 89.9, "currency": "EUR"},
    {"invoice": "INV-2003", "order_id": "PO-000103", "amount": 560.0, "ordered_amount": 500.0, "currency": "EUR"},
]


def invoices_issued(before: dt.datetime) -> list[dict[str, object]]:
    """The invoices issued in the day before ``before``."""
    day = (before - dt.timedelta(days=1)).date().isoformat()
    return [{**invoice, "issued": day} for invoice in INVOICES]
