"""The ledger's repository: every write and read, one transaction each."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from shipping.errors import (
    AmendmentRefused,
    LedgerError,
    LineFenced,
    OrderConflict,
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    ShipmentConflict,
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
    OrderSummary,
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
from shipping.shipment import LineContent, Shipment

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
        self,
        *,
        order_id: str,
        line_id: str,
        try_number: int,
        requests: int,
        shipment: Shipment,
        revision: int,
    ) -> LineStatus:
        """Record that a try shipped a line: the line becomes SHIPPED with its shipment.

        The fence: under the line's lock, the shipment must still be the line's as it
        stands now. The caller read the line at ``revision``; if an amendment moved it on
        since (a fix, a cancel, a void still pending), nothing is recorded. The shipment
        must be live, made under the line's current key, with the line's content
        (:meth:`shipping.shipment.Shipment.differences`). The order moves from RECEIVED
        to SHIPPING. Recording the same try again is a no-op.

        Args:
            order_id: The order's id.
            line_id: The line's id.
            try_number: The Airflow try that made the requests (0: reconciliation).
            requests: Warehouse requests made in that try.
            shipment: The warehouse's shipment.
            revision: The line's revision the caller read before it posted or looked up.

        Returns:
            The line after the call.

        Raises:
            OrderNotFound: No such line.
            ShipmentMismatch: The line shipped under another shipment id; nothing recorded.
            LineFenced: An amendment superseded the caller's read; nothing recorded.
            ShipmentConflict: The shipment is not the line's (other content); nothing
                recorded.
        """
        with self.engine.begin() as conn:
            line = self._lock_line(conn, order_id, line_id)
            # The address never changes once registered: read, not locked (every line of
            # an order records here, in parallel).
            ship_to = conn.execute(
                sa.select(orders.c.ship_to).where(orders.c.order_id == order_id)
            ).scalar_one()
            if line.state is LineState.SHIPPED:
                if line.shipment_id != shipment.shipment_id:
                    raise ShipmentMismatch(
                        order_id, line_id, line.shipment_id, shipment.shipment_id
                    )
            elif fenced := _fence(line, revision):
                raise LineFenced(order_id, line_id, fenced)
            if not shipment.live:
                raise LineFenced(
                    order_id, line_id, f"shipment {shipment.shipment_id} was cancelled"
                )
            if shipment.idempotency_key not in (None, line.idempotency_key):
                raise LineFenced(
                    order_id,
                    line_id,
                    f"shipment {shipment.shipment_id} was made under key "
                    f"{shipment.idempotency_key!r}, the line ships under "
                    f"{line.idempotency_key!r} now",
                )
            content = LineContent(order_id, line_id, line.sku, line.quantity, ship_to or {})
            if differ := shipment.differences(content):
                raise ShipmentConflict(
                    f"shipment {shipment.shipment_id} under key {line.idempotency_key!r} "
                    f"differs from line {line_id!r} of order {order_id!r} in "
                    f"{', '.join(differ)}; not recorded"
                )
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
                shipment_id=shipment.shipment_id,
                # Kept: they tell what went wrong on the way.
                last_error=line.last_error,
                error_class=line.error_class,
                error_final=line.error_final,
            )
            self._mark_shipping(conn, order_id)
            status = self._read_line(conn, order_id, line_id)
        logger.info(
            "order %s line %s shipped as %s (try %d, %d attempts)",
            order_id,
            line_id,
            shipment.shipment_id,
            try_number,
            status.attempts,
        )
        return status

    def record_failed(
        self,
        *,
        order_id: str,
        line_id: str,
        try_number: int,
        requests: int,
        error: str,
        error_class: str | None = None,
        error_final: bool | None = None,
    ) -> LineStatus:
        """Record that a try failed to ship a line: the line becomes FAILED with the error.

        Only a PENDING or FAILED line becomes FAILED: a SHIPPED, CANCELLING or CANCELLED
        line keeps its state (a late failure never undoes it), though the try's requests
        still count in its attempts. The order moves from RECEIVED to SHIPPING.
        Recording the same try again is a no-op.

        Args:
            order_id: The order's id.
            line_id: The line's id.
            try_number: The Airflow try that made the requests.
            requests: Warehouse requests made in that try.
            error: What went wrong, for the operator.
            error_class: The error's class name (:func:`shipping.errors.classify`).
            error_final: Whether a retry cannot cure it.

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
            if line.state not in (LineState.PENDING, LineState.FAILED):
                self._update_line(
                    conn,
                    line,
                    state=line.state,
                    shipment_id=line.shipment_id,
                    last_error=line.last_error,
                    error_class=line.error_class,
                    error_final=line.error_final,
                )
            else:
                self._update_line(
                    conn,
                    line,
                    state=LineState.FAILED,
                    shipment_id=None,
                    last_error=error,
                    error_class=error_class,
                    error_final=error_final,
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
                        # Only this update sets shipped_at, so it is NULL until now.
                        shipped_at=now,
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
        void_key: str | None = None,
    ) -> LineStatus:
        """Fix, cancel or void a line, fence it, and keep who, when and why.

        The fence, in this one transaction under the line's lock: the key the line shipped
        under so far goes to ``void_key``, to be voided at the warehouse
        (:meth:`record_void` confirms it). Until then the line can be neither shipped
        nor cancelled, and a try that read it before records nothing
        (:meth:`record_shipped` raises :class:`LineFenced`).

        * FIX (a FAILED line without a shipment): new SKU and/or quantity, revision + 1,
          a new key; the line stays FAILED until its next try ships it.
        * CANCEL (a FAILED line without a shipment): CANCELLING, then CANCELLED once its
          key is voided.
        * VOID (reconciliation): ``void_key`` is a key of this line whose shipment is not
          the line's; if it is the line's current key, the line moves to a new key.

        Args:
            order_id: The order's id.
            line_id: The line's id.
            action: FIX, CANCEL or VOID.
            actor: Who amends it.
            reason: Why, for the audit trail (required).
            sku: The new SKU (FIX).
            quantity: The new quantity (FIX).
            void_key: The key to void (VOID).

        Returns:
            The line after the call (``void_key`` set).

        Raises:
            OrderNotFound: No such order or line.
            AmendmentRefused: The line's state forbids it, a void is still pending, the
                order is not open, the reason is empty, or a fix changes nothing.
        """
        if not reason.strip():
            raise AmendmentRefused(order_id, line_id, "a reason is required")
        if action is Amendment.FIX and sku is None and quantity is None:
            raise AmendmentRefused(order_id, line_id, "a fix needs a new SKU or quantity")
        if action is not Amendment.FIX and (sku is not None or quantity is not None):
            raise AmendmentRefused(order_id, line_id, f"a {action} takes no SKU or quantity")
        if (action is Amendment.VOID) != (void_key is not None):
            raise AmendmentRefused(order_id, line_id, "a void, and only a void, names a key")
        with self.engine.begin() as conn:
            order = self._lock_order(conn, order_id)
            line = self._lock_line(conn, order_id, line_id)
            if line.void_key is not None:
                raise AmendmentRefused(
                    order_id,
                    line_id,
                    f"key {line.void_key!r} is still to be voided at the warehouse (an "
                    f"earlier amendment); `shipping retry {order_id} --line {line_id}` "
                    "completes it",
                )
            values: dict[str, Any] = {"updated_at": self._now()}
            if action is Amendment.VOID:
                assert void_key is not None
                if refusal := _void_refusal(line, void_key):
                    raise AmendmentRefused(order_id, line_id, refusal)
                if void_key == line.idempotency_key:
                    values.update(_next_key(line), error_final=False)
            else:
                if order.state in (OrderState.SHIPPED, OrderState.REJECTED):
                    raise AmendmentRefused(order_id, line_id, f"the order is {order.state}")
                if refusal := amendment_refusal(line.state, line.shipment_id):
                    raise AmendmentRefused(order_id, line_id, refusal)
                void_key = line.idempotency_key
                if action is Amendment.CANCEL:
                    values.update(state=LineState.CANCELLING)
                else:
                    new = (
                        sku if sku is not None else line.sku,
                        quantity if quantity is not None else line.quantity,
                    )
                    if new == (line.sku, line.quantity):
                        raise AmendmentRefused(order_id, line_id, "the fix changes nothing")
                    # The refusal was of the old content: not final for the fixed line.
                    values.update(sku=new[0], quantity=new[1], error_final=False, **_next_key(line))
            values["void_key"] = void_key
            conn.execute(
                sa.insert(line_amendments).values(
                    order_id=order_id,
                    line_id=line_id,
                    action=action,
                    actor=actor,
                    reason=reason,
                    old_sku=line.sku,
                    old_quantity=line.quantity,
                    new_sku=values.get("sku"),
                    new_quantity=values.get("quantity"),
                    recorded_at=values["updated_at"],
                    void_key=void_key,
                )
            )
            _set_line(conn, order_id, line_id, values)
            status = self._read_line(conn, order_id, line_id)
        logger.warning(
            "order %s line %s: %s by %s (%s); key %s to be voided",
            order_id,
            line_id,
            action,
            actor,
            reason,
            void_key,
        )
        return status

    def record_void(
        self, *, order_id: str, line_id: str, key: str, shipment_id: str | None
    ) -> LineStatus:
        """Record that the warehouse voided ``key``: the amendment that asked takes effect.

        The line's pending void is cleared; a CANCELLING line becomes CANCELLED. The
        amendment keeps the confirmation and the shipment the void cancelled, if any.
        Recording it again changes nothing.

        Args:
            order_id: The order's id.
            line_id: The line's id.
            key: The key the warehouse voided.
            shipment_id: The shipment the void cancelled, or None if none was made.

        Returns:
            The line after the call.

        Raises:
            OrderNotFound: No such line.
        """
        with self.engine.begin() as conn:
            line = self._lock_line(conn, order_id, line_id)
            now = self._now()
            conn.execute(
                sa.update(line_amendments)
                .where(
                    line_amendments.c.order_id == order_id,
                    line_amendments.c.line_id == line_id,
                    line_amendments.c.void_key == key,
                    line_amendments.c.voided_at.is_(None),
                )
                .values(voided_at=now, voided_shipment_id=shipment_id)
            )
            if line.void_key == key:
                values: dict[str, Any] = {"void_key": None, "updated_at": now}
                if line.state is LineState.CANCELLING:
                    values["state"] = LineState.CANCELLED
                _set_line(conn, order_id, line_id, values)
            status = self._read_line(conn, order_id, line_id)
        logger.warning(
            "order %s line %s: key %s voided at the warehouse%s (line %s)",
            order_id,
            line_id,
            key,
            f", shipment {shipment_id} cancelled" if shipment_id else "",
            status.state,
        )
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

    def next_try_number(self, *, order_id: str, line_id: str) -> int:
        """One more than the line's highest recorded try (1 for a line never tried).

        A try of another task than ``ship_item`` (an operator's decision that ships the
        line) records under this number, so it never overwrites a ``ship_item`` try.
        """
        with self.engine.begin() as conn:
            highest = conn.execute(
                sa.select(sa.func.max(line_tries.c.try_number)).where(
                    line_tries.c.order_id == order_id, line_tries.c.line_id == line_id
                )
            ).scalar_one_or_none()
        return int(highest or 0) + 1

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

    def orders_of_runs(self, run_ids: Iterable[str]) -> dict[str, str]:
        """The order each of ``run_ids`` presented, for the runs the ledger recorded.

        A run the ledger never heard of (its intake failed, or has not run yet) is left
        out. One query, whatever the number of runs.
        """
        wanted = list(dict.fromkeys(run_ids))
        if not wanted:
            return {}
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(order_runs.c.run_id, order_runs.c.order_id).where(
                    order_runs.c.run_id.in_(wanted)
                )
            ).all()
        return {row.run_id: row.order_id for row in rows}

    def order_summary(self, order_id: str, *, positions: Iterable[int] = ()) -> OrderSummary | None:
        """The order with its lines counted by state: what following an order needs.

        Only the lines that may need attention are read whole: those not shipped or
        cancelled that failed, carry an error, are being cancelled or have a void pending,
        and the lines at ``positions`` (map indexes a caller asks about: the instances
        Airflow is running, say). Four small queries, whatever the order's size.

        Returns:
            The summary, or None if the ledger does not know the order.
        """
        wanted = sorted(set(positions))
        with self.engine.begin() as conn:
            order = conn.execute(
                sa.select(
                    orders.c.order_id, orders.c.state, orders.c.reason, orders.c.owner_run_id
                ).where(orders.c.order_id == order_id)
            ).one_or_none()
            if order is None:
                return None
            counts = conn.execute(
                sa.select(order_lines.c.state, sa.func.count())
                .where(order_lines.c.order_id == order_id)
                .group_by(order_lines.c.state)
            ).all()
            needs_looking_at = sa.and_(
                order_lines.c.state.not_in(list(DONE_LINE_STATES)),
                sa.or_(
                    order_lines.c.state.in_([LineState.FAILED, LineState.CANCELLING]),
                    order_lines.c.last_error.is_not(None),
                    order_lines.c.void_key.is_not(None),
                ),
            )
            notable = conn.execute(
                sa.select(order_lines)
                .where(
                    order_lines.c.order_id == order_id,
                    sa.or_(needs_looking_at, order_lines.c.position.in_(wanted))
                    if wanted
                    else needs_looking_at,
                )
                .order_by(order_lines.c.position)
            ).all()
            # A line's retries are its tries after the first (try 0 is reconciliation's).
            last_try = (
                sa.select(sa.func.max(line_tries.c.try_number).label("last"))
                .where(line_tries.c.order_id == order_id, line_tries.c.try_number >= 1)
                .group_by(line_tries.c.line_id)
                .subquery()
            )
            retries = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(last_try.c.last - 1), 0))
            ).scalar_one()
        return OrderSummary(
            order_id=order.order_id,
            state=order.state,
            reason=order.reason,
            run_id=order.owner_run_id,
            counts={LineState(state): int(n) for state, n in counts},
            notable={row.position: _line_status(row) for row in notable},
            retries=int(retries),
        )

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
        error_class: str | None,
        error_final: bool | None,
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
            "error_class": error_class,
            "error_final": error_final,
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
                    void_key=a.void_key,
                    voided_shipment_id=a.voided_shipment_id,
                    voided_at=a.voided_at,
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
        error_class=row.error_class,
        error_final=row.error_final,
        revision=row.revision,
        idempotency_key=row.idempotency_key,
        void_key=row.void_key,
    )


def _set_line(conn: sa.Connection, order_id: str, line_id: str, values: dict[str, Any]) -> None:
    conn.execute(
        sa.update(order_lines)
        .where(order_lines.c.order_id == order_id, order_lines.c.line_id == line_id)
        .values(**values)
    )


def _fence(line: sa.Row[Any], revision: int) -> str | None:
    """Why a try that read the line at ``revision`` may not record a shipment, or None."""
    if line.state in (LineState.CANCELLING, LineState.CANCELLED):
        return f"the line is {line.state} (an operator cancelled it after this try read it)"
    if line.revision != revision:
        return (
            f"the line was amended (revision {line.revision}) after this try read "
            f"revision {revision}"
        )
    if line.void_key is not None:
        return f"key {line.void_key!r} is being voided (an operator's amendment)"
    return None


def _next_key(line: sa.Row[Any]) -> dict[str, Any]:
    revision = line.revision + 1
    return {
        "revision": revision,
        "idempotency_key": idempotency_key(line.order_id, line.line_id, revision),
    }


def _void_refusal(line: sa.Row[Any], key: str) -> str | None:
    """Why reconciliation may not void ``key`` of the line, or None if it may."""
    keys = {idempotency_key(line.order_id, line.line_id, r) for r in range(line.revision + 1)}
    if key not in keys:
        return f"{key!r} is not a key of this line"
    if key == line.idempotency_key and line.state is LineState.SHIPPED:
        return f"{key!r} holds the line's recorded shipment {line.shipment_id}"
    if key == line.idempotency_key and line.state is LineState.CANCELLED:
        return f"{key!r} was voided when the line was cancelled"
    return None
