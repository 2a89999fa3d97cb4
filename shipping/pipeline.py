"""The bodies of the ``order_intake`` tasks, as plain functions.

The DAG file only wires: each task builds its ledger and warehouse client from Airflow
Connections and calls one function here. Keeping the logic here means it runs and is
tested without Airflow, and every task process re-parses a light DAG file.

Exactly-once rests on: one run per order (the first run to register an order owns it;
any other run of it ships nothing), the warehouse key ``<order_id>:<line_id>`` (the same
on every retry, clear and re-run; one shipment per key at the warehouse, for good), a
lookup of that key before every post that the ledger does not show as shipped (so a
shipment the ledger missed is adopted, never made twice), the ledger's upserts under
unique keys, the reducer's conditional ``SHIPPED`` transition, and the fence of
operators' amendments: an amendment moves the line to a new key (a fix) or to CANCELLING
and voids the old key at the warehouse, and a try records its shipment only if the line
is still at the revision it read (docs/how-it-works.md, "Why they hold").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, TypedDict

from shipping.errors import (
    LineFenced,
    OrderRejected,
    ShipmentConflict,
    ShipmentMismatch,
    WarehouseError,
    classify,
)
from shipping.ledger import Ledger, LineState, LineStatus
from shipping.order import InvalidOrder, content_hash, parse_order
from shipping.shipment import LineContent, Shipment
from shipping.warehouse import WarehouseClient

logger = logging.getLogger(__name__)


class LineWork(TypedDict):
    """What one mapped ``ship_item`` instance receives for its line."""

    line_id: str
    sku: str
    quantity: int


class LineResult(TypedDict):
    """What ``ship_item`` returns: small, JSON-only (it is an XCom)."""

    line_id: str
    sku: str
    state: str  # SHIPPED, or CANCELLED by an operator
    shipment_id: str | None
    replayed: bool
    attempts: int


class Registered(TypedDict):
    """What ``register_order`` hands to the fan-out."""

    order_id: str
    ship_to: dict[str, str]
    lines: list[LineWork]  # empty for a duplicate run: it ships nothing
    owner_run_id: str


def register(ledger: Ledger, conf: Mapping[str, Any], *, run_id: str) -> Registered:
    """Validate the order in a run's conf and record it with its lines.

    The first run to register an order owns it. Another run of the same order (another
    run id) is a duplicate: it gets no lines, and the log names the owner.

    Args:
        ledger: The ledger.
        conf: The run's conf: the order.
        run_id: The Airflow run.

    Raises:
        OrderRejected: The order breaks a rule the Params schema cannot say (duplicate
            line ids, unknown fields); it is recorded as ``REJECTED`` with the reason and
            nothing ships.
        shipping.errors.OrderConflict: Another order was registered under this order_id;
            the run is recorded as refused and nothing ships.
    """
    doc = dict(conf)
    try:
        order = parse_order(doc)
    except InvalidOrder as exc:
        reason = "; ".join(exc.errors)
        order_id = doc.get("order_id")
        if isinstance(order_id, str) and order_id:
            ledger.reject_order(
                order_id=order_id,
                customer_id=_storable(doc.get("customer_id", ""))[:64],
                reason=reason,
                content_hash=content_hash(doc),
                run_id=run_id,
            )
        logger.error("order %s rejected: %s", order_id, reason)
        raise OrderRejected(str(order_id), reason) from exc
    registration = ledger.register_order(order, run_id=run_id)
    if registration.duplicate:
        logger.warning(
            "order %s is owned by run %s: this run (%s) is a duplicate and ships nothing",
            order.order_id,
            registration.owner_run_id,
            run_id,
        )
    else:
        logger.info("order %s registered with %d lines", order.order_id, len(order.items))
    return {
        "order_id": order.order_id,
        "ship_to": order.ship_to.to_dict(),
        "lines": [
            {"line_id": line.line_id, "sku": line.sku, "quantity": line.quantity}
            for line in registration.lines
        ],
        "owner_run_id": registration.owner_run_id,
    }


def _storable(value: object) -> str:
    """``value`` as text any database stores: no control characters, no lone surrogates."""
    text = "".join(ch for ch in str(value) if ch >= " " and ch != "\x7f")
    return text.encode("utf-8", "replace").decode("utf-8")


def line_label(line: Mapping[str, Any]) -> str:
    """How a mapped instance is named in the Airflow UI: line id and SKU."""
    return f"line {line['line_id']} · {line['sku']}"


def ship_line(
    *,
    ledger: Ledger,
    client: WarehouseClient,
    order_id: str,
    ship_to: Mapping[str, str],
    line: LineWork,
    try_number: int,
) -> LineResult:
    """Create the shipment of one line (idempotently) and record it in the ledger.

    The ledger's line decides what ships, not the XCom: an operator may have fixed or
    cancelled it. A line shown as shipped or cancelled is not sent again. A void an
    amendment left pending (its command could not reach the warehouse) is done first: a
    cancel then takes effect, and a fix's old key is dead before the new one is used.

    Then, under the line's current key: the warehouse is asked first for a shipment made
    under it (the ledger may have missed one: a task killed between the warehouse's answer
    and the ledger's write; and a post long after, past the key's retention, must not
    ship again). A shipment with the line's content is adopted; one with other content is
    a final :class:`ShipmentConflict`. Only then is the line posted, so a retry after an
    ambiguous failure gets the same shipment back. The record is fenced: if an amendment
    moved the line on meanwhile, nothing is recorded (:class:`LineFenced`, retried), and
    the amendment's void cancels whatever this try made.

    Every error on the way is recorded on the line (message, class, finality), then raised.

    Raises:
        WarehouseError: After the client's own retries. Whether Airflow retries it is
            decided by its family (:data:`shipping.errors.FAMILIES`).
        LineFenced: An amendment superseded this try; the next try ships the ledger's line.
    """
    line_id = line["line_id"]
    requests = 0
    try:
        recorded = ledger.get_line(order_id=order_id, line_id=line_id)
        if recorded.void_key is not None:
            recorded = complete_void(ledger, client, order_id, recorded)
        if recorded.state is LineState.SHIPPED:
            logger.info("line %s:%s already shipped as %s", order_id, line_id, recorded.shipment_id)
            return _result(recorded, shipment_id=recorded.shipment_id, replayed=True, attempts=0)
        if recorded.state is LineState.CANCELLED:
            logger.warning("line %s:%s was cancelled by an operator: not posted", order_id, line_id)
            return _result(recorded, shipment_id=None, replayed=False, attempts=0)
        if (recorded.sku, recorded.quantity) != (line["sku"], line["quantity"]):
            logger.warning(
                "line %s:%s was fixed by an operator: %s x%d (was %s x%d)",
                order_id,
                line_id,
                recorded.sku,
                recorded.quantity,
                line["sku"],
                line["quantity"],
            )
        content = LineContent(order_id, line_id, recorded.sku, recorded.quantity, ship_to)
        key = recorded.idempotency_key
        found = client.find_shipment(order_id=order_id, line_id=line_id, key=key)
        if found is not None:
            if not found.live:
                raise LineFenced(order_id, line_id, f"key {key!r} was voided at the warehouse")
            if differ := found.differences(content):
                raise ShipmentConflict(
                    f"the warehouse holds shipment {found.shipment_id} under key {key!r} "
                    f"with another {', '.join(differ)}; it is not adopted and the line is "
                    f"not posted again: `shipping reconcile {order_id} --repair` voids it"
                )
            shipment, replayed = found, True
            logger.info(
                "line %s:%s found at the warehouse as %s", order_id, line_id, found.shipment_id
            )
        else:
            result = client.create_shipment(
                order_id=order_id,
                line_id=line_id,
                sku=recorded.sku,
                quantity=recorded.quantity,
                ship_to=ship_to,
                key=key,
            )
            requests = result.attempts
            shipment = Shipment.from_json({**result.body, "idempotency_key": key})
            replayed = result.replayed
        shipped = ledger.record_shipped(
            order_id=order_id,
            line_id=line_id,
            try_number=try_number,
            requests=requests,
            shipment=shipment,
            revision=recorded.revision,
        )
    except Exception as exc:
        # A warehouse error, a fenced try (classified, final or not by its family) or a
        # bug (retried by Airflow like an outage): recorded on the line, then raised.
        if isinstance(exc, WarehouseError):
            requests = max(exc.attempts or 1, 1)
        record_failure(
            ledger,
            order_id=order_id,
            line_id=line_id,
            try_number=try_number,
            exc=exc,
            requests=requests,
        )
        raise
    logger.info(
        "line %s:%s shipped as %s after %d request(s)%s",
        order_id,
        line_id,
        shipment.shipment_id,
        requests,
        " (replayed)" if replayed else "",
    )
    return _result(shipped, shipment_id=shipment.shipment_id, replayed=replayed, attempts=requests)


def record_failure(
    ledger: Ledger,
    *,
    order_id: str,
    line_id: str,
    try_number: int,
    exc: BaseException,
    requests: int = 0,
) -> LineStatus:
    """Record a try's failure on its line: the message, the class and its finality."""
    kind = classify(exc)
    return ledger.record_failed(
        order_id=order_id,
        line_id=line_id,
        try_number=try_number,
        requests=requests,
        error=f"{kind.error_class}: {exc}",
        error_class=kind.error_class,
        error_final=kind.final,
    )


@contextmanager
def line_client(
    ledger: Ledger,
    connect: Callable[[], AbstractContextManager[WarehouseClient]],
    *,
    order_id: str,
    line_id: str,
    try_number: int,
) -> Iterator[WarehouseClient]:
    """The warehouse client of a line's try, from ``connect``.

    A client that cannot be built (a connection without a token, a token list where one
    token belongs) is a failure of the line like any other: recorded on it, with its
    class (configuration family), so ``shipping watch`` names the setting to fix.
    """
    with ExitStack() as stack:
        try:
            client = stack.enter_context(connect())
        except Exception as exc:
            record_failure(
                ledger, order_id=order_id, line_id=line_id, try_number=try_number, exc=exc
            )
            raise
        yield client


def complete_void(
    ledger: Ledger, client: WarehouseClient, order_id: str, line: LineStatus
) -> LineStatus:
    """Void the key an amendment fenced, at the warehouse, and record it in the ledger.

    Safe to repeat and to race: voiding a key twice changes nothing at the warehouse, and
    the ledger records the first confirmation.

    Returns:
        The line after the void (a CANCELLING line is CANCELLED then).

    Raises:
        WarehouseError: The warehouse refused or stayed unavailable; the void stays
            pending.
    """
    assert line.void_key is not None
    voided = client.void_key(line.void_key, reason=f"amended line {line.line_id} of {order_id}")
    return ledger.record_void(
        order_id=order_id,
        line_id=line.line_id,
        key=line.void_key,
        shipment_id=voided.shipment_id if voided else None,
    )


def _result(
    line: LineStatus, *, shipment_id: str | None, replayed: bool, attempts: int
) -> LineResult:
    return {
        "line_id": line.line_id,
        "sku": line.sku,
        "state": line.state.value,
        "shipment_id": shipment_id,
        "replayed": replayed,
        "attempts": attempts,
    }


def finalize(ledger: Ledger, order_id: str, results: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The reducer: mark the order ``SHIPPED`` once every line is shipped or cancelled.

    The ledger, not the XCom results, decides: it holds every line, including lines that
    shipped in an earlier run of the same order. The transition happens exactly once,
    whatever re-runs; later calls return the same summary.

    Raises:
        shipping.ledger.OrderIncomplete: A line has no shipment.
    """
    reported = {r["line_id"]: r["shipment_id"] for r in results if r.get("shipment_id")}
    recorded = ledger.get_order(order_id)
    for line in recorded.lines if recorded else ():
        if line.line_id in reported and reported[line.line_id] != line.shipment_id:
            # A task reported another shipment than the ledger holds: never hide that,
            # and never finalize over it (final: retrying cannot change either side).
            raise ShipmentMismatch(
                order_id, line.line_id, str(line.shipment_id), str(reported[line.line_id])
            )
    finalization = ledger.finalize_order(order_id=order_id)
    status = finalization.summary
    logger.info(
        "order %s %s (%d lines)",
        order_id,
        "finalized as SHIPPED" if finalization.transitioned else "was already SHIPPED",
        len(status.lines),
    )
    summary = status.to_json()
    summary["finalized_now"] = finalization.transitioned
    summary["shipped_lines"] = sum(1 for line in status.lines if line.state == LineState.SHIPPED)
    return summary
