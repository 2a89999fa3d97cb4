"""``shipping watch``: follow an order live until it is done or needs an operator.

Cheap on a 1000-line order: each poll (every 2 s) asks the ledger for the order's counts
by line state and only the lines that failed or that Airflow is running, and asks Airflow
for the run and only its instances in :data:`WATCHED_TI_STATES`, never every mapped
instance.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shipping.advice import decision_pending, needs
from shipping.contract import DAG_ID, DECIDE_TASK, INTAKE_TASK, REDUCER_TASK, SHIP_TASK
from shipping.ledger import OrderSummary
from shipping.ops.cli import common
from shipping.ops.cli.common import (
    AWAITING_INPUT,
    DONE_LINE_STATES,
    EXIT_DRIFT_OR_TIMEOUT,
    EXIT_OK,
    EXIT_OPERATOR,
    FAILED_TI_STATES,
    WATCH_POLL_S,
    CliError,
    Intake,
    task_state,
)
from shipping.order import run_id_for
from shipping.terminal import terminal_safe


@dataclass(frozen=True)
class Progress:
    """Where an order stands, from the ledger and Airflow's task instances."""

    order_id: str
    state: str
    counts: Counter[str]
    retries: int
    run_state: str | None
    failing: list[tuple[str, str]]  # (line_id, last error) of lines failed or retrying
    needs: list[str]  # what an operator should run, when the order needs one
    why: str | None = None  # why it needs an operator, when the lines do not say

    def line(self) -> str:
        """One line of text: the whole picture."""
        parts = [f"{self.counts[k]} {k}" for k in _COUNT_ORDER if self.counts[k]]
        text = f"order {self.order_id}: {self.state}; lines: {', '.join(parts) or 'none yet'}"
        if self.retries:
            text += f"; retries so far: {self.retries}"
        if self.failing:
            line_id, error = self.failing[0]
            text += f"; line {line_id}: {error[:100]}"
        if self.why:
            text += f"; {self.why}"
        return text


_COUNT_ORDER = (
    "shipped",
    "cancelled",
    "running",
    "retrying",
    "waiting",
    "awaiting a decision",
    "failed",
)
_TI_BUCKET = {
    "running": "running",
    "queued": "running",
    "scheduled": "waiting",
    "up_for_retry": "retrying",
    "up_for_reschedule": "waiting",
    "deferred": "running",
    "failed": "failed",
    "upstream_failed": "failed",
}


#: The states ``watch`` asks Airflow for: what it counts or acts on. Every other
#: instance (scheduled, success, ...) is a waiting or a done line, which the ledger's
#: counts already tell; so a poll of a 1000-line order fetches a few instances, not 1000.
#: A line's decision waiting for an answer is ``awaiting_input``.
WATCHED_TI_STATES = (
    "running",
    "queued",
    "deferred",
    "up_for_retry",
    AWAITING_INPUT,
    *sorted(FAILED_TI_STATES),
)
#: Past this many failed lines, ``watch`` lists every decision rather than one each.
_DECISIONS_ONE_BY_ONE = 20


def progress(
    order: Any,
    run: dict[str, Any] | None,
    instances: list[dict[str, Any]],
    *,
    airflow_url: str = "",
) -> Progress:
    """Combine the ledger's order and Airflow's run into a :class:`Progress`.

    ``order`` is an :class:`~shipping.ledger.OrderSummary` (what ``watch`` reads: line
    counts, and the lines that failed or that ``instances`` are about) or an
    :class:`~shipping.ledger.OrderStatus` (every line). ``instances`` are the run's task
    instances, all of them or only those in :data:`WATCHED_TI_STATES` plus the decisions
    of failed lines (those without a ``task_id`` count as ``ship_item``'s). A line whose
    ``ship_item`` failed is not the operator's yet while its ``decide_line`` is still to
    ask or ships an answer (it counts as running); once that waits, the line needs an
    operator and its required action is named first (``airflow_url`` makes it a link).
    What the order needs is :func:`shipping.advice.needs`.
    """
    summary = order if isinstance(order, OrderSummary) else _summary_of(order, instances)
    lines_ti = [ti for ti in instances if ti.get("task_id", SHIP_TASK) == SHIP_TASK]
    ti_state = {int(ti["map_index"]): ti.get("state") for ti in lines_ti}
    decisions = {
        int(ti["map_index"]): ti.get("state")
        for ti in instances
        if ti.get("task_id") == DECIDE_TASK
    }
    counts: Counter[str] = Counter()
    for state, number in summary.counts.items():
        if str(state) in DONE_LINE_STATES and number:
            counts[str(state).lower()] += number
    failing: list[tuple[str, str]] = []
    for index, ti in sorted(ti_state.items()):
        line = summary.notable.get(index)
        if line is None or str(line.state) in DONE_LINE_STATES:
            continue
        bucket = _TI_BUCKET.get(str(ti), "waiting")
        if bucket == "failed" and index in decisions:
            if decisions[index] == AWAITING_INPUT:
                bucket = "awaiting a decision"
            elif decision_pending(decisions[index]):
                bucket = "running"  # its decision is about to ask, or ships an answer
        if bucket == "waiting":
            continue
        counts[bucket] += 1
        if bucket in ("failed", "retrying", "awaiting a decision") and line.last_error:
            failing.append((line.line_id, line.last_error))
    waiting = summary.total - sum(counts.values())
    if waiting > 0:
        counts["waiting"] += waiting
    run_state = run.get("state") if run else None
    advice = needs(
        summary,
        line_task_states=ti_state,
        run_state=run_state,
        reducer_state=task_state(instances, REDUCER_TASK),
        decision_states=decisions,
        airflow_url=airflow_url,
    )
    return Progress(
        summary.order_id,
        str(summary.state),
        counts,
        summary.retries,
        run_state,
        failing,
        advice.commands,
        advice.why,
    )


def _summary_of(order: Any, instances: list[dict[str, Any]]) -> OrderSummary:
    """An :class:`OrderSummary` of a whole order; its retries from every instance's try."""
    return OrderSummary(
        order_id=order.order_id,
        state=order.state,
        reason=order.reason,
        run_id=order.run_id,
        counts=dict(Counter(order_line.state for order_line in order.lines)),
        notable=dict(enumerate(order.lines)),
        retries=sum(
            max(int(ti.get("try_number") or 0) - 1, 0)
            for ti in instances
            if ti.get("task_id", SHIP_TASK) == SHIP_TASK
        ),
    )


def follow(ledger: Any, api: Any, order_id: str) -> tuple[Any, dict[str, Any] | None, Any]:
    """One look at the order: the ledger's summary, its run, the instances that matter.

    Returns ``(summary, run, instances)``; for an order the ledger does not know yet,
    ``summary`` is None and ``instances`` are all of its run's (a handful before fan-out).
    The decision of each failed line is among ``instances`` whatever its state (one
    request per such line, or one list of every decision when many lines failed).
    """
    summary = ledger.order_summary(order_id)
    run_id = summary.run_id if summary is not None and summary.run_id else run_id_for(order_id)
    run = api.get_run(DAG_ID, run_id)
    if run is None:
        return summary, None, []
    if summary is None:
        return None, run, api.task_instances(DAG_ID, run["dag_run_id"])
    run_id = run["dag_run_id"]
    instances = api.task_instances(DAG_ID, run_id, states=WATCHED_TI_STATES)
    asked = {int(ti["map_index"]) for ti in instances if ti.get("task_id", SHIP_TASK) == SHIP_TASK}
    if asked - set(summary.notable):  # running lines the summary did not read
        summary = ledger.order_summary(order_id, positions=asked)
    failed = {
        int(ti["map_index"])
        for ti in instances
        if ti.get("task_id", SHIP_TASK) == SHIP_TASK and ti.get("state") in FAILED_TI_STATES
    }
    seen = {int(ti["map_index"]) for ti in instances if ti.get("task_id") == DECIDE_TASK}
    unseen = sorted(failed - seen)
    if len(unseen) > _DECISIONS_ONE_BY_ONE:
        instances += [
            ti
            for ti in api.mapped_instances(DAG_ID, run_id, DECIDE_TASK)
            if int(ti["map_index"]) in unseen
        ]
    else:
        for index in unseen:
            decision = api.task_instance(DAG_ID, run_id, DECIDE_TASK, index)
            if decision is not None:
                instances.append(decision)
    return summary, run, instances


def watch(
    order_id: str,
    *,
    timeout: float,
    poll: float = WATCH_POLL_S,
    interactive: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Follow an order until it is done (0), needs an operator (3) or the timeout (4)."""
    interactive = sys.stdout.isatty() if interactive is None else interactive
    deadline = clock() + timeout
    run_id = run_id_for(order_id)
    last = ""
    live = _LiveView() if interactive else None
    try:
        with common.open_ledger() as ledger, common.open_airflow() as api:
            while True:
                order, run, instances = follow(ledger, api, order_id)
                if order is None and run is None:
                    raise CliError(f"unknown order {order_id!r}")
                intake, now = None, None
                if order is None:
                    assert run is not None
                    intake = Intake(
                        order_id, run_id, run.get("state"), task_state(instances, INTAKE_TASK)
                    )
                    text = intake.describe()
                else:
                    now = progress(order, run, instances, airflow_url=api.base_url)
                    text = now.line()
                if live is not None:
                    live.update(text)
                elif text != last:
                    print(text, flush=True)
                last = text
                if intake is not None and intake.failed:
                    _say(live, f"order {order_id} needs an operator (intake failed):")
                    print(f"  shipping retry {order_id}")
                    return EXIT_OPERATOR
                if now is not None and now.state == "SHIPPED":
                    _say(live, f"order {order_id} is SHIPPED")
                    return EXIT_OK
                if now is not None and now.needs:
                    _say(live, f"order {order_id} needs an operator:")
                    for command in now.needs:
                        print(f"  {command}")
                    return EXIT_OPERATOR
                if clock() > deadline:
                    _say(live, f"order {order_id}: still {last or 'waiting'} after {timeout:g} s")
                    return EXIT_DRIFT_OR_TIMEOUT
                time.sleep(poll)
    finally:
        if live is not None:
            live.stop()


def _say(live: _LiveView | None, message: str) -> None:
    """End the live view (its last state stays in the plain message) and print."""
    if live is not None:
        live.stop()
    print(message)


class _LiveView:
    """A one-line live view on a terminal (rich), redrawn in place."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        # The terminal itself: the live view's own cursor moves must reach it; the text it
        # shows is made safe in update().
        console = Console(file=sys.__stdout__)
        self._live = Live("", console=console, refresh_per_second=4, transient=True)
        self._live.start()

    def update(self, text: str) -> None:
        from rich.text import Text

        self._live.update(Text(terminal_safe(text)))

    def stop(self) -> None:
        self._live.stop()


# ------------------------------------------------------------ fix and cancel
