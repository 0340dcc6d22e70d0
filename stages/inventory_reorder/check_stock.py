"""Compare stock levels with their thresholds; send one `low_stock` task per item to reorder."""

from engine import Context, Task

from .inventory import STOCK


def run(task: Task, ctx: Context) -> None:
    # A trigger may pass its own levels, e.g. --payload '{"stock": {"SKU-1": {...}}}'.
    stock = task.get("stock") or STOCK
    low = {sku: item for sku, item in stock.items() if item["on_hand"] < item["minimum"]}
    ctx.run["checked_items"] = len(stock)
    ctx.run["low_items"] = sorted(low)
    ctx.log("checked %d items, %d below minimum", len(stock), len(low))
    if not low:
        ctx.send("stock_ok", {"checked": len(stock)})
    for sku, item in sorted(low.items()):
        ctx.send("low_stock", {"sku": sku, "name": item["name"], "on_hand": item["on_hand"],
                               "quantity": item["reorder_to"] - item["on_hand"]})
