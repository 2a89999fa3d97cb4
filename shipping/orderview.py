"""The read model behind the ledger view in Airflow's UI: an order, its run, its advice.

Three views, each built from the ledger, what Airflow says of the order's run (handed in
as :class:`RunTasks`, so this module imports no Airflow) and, for one order, the
warehouse:

* :func:`order_view`: one order as an operator reads it: its state and owner run, each
  line's state, attempts, shipment id and last error beside its task instance's state and
  try, the amendments of each line (who, when, why, old and new), what it needs from an
  operator (:mod:`shipping.advice`, the advice of ``shipping watch``) and its
  reconciliation with the warehouse (clean, or each kind of drift);
* :func:`open_orders`: the orders that need an operator now, each with the commands that
  end it, from the runs of ``order_intake`` that hold a failed task instance;
* :func:`reconciliation_of`: :func:`shipping.reconcile.check_order`, summed up, with an
  unreachable warehouse reported instead of raised.

Every view reads the ledger in a bounded number of queries, whatever the order's size.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shipping.advice import FAILED_TI_STATES, INTAKE_TASK, Needs, needs
from shipping.errors import WarehouseError
from shipping.ledger import AmendmentRecord, Ledger, LineStatus, OrderStatus
from shipping.order import run_id_for
from shipping.reconcile import Drift, check_order
from shipping.warehouse import WarehouseClient

logger = logging.getLogger(__name__)

_RUN_PREFIX = run_id_for("")


@dataclass(frozen=True)
class TaskState:
    """One task instance as Airflow has it."""

    state: str | None
    try_number: int = 0


@dataclass(frozen=True)
class RunTasks:
    """An ``order_intake`` run as Airflow has it: its state and its task instances' states.

    Attributes:
        run_id: The run.
        state: The run's state.
        lines: ``ship_item``'s instances by map index (all of them, or only the failed
            ones where a caller asked Airflow for those alone).
        intake: ``register_order``'s state (None: not yet).
        reducer: ``finalize_order``'s state (None: not yet).
        decisions: ``decide_line``'s state by map index (a failed line's required action
            while it waits for an answer, ``awaiting_input``).
    """

    run_id: str
    state: str | None
    lines: Mapping[int, TaskState] = field(default_factory=dict)
    intake: str | None = None
    reducer: str | None = None
    decisions: Mapping[int, str | None] = field(default_factory=dict)

    @property
    def line_states(self) -> dict[int, str | None]:
        """``ship_item``'s state by map index."""
        return {index: task.state for index, task in self.lines.items()}

    @property
    def intake_failed(self) -> bool:
        """Whether the run failed before the ledger knew its order (no try is coming)."""
        if self.intake in ("failed", "upstream_failed"):
            return True
        return self.state == "failed" and self.intake != "success"


@dataclass(frozen=True)
class Reconciliation:
    """How the ledger's record of an order compares with the warehouse.

    Attributes:
        drift: Each disagreement (empty: clean); None when the check could not run.
        error: Why the check could not run (the warehouse unreachable, say).
    """

    drift: tuple[Drift, ...] | None
    error: str | None = None

    @property
    def clean(self) -> bool | None:
        """True clean, False drift found, None not known."""
        return None if self.drift is None else not self.drift

    @property
    def kinds(self) -> dict[str, int]:
        """How many drifts of each kind."""
        return dict(Counter(d.kind.value for d in self.drift or ()))

    def to_json(self) -> dict[str, Any]:
        """The reconciliation in the view's JSON."""
        return {
            "clean": self.clean,
            "kinds": self.kinds,
            "drift": [d.to_json() for d in self.drift or ()],
            "error": self.error,
        }


@dataclass(frozen=True)
class LineView:
    """One line of an order beside its task instance, with its amendments."""

    position: int
    line: LineStatus
    task: TaskState | None
    amendments: tuple[AmendmentRecord, ...]

    def to_json(self) -> dict[str, Any]:
        """The line in the view's JSON: ``shipping status --json``'s line and its task."""
        return {
            **self.line.to_json(),
            "map_index": self.position,
            "task_state": self.task.state if self.task else None,
            "try_number": self.task.try_number if self.task else None,
            "amendments": [a.to_json() for a in self.amendments],
        }


@dataclass(frozen=True)
class OrderView:
    """An order as the ledger view shows it (see the module's docstring)."""

    order: OrderStatus
    run: RunTasks | None
    lines: tuple[LineView, ...]
    needs: Needs
    reconciliation: Reconciliation | None

    @property
    def counts(self) -> dict[str, int]:
        """Lines by ledger state."""
        return dict(Counter(line.line.state.value for line in self.lines))

    def to_json(self) -> dict[str, Any]:
        """The view as the plugin's API answers it: the order's status JSON and more."""
        status = self.order.to_json()
        return {
            **status,
            "run_state": self.run.state if self.run else None,
            "counts": self.counts,
            "lines": [line.to_json() for line in self.lines],
            "needs": self.needs.commands,
            "why": self.needs.why,
            "reconciliation": self.reconciliation.to_json() if self.reconciliation else None,
        }


@dataclass(frozen=True)
class OpenOrder:
    """An order that needs an operator now, and what ends it.

    Attributes:
        order_id: The order (for a run the ledger never recorded, read from its run id,
            or None when the run id does not name one).
        run_id: Its run in Airflow.
        state: The order's state in the ledger (None: the ledger does not know it).
        failed_lines: The ids of its lines whose task failed.
        needs: The commands that end it.
    """

    order_id: str | None
    run_id: str
    state: str | None
    failed_lines: tuple[str, ...]
    needs: Needs

    def to_json(self) -> dict[str, Any]:
        """The order in the open-orders JSON."""
        return {
            "order_id": self.order_id,
            "run_id": self.run_id,
            "state": self.state,
            "failed_lines": list(self.failed_lines),
            "needs": self.needs.commands,
            "why": self.needs.why,
        }


def order_view(
    order: OrderStatus, run: RunTasks | None, reconciliation: Reconciliation | None = None
) -> OrderView:
    """The view of ``order`` (from :meth:`Ledger.get_order`) beside its run's tasks.

    Args:
        order: The order as the ledger holds it.
        run: Its owner run as Airflow has it, with every ``ship_item`` instance; None
            when Airflow has no such run.
        reconciliation: Its comparison with the warehouse, if one was made.
    """
    by_line: dict[str, list[AmendmentRecord]] = {}
    for amendment in order.amendments:
        by_line.setdefault(amendment.line_id, []).append(amendment)
    tasks = run.lines if run else {}
    lines = tuple(
        LineView(index, line, tasks.get(index), tuple(by_line.get(line.line_id, ())))
        for index, line in enumerate(order.lines)
    )
    advice = needs(
        order,
        line_task_states=run.line_states if run else {},
        run_state=run.state if run else None,
        reducer_state=run.reducer if run else None,
        decision_states=run.decisions if run else None,
    )
    return OrderView(order, run, lines, advice, reconciliation)


def reconciliation_of(ledger: Ledger, client: WarehouseClient, order_id: str) -> Reconciliation:
    """The order checked against the warehouse; a warehouse that cannot answer is said so."""
    try:
        return Reconciliation(tuple(check_order(ledger, client, order_id)))
    except WarehouseError as exc:
        logger.warning("reconciliation of order %s not checked: %s", order_id, exc)
        return Reconciliation(None, f"the warehouse could not be asked: {exc}")


def order_id_of_run(run_id: str) -> str | None:
    """The order id a run id names by the REST door's convention (``order-<order_id>``)."""
    if run_id.startswith(_RUN_PREFIX) and len(run_id) > len(_RUN_PREFIX):
        return run_id[len(_RUN_PREFIX) :]
    return None


def open_orders(ledger: Ledger, runs: Iterable[RunTasks]) -> list[OpenOrder]:
    """The orders of ``runs`` that need an operator, each with what ends it.

    ``runs`` are the ``order_intake`` runs that hold a failed task instance (their
    ``lines`` may be only the failed ``ship_item`` instances). The ledger is read once
    for the runs and once per order that has failed lines or a failed run; orders that
    need nobody (a line failed, then shipped after a retry) are left out.
    """
    runs = list(runs)
    owners = ledger.orders_of_runs(run.run_id for run in runs)
    found: list[OpenOrder] = []
    for run in runs:
        order_id = owners.get(run.run_id)
        if order_id is None:
            if run.intake_failed:
                named = order_id_of_run(run.run_id)
                found.append(
                    OpenOrder(
                        named,
                        run.run_id,
                        None,
                        (),
                        Needs(
                            [f"shipping retry {named or '<order_id>'}"],
                            f"{INTAKE_TASK} failed before the ledger recorded the order",
                        ),
                    )
                )
            continue
        summary = ledger.order_summary(order_id)
        if summary is None or summary.run_id not in (None, run.run_id):
            continue  # a duplicate or refused run: its order is its owner run's business
        advice = needs(
            summary,
            line_task_states=run.line_states,
            run_state=run.state,
            reducer_state=run.reducer,
            decision_states=run.decisions,
        )
        if not advice:
            continue
        failed = tuple(
            line.line_id
            for index, line in sorted(summary.notable.items())
            if run.line_states.get(index) in FAILED_TI_STATES
        )
        found.append(OpenOrder(order_id, run.run_id, summary.state.value, failed, advice))
    return found
