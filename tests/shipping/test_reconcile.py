"""Reconciliation and amendments against a real warehouse and a SQLite ledger."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from shipping import pipeline
from shipping.amend import amend_line
from shipping.errors import AmendmentRefused, OrderNotFound, ShipmentConflict, SkuRefused
from shipping.ledger import Amendment, Ledger, LineState, order_lines
from shipping.ops.samples import sample_order
from shipping.reconcile import DriftKind, check_order, reconcile
from shipping.shipment import Shipment
from shipping.warehouse import WarehouseClient
from warehouse_mock.testing import WarehouseHandle


@pytest.fixture
def order(ledger: Ledger) -> dict[str, Any]:
    """A registered two-line order, nothing shipped yet."""
    doc = sample_order(f"RC-{uuid.uuid4().hex[:10]}", 2)
    pipeline.register(ledger, doc, run_id=f"order-{doc['order_id']}")
    return doc


def ship(ledger: Ledger, client: WarehouseClient, order: dict[str, Any], index: int) -> Any:
    """Ship one line through the pipeline."""
    item = order["items"][index]
    return pipeline.ship_line(
        ledger=ledger,
        client=client,
        order_id=order["order_id"],
        ship_to=order["ship_to"],
        line={"line_id": item["line_id"], "sku": item["sku"], "quantity": item["quantity"]},
        try_number=1,
    )


def post_directly(client: WarehouseClient, order: dict[str, Any], index: int, **change: Any) -> str:
    """A shipment made at the warehouse under the line's key, behind the ledger's back."""
    item = {**order["items"][index], **change}
    return client.create_shipment(
        order_id=order["order_id"],
        line_id=item["line_id"],
        sku=item["sku"],
        quantity=item["quantity"],
        ship_to=order["ship_to"],
    ).shipment_id


def kinds(ledger: Ledger, client: WarehouseClient, order_id: str) -> list[tuple[str, DriftKind]]:
    """(line, kind) of each drift of the order."""
    return [(d.line_id, d.kind) for d in check_order(ledger, client, order_id)]


def test_a_shipped_order_is_clean(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """Ledger and warehouse agree on every line: no drift."""
    ship(ledger, client, order, 0)
    ship(ledger, client, order, 1)
    assert kinds(ledger, client, order["order_id"]) == []


def test_a_shipment_the_ledger_missed_is_found_and_repaired(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """A shipment under the line's key, unknown to the ledger: drift; --repair adopts it."""
    shipment_id = post_directly(client, order, 0)
    [drift] = check_order(ledger, client, order["order_id"])
    assert (drift.line_id, drift.kind, drift.repairable) == (
        "1",
        DriftKind.UNRECORDED_SHIPMENT,
        True,
    )
    report = reconcile(ledger, client, [order["order_id"]], fix=True)
    assert [(r.line_id, r.shipment_id) for r in report.repaired] == [("1", shipment_id)]
    assert report.clean
    assert ledger.shipped_line(order_id=order["order_id"], line_id="1") == shipment_id


def test_a_ledger_row_changed_by_hand_is_content_drift_and_not_repaired(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """A quantity edited in the ledger differs from the shipment: reported, never overwritten."""
    ship(ledger, client, order, 0)
    with ledger.engine.begin() as conn:
        conn.execute(
            sa.update(order_lines)
            .where(order_lines.c.order_id == order["order_id"], order_lines.c.line_id == "1")
            .values(quantity=99)
        )
    report = reconcile(ledger, client, [order["order_id"]], fix=True)
    assert [(d.line_id, d.kind, d.repairable) for d in report.drift] == [
        ("1", DriftKind.CONTENT_DIFFERS, False)
    ]
    assert "quantity" in report.drift[0].detail
    assert report.repaired == []


def test_a_ledger_shipment_unknown_to_the_warehouse_is_drift(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """The ledger says shipped as an id the warehouse has never heard of."""
    item = order["items"][1]
    ghost = Shipment(
        shipment_id="shp_x",
        idempotency_key=f"{order['order_id']}:2",
        order_id=order["order_id"],
        line_id="2",
        sku=item["sku"],
        quantity=item["quantity"],
        ship_to=order["ship_to"],
        status="created",
    )
    ledger.record_shipped(
        order_id=order["order_id"],
        line_id="2",
        try_number=1,
        requests=1,
        shipment=ghost,
        revision=0,
    )
    assert kinds(ledger, client, order["order_id"]) == [("2", DriftKind.UNKNOWN_TO_WAREHOUSE)]


def test_a_shipment_with_other_content_is_voided_by_repair_and_the_line_ships_anew(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """Another SKU under the line's key: never adopted; repair voids it, the line moves to a
    new key, and its next try ships the ledger's content (the dead end of a conflict ends)."""
    other = post_directly(client, order, 1, sku="OTHER")
    with pytest.raises(ShipmentConflict):
        ship(ledger, client, order, 1)
    [drift] = check_order(ledger, client, order["order_id"])
    assert (drift.line_id, drift.kind, drift.repair) == ("2", DriftKind.CONTENT_DIFFERS, "void")
    report = reconcile(ledger, client, [order["order_id"]], fix=True, actor="ada")
    assert [(r.line_id, r.shipment_id) for r in report.repaired] == [("2", other)]
    assert report.clean
    line = ledger.get_line(order_id=order["order_id"], line_id="2")
    assert (line.state, line.idempotency_key, line.void_key) == (
        LineState.FAILED,
        f"{order['order_id']}:2#1",
        None,
    )
    shipped = ship(ledger, client, order, 1)
    live = [s for s in warehouse.shipments(order["order_id"]) if s["status"] != "cancelled"]
    assert [(s["shipment_id"], s["sku"]) for s in live] == [
        (shipped["shipment_id"], order["items"][1]["sku"])
    ]
    status = ledger.get_order(order["order_id"])
    assert status is not None
    [void] = status.amendments
    assert (void.action, void.actor, void.voided_shipment_id) == (Amendment.VOID, "ada", other)


def test_reconcile_of_an_unknown_order_says_so(ledger: Ledger, client: WarehouseClient) -> None:
    """An order the ledger does not know is an error, not a clean report."""
    with pytest.raises(OrderNotFound, match="NOPE-1"):
        check_order(ledger, client, "NOPE-1")


def refuse_then_amend(
    ledger: Ledger,
    client: WarehouseClient,
    warehouse: WarehouseHandle,
    order: dict[str, Any],
    action: Amendment,
    **new: Any,
) -> None:
    """The warehouse refuses line 1 (a final failure), then an operator amends it."""
    warehouse.set_faults(reject_skus=[order["items"][0]["sku"]])
    with pytest.raises(SkuRefused):
        ship(ledger, client, order, 0)
    warehouse.clear_faults()
    amend_line(
        ledger,
        client,
        order_id=order["order_id"],
        line_id="1",
        action=action,
        actor="ada",
        reason="an operator's reason",
        **new,
    )


def test_a_refused_line_fixed_then_shipped_keeps_its_key(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """Refused, fixed with a new SKU, shipped: one shipment, under the line's next key."""
    refuse_then_amend(ledger, client, warehouse, order, Amendment.FIX, sku="MUG-BLUE")
    result = ship(ledger, client, order, 0)  # the task still holds the old SKU in its XCom
    [shipment] = warehouse.shipments(order["order_id"])
    assert (result["sku"], shipment["sku"], shipment["idempotency_key"]) == (
        "MUG-BLUE",
        "MUG-BLUE",
        f"{order['order_id']}:1#1",
    )


def test_a_cancelled_line_is_never_posted(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """The task of a cancelled line succeeds without a request; the order finalizes."""
    refuse_then_amend(ledger, client, warehouse, order, Amendment.CANCEL)
    results = [ship(ledger, client, order, 0), ship(ledger, client, order, 1)]
    assert results[0]["state"] == "CANCELLED"
    summary = pipeline.finalize(ledger, order["order_id"], results)
    assert (summary["state"], summary["cancelled_lines"]) == ("SHIPPED", 1)
    assert [s["line_id"] for s in warehouse.shipments(order["order_id"])] == ["2"]


def test_a_fix_of_a_line_that_shipped_unrecorded_cancels_that_shipment(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """The ledger says FAILED but the warehouse shipped the old content: the fix voids
    that shipment (recorded on the amendment) and the fixed line ships once."""
    ledger.record_failed(
        order_id=order["order_id"], line_id="1", try_number=1, requests=1, error="timeout"
    )
    old = post_directly(client, order, 0)
    amended = amend_line(
        ledger,
        client,
        order_id=order["order_id"],
        line_id="1",
        action=Amendment.FIX,
        actor="ada",
        reason="why",
        quantity=5,
    )
    assert amended.void_error is None
    new = ship(ledger, client, order, 0)
    by_id = {s["shipment_id"]: s for s in warehouse.shipments(order["order_id"])}
    assert (by_id[old]["status"], by_id[new["shipment_id"]]["quantity"]) == ("cancelled", 5)
    status = ledger.get_order(order["order_id"])
    assert status is not None
    assert [a.voided_shipment_id for a in status.amendments] == [old]


def test_a_fix_that_breaks_the_orders_rules_is_refused(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """A new quantity out of range or a SKU with a newline never reaches the ledger."""
    ledger.record_failed(
        order_id=order["order_id"], line_id="1", try_number=1, requests=1, error="no"
    )
    for change in ({"quantity": 0}, {"sku": "MUG\n"}):
        with pytest.raises(AmendmentRefused, match=r"line\."):
            amend_line(
                ledger,
                client,
                order_id=order["order_id"],
                line_id="1",
                action=Amendment.FIX,
                actor="ada",
                reason="why",
                **change,
            )


def test_two_live_shipments_for_a_shipped_line_are_drift_naming_the_unrecorded_one(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """A second live shipment beside the recorded one (another key) is SEVERAL_SHIPMENTS."""
    recorded = ship(ledger, client, order, 0)["shipment_id"]
    item = order["items"][0]
    second = client.create_shipment(
        order_id=order["order_id"],
        line_id="1",
        sku=item["sku"],
        quantity=item["quantity"],
        ship_to=order["ship_to"],
        key=f"{order['order_id']}:1#1",
    ).shipment_id
    [drift] = check_order(ledger, client, order["order_id"])
    assert (drift.line_id, drift.kind, drift.shipment_ids) == (
        "1",
        DriftKind.SEVERAL_SHIPMENTS,
        (second,),
    )
    assert ledger.shipped_line(order_id=order["order_id"], line_id="1") == recorded
