"""The ledger's states and read models: what callers get back, apart from the tables."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from shipping.order import OrderLine

Clock = Callable[[], datetime]


class OrderState(StrEnum):
    """Where an order stands."""

    RECEIVED = "RECEIVED"
    SHIPPING = "SHIPPING"
    SHIPPED = "SHIPPED"
    REJECTED = "REJECTED"


class LineState(StrEnum):
    """Where an order line stands."""

    PENDING = "PENDING"
    SHIPPED = "SHIPPED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"  # cancelled by an operator; its key not yet voided
    CANCELLED = "CANCELLED"  # by an operator, its key voided: nothing ships for it


#: Line states that let an order finalize.
DONE_LINE_STATES: Final = frozenset({LineState.SHIPPED, LineState.CANCELLED})


def amendment_refusal(state: LineState, shipment_id: str | None) -> str | None:
    """Why a line in ``state`` cannot be fixed or cancelled, or None if it can."""
    if state is LineState.FAILED and shipment_id is None:
        return None
    shipped = f" as {shipment_id}" if shipment_id else ""
    return f"the line is {state}{shipped}; only a FAILED line without a shipment can be amended"


class Amendment(StrEnum):
    """What an operator did to a failed line."""

    FIX = "FIX"
    CANCEL = "CANCEL"
    VOID = "VOID"  # reconciliation voided a shipment of other content under the line's key


class RunRole(StrEnum):
    """What an Airflow run of an order turned out to be."""

    OWNER = "OWNER"  # registered the order: its run ships the lines
    DUPLICATE = "DUPLICATE"  # the same order again under another run id: does nothing
    REFUSED = "REFUSED"  # other content under the order's id, or a rejected order


class TryOutcome(StrEnum):
    """How one Airflow try of a line ended."""

    SHIPPED = "SHIPPED"
    FAILED = "FAILED"


# Read models.


@dataclass(frozen=True)
class LineStatus:
    """One line as the ledger holds it."""

    line_id: str
    sku: str
    quantity: int
    state: LineState
    attempts: int
    shipment_id: str | None
    last_error: str | None
    #: The last error's class name and whether it is final (see shipping.errors.classify).
    error_class: str | None = None
    error_final: bool | None = None
    #: The line's content revision: each fix adds one, and the key changes with it.
    revision: int = 0
    #: The key the line ships under now.
    idempotency_key: str = ""
    #: A key of this line still to be voided at the warehouse (an amendment's fence).
    void_key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The line in the JSON of ``shipping status --json``."""
        return {
            "line_id": self.line_id,
            "sku": self.sku,
            "quantity": self.quantity,
            "state": self.state.value,
            "attempts": self.attempts,
            "shipment_id": self.shipment_id,
            "last_error": self.last_error,
            "error_class": self.error_class,
            "error_final": self.error_final,
            "revision": self.revision,
            "idempotency_key": self.idempotency_key,
            "void_pending": self.void_key,
        }


@dataclass(frozen=True)
class RunRecord:
    """A run, other than the owner, that presented the order."""

    run_id: str
    role: RunRole
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        """The run in the JSON of ``shipping status --json``."""
        return {"run_id": self.run_id, "role": self.role.value, "reason": self.reason}


@dataclass(frozen=True)
class AmendmentRecord:
    """One fix or cancel of a line, as the ledger keeps it."""

    line_id: str
    action: Amendment
    actor: str
    reason: str
    old_sku: str
    old_quantity: int
    new_sku: str | None
    new_quantity: int | None
    recorded_at: datetime
    #: The key this amendment voids at the warehouse, the shipment it cancelled there
    #: (None if nothing had shipped under it) and when the void was confirmed (None while
    #: it is pending).
    void_key: str | None = None
    voided_shipment_id: str | None = None
    voided_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """The amendment in the JSON of ``shipping status --json``."""
        return {
            "line_id": self.line_id,
            "action": self.action.value,
            "by": self.actor,
            "reason": self.reason,
            "at": self.recorded_at.isoformat(),
            "old": {"sku": self.old_sku, "quantity": self.old_quantity},
            "new": (
                None
                if self.new_sku is None and self.new_quantity is None
                else {"sku": self.new_sku, "quantity": self.new_quantity}
            ),
            "void": {
                "key": self.void_key,
                "cancelled_shipment_id": self.voided_shipment_id,
                "voided_at": self.voided_at.isoformat() if self.voided_at else None,
            },
        }


@dataclass(frozen=True)
class OrderStatus:
    """An order and its lines (in registration order) as the ledger holds them.

    Attributes:
        order_id: The order's id.
        state: The order's state.
        reason: Why the order was rejected; None unless it was.
        shipped_at: When the order became SHIPPED; None before.
        lines: Its lines, in the order they were registered.
        run_id: The Airflow run that owns the order (None for an order recorded before
            runs were).
        other_runs: Other runs that presented the order: duplicates and refusals.
        amendments: Operators' fixes and cancels of its lines, oldest first.
        ship_to: Its address (None for a rejected order).
    """

    order_id: str
    state: OrderState
    reason: str | None
    shipped_at: datetime | None
    lines: tuple[LineStatus, ...]
    run_id: str | None = None
    other_runs: tuple[RunRecord, ...] = ()
    amendments: tuple[AmendmentRecord, ...] = ()
    ship_to: dict[str, Any] | None = None

    def line(self, line_id: str) -> LineStatus | None:
        """The line ``line_id``, or None."""
        return next((line for line in self.lines if line.line_id == line_id), None)

    def to_json(self) -> dict[str, Any]:
        """The order in the JSON of ``shipping status --json`` (the contract of design.md,
        plus ``reason``, ``run_id``, ``other_runs``, ``cancelled_lines`` and
        ``amendments``)."""
        return {
            "order_id": self.order_id,
            "state": self.state.value,
            "reason": self.reason,
            "run_id": self.run_id,
            "other_runs": [run.to_json() for run in self.other_runs],
            "cancelled_lines": sum(1 for x in self.lines if x.state is LineState.CANCELLED),
            "lines": [line.to_json() for line in self.lines],
            "amendments": [amendment.to_json() for amendment in self.amendments],
        }


@dataclass(frozen=True)
class OrderSummary:
    """An order with its lines counted by state, and only the lines that may need someone.

    Attributes:
        order_id: The order's id.
        state: The order's state.
        reason: Why it was rejected; None unless it was.
        run_id: The Airflow run that owns the order.
        counts: How many lines are in each state.
        notable: The lines not shipped or cancelled that failed, carry an error, are being
            cancelled or have a void pending, and any the caller asked for, by position
            (their map index).
        retries: The Airflow tries of its lines after each line's first, as recorded.
    """

    order_id: str
    state: OrderState
    reason: str | None
    run_id: str | None
    counts: dict[LineState, int]
    notable: dict[int, LineStatus]
    retries: int = 0

    @property
    def total(self) -> int:
        """How many lines the order has."""
        return sum(self.counts.values())


@dataclass(frozen=True)
class Registration:
    """What :meth:`Ledger.register_order` decided for a run.

    Attributes:
        lines: The lines this run ships: all of them for the owner run, none for a
            duplicate.
        owner_run_id: The run that owns the order.
        duplicate: This run is not the owner: it must do nothing.
    """

    lines: list[OrderLine]
    owner_run_id: str
    duplicate: bool


@dataclass(frozen=True)
class Finalization:
    """What :meth:`Ledger.finalize_order` did.

    Attributes:
        summary: The order after the call.
        transitioned: True only for the one call that made the order SHIPPED.
    """

    summary: OrderStatus
    transitioned: bool
