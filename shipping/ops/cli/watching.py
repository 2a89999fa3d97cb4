"""``shipping watch``: follow an order live until it is done or needs an operator."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shipping.contract import DAG_ID, DECIDE_TASK, INTAKE_TASK, REDUCER_TASK, SHIP_TASK
from shipping.ops.cli import common
from shipping.ops.cli.advice import commands_for
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
    all_done,
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


def progress(
    order: Any,
    run: dict[str, Any] | None,
    instances: list[dict[str, Any]],
    *,
    airflow_url: str = "",
) -> Progress:
    """Combine the ledger's order and Airflow's run into a :class:`Progress`.

    ``instances`` are the run's task instances (those without a ``task_id`` count as
    ``ship_item``'s). A line whose ``ship_item`` failed is not the operator's yet while its
    ``decide_line`` is still to run or running (it counts as running); once that waits for
    an answer, the line needs an operator and its required action in the UI is named
    first (``airflow_url`` makes it a link), the CLI second.
    """
    lines_ti = [ti for ti in instances if ti.get("task_id", SHIP_TASK) == SHIP_TASK]
    ti_state = {ti["map_index"]: ti.get("state") for ti in lines_ti}
    decisions = {
        ti["map_index"]: ti.get("state") for ti in instances if ti.get("task_id") == DECIDE_TASK
    }
    counts: Counter[str] = Counter()
    failing: list[tuple[str, str]] = []
    needs: list[str] = []
    failed_lines: list[Any] = []
    asking: list[tuple[int, Any]] = []
    for index, line in enumerate(order.lines):
        if line.state in DONE_LINE_STATES:
            counts[line.state.lower()] += 1
            continue
        bucket = _TI_BUCKET.get(str(ti_state.get(index)), "waiting")
        if bucket == "failed" and index in decisions:
            decision = decisions[index]
            if decision == AWAITING_INPUT:
                bucket = "awaiting a decision"
                asking.append((index, line))
            elif decision not in FAILED_TI_STATES and decision != "skipped":
                bucket = "running"  # its decision task is about to ask, or ships an answer
        counts[bucket] += 1
        if bucket in ("failed", "retrying", "awaiting a decision") and line.last_error:
            failing.append((line.line_id, line.last_error))
        if bucket in ("failed", "awaiting a decision"):
            failed_lines.append(line)
    retries = sum(max(int(ti.get("try_number") or 0) - 1, 0) for ti in lines_ti)
    run_state = run.get("state") if run else None
    reducer = task_state(instances, REDUCER_TASK)
    why = None
    if order.state == "REJECTED":
        needs.append(
            f"the order was rejected ({order.reason}); post a corrected order under a new order_id"
        )
    elif failed_lines:
        run_id = (run or {}).get("dag_run_id") or order.run_id or run_id_for(order.order_id)
        needs.extend(_required_action(airflow_url, run_id, i, line) for i, line in asking)
        if asking:
            needs.append("or with the command line:")
        needs.extend(commands_for(order.order_id, failed_lines))
    elif order.state != "SHIPPED" and (run_state == "failed" or reducer in FAILED_TI_STATES):
        if all_done(order):
            why = f"every line is done but {REDUCER_TASK} failed"
        needs.extend(commands_for(order.order_id, []))
    return Progress(order.order_id, order.state, counts, retries, run_state, failing, needs, why)


def _required_action(airflow_url: str, run_id: str, map_index: int, line: Any) -> str:
    """The way out named first for a line waiting for a decision: its required action."""
    where = (
        f"{airflow_url.rstrip('/')}/dags/{DAG_ID}/runs/{run_id}/tasks/{DECIDE_TASK}/mapped/"
        f"{map_index}/required_actions"
        if airflow_url
        else "Airflow UI, Browse -> Required Actions"
    )
    return f'answer the required action "Decide line {line.line_id} · {line.sku}": {where}'


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
                order = ledger.get_order(order_id)
                run = api.get_run(DAG_ID, order.run_id if order and order.run_id else run_id)
                if order is None and run is None:
                    raise CliError(f"unknown order {order_id!r}")
                instances = api.task_instances(DAG_ID, run["dag_run_id"]) if run else []
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
