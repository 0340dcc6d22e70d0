"""Sample inventory for the example (a real workflow would query its own database)."""

STOCK = {
    "SKU-1001": {"name": "Printer paper A4", "on_hand": 12, "minimum": 40, "reorder_to": 200},
    "SKU-1002": {"name": "Toner cartridge", "on_hand": 7, "minimum": 5, "reorder_to": 20},
    "SKU-1003": {"name": "Stapler", "on_hand": 1, "minimum": 3, "reorder_to": 10},
}
