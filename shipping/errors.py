"""Typed failures of the warehouse API, and the one rule that says which are retried.

Transport failures (no HTTP answer) stand apart from status failures (an HTTP answer that
says no), and both are split by what the caller should do next::

    WarehouseError                   any failure talking to the warehouse
    ├── WarehouseUnavailable         retry: the next attempt may succeed
    │   ├── WarehouseTransportError  no HTTP answer: connection refused or reset (.status None)
    │   │   └── WarehouseTimeout     no answer in time; the request may have been committed
    │   ├── WarehouseServerError     5xx, including commit-then-error
    │   └── WarehouseThrottled       429
    ├── IdempotencyInFlight          retry: 409, an earlier attempt with this key still runs
    └── WarehouseRejected            final: any other 4xx; the same request gets the same no
        ├── InvalidShipmentRequest   400 / 422: malformed request or missing Idempotency-Key
        │   └── RequestNotSent       no HTTP at all: the request cannot be built (a header
        │                            or URL that requests refuses): a bug or configuration
        ├── SkuRefused               422: the warehouse refuses this SKU
        ├── IdempotencyKeyMismatch   422: the key was used before with another body
        ├── KeyVoided                410: the key was voided (an operator's amendment
        │                            fenced it); the line's next try reads the ledger again
        ├── ShipmentConflict         the warehouse holds a shipment under the line's key
        │                            with other content (or several): never adopted
        └── WarehouseAuthError       401 / 403: a configuration problem, not a data problem

Every exception keeps the HTTP ``status`` (``None`` for transport failures), the problem
document's ``detail`` and ``type``, the whole ``problem`` document, ``retry_after`` (seconds
from a ``Retry-After`` header, sent with 429 and 503) and ``attempts`` when it is raised
by a retrying call. :func:`is_retryable` is the only place that decides
whether a failure is retried; :func:`error_for_response` is the only place that turns an
HTTP answer into one of these classes.

The ledger's failures, all final (see :mod:`shipping.ledger`)::

    LedgerError
    ├── OrderConflict                the order_id holds other content, or its state forbids it
    ├── OrderRejected                the order is REJECTED (a business rule); it stays so
    ├── OrderNotFound                no such order, or no such line in it
    ├── OrderIncomplete              finalize: some lines are not shipped (names them)
    ├── ShipmentMismatch             a shipped line reported again under another shipment id
    ├── AmendmentRefused             an operator's fix or cancel is not allowed (says why)
    └── LineFenced                   an amendment superseded this try: nothing recorded;
                                     the next try ships what the ledger holds now

    ConnectionConfigError            an Airflow Connection lacks a field or has the wrong type
    DriftFound                       the ledger and the warehouse disagree (scheduled check)

Which failures are final, and what an operator does about each, is said once, in
:data:`FAMILIES`: every class belongs to one :class:`ErrorFamily`, and
:func:`classify` gives an exception's class name, family and finality. The DAG's retry
policy is built from it (one rule and reason per final family), the ledger stores the
class and the finality of each line's last error, and the operator commands read the
family from the class name (:func:`family_of`); nothing parses message text.

This module imports nothing heavy: the DAG names these classes in its retry policy, and
every task process parses the DAG file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

__all__ = [
    "ConnectionConfigError",
    "DriftFound",
    "ErrorFamily",
    "FAMILIES",
    "KeyVoided",
    "LedgerError",
    "LineFenced",
    "OrderConflict",
    "OrderIncomplete",
    "OrderNotFound",
    "OrderRejected",
    "ShipmentMismatch",
    "AmendmentRefused",
    "IdempotencyInFlight",
    "RequestNotSent",
    "ShipmentConflict",
    "IdempotencyKeyMismatch",
    "InvalidShipmentRequest",
    "SkuRefused",
    "WarehouseAuthError",
    "WarehouseError",
    "WarehouseRejected",
    "WarehouseServerError",
    "WarehouseThrottled",
    "WarehouseTimeout",
    "WarehouseTransportError",
    "WarehouseUnavailable",
    "classify",
    "error_for_response",
    "family_of",
    "is_retryable",
]


class WarehouseError(Exception):
    """A call to the warehouse failed.

    Attributes:
        status: The HTTP status of the answer, or ``None`` when there was no answer.
        problem: The ``application/problem+json`` document of the answer, if it had one.
        problem_type: The problem's ``type`` URI, if any.
        detail: The problem's ``detail`` (or a short excerpt of a non-problem body).
        retry_after: Seconds the warehouse asked us to wait before trying again (its
            ``Retry-After`` header, sent with 429 and 503), or ``None``.
        attempts: How many attempts the call made, when raised by a retrying call.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        problem: Mapping[str, Any] | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
        attempts: int | None = None,
    ) -> None:
        # Only the message goes to args, so pickling (``cls(*args)`` plus ``__dict__``)
        # round-trips every attribute.
        super().__init__(message)
        self.message = message
        self.status = status
        self.problem: dict[str, Any] | None = dict(problem) if problem is not None else None
        problem_detail = self.problem.get("detail") if self.problem else None
        self.detail = detail if detail is not None else _str_or_none(problem_detail)
        self.problem_type = _str_or_none(self.problem.get("type")) if self.problem else None
        self.retry_after = retry_after
        self.attempts = attempts

    def __str__(self) -> str:
        if self.attempts is None:
            return self.message
        plural = "" if self.attempts == 1 else "s"
        return f"{self.message} (after {self.attempts} attempt{plural})"


class WarehouseUnavailable(WarehouseError):
    """The warehouse could not answer now; retried (see :func:`is_retryable`)."""


class WarehouseTransportError(WarehouseUnavailable):
    """No HTTP answer: the connection failed or broke. ``status`` is ``None``."""


class WarehouseTimeout(WarehouseTransportError):
    """No answer within the timeout; the warehouse may still have committed the request."""


class WarehouseServerError(WarehouseUnavailable):
    """A 5xx answer. After commit-then-error the shipment exists; the retry replays it."""


class WarehouseThrottled(WarehouseUnavailable):
    """A 429: too many requests; ``retry_after`` says when to come back, if known."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        problem: Mapping[str, Any] | None = None,
        detail: str | None = None,
        retry_after: float | None = None,
        attempts: int | None = None,
    ) -> None:
        super().__init__(
            message,
            status=status,
            problem=problem,
            detail=detail,
            retry_after=retry_after,
            attempts=attempts,
        )


class IdempotencyInFlight(WarehouseError):
    """A 409: a request with the same key is still being processed; retried."""


class WarehouseRejected(WarehouseError):
    """A final 4xx answer: sending the same request again gets the same refusal."""


class InvalidShipmentRequest(WarehouseRejected):
    """The warehouse found the request malformed (400 or 422 ``invalid-request``)."""


class RequestNotSent(InvalidShipmentRequest):
    """The request could not be built or sent at all (``status`` None): a bug or config."""


class ShipmentConflict(WarehouseRejected):
    """The warehouse holds a shipment under the line's key that is not this line's.

    Its content (SKU, quantity, address) differs, or there are several: adopting it would
    count the line as shipped though nothing shipped for it, and posting would be refused
    for the changed body. An operator must look.
    """


class SkuRefused(WarehouseRejected):
    """The warehouse refuses to ship this SKU (422 ``sku-refused``)."""


class IdempotencyKeyMismatch(WarehouseRejected):
    """The key was used before with a different body (422): a bug or a changed order."""


class WarehouseAuthError(WarehouseRejected):
    """The token is missing, wrong or not allowed (401 / 403): fix the configuration."""


class KeyVoided(WarehouseRejected):
    """A 410: the key was voided at the warehouse, so nothing ships under it any more.

    An operator's fix or cancel voids the line's key before it takes effect; a try that
    still posted under it is fenced. The line's next try reads the ledger again.
    """


# Exceptions. Each passes its constructor arguments to Exception so it survives pickling.


class LedgerError(Exception):
    """Base of every error the ledger raises."""


class OrderConflict(LedgerError):
    """The order_id holds other content, or the order's state forbids the change.

    Attributes:
        order_id: The order concerned.
        detail: What conflicts.
    """

    def __init__(self, order_id: str, detail: str) -> None:
        super().__init__(order_id, detail)
        self.order_id = order_id
        self.detail = detail

    def __str__(self) -> str:
        return f"order {self.order_id!r}: {self.detail}"


class OrderRejected(LedgerError):
    """The order was rejected by a business rule; it stays rejected.

    Attributes:
        order_id: The order concerned.
        reason: Why it was rejected.
    """

    def __init__(self, order_id: str, reason: str | None) -> None:
        super().__init__(order_id, reason)
        self.order_id = order_id
        self.reason = reason

    def __str__(self) -> str:
        return f"order {self.order_id!r} was rejected: {self.reason}"


class OrderNotFound(LedgerError):
    """No such order, or no such line in it.

    Attributes:
        order_id: The order looked for.
        line_id: The line looked for, if a line was.
    """

    def __init__(self, order_id: str, line_id: str | None = None) -> None:
        super().__init__(order_id, line_id)
        self.order_id = order_id
        self.line_id = line_id

    def __str__(self) -> str:
        if self.line_id is None:
            return f"no order {self.order_id!r} in the ledger"
        return f"no line {self.line_id!r} of order {self.order_id!r} in the ledger"


class OrderIncomplete(LedgerError):
    """Not every line of the order is shipped, so it cannot be finalized.

    Attributes:
        order_id: The order concerned.
        missing: The state of each line not shipped, in line order (empty if the order has
            no lines at all).
    """

    def __init__(self, order_id: str, missing: Mapping[str, str]) -> None:
        super().__init__(order_id, dict(missing))
        self.order_id = order_id
        self.missing = dict(missing)

    def __str__(self) -> str:
        if not self.missing:
            return f"order {self.order_id!r} has no lines to ship"
        lines = ", ".join(f"{line_id} ({state})" for line_id, state in self.missing.items())
        return f"order {self.order_id!r} is not fully shipped: lines {lines}"


class ShipmentMismatch(LedgerError):
    """A shipped line was reported shipped again under another shipment id.

    That would be a second shipment for one line, so nothing is recorded.

    Attributes:
        order_id: The order concerned.
        line_id: The line concerned.
        recorded: The shipment id in the ledger.
        reported: The shipment id reported now.
    """

    def __init__(self, order_id: str, line_id: str, recorded: str, reported: str) -> None:
        super().__init__(order_id, line_id, recorded, reported)
        self.order_id = order_id
        self.line_id = line_id
        self.recorded = recorded
        self.reported = reported

    def __str__(self) -> str:
        return (
            f"line {self.line_id!r} of order {self.order_id!r} shipped as {self.recorded!r}, "
            f"now reported as {self.reported!r}"
        )


class AmendmentRefused(LedgerError):
    """An operator's fix or cancel of a line is not allowed.

    Attributes:
        order_id: The order concerned.
        line_id: The line concerned.
        reason: Why not.
    """

    def __init__(self, order_id: str, line_id: str, reason: str) -> None:
        super().__init__(order_id, line_id, reason)
        self.order_id = order_id
        self.line_id = line_id
        self.reason = reason

    def __str__(self) -> str:
        return f"line {self.line_id!r} of order {self.order_id!r}: {self.reason}"


class LineFenced(LedgerError):
    """A try's result was not recorded: an operator's amendment superseded the try.

    The line's revision moved on (a fix), or it is being cancelled, after the try read it.
    Whatever the try made under its key is voided by the amendment. Retried: the next try
    ships what the ledger holds now.

    Attributes:
        order_id: The order concerned.
        line_id: The line concerned.
        detail: What superseded the try.
    """

    def __init__(self, order_id: str, line_id: str, detail: str) -> None:
        super().__init__(order_id, line_id, detail)
        self.order_id = order_id
        self.line_id = line_id
        self.detail = detail

    def __str__(self) -> str:
        return f"line {self.line_id!r} of order {self.order_id!r}: {self.detail}"


class DriftFound(Exception):
    """The ledger and the warehouse disagree (the scheduled check fails with it)."""

    def __init__(self, report_json: dict[str, Any]) -> None:
        super().__init__(report_json)
        self.report = report_json

    def __str__(self) -> str:
        orders = sorted({d["order_id"] for d in self.report["drift"]})
        return (
            f"{len(self.report['drift'])} drift(s) between the ledger and the warehouse in "
            f"order(s) {', '.join(orders)}; run `shipping reconcile ORDER_ID` for each"
        )


class ConnectionConfigError(ValueError):
    """An Airflow Connection lacks a field or has the wrong type; the message names which."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed warehouse call is worth another attempt with the same key and body.

    The one retry rule of the client; each class's reason:

    * :class:`WarehouseTransportError`, :class:`WarehouseTimeout`: the request may not have
      arrived, or its answer was lost. Resending it under the same idempotency key is
      harmless: a committed request is replayed, not repeated.
    * :class:`WarehouseServerError` (5xx): a blip on the warehouse's side, including the
      ambiguous commit-then-error; the key again makes the resend safe.
    * :class:`WarehouseThrottled` (429): the warehouse asked us to come back later.
    * :class:`IdempotencyInFlight` (409): an earlier attempt with this key (one we gave up
      waiting for) is still running; once it finishes, its stored answer is replayed.
    * :class:`WarehouseRejected` and its subclasses (other 4xx): the same request gets the
      same answer, so retrying only delays the failure. A wrong token is configuration.
    * Anything else is not a warehouse failure but a bug, and is never retried.
    """
    return isinstance(exc, WarehouseUnavailable | IdempotencyInFlight)


# Problem ``type`` paths of the warehouse contract; the status is the fallback.
_CLASS_BY_PROBLEM_TYPE: Final[Mapping[str, type[WarehouseError]]] = {
    "/problems/unauthorized": WarehouseAuthError,
    "/problems/forbidden": WarehouseAuthError,
    "/problems/missing-idempotency-key": InvalidShipmentRequest,
    "/problems/invalid-request": InvalidShipmentRequest,
    "/problems/idempotency-key-mismatch": IdempotencyKeyMismatch,
    "/problems/request-in-flight": IdempotencyInFlight,
    "/problems/sku-refused": SkuRefused,
    "/problems/throttled": WarehouseThrottled,
    "/problems/internal-error": WarehouseServerError,
    "/problems/service-unavailable": WarehouseServerError,
    "/problems/not-found": WarehouseRejected,
    "/problems/key-voided": KeyVoided,
}


def _class_for_status(status: int) -> type[WarehouseError]:
    if status == 429:
        return WarehouseThrottled
    if status == 409:
        return IdempotencyInFlight
    if status in (401, 403):
        return WarehouseAuthError
    if status == 410:
        return KeyVoided
    if status >= 500:
        return WarehouseServerError
    return WarehouseRejected


def error_for_response(
    status: int,
    problem: Mapping[str, Any] | None,
    *,
    retry_after: float | None = None,
    detail: str | None = None,
) -> WarehouseError:
    """The typed exception for an unsuccessful HTTP answer.

    The problem's ``type`` decides the class when it is one of the contract's; otherwise
    the status does.

    Args:
        status: The HTTP status code of the answer.
        problem: Its ``application/problem+json`` document, if it had one.
        retry_after: Seconds from the ``Retry-After`` header, if any.
        detail: A description to keep when the answer had no problem document.

    Returns:
        The exception to raise (not raised here).
    """
    problem_type = _str_or_none(problem.get("type")) if problem else None
    cls = _CLASS_BY_PROBLEM_TYPE.get(_type_path(problem_type)) if problem_type else None
    if cls is None:
        cls = _class_for_status(status)
    label = problem_type.rsplit("/", 1)[-1] if problem_type else "no problem document"
    shown = detail if detail is not None else problem.get("detail") if problem else None
    message = f"warehouse answered {status} ({label})"
    if shown:
        message = f"{message}: {shown}"
    return cls(message, status=status, problem=problem, detail=detail, retry_after=retry_after)


def _type_path(problem_type: str) -> str:
    # The contract's types are relative URIs; compare by path so an absolute form matches.
    return urlsplit(problem_type).path


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


class ErrorFamily(StrEnum):
    """What kind of failure a line's last error is, and so what ends it."""

    OUTAGE = "outage"  # the warehouse or the ledger could not answer: retried by itself
    FENCED = "fenced"  # an amendment superseded a try: retried by itself
    REFUSED = "refused"  # the warehouse refuses this line as it is: fix or cancel it
    CONFIGURATION = "configuration"  # token, URL or connection: fix it, then retry
    CONFLICT = "conflict"  # the warehouse holds other content under the key: reconcile
    ORDER = "order"  # the order itself is refused, rejected or incomplete
    BUG = "bug"  # anything else: an unexpected error, retried like an outage


@dataclass(frozen=True)
class Family:
    """A family of errors: whether Airflow retries it, and why.

    Attributes:
        family: The family.
        final: Whether a retry cannot cure it (Airflow fails the task at once).
        reason: Why, as the DAG's retry rule states it.
        classes: The exception classes of the family (subclasses included).
    """

    family: ErrorFamily
    final: bool
    reason: str
    classes: tuple[type[BaseException], ...]


#: Every family, most specific classes first: the first family whose classes match an
#: exception is its family. Anything matched by none is a :attr:`ErrorFamily.BUG`.
FAMILIES: Final[tuple[Family, ...]] = (
    Family(
        ErrorFamily.FENCED,
        False,
        "retried: an operator's amendment superseded the try; the next one ships the ledger's line",
        (LineFenced, KeyVoided),
    ),
    Family(
        ErrorFamily.CONFIGURATION,
        True,
        "final: the warehouse token or a connection is wrong; fix the configuration, then "
        "`shipping retry`",
        (WarehouseAuthError, RequestNotSent, ConnectionConfigError),
    ),
    Family(
        ErrorFamily.CONFLICT,
        True,
        "final: the warehouse holds other content under the line's key; `shipping "
        "reconcile --repair` voids it",
        (ShipmentConflict, IdempotencyKeyMismatch, ShipmentMismatch),
    ),
    Family(
        ErrorFamily.REFUSED,
        True,
        "final: the warehouse refuses the line as it is; an operator fixes or cancels it",
        (WarehouseRejected,),
    ),
    Family(
        ErrorFamily.ORDER,
        True,
        "final: the order is refused, rejected or not complete; retrying repeats it",
        (LedgerError, DriftFound),
    ),
    Family(
        ErrorFamily.OUTAGE,
        False,
        "retried: the warehouse or the ledger could not answer; the next try may",
        (WarehouseUnavailable, IdempotencyInFlight),
    ),
)

_BUG: Final = Family(
    ErrorFamily.BUG, False, "retried: an unexpected error, treated like an outage", ()
)


@dataclass(frozen=True)
class Classification:
    """How one exception is classified.

    Attributes:
        error_class: The exception's class name (stored in the ledger).
        family: Its family.
        final: Whether a retry cannot cure it.
    """

    error_class: str
    family: ErrorFamily
    final: bool


def _family(cls: type[BaseException]) -> Family:
    return next((f for f in FAMILIES if issubclass(cls, f.classes)), _BUG)


def classify(exc: BaseException) -> Classification:
    """The class name, family and finality of ``exc``."""
    family = _family(type(exc))
    return Classification(type(exc).__name__, family.family, family.final)


def family_of(error_class: str | None) -> ErrorFamily | None:
    """The family of an error class stored by name (None for no error).

    A name this module does not define (a bug, a database driver's error) is a
    :attr:`ErrorFamily.BUG`; the ledger's unreachable database is an outage by its own
    class, which this module does not import, so it is looked up by the name's suffix.
    """
    if not error_class:
        return None
    cls = globals().get(error_class)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return _family(cls).family
    if error_class in _OUTAGE_NAMES:
        return ErrorFamily.OUTAGE
    return ErrorFamily.BUG


#: Classes of other libraries that mean an outage (the ledger's database unreachable).
_OUTAGE_NAMES: Final = frozenset({"OperationalError", "InterfaceError", "DisconnectionError"})


def retry_rules() -> list[tuple[tuple[str, ...], bool, str]]:
    """Each family's classes (dotted paths), finality and reason, most specific first.

    Airflow's retry policy takes the first rule whose classes match, so the DAG builds
    one rule per family from this, in this order.
    """
    return [
        (tuple(f"{c.__module__}.{c.__qualname__}" for c in f.classes), f.final, f.reason)
        for f in FAMILIES
    ]
