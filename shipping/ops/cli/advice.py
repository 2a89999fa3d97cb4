"""What an operator should run for a failed line, by the family of its last error.

The advice itself is :mod:`shipping.advice` (the ledger view in Airflow's UI gives the
same); this module prints the commands' own notes.
"""

from __future__ import annotations

from typing import Any

from shipping.advice import commands_for, configuration_fix, error_class, is_final
from shipping.advice import family as error_family
from shipping.errors import ErrorFamily

__all__ = [
    "commands_for",
    "configuration_fix",
    "error_class",
    "error_family",
    "is_final",
    "warn_configuration",
]


def warn_configuration(order_id: str, lines: list[Any]) -> None:
    """Say that lines failed on the configuration fail again until it is fixed."""
    config = [line for line in lines if error_family(line) is ErrorFamily.CONFIGURATION]
    for advice in dict.fromkeys(configuration_fix(line) for line in config):
        ids = ", ".join(line.line_id for line in config if configuration_fix(line) == advice)
        print(
            f"note: line(s) {ids} of order {order_id} failed on the configuration: "
            f"{advice} first, or they fail again"
        )
