"""The shipment workflow: idempotency, faults and storage put in order.

A ``POST /v1/shipments`` that passed authentication and validation goes through:

1. the fault draw: an injected ``error`` (500/503) or ``throttle`` (429) answers at once,
   before anything is stored;
2. the claim of its key in the database (:meth:`Storage.claim`): a completed key replays
   its stored response or answers 422 for another body; a live claim answers 409; a key
   whose stored response was purged but whose shipment exists is answered from the
   shipment (replayed for the same content, 422 for another): one shipment per key, ever;
3. while the claim is held: the injected ``latency_ms`` and ``timeout`` hang, then the
   SKU check (a refused SKU releases the claim: nothing stays stored under the key);
4. the shipment and its response commit together; an injected ``commit_then_error``
   then answers 500, and the retry gets the stored 201.

A voided key (``POST /v1/voids``, :meth:`ShipmentService.void_key`) answers 410 at step 2
whatever the body; a request that held the key's claim when it was voided commits nothing
at step 4 and answers 410 too.

Blocking database calls run in the thread pool and waits are ``asyncio.sleep``, so a
hanging request never holds up the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from warehouse_mock import problems
from warehouse_mock.faults import FaultInjector, FaultPlan
from warehouse_mock.problems import ProblemError
from warehouse_mock.schemas import Shipment, ShipmentCreate, Void
from warehouse_mock.settings import Settings
from warehouse_mock.storage import (
    SHIPMENT_CANCELLED,
    SHIPMENT_CREATED,
    Claim,
    ClaimLost,
    InFlight,
    KeyVoided,
    Mismatch,
    NewShipment,
    Replay,
    ShipmentExists,
    ShipmentRecord,
    Storage,
    Voided,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]
PURGE_INTERVAL_SECONDS: Final = 60.0
IN_FLIGHT_RETRY_AFTER_SECONDS: Final = 1


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def legacy_token_scope(token: str) -> str:
    """The scope a token had when keys were scoped per token (its SHA-256).

    Keys are scoped per client now; :meth:`Storage.migrate` moves rows of these scopes
    to their client's.
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def canonical_json(document: Any) -> str:
    """``document`` as canonical JSON: sorted keys, compact separators, UTF-8 kept."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def request_fingerprint(document: Any) -> str:
    """Digest of a request body, equal for equal JSON values whatever the key order or
    spacing."""
    return hashlib.sha256(canonical_json(document).encode("utf-8")).hexdigest()


def new_shipment_id() -> str:
    """A fresh, unguessable shipment id."""
    return f"shp_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class ShipmentAnswer:
    """The response to a shipment request that reached the database.

    Attributes:
        status_code: HTTP status (201).
        body: The JSON body, exactly as first sent.
        shipment_id: The shipment it describes.
        replayed: The answer is a stored response replayed for a repeated key.
    """

    status_code: int
    body: str
    shipment_id: str
    replayed: bool


class ShipmentService:
    """Creates and reads shipments under the idempotency rules.

    Args:
        settings: The process settings.
        storage: The database.
        faults: The fault injector.
        clock: Source of the current time (aware UTC); tests may pass their own.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        faults: FaultInjector,
        clock: Clock = utc_now,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.faults = faults
        self._clock = clock
        self._retention = timedelta(hours=settings.retention_hours)
        self._next_purge = 0.0

    async def create_shipment(
        self,
        *,
        scope: str,
        idempotency_key: str,
        request: ShipmentCreate,
        fingerprint: str,
    ) -> ShipmentAnswer:
        """Create the shipment of ``request`` once per key, or replay the stored answer.

        Raises:
            ProblemError: Any answer other than the 201 (or its replay).
        """
        await self._purge_if_due()
        plan = self.faults.draw()
        _raise_immediate_fault(plan, idempotency_key)

        # The lease covers the delay planned for this request, so an injected hang does
        # not let a retry take the claim over while this request is still alive.
        lease = self.settings.inflight_lease_seconds + plan.delay_seconds
        try:
            result = await run_in_threadpool(
                self.storage.claim,
                scope=scope,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint,
                lease_seconds=lease,
                now=self._clock(),
            )
        except SQLAlchemyError:
            # Nothing is known to be stored: a retry either claims the key or, if the
            # claim did commit, waits out its lease (409) and then takes it over.
            logger.exception("claiming key %r failed", idempotency_key)
            raise _database_unavailable() from None
        if isinstance(result, Voided):
            raise _key_voided(idempotency_key)
        if isinstance(result, Replay):
            logger.info("replaying key %r: shipment %s", idempotency_key, result.shipment_id)
            return ShipmentAnswer(result.status_code, result.body, result.shipment_id, True)
        if isinstance(result, Mismatch):
            raise ProblemError(
                problems.IDEMPOTENCY_KEY_MISMATCH,
                f"Idempotency-Key {idempotency_key!r} was already used with a different body",
            )
        if isinstance(result, InFlight):
            raise ProblemError(
                problems.REQUEST_IN_FLIGHT,
                f"a request with Idempotency-Key {idempotency_key!r} is still being processed; "
                "retry later",
                headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER_SECONDS)},
            )
        if result.took_over:
            logger.warning("took over the expired in-flight claim of key %r", idempotency_key)
        existing = await run_in_threadpool(self.storage.shipment_for_key, scope, idempotency_key)
        if existing is not None:
            # The key's stored response was purged, but its shipment stays for good.
            await run_in_threadpool(self._release_quietly, result)
            return _answer_from_shipment(existing, request, idempotency_key)
        answer = await self._process_claimed(result, request, plan)
        if plan.commit_then_error:
            logger.warning(
                "injected commit_then_error: shipment %s committed, answering 500",
                answer.shipment_id,
            )
            raise ProblemError(problems.INTERNAL_ERROR, "injected fault: internal error")
        return answer

    async def _process_claimed(
        self, claim: Claim, request: ShipmentCreate, plan: FaultPlan
    ) -> ShipmentAnswer:
        """Do the work of a claimed key; release the claim if the work does not commit."""
        release_claim = True  # until the work commits or the claim is no longer ours
        try:
            if plan.hang_ms:
                logger.warning(
                    "injected timeout: key %r hangs %d ms", claim.idempotency_key, plan.hang_ms
                )
            if plan.delay_seconds:
                await asyncio.sleep(plan.delay_seconds)
            if plan.refuses(request.sku):
                raise ProblemError(
                    problems.SKU_REFUSED, f"the warehouse does not ship SKU {request.sku!r}"
                )
            created_at = self._clock()
            shipment = Shipment(
                shipment_id=new_shipment_id(),
                idempotency_key=claim.idempotency_key,
                order_id=request.order_id,
                line_id=request.line_id,
                sku=request.sku,
                quantity=request.quantity,
                ship_to=_address(request),
                status=SHIPMENT_CREATED,
                created_at=created_at,
            )
            body = shipment.model_dump_json()
            fields = shipment.model_dump(exclude={"idempotency_key", "cancelled_at"})
            try:
                await run_in_threadpool(
                    self.storage.complete,
                    claim=claim,
                    shipment=NewShipment(**fields),
                    response_status=201,
                    response_body=body,
                    now=created_at,
                )
            except KeyVoided:
                release_claim = False
                logger.warning(
                    "key %r voided while in flight: nothing created", claim.idempotency_key
                )
                raise _key_voided(claim.idempotency_key) from None
            except ClaimLost:
                release_claim = False
                raise ProblemError(
                    problems.REQUEST_IN_FLIGHT,
                    f"the claim on Idempotency-Key {claim.idempotency_key!r} expired and was "
                    "taken over by a retry; retry later",
                    headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER_SECONDS)},
                ) from None
            except ShipmentExists:
                # Another request created it first (after a takeover): answer from it.
                existing = await run_in_threadpool(
                    self.storage.shipment_for_key, claim.scope, claim.idempotency_key
                )
                assert existing is not None  # shipments are never deleted
                return _answer_from_shipment(existing, request, claim.idempotency_key)
            release_claim = False
            logger.info(
                "shipment %s created: order %s line %s sku %s x%d (key %r)",
                shipment.shipment_id,
                request.order_id,
                request.line_id,
                request.sku,
                request.quantity,
                claim.idempotency_key,
            )
            return ShipmentAnswer(201, body, shipment.shipment_id, False)
        except ProblemError:
            raise
        except Exception:
            logger.exception("shipment for key %r failed", claim.idempotency_key)
            raise ProblemError(
                problems.INTERNAL_ERROR, "the shipment could not be created"
            ) from None
        finally:
            if release_claim:
                await run_in_threadpool(self._release_quietly, claim)

    def _release_quietly(self, claim: Claim) -> None:
        try:
            self.storage.release(claim=claim)
        except Exception:
            # The lease expires on its own; the key is free again after it.
            logger.exception("could not release the claim of key %r", claim.idempotency_key)

    async def void_key(self, *, scope: str, idempotency_key: str, reason: str) -> Void:
        """Void ``idempotency_key`` for good and cancel its shipment, if any; idempotent.

        Raises:
            ProblemError: 503 when the database is unavailable.
        """
        try:
            outcome = await run_in_threadpool(
                self.storage.void,
                scope=scope,
                idempotency_key=idempotency_key,
                reason=reason,
                now=self._clock(),
            )
        except SQLAlchemyError:
            logger.exception("voiding key %r failed", idempotency_key)
            raise _database_unavailable() from None
        return Void(
            idempotency_key=outcome.idempotency_key,
            voided_at=outcome.voided_at,
            reason=outcome.reason,
            shipment=None if outcome.shipment is None else _public(outcome.shipment),
        )

    def get_shipment(self, shipment_id: str, *, scope: str | None) -> Shipment | None:
        """The shipment ``shipment_id`` if it is in ``scope`` (None: any client's), or None."""
        record = self.storage.get_shipment(shipment_id)
        if record is None or (scope is not None and record.scope != scope):
            return None
        return _public(record)

    def find_shipments(
        self, *, scope: str | None, order_id: str | None, idempotency_key: str | None
    ) -> list[Shipment]:
        """The shipments matching the filters, oldest first; ``scope`` None means every
        client's (the admin's view)."""
        records = self.storage.find_shipments(
            scope=scope, order_id=order_id, idempotency_key=idempotency_key
        )
        return [_public(r) for r in records]

    def purge_expired(self) -> int:
        """Delete the stored responses older than the retention; returns how many."""
        purged = self.storage.purge_expired(older_than=self._clock() - self._retention)
        if purged:
            logger.info("purged %d idempotency keys older than %s", purged, self._retention)
        return purged

    async def _purge_if_due(self) -> None:
        """Purge lazily, at most once a minute per process, on the request path."""
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + PURGE_INTERVAL_SECONDS
        try:
            await run_in_threadpool(self.purge_expired)
        except Exception:
            logger.exception("purging expired idempotency keys failed; will retry later")


def _database_unavailable() -> ProblemError:
    """The 503 of a request whose database work failed: nothing is known to be stored."""
    return ProblemError(
        problems.SERVICE_UNAVAILABLE,
        "the warehouse database is unavailable; retry later",
        headers={"Retry-After": str(IN_FLIGHT_RETRY_AFTER_SECONDS)},
    )


def _raise_immediate_fault(plan: FaultPlan, idempotency_key: str) -> None:
    """Answer an injected error or throttle before anything is stored."""
    retry_after = {"Retry-After": str(plan.retry_after_seconds)}
    if plan.error_status == 503:
        logger.warning("injected error: 503 for key %r", idempotency_key)
        raise ProblemError(
            problems.SERVICE_UNAVAILABLE, "injected fault: service unavailable", headers=retry_after
        )
    if plan.error_status is not None:
        logger.warning("injected error: 500 for key %r", idempotency_key)
        raise ProblemError(problems.INTERNAL_ERROR, "injected fault: internal error")
    if plan.throttle:
        logger.warning("injected throttle: 429 for key %r", idempotency_key)
        raise ProblemError(
            problems.THROTTLED, "injected fault: too many requests", headers=retry_after
        )


def _key_voided(idempotency_key: str) -> ProblemError:
    return ProblemError(
        problems.KEY_VOIDED,
        f"Idempotency-Key {idempotency_key!r} was voided: nothing is or will be created under it",
    )


def _public(record: ShipmentRecord) -> Shipment:
    return Shipment.model_validate(record)


def _address(request: ShipmentCreate) -> dict[str, Any]:
    return request.ship_to.model_dump(exclude_none=True)


def _answer_from_shipment(
    record: ShipmentRecord, request: ShipmentCreate, idempotency_key: str
) -> ShipmentAnswer:
    """Replay a shipment made under the key, if it is what ``request`` asks for."""
    if record.status == SHIPMENT_CANCELLED:
        raise _key_voided(idempotency_key)  # voided since this request claimed the key
    asked = (request.order_id, request.line_id, request.sku, request.quantity, _address(request))
    held = (record.order_id, record.line_id, record.sku, record.quantity, record.ship_to)
    if asked != held:
        raise ProblemError(
            problems.IDEMPOTENCY_KEY_MISMATCH,
            f"Idempotency-Key {idempotency_key!r} already shipped {record.shipment_id} "
            "with a different body",
        )
    logger.info("key %r answered from its shipment %s", idempotency_key, record.shipment_id)
    return ShipmentAnswer(201, _public(record).model_dump_json(), record.shipment_id, True)
