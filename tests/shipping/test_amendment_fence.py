"""The fence of amendments, one race at a time, on the real ledger and warehouse.

Each test replays one interleaving of the issue "Operator actions keep exactly once" with
the stepped tries of the stateful test, and checks the invariants I1-I3 after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shipping import pipeline
from shipping.amend import amend_line
from shipping.errors import AmendmentRefused, ConnectionConfigError, KeyVoided, LineFenced
from shipping.ledger import Amendment, Ledger, LineState
from shipping.ops.samples import sample_order
from shipping.reconcile import check_order, repair
from shipping.warehouse import WarehouseClient
from tests.shipping.test_exactly_once_stateful import (
    ExactlyOnce,
    SteppedTry,
    check_line_invariants,
)
from warehouse_mock.testing import WarehouseHandle


@pytest.fixture
def machine(ledger: Ledger, warehouse: WarehouseHandle) -> Iterator[ExactlyOnce]:
    """Two registered orders sharing line id 1, and stepped tries of their lines."""
    machine = ExactlyOnce(ledger, warehouse)
    machine.register_two_orders()
    yield machine
    machine.client.close()
    machine.one_shot_client.close()


def failed_then_posting(machine: ExactlyOnce) -> SteppedTry:
    """Order 0's line 1 failed once; its retry's post committed, the answer still on its way."""
    first = SteppedTry(machine, machine.orders[0], "1")
    first.step("lose")  # the lookup's answer is lost: the line is FAILED, nothing shipped
    retry = SteppedTry(machine, machine.orders[0], "1")
    retry.step("ok")  # the lookup finds nothing
    retry.step("slow")  # the post commits at the warehouse; the answer is slow
    assert retry.waiting_at == "answer of create_shipment"
    return retry


def amend(machine: ExactlyOnce, action: Amendment, **new: Any) -> None:
    amend_line(
        machine.ledger,
        machine.client,
        order_id=machine.orders[0]["order_id"],
        line_id="1",
        action=action,
        actor="ada",
        reason="race",
        **new,
    )


def check(machine: ExactlyOnce) -> None:
    for doc in machine.orders:
        check_line_invariants(machine.ledger, machine.warehouse, doc)


def test_a_fix_racing_a_retry_whose_post_committed_fences_the_retry(
    machine: ExactlyOnce, warehouse: WarehouseHandle
) -> None:
    """The retry's shipment of the old content is cancelled and not recorded; the next
    try ships the fixed content under the next key (behaviour 1 of the issue)."""
    retry = failed_then_posting(machine)
    amend(machine, Amendment.FIX, sku="TEE-L")
    retry.step("ok")
    assert isinstance(retry.outcome, LineFenced)
    check(machine)
    order_id = machine.orders[0]["order_id"]
    line = machine.ledger.get_line(order_id=order_id, line_id="1")
    assert (line.state, line.error_class, line.error_final) == (
        LineState.FAILED,
        "LineFenced",
        False,
    )
    after = SteppedTry(machine, machine.orders[0], "1")
    while not after.done:
        after.step("ok")
    assert after.outcome["sku"] == "TEE-L"
    check(machine)
    statuses = sorted((s["idempotency_key"], s["status"]) for s in warehouse.shipments(order_id))
    assert statuses == [(f"{order_id}:1", "cancelled"), (f"{order_id}:1#1", "created")]


def test_a_fix_before_a_retry_posts_makes_its_post_refused(machine: ExactlyOnce) -> None:
    """A retry that read the old content and posts after the fix gets 410 and ships nothing."""
    first = SteppedTry(machine, machine.orders[0], "1")
    first.step("lose")
    retry = SteppedTry(machine, machine.orders[0], "1")
    retry.step("ok")
    assert retry.waiting_at == "create_shipment"
    amend(machine, Amendment.FIX, quantity=3)
    retry.step("ok")
    assert isinstance(retry.outcome, KeyVoided)
    check(machine)
    assert machine.warehouse.shipments(machine.orders[0]["order_id"]) == []


@pytest.mark.parametrize("answer", ["ok", "lose"])
def test_a_cancel_racing_a_retry_leaves_the_line_cancelled_with_no_live_shipment(
    machine: ExactlyOnce, answer: str
) -> None:
    """Whether the retry's answer arrives or is lost, the line ends CANCELLED and its
    shipment cancelled; a later try does not post (behaviour 2 of the issue)."""
    retry = failed_then_posting(machine)
    amend(machine, Amendment.CANCEL)
    retry.step(answer)
    assert retry.outcome is not None
    assert not isinstance(retry.outcome, dict)
    check(machine)
    later = SteppedTry(machine, machine.orders[0], "1")
    assert later.done
    assert later.outcome["state"] == "CANCELLED"
    order_id = machine.orders[0]["order_id"]
    assert [s["status"] for s in machine.warehouse.shipments(order_id)] == ["cancelled"]
    status = machine.ledger.get_order(order_id)
    assert status is not None
    [cancel] = status.amendments
    assert cancel.voided_shipment_id == machine.warehouse.shipments(order_id)[0]["shipment_id"]
    # The other order's line 1 (same line id) was never touched.
    other = machine.ledger.get_line(order_id=machine.orders[1]["order_id"], line_id="1")
    assert (other.state, other.revision) == (LineState.PENDING, 0)


def test_a_repair_from_a_stale_check_records_nothing_after_a_fix(
    machine: ExactlyOnce, client: WarehouseClient
) -> None:
    """Reconcile reads the ledger and the warehouse, a fix lands, then the repair: the
    fix's void cancelled the shipment and the fence refuses it (behaviour 6)."""
    first = SteppedTry(machine, machine.orders[0], "1")
    first.step("ok")  # the lookup finds nothing
    first.step("lose")  # the post commits; its answer is lost: FAILED over a shipment
    order_id = machine.orders[0]["order_id"]
    drift = check_order(machine.ledger, client, order_id)
    assert [d.repair for d in drift] == ["adopt"]
    amend(machine, Amendment.FIX, sku="TEE-L")
    assert repair(machine.ledger, client, drift, actor="ada") == []
    check(machine)
    line = machine.ledger.get_line(order_id=order_id, line_id="1")
    assert (line.state, line.sku) == (LineState.FAILED, "TEE-L")


def test_an_amendment_is_refused_while_its_predecessors_void_is_pending(
    ledger: Ledger,
) -> None:
    """Until the warehouse confirms the void, a second amendment changes nothing."""
    doc = sample_order(f"FENCE-{uuid.uuid4().hex[:8]}", 1)
    pipeline.register(ledger, doc, run_id=f"order-{doc['order_id']}")
    ledger.record_failed(order_id=doc["order_id"], line_id="1", try_number=1, requests=1, error="x")
    fixed = ledger.amend_line(
        order_id=doc["order_id"],
        line_id="1",
        action=Amendment.FIX,
        actor="ada",
        reason="r",
        sku="TEE-L",
    )
    assert fixed.void_key == f"{doc['order_id']}:1"
    with pytest.raises(AmendmentRefused, match="still to be voided"):
        ledger.amend_line(
            order_id=doc["order_id"], line_id="1", action=Amendment.CANCEL, actor="a", reason="r"
        )
    assert ledger.get_line(order_id=doc["order_id"], line_id="1") == fixed


def test_a_client_that_cannot_be_built_is_recorded_as_configuration(ledger: Ledger) -> None:
    """A warehouse connection that cannot be used fails the line with its class recorded."""
    doc = sample_order(f"CONF-{uuid.uuid4().hex[:8]}", 1)
    pipeline.register(ledger, doc, run_id=f"order-{doc['order_id']}")

    def broken() -> Any:
        raise ConnectionConfigError("connection 'warehouse_api' has no password (the token)")

    with (
        pytest.raises(ConnectionConfigError),
        pipeline.line_client(ledger, broken, order_id=doc["order_id"], line_id="1", try_number=1),
    ):
        pass
    line = ledger.get_line(order_id=doc["order_id"], line_id="1")
    assert (line.state, line.error_class, line.error_final) == (
        LineState.FAILED,
        "ConnectionConfigError",
        True,
    )


@pytest.mark.parametrize(
    ("reason", "problem"),
    [
        ("  ", "a reason is required"),
        ("x" * 501, "longer than 500"),
        ("gone\x1b[2J", "control characters"),
        ("two\nlines", "control characters"),
    ],
)
def test_a_reason_follows_the_orders_text_rules(
    ledger: Ledger, client: WarehouseClient, reason: str, problem: str
) -> None:
    """A reason with control characters, or none, or too long, is refused; nothing changes."""
    doc = sample_order(f"WHY-{uuid.uuid4().hex[:8]}", 1)
    pipeline.register(ledger, doc, run_id=f"order-{doc['order_id']}")
    ledger.record_failed(order_id=doc["order_id"], line_id="1", try_number=1, requests=1, error="x")
    before = ledger.get_order(doc["order_id"])
    with pytest.raises(AmendmentRefused, match=problem):
        amend_line(
            ledger,
            client,
            order_id=doc["order_id"],
            line_id="1",
            action=Amendment.CANCEL,
            actor="ada",
            reason=reason,
        )
    assert ledger.get_order(doc["order_id"]) == before
