"""The ledger: the pipeline's own record of orders, their lines and every shipping try.

Airflow runs tasks at least once, so every write here is an upsert under a unique key in
one transaction per operation, and is safe to repeat: registering an order again changes
nothing, recording the same Airflow try twice counts it once, a shipped line is never
downgraded, and an order becomes ``SHIPPED`` exactly once. It runs on PostgreSQL and on
SQLite (tests, local runs); :func:`create_schema` creates its tables.

States::

    order  RECEIVED -> SHIPPING -> SHIPPED, or REJECTED at once (a business rule failed);
           SHIPPED once every line is SHIPPED or CANCELLED
    line   PENDING or FAILED -> FAILED or SHIPPED; SHIPPED is never left;
           FAILED -> CANCELLED by an operator (never posted again)

Operators amend a FAILED line that has no shipment: a fix changes its SKU and/or quantity
(the line's task reads them when it runs again), a cancel makes it CANCELLED. Every
amendment is kept in ``line_amendments``: who, when, why, old and new values.

One run per order: the run that registers an order first owns it (``orders.owner_run_id``);
any other run of the same content is a duplicate and ships nothing, a run with other
content under the same ``order_id`` is refused. ``order_runs`` keeps every run that
presented the order, with its role and reason.

A line's ``attempts`` is the number of warehouse requests made for it: the sum of the
``requests`` of its tries (one row per Airflow try in ``line_tries``), recomputed in the
transaction that records a try.

Timestamps come from the database's clock, or from a clock injected into :class:`Ledger`;
no decision depends on them.

Exceptions (none is worth an immediate retry: the data must change first)::

    LedgerError              base of every error raised here
    ├── OrderConflict        the order_id holds other content, or its state forbids the change
    ├── OrderRejected        the order was rejected; it stays rejected
    ├── OrderNotFound        no such order, or no such line in it
    ├── OrderIncomplete      finalize: some lines are not shipped yet (names them)
    ├── ShipmentMismatch     a shipped line reported again under another shipment id
    └── AmendmentRefused     an operator's fix or cancel is not allowed (says why)
"""

from __future__ import annotations

from shipping.errors import (
    AmendmentRefused,
    LedgerError,
    OrderConflict,
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    ShipmentMismatch,
)
from shipping.ledger.models import (
    DONE_LINE_STATES,
    Amendment,
    AmendmentRecord,
    Finalization,
    LineState,
    LineStatus,
    OrderState,
    OrderStatus,
    OrderSummary,
    Registration,
    RunRecord,
    RunRole,
    TryOutcome,
    amendment_refusal,
)
from shipping.ledger.repository import Ledger
from shipping.ledger.schema import (
    create_schema,
    engine_from_url,
    line_amendments,
    line_tries,
    metadata,
    order_lines,
    order_runs,
    orders,
)

__all__ = [
    "DONE_LINE_STATES",
    "amendment_refusal",
    "Amendment",
    "AmendmentRecord",
    "AmendmentRefused",
    "Finalization",
    "Ledger",
    "LedgerError",
    "LineState",
    "LineStatus",
    "OrderConflict",
    "OrderIncomplete",
    "OrderNotFound",
    "OrderRejected",
    "OrderState",
    "OrderStatus",
    "OrderSummary",
    "Registration",
    "RunRecord",
    "RunRole",
    "ShipmentMismatch",
    "TryOutcome",
    "create_schema",
    "engine_from_url",
    "line_amendments",
    "line_tries",
    "metadata",
    "order_lines",
    "order_runs",
    "orders",
]
