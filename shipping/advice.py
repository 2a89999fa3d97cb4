"""What ends an order that needs an operator: the one place that says which command.

``shipping watch``, ``shipping status`` and the ledger view in Airflow's UI give the same
advice, from the order as the ledger holds it and the states of its run's task instances
in Airflow. The advice follows each failed line's error family (:mod:`shipping.errors`),
never the wording of its message::

    refused        the warehouse refuses the line as it is  -> shipping fix / shipping cancel
    conflict       other content under the line's key       -> shipping reconcile --repair,
                                                               then shipping retry
    configuration  a token or a connection is wrong         -> fix that setting, then retry
    order          the ledger refused the order itself      -> shipping status, then retry
    outage, fenced, bug, nothing recorded                   -> shipping retry

A line whose ``ship_item`` failed for good is first asked about in Airflow's UI: its
``decide_line`` instance waits (``awaiting_input``) as a required action, which is named
first, the CLI second. While that decision is still to run, or ships an answer, the line
is not the operator's yet.

A line amended since it failed (its error no longer final for it), a cancelled line
still ``CANCELLING``, or a line whose void is pending needs only ``shipping retry``: its
next try finishes the amendment. A rejected order needs a corrected order under a new id.

Lines are read duck-typed (``line_id``, ``state``, ``last_error``, and where the ledger
has them ``error_class``, ``error_final``, ``void_key``): ledgers from before a column
existed still get advice. Nothing here imports Airflow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from shipping import errors
from shipping.connections import TOKEN_VAR, TOKENS_VAR
from shipping.contract import DAG_ID, WAREHOUSE_CONN_ID
from shipping.contract import DECIDE_TASK as DECIDE_TASK  # the task names, re-exported
from shipping.contract import INTAKE_TASK as INTAKE_TASK
from shipping.contract import REDUCER_TASK as REDUCER_TASK
from shipping.contract import SHIP_TASK as SHIP_TASK
from shipping.errors import ErrorFamily
from shipping.order import run_id_for

#: A line's decision waiting for an operator's answer (a required action in the UI).
AWAITING_INPUT: Final = "awaiting_input"
#: The pipeline's warehouse connection, as an environment variable.
WAREHOUSE_CONN_VAR: Final = f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}"
#: Task instance states after which no try comes by itself.
FAILED_TI_STATES: Final = frozenset({"failed", "upstream_failed"})
#: Line states that let an order finalize.
DONE_LINE_STATES: Final = frozenset({"SHIPPED", "CANCELLED"})

_FINAL_FAMILIES: Final = frozenset(f.family for f in errors.FAMILIES if f.final)


@dataclass(frozen=True)
class Needs:
    """What an order needs from an operator.

    Attributes:
        commands: The commands (or the setting to fix, then the commands) that end it, in
            the order to run them; empty when the order needs nobody.
        why: Why it needs an operator when its lines do not say (the reducer failed).
    """

    commands: list[str]
    why: str | None = None

    def __bool__(self) -> bool:
        return bool(self.commands)


def error_class(line: Any) -> str | None:
    """The class name of a line's last error: the ledger's ``error_class``, or (ledgers
    that do not store it) the class before the first ``:`` of ``last_error``."""
    stored = getattr(line, "error_class", None)
    if stored:
        return str(stored)
    head = str(getattr(line, "last_error", None) or "").split(":", 1)[0].strip()
    return head if head.isidentifier() else None


def family(line: Any) -> ErrorFamily | None:
    """The family of a line's last error (None for a line with no error recorded)."""
    return errors.family_of(error_class(line))


def is_final(line: Any) -> bool:
    """Whether a retry cannot cure a line's last error, as :mod:`shipping.errors` says."""
    return family(line) in _FINAL_FAMILIES


def all_done(order: Any) -> bool:
    """Whether every line of the order is shipped or cancelled (and it has lines)."""
    return bool(order.lines) and all(str(line.state) in DONE_LINE_STATES for line in order.lines)


def configuration_fix(line: Any) -> str:
    """What to fix, naming the setting, for a line that failed on the configuration."""
    if error_class(line) == errors.WarehouseAuthError.__name__:
        return (
            f"fix the warehouse token the pipeline sends ({TOKEN_VAR}: one token that the "
            f"warehouse accepts, see its {TOKENS_VAR}) and restart the pipeline (make up)"
        )
    return (
        f"fix the pipeline's warehouse connection ({WAREHOUSE_CONN_VAR}: host, port and "
        f"one token in {TOKEN_VAR}) and restart the pipeline (make up)"
    )


def commands_for(order_id: str, failed: Iterable[Any]) -> list[str]:
    """What ends an order with these failed lines, by each line's error family.

    A refusal: fix or cancel the line. A conflict: reconcile with repair, then retry.
    The configuration: fix it (naming the setting), then retry; never fix or cancel,
    the line is fine. The order itself (a ledger refusal): read its status, then retry.
    An outage, a fenced try or a bug: retry. No failed line at all: retry.
    """
    failed = list(failed)
    commands: list[str] = []
    retry_too = not failed
    for line in failed:
        kind = family(line)
        if (
            getattr(line, "void_key", None)
            or str(line.state) == "CANCELLING"
            or (
                getattr(line, "error_final", None) is False
                and kind in (ErrorFamily.REFUSED, ErrorFamily.CONFLICT)
            )
        ):
            # Amended since it failed (its error is no longer final for it as it stands),
            # or an amendment's void is pending: the line's next try finishes the job.
            retry_too = True
            continue
        if kind is ErrorFamily.REFUSED:
            commands.append(
                f'shipping fix {order_id} --line {line.line_id} --sku NEW_SKU --reason "..."'
            )
            commands.append(f'shipping cancel {order_id} --line {line.line_id} --reason "..."')
        elif kind is ErrorFamily.CONFLICT:
            commands.append(f"shipping reconcile {order_id} --repair")
            retry_too = True
        elif kind is ErrorFamily.CONFIGURATION:
            commands.append(f"{configuration_fix(line)}, then:")
            retry_too = True
        elif is_final(line):  # the order itself: read why before retrying
            commands.append(f"shipping status {order_id}")
            retry_too = True
        else:  # outage, fenced, bug, or no error recorded
            retry_too = True
    if retry_too:
        commands.append(f"shipping retry {order_id}")
    return list(dict.fromkeys(commands))


def required_action(airflow_url: str, run_id: str, map_index: int, line: Any) -> str:
    """The way out named first for a line whose decision waits: its required action."""
    where = (
        f"{airflow_url.rstrip('/')}/dags/{DAG_ID}/runs/{run_id}/tasks/{DECIDE_TASK}/mapped/"
        f"{map_index}/required_actions"
        if airflow_url
        else "Airflow UI, Browse -> Required Actions"
    )
    return f'answer the required action "Decide line {line.line_id} · {line.sku}": {where}'


def decision_pending(state: str | None) -> bool:
    """Whether a failed line's decision is still to ask, or ships an answer: no operator
    is needed for the line yet (a decision absent from the run counts as failed)."""
    return state != AWAITING_INPUT and state not in FAILED_TI_STATES and state != "skipped"


def needs(
    order: Any,
    *,
    line_task_states: Mapping[int, str | None],
    run_state: str | None,
    reducer_state: str | None,
    decision_states: Mapping[int, str | None] | None = None,
    airflow_url: str = "",
) -> Needs:
    """What the order needs from an operator, from the ledger and its run in Airflow.

    Args:
        order: The order as the ledger holds it: an
            :class:`~shipping.ledger.OrderStatus` (``lines`` in registration order, so a
            line's position is its map index) or an :class:`~shipping.ledger.OrderSummary`
            (its ``notable`` lines by position and its ``counts``).
        line_task_states: The state of ``ship_item``'s instance at each map index; an
            index left out is a line whose instance has not failed (a caller may pass
            only the failed ones).
        run_state: The state of the order's run (None: no run).
        reducer_state: The state of ``finalize_order`` in that run (None: not yet).
        decision_states: The state of ``decide_line``'s instance at the map index of each
            failed line (an index left out: that line has no decision, it is the CLI's).
        airflow_url: Airflow's address, to link a waiting decision's required action.
    """
    if str(order.state) == "REJECTED":
        return Needs(
            [
                f"the order was rejected ({order.reason}); post a corrected order under a "
                "new order_id"
            ]
        )
    if hasattr(order, "notable"):
        lines: Mapping[int, Any] = order.notable
        done = bool(order.counts) and all(
            str(state) in DONE_LINE_STATES for state, n in order.counts.items() if n
        )
    else:
        lines = dict(enumerate(order.lines))
        done = all_done(order)
    decisions = decision_states or {}
    failed: list[Any] = []
    asking: list[tuple[int, Any]] = []
    for index, line in sorted(lines.items()):
        if str(line.state) in DONE_LINE_STATES:
            continue
        if line_task_states.get(index) not in FAILED_TI_STATES:
            continue
        if index in decisions and decision_pending(decisions[index]):
            continue
        failed.append(line)
        if decisions.get(index) == AWAITING_INPUT:
            asking.append((index, line))
    if failed:
        commands: list[str] = []
        if asking:
            run_id = getattr(order, "run_id", None) or run_id_for(order.order_id)
            commands = [required_action(airflow_url, run_id, i, line) for i, line in asking]
            commands.append("or with the command line:")
        return Needs(commands + commands_for(order.order_id, failed))
    if str(order.state) != "SHIPPED" and (
        run_state == "failed" or reducer_state in FAILED_TI_STATES
    ):
        why = f"every line is done but {REDUCER_TASK} failed" if done else None
        return Needs(commands_for(order.order_id, []), why)
    return Needs([])
