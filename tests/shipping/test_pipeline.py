"""The task bodies of order_intake, against a real warehouse and a SQLite ledger."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipping import pipeline
from shipping.demo import sample_order
from shipping.errors import OrderIncomplete, OrderRejected, SkuRefused
from shipping.ledger import Ledger
from shipping.order import parse_order
from shipping.warehouse import RetryPolicy, WarehouseClient
from warehouse_mock.testing import WarehouseHandle


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    """An empty ledger in a SQLite file."""
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'ledger.db'}")
    ledger.create_schema()
    yield ledger
    ledger.dispose()


@pytest.fixture
def client(warehouse: WarehouseHandle) -> Iterator[WarehouseClient]:
    """A client of the test warehouse that never really waits."""
    with WarehouseClient(
        warehouse.base_url, warehouse.api_token, retry=RetryPolicy(), sleep=lambda _: None
    ) as client:
        yield client


@pytest.fixture
def order() -> dict[str, Any]:
    """A two-line order with an id unique to the test."""
    return sample_order(f"PL-{uuid.uuid4().hex[:10]}", 2)


def ship(
    ledger: Ledger, client: WarehouseClient, doc: dict[str, Any], index: int, try_number: int = 1
) -> Any:
    registered = pipeline.register(ledger, doc)
    return pipeline.ship_line(
        ledger=ledger,
        client=client,
        order_id=registered["order_id"],
        ship_to=registered["ship_to"],
        line=registered["lines"][index],
        try_number=try_number,
    )


def test_register_hands_every_line_to_the_fan_out(ledger: Ledger, order: dict[str, Any]) -> None:
    """register returns the lines in order and what they share."""
    registered = pipeline.register(ledger, order)
    assert [line["line_id"] for line in registered["lines"]] == ["1", "2"]
    assert registered["ship_to"] == order["ship_to"]


def test_register_rejects_unknown_fields_and_records_the_reason(
    ledger: Ledger, order: dict[str, Any]
) -> None:
    """Conf keys the schema does not know make the order REJECTED, with the reason."""
    order["coupon"] = "FREE"
    with pytest.raises(OrderRejected, match="coupon"):
        pipeline.register(ledger, order)
    status = ledger.get_order(order["order_id"])
    assert status is not None
    assert status.state == "REJECTED"
    assert "coupon" in (status.reason or "")


def test_ship_line_records_the_shipment(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """A shipped line has its warehouse shipment id in the ledger and in the result."""
    result = ship(ledger, client, order, 0)
    [shipment] = warehouse.shipments(order["order_id"])
    assert result["shipment_id"] == shipment["shipment_id"]
    assert ledger.shipped_line(order_id=order["order_id"], line_id="1") == shipment["shipment_id"]


def test_a_line_already_shipped_is_not_sent_again(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """Re-running a shipped line asks the ledger, not the warehouse."""
    first = ship(ledger, client, order, 0)
    warehouse.set_faults(error_rate=1.0)  # any request to the warehouse would now fail
    again = ship(ledger, client, order, 0, try_number=2)
    assert again["shipment_id"] == first["shipment_id"]
    assert again["attempts"] == 0


def test_a_retry_finds_a_shipment_the_ledger_missed(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """A retry first looks for the line at the warehouse (a key may have expired there)."""
    pipeline.register(ledger, order)
    created = client.create_shipment(
        order_id=order["order_id"], line_id="1", sku="MUG-RED", quantity=2, ship_to=order["ship_to"]
    )
    result = ship(ledger, client, order, 0, try_number=2)
    assert result["shipment_id"] == created.shipment_id
    assert len(warehouse.shipments(order["order_id"])) == 1


def test_a_refused_line_is_recorded_failed_and_raises_a_final_error(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """A refusal is recorded on the line as its last error and raised as final."""
    warehouse.set_faults(reject_skus=["TEE-*"])
    with pytest.raises(SkuRefused):
        ship(ledger, client, order, 1)
    status = ledger.get_order(order["order_id"])
    assert status is not None
    assert status.lines[1].state == "FAILED"
    assert status.lines[1].attempts == 1
    assert "TEE-L" in (status.lines[1].last_error or "")


def test_finalize_marks_the_order_shipped_once(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """The reducer's first call finalizes; a re-run reports it was already done."""
    results = [ship(ledger, client, order, 0), ship(ledger, client, order, 1)]
    first = pipeline.finalize(ledger, order["order_id"], results)
    again = pipeline.finalize(ledger, order["order_id"], results)
    assert first["state"] == "SHIPPED"
    assert first["finalized_now"] is True
    assert again["finalized_now"] is False
    assert first["shipped_lines"] == 2


def test_finalize_refuses_an_order_with_a_line_not_shipped(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """The ledger decides: a missing line keeps the order open."""
    results = [ship(ledger, client, order, 0)]
    with pytest.raises(OrderIncomplete, match="2"):
        pipeline.finalize(ledger, order["order_id"], results)


def test_finalize_refuses_a_result_that_disagrees_with_the_ledger(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """A task reporting another shipment than the ledger holds is never hidden."""
    results = [ship(ledger, client, order, 0), ship(ledger, client, order, 1)]
    results[1] = {**results[1], "shipment_id": "shp_other"}
    with pytest.raises(RuntimeError, match="shp_other"):
        pipeline.finalize(ledger, order["order_id"], results)
    status = ledger.get_order(order["order_id"])
    assert status is not None
    assert status.state == "SHIPPING"


def test_line_label_names_line_and_sku() -> None:
    """The UI name of a mapped instance."""
    line = parse_order(sample_order("X", 1)).items[0]
    assert pipeline.line_label({"line_id": line.line_id, "sku": line.sku}) == "line 1 · MUG-RED"
