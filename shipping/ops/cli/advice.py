"""What an operator should run for a failed line, by the family of its last error."""

from __future__ import annotations

from typing import Any

from shipping import errors
from shipping.connections import TOKEN_VAR, TOKENS_VAR
from shipping.errors import ErrorFamily
from shipping.ops.cli.common import WAREHOUSE_CONN_VAR


def warn_configuration(order_id: str, lines: list[Any]) -> None:
    """Say that lines failed on the configuration fail again until it is fixed."""
    config = [line for line in lines if error_family(line) is ErrorFamily.CONFIGURATION]
    for advice in dict.fromkeys(configuration_fix(line) for line in config):
        ids = ", ".join(line.line_id for line in config if configuration_fix(line) == advice)
        print(
            f"note: line(s) {ids} of order {order_id} failed on the configuration: "
            f"{advice} first, or they fail again"
        )


def error_class(line: Any) -> str | None:
    """The class name of a line's last error: the ledger's ``error_class``, or (ledgers
    that do not store it) the class before the first ``:`` of ``last_error``."""
    stored = getattr(line, "error_class", None)
    if stored:
        return str(stored)
    head = str(getattr(line, "last_error", None) or "").split(":", 1)[0].strip()
    return head if head.isidentifier() else None


def error_family(line: Any) -> ErrorFamily | None:
    """The family of a line's last error (None for a line with no error recorded)."""
    return errors.family_of(error_class(line))


_FINAL_FAMILIES = frozenset(f.family for f in errors.FAMILIES if f.final)


def is_final(line: Any) -> bool:
    """Whether a retry cannot cure a line's last error, as :mod:`shipping.errors` says."""
    return error_family(line) in _FINAL_FAMILIES


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


def commands_for(order_id: str, failed: list[Any]) -> list[str]:
    """What ends an order with these failed lines, by each line's error family.

    A refusal: fix or cancel the line. A conflict: reconcile with repair, then retry.
    The configuration: fix it (naming the setting), then retry; never fix or cancel,
    the line is fine. The order itself (a ledger refusal): read its status, then retry.
    An outage, a fenced try or a bug: retry.
    """
    commands: list[str] = []
    retry_too = not failed
    for line in failed:
        family = error_family(line)
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
