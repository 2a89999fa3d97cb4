"""Wire schemas of the warehouse API: what goes over HTTP, apart from what is stored.

Request schemas refuse unknown fields, so a typo in a client shows up as a 422 instead of
being dropped silently. The shapes of ``order_id``, ``line_id`` and ``ship_to`` are those of
the order in ``design.md``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# Patterns run on pydantic's Rust regex engine, where ``$`` is the end of the string
# (Python's ``$`` would also accept a final newline).
ORDER_ID_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
LINE_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
# Free text: no control characters (a NUL cannot even be stored in PostgreSQL).
_TEXT: Final = r"[^\x00-\x1f\x7f]"
MAX_QUANTITY: Final = 10_000
MAX_DELAY_MS: Final = 600_000  # ten minutes: longer waits are a typo, not a demo
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 255
# The rule of the Idempotency-Key header, for a key sent in a body.
IDEMPOTENCY_KEY_PATTERN: Final = rf"^[ -~]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}$"
MAX_VOID_REASON_LENGTH: Final = 500

ShipmentStatus = Literal["created", "cancelled"]


def _text(min_length: int, max_length: int) -> Any:
    return StringConstraints(
        min_length=min_length,
        max_length=max_length,
        pattern=f"^{_TEXT}*$",
    )


def _no_double_dot(value: str) -> str:
    # ".." in an order id would put a path traversal into the client's run ids and logs.
    if ".." in value:
        raise ValueError("must not contain '..'")
    return value


_AddressField = Annotated[str, _text(1, 200)]
_Rate = Annotated[float, Field(ge=0.0, le=1.0, description="probability per request, 0..1")]
_DelayMs = Annotated[int, Field(ge=0, le=MAX_DELAY_MS)]


class ShipTo(BaseModel):
    """The address a shipment goes to."""

    model_config = ConfigDict(extra="forbid")

    name: _AddressField
    line1: _AddressField
    line2: Annotated[str, _text(0, 200)] | None = None
    city: _AddressField
    postal_code: Annotated[str, _text(1, 20)]
    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")] = Field(
        description="ISO 3166-1 alpha-2 code"
    )


class ShipmentCreate(BaseModel):
    """The body of ``POST /v1/shipments``: one order line to ship."""

    model_config = ConfigDict(extra="forbid")

    order_id: Annotated[
        str, StringConstraints(pattern=ORDER_ID_PATTERN), AfterValidator(_no_double_dot)
    ]
    line_id: Annotated[str, StringConstraints(pattern=LINE_ID_PATTERN)]
    sku: Annotated[str, _text(1, 64)]
    # Strict: "2", 2.0 and true are refused rather than coerced into a quantity.
    quantity: Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY)]
    ship_to: ShipTo


class Shipment(BaseModel):
    """A shipment as the API shows it: with its key and address, so a client can tell
    whether a shipment it finds is the one it asked for."""

    model_config = ConfigDict(from_attributes=True)

    shipment_id: str
    idempotency_key: str
    order_id: str
    line_id: str
    sku: str
    quantity: int
    ship_to: dict[str, Any]
    status: ShipmentStatus = Field(description="`cancelled` once its key was voided")
    created_at: datetime
    cancelled_at: datetime | None = None


class ShipmentList(BaseModel):
    """The answer of ``GET /v1/shipments?order_id=...``."""

    shipments: list[Shipment]


class VoidCreate(BaseModel):
    """The body of ``POST /v1/voids``: the key to void for good, and why."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: Annotated[str, StringConstraints(pattern=IDEMPOTENCY_KEY_PATTERN)] = Field(
        description="the Idempotency-Key to void, as sent with POST /v1/shipments"
    )
    reason: Annotated[str, _text(1, MAX_VOID_REASON_LENGTH)]


class Void(BaseModel):
    """The answer of ``POST /v1/voids``: the key's tombstone and its cancelled shipment.

    Voiding again answers the same tombstone: the first ``voided_at`` and ``reason``.
    """

    idempotency_key: str
    voided_at: datetime
    reason: str
    shipment: Shipment | None = Field(
        description="the shipment made under the key, now cancelled; null if none was made"
    )


class Health(BaseModel):
    """The answer of ``GET /healthz``."""

    status: Literal["ok"] = "ok"


class Problem(BaseModel):
    """An error body (RFC 9457 ``application/problem+json``).

    ``type`` is a stable relative URI that clients branch on; ``detail`` is for humans.
    """

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="the individual validation errors, when there are several"
    )


class FaultConfig(BaseModel):
    """Injected faults: the body of ``PUT /_admin/faults`` and of ``WAREHOUSE_FAULTS``.

    Every field is optional; a ``PUT`` replaces the whole configuration, so fields left
    out fall back to "no fault".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_rate: _Rate = 0.0
    commit_then_error_rate: _Rate = 0.0
    timeout_rate: _Rate = 0.0
    throttle_rate: _Rate = 0.0
    latency_ms: _DelayMs = Field(
        default=0, description="added delay while the request holds its in-flight claim"
    )
    reject_skus: tuple[Annotated[str, StringConstraints(min_length=1, max_length=64)], ...] = Field(
        default=(), description="fnmatch globs of SKUs refused with 422"
    )
    seed: int | None = Field(default=None, description="seed of the fault draws, for replays")
    retry_after_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=1, description="Retry-After sent with injected 429 and 503 answers"
    )
    timeout_hang_ms: _DelayMs = Field(
        default=10_000, description="how long an injected timeout hangs before processing"
    )
