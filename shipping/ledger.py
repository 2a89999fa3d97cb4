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
    └── ShipmentMismatch     a shipped line reported again under another shipment id
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite

from shipping.errors import (
    AmendmentRefused,
    LedgerError,
    OrderConflict,
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    ShipmentMismatch,
)
from shipping.order import Order, OrderLine, idempotency_key, run_id_for

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

logger = logging.getLogger(__name__)

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
    CANCELLED = "CANCELLED"  # by an operator; never posted again


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
                if self.action is Amendment.CANCEL
                else {"sku": self.new_sku, "quantity": self.new_quantity}
            ),
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


# Tables.


class _UTCDateTime(sa.TypeDecorator[datetime]):
    """An aware UTC datetime on every dialect (SQLite stores it naive, in UTC)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger's clock must return timezone-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _state_type(enum: type[StrEnum], name: str) -> sa.Enum:
    # VARCHAR plus a CHECK rather than a native PostgreSQL enum: adding a state later is
    # then a plain constraint change on both dialects.
    return sa.Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )


metadata: Final = sa.MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    }
)

_JSON: Final = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True), "postgresql"
)

orders: Final = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(64), nullable=False),
    sa.Column("ship_to", _JSON, nullable=True),  # None for rejected orders
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("state", _state_type(OrderState, "order_state"), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", _UTCDateTime, nullable=False),
    sa.Column("updated_at", _UTCDateTime, nullable=False),
    sa.Column("shipped_at", _UTCDateTime, nullable=True),
    # Added after the first release: create_schema adds it to older databases.
    sa.Column("owner_run_id", sa.String(250), nullable=True),
)

order_runs: Final = sa.Table(
    "order_runs",
    metadata,
    sa.Column(
        "order_id",
        sa.String(64),
        sa.ForeignKey(orders.c.order_id, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("role", _state_type(RunRole, "run_role"), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("recorded_at", _UTCDateTime, nullable=False),
)

order_lines: Final = sa.Table(
    "order_lines",
    metadata,
    sa.Column(
        "order_id",
        sa.String(64),
        sa.ForeignKey(orders.c.order_id, ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("line_id", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("sku", sa.String(64), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=False, unique=True),
    sa.Column("state", _state_type(LineState, "line_state"), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("shipment_id", sa.String(255), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", _UTCDateTime, nullable=False),
    sa.Column("updated_at", _UTCDateTime, nullable=False),
    sa.UniqueConstraint("order_id", "position"),
    sa.CheckConstraint("quantity > 0", name="quantity_positive"),
    sa.CheckConstraint("attempts >= 0", name="attempts_not_negative"),
)

line_tries: Final = sa.Table(
    "line_tries",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("line_id", sa.String(64), primary_key=True),
    sa.Column("try_number", sa.Integer, primary_key=True),
    sa.Column("requests", sa.Integer, nullable=False),
    sa.Column("outcome", _state_type(TryOutcome, "try_outcome"), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("recorded_at", _UTCDateTime, nullable=False),
    sa.ForeignKeyConstraint(
        ["order_id", "line_id"],
        [order_lines.c.order_id, order_lines.c.line_id],
        ondelete="CASCADE",
    ),
    sa.CheckConstraint("requests >= 0", name="requests_not_negative"),
)

line_amendments: Final = sa.Table(
    "line_amendments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("line_id", sa.String(64), nullable=False),
    sa.Column("action", _state_type(Amendment, "amendment"), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("old_sku", sa.String(64), nullable=False),
    sa.Column("old_quantity", sa.Integer, nullable=False),
    sa.Column("new_sku", sa.String(64), nullable=True),
    sa.Column("new_quantity", sa.Integer, nullable=True),
    sa.Column("recorded_at", _UTCDateTime, nullable=False),
    sa.ForeignKeyConstraint(
        ["order_id", "line_id"],
        [order_lines.c.order_id, order_lines.c.line_id],
        ondelete="CASCADE",
    ),
    sa.Index(None, "order_id", "line_id"),
)

# Serializes concurrent create_schema calls on PostgreSQL (any constant shared by callers).
_SCHEMA_LOCK_KEY: Final = 0x5348495050494E47  # "SHIPPING"


def create_schema(engine: sa.Engine) -> None:
    """Create the ledger's tables that do not exist yet; safe to call again and concurrently.

    Args:
        engine: An engine on the ledger's database.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # DDL is transactional on PostgreSQL: with the lock, racing callers see the
            # tables created by the first one instead of failing on duplicate types.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
        metadata.create_all(conn, checkfirst=True)
        _add_missing_columns(conn)
        if conn.dialect.name == "postgresql":
            _refresh_checks(conn)


def _refresh_checks(conn: sa.Connection) -> None:
    """Re-create the CHECK constraints, so a state added by a later release is allowed.

    (PostgreSQL only: SQLite cannot alter a constraint; its ledgers are for tests.)
    """
    for table in metadata.sorted_tables:
        for constraint in table.constraints:
            if isinstance(constraint, sa.CheckConstraint) and isinstance(constraint.name, str):
                conn.exec_driver_sql(
                    f"ALTER TABLE {table.name} DROP CONSTRAINT IF EXISTS {constraint.name}"
                )
                conn.execute(sa.schema.AddConstraint(constraint))


def _add_missing_columns(conn: sa.Connection) -> None:
    """Add the nullable columns that a database made by an older release lacks."""
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            assert column.nullable, f"{table.name}.{column.name}: only nullable columns are added"
            kind = column.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
            logger.warning("ledger: added column %s.%s", table.name, column.name)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _on_sqlite_begin) instead of pysqlite's own
    # implicit, deferred transactions.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        # WAL lets readers run beside the writer; NORMAL sync is durable enough with WAL.
        # The mode belongs to the file and persists, so only the first connection sets it.
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            try:
                cursor.execute("PRAGMA journal_mode = WAL")
            except sqlite3.OperationalError:
                # A new file with several first connections at once: another one is
                # switching it; this connection follows the file's mode.
                logger.debug("SQLite journal mode left to a concurrent connection")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _on_sqlite_begin(conn: sa.Connection) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads and then writes fails
    # with SQLITE_BUSY at once when another writer got in between, without waiting.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def engine_from_url(url: str | sa.URL, **kwargs: Any) -> sa.Engine:
    """An engine for the ledger on a ``sqlite:///`` or ``postgresql+psycopg2://`` URL.

    SQLite gets foreign keys, WAL and transactions that take the write lock up front, so
    concurrent writers wait for each other (up to the busy timeout) instead of failing.

    Args:
        url: The database URL.
        **kwargs: Passed on to :func:`sqlalchemy.create_engine`.

    Raises:
        ValueError: The URL names a database the ledger does not support.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        # Wait up to 30 s for another writer's lock instead of failing at once.
        kwargs["connect_args"] = {"timeout": 30, **kwargs.get("connect_args", {})}
        engine = sa.create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    elif backend == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        engine = sa.create_engine(parsed, **kwargs)
    else:
        raise ValueError(
            f"ledger database URL {parsed.render_as_string()!r}: "
            f"unsupported backend {backend!r} (use sqlite or postgresql)"
        )
    return engine


def _insert(conn: sa.Connection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the dialect of ``conn``."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the ledger runs on PostgreSQL and SQLite, not {name}")


class Ledger:
    """The pipeline's record of orders and lines; every method is one transaction.

    Args:
        engine: An engine on a database where :func:`create_schema` has run.
        clock: Returns the current time (timezone-aware) for timestamps; by default
            the database's clock.
    """

    def __init__(self, engine: sa.Engine, *, clock: Clock | None = None) -> None:
        self.engine = engine
        self._clock = clock

    @classmethod
    def from_url(cls, url: str | sa.URL, *, clock: Clock | None = None) -> Ledger:
        """A ledger on a new engine for ``url`` (see :func:`engine_from_url`)."""
        return cls(engine_from_url(url), clock=clock)

    def create_schema(self) -> None:
        """Create the ledger's tables if missing (see the module's :func:`create_schema`)."""
        create_schema(self.engine)

    def dispose(self) -> None:
        """Close the engine's pooled connections."""
        self.engine.dispose()

    def _now(self) -> sa.ColumnElement[datetime]:
        if self._clock is None:
            return sa.func.now(type_=_UTCDateTime())
        return sa.literal(self._clock(), _UTCDateTime())

    # Writes.

    def register_order(self, order: Order, *, run_id: str | None = None) -> Registration:
        """Record a new order as RECEIVED and its lines as PENDING, for the run that owns it.

        The first run to register an order owns it. Registering again from the owner run
        (a retry or a clear) changes nothing; from another run with the same content, the
        run is recorded as a DUPLICATE and gets no lines to ship.

        Args:
            order: The validated order.
            run_id: The Airflow run registering it; the order's own run id
                (``order-<order_id>``) when omitted.

        Returns:
            The lines this run ships (none for a duplicate) and the run that owns the order.

        Raises:
            OrderConflict: The order_id is already registered with other content; the run
                is recorded as REFUSED.
            OrderRejected: The order was rejected before.
            ValueError: Two lines share a line_id (``parse_order`` refuses such orders).
        """
        line_ids = [line.line_id for line in order.items]
        if len(set(line_ids)) != len(line_ids):
            raise ValueError(f"order {order.order_id!r} has duplicate line ids")
        run_id = run_id or order.run_id
        content_hash = order.content_hash()
        refusal: LedgerError | None = None
        with self.engine.begin() as conn:
            now = self._now()
            inserted = conn.execute(
                _insert(conn, orders)
                .values(
                    order_id=order.order_id,
                    customer_id=order.customer_id,
                    ship_to=order.ship_to.to_dict(),
                    content_hash=content_hash,
                    state=OrderState.RECEIVED,
                    owner_run_id=run_id,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[orders.c.order_id])
            ).rowcount
            row = self._lock_order(conn, order.order_id)
            owner = row.owner_run_id or self._adopt_owner(conn, order.order_id, run_id)
            if row.content_hash != content_hash:
                refusal = OrderConflict(
                    order.order_id,
                    f"already registered by run {owner!r} with different content",
                )
            elif row.state is OrderState.REJECTED:
                refusal = OrderRejected(order.order_id, row.reason)
            if refusal is not None:
                # Recorded, and committed, before the error is raised.
                self._record_run(conn, order.order_id, run_id, RunRole.REFUSED, str(refusal))
            elif owner != run_id:
                self._record_run(
                    conn,
                    order.order_id,
                    run_id,
                    RunRole.DUPLICATE,
                    f"the order belongs to run {owner}",
                )
            else:
                self._record_run(conn, order.order_id, run_id, RunRole.OWNER, None)
                conn.execute(
                    _insert(conn, order_lines)
                    .values(state=LineState.PENDING, attempts=0, created_at=now, updated_at=now)
                    .on_conflict_do_nothing(
                        index_elements=[order_lines.c.order_id, order_lines.c.line_id]
                    ),
                    [
                        {
                            "order_id": order.order_id,
                            "line_id": line.line_id,
                            "position": position,
                            "sku": line.sku,
                            "quantity": line.quantity,
                            "idempotency_key": idempotency_key(order.order_id, line.line_id),
                        }
                        for position, line in enumerate(order.items)
                    ],
                )
        if refusal is not None:
            raise refusal
        if owner != run_id:
            logger.warning(
                "order %s belongs to run %s; run %s is a duplicate and ships nothing",
                order.order_id,
                owner,
                run_id,
            )
            return Registration(lines=[], owner_run_id=owner, duplicate=True)
        if inserted:
            logger.info("order %s registered with %d lines", order.order_id, len(order.items))
        else:
            logger.info("order %s was registered already; nothing changed", order.order_id)
        return Registration(lines=list(order.items), owner_run_id=owner, duplicate=False)

    def _adopt_owner(self, conn: sa.Connection, order_id: str, run_id: str) -> str:
        # An order recorded before runs were: the first run to come back owns it.
        conn.execute(
            sa.update(orders).where(orders.c.order_id == order_id).values(owner_run_id=run_id)
        )
        return run_id

    def _record_run(
        self, conn: sa.Connection, order_id: str, run_id: str, role: RunRole, reason: str | None
    ) -> None:
        # The first record of a run stays: a retry of the run says nothing new.
        conn.execute(
            _insert(conn, order_runs)
            .values(
                order_id=order_id, run_id=run_id, role=role, reason=reason, recorded_at=self._now()
            )
            .on_conflict_do_nothing(index_elements=[order_runs.c.order_id, order_runs.c.run_id])
        )

    def reject_order(
        self,
        *,
        order_id: str,
        customer_id: str,
        reason: str,
        content_hash: str,
        run_id: str | None = None,
    ) -> None:
        """Record an order that broke a business rule as REJECTED, without lines.

        For orders whose lines cannot even be stored (duplicate line ids). Repeating the
        call changes nothing; the first reason stays. An order registered before is
        never rejected afterwards (its lines may have shipped).

        Args:
            order_id: The order's id.
            customer_id: The order's customer.
            reason: Why it is rejected, for the operator.
            content_hash: :func:`shipping.order.content_hash` of the order document, so a
                different order under the same id is told apart.
            run_id: The Airflow run that presented it; ``order-<order_id>`` when omitted.

        Raises:
            OrderConflict: The order_id holds other content, or a registered order; the
                run is recorded as REFUSED.
        """
        run_id = run_id or run_id_for(order_id)
        refusal: OrderConflict | None = None
        with self.engine.begin() as conn:
            now = self._now()
            inserted = conn.execute(
                _insert(conn, orders)
                .values(
                    order_id=order_id,
                    customer_id=customer_id,
                    ship_to=None,
                    content_hash=content_hash,
                    state=OrderState.REJECTED,
                    reason=reason,
                    owner_run_id=run_id,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[orders.c.order_id])
            ).rowcount
            row = self._lock_order(conn, order_id)
            owner = row.owner_run_id or self._adopt_owner(conn, order_id, run_id)
            if row.content_hash != content_hash:
                refusal = OrderConflict(
                    order_id, f"already recorded by run {owner!r} with different content"
                )
            elif row.state is not OrderState.REJECTED:
                refusal = OrderConflict(
                    order_id, f"already registered by run {owner!r} and {row.state}"
                )
            role = RunRole.OWNER if owner == run_id and refusal is None else RunRole.REFUSED
            self._record_run(conn, order_id, run_id, role, str(refusal) if refusal else reason)
        if refusal is not None:
            raise refusal
        if inserted:
            logger.warning("order %s rejected: %s", order_id, reason)

    def record_shipped(
        self, *, order_id: str, line_id: str, try_number: int, requests: int, shipment_id: str
    ) -> LineStatus:
        """Record that a try shipped a line: the line becomes SHIPPED with its shipment id.

        The order moves from RECEIVED to SHIPPING. Recording the same try again is a no-op.

        Args:
            order_id: The order's id.
            line_id: The line's id.
            try_number: The Airflow try that made the requests.
            requests: Warehouse requests made in that try.
            shipment_id: The warehouse's shipment id.

        Returns:
            The line after the call.

        Raises:
            OrderNotFound: No such line.
            ShipmentMismatch: The line shipped under another shipment id; nothing recorded.
        """
        with self.engine.begin() as conn:
            line = self._lock_line(conn, order_id, line_id)
            if line.state is LineState.SHIPPED and line.shipment_id != shipment_id:
                raise ShipmentMismatch(order_id, line_id, line.shipment_id, shipment_id)
            self._record_try(
                conn,
                order_id=order_id,
                line_id=line_id,
                try_number=try_number,
                requests=requests,
                outcome=TryOutcome.SHIPPED,
                error=None,
            )
            self._update_line(
                conn,
                line,
                state=LineState.SHIPPED,
                shipment_id=shipment_id,
                last_error=line.last_error,  # kept: it tells what went wrong on the way
            )
            self._mark_shipping(conn, order_id)
            status = self._read_line(conn, order_id, line_id)
        logger.info(
            "order %s line %s shipped as %s (try %d, %d attempts)",
            order_id,
            line_id,
            shipment_id,
            try_number,
            status.attempts,
        )
        return status

    def record_failed(
        self, *, order_id: str, line_id: str, try_number: int, requests: int, error: str
    ) -> LineStatus:
        """Record that a try failed to ship a line: the line becomes FAILED with the error.

        A SHIPPED line stays SHIPPED (a late failure never downgrades it), though the
        try's requests still count in its attempts. The order moves from RECEIVED to
        SHIPPING. Recording the same try again is a no-op.

        Args:
            order_id: The order's id.
            line_id: The line's id.
            try_number: The Airflow try that made the requests.
            requests: Warehouse requests made in that try.
            error: What went wrong, for the operator.

        Returns:
            The line after the call.

        Raises:
            OrderNotFound: No such line.
        """
        with self.engine.begin() as conn:
            line = self._lock_line(conn, order_id, line_id)
            self._record_try(
                conn,
                order_id=order_id,
                line_id=line_id,
                try_number=try_number,
                requests=requests,
                outcome=TryOutcome.FAILED,
                error=error,
            )
            if line.state in DONE_LINE_STATES:
                self._update_line(
                    conn,
                    line,
                    state=line.state,
                    shipment_id=line.shipment_id,
                    last_error=line.last_error,
                )
            else:
                self._update_line(
                    conn, line, state=LineState.FAILED, shipment_id=None, last_error=error
                )
            self._mark_shipping(conn, order_id)
            status = self._read_line(conn, order_id, line_id)
        logger.warning(
            "order %s line %s failed in try %d (%d attempts, line %s): %s",
            order_id,
            line_id,
            try_number,
            status.attempts,
            status.state,
            error,
        )
        return status

    def finalize_order(self, order_id: str) -> Finalization:
        """Make the order SHIPPED once every line is shipped or cancelled; exactly one call
        transitions.

        Args:
            order_id: The order's id.

        Returns:
            The order after the call, and whether this call made it SHIPPED.

        Raises:
            OrderNotFound: No such order.
            OrderRejected: The order was rejected.
            OrderIncomplete: Some lines are neither shipped nor cancelled (named in the
                error).
        """
        with self.engine.begin() as conn:
            order = self._lock_order(conn, order_id)
            if order.state is OrderState.REJECTED:
                raise OrderRejected(order_id, order.reason)
            states = conn.execute(
                sa.select(order_lines.c.line_id, order_lines.c.state)
                .where(order_lines.c.order_id == order_id)
                .order_by(order_lines.c.position)
            ).all()
            missing = {r.line_id: r.state for r in states if r.state not in DONE_LINE_STATES}
            if not states or missing:
                raise OrderIncomplete(order_id, missing)
            now = self._now()
            # Conditional on the state, so racing or repeated calls transition once.
            transitioned = (
                conn.execute(
                    sa.update(orders)
                    .where(orders.c.order_id == order_id, orders.c.state != OrderState.SHIPPED)
                    .values(
                        state=OrderState.SHIPPED,
                        shipped_at=sa.func.coalesce(orders.c.shipped_at, now),
                        updated_at=now,
                    )
                ).rowcount
                == 1
            )
            summary = self._read_order(conn, order_id)
        assert summary is not None  # locked above, in this transaction
        if transitioned:
            logger.info("order %s shipped: all %d lines", order_id, len(summary.lines))
        return Finalization(summary=summary, transitioned=transitioned)

    def amend_line(
        self,
        *,
        order_id: str,
        line_id: str,
        action: Amendment,
        actor: str,
        reason: str,
        sku: str | None = None,
        quantity: int | None = None,
    ) -> LineStatus:
        """Fix or cancel a FAILED line that has no shipment, and keep who, when and why.

        A fix sets the line's SKU and/or quantity (its task reads them when it runs
        again) and leaves it FAILED until then; a cancel makes it CANCELLED.

        Args:
            order_id: The order's id.
            line_id: The line's id.
            action: FIX or CANCEL.
            actor: Who amends it.
            reason: Why, for the audit trail (required).
            sku: The new SKU (FIX).
            quantity: The new quantity (FIX).

        Returns:
            The line after the call.

        Raises:
            OrderNotFound: No such order or line.
            AmendmentRefused: The line is not FAILED, has a shipment, the order is not
                open, the reason is empty, or a fix changes nothing.
        """
        if not reason.strip():
            raise AmendmentRefused(order_id, line_id, "a reason is required")
        if action is Amendment.FIX and sku is None and quantity is None:
            raise AmendmentRefused(order_id, line_id, "a fix needs a new SKU or quantity")
        if action is Amendment.CANCEL and (sku is not None or quantity is not None):
            raise AmendmentRefused(order_id, line_id, "a cancel takes no SKU or quantity")
        with self.engine.begin() as conn:
            order = self._lock_order(conn, order_id)
            line = self._lock_line(conn, order_id, line_id)
            if order.state in (OrderState.SHIPPED, OrderState.REJECTED):
                raise AmendmentRefused(order_id, line_id, f"the order is {order.state}")
            if refusal := amendment_refusal(line.state, line.shipment_id):
                raise AmendmentRefused(order_id, line_id, refusal)
            new_sku = sku if sku is not None else line.sku
            new_quantity = quantity if quantity is not None else line.quantity
            if action is Amendment.FIX and (new_sku, new_quantity) == (line.sku, line.quantity):
                raise AmendmentRefused(order_id, line_id, "the fix changes nothing")
            now = self._now()
            conn.execute(
                sa.insert(line_amendments).values(
                    order_id=order_id,
                    line_id=line_id,
                    action=action,
                    actor=actor,
                    reason=reason,
                    old_sku=line.sku,
                    old_quantity=line.quantity,
                    new_sku=new_sku if action is Amendment.FIX else None,
                    new_quantity=new_quantity if action is Amendment.FIX else None,
                    recorded_at=now,
                )
            )
            values: dict[str, Any] = {"updated_at": now}
            if action is Amendment.FIX:
                values.update(sku=new_sku, quantity=new_quantity)
            else:
                values.update(state=LineState.CANCELLED)
            conn.execute(
                sa.update(order_lines)
                .where(order_lines.c.order_id == order_id, order_lines.c.line_id == line_id)
                .values(**values)
            )
            status = self._read_line(conn, order_id, line_id)
        logger.warning("order %s line %s: %s by %s (%s)", order_id, line_id, action, actor, reason)
        return status

    # Reads.

    def get_line(self, *, order_id: str, line_id: str) -> LineStatus:
        """One line as the ledger holds it now (a fix may have changed its content).

        Raises:
            OrderNotFound: No such line.
        """
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(order_lines).where(
                    order_lines.c.order_id == order_id, order_lines.c.line_id == line_id
                )
            ).one_or_none()
        if row is None:
            raise OrderNotFound(order_id, line_id)
        return _line_status(row)

    def order_ids(self) -> list[str]:
        """Every order's id, oldest first."""
        with self.engine.begin() as conn:
            return list(
                conn.execute(
                    sa.select(orders.c.order_id).order_by(orders.c.created_at, orders.c.order_id)
                ).scalars()
            )

    def get_order(self, order_id: str) -> OrderStatus | None:
        """The order and its lines, or None if the ledger does not know it.

        Args:
            order_id: The order's id.
        """
        with self.engine.begin() as conn:
            return self._read_order(conn, order_id)

    def shipped_line(self, *, order_id: str, line_id: str) -> str | None:
        """The shipment id of a line if it is SHIPPED, else None.

        Args:
            order_id: The order's id.
            line_id: The line's id.

        Raises:
            OrderNotFound: No such line.
        """
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(order_lines.c.state, order_lines.c.shipment_id).where(
                    order_lines.c.order_id == order_id, order_lines.c.line_id == line_id
                )
            ).one_or_none()
        if row is None:
            raise OrderNotFound(order_id, line_id)
        return str(row.shipment_id) if row.state is LineState.SHIPPED else None

    # Helpers, each inside the caller's transaction.

    def _lock_order(self, conn: sa.Connection, order_id: str) -> sa.Row[Any]:
        row = conn.execute(
            sa.select(orders).where(orders.c.order_id == order_id).with_for_update()
        ).one_or_none()
        if row is None:
            raise OrderNotFound(order_id)
        return row

    def _lock_line(self, conn: sa.Connection, order_id: str, line_id: str) -> sa.Row[Any]:
        # The row lock serializes tries of one line, so the attempts sum stays exact.
        row = conn.execute(
            sa.select(order_lines)
            .where(order_lines.c.order_id == order_id, order_lines.c.line_id == line_id)
            .with_for_update()
        ).one_or_none()
        if row is None:
            raise OrderNotFound(order_id, line_id)
        return row

    def _record_try(
        self,
        conn: sa.Connection,
        *,
        order_id: str,
        line_id: str,
        try_number: int,
        requests: int,
        outcome: TryOutcome,
        error: str | None,
    ) -> None:
        if try_number < 0 or requests < 0:
            raise ValueError(f"try_number {try_number} and requests {requests} must be >= 0")
        stmt = _insert(conn, line_tries).values(
            order_id=order_id,
            line_id=line_id,
            try_number=try_number,
            requests=requests,
            outcome=outcome,
            error=error,
            recorded_at=self._now(),
        )
        # The latest record of a try wins; an identical record leaves the row untouched.
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[
                    line_tries.c.order_id,
                    line_tries.c.line_id,
                    line_tries.c.try_number,
                ],
                set_={
                    "requests": stmt.excluded.requests,
                    "outcome": stmt.excluded.outcome,
                    "error": stmt.excluded.error,
                    "recorded_at": stmt.excluded.recorded_at,
                },
                where=sa.or_(
                    line_tries.c.requests != stmt.excluded.requests,
                    line_tries.c.outcome != stmt.excluded.outcome,
                    line_tries.c.error.is_distinct_from(stmt.excluded.error),
                ),
            )
        )

    def _update_line(
        self,
        conn: sa.Connection,
        line: sa.Row[Any],
        *,
        state: LineState,
        shipment_id: str | None,
        last_error: str | None,
    ) -> None:
        attempts = conn.execute(
            sa.select(sa.func.coalesce(sa.func.sum(line_tries.c.requests), 0)).where(
                line_tries.c.order_id == line.order_id, line_tries.c.line_id == line.line_id
            )
        ).scalar_one()
        new = {
            "state": state,
            "shipment_id": shipment_id,
            "last_error": last_error,
            "attempts": int(attempts),
        }
        if all(getattr(line, key) == value for key, value in new.items()):
            return  # a repeated record: leave even updated_at alone
        conn.execute(
            sa.update(order_lines)
            .where(order_lines.c.order_id == line.order_id, order_lines.c.line_id == line.line_id)
            .values(**new, updated_at=self._now())
        )

    def _mark_shipping(self, conn: sa.Connection, order_id: str) -> None:
        conn.execute(
            sa.update(orders)
            .where(orders.c.order_id == order_id, orders.c.state == OrderState.RECEIVED)
            .values(state=OrderState.SHIPPING, updated_at=self._now())
        )

    def _read_line(self, conn: sa.Connection, order_id: str, line_id: str) -> LineStatus:
        row = conn.execute(
            sa.select(order_lines).where(
                order_lines.c.order_id == order_id, order_lines.c.line_id == line_id
            )
        ).one()
        return _line_status(row)

    def _read_order(self, conn: sa.Connection, order_id: str) -> OrderStatus | None:
        order = conn.execute(
            sa.select(
                orders.c.order_id,
                orders.c.state,
                orders.c.reason,
                orders.c.shipped_at,
                orders.c.owner_run_id,
                orders.c.ship_to,
            ).where(orders.c.order_id == order_id)
        ).one_or_none()
        if order is None:
            return None
        lines = conn.execute(
            sa.select(order_lines)
            .where(order_lines.c.order_id == order_id)
            .order_by(order_lines.c.position)
        ).all()
        amendments = conn.execute(
            sa.select(line_amendments)
            .where(line_amendments.c.order_id == order_id)
            .order_by(line_amendments.c.id)
        ).all()
        others = conn.execute(
            sa.select(order_runs.c.run_id, order_runs.c.role, order_runs.c.reason)
            .where(order_runs.c.order_id == order_id, order_runs.c.role != RunRole.OWNER)
            .order_by(order_runs.c.recorded_at, order_runs.c.run_id)
        ).all()
        return OrderStatus(
            order_id=order.order_id,
            state=order.state,
            reason=order.reason,
            shipped_at=order.shipped_at,
            lines=tuple(_line_status(row) for row in lines),
            run_id=order.owner_run_id,
            ship_to=order.ship_to,
            other_runs=tuple(RunRecord(r.run_id, r.role, r.reason) for r in others),
            amendments=tuple(
                AmendmentRecord(
                    line_id=a.line_id,
                    action=a.action,
                    actor=a.actor,
                    reason=a.reason,
                    old_sku=a.old_sku,
                    old_quantity=a.old_quantity,
                    new_sku=a.new_sku,
                    new_quantity=a.new_quantity,
                    recorded_at=a.recorded_at,
                )
                for a in amendments
            ),
        )


def _line_status(row: sa.Row[Any]) -> LineStatus:
    return LineStatus(
        line_id=row.line_id,
        sku=row.sku,
        quantity=row.quantity,
        state=row.state,
        attempts=row.attempts,
        shipment_id=row.shipment_id,
        last_error=row.last_error,
    )
