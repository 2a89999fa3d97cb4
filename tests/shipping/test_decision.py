"""A refused line's decision: what it needs, what the form shows, what an answer does."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shipping import decision, pipeline
from shipping.errors import AmendmentRefused, SkuRefused, WarehouseServerError
from shipping.ledger import Ledger, LineState
from shipping.ops.samples import sample_order
from shipping.warehouse import WarehouseClient
from warehouse_mock.testing import WarehouseHandle

ADA = {"id": "ada", "name": "ada"}


@pytest.fixture
def order(ledger: Ledger) -> dict[str, Any]:
    """A registered two-line order (line 2 is TEE-L) with an id unique to the test."""
    doc = sample_order(f"DC-{uuid.uuid4().hex[:10]}", 2)
    pipeline.register(ledger, doc, run_id=f"order-{doc['order_id']}")
    return doc


def ship(ledger: Ledger, client: WarehouseClient, doc: dict[str, Any], line_id: str) -> Any:
    line = ledger.get_line(order_id=doc["order_id"], line_id=line_id)
    return pipeline.ship_line(
        ledger=ledger,
        client=client,
        order_id=doc["order_id"],
        ship_to=doc["ship_to"],
        line={"line_id": line.line_id, "sku": line.sku, "quantity": line.quantity},
        try_number=1,
    )


@pytest.fixture
def refused(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> dict[str, Any]:
    """The order with line 2 refused by the warehouse (final), the refusal lifted after."""
    warehouse.set_faults(reject_skus=["TEE-*"])
    with pytest.raises(SkuRefused):
        ship(ledger, client, order, "2")
    warehouse.clear_faults()
    return order


def answer(
    ledger: Ledger, client: WarehouseClient, doc: dict[str, Any], choice: str, **fields: Any
) -> Any:
    return decision.apply(
        ledger,
        client,
        order_id=doc["order_id"],
        ship_to=doc["ship_to"],
        line_id="2",
        choice=choice,
        answer=fields,
        responder=ADA,
    )


def test_a_refused_line_asks_for_a_decision(ledger: Ledger, refused: dict[str, Any]) -> None:
    """A final refusal with no shipment is the operator's decision."""
    line = ledger.get_line(order_id=refused["order_id"], line_id="2")
    assert decision.assess(line).next is decision.Next.ASK


def test_a_line_that_shipped_needs_nothing(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """A shipped line's decision task has nothing to do."""
    ship(ledger, client, order, "1")
    line = ledger.get_line(order_id=order["order_id"], line_id="1")
    assert decision.assess(line).next is decision.Next.NOTHING


def test_an_outage_is_not_a_decision(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """A line failed by an outage is not asked about: a retry ends it."""
    warehouse.set_faults(error_rate=1.0)
    with pytest.raises(WarehouseServerError):
        ship(ledger, client, order, "1")
    line = ledger.get_line(order_id=order["order_id"], line_id="1")
    assessed = decision.assess(line)
    assert assessed.next is decision.Next.FAIL
    assert "shipping retry" in assessed.why


def test_the_form_names_the_line_and_prefills_its_values(
    ledger: Ledger, refused: dict[str, Any]
) -> None:
    """The subject names line id and SKU; SKU and quantity are pre-filled, the reason is not."""
    line = ledger.get_line(order_id=refused["order_id"], line_id="2")
    form = decision.form(refused["order_id"], line, refused["ship_to"])
    assert form.subject == f"Decide line 2 · TEE-L of order {refused['order_id']}"
    assert form.defaults == {"sku": "TEE-L", "quantity": line.quantity, "reason": None}
    assert "SkuRefused" in form.body
    assert refused["ship_to"]["city"] in form.body


def test_a_fix_ships_the_new_content_under_the_next_key_as_the_airflow_user(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, refused: dict[str, Any]
) -> None:
    """The answer goes through the fence (revision 1, key #1) and the line ships once."""
    result = answer(ledger, client, refused, decision.FIX, sku="MUG-RED", quantity=3, reason="r")
    order_id = refused["order_id"]
    line = ledger.get_line(order_id=order_id, line_id="2")
    assert result["state"] == line.state == LineState.SHIPPED
    assert (line.sku, line.quantity, line.revision) == ("MUG-RED", 3, 1)
    assert line.idempotency_key == f"{order_id}:2#1"
    shipments = [s for s in warehouse.shipments(order_id) if s["line_id"] == "2"]
    assert [(s["sku"], s["quantity"]) for s in shipments] == [("MUG-RED", 3)]
    status = ledger.get_order(order_id)
    assert status is not None
    amendment = status.to_json()["amendments"][-1]
    assert (amendment["by"], amendment["reason"], amendment["action"]) == ("ada", "r", "FIX")


def test_a_cancel_voids_the_key_and_ships_nothing(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, refused: dict[str, Any]
) -> None:
    """A cancel ends CANCELLED with nothing at the warehouse for the line."""
    result = answer(ledger, client, refused, decision.CANCEL, reason="out of stock")
    assert result["state"] == "CANCELLED"
    line = ledger.get_line(order_id=refused["order_id"], line_id="2")
    assert line.state is LineState.CANCELLED
    assert not [s for s in warehouse.shipments(refused["order_id"]) if s["line_id"] == "2"]


@pytest.mark.parametrize(
    ("choice", "fields", "why"),
    [
        (decision.FIX, {"sku": "MUG-RED", "reason": ""}, "a reason is required"),
        (decision.CANCEL, {"reason": "   "}, "a reason is required"),
        (decision.FIX, {"sku": "TEE-L", "reason": "same"}, "a fix needs a new SKU or quantity"),
        (decision.FIX, {"quantity": 0, "reason": "zero"}, "quantity"),
        ("Ship it anyway", {"reason": "x"}, "unknown choice"),
    ],
)
def test_a_refused_answer_changes_nothing(
    ledger: Ledger,
    client: WarehouseClient,
    refused: dict[str, Any],
    choice: str,
    fields: dict[str, Any],
    why: str,
) -> None:
    """An answer the rules refuse leaves the line as it was, FAILED and asking."""
    before = ledger.get_line(order_id=refused["order_id"], line_id="2")
    with pytest.raises(AmendmentRefused, match=why):
        answer(ledger, client, refused, choice, **fields)
    assert ledger.get_line(order_id=refused["order_id"], line_id="2") == before


def test_an_answer_applied_twice_is_refused_the_second_time(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, refused: dict[str, Any]
) -> None:
    """The second answer finds the line shipped: refused, one shipment."""
    answer(ledger, client, refused, decision.FIX, sku="MUG-RED", reason="first")
    with pytest.raises(AmendmentRefused, match="SHIPPED"):
        answer(ledger, client, refused, decision.CANCEL, reason="second")
    assert len([s for s in warehouse.shipments(refused["order_id"]) if s["line_id"] == "2"]) == 1


def test_a_fixed_line_whose_shipping_failed_ships_on_the_next_try(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, refused: dict[str, Any]
) -> None:
    """An outage after the answer: the line is fixed, and the task's retry ships it."""
    warehouse.set_faults(error_rate=1.0)
    with pytest.raises(WarehouseServerError):
        answer(ledger, client, refused, decision.FIX, sku="MUG-RED", reason="r")
    warehouse.clear_faults()
    line = ledger.get_line(order_id=refused["order_id"], line_id="2")
    assert decision.assess(line).next is decision.Next.SHIP
    result = decision.ship(
        ledger, client, order_id=refused["order_id"], ship_to=refused["ship_to"], line_id="2"
    )
    assert result["state"] == "SHIPPED"


def test_the_decisions_try_does_not_overwrite_ship_items(
    ledger: Ledger, client: WarehouseClient, refused: dict[str, Any]
) -> None:
    """The decision records its shipping under the line's next try number."""
    order_id = refused["order_id"]
    assert ledger.next_try_number(order_id=order_id, line_id="2") == 2
    answer(ledger, client, refused, decision.FIX, sku="MUG-RED", reason="r")
    assert ledger.next_try_number(order_id=order_id, line_id="2") == 3


@pytest.mark.parametrize(
    ("responder", "actor"),
    [({"id": "7", "name": "grace"}, "grace"), ({"id": "7", "name": ""}, "7")],
)
def test_the_actor_is_the_airflow_user_who_answered(responder: dict[str, Any], actor: str) -> None:
    """The audit trail names the responder: its name, else its id."""
    assert decision.actor_of(responder) == actor


def test_an_answer_without_a_user_is_refused() -> None:
    """No responder, no amendment."""
    with pytest.raises(AmendmentRefused):
        decision.actor_of(None)
