"""The ledger's repository: every write and read, one transaction each."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa

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
    Clock,
    Finalization,
    LineState,
    LineStatus,
    OrderState,
    OrderStatus,
    Registration,
    RunRecord,
    RunRole,
    TryOutcome,
    amendment_refusal,
)
from shipping.ledger.schema import (
    UTCDateTime,
    create_schema,
    engine_from_url,
    line_amendments,
    line_tries,
    order_lines,
    order_runs,
    orders,
    upsert,
)
from shipping.order import Order, idempotency_key, run_id_for

logger = logging.getLogger(__name__)


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
            return sa.func.now(type_=UTCDateTime())
        return sa.literal(self._clock(), UTCDateTime())

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
                upsert(conn, orders)
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
                    upsert(conn, order_lines)
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
            upsert(conn, order_runs)
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
                upsert(conn, orders)
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
        stmt = upsert(conn, line_tries).values(
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
