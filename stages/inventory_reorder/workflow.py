"""Inventory reorder: a manual trigger checks stock levels; low stock becomes a purchase order."""

from engine import Workflow

workflow = Workflow(
    "inventory-reorder",
    title="Inventory reorder alerts",
    description="Check stock against thresholds and raise purchase orders for what runs low.",
)

check = workflow.script("check-stock")           # the manual trigger starts here
order = workflow.script("create-purchase-order")
report = workflow.script("stock-ok")

workflow.transition(check, order, on="low_stock")     # one task per item under its minimum
workflow.transition(check, report, on="stock_ok")     # nothing to reorder
