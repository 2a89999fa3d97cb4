"""Errors as ``application/problem+json`` (RFC 9457), with stable problem types.

Clients branch on ``type``, never on ``title`` or ``detail``:

| type | status | meaning | retry? |
|---|---|---|---|
| ``/problems/unauthorized`` | 401 | missing or wrong bearer token | no |
| ``/problems/forbidden`` | 403 | a valid token that may not do this | no |
| ``/problems/missing-idempotency-key`` | 400 | ``Idempotency-Key`` missing or malformed | no |
| ``/problems/invalid-request`` | 422 | the body or query is invalid (``errors`` lists why) | no |
| ``/problems/idempotency-key-mismatch`` | 422 | the key was used with another body | no |
| ``/problems/sku-refused`` | 422 | the warehouse refuses this SKU | no |
| ``/problems/key-voided`` | 410 | the key was voided: nothing is or will be created under it | no |
| ``/problems/request-in-flight`` | 409 | the first request with this key is still running | yes |
| ``/problems/throttled`` | 429 | too many requests; honour ``Retry-After`` | yes |
| ``/problems/internal-error`` | 500 | the warehouse failed | yes |
| ``/problems/service-unavailable`` | 503 | the warehouse is unavailable; ``Retry-After`` | yes |
| ``/problems/not-found`` | 404 | no such resource | no |
| ``/problems/method-not-allowed`` | 405 | no such method on this path | no |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from fastapi.responses import JSONResponse

from warehouse_mock.schemas import Problem

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
_PROBLEM_SCHEMA: Final = Problem.model_json_schema()


@dataclass(frozen=True)
class ProblemKind:
    """One kind of problem: its type URI, title and HTTP status."""

    type: str
    title: str
    status: int


UNAUTHORIZED: Final = ProblemKind("/problems/unauthorized", "Unauthorized", 401)
FORBIDDEN: Final = ProblemKind("/problems/forbidden", "Forbidden", 403)
MISSING_IDEMPOTENCY_KEY: Final = ProblemKind(
    "/problems/missing-idempotency-key", "Missing or malformed Idempotency-Key", 400
)
INVALID_REQUEST: Final = ProblemKind("/problems/invalid-request", "Invalid request", 422)
IDEMPOTENCY_KEY_MISMATCH: Final = ProblemKind(
    "/problems/idempotency-key-mismatch", "Idempotency-Key reused with another body", 422
)
SKU_REFUSED: Final = ProblemKind("/problems/sku-refused", "SKU refused", 422)
BODY_TOO_LARGE: Final = ProblemKind("/problems/body-too-large", "Request body too large", 413)
KEY_VOIDED: Final = ProblemKind("/problems/key-voided", "Idempotency key voided", 410)
REQUEST_IN_FLIGHT: Final = ProblemKind(
    "/problems/request-in-flight", "A request with this Idempotency-Key is in flight", 409
)
THROTTLED: Final = ProblemKind("/problems/throttled", "Too many requests", 429)
INTERNAL_ERROR: Final = ProblemKind("/problems/internal-error", "Internal error", 500)
SERVICE_UNAVAILABLE: Final = ProblemKind(
    "/problems/service-unavailable", "Service unavailable", 503
)
NOT_FOUND: Final = ProblemKind("/problems/not-found", "Not found", 404)
METHOD_NOT_ALLOWED: Final = ProblemKind("/problems/method-not-allowed", "Method not allowed", 405)


class ProblemError(Exception):
    """Raised anywhere in a request to answer with a problem document.

    Args:
        kind: The kind of problem.
        detail: What went wrong, for a human.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
        errors: Individual validation errors, for ``invalid-request``.
    """

    def __init__(
        self,
        kind: ProblemKind,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = [dict(e) for e in errors] if errors is not None else None


def problem_response(
    kind: ProblemKind,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: Sequence[Mapping[str, Any]] | None = None,
) -> JSONResponse:
    """Build the problem+json response of ``kind``."""
    body = Problem(
        type=kind.type,
        title=kind.title,
        status=kind.status,
        detail=detail,
        errors=[dict(e) for e in errors] if errors is not None else None,
    )
    return JSONResponse(
        body.model_dump(mode="json", exclude_none=True),
        status_code=kind.status,
        headers=dict(headers or {}),
        media_type=PROBLEM_MEDIA_TYPE,
    )


def kind_for_status(status: int) -> ProblemKind:
    """The problem kind of an HTTP status raised by the framework (404, 405, ...)."""
    known = {
        k.status: k
        for k in (NOT_FOUND, METHOD_NOT_ALLOWED, UNAUTHORIZED, FORBIDDEN, SERVICE_UNAVAILABLE)
    }
    if status in known:
        return known[status]
    if status >= 500:
        return INTERNAL_ERROR
    return ProblemKind(f"/problems/http-{status}", "HTTP error", status)


def problem_doc_responses(*kinds: ProblemKind) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting that a route answers these problems."""
    responses: dict[int | str, dict[str, Any]] = {}
    for kind in kinds:
        entry = responses.setdefault(
            kind.status,
            {"description": "", "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_SCHEMA}}},
        )
        entry["description"] = "; ".join(
            filter(None, [entry["description"], f"`{kind.type}`: {kind.title}"])
        )
    return responses
