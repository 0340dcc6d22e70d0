"""Create a purchase order record for one low-stock item (idempotent: keyed by run and SKU)."""

from engine import Context, Task


def run(task: Task, ctx: Context) -> None:
    po_number = f"PO-{task.run_id[:8]}-{task['sku']}"
    # One context key per item: parallel tasks of the run merge key by key, never overwrite.
    ctx.run[f"purchase_order:{task['sku']}"] = {"po": po_number, "quantity": task["quantity"]}
    ctx.log("purchase order %s: %d x %s", po_number, task["quantity"], task["name"])
