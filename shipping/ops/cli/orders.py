"""``shipping submit``, ``status`` and ``retry``: post an order, show it, retry its failed lines."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import requests

from shipping.contract import DAG_ID, DECIDE_TASK, INTAKE_TASK, REDUCER_TASK, SHIP_TASK
from shipping.ops.airflow_api import AirflowApiError, TriggerStatus
from shipping.ops.cli import common
from shipping.ops.cli.advice import warn_configuration
from shipping.ops.cli.common import (
    EXIT_OK,
    EXIT_OPERATOR,
    EXIT_REFUSED,
    FAILED_TI_STATES,
    CliError,
    Intake,
    all_done,
    decision_open,
    intake_of,
    say_needs,
    task_state,
)
from shipping.ops.cli.watching import watch
from shipping.ops.render import render_status
from shipping.ops.settings import SettingsError
from shipping.order import InvalidOrder, content_hash, parse_order, run_id_for


# ------------------------------------------------------------------- submit
def submit(path: Path, *, watch_timeout: float | None = None) -> int:
    """Post the order in ``path``; print the outcome; return the exit code."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}", EXIT_REFUSED) from exc
    try:
        order = parse_order(doc)
    except InvalidOrder as exc:
        raise CliError("order refused:\n  " + "\n  ".join(exc.errors), EXIT_REFUSED) from exc
    intake = None
    with common.open_airflow() as api:
        outcome = api.trigger(DAG_ID, order.run_id, doc)
        run = outcome.run or {}
        if outcome.status is TriggerStatus.EXISTS and run.get("state") == "failed":
            intake = intake_of(api, order.order_id, run)
    if outcome.status is TriggerStatus.ACCEPTED:
        print(f"order {order.order_id} accepted as run {order.run_id}")
    elif outcome.status is TriggerStatus.REFUSED:
        # Airflow appends the whole JSON schema to the reason; its first line says it all.
        reason = (outcome.reason or "").split("\n\n", 1)[0]
        raise CliError(f"order {order.order_id} refused by Airflow: {reason}", EXIT_REFUSED)
    elif not _same_order(run.get("conf") or {}, order.content_hash()):
        raise CliError(
            f"order {order.order_id} refused: an order with this id was already accepted "
            "with different content (use a new order_id)",
            EXIT_REFUSED,
        )
    elif intake is not None and intake.failed:
        # Accepted once, then lost before the ledger knew it: not "already accepted".
        say_needs(
            f"{intake.describe()}; it needs an operator:", [f"shipping retry {order.order_id}"]
        )
        return EXIT_OPERATOR
    else:
        print(
            f"order {order.order_id} was already accepted as run {order.run_id} "
            f"({run.get('state')})"
        )
    if watch_timeout is not None:
        return watch(order.order_id, timeout=watch_timeout)
    return EXIT_OK


def _same_order(conf: Any, digest: str) -> bool:
    """Whether a run's conf is the order with content ``digest`` (2.0 and 2 alike)."""
    try:
        return parse_order(conf).content_hash() == digest
    except InvalidOrder:
        return content_hash(conf) == digest


# ------------------------------------------------------------------- status
def status(order_id: str, *, as_json: bool) -> int:
    """Print the order and its lines from the ledger; return the exit code.

    An order the ledger does not know is looked up in Airflow: a run whose intake failed
    is reported (exit 3, naming ``shipping retry``), one still registering too (exit 0).
    """
    with common.open_ledger() as ledger:
        found = ledger.get_order(order_id)
    if found is None:
        intake = _intake_if_reachable(order_id)
        if intake is None:
            raise CliError(f"unknown order {order_id!r}")
        if as_json:
            print(json.dumps(intake.to_json(), indent=2))
        elif intake.failed:
            say_needs(f"{intake.describe()}; it needs an operator:", [f"shipping retry {order_id}"])
        else:
            print(intake.describe())
        return EXIT_OPERATOR if intake.failed else EXIT_OK
    doc = found.to_json()
    print(json.dumps(doc, indent=2) if as_json else render_status(doc))
    return EXIT_OK


def _intake_if_reachable(order_id: str) -> Intake | None:
    """:func:`intake_of`, or None when Airflow cannot be asked (status works without it)."""
    try:
        with common.open_airflow() as api:
            return intake_of(api, order_id)
    except (CliError, SettingsError, AirflowApiError, requests.RequestException) as exc:
        logging.getLogger(__name__).debug("Airflow not asked about %s: %s", order_id, exc)
        return None


# -------------------------------------------------------------------- retry
def retry(order_id: str, line_ids: list[str]) -> int:
    """Clear the order's failed lines (all, or those named) and its reducer.

    With no failed line, a failed reducer alone is cleared (every line is done, the
    ledger failed it). An order the ledger does not know, whose run failed at intake, has
    ``register_order`` cleared with everything after it.
    """
    with common.open_ledger() as ledger:
        order = ledger.get_order(order_id)
    if order is None:
        if line_ids:
            raise CliError(f"unknown order {order_id!r}: the ledger has no lines of it")
        return _retry_intake(order_id)
    known = {line.line_id: line for line in order.lines}
    unknown = [line_id for line_id in line_ids if line_id not in known]
    if unknown:
        raise CliError(f"order {order_id!r} has no line {', '.join(map(repr, unknown))}")
    run_id = order.run_id or run_id_for(order_id)
    position = {line.line_id: index for index, line in enumerate(order.lines)}
    with common.open_airflow() as api:
        instances = api.task_instances(DAG_ID, run_id)
        if task_state(instances, INTAKE_TASK) in FAILED_TI_STATES:
            api.clear_tasks(DAG_ID, run_id, [INTAKE_TASK])
            print(f"order {order_id}: retrying {INTAKE_TASK} and everything after it")
            return EXIT_OK
        states = {ti["map_index"]: ti["state"] for ti in instances if ti["task_id"] == SHIP_TASK}
        wanted = line_ids or list(known)
        failed = [i for i in wanted if states.get(position[i]) == "failed"]
        for line_id in line_ids:
            if line_id not in failed:
                print(
                    f"line {line_id} is {states.get(position[line_id]) or 'not started'}: not retried"
                )
        # A line the ledger shows shipped is never cleared (it would not post again, but
        # the promise is simpler): its task is marked success so the order can finalize.
        shipped = [i for i in failed if known[i].state == "SHIPPED"]
        to_clear = [i for i in failed if i not in shipped]
        for line_id in shipped:
            api.set_mapped_state(
                DAG_ID,
                run_id,
                SHIP_TASK,
                position[line_id],
                "success",
                note=f"shipped as {known[line_id].shipment_id} per the ledger",
            )
            print(f"line {line_id} had shipped as {known[line_id].shipment_id}: marked success")
        reducer = task_state(instances, REDUCER_TASK)
        if not failed:
            if not line_ids and reducer in FAILED_TI_STATES and all_done(order):
                # Only the reducer failed (the ledger was unreachable for all its tries).
                api.clear_tasks(DAG_ID, run_id, [REDUCER_TASK])
                print(f"order {order_id}: every line is done; retrying {REDUCER_TASK}")
                return EXIT_OK
            print(f"order {order_id}: nothing to retry")
            return EXIT_OK
        warn_configuration(order_id, [known[i] for i in to_clear])
        if to_clear:
            api.clear_mapped(DAG_ID, run_id, SHIP_TASK, [position[i] for i in to_clear])
        # These lines' decisions (a required action still waiting would hold the run open,
        # a failed one the reducer) are cleared too: evaluated again after the line's task,
        # they are skipped once it shipped.
        decisions = [position[i] for i in failed if decision_open(instances, position[i])]
        if decisions:
            api.clear_waiting(DAG_ID, run_id, DECIDE_TASK, decisions)
        if not to_clear:
            api.clear_tasks(DAG_ID, run_id, [REDUCER_TASK])
    if to_clear:
        print(f"order {order_id}: retrying line(s) {', '.join(to_clear)} and {REDUCER_TASK}")
    return EXIT_OK


def _retry_intake(order_id: str) -> int:
    """Clear ``register_order`` (and what follows) of a run whose intake failed."""
    with common.open_airflow() as api:
        intake = intake_of(api, order_id)
        if intake is None:
            raise CliError(
                f"unknown order {order_id!r}: not in the ledger, and Airflow has no run "
                f"{run_id_for(order_id)}"
            )
        if not intake.failed:
            print(f"{intake.describe()}: nothing to retry")
            return EXIT_OK
        api.clear_tasks(DAG_ID, intake.run_id, [INTAKE_TASK])
    print(
        f"order {order_id}: its run {intake.run_id} failed at intake; retrying {INTAKE_TASK} "
        "and everything after it"
    )
    return EXIT_OK
