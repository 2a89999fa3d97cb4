"""Fix and cancel issued while a retry of the line is mid-post, on the real stack.

The race of the issue "Operator actions keep exactly once": a line's first try fails on a
warehouse outage; its retry posts to a slow warehouse; while that request is in flight
(its claim is held in the warehouse's database), the operator runs ``shipping fix`` or
``shipping cancel``. The amendment voids the line's key at the warehouse: the in-flight
request creates nothing (or, had it committed, is cancelled), and the try records
nothing (fenced). After the order settles, with at most one ``shipping retry``, the
ledger and the warehouse agree: the order is SHIPPED, one live shipment per shipped line
with the ledger's content, none for a cancelled line.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from shipping.contract import DAG_ID, WAREHOUSE_DATABASE
from shipping.ops.samples import sample_order
from shipping.order import idempotency_key, run_id_for
from tests.e2e.conftest import LiveStack
from tests.e2e.support import wait_for

pytestmark = pytest.mark.e2e
RUN_TIMEOUT_S = 300
# Below the client's 10 s read timeout: the request stays one request, held in flight.
LATENCY_MS = 8_000


def in_flight(stack: LiveStack, key: str) -> bool:
    """Whether the warehouse holds an in-flight claim on ``key`` (its database, read only)."""
    prefix = stack.env.get("SHIPPING_DATABASE_PREFIX", "")
    url = sa.make_url(stack.state.postgres_url).set(database=prefix + WAREHOUSE_DATABASE)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            state = conn.execute(
                sa.text("SELECT state FROM idempotency_keys WHERE idempotency_key = :key"),
                {"key": key},
            ).scalar_one_or_none()
    finally:
        engine.dispose()
    return state == "in_flight"


def line_state(stack: LiveStack, doc: dict[str, Any]) -> str | None:
    """The state of the order's one line, or None while the ledger does not hold it yet."""
    result = stack.shipping("status", doc["order_id"], "--json")
    if result.returncode != 0:
        return None
    lines = json.loads(result.stdout)["lines"]
    return str(lines[0]["state"]) if lines else None


def retry_in_flight(stack: LiveStack) -> dict[str, Any]:
    """A one-line order whose first try failed on an outage and whose retry is mid-post."""
    stack.admin.set_faults(error_rate=1.0)
    doc = sample_order(f"RACE-{uuid.uuid4().hex[:10]}", 1)
    stack.api.trigger(DAG_ID, run_id_for(doc["order_id"]), doc)
    wait_for(lambda: line_state(stack, doc) == "FAILED", 180, "the first try to fail")
    stack.admin.reset_faults()
    stack.admin.set_faults(latency_ms=LATENCY_MS)
    key = idempotency_key(doc["order_id"], "1")
    wait_for(lambda: in_flight(stack, key), 180, "the retry's post to be in flight")
    return doc


def settle(stack: LiveStack, doc: dict[str, Any]) -> dict[str, Any]:
    """Wait for the run; if it failed, one `shipping retry`; the order's status."""
    run = stack.api.wait_for_run(DAG_ID, run_id_for(doc["order_id"]), timeout=RUN_TIMEOUT_S)
    if run["state"] != "success":
        retried = stack.shipping("retry", doc["order_id"])
        assert retried.returncode == 0, retried.stdout + retried.stderr
        watched = stack.shipping("watch", doc["order_id"], "--timeout", str(RUN_TIMEOUT_S))
        assert watched.returncode == 0, watched.stdout + watched.stderr
    return stack.status(doc["order_id"])


def live_shipments(stack: LiveStack, doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        s for s in stack.warehouse.list_shipments(doc["order_id"]) if s["status"] != "cancelled"
    ]


def test_a_fix_racing_a_retry_mid_post_ships_only_the_new_content(stack: LiveStack) -> None:
    """The old content never ships; the fixed line ships once, under its next key."""
    doc = retry_in_flight(stack)
    fixed = stack.shipping(
        "fix", doc["order_id"], "--line", "1", "--sku", "TEE-L", "--reason", "renamed"
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    stack.admin.reset_faults()
    status = settle(stack, doc)
    assert status["state"] == "SHIPPED"
    [line] = status["lines"]
    [shipment] = live_shipments(stack, doc)
    assert (line["state"], line["sku"], line["shipment_id"]) == (
        "SHIPPED",
        "TEE-L",
        shipment["shipment_id"],
    )
    assert (shipment["sku"], shipment["idempotency_key"]) == (
        "TEE-L",
        idempotency_key(doc["order_id"], "1", 1),
    )
    # The retry that was mid-post was fenced: refused by the voided key or not recorded.
    assert line["error_class"] in ("KeyVoided", "LineFenced"), line
    [amendment] = status["amendments"]
    assert amendment["void"]["key"] == idempotency_key(doc["order_id"], "1")
    assert amendment["void"]["voided_at"] is not None
    clean = stack.shipping("reconcile", doc["order_id"])
    assert clean.returncode == 0, clean.stdout + clean.stderr


def test_a_cancel_racing_a_retry_mid_post_leaves_no_live_shipment(stack: LiveStack) -> None:
    """The cancelled line has no live shipment; the order closes with it cancelled."""
    doc = retry_in_flight(stack)
    cancelled = stack.shipping("cancel", doc["order_id"], "--line", "1", "--reason", "gone")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    stack.admin.reset_faults()
    status = settle(stack, doc)
    assert (status["state"], status["cancelled_lines"]) == ("SHIPPED", 1)
    assert [x["state"] for x in status["lines"]] == ["CANCELLED"]
    assert live_shipments(stack, doc) == []
    clean = stack.shipping("reconcile", doc["order_id"])
    assert clean.returncode == 0, clean.stdout + clean.stderr
