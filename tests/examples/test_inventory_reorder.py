"""The shipped inventory-reorder workflow, driven to its end through the test kit."""

from __future__ import annotations

from engine.testing import Flow


async def test_each_item_under_its_minimum_gets_a_purchase_order(flow: Flow) -> None:
    run = await flow.trigger("inventory-reorder")
    report = await run.wait()
    assert report.status == "completed"
    assert report.context["low_items"] == ["SKU-1001", "SKU-1003"]
    assert report.context["purchase_order:SKU-1001"]["quantity"] == 188
    assert report.context["purchase_order:SKU-1003"]["quantity"] == 9
    assert sorted(report.stages) == ["check-stock", "create-purchase-order", "create-purchase-order"]


async def test_stock_above_every_minimum_orders_nothing(flow: Flow) -> None:
    stock = {"SKU-9": {"name": "Pens", "on_hand": 50, "minimum": 10, "reorder_to": 100}}
    report = await (await flow.trigger("inventory-reorder", {"stock": stock})).wait()
    assert report.stages == ["check-stock", "stock-ok"]
    assert report.context["result"] == "all 1 items above their minimum"
