"""Exactly once under interleavings: tries, kills and operators on the real ledger and warehouse.

The invariants I1-I4 (docs/how-it-works.md), checked after every step:

- I1. Each line has at most one live shipment at the warehouse. When the ledger shows a
  line SHIPPED, the live shipment is the one it records, with the content it records.
- I2. A line the ledger shows CANCELLED has no live shipment.
- I3. An amendment never races a try: every live shipment of a line is under the line's
  current key with its current content, or under the key its last amendment is voiding.
- I4. No dead ends: once the tries in flight finish, the documented commands
  (``shipping reconcile --repair``, ``shipping retry``) end every order SHIPPED.

Each try of a line runs the real :func:`shipping.pipeline.ship_line` in a thread whose
warehouse client stops before every call until the test lets it go; the test decides
what the call does: answer, lose its answer (the request committed, the try never hears
back), answer slowly (done at the warehouse, the answer arriving steps later), commit
then fail (the warehouse's ``commit_then_error``), or die (kill -9) before or after the
request. Meanwhile operators fix and cancel lines (``shipping.amend``) and
repair orders (``shipping.reconcile``). Two orders share line ids, so a query that lost
its order condition breaks an invariant.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from shipping import pipeline
from shipping.amend import amend_line
from shipping.errors import AmendmentRefused, LedgerError, WarehouseTimeout
from shipping.ledger import Amendment, Ledger, LineState, OrderState
from shipping.ops.samples import sample_order
from shipping.reconcile import reconcile
from shipping.warehouse import RetryPolicy, WarehouseClient
from warehouse_mock.testing import WarehouseHandle

LINE_IDS = ("1",)
ACTIONS = ("ok", "ok", "slow", "slow", "lose", "commit_then_error", "kill_before", "kill_after")


class Killed(BaseException):
    """The try's process died (kill -9): nothing after this point runs, nothing is recorded."""


class SteppedTry:
    """One try of a line in a thread; it stops before each warehouse call until stepped."""

    def __init__(self, machine: ExactlyOnce, order: dict[str, Any], line_id: str) -> None:
        self.machine = machine
        self.order = order
        self.line_id = line_id
        self.label = f"{order['order_id']}:{line_id}"
        self._commands: queue.Queue[str] = queue.Queue()
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.waiting_at: str | None = None
        self.outcome: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._wait()

    @property
    def done(self) -> bool:
        return self.waiting_at is None

    def step(self, action: str) -> None:
        """Let the pending call go, doing ``action``; wait for the next stop or the end."""
        assert not self.done
        self._commands.put(action)
        self._wait()

    def _wait(self) -> None:
        kind, value = self._events.get(timeout=120)
        self.waiting_at = value if kind == "call" else None
        if kind != "call":
            self.outcome = value

    def _run(self) -> None:
        item = next(i for i in self.order["items"] if i["line_id"] == self.line_id)
        try:
            result = pipeline.ship_line(
                ledger=self.machine.ledger,
                client=_SteppedClient(self),  # type: ignore[arg-type]
                order_id=self.order["order_id"],
                ship_to=self.order["ship_to"],
                line={"line_id": self.line_id, "sku": item["sku"], "quantity": item["quantity"]},
                try_number=self.machine.next_try_number(),
            )
            self._events.put(("done", result))
        except BaseException as exc:  # the outcome of the try, whatever it is
            self._events.put(("raised", exc))

    def gate(self, name: str) -> str:
        """Called in the try's thread before a warehouse call: wait for the test's word."""
        self._events.put(("call", name))
        return self._commands.get(timeout=120)


class _SteppedClient:
    """The warehouse client a stepped try uses: each call waits for the test's action."""

    def __init__(self, stepped: SteppedTry) -> None:
        self._try = stepped
        self._machine = stepped.machine

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._machine.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            action = self._try.gate(name)
            if action == "kill_before":
                raise Killed
            if action == "commit_then_error" and name == "create_shipment":
                self._machine.warehouse.set_faults(commit_then_error_rate=1.0)
                try:
                    return getattr(self._machine.one_shot_client, name)(*args, **kwargs)
                finally:
                    self._machine.warehouse.clear_faults()
            result = real(*args, **kwargs)
            if action == "slow":
                # Done at the warehouse; the answer is still on its way: the test decides
                # when it arrives (ok), or that it is lost or the try dies meanwhile.
                action = self._try.gate(f"answer of {name}")
            if action == "kill_after":
                raise Killed
            if action == "lose":
                raise WarehouseTimeout("injected: the answer was lost", attempts=1)
            return result

        return call


class ExactlyOnce(RuleBasedStateMachine):
    """Tries, kills, fixes, cancels and repairs on two orders that share line ids."""

    tries = Bundle("tries")

    def __init__(self, ledger: Ledger, warehouse: WarehouseHandle) -> None:
        super().__init__()
        self.ledger = ledger
        self.warehouse = warehouse
        retry = RetryPolicy(max_attempts=2, max_total_seconds=5)
        self.client = WarehouseClient(
            warehouse.base_url, warehouse.api_token, retry=retry, sleep=lambda _: None
        )
        self.one_shot_client = WarehouseClient(
            warehouse.base_url,
            warehouse.api_token,
            retry=RetryPolicy(max_attempts=1),
            sleep=lambda _: None,
        )
        self.orders: list[dict[str, Any]] = []
        self.live: list[SteppedTry] = []
        self._try_number = 0

    def next_try_number(self) -> int:
        self._try_number += 1
        return self._try_number

    @initialize()
    def register_two_orders(self) -> None:
        """Two orders, both with lines 1 and 2."""
        for _ in range(2):
            doc = sample_order(f"PROP-{uuid.uuid4().hex[:10]}", len(LINE_IDS))
            pipeline.register(self.ledger, doc, run_id=f"order-{doc['order_id']}")
            self.orders.append(doc)

    # ------------------------------------------------------------------ rules
    @rule(target=tries, order=st.integers(0, 1), line_id=st.sampled_from(LINE_IDS))
    def start_try(self, order: int, line_id: str) -> Any:
        """A try of a line starts (a retry, a clear, or a zombie beside a live one)."""
        if len(self.live) >= 4:
            return multiple()
        stepped = SteppedTry(self, self.orders[order], line_id)
        if stepped.done:
            return multiple()
        self.live.append(stepped)
        return stepped

    @rule(target=tries, stepped=consumes(tries), action=st.sampled_from(ACTIONS))
    def step_try(self, stepped: SteppedTry, action: str) -> Any:
        """The try's pending warehouse call goes, answered, lost, failed or killed."""
        stepped.step(action)
        if stepped.done:
            self.live.remove(stepped)
            return multiple()
        return stepped

    def failed_lines(self) -> list[tuple[int, str]]:
        """(order index, line id) of every FAILED line: what operators amend."""
        found = []
        for index, doc in enumerate(self.orders):
            status = self.ledger.get_order(doc["order_id"])
            assert status is not None
            found += [(index, x.line_id) for x in status.lines if x.state is LineState.FAILED]
        return found

    @rule(
        data=st.data(),
        sku=st.sampled_from(["MUG-BLUE", "TEE-L", "MUG-RED"]),
        quantity=st.integers(1, 3),
    )
    def fix(self, data: st.DataObject, sku: str, quantity: int) -> None:
        """An operator fixes a FAILED line (while tries of it may be in flight)."""
        if failed := self.failed_lines():
            order, line_id = data.draw(st.sampled_from(failed))
            self._amend(order, line_id, Amendment.FIX, sku=sku, quantity=quantity)

    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """An operator cancels a FAILED line (while tries of it may be in flight)."""
        if failed := self.failed_lines():
            order, line_id = data.draw(st.sampled_from(failed))
            self._amend(order, line_id, Amendment.CANCEL)

    @precondition(lambda self: bool(self.raced_lines()))
    @rule(data=st.data(), action=st.sampled_from([Amendment.FIX, Amendment.CANCEL]))
    def amend_while_a_try_is_in_flight(self, data: st.DataObject, action: Amendment) -> None:
        """The race itself: a FAILED line is fixed or cancelled while a try of it waits."""
        order, line_id = data.draw(st.sampled_from(self.raced_lines()))
        new = {"sku": "TEE-L", "quantity": 3} if action is Amendment.FIX else {}
        self._amend(order, line_id, action, **new)

    def raced_lines(self) -> list[tuple[int, str]]:
        """FAILED lines with a try of them still waiting at a warehouse call."""
        waiting = {(t.order["order_id"], t.line_id) for t in self.live if not t.done}
        return [
            (order, line_id)
            for order, line_id in self.failed_lines()
            if (self.orders[order]["order_id"], line_id) in waiting
        ]

    @rule(order=st.integers(0, 1))
    def repair(self, order: int) -> None:
        """An operator runs ``shipping reconcile ORDER --repair``."""
        reconcile(self.ledger, self.client, [self.orders[order]["order_id"]], fix=True)

    @rule(order=st.integers(0, 1))
    def finalize(self, order: int) -> None:
        """The reducer runs (it finalizes only when every line is done)."""
        with contextlib.suppress(LedgerError):
            pipeline.finalize(self.ledger, self.orders[order]["order_id"], [])

    def _amend(self, order: int, line_id: str, action: Amendment, **new: Any) -> None:
        with contextlib.suppress(AmendmentRefused):
            amend_line(
                self.ledger,
                self.client,
                order_id=self.orders[order]["order_id"],
                line_id=line_id,
                action=action,
                actor="operator",
                reason="property test",
                **new,
            )

    # ------------------------------------------------------------- invariants
    @invariant()
    def each_line_has_at_most_its_own_live_shipment(self) -> None:
        """I1-I3 on every line of every order."""
        for doc in self.orders:
            check_line_invariants(self.ledger, self.warehouse, doc)

    def teardown(self) -> None:
        """I4: the tries in flight finish, then the documented commands end every order."""
        try:
            for stepped in list(self.live):
                while not stepped.done:
                    stepped.step("ok")
            self.live.clear()
            for doc in self.orders:
                check_line_invariants(self.ledger, self.warehouse, doc)
                settle(self.ledger, self.client, doc)
                check_line_invariants(self.ledger, self.warehouse, doc)
        finally:
            self.client.close()
            self.one_shot_client.close()


def check_line_invariants(ledger: Ledger, warehouse: WarehouseHandle, doc: dict[str, Any]) -> None:
    """I1, I2 and I3 for every line of one order."""
    status = ledger.get_order(doc["order_id"])
    assert status is not None
    shipments = warehouse.shipments(doc["order_id"])
    for line in status.lines:
        live = [s for s in shipments if s["line_id"] == line.line_id and s["status"] != "cancelled"]
        where = f"order {doc['order_id']} line {line.line_id} ({line.state})"
        assert len(live) <= 1, f"I1: {where} has {len(live)} live shipments: {live}"
        if line.state is LineState.SHIPPED:
            assert [s["shipment_id"] for s in live] == [line.shipment_id], (
                f"I1: {where} records {line.shipment_id}, the warehouse has live {live}"
            )
        if line.state is LineState.CANCELLED:
            assert not live, f"I2: {where} is CANCELLED over live shipment {live}"
        for shipment in live:
            content = (shipment["sku"], shipment["quantity"], shipment["ship_to"])
            assert shipment["idempotency_key"] in (line.idempotency_key, line.void_key), (
                f"I3: {where} ships under {line.idempotency_key}, live shipment under "
                f"{shipment['idempotency_key']}"
            )
            if shipment["idempotency_key"] == line.idempotency_key:
                assert content == (line.sku, line.quantity, status.ship_to), (
                    f"I3: {where} holds {line.sku} x{line.quantity}, its live shipment {content}"
                )


def settle(ledger: Ledger, client: WarehouseClient, doc: dict[str, Any]) -> None:
    """I4: ``reconcile --repair``, then ``retry`` of what is not done, ends the order."""
    order_id = doc["order_id"]
    reconcile(ledger, client, [order_id], fix=True)
    for _ in range(3):  # a retry may be fenced once by a repair's void; then it ships
        status = ledger.get_order(order_id)
        assert status is not None
        open_lines = [
            line
            for line in status.lines
            if line.state not in (LineState.SHIPPED, LineState.CANCELLED)
        ]
        if not open_lines:
            break
        for line in open_lines:
            item = next(i for i in doc["items"] if i["line_id"] == line.line_id)
            try:
                pipeline.ship_line(
                    ledger=ledger,
                    client=client,
                    order_id=order_id,
                    ship_to=doc["ship_to"],
                    line={"line_id": line.line_id, "sku": item["sku"], "quantity": 1},
                    try_number=1000,
                )
            except Exception:  # the next round or the assertion says more
                reconcile(ledger, client, [order_id], fix=True)
    summary = pipeline.finalize(ledger, order_id, [])
    assert summary["state"] == OrderState.SHIPPED, f"I4: order {order_id} did not end: {summary}"
    report = reconcile(ledger, client, [order_id])
    assert report.clean, f"I4: order {order_id} ended with drift {report.to_json()}"


@pytest.fixture
def postgres_ledger(postgres_url: str) -> Iterator[Ledger]:
    """A ledger on an empty PostgreSQL database."""
    ledger = Ledger.from_url(postgres_url)
    ledger.create_schema()
    yield ledger
    ledger.dispose()


@pytest.mark.postgres
def test_exactly_once_holds_whatever_tries_and_operators_interleave(
    postgres_ledger: Ledger, warehouse: WarehouseHandle
) -> None:
    """I1-I4 hold after every step of random interleavings of tries and operators."""
    run_state_machine_as_test(
        lambda: ExactlyOnce(postgres_ledger, warehouse),
        settings=settings(
            max_examples=60,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        ),
    )
