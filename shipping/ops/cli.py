"""The ``shipping`` command: post orders, follow them, and resolve failed lines.

``submit ORDER.json [--watch]``, ``status ORDER_ID [--json]``, and the operator commands
``retry``, ``watch``, ``fix``, ``cancel`` and ``reconcile`` (``shipping COMMAND --help``
says each one's exit codes).

With the local stack up (``make up``) no settings are needed: the commands read the
stack's state. Otherwise ``SHIPPING_AIRFLOW_URL`` and ``AIRFLOW_ADMIN_PASSWORD`` (Airflow),
``SHIPPING_LEDGER_URL`` (the ledger), ``SHIPPING_WAREHOUSE_URL`` and ``WAREHOUSE_API_TOKEN``
(the warehouse) say where to go.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import sqlalchemy.exc

from shipping import errors
from shipping.connections import TOKEN_VAR, TOKENS_VAR
from shipping.contract import DAG_ID, WAREHOUSE_CONN_ID
from shipping.errors import ErrorFamily, LedgerError, OrderNotFound, WarehouseError
from shipping.ops.airflow_api import AirflowApiError, AirflowClient, TriggerStatus
from shipping.ops.render import render_status
from shipping.ops.settings import ClientSettings, SettingsError
from shipping.ops.state import load_state
from shipping.order import InvalidOrder, content_hash, parse_order, run_id_for
from shipping.terminal import SafeStream, terminal_safe

EXIT_OK, EXIT_NOT_FOUND, EXIT_REFUSED, EXIT_OPERATOR, EXIT_DRIFT_OR_TIMEOUT = 0, 1, 2, 3, 4
#: What a shell reports for a command whose reader went away (128 + SIGPIPE).
EXIT_READER_GONE = 141
INTAKE_TASK, SHIP_TASK, REDUCER_TASK = "register_order", "ship_item", "finalize_order"
#: The pipeline's warehouse connection, as an environment variable.
WAREHOUSE_CONN_VAR = f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}"
WATCH_POLL_S = 2.0


class CliError(Exception):
    """A failure to report on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------- connections
def _airflow() -> AirflowClient:
    state = load_state()
    env = dict(os.environ)
    if state is not None and "SHIPPING_AIRFLOW_URL" not in env:
        env["SHIPPING_AIRFLOW_URL"] = state.airflow_url
    settings = ClientSettings.from_env(
        env, fallback_password=state.admin_password if state else None
    )
    try:
        return AirflowClient(settings.airflow_url, settings.username, settings.password)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _ledger_url() -> str:
    url = os.environ.get("SHIPPING_LEDGER_URL")
    if url:
        return url
    state = load_state()
    if state is None:
        raise CliError("no ledger: set SHIPPING_LEDGER_URL or start the stack (make up)")
    return state.ledger_url


@contextmanager
def _ledger() -> Iterator[Any]:
    from shipping.ledger import Ledger

    ledger = Ledger.from_url(_ledger_url())
    try:
        yield ledger
    finally:
        ledger.dispose()


@contextmanager
def _warehouse() -> Iterator[Any]:
    from shipping.connections import single_token
    from shipping.warehouse import WarehouseClient

    state = load_state()
    url = os.environ.get("SHIPPING_WAREHOUSE_URL") or (state.warehouse_url if state else None)
    token = os.environ.get(TOKEN_VAR) or (state.warehouse_api_token if state else None)
    if not url or not token:
        raise CliError(
            f"no warehouse: set SHIPPING_WAREHOUSE_URL and {TOKEN_VAR} or start the stack (make up)"
        )
    try:
        single_token(token)
    except errors.ConnectionConfigError as exc:
        raise CliError(str(exc)) from exc
    with WarehouseClient(url, token) as client:
        yield client


def _order(ledger: Any, order_id: str) -> Any:
    found = ledger.get_order(order_id)
    if found is None:
        raise CliError(f"unknown order {order_id!r}")
    return found


# ------------------------------------------------------------------- intake
@dataclass(frozen=True)
class Intake:
    """An order's run as Airflow has it, for an order the ledger does not know (yet)."""

    order_id: str
    run_id: str
    run_state: str | None
    task_state: str | None  # register_order's

    @property
    def failed(self) -> bool:
        """Whether intake failed: no try of ``register_order`` is coming by itself."""
        if self.task_state in _FAILED_TI_STATES:
            return True
        return self.run_state == "failed" and self.task_state != "success"

    def describe(self) -> str:
        """What is known, in one sentence."""
        if self.failed:
            return (
                f"order {self.order_id} is not in the ledger: its run {self.run_id} failed at "
                f"intake ({INTAKE_TASK} {self.task_state or 'did not run'}) before the ledger "
                "recorded the order (was the ledger unreachable?)"
            )
        return (
            f"order {self.order_id} is not in the ledger yet: its run {self.run_id} is "
            f"{self.run_state}, {INTAKE_TASK} {self.task_state or 'not started'}"
        )

    def to_json(self) -> dict[str, Any]:
        """``shipping status --json`` of such an order: no state, no lines, the run."""
        return {
            "order_id": self.order_id,
            "state": None,
            "lines": [],
            "run_id": self.run_id,
            "run_state": self.run_state,
            "intake": "failed" if self.failed else self.task_state,
            "needs": [f"shipping retry {self.order_id}"] if self.failed else [],
        }


_FAILED_TI_STATES = frozenset({"failed", "upstream_failed"})


def _task_state(instances: list[dict[str, Any]], task_id: str) -> str | None:
    """The state of an unmapped task among a run's task instances (None if it has none)."""
    return next((ti.get("state") for ti in instances if ti.get("task_id") == task_id), None)


def _intake(api: AirflowClient, order_id: str, run: dict[str, Any] | None = None) -> Intake | None:
    """The order's run and its ``register_order``, or None when Airflow has no such run."""
    run_id = run_id_for(order_id)
    run = run if run is not None else api.get_run(DAG_ID, run_id)
    if run is None:
        return None
    instances = api.task_instances(DAG_ID, run_id)
    return Intake(order_id, run_id, run.get("state"), _task_state(instances, INTAKE_TASK))


def _say_needs(message: str, commands: list[str]) -> None:
    print(message)
    for command in commands:
        print(f"  {command}")


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
    with _airflow() as api:
        outcome = api.trigger(DAG_ID, order.run_id, doc)
        run = outcome.run or {}
        if outcome.status is TriggerStatus.EXISTS and run.get("state") == "failed":
            intake = _intake(api, order.order_id, run)
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
        _say_needs(
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
    with _ledger() as ledger:
        found = ledger.get_order(order_id)
    if found is None:
        intake = _intake_if_reachable(order_id)
        if intake is None:
            raise CliError(f"unknown order {order_id!r}")
        if as_json:
            print(json.dumps(intake.to_json(), indent=2))
        elif intake.failed:
            _say_needs(
                f"{intake.describe()}; it needs an operator:", [f"shipping retry {order_id}"]
            )
        else:
            print(intake.describe())
        return EXIT_OPERATOR if intake.failed else EXIT_OK
    doc = found.to_json()
    print(json.dumps(doc, indent=2) if as_json else render_status(doc))
    return EXIT_OK


def _intake_if_reachable(order_id: str) -> Intake | None:
    """:func:`_intake`, or None when Airflow cannot be asked (status works without it)."""
    try:
        with _airflow() as api:
            return _intake(api, order_id)
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
    with _ledger() as ledger:
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
    with _airflow() as api:
        instances = api.task_instances(DAG_ID, run_id)
        if _task_state(instances, INTAKE_TASK) in _FAILED_TI_STATES:
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
        reducer = _task_state(instances, REDUCER_TASK)
        if not failed:
            if not line_ids and reducer in _FAILED_TI_STATES and _all_done(order):
                # Only the reducer failed (the ledger was unreachable for all its tries).
                api.clear_tasks(DAG_ID, run_id, [REDUCER_TASK])
                print(f"order {order_id}: every line is done; retrying {REDUCER_TASK}")
                return EXIT_OK
            print(f"order {order_id}: nothing to retry")
            return EXIT_OK
        _warn_configuration(order_id, [known[i] for i in to_clear])
        if to_clear:
            api.clear_mapped(DAG_ID, run_id, SHIP_TASK, [position[i] for i in to_clear])
        else:
            api.clear_tasks(DAG_ID, run_id, [REDUCER_TASK])
    if to_clear:
        print(f"order {order_id}: retrying line(s) {', '.join(to_clear)} and {REDUCER_TASK}")
    return EXIT_OK


def _all_done(order: Any) -> bool:
    return bool(order.lines) and all(line.state in _DONE_LINE_STATES for line in order.lines)


_DONE_LINE_STATES = frozenset({"SHIPPED", "CANCELLED"})


def _retry_intake(order_id: str) -> int:
    """Clear ``register_order`` (and what follows) of a run whose intake failed."""
    with _airflow() as api:
        intake = _intake(api, order_id)
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


def _warn_configuration(order_id: str, lines: list[Any]) -> None:
    """Say that lines failed on the configuration fail again until it is fixed."""
    config = [line for line in lines if _family(line) is ErrorFamily.CONFIGURATION]
    for advice in dict.fromkeys(_configuration_fix(line) for line in config):
        ids = ", ".join(line.line_id for line in config if _configuration_fix(line) == advice)
        print(
            f"note: line(s) {ids} of order {order_id} failed on the configuration: "
            f"{advice} first, or they fail again"
        )


# -------------------------------------------------------------------- watch
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


_COUNT_ORDER = ("shipped", "cancelled", "running", "retrying", "waiting", "failed")
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


def progress(order: Any, run: dict[str, Any] | None, instances: list[dict[str, Any]]) -> Progress:
    """Combine the ledger's order and Airflow's run into a :class:`Progress`.

    ``instances`` are the run's task instances (those without a ``task_id`` count as
    ``ship_item``'s).
    """
    lines_ti = [ti for ti in instances if ti.get("task_id", SHIP_TASK) == SHIP_TASK]
    ti_state = {ti["map_index"]: ti.get("state") for ti in lines_ti}
    counts: Counter[str] = Counter()
    failing: list[tuple[str, str]] = []
    needs: list[str] = []
    failed_lines: list[Any] = []
    for index, line in enumerate(order.lines):
        if line.state in _DONE_LINE_STATES:
            counts[line.state.lower()] += 1
            continue
        bucket = _TI_BUCKET.get(str(ti_state.get(index)), "waiting")
        counts[bucket] += 1
        if bucket in ("failed", "retrying") and line.last_error:
            failing.append((line.line_id, line.last_error))
        if bucket == "failed":
            failed_lines.append(line)
    retries = sum(max(int(ti.get("try_number") or 0) - 1, 0) for ti in lines_ti)
    run_state = run.get("state") if run else None
    reducer = _task_state(instances, REDUCER_TASK)
    why = None
    if order.state == "REJECTED":
        needs.append(
            f"the order was rejected ({order.reason}); post a corrected order under a new order_id"
        )
    elif failed_lines:
        needs.extend(_commands_for(order.order_id, failed_lines))
    elif order.state != "SHIPPED" and (run_state == "failed" or reducer in _FAILED_TI_STATES):
        if _all_done(order):
            why = f"every line is done but {REDUCER_TASK} failed"
        needs.extend(_commands_for(order.order_id, []))
    return Progress(order.order_id, order.state, counts, retries, run_state, failing, needs, why)


# ----------------------------------------------------- advice by error family
def _error_class(line: Any) -> str | None:
    """The class name of a line's last error: the ledger's ``error_class``, or (ledgers
    that do not store it) the class before the first ``:`` of ``last_error``."""
    stored = getattr(line, "error_class", None)
    if stored:
        return str(stored)
    head = str(getattr(line, "last_error", None) or "").split(":", 1)[0].strip()
    return head if head.isidentifier() else None


def _family(line: Any) -> ErrorFamily | None:
    """The family of a line's last error (None for a line with no error recorded)."""
    return errors.family_of(_error_class(line))


_FINAL_FAMILIES = frozenset(f.family for f in errors.FAMILIES if f.final)


def _is_final(line: Any) -> bool:
    """Whether a retry cannot cure a line's last error, as :mod:`shipping.errors` says."""
    return _family(line) in _FINAL_FAMILIES


def _configuration_fix(line: Any) -> str:
    """What to fix, naming the setting, for a line that failed on the configuration."""
    if _error_class(line) == errors.WarehouseAuthError.__name__:
        return (
            f"fix the warehouse token the pipeline sends ({TOKEN_VAR}: one token that the "
            f"warehouse accepts, see its {TOKENS_VAR}) and restart the pipeline (make up)"
        )
    return (
        f"fix the pipeline's warehouse connection ({WAREHOUSE_CONN_VAR}: host, port and "
        f"one token in {TOKEN_VAR}) and restart the pipeline (make up)"
    )


def _commands_for(order_id: str, failed: list[Any]) -> list[str]:
    """What ends an order with these failed lines, by each line's error family.

    A refusal: fix or cancel the line. A conflict: reconcile with repair, then retry.
    The configuration: fix it (naming the setting), then retry; never fix or cancel,
    the line is fine. The order itself (a ledger refusal): read its status, then retry.
    An outage, a fenced try or a bug: retry.
    """
    commands: list[str] = []
    retry_too = not failed
    for line in failed:
        family = _family(line)
        if (
            getattr(line, "void_key", None)
            or str(line.state) == "CANCELLING"
            or (
                getattr(line, "error_final", None) is False
                and family in (ErrorFamily.REFUSED, ErrorFamily.CONFLICT)
            )
        ):
            # Amended since it failed (its error is no longer final for it as it stands),
            # or an amendment's void is pending: the line's next try finishes the job.
            retry_too = True
            continue
        if family is ErrorFamily.REFUSED:
            commands.append(
                f'shipping fix {order_id} --line {line.line_id} --sku NEW_SKU --reason "..."'
            )
            commands.append(f'shipping cancel {order_id} --line {line.line_id} --reason "..."')
        elif family is ErrorFamily.CONFLICT:
            commands.append(f"shipping reconcile {order_id} --repair")
            retry_too = True
        elif family is ErrorFamily.CONFIGURATION:
            commands.append(f"{_configuration_fix(line)}, then:")
            retry_too = True
        elif _is_final(line):  # the order itself: read why before retrying
            commands.append(f"shipping status {order_id}")
            retry_too = True
        else:  # outage, fenced, bug, or no error recorded
            retry_too = True
    if retry_too:
        commands.append(f"shipping retry {order_id}")
    return list(dict.fromkeys(commands))


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
        with _ledger() as ledger, _airflow() as api:
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
                        order_id, run_id, run.get("state"), _task_state(instances, INTAKE_TASK)
                    )
                    text = intake.describe()
                else:
                    now = progress(order, run, instances)
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
def amend(order_id: str, line_id: str, *, action: str, reason: str, **new: Any) -> int:
    """Fix or cancel a failed line (ledger, warehouse check), then retry it."""
    from shipping.amend import amend_line
    from shipping.errors import AmendmentRefused
    from shipping.ledger import Amendment

    with _ledger() as ledger, _warehouse() as client:
        _order(ledger, order_id)
        try:
            amended = amend_line(
                ledger,
                client,
                order_id=order_id,
                line_id=line_id,
                action=Amendment(action),
                actor=_actor(),
                reason=reason,
                **new,
            )
        except OrderNotFound as exc:
            raise CliError(str(exc)) from exc
        except AmendmentRefused as exc:
            raise CliError(f"refused: {exc}", EXIT_REFUSED) from exc
    line = amended.line
    done = (
        f"cancelled ({line.state})"
        if action == "CANCEL"
        else f"fixed: now {line.sku} x{line.quantity} under key {line.idempotency_key}"
    )
    print(f"line {line_id} of order {order_id} {done}")
    if amended.void_error:
        print(
            f"the old key could not be voided at the warehouse yet ({amended.void_error}); "
            "the line's retry does it first"
        )
    return retry(order_id, [line_id])


def _actor() -> str:
    return os.environ.get("SHIPPING_OPERATOR") or getpass.getuser()


# ---------------------------------------------------------------- reconcile
def reconcile(order_id: str | None, *, repair: bool, as_json: bool) -> int:
    """Compare the ledger with the warehouse; 0 clean, 4 drift left."""
    from shipping.reconcile import reconcile as run

    with _ledger() as ledger, _warehouse() as client:
        order_ids = [order_id] if order_id else ledger.order_ids()
        try:
            report = run(ledger, client, order_ids, fix=repair, actor=_actor())
        except OrderNotFound as exc:
            raise CliError(f"unknown order {order_id!r}") from exc
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for item in report.repaired:
            print(
                f"repaired: order {item.order_id} line {item.line_id}: {item.change} "
                f"({item.shipment_id})"
            )
        for drift in report.drift:
            hint = " (repairable: --repair)" if drift.repairable else ""
            print(
                f"drift: order {drift.order_id} line {drift.line_id}: {drift.kind}: "
                f"{drift.detail}{hint}"
            )
        verdict = "clean" if report.clean else f"{len(report.drift)} drift(s)"
        print(f"{report.orders_checked} order(s) checked: {verdict}")
    return EXIT_OK if report.clean else EXIT_DRIFT_OR_TIMEOUT


# --------------------------------------------------------------------- main
_EPILOG = {
    "submit": "exit codes: 0 accepted or already accepted, 1 Airflow unreachable, 2 refused, "
    "3 accepted before but its run failed at intake (prints `shipping retry ORDER_ID`); "
    "with --watch, those of watch",
    "status": "exit codes: 0 shown, 1 unknown order or ledger unreachable, 3 not in the "
    "ledger because its run failed at intake (prints `shipping retry ORDER_ID`)",
    "retry": "exit codes: 0 retried or nothing to retry, 1 unknown order or line, or "
    "Airflow unreachable. Clears the failed lines and the reducer; with no failed line, a "
    "failed reducer alone; for an order whose run failed at intake, register_order and "
    "everything after it",
    "watch": "exit codes: 0 done, 1 unknown order or unreachable, 3 needs an operator "
    "(prints the command to run), 4 timeout",
    "fix": "exit codes: 0 fixed and retried, 1 unknown order or line, or unreachable, "
    "2 refused (with the reason)",
    "cancel": "exit codes: 0 cancelled and retried, 1 unknown order or line, or unreachable, "
    "2 refused (with the reason)",
    "reconcile": "exit codes: 0 clean, 1 unknown order or unreachable, 4 drift found "
    "(after --repair: drift left)",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shipping", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, description=help_, epilog=_EPILOG[name])

    p = command("submit", "post an order (a JSON file) to Airflow")
    p.add_argument("order", type=Path, help="the order as JSON")
    p.add_argument("--watch", action="store_true", help="then follow it (as `watch`)")
    p.add_argument("--timeout", type=float, default=600.0, help="for --watch (default 600 s)")
    p = command("status", "show an order, its lines, runs and corrections")
    p.add_argument("order_id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = command("retry", "clear an order's failed lines and its reducer, so it finalizes")
    p.add_argument("order_id")
    p.add_argument(
        "--line",
        action="append",
        default=[],
        metavar="LINE_ID",
        help="only this line (repeatable; default: every failed line)",
    )
    p = command("watch", "follow an order live until it is done or needs an operator")
    p.add_argument("order_id")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    p = command("fix", "correct a failed line's SKU and/or quantity, then retry it")
    p.add_argument("order_id")
    p.add_argument("--line", required=True, metavar="LINE_ID")
    p.add_argument("--sku")
    p.add_argument("--quantity", type=int)
    p.add_argument("--reason", required=True)
    p = command("cancel", "cancel a failed line (never posted again), then let the order finalize")
    p.add_argument("order_id")
    p.add_argument("--line", required=True, metavar="LINE_ID")
    p.add_argument("--reason", required=True)
    p = command("reconcile", "compare the ledger with the warehouse")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("order_id", nargs="?")
    target.add_argument("--all", action="store_true", help="every order in the ledger")
    p.add_argument(
        "--repair", action="store_true", help="adopt warehouse shipments into the ledger where safe"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "submit":
        return submit(args.order, watch_timeout=args.timeout if args.watch else None)
    if args.command == "status":
        return status(args.order_id, as_json=args.json)
    if args.command == "retry":
        return retry(args.order_id, args.line)
    if args.command == "watch":
        return watch(args.order_id, timeout=args.timeout)
    if args.command == "fix":
        return amend(
            args.order_id,
            args.line,
            action="FIX",
            reason=args.reason,
            sku=args.sku,
            quantity=args.quantity,
        )
    if args.command == "cancel":
        return amend(args.order_id, args.line, action="CANCEL", reason=args.reason)
    return reconcile(args.order_id, repair=args.repair, as_json=args.json)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``shipping`` command."""
    args = _parser().parse_args(argv)
    # Text from the ledger and the warehouse is shown, never obeyed by the terminal.
    sys.stdout, sys.stderr = SafeStream.wrap(sys.stdout), SafeStream.wrap(sys.stderr)
    # The command reports for itself; the libraries' own warnings would only repeat it.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    try:
        return _run(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except (SettingsError, AirflowApiError, requests.RequestException) as exc:
        print(f"error: Airflow: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except WarehouseError as exc:
        print(f"error: warehouse: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except sqlalchemy.exc.OperationalError as exc:
        print(f"error: cannot reach the ledger: {exc.orig}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except LedgerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except BrokenPipeError:
        # The reader stopped early (`shipping status ORDER | head`): not a failure to report.
        # Whatever is still buffered goes nowhere, so the flush at exit cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_READER_GONE


if __name__ == "__main__":
    sys.exit(main())
