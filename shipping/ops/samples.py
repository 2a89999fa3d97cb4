"""Sample orders for the demo, the benchmark and the tests."""

from __future__ import annotations

from typing import Any

SKUS = ("MUG-RED", "TEE-L", "CAP-BLK", "SOCK-M", "BAG-TOTE")


def sample_order(order_id: str, lines: int) -> dict[str, Any]:
    """A valid order of ``lines`` lines."""
    return {
        "order_id": order_id,
        "customer_id": "C-42",
        "ship_to": {
            "name": "Ada Lovelace",
            "line1": "1 Main St",
            "city": "Berlin",
            "postal_code": "10115",
            "country": "DE",
        },
        "items": [
            {"line_id": str(i), "sku": SKUS[(i - 1) % len(SKUS)], "quantity": 1 + i % 3}
            for i in range(1, lines + 1)
        ],
    }
