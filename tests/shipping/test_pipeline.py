"""The task bodies of order_intake, against a real warehouse and a SQLite ledger."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from shipping import pipeline
from shipping.errors import (
    ConnectionConfigError,
    OrderConflict,
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    ShipmentConflict,
    ShipmentMismatch,
    SkuRefused,
    WarehouseUnavailable,
    is_retryable,
)
from shipping.ledger import Amendment, Ledger, orders
from shipping.ops.samples import sample_order
from shipping.order import parse_order
from shipping.warehouse import RetryPolicy, WarehouseClient
from warehouse_mock.storage import Storage
from warehouse_mock.testing import WarehouseHandle


@pytest.fixture
def order() -> dict[str, Any]:
    """A two-line order with an id unique to the test."""
    return sample_order(f"PL-{uuid.uuid4().hex[:10]}", 2)


def ship(
    ledger: Ledger,
    client: WarehouseClient,
    doc: dict[str, Any],
    index: int,
    try_number: int = 1,
    run_id: str | None = None,
) -> Any:
    registered = pipeline.register(ledger, doc, run_id=run_id or f"order-{doc['order_id']}")
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
    registered = pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
    assert [line["line_id"] for line in registered["lines"]] == ["1", "2"]
    assert registered["ship_to"] == order["ship_to"]


def test_register_rejects_unknown_fields_and_records_the_reason(
    ledger: Ledger, order: dict[str, Any]
) -> None:
    """Conf keys the schema does not know make the order REJECTED, with the reason."""
    order["coupon"] = "FREE"
    with pytest.raises(OrderRejected, match="coupon"):
        pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
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
    created = ship_behind_the_ledgers_back(client, order)
    result = ship(ledger, client, order, 0, try_number=2)
    assert result["shipment_id"] == created
    assert len(warehouse.shipments(order["order_id"])) == 1


def ship_behind_the_ledgers_back(
    client: WarehouseClient, order: dict[str, Any], line: int = 0
) -> str:
    """Create a line's shipment at the warehouse only: the ledger never hears of it."""
    item = order["items"][line]
    return client.create_shipment(
        order_id=order["order_id"],
        line_id=item["line_id"],
        sku=item["sku"],
        quantity=item["quantity"],
        ship_to=order["ship_to"],
    ).shipment_id


@pytest.fixture
def posts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The URL of every POST any client sends in this test, as it is sent."""
    sent: list[str] = []
    real = requests.Session.request

    def spy(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if method.upper() == "POST":
            sent.append(url)
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    return sent


def test_a_new_run_adopts_a_shipment_whose_key_expired_and_posts_nothing(
    ledger: Ledger,
    client: WarehouseClient,
    warehouse: WarehouseHandle,
    order: dict[str, Any],
    posts: list[str],
) -> None:
    """Try 1 of a run, ledger PENDING, the key's stored response purged: adopted, not re-sent."""
    created = ship_behind_the_ledgers_back(client, order)
    storage = Storage(warehouse.database_url)
    storage.purge_expired(older_than=datetime.now(UTC) + timedelta(days=365))
    storage.dispose()
    posts.clear()
    result = ship(ledger, client, order, 0, try_number=1)
    assert (result["shipment_id"], posts) == (created, [])
    assert len(warehouse.shipments(order["order_id"])) == 1
    assert ledger.shipped_line(order_id=order["order_id"], line_id="1") == created


def test_a_rotated_token_finds_the_shipment_of_the_old_one(
    ledger: Ledger, warehouse: WarehouseHandle, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """After a token rotation the line's shipment is still this client's: nothing new ships."""
    created = ship_behind_the_ledgers_back(client, order)
    assert warehouse.rotated_api_token is not None
    with WarehouseClient(
        warehouse.base_url, warehouse.rotated_api_token, sleep=lambda _: None
    ) as rotated:
        result = ship(ledger, rotated, order, 0, try_number=1)
    assert result["shipment_id"] == created
    assert len(warehouse.shipments(order["order_id"])) == 1


def test_another_clients_shipment_of_the_same_line_is_not_adopted(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """A shipment made by another client under the same order and line is not ours."""
    assert warehouse.foreign_api_token is not None
    with WarehouseClient(
        warehouse.base_url, warehouse.foreign_api_token, sleep=lambda _: None
    ) as foreign:
        theirs = ship_behind_the_ledgers_back(
            foreign, {**order, "items": [{"line_id": "1", "sku": "OTHER", "quantity": 9}]}
        )
    result = ship(ledger, client, order, 0, try_number=2)
    assert result["shipment_id"] != theirs
    [mine] = [s for s in warehouse.shipments(order["order_id"]) if s["shipment_id"] != theirs]
    assert (mine["shipment_id"], mine["sku"]) == (result["shipment_id"], "MUG-RED")


def test_a_shipment_under_the_key_with_other_content_is_a_final_recorded_error(
    ledger: Ledger,
    client: WarehouseClient,
    warehouse: WarehouseHandle,
    order: dict[str, Any],
    posts: list[str],
) -> None:
    """This client's shipment under the line's key but for another SKU: never adopted, never re-posted."""
    client.create_shipment(
        order_id=order["order_id"], line_id="1", sku="TEE-L", quantity=1, ship_to=order["ship_to"]
    )
    posts.clear()
    with pytest.raises(ShipmentConflict, match="sku"):
        ship(ledger, client, order, 0)
    assert posts == []
    status = ledger.get_order(order["order_id"])
    assert status is not None
    assert (status.lines[0].state, status.lines[0].shipment_id) == ("FAILED", None)
    assert "not adopted" in (status.lines[0].last_error or "")


def test_a_failed_lookup_is_recorded_as_the_lines_last_error(
    ledger: Ledger, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """The warehouse unreachable for the lookup: the line says so, and the error is retryable."""
    with (
        WarehouseClient(
            "http://127.0.0.1:9",
            warehouse.api_token,
            retry=RetryPolicy(max_attempts=2),
            sleep=lambda _: None,
        ) as unreachable,
        pytest.raises(WarehouseUnavailable) as raised,
    ):
        ship(ledger, unreachable, order, 0)
    assert is_retryable(raised.value)
    status = ledger.get_order(order["order_id"])
    assert status is not None
    assert status.lines[0].state == "FAILED"
    assert "connection failed" in (status.lines[0].last_error or "")


def test_a_duplicate_run_gets_no_lines_and_names_the_owner(
    ledger: Ledger,
    order: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same order under another run id fans out to nothing; the log names the owner run."""
    pipeline.register(ledger, order, run_id="owner-run")
    with caplog.at_level(logging.WARNING, logger="shipping.pipeline"):
        again = pipeline.register(ledger, order, run_id="manual__duplicate")
    assert (again["lines"], again["owner_run_id"]) == ([], "owner-run")
    assert "owner-run" in caplog.text


def test_other_content_under_the_same_order_id_fails_the_run_and_is_recorded(
    ledger: Ledger, order: dict[str, Any]
) -> None:
    """Another order under an accepted order_id: final error, the run refused in the ledger."""
    pipeline.register(ledger, order, run_id="owner-run")
    changed = {**order, "customer_id": "C-other"}
    with pytest.raises(OrderConflict):
        pipeline.register(ledger, changed, run_id="other-run")
    status = ledger.get_order(order["order_id"])
    assert status is not None
    assert [(r.run_id, r.role) for r in status.other_runs] == [("other-run", "REFUSED")]


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
    with pytest.raises(ShipmentMismatch, match="shp_other"):
        pipeline.finalize(ledger, order["order_id"], results)
    status = ledger.get_order(order["order_id"])
    assert status is not None
    assert status.state == "SHIPPING"


def test_line_label_names_line_and_sku() -> None:
    """The UI name of a mapped instance."""
    line = parse_order(sample_order("X", 1)).items[0]
    assert pipeline.line_label({"line_id": line.line_id, "sku": line.sku}) == "line 1 · MUG-RED"


def test_a_failed_lookup_counts_every_request_of_the_client_in_the_lines_attempts(
    ledger: Ledger, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """The warehouse unreachable for three attempts: the line's attempts say 3."""
    with (
        WarehouseClient(
            "http://127.0.0.1:9",
            warehouse.api_token,
            retry=RetryPolicy(max_attempts=3),
            sleep=lambda _: None,
        ) as unreachable,
        pytest.raises(WarehouseUnavailable),
    ):
        ship(ledger, unreachable, order, 0)
    assert ledger.get_line(order_id=order["order_id"], line_id="1").attempts == 3


def test_a_conflict_found_by_the_lookup_counts_one_request(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """A lookup that finds other content under the key made one request: attempts 1."""
    client.create_shipment(
        order_id=order["order_id"], line_id="1", sku="TEE-L", quantity=1, ship_to=order["ship_to"]
    )
    with pytest.raises(ShipmentConflict):
        ship(ledger, client, order, 0)
    line = ledger.get_line(order_id=order["order_id"], line_id="1")
    assert (line.attempts, line.error_class, line.error_final) == (1, "ShipmentConflict", True)


def test_a_retryable_failure_is_recorded_as_not_final(
    ledger: Ledger, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """An outage is recorded with its class and as not final, so `retry` may clear it."""
    with (
        WarehouseClient(
            "http://127.0.0.1:9", warehouse.api_token, retry=RetryPolicy(max_attempts=1)
        ) as unreachable,
        pytest.raises(WarehouseUnavailable),
    ):
        ship(ledger, unreachable, order, 0)
    line = ledger.get_line(order_id=order["order_id"], line_id="1")
    assert (line.error_class, line.error_final) == ("WarehouseTransportError", False)


def test_two_orders_sharing_line_ids_each_ship_their_own_line(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle
) -> None:
    """Line 1 of order A and line 1 of order B are two shipments, each recorded on its order."""
    first, second = (sample_order(f"PL-{uuid.uuid4().hex[:10]}", 1) for _ in range(2))
    shipped = [ship(ledger, client, doc, 0)["shipment_id"] for doc in (first, second)]
    recorded = [
        ledger.shipped_line(order_id=doc["order_id"], line_id="1") for doc in (first, second)
    ]
    at_warehouse = [
        [s["shipment_id"] for s in warehouse.shipments(doc["order_id"])] for doc in (first, second)
    ]
    assert (recorded, at_warehouse) == (shipped, [[shipped[0]], [shipped[1]]])
    assert shipped[0] != shipped[1]


def test_shipping_one_orders_line_leaves_the_same_line_of_another_order_pending(
    ledger: Ledger, client: WarehouseClient
) -> None:
    """Order A's line 1 shipped: order B's line 1 is still PENDING and B cannot finalize."""
    first, second = (sample_order(f"PL-{uuid.uuid4().hex[:10]}", 1) for _ in range(2))
    pipeline.register(ledger, second, run_id=f"order-{second['order_id']}")
    results = [ship(ledger, client, first, 0)]
    assert pipeline.finalize(ledger, first["order_id"], results)["state"] == "SHIPPED"
    with pytest.raises(OrderIncomplete, match="PENDING"):
        pipeline.finalize(ledger, second["order_id"], [])


def test_a_shipment_found_by_the_lookup_is_reported_replayed(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """A retry that adopts the shipment made before says so in its result."""
    ship_behind_the_ledgers_back(client, order)
    assert ship(ledger, client, order, 0, try_number=2)["replayed"] is True


def test_a_try_completes_a_cancel_whose_void_was_left_pending(
    ledger: Ledger, client: WarehouseClient, warehouse: WarehouseHandle, order: dict[str, Any]
) -> None:
    """A cancel the warehouse never heard of is voided by the next try; nothing ships."""
    registered = pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
    ledger.record_failed(
        order_id=order["order_id"], line_id="1", try_number=1, requests=1, error="503"
    )
    ledger.amend_line(
        order_id=order["order_id"], line_id="1", action=Amendment.CANCEL, actor="ada", reason="r"
    )
    result = pipeline.ship_line(
        ledger=ledger,
        client=client,
        order_id=order["order_id"],
        ship_to=registered["ship_to"],
        line=registered["lines"][0],
        try_number=2,
    )
    line = ledger.get_line(order_id=order["order_id"], line_id="1")
    assert (result["state"], line.state, line.void_key) == ("CANCELLED", "CANCELLED", None)
    assert warehouse.shipments(order["order_id"]) == []


def test_a_rejected_orders_customer_id_is_stored_without_control_characters(
    ledger: Ledger, order: dict[str, Any]
) -> None:
    """Control characters go, spaces stay, a lone surrogate becomes "?" in the ledger."""
    order["coupon"] = "FREE"  # unknown: the order is rejected, its fields stored as given
    order["customer_id"] = "C 4\x002\x7f\ud800\t"
    with pytest.raises(OrderRejected):
        pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
    with ledger.engine.connect() as conn:
        stored = conn.execute(
            sa.select(orders.c.customer_id).where(orders.c.order_id == order["order_id"])
        ).scalar_one()
    assert stored == "C 42?"


def test_a_try_whose_client_cannot_be_built_counts_no_request(
    ledger: Ledger, order: dict[str, Any]
) -> None:
    """No client, no request: the failure is recorded with the line's attempts still 0."""
    pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")

    def broken() -> Any:
        raise ConnectionConfigError("connection 'warehouse_api' has no password (the token)")

    with (
        pytest.raises(ConnectionConfigError),
        pipeline.line_client(ledger, broken, order_id=order["order_id"], line_id="1", try_number=1),
    ):
        pass
    line = ledger.get_line(order_id=order["order_id"], line_id="1")
    assert (line.state, line.attempts) == ("FAILED", 0)


def test_finalize_of_an_order_the_ledger_does_not_hold_is_order_not_found(
    ledger: Ledger,
) -> None:
    """The reducer of an unknown order fails with OrderNotFound, whatever the results say."""
    with pytest.raises(OrderNotFound, match="NOPE"):
        pipeline.finalize(ledger, "NOPE", [{"line_id": "1", "shipment_id": "shp_1"}])


def test_finalizes_mismatch_names_the_order_the_line_and_both_shipments(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """The mismatch carries the order, the line, the ledger's shipment and the reported one."""
    results = [ship(ledger, client, order, 0), ship(ledger, client, order, 1)]
    recorded = results[1]["shipment_id"]
    results[1] = {**results[1], "shipment_id": "shp_other"}
    with pytest.raises(ShipmentMismatch) as excinfo:
        pipeline.finalize(ledger, order["order_id"], results)
    error = excinfo.value
    assert (error.order_id, error.line_id, error.recorded, error.reported) == (
        order["order_id"],
        "2",
        recorded,
        "shp_other",
    )


def test_finalize_logs_that_it_finalized_the_order_then_that_it_was_done(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The reducer's task log says whether this run finalized the order, with its line count."""
    results = [ship(ledger, client, order, 0), ship(ledger, client, order, 1)]
    with caplog.at_level(logging.INFO, logger="shipping.pipeline"):
        pipeline.finalize(ledger, order["order_id"], results)
        pipeline.finalize(ledger, order["order_id"], results)
    said = [r.getMessage() for r in caplog.records if r.name == "shipping.pipeline"]
    assert said[-2:] == [
        f"order {order['order_id']} finalized as SHIPPED (2 lines)",
        f"order {order['order_id']} was already SHIPPED (2 lines)",
    ]


def test_a_shipment_adopted_by_the_lookup_counts_no_post(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any]
) -> None:
    """A try that adopts the shipment made before posts nothing: its result and line say 0."""
    ship_behind_the_ledgers_back(client, order)
    result = ship(ledger, client, order, 0, try_number=2)
    line = ledger.get_line(order_id=order["order_id"], line_id="1")
    assert (result["attempts"], line.attempts) == (0, 0)


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What shipping.pipeline wrote to the task log, message by message."""
    return [r.getMessage() for r in caplog.records if r.name == "shipping.pipeline"]


def test_register_logs_the_order_and_its_line_count(
    ledger: Ledger, order: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """register_order's task log says which order registered with how many lines."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.pipeline"):
        pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
    assert said(caplog) == [f"order {order['order_id']} registered with 2 lines"]


def test_a_duplicate_runs_log_names_the_order_the_owner_and_itself(
    ledger: Ledger, order: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A duplicate run's log says whose order it is and that this run ships nothing."""
    pipeline.register(ledger, order, run_id="owner-run")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.pipeline"):
        pipeline.register(ledger, order, run_id="manual__duplicate")
    assert said(caplog) == [
        f"order {order['order_id']} is owned by run owner-run: this run (manual__duplicate) "
        "is a duplicate and ships nothing"
    ]


def test_a_rejected_orders_log_names_the_order_and_the_reason(
    ledger: Ledger, order: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """register_order's log of a rejected order gives the order and every reason."""
    order["items"][1]["line_id"] = "1"
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.pipeline"), pytest.raises(OrderRejected):
        pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
    assert said(caplog) == [
        f"order {order['order_id']} rejected: order.items: duplicate line_id '1'"
    ]


def test_a_shipped_lines_log_names_the_shipment_and_the_requests(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """ship_item's log says which shipment the line became after how many requests."""
    pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.pipeline"):
        result = ship(ledger, client, order, 0)
    assert said(caplog)[-1] == (
        f"line {order['order_id']}:1 shipped as {result['shipment_id']} after 1 request(s)"
    )


def test_a_line_found_at_the_warehouse_is_logged_found_and_replayed(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Adopting a shipment made before says so twice: found, then shipped (replayed)."""
    created = ship_behind_the_ledgers_back(client, order)
    pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.pipeline"):
        ship(ledger, client, order, 0, try_number=2)
    assert said(caplog)[-2:] == [
        f"line {order['order_id']}:1 found at the warehouse as {created}",
        f"line {order['order_id']}:1 shipped as {created} after 0 request(s) (replayed)",
    ]


def test_a_line_already_shipped_is_logged_with_its_shipment(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A re-run of a shipped line logs the shipment the ledger holds."""
    first = ship(ledger, client, order, 0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.pipeline"):
        ship(ledger, client, order, 0, try_number=2)
    assert said(caplog)[-1] == (
        f"line {order['order_id']}:1 already shipped as {first['shipment_id']}"
    )


def test_a_cancelled_line_is_logged_not_posted(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A try of a line an operator cancelled logs that it posts nothing."""
    pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
    ledger.record_failed(
        order_id=order["order_id"], line_id="1", try_number=1, requests=1, error="503"
    )
    ledger.amend_line(
        order_id=order["order_id"], line_id="1", action=Amendment.CANCEL, actor="ada", reason="r"
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.pipeline"):
        ship(ledger, client, order, 0, try_number=2)
    assert said(caplog)[-1] == (
        f"line {order['order_id']}:1 was cancelled by an operator: not posted"
    )


def test_a_fixed_line_is_logged_with_its_new_and_old_content(
    ledger: Ledger, client: WarehouseClient, order: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A try of a line an operator fixed logs what it ships now and what the run asked for."""
    pipeline.register(ledger, order, run_id=f"order-{order['order_id']}")
    ledger.record_failed(
        order_id=order["order_id"], line_id="1", try_number=1, requests=1, error="422"
    )
    ledger.amend_line(
        order_id=order["order_id"],
        line_id="1",
        action=Amendment.FIX,
        actor="ada",
        reason="r",
        sku="MUG-BLUE",
        quantity=3,
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.pipeline"):
        ship(ledger, client, order, 0, try_number=2)
    assert (
        f"line {order['order_id']}:1 was fixed by an operator: MUG-BLUE x3 (was MUG-RED x2)"
        in said(caplog)
    )
