"""The ledger view's read model: an order beside its run, open orders, reconciliation."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shipping import pipeline
from shipping.amend import amend_line
from shipping.ledger import Amendment, Ledger, LineState
from shipping.ops.samples import sample_order
from shipping.orderview import (
    RunTasks,
    TaskState,
    open_orders,
    order_id_of_run,
    order_view,
    reconciliation_of,
)
from shipping.warehouse import RetryPolicy, WarehouseClient


def registered(ledger: Ledger, lines: int, order_id: str | None = None) -> dict[str, Any]:
    """A registered order of ``lines`` lines, owned by its run ``order-<order_id>``."""
    doc = sample_order(order_id or f"OV-{uuid.uuid4().hex[:8]}", lines)
    pipeline.register(ledger, doc, run_id=f"order-{doc['order_id']}")
    return doc


def ship(ledger: Ledger, client: WarehouseClient, doc: dict[str, Any], index: int) -> None:
    """Ship one line through the pipeline."""
    item = doc["items"][index]
    pipeline.ship_line(
        ledger=ledger,
        client=client,
        order_id=doc["order_id"],
        ship_to=doc["ship_to"],
        line={"line_id": item["line_id"], "sku": item["sku"], "quantity": item["quantity"]},
        try_number=1,
    )


def refuse(ledger: Ledger, doc: dict[str, Any], line_id: str) -> None:
    """Record the warehouse's final refusal of a line's SKU."""
    ledger.record_failed(
        order_id=doc["order_id"],
        line_id=line_id,
        try_number=1,
        requests=1,
        error="SkuRefused: warehouse answered 422 (sku-refused)",
        error_class="SkuRefused",
        error_final=True,
    )


def run_of(doc: dict[str, Any], state: str, **lines: str) -> RunTasks:
    """The order's run with ``ship_item`` states given as ``m<map_index>=state``."""
    tasks = {int(k[1:]): TaskState(v, 1) for k, v in lines.items()}
    return RunTasks(f"order-{doc['order_id']}", state, tasks, "success", None)


def test_an_order_view_holds_its_own_lines_not_another_orders_with_the_same_ids(
    ledger: Ledger, client: WarehouseClient
) -> None:
    """Two orders share line ids 1 and 2: each view shows its own lines, states and tasks."""
    first, second = registered(ledger, 2), registered(ledger, 2)
    ship(ledger, client, first, 0)
    refuse(ledger, first, "2")
    ship(ledger, client, second, 0)
    ship(ledger, client, second, 1)
    order = ledger.get_order(first["order_id"])
    assert order is not None
    view = order_view(order, run_of(first, "failed", m0="success", m1="failed"))
    assert [(v.line.line_id, v.line.state, v.task and v.task.state) for v in view.lines] == [
        ("1", LineState.SHIPPED, "success"),
        ("2", LineState.FAILED, "failed"),
    ]
    assert view.counts == {"SHIPPED": 1, "FAILED": 1}
    assert f"shipping fix {first['order_id']} --line 2" in view.needs.commands[0]
    other = ledger.get_order(second["order_id"])
    assert other is not None
    assert order_view(other, run_of(second, "success")).counts == {"SHIPPED": 2}


def test_an_amendment_shows_on_its_own_line_with_who_why_old_and_new(
    ledger: Ledger, client: WarehouseClient
) -> None:
    """A fix of line 2 of one order: listed on that line only, not on the twin order's line 2."""
    first, second = registered(ledger, 2), registered(ledger, 2)
    refuse(ledger, first, "2")
    refuse(ledger, second, "2")
    amend_line(
        ledger,
        client,
        order_id=first["order_id"],
        line_id="2",
        action=Amendment.FIX,
        actor="ada",
        reason="renamed <b>by</b> the shop",
        sku="MUG-BLUE",
    )
    order = ledger.get_order(first["order_id"])
    assert order is not None
    view = order_view(order, run_of(first, "failed", m1="failed"))
    [amendment] = view.lines[1].amendments
    assert (amendment.actor, amendment.reason, amendment.old_sku, amendment.new_sku) == (
        "ada",
        "renamed <b>by</b> the shop",
        first["items"][1]["sku"],
        "MUG-BLUE",
    )
    assert view.lines[0].amendments == ()
    assert view.needs.commands == [f"shipping retry {first['order_id']}"]  # fixed: retry it
    twin = ledger.get_order(second["order_id"])
    assert twin is not None
    assert all(line.amendments == () for line in order_view(twin, None).lines)


def test_open_orders_lists_each_stuck_order_with_what_ends_it(
    ledger: Ledger, client: WarehouseClient
) -> None:
    """A refused line: fix or cancel; an outage: retry; an order SHIPPED since: absent."""
    refused, outage, healed = registered(ledger, 3), registered(ledger, 2), registered(ledger, 2)
    refuse(ledger, refused, "3")
    ledger.record_failed(
        order_id=outage["order_id"],
        line_id="1",
        try_number=3,
        requests=6,
        error="WarehouseServerError: 503",
        error_class="WarehouseServerError",
        error_final=False,
    )
    ship(ledger, client, healed, 0)
    ship(ledger, client, healed, 1)
    ledger.finalize_order(healed["order_id"])
    found = open_orders(
        ledger,
        [
            run_of(refused, "failed", m2="failed"),
            run_of(outage, "running", m0="failed"),
            run_of(healed, "failed", m1="failed"),  # a failure left from before it shipped
        ],
    )
    assert [(o.order_id, o.failed_lines) for o in found] == [
        (refused["order_id"], ("3",)),
        (outage["order_id"], ("1",)),
    ]
    assert found[0].needs.commands == [
        f'shipping fix {refused["order_id"]} --line 3 --sku NEW_SKU --reason "..."',
        f'shipping cancel {refused["order_id"]} --line 3 --reason "..."',
    ]
    assert found[1].needs.commands == [f"shipping retry {outage['order_id']}"]


def test_open_orders_names_a_run_whose_intake_failed_before_the_ledger_knew_it(
    ledger: Ledger,
) -> None:
    """No ledger record, register_order failed: `shipping retry` of the run's order."""
    run = RunTasks("order-LOST-1", "failed", {}, "failed", None)
    [found] = open_orders(ledger, [run])
    assert (found.order_id, found.state, found.needs.commands) == (
        "LOST-1",
        None,
        ["shipping retry LOST-1"],
    )
    assert "register_order failed" in (found.needs.why or "")


def test_open_orders_leaves_a_duplicate_run_to_its_owner(ledger: Ledger) -> None:
    """Another run of the same order holds no lines: only the owner run's order is listed."""
    doc = registered(ledger, 1)
    pipeline.register(ledger, doc, run_id="manual__again")
    refuse(ledger, doc, "1")
    duplicate = RunTasks("manual__again", "failed", {0: TaskState("failed")}, "success", None)
    assert open_orders(ledger, [duplicate]) == []
    assert ledger.orders_of_runs(["manual__again", "nope"]) == {"manual__again": doc["order_id"]}


def test_a_failed_reducer_with_every_line_done_needs_retry_and_says_why(
    ledger: Ledger, client: WarehouseClient
) -> None:
    """Every line shipped, finalize_order failed: retry, and the reason is the reducer."""
    doc = registered(ledger, 2)
    ship(ledger, client, doc, 0)
    ship(ledger, client, doc, 1)
    run = RunTasks(f"order-{doc['order_id']}", "failed", {}, "success", "failed")
    [found] = open_orders(ledger, [run])
    assert found.needs.commands == [f"shipping retry {doc['order_id']}"]
    assert found.needs.why == "every line is done but finalize_order failed"


def test_the_summary_counts_every_line_and_reads_only_those_that_need_looking_at(
    ledger: Ledger, client: WarehouseClient
) -> None:
    """A 40-line order with one refusal: counts by state; the refused line alone in full."""
    doc = registered(ledger, 40)
    for index in range(30):
        ship(ledger, client, doc, index)
    refuse(ledger, doc, "35")
    summary = ledger.order_summary(doc["order_id"])
    assert summary is not None
    assert summary.counts == {LineState.SHIPPED: 30, LineState.PENDING: 9, LineState.FAILED: 1}
    assert summary.total == 40
    assert list(summary.notable) == [34]  # by position: ship_item's map index
    assert summary.notable[34].line_id == "35"
    assert ledger.order_summary("NOPE") is None


def test_reconciliation_is_clean_or_counts_each_kind_of_drift(
    ledger: Ledger, client: WarehouseClient
) -> None:
    """Shipped through the pipeline: clean; a shipment behind the ledger's back: its kind."""
    doc = registered(ledger, 2)
    ship(ledger, client, doc, 0)
    assert reconciliation_of(ledger, client, doc["order_id"]).clean is True
    item = doc["items"][1]
    client.create_shipment(
        order_id=doc["order_id"],
        line_id="2",
        sku=item["sku"],
        quantity=item["quantity"],
        ship_to=doc["ship_to"],
    )
    found = reconciliation_of(ledger, client, doc["order_id"])
    assert (found.clean, found.kinds) == (False, {"UNRECORDED_SHIPMENT": 1})
    assert found.to_json()["drift"][0]["line_id"] == "2"


def test_reconciliation_with_an_unreachable_warehouse_is_unknown_not_an_error(
    ledger: Ledger,
) -> None:
    """The view still shows the order; its reconciliation says why it is not known."""
    doc = registered(ledger, 1)
    with WarehouseClient(
        "http://127.0.0.1:9", "token", timeout=(0.5, 0.5), retry=RetryPolicy(max_attempts=1)
    ) as client:
        found = reconciliation_of(ledger, client, doc["order_id"])
    assert found.clean is None
    assert found.error is not None
    assert "could not be asked" in found.error


@pytest.mark.parametrize(
    ("run_id", "order_id"),
    [("order-ORD-1", "ORD-1"), ("order-", None), ("manual__2026", None)],
)
def test_a_run_id_names_its_order_by_the_rest_doors_convention(
    run_id: str, order_id: str | None
) -> None:
    """``order-<order_id>`` names the order; anything else names none."""
    assert order_id_of_run(run_id) == order_id
