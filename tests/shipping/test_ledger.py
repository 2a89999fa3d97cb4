"""Tests for the ledger, each run on SQLite and on PostgreSQL."""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shipping.errors import LineFenced
from shipping.ledger import (
    Amendment,
    AmendmentRefused,
    Finalization,
    Ledger,
    LedgerError,
    LineState,
    OrderConflict,
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    OrderState,
    RunRole,
    ShipmentMismatch,
    create_schema,
    engine_from_url,
    line_amendments,
    line_tries,
    order_lines,
    order_runs,
    orders,
)
from shipping.order import Order, OrderLine, ShipTo, idempotency_key
from shipping.shipment import Shipment

SHIP_TO = ShipTo(
    name="Ada Lovelace", line1="1 Main St", city="Berlin", postal_code="10115", country="DE"
)


def shipped(
    line_id: str, shipment_id: str, *, sku: str = "MUG-RED", quantity: int = 2, revision: int = 0
) -> dict[str, Any]:
    """The ``shipment`` and ``revision`` arguments of ``record_shipped`` for a line of ORD-1."""
    shipment = Shipment(
        shipment_id=shipment_id,
        idempotency_key=idempotency_key("ORD-1", line_id, revision),
        order_id="ORD-1",
        line_id=line_id,
        sku=sku,
        quantity=quantity,
        ship_to=SHIP_TO.to_dict(),
        status="created",
    )
    return {"shipment": shipment, "revision": revision}


def make_order(*line_ids: str) -> Order:
    """Order ORD-1 with one line per id, in the given order."""
    return Order(
        order_id="ORD-1",
        customer_id="C-42",
        ship_to=SHIP_TO,
        items=tuple(OrderLine(line_id=lid, sku="MUG-RED", quantity=2) for lid in line_ids),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database, on each dialect."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def ledger_url(database_url: str) -> str:
    """URL of a database with the ledger's schema and no rows."""
    engine = sa.create_engine(database_url)
    create_schema(engine)
    engine.dispose()
    return database_url


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """A ledger on an empty database, using the database's clock."""
    ledger = Ledger.from_url(ledger_url)
    yield ledger
    ledger.dispose()


class StepClock:
    """A clock that moves one minute forward on every reading."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def snapshot(ledger: Ledger) -> dict[str, list[Any]]:
    """Every row of every ledger table, timestamps included, in a stable order."""
    with ledger.engine.connect() as conn:
        return {
            table.name: [
                tuple(row) for row in conn.execute(sa.select(table).order_by(*table.primary_key))
            ]
            for table in (orders, order_lines, line_tries)
        }


def ship_all(ledger: Ledger, order: Order) -> None:
    """Record every line of ``order`` as shipped in try 1."""
    for line in order.items:
        ledger.record_shipped(
            order_id=order.order_id,
            line_id=line.line_id,
            try_number=1,
            requests=1,
            **shipped(line.line_id, f"shp-{line.line_id}"),
        )


def line_state(
    ledger: Ledger, order_id: str, line_id: str
) -> tuple[LineState, int, str | None, str | None]:
    """State, attempts, shipment id and last error of one line."""
    status = ledger.get_order(order_id)
    assert status is not None
    (line,) = (line for line in status.lines if line.line_id == line_id)
    return line.state, line.attempts, line.shipment_id, line.last_error


def test_create_schema_is_idempotent(ledger_url: str) -> None:
    """Creating the schema on a database that has it already changes nothing."""
    engine = sa.create_engine(ledger_url)
    create_schema(engine)
    create_schema(engine)
    assert set(sa.inspect(engine).get_table_names()) >= {"orders", "order_lines", "line_tries"}
    engine.dispose()


def test_concurrent_create_schema_creates_the_tables_once(database_url: str) -> None:
    """Several processes creating the schema at once all succeed."""
    callers = 4
    barrier = threading.Barrier(callers)
    engines = [engine_from_url(database_url) for _ in range(callers)]

    def create(engine: sa.Engine) -> None:
        barrier.wait()
        create_schema(engine)

    with ThreadPoolExecutor(max_workers=callers) as pool:
        list(pool.map(create, engines))
    tables = set(sa.inspect(engines[0]).get_table_names())
    for engine in engines:
        engine.dispose()
    assert tables == {
        "orders",
        "order_lines",
        "line_tries",
        "order_runs",
        "line_amendments",
        "ledger_alembic_version",
    }


def test_register_returns_the_lines_and_stores_them_in_order(ledger: Ledger) -> None:
    """A new order is RECEIVED with PENDING lines, kept in the order they were given."""
    order = make_order("10", "2", "1")
    assert ledger.register_order(order).lines == list(order.items)
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert status.state is OrderState.RECEIVED
    assert [(line.line_id, line.state, line.attempts) for line in status.lines] == [
        ("10", LineState.PENDING, 0),
        ("2", LineState.PENDING, 0),
        ("1", LineState.PENDING, 0),
    ]


def test_repeated_register_changes_nothing(ledger: Ledger) -> None:
    """Registering the same order again leaves every row as it was, timestamps included."""
    order = make_order("1", "2")
    ledger.register_order(order)
    before = snapshot(ledger)
    assert ledger.register_order(order).lines == list(order.items)
    assert snapshot(ledger) == before


def test_register_never_resets_a_shipped_order(ledger: Ledger) -> None:
    """Registering a shipped order again keeps the order and its lines SHIPPED."""
    order = make_order("1", "2")
    ledger.register_order(order)
    ship_all(ledger, order)
    ledger.finalize_order("ORD-1")
    before = snapshot(ledger)
    ledger.register_order(order)
    assert snapshot(ledger) == before


def test_register_with_other_content_raises_conflict_and_changes_nothing(ledger: Ledger) -> None:
    """The same order_id with different content is refused and nothing is written."""
    ledger.register_order(make_order("1", "2"))
    before = snapshot(ledger)
    with pytest.raises(OrderConflict, match="ORD-1"):
        ledger.register_order(make_order("1", "2", "3"))
    assert snapshot(ledger) == before


def test_reject_stores_a_rejected_order_without_lines(ledger: Ledger) -> None:
    """A rejected order is REJECTED with its reason and no lines."""
    ledger.reject_order(
        order_id="ORD-1", customer_id="C-42", reason="duplicate line_id '1'", content_hash="h"
    )
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert (status.state, status.reason, status.lines) == (
        OrderState.REJECTED,
        "duplicate line_id '1'",
        (),
    )


def test_repeated_reject_changes_nothing(ledger: Ledger) -> None:
    """Rejecting the same order again keeps the first record as it was."""
    ledger.reject_order(order_id="ORD-1", customer_id="C-42", reason="first", content_hash="h")
    before = snapshot(ledger)
    ledger.reject_order(order_id="ORD-1", customer_id="C-42", reason="second", content_hash="h")
    assert snapshot(ledger) == before


def test_reject_then_register_raises_rejected(ledger: Ledger) -> None:
    """A rejected order stays rejected when registered with the same content."""
    order = make_order("1")
    ledger.reject_order(
        order_id="ORD-1", customer_id="C-42", reason="bad", content_hash=order.content_hash()
    )
    with pytest.raises(OrderRejected, match="bad"):
        ledger.register_order(order)
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert (status.state, status.lines) == (OrderState.REJECTED, ())


def test_reject_never_overrides_a_shipped_order(ledger: Ledger) -> None:
    """Rejecting an order that shipped is refused and the order stays SHIPPED."""
    order = make_order("1")
    ledger.register_order(order)
    ship_all(ledger, order)
    ledger.finalize_order("ORD-1")
    before = snapshot(ledger)
    with pytest.raises(OrderConflict, match="SHIPPED"):
        ledger.reject_order(
            order_id="ORD-1", customer_id="C-42", reason="late", content_hash=order.content_hash()
        )
    assert snapshot(ledger) == before


def test_record_shipped_sets_the_shipment_and_moves_the_order_to_shipping(ledger: Ledger) -> None:
    """A shipped line gets its shipment id and the order becomes SHIPPING."""
    ledger.register_order(make_order("1", "2"))
    line = ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=1, requests=1, **shipped("1", "shp-1")
    )
    assert (line.state, line.attempts, line.shipment_id) == (LineState.SHIPPED, 1, "shp-1")
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert status.state is OrderState.SHIPPING


def test_record_shipped_twice_changes_nothing(ledger: Ledger) -> None:
    """Recording the same try's shipment again leaves every row as it was."""
    ledger.register_order(make_order("1"))
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=1, requests=3, **shipped("1", "shp-1")
    )
    before = snapshot(ledger)
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=1, requests=3, **shipped("1", "shp-1")
    )
    assert snapshot(ledger) == before
    assert line_state(ledger, "ORD-1", "1") == (LineState.SHIPPED, 3, "shp-1", None)


def test_attempts_sum_the_requests_of_each_try_once(ledger: Ledger) -> None:
    """Attempts add the requests of every try, and a try recorded twice counts once."""
    ledger.register_order(make_order("1"))
    ledger.record_failed(order_id="ORD-1", line_id="1", try_number=1, requests=4, error="503")
    ledger.record_failed(order_id="ORD-1", line_id="1", try_number=1, requests=4, error="503")
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=2, requests=2, **shipped("1", "shp-1")
    )
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=2, requests=2, **shipped("1", "shp-1")
    )
    assert line_state(ledger, "ORD-1", "1") == (LineState.SHIPPED, 6, "shp-1", "503")


def test_record_failed_sets_failed_with_the_last_error(ledger: Ledger) -> None:
    """A failed try marks the line FAILED with its error and the order SHIPPING."""
    ledger.register_order(make_order("1"))
    ledger.record_failed(
        order_id="ORD-1", line_id="1", try_number=1, requests=1, error="422 refused SKU"
    )
    assert line_state(ledger, "ORD-1", "1") == (LineState.FAILED, 1, None, "422 refused SKU")
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert status.state is OrderState.SHIPPING


def test_late_failure_never_downgrades_a_shipped_line(ledger: Ledger) -> None:
    """A failure recorded after the shipment keeps the line SHIPPED but counts its requests."""
    ledger.register_order(make_order("1"))
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=1, requests=1, **shipped("1", "shp-1")
    )
    line = ledger.record_failed(
        order_id="ORD-1", line_id="1", try_number=2, requests=2, error="timeout"
    )
    assert (line.state, line.attempts, line.shipment_id, line.last_error) == (
        LineState.SHIPPED,
        3,
        "shp-1",
        None,
    )


def test_other_shipment_id_for_a_shipped_line_raises_and_changes_nothing(ledger: Ledger) -> None:
    """A second shipment id for a shipped line is refused and nothing is recorded."""
    ledger.register_order(make_order("1"))
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=1, requests=1, **shipped("1", "shp-1")
    )
    before = snapshot(ledger)
    with pytest.raises(ShipmentMismatch, match="shp-2"):
        ledger.record_shipped(
            order_id="ORD-1", line_id="1", try_number=2, requests=1, **shipped("1", "shp-2")
        )
    assert snapshot(ledger) == before


@pytest.mark.parametrize(
    ("method", "outcome"),
    [("record_shipped", shipped("9", "shp-9")), ("record_failed", {"error": "503"})],
)
def test_recording_an_unknown_line_raises_not_found(
    ledger: Ledger, method: str, outcome: dict[str, str]
) -> None:
    """Recording a try of a line the ledger does not hold is refused."""
    ledger.register_order(make_order("1"))
    record = getattr(ledger, method)
    with pytest.raises(OrderNotFound, match="'9'"):
        record(order_id="ORD-1", line_id="9", try_number=1, requests=1, **outcome)


def test_finalize_transitions_exactly_once(ledger: Ledger) -> None:
    """The first finalize makes the order SHIPPED; the next one reports no transition."""
    order = make_order("1", "2")
    ledger.register_order(order)
    ship_all(ledger, order)
    first = ledger.finalize_order("ORD-1")
    second = ledger.finalize_order("ORD-1")
    assert (first.transitioned, second.transitioned) == (True, False)
    assert first.summary.state is second.summary.state is OrderState.SHIPPED
    assert first.summary == second.summary


def test_finalize_stamps_shipped_at_once_from_the_clock(ledger_url: str) -> None:
    """shipped_at comes from the injected clock and a repeated finalize keeps it."""
    clock = StepClock()
    ledger = Ledger.from_url(ledger_url, clock=clock)
    order = make_order("1")
    ledger.register_order(order)
    ship_all(ledger, order)
    first = ledger.finalize_order("ORD-1")
    ledger.finalize_order("ORD-1")
    status = ledger.get_order("ORD-1")
    ledger.dispose()
    assert status is not None
    assert first.summary.shipped_at is not None
    assert first.summary.shipped_at < clock.now
    assert status.shipped_at == first.summary.shipped_at


def test_finalize_incomplete_raises_naming_the_lines_not_shipped(ledger: Ledger) -> None:
    """Finalizing with lines not shipped raises with each of them and changes nothing."""
    ledger.register_order(make_order("1", "2", "3"))
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=1, requests=1, **shipped("1", "shp-1")
    )
    ledger.record_failed(order_id="ORD-1", line_id="3", try_number=1, requests=1, error="503")
    before = snapshot(ledger)
    with pytest.raises(OrderIncomplete, match="lines 2 \\(PENDING\\), 3 \\(FAILED\\)") as raised:
        ledger.finalize_order("ORD-1")
    assert raised.value.missing == {"2": LineState.PENDING, "3": LineState.FAILED}
    assert snapshot(ledger) == before


def test_finalize_unknown_order_raises_not_found(ledger: Ledger) -> None:
    """Finalizing an order the ledger does not hold is refused."""
    with pytest.raises(OrderNotFound, match="ORD-404"):
        ledger.finalize_order("ORD-404")


def test_finalize_rejected_order_raises_rejected(ledger: Ledger) -> None:
    """A rejected order (which has no lines) is never finalized."""
    ledger.reject_order(order_id="ORD-1", customer_id="C-42", reason="bad", content_hash="h")
    with pytest.raises(OrderRejected):
        ledger.finalize_order("ORD-1")


def test_concurrent_finalize_transitions_exactly_once(ledger: Ledger) -> None:
    """Of several finalize calls racing in threads, exactly one makes the order SHIPPED."""
    order = make_order("1", "2")
    ledger.register_order(order)
    ship_all(ledger, order)
    callers = 8
    barrier = threading.Barrier(callers)

    def finalize() -> Finalization:
        barrier.wait()
        return ledger.finalize_order("ORD-1")

    with ThreadPoolExecutor(max_workers=callers) as pool:
        results = list(pool.map(lambda _: finalize(), range(callers)))
    assert sum(result.transitioned for result in results) == 1
    assert {result.summary.state for result in results} == {OrderState.SHIPPED}


def test_get_order_json_has_exactly_the_status_contract(ledger: Ledger) -> None:
    """The status JSON has exactly the keys and values of the CLI contract."""
    ledger.register_order(make_order("1", "2"))
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=1, requests=2, **shipped("1", "shp-1")
    )
    ledger.record_failed(
        order_id="ORD-1",
        line_id="2",
        try_number=1,
        requests=1,
        error="WarehouseServerError: 503",
        error_class="WarehouseServerError",
        error_final=False,
    )
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert status.to_json() == {
        "order_id": "ORD-1",
        "state": "SHIPPING",
        "reason": None,
        "run_id": "order-ORD-1",
        "other_runs": [],
        "cancelled_lines": 0,
        "lines": [
            {
                "line_id": "1",
                "sku": "MUG-RED",
                "quantity": 2,
                "state": "SHIPPED",
                "attempts": 2,
                "shipment_id": "shp-1",
                "last_error": None,
                "error_class": None,
                "error_final": None,
                "revision": 0,
                "idempotency_key": "ORD-1:1",
                "void_pending": None,
            },
            {
                "line_id": "2",
                "sku": "MUG-RED",
                "quantity": 2,
                "state": "FAILED",
                "attempts": 1,
                "shipment_id": None,
                "last_error": "WarehouseServerError: 503",
                "error_class": "WarehouseServerError",
                "error_final": False,
                "revision": 0,
                "idempotency_key": "ORD-1:2",
                "void_pending": None,
            },
        ],
        "amendments": [],
    }


def test_shipped_line_gives_the_shipment_id_only_once_shipped(ledger: Ledger) -> None:
    """A pending or failed line has no shipment id; a shipped line gives its own."""
    ledger.register_order(make_order("1"))
    pending = ledger.shipped_line(order_id="ORD-1", line_id="1")
    ledger.record_failed(order_id="ORD-1", line_id="1", try_number=1, requests=1, error="503")
    failed = ledger.shipped_line(order_id="ORD-1", line_id="1")
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=2, requests=1, **shipped("1", "shp-1")
    )
    assert (pending, failed, ledger.shipped_line(order_id="ORD-1", line_id="1")) == (
        None,
        None,
        "shp-1",
    )


def test_shipped_line_of_an_unknown_line_raises_not_found(ledger: Ledger) -> None:
    """Asking for a line the ledger does not hold is refused."""
    with pytest.raises(OrderNotFound):
        ledger.shipped_line(order_id="ORD-404", line_id="1")


def test_get_unknown_order_returns_none(ledger: Ledger) -> None:
    """Looking up an order the ledger does not hold gives None."""
    assert ledger.get_order("ORD-404") is None


# Each ledger error's class and constructor arguments: the tests build the error in their
# body, not at collection, so what its constructor does is part of the test.
LEDGER_ERRORS: list[tuple[type[LedgerError], tuple[Any, ...]]] = [
    (OrderConflict, ("ORD-1", "already registered with different content")),
    (OrderRejected, ("ORD-1", "bad")),
    (OrderNotFound, ("ORD-1", "2")),
    (OrderIncomplete, ("ORD-1", {"2": LineState.FAILED})),
    (ShipmentMismatch, ("ORD-1", "2", "shp-1", "shp-2")),
    (AmendmentRefused, ("ORD-1", "2", "the line is SHIPPED")),
    (LineFenced, ("ORD-1", "2", "the line was amended")),
]
LEDGER_ERROR_IDS = [cls.__name__ for cls, _ in LEDGER_ERRORS]


@pytest.mark.parametrize(("cls", "args"), LEDGER_ERRORS, ids=LEDGER_ERROR_IDS)
def test_ledger_errors_survive_pickling(cls: type[LedgerError], args: tuple[Any, ...]) -> None:
    """Every ledger error pickles with its message and attributes intact."""
    error = cls(*args)
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), vars(copy)) == (type(error), str(error), vars(error))


@pytest.mark.parametrize(("cls", "args"), LEDGER_ERRORS, ids=LEDGER_ERROR_IDS)
def test_a_ledger_error_rebuilt_from_its_args_is_the_same_error(
    cls: type[LedgerError], args: tuple[Any, ...]
) -> None:
    """Its args are its constructor's arguments, so copy and pickle rebuild it whole."""
    error = cls(*args)
    copy = cls(*error.args)
    assert (str(copy), vars(copy)) == (str(error), vars(error))


def test_a_second_run_of_the_same_order_is_a_duplicate_that_ships_nothing(ledger: Ledger) -> None:
    """Another run id with the same content gets no lines; the owner and the duplicate show."""
    order = make_order("1", "2")
    ledger.register_order(order, run_id="order-ORD-1")
    again = ledger.register_order(order, run_id="manual__retry")
    assert (again.lines, again.owner_run_id, again.duplicate) == ([], "order-ORD-1", True)
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert status.run_id == "order-ORD-1"
    assert [(r.run_id, r.role) for r in status.other_runs] == [("manual__retry", RunRole.DUPLICATE)]
    assert "order-ORD-1" in (status.other_runs[0].reason or "")


def test_the_owner_run_registers_again_with_all_its_lines(ledger: Ledger) -> None:
    """A retry or clear of the owner run is not a duplicate."""
    order = make_order("1", "2")
    ledger.register_order(order, run_id="run-a")
    again = ledger.register_order(order, run_id="run-a")
    assert (again.lines, again.duplicate) == (list(order.items), False)


def test_other_content_under_another_run_is_refused_and_recorded(ledger: Ledger) -> None:
    """The refused run and its reason are kept, though the registration raises."""
    ledger.register_order(make_order("1", "2"), run_id="run-a")
    with pytest.raises(OrderConflict, match="run-a"):
        ledger.register_order(make_order("1", "2", "3"), run_id="run-b")
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert [(r.run_id, r.role) for r in status.other_runs] == [("run-b", RunRole.REFUSED)]
    assert "different content" in (status.other_runs[0].reason or "")
    assert [line.line_id for line in status.lines] == ["1", "2"]


def cancel_line(ledger: Ledger, line_id: str = "1") -> None:
    """Cancel line ``line_id`` of ORD-1 and confirm the void of its key (nothing shipped)."""
    line = ledger.amend_line(
        order_id="ORD-1", line_id=line_id, action=Amendment.CANCEL, actor="ada", reason="gone"
    )
    assert line.state is LineState.CANCELLING
    assert line.void_key is not None
    ledger.record_void(order_id="ORD-1", line_id=line_id, key=line.void_key, shipment_id=None)


def fail_line(ledger: Ledger, line_id: str = "1") -> None:
    """Record line ``line_id`` of ORD-1 as failed in try 1."""
    ledger.record_failed(
        order_id="ORD-1", line_id=line_id, try_number=1, requests=1, error="SkuRefused: no"
    )


def test_a_fix_changes_a_failed_lines_content_and_keeps_the_audit(ledger: Ledger) -> None:
    """A fix sets the new SKU; who, why, old and new values are kept and shown."""
    ledger.register_order(make_order("1", "2"))
    fail_line(ledger)
    line = ledger.amend_line(
        order_id="ORD-1",
        line_id="1",
        action=Amendment.FIX,
        actor="ada",
        reason="SKU renamed",
        sku="MUG-BLUE",
    )
    assert (line.sku, line.quantity, line.state) == ("MUG-BLUE", 2, LineState.FAILED)
    status = ledger.get_order("ORD-1")
    assert status is not None
    [amendment] = status.to_json()["amendments"]
    assert {k: amendment[k] for k in ("line_id", "action", "by", "reason", "old", "new")} == {
        "line_id": "1",
        "action": "FIX",
        "by": "ada",
        "reason": "SKU renamed",
        "old": {"sku": "MUG-RED", "quantity": 2},
        "new": {"sku": "MUG-BLUE", "quantity": 2},
    }


def test_a_cancelled_line_lets_the_order_finalize(ledger: Ledger) -> None:
    """Every line shipped or cancelled: the order is SHIPPED and counts its cancelled lines."""
    order = make_order("1", "2")
    ledger.register_order(order)
    ledger.record_shipped(
        order_id="ORD-1", line_id="2", try_number=1, requests=1, **shipped("2", "s")
    )
    fail_line(ledger)
    cancel_line(ledger)
    result = ledger.finalize_order("ORD-1")
    assert result.transitioned
    assert result.summary.to_json()["cancelled_lines"] == 1
    assert [line.state for line in result.summary.lines] == [
        LineState.CANCELLED,
        LineState.SHIPPED,
    ]


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        ("pending", {"action": Amendment.CANCEL}, "PENDING"),
        ("shipped", {"action": Amendment.CANCEL}, "SHIPPED as s-1"),
        ("failed", {"action": Amendment.FIX}, "needs a new SKU or quantity"),
        ("failed", {"action": Amendment.FIX, "sku": "MUG-RED"}, "changes nothing"),
        ("failed", {"action": Amendment.CANCEL, "sku": "X"}, "takes no SKU"),
        ("failed", {"action": Amendment.CANCEL, "reason": " "}, "a reason is required"),
        ("cancelled", {"action": Amendment.CANCEL}, "CANCELLED"),
    ],
)
def test_an_amendment_is_refused_unless_the_line_failed_without_a_shipment(
    ledger: Ledger, setup: str, kwargs: dict[str, Any], message: str
) -> None:
    """Only a FAILED line with no shipment can be fixed or cancelled; nothing changes else."""
    ledger.register_order(make_order("1"))
    if setup == "shipped":
        ledger.record_shipped(
            order_id="ORD-1", line_id="1", try_number=1, requests=1, **shipped("1", "s-1")
        )
    if setup in ("failed", "cancelled"):
        fail_line(ledger)
    if setup == "cancelled":
        cancel_line(ledger)
    before = snapshot(ledger)
    with pytest.raises(AmendmentRefused, match=message):
        ledger.amend_line(
            order_id="ORD-1", line_id="1", **{"actor": "ada", "reason": "why", **kwargs}
        )
    assert snapshot(ledger) == before


def test_a_late_failure_never_reopens_a_cancelled_line(ledger: Ledger) -> None:
    """A failure recorded after a cancel keeps the line CANCELLED."""
    ledger.register_order(make_order("1"))
    fail_line(ledger)
    cancel_line(ledger)
    line = ledger.record_failed(
        order_id="ORD-1", line_id="1", try_number=2, requests=1, error="late"
    )
    assert line.state is LineState.CANCELLED


# Two orders that share line ids: every write names its order, so order A's line 1 is
# never order B's line 1 (a query without its order condition would touch both).


def make_order_as(order_id: str, *line_ids: str) -> Order:
    """An order with one line per id, each MUG-RED x2, under ``order_id``."""
    return Order(
        order_id=order_id,
        customer_id="C-42",
        ship_to=SHIP_TO,
        items=tuple(OrderLine(line_id=lid, sku="MUG-RED", quantity=2) for lid in line_ids),
    )


def shipped_as(order_id: str, line_id: str, shipment_id: str) -> dict[str, Any]:
    """The ``shipment`` and ``revision`` arguments of ``record_shipped`` for ``order_id``."""
    shipment = Shipment(
        shipment_id=shipment_id,
        idempotency_key=idempotency_key(order_id, line_id),
        order_id=order_id,
        line_id=line_id,
        sku="MUG-RED",
        quantity=2,
        ship_to=SHIP_TO.to_dict(),
        status="created",
    )
    return {"shipment": shipment, "revision": 0}


def rows_of(ledger: Ledger, order_id: str) -> dict[str, list[Any]]:
    """Every row of ``order_id`` in every ledger table, timestamps included."""
    with ledger.engine.connect() as conn:
        return {
            table.name: [
                tuple(row)
                for row in conn.execute(
                    sa.select(table)
                    .where(table.c.order_id == order_id)
                    .order_by(*table.primary_key)
                )
            ]
            for table in (orders, order_lines, line_tries, line_amendments, order_runs)
        }


def ship_line_1(ledger: Ledger) -> None:
    """ORD-A's line 1 is recorded shipped."""
    ledger.record_shipped(
        order_id="ORD-A", line_id="1", try_number=1, requests=1, **shipped_as("ORD-A", "1", "s-a1")
    )


def fail_line_1(ledger: Ledger) -> None:
    """ORD-A's line 1 is recorded failed."""
    ledger.record_failed(
        order_id="ORD-A", line_id="1", try_number=1, requests=1, error="SkuRefused: no"
    )


def finalize_a(ledger: Ledger) -> None:
    """ORD-A's line 2 is shipped too, and ORD-A is finalized."""
    ledger.record_shipped(
        order_id="ORD-A", line_id="2", try_number=1, requests=1, **shipped_as("ORD-A", "2", "s-a2")
    )
    ledger.finalize_order("ORD-A")


def fix_line_1(ledger: Ledger) -> None:
    """ORD-A's failed line 1 is fixed to MUG-BLUE."""
    ledger.amend_line(
        order_id="ORD-A", line_id="1", action=Amendment.FIX, actor="ada", reason="r", sku="MUG-BLUE"
    )


def cancel_line_1(ledger: Ledger) -> None:
    """ORD-A's failed line 1 is cancelled (its void still pending)."""
    ledger.amend_line(
        order_id="ORD-A", line_id="1", action=Amendment.CANCEL, actor="ada", reason="r"
    )


def void_line_1(ledger: Ledger) -> None:
    """The void of ORD-A's line 1's key is confirmed."""
    ledger.record_void(
        order_id="ORD-A", line_id="1", key=idempotency_key("ORD-A", "1"), shipment_id=None
    )


@pytest.mark.parametrize(
    ("setup", "write"),
    [
        ([], ship_line_1),
        ([], fail_line_1),
        ([ship_line_1], finalize_a),
        ([fail_line_1], fix_line_1),
        ([fail_line_1], cancel_line_1),
        ([fail_line_1, cancel_line_1], void_line_1),
    ],
    ids=["record_shipped", "record_failed", "finalize", "fix", "cancel", "record_void"],
)
def test_a_write_to_one_order_leaves_another_with_the_same_line_ids_alone(
    ledger: Ledger, setup: list[Any], write: Any
) -> None:
    """Recording, finalizing or amending ORD-A changes no row of ORD-B (lines 1 and 2 too)."""
    ledger.register_order(make_order_as("ORD-A", "1", "2"))
    ledger.register_order(make_order_as("ORD-B", "1", "2"))
    for step in setup:
        step(ledger)
    before = rows_of(ledger, "ORD-B")
    write(ledger)
    assert rows_of(ledger, "ORD-B") == before


def test_attempts_count_only_the_tries_of_the_lines_own_order(ledger: Ledger) -> None:
    """ORD-B's requests for its line 1 do not count in ORD-A's line 1's attempts."""
    ledger.register_order(make_order_as("ORD-A", "1"))
    ledger.register_order(make_order_as("ORD-B", "1"))
    ledger.record_failed(order_id="ORD-B", line_id="1", try_number=1, requests=5, error="503")
    line = ledger.record_failed(
        order_id="ORD-A", line_id="1", try_number=1, requests=1, error="503"
    )
    assert line.attempts == 1


def test_finalize_reads_only_the_lines_of_its_own_order(ledger: Ledger) -> None:
    """ORD-A finalizes once its lines are shipped, though ORD-B's line 1 is still pending."""
    ledger.register_order(make_order_as("ORD-A", "1"))
    ledger.register_order(make_order_as("ORD-B", "1"))
    ship_line_1(ledger)
    assert ledger.finalize_order("ORD-A").transitioned


def test_finalize_names_only_its_own_orders_missing_lines(ledger: Ledger) -> None:
    """ORD-B with a pending line is incomplete, though ORD-A's line 1 is shipped."""
    ledger.register_order(make_order_as("ORD-A", "1"))
    ledger.register_order(make_order_as("ORD-B", "1"))
    ship_line_1(ledger)
    with pytest.raises(OrderIncomplete, match="ORD-B"):
        ledger.finalize_order("ORD-B")


def test_reads_of_a_line_see_only_its_own_order(ledger: Ledger) -> None:
    """ORD-A's shipped line 1 is not ORD-B's: ORD-B's line 1 stays pending, unshipped."""
    ledger.register_order(make_order_as("ORD-A", "1"))
    ledger.register_order(make_order_as("ORD-B", "1"))
    ship_line_1(ledger)
    line = ledger.get_line(order_id="ORD-B", line_id="1")
    assert (line.state, ledger.shipped_line(order_id="ORD-B", line_id="1")) == (
        LineState.PENDING,
        None,
    )


def test_an_orders_status_holds_only_its_own_lines_amendments_and_runs(ledger: Ledger) -> None:
    """ORD-B's status shows its own line 1, and none of ORD-A's amendments or runs."""
    ledger.register_order(make_order_as("ORD-A", "1"), run_id="run-a")
    ledger.register_order(make_order_as("ORD-A", "1"), run_id="run-a-again")
    ledger.register_order(make_order_as("ORD-B", "1"), run_id="run-b")
    fail_line_1(ledger)
    cancel_line_1(ledger)
    status = ledger.get_order("ORD-B")
    assert status is not None
    assert (
        [(line.line_id, line.state) for line in status.lines],
        status.amendments,
        status.other_runs,
    ) == ([("1", LineState.PENDING)], (), ())


@pytest.mark.parametrize(("run_id", "owner"), [(None, "order-ORD-1"), ("run-7", "run-7")])
def test_a_rejected_order_is_owned_by_the_run_that_presented_it(
    ledger: Ledger, run_id: str | None, owner: str
) -> None:
    """The rejecting run owns the order; without one, the order's own run id does."""
    ledger.reject_order(
        order_id="ORD-1", customer_id="C-42", reason="bad", content_hash="h", run_id=run_id
    )
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert (status.run_id, status.other_runs) == (owner, ())


def test_rejecting_other_content_under_a_rejected_id_is_a_conflict_naming_the_owner(
    ledger: Ledger,
) -> None:
    """Another order under a rejected order_id is refused, naming the owner run; it is kept."""
    ledger.reject_order(
        order_id="ORD-1", customer_id="C-42", reason="bad", content_hash="h", run_id="run-1"
    )
    with pytest.raises(OrderConflict, match="run 'run-1' with different content") as raised:
        ledger.reject_order(
            order_id="ORD-1", customer_id="C-42", reason="bad", content_hash="x", run_id="run-2"
        )
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert raised.value.order_id == "ORD-1"
    assert [(r.run_id, r.role) for r in status.other_runs] == [("run-2", RunRole.REFUSED)]


def test_an_order_recorded_before_runs_is_adopted_by_the_first_run_back(ledger: Ledger) -> None:
    """An order without an owner run is owned by the next run that registers it, alone."""
    ledger.register_order(make_order_as("ORD-A", "1"), run_id="run-a")
    ledger.register_order(make_order_as("ORD-B", "1"), run_id="run-b")
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(orders).values(owner_run_id=None))
    ledger.register_order(make_order_as("ORD-A", "1"), run_id="run-new")
    owners = [ledger.get_order(order_id) for order_id in ("ORD-A", "ORD-B")]
    assert [status.run_id if status else "?" for status in owners] == ["run-new", None]


def test_order_ids_lists_every_order_oldest_first(ledger_url: str) -> None:
    """Orders come in the order they were created, whatever their ids."""
    ledger = Ledger.from_url(ledger_url, clock=StepClock())
    for order_id in ("ORD-C", "ORD-A", "ORD-B"):
        ledger.register_order(make_order_as(order_id, "1"))
    assert ledger.order_ids() == ["ORD-C", "ORD-A", "ORD-B"]
    ledger.dispose()


def test_order_ids_created_at_the_same_time_come_by_id(ledger_url: str) -> None:
    """Orders with one creation time are listed by id."""
    at = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
    ledger = Ledger.from_url(ledger_url, clock=lambda: at)
    for order_id in ("ORD-C", "ORD-A", "ORD-B"):
        ledger.register_order(make_order_as(order_id, "1"))
    assert ledger.order_ids() == ["ORD-A", "ORD-B", "ORD-C"]
    ledger.dispose()


@pytest.mark.parametrize(
    ("setup", "key", "message"),
    [
        ("shipped", "ORD-1:1", "holds the line's recorded shipment s-1"),
        ("cancelled", "ORD-1:1", "was voided when the line was cancelled"),
        ("failed", "ORD-1:1#1", "is not a key of this line"),
        ("failed", "ORD-2:1", "is not a key of this line"),
    ],
)
def test_a_void_is_refused_for_a_key_it_must_not_void(
    ledger: Ledger, setup: str, key: str, message: str
) -> None:
    """Reconcile may not void a recorded shipment's key, a cancelled key, or a foreign key."""
    ledger.register_order(make_order("1"))
    if setup == "shipped":
        ledger.record_shipped(
            order_id="ORD-1", line_id="1", try_number=1, requests=1, **shipped("1", "s-1")
        )
    else:
        fail_line(ledger)
    if setup == "cancelled":
        cancel_line(ledger)
    with pytest.raises(AmendmentRefused, match=message):
        ledger.amend_line(
            order_id="ORD-1",
            line_id="1",
            action=Amendment.VOID,
            actor="reconcile",
            reason="r",
            void_key=key,
        )


def test_a_void_of_the_current_key_moves_the_line_to_its_next_key(ledger: Ledger) -> None:
    """Voiding a failed line's own key gives it revision 1 and the key ``#1``."""
    ledger.register_order(make_order("1"))
    fail_line(ledger)
    line = ledger.amend_line(
        order_id="ORD-1",
        line_id="1",
        action=Amendment.VOID,
        actor="reconcile",
        reason="r",
        void_key="ORD-1:1",
    )
    assert (line.revision, line.idempotency_key, line.void_key) == (1, "ORD-1:1#1", "ORD-1:1")


def test_a_confirmed_void_is_stamped_on_its_amendment(ledger: Ledger) -> None:
    """The amendment whose key the warehouse voided records when, and which shipment."""
    ledger.register_order(make_order("1"))
    fail_line(ledger)
    ledger.amend_line(
        order_id="ORD-1", line_id="1", action=Amendment.CANCEL, actor="ada", reason="gone"
    )
    ledger.record_void(order_id="ORD-1", line_id="1", key="ORD-1:1", shipment_id="s-9")
    status = ledger.get_order("ORD-1")
    assert status is not None
    [amendment] = status.amendments
    assert (amendment.voided_at is not None, amendment.voided_shipment_id) == (True, "s-9")


@pytest.mark.parametrize(
    ("setup", "kwargs"),
    [
        ("failed", {"action": Amendment.CANCEL, "reason": " "}),
        ("failed", {"action": Amendment.FIX}),
        ("failed", {"action": Amendment.CANCEL, "sku": "X"}),
        ("failed", {"action": Amendment.CANCEL, "void_key": "ORD-1:1"}),
        ("failed", {"action": Amendment.VOID, "void_key": "ORD-1:1#5"}),
        ("failed", {"action": Amendment.FIX, "sku": "MUG-RED"}),
        ("pending", {"action": Amendment.CANCEL}),
        ("void pending", {"action": Amendment.FIX, "sku": "MUG-BLUE"}),
        ("finalized", {"action": Amendment.CANCEL}),
    ],
)
def test_an_amendment_refusal_names_its_order_line_and_reason(
    ledger: Ledger, setup: str, kwargs: dict[str, Any]
) -> None:
    """Whatever refuses an amendment, the error says which line of which order, and why."""
    ledger.register_order(make_order("1", "2"))
    if setup in ("failed", "void pending"):
        fail_line(ledger)
    if setup == "void pending":
        ledger.amend_line(
            order_id="ORD-1", line_id="1", action=Amendment.CANCEL, actor="ada", reason="r"
        )
    if setup == "finalized":
        ship_all(ledger, make_order("1", "2"))
        ledger.finalize_order("ORD-1")
    with pytest.raises(AmendmentRefused) as raised:
        ledger.amend_line(
            order_id="ORD-1", line_id="1", **{"actor": "ada", "reason": "why", **kwargs}
        )
    refusal = raised.value
    assert (refusal.order_id, refusal.line_id, bool(refusal.reason)) == ("ORD-1", "1", True)
    assert str(refusal) == f"line '1' of order 'ORD-1': {refusal.reason}"


def test_a_late_failure_keeps_the_shipped_lines_last_error_as_it_was(ledger: Ledger) -> None:
    """The error of a try before the shipment stays the line's last error after a late one."""
    ledger.register_order(make_order("1"))
    ledger.record_failed(
        order_id="ORD-1",
        line_id="1",
        try_number=1,
        requests=1,
        error="WarehouseTimeout: lost",
        error_class="WarehouseTimeout",
        error_final=False,
    )
    ledger.record_shipped(
        order_id="ORD-1", line_id="1", try_number=2, requests=1, **shipped("1", "shp-1")
    )
    line = ledger.record_failed(
        order_id="ORD-1", line_id="1", try_number=3, requests=1, error="late", error_class="X"
    )
    assert (line.last_error, line.error_class, line.error_final) == (
        "WarehouseTimeout: lost",
        "WarehouseTimeout",
        False,
    )


def test_each_try_keeps_its_own_error(ledger: Ledger) -> None:
    """line_tries keeps the error of every failed try, the latest on the line."""
    ledger.register_order(make_order("1"))
    for try_number, error in ((1, "first"), (2, "second")):
        ledger.record_failed(
            order_id="ORD-1", line_id="1", try_number=try_number, requests=1, error=error
        )
    with ledger.engine.connect() as conn:
        errors = conn.execute(
            sa.select(line_tries.c.error).order_by(line_tries.c.try_number)
        ).scalars()
        assert list(errors) == ["first", "second"]


@pytest.mark.parametrize("setup", ["rejected", "incomplete"])
def test_a_refused_finalize_names_its_order(ledger: Ledger, setup: str) -> None:
    """OrderRejected and OrderIncomplete from finalize carry the order's id."""
    if setup == "rejected":
        ledger.reject_order(order_id="ORD-1", customer_id="C-42", reason="bad", content_hash="h")
    else:
        ledger.register_order(make_order("1"))
    with pytest.raises((OrderRejected, OrderIncomplete)) as raised:
        ledger.finalize_order("ORD-1")
    assert raised.value.order_id == "ORD-1"


def test_a_rejected_orders_finalize_says_why_it_was_rejected(ledger: Ledger) -> None:
    """Finalizing a rejected order repeats the rejection's reason."""
    ledger.reject_order(order_id="ORD-1", customer_id="C-42", reason="bad", content_hash="h")
    with pytest.raises(OrderRejected) as raised:
        ledger.finalize_order("ORD-1")
    assert raised.value.reason == "bad"


def test_finalize_names_missing_lines_in_the_orders_line_order(ledger: Ledger) -> None:
    """The missing lines come in the order the order lists them, not by id."""
    ledger.register_order(make_order("10", "2", "1"))
    with pytest.raises(OrderIncomplete) as raised:
        ledger.finalize_order("ORD-1")
    assert list(raised.value.missing) == ["10", "2", "1"]


def test_concurrent_tries_of_one_line_count_every_request(ledger: Ledger) -> None:
    """Tries of one line recorded at once (a zombie beside its retry) lose no request."""
    ledger.register_order(make_order("1"))
    callers = 8
    barrier = threading.Barrier(callers)

    def fail(try_number: int) -> None:
        barrier.wait()
        ledger.record_failed(
            order_id="ORD-1", line_id="1", try_number=try_number, requests=1, error="503"
        )

    with ThreadPoolExecutor(max_workers=callers) as pool:
        list(pool.map(fail, range(1, callers + 1)))
    assert ledger.get_line(order_id="ORD-1", line_id="1").attempts == callers


def test_a_run_refused_by_reject_order_is_recorded_with_the_refusal_as_its_reason(
    ledger: Ledger,
) -> None:
    """The refused run's record says why it was refused, in the refusal's own words."""
    ledger.reject_order(
        order_id="ORD-1", customer_id="C-42", reason="bad", content_hash="h", run_id="run-1"
    )
    with pytest.raises(OrderConflict):
        ledger.reject_order(
            order_id="ORD-1", customer_id="C-42", reason="bad", content_hash="x", run_id="run-2"
        )
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert [(r.run_id, r.reason) for r in status.other_runs] == [
        ("run-2", "order 'ORD-1': already recorded by run 'run-1' with different content")
    ]


def test_the_rejecting_run_is_recorded_as_the_owner_with_the_rejections_reason(
    ledger: Ledger,
) -> None:
    """The run that presented a rejected order owns it, and its record keeps the reason."""
    ledger.reject_order(
        order_id="ORD-1", customer_id="C-42", reason="bad", content_hash="h", run_id="run-1"
    )
    with ledger.engine.connect() as conn:
        runs = conn.execute(
            sa.select(order_runs.c.run_id, order_runs.c.role, order_runs.c.reason)
        ).all()
    assert [tuple(r) for r in runs] == [("run-1", RunRole.OWNER, "bad")]


def test_a_rejected_order_recorded_before_runs_is_adopted_by_the_next_rejecting_run(
    ledger: Ledger,
) -> None:
    """A rejected order without an owner run is owned by the next run that presents it."""
    ledger.reject_order(order_id="ORD-A", customer_id="C", reason="bad", content_hash="h")
    ledger.reject_order(order_id="ORD-B", customer_id="C", reason="bad", content_hash="h")
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(orders).values(owner_run_id=None))
    ledger.reject_order(
        order_id="ORD-A", customer_id="C", reason="bad", content_hash="h", run_id="run-new"
    )
    owners = [ledger.get_order(order_id) for order_id in ("ORD-A", "ORD-B")]
    assert [status.run_id if status else "?" for status in owners] == ["run-new", None]


def test_rejecting_a_registered_order_recorded_before_runs_refuses_the_run(
    ledger: Ledger,
) -> None:
    """A registered order is never rejected, even by the run that adopts it: that run is
    recorded as refused, and the error names the order."""
    order = make_order("1")
    ledger.register_order(order, run_id="run-1")
    with ledger.engine.begin() as conn:
        conn.execute(sa.update(orders).values(owner_run_id=None))
    with pytest.raises(OrderConflict, match="already registered by run 'run-2'") as raised:
        ledger.reject_order(
            order_id="ORD-1",
            customer_id="C-42",
            reason="bad",
            content_hash=order.content_hash(),
            run_id="run-2",
        )
    status = ledger.get_order("ORD-1")
    assert status is not None
    assert raised.value.order_id == "ORD-1"
    assert [(r.run_id, r.role) for r in status.other_runs] == [("run-2", RunRole.REFUSED)]


def test_finalizing_stamps_the_orders_update_time_with_its_shipped_time(ledger_url: str) -> None:
    """The transition to SHIPPED is the order's last change: updated_at is shipped_at."""
    ledger = Ledger.from_url(ledger_url, clock=StepClock())
    order = make_order("1")
    ledger.register_order(order)
    ship_all(ledger, order)
    ledger.finalize_order("ORD-1")
    with ledger.engine.connect() as conn:
        row = conn.execute(sa.select(orders.c.shipped_at, orders.c.updated_at)).one()
    ledger.dispose()
    assert row.updated_at == row.shipped_at


def test_confirming_another_keys_void_leaves_a_pending_amendment_pending(ledger: Ledger) -> None:
    """A void confirmed for a key the amendment did not ask for stamps nothing on it."""
    ledger.register_order(make_order("1"))
    fail_line(ledger)
    ledger.amend_line(
        order_id="ORD-1", line_id="1", action=Amendment.CANCEL, actor="ada", reason="gone"
    )
    line = ledger.record_void(order_id="ORD-1", line_id="1", key="ORD-1:1#1", shipment_id=None)
    status = ledger.get_order("ORD-1")
    assert status is not None
    [amendment] = status.amendments
    assert (line.state, line.void_key, amendment.voided_at) == (
        LineState.CANCELLING,
        "ORD-1:1",
        None,
    )


def test_a_void_confirmed_twice_keeps_its_first_confirmation(ledger_url: str) -> None:
    """Recording a void again leaves the amendment's time and cancelled shipment as they were."""
    ledger = Ledger.from_url(ledger_url, clock=StepClock())
    ledger.register_order(make_order("1"))
    fail_line(ledger)
    ledger.amend_line(
        order_id="ORD-1", line_id="1", action=Amendment.CANCEL, actor="ada", reason="gone"
    )
    ledger.record_void(order_id="ORD-1", line_id="1", key="ORD-1:1", shipment_id="s-1")
    first = ledger.get_order("ORD-1")
    ledger.record_void(order_id="ORD-1", line_id="1", key="ORD-1:1", shipment_id="s-2")
    again = ledger.get_order("ORD-1")
    ledger.dispose()
    assert first is not None
    assert again is not None
    assert again.amendments == first.amendments
    assert first.amendments[0].voided_shipment_id == "s-1"


def test_shipped_line_of_an_unknown_line_names_the_order_and_the_line(ledger: Ledger) -> None:
    """The not-found error of shipped_line carries the order and the line looked for."""
    ledger.register_order(make_order("1"))
    with pytest.raises(OrderNotFound) as raised:
        ledger.shipped_line(order_id="ORD-1", line_id="9")
    assert (raised.value.order_id, raised.value.line_id) == ("ORD-1", "9")


def test_reconciliation_may_void_the_key_of_any_earlier_revision(ledger: Ledger) -> None:
    """After two fixes, the key of revision 1 is still the line's to void."""
    ledger.register_order(make_order("1"))
    fail_line(ledger)
    for sku in ("MUG-BLUE", "MUG-GREEN"):
        line = ledger.amend_line(
            order_id="ORD-1", line_id="1", action=Amendment.FIX, actor="a", reason="r", sku=sku
        )
        assert line.void_key is not None
        ledger.record_void(order_id="ORD-1", line_id="1", key=line.void_key, shipment_id=None)
    line = ledger.amend_line(
        order_id="ORD-1",
        line_id="1",
        action=Amendment.VOID,
        actor="reconcile",
        reason="r",
        void_key="ORD-1:1#1",
    )
    assert (line.revision, line.void_key) == (2, "ORD-1:1#1")


def test_finalize_names_missing_lines_in_line_order_after_an_update(ledger: Ledger) -> None:
    """A line written since registration keeps its place among the missing lines."""
    ledger.register_order(make_order("10", "2", "1"))
    fail_line(ledger, "10")
    with pytest.raises(OrderIncomplete) as raised:
        ledger.finalize_order("ORD-1")
    assert list(raised.value.missing) == ["10", "2", "1"]


def ledger_said(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the ledger wrote to the task log, message by message."""
    return [r.getMessage() for r in caplog.records if r.name == "shipping.ledger.repository"]


def test_registering_logs_the_order_once_then_that_nothing_changed(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """The first registration logs the line count; the owner's retry logs that it changed nothing."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.ledger.repository"):
        ledger.register_order(make_order("1", "2"))
        ledger.register_order(make_order("1", "2"))
    assert ledger_said(caplog) == [
        "order ORD-1 registered with 2 lines",
        "order ORD-1 was registered already; nothing changed",
    ]


def test_a_duplicate_registration_logs_the_owner_and_the_duplicate(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger's log of a duplicate run names the owner run and the duplicate."""
    ledger.register_order(make_order("1"), run_id="run-1")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.ledger.repository"):
        ledger.register_order(make_order("1"), run_id="run-2")
    assert ledger_said(caplog) == [
        "order ORD-1 belongs to run run-1; run run-2 is a duplicate and ships nothing"
    ]


def test_a_rejection_is_logged_once_with_its_reason(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """The first rejection logs the order and the reason; repeating it logs nothing."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.ledger.repository"):
        for _ in range(2):
            ledger.reject_order(order_id="ORD-1", customer_id="C", reason="bad", content_hash="h")
    assert ledger_said(caplog) == ["order ORD-1 rejected: bad"]


def test_recording_a_try_logs_the_line_its_outcome_and_attempts(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed try logs its error and count; a shipped one its shipment, try and attempts."""
    ledger.register_order(make_order("1"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.ledger.repository"):
        fail_line(ledger)
        ledger.record_shipped(
            order_id="ORD-1", line_id="1", try_number=2, requests=3, **shipped("1", "shp-1")
        )
    assert ledger_said(caplog) == [
        "order ORD-1 line 1 failed in try 1 (1 attempts, line FAILED): SkuRefused: no",
        "order ORD-1 line 1 shipped as shp-1 (try 2, 4 attempts)",
    ]


def test_finalizing_logs_the_order_and_its_line_count_once(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """The call that ships the order logs it with its line count; a repeat logs nothing."""
    order = make_order("1", "2")
    ledger.register_order(order)
    ship_all(ledger, order)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.ledger.repository"):
        ledger.finalize_order("ORD-1")
        ledger.finalize_order("ORD-1")
    assert ledger_said(caplog) == ["order ORD-1 shipped: all 2 lines"]


def test_an_amendment_and_its_void_are_logged(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancel logs who, why and the key to void; the void logs the shipment it cancelled."""
    ledger.register_order(make_order("1"))
    fail_line(ledger)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.ledger.repository"):
        ledger.amend_line(
            order_id="ORD-1", line_id="1", action=Amendment.CANCEL, actor="ada", reason="gone"
        )
        ledger.record_void(order_id="ORD-1", line_id="1", key="ORD-1:1", shipment_id="s-9")
    assert ledger_said(caplog) == [
        "order ORD-1 line 1: CANCEL by ada (gone); key ORD-1:1 to be voided",
        "order ORD-1 line 1: key ORD-1:1 voided at the warehouse, shipment s-9 cancelled "
        "(line CANCELLED)",
    ]


def test_a_void_with_nothing_to_cancel_is_logged_without_a_shipment(
    ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    """A void that cancelled no shipment does not name one."""
    ledger.register_order(make_order("1"))
    fail_line(ledger)
    cancel_line_without_void(ledger)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="shipping.ledger.repository"):
        ledger.record_void(order_id="ORD-1", line_id="1", key="ORD-1:1", shipment_id=None)
    assert ledger_said(caplog) == [
        "order ORD-1 line 1: key ORD-1:1 voided at the warehouse (line CANCELLED)"
    ]


def cancel_line_without_void(ledger: Ledger) -> None:
    """Cancel line 1 of ORD-1, leaving the void of its key pending."""
    ledger.amend_line(
        order_id="ORD-1", line_id="1", action=Amendment.CANCEL, actor="ada", reason="gone"
    )
