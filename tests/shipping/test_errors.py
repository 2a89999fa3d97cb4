"""Tests for the warehouse exception tree and its retry rule."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from shipping.errors import (
    IdempotencyInFlight,
    IdempotencyKeyMismatch,
    InvalidShipmentRequest,
    SkuRefused,
    WarehouseAuthError,
    WarehouseError,
    WarehouseRejected,
    WarehouseServerError,
    WarehouseThrottled,
    WarehouseTimeout,
    WarehouseTransportError,
    WarehouseUnavailable,
    error_for_response,
    is_retryable,
)


def problem(type_: str, status: int, detail: str = "because") -> dict[str, Any]:
    """A problem+json document as the warehouse writes it."""
    return {"type": type_, "title": type_.rsplit("/", 1)[-1], "status": status, "detail": detail}


@pytest.mark.parametrize(
    ("type_", "status", "expected"),
    [
        ("/problems/unauthorized", 401, WarehouseAuthError),
        ("/problems/forbidden", 403, WarehouseAuthError),
        ("/problems/missing-idempotency-key", 400, InvalidShipmentRequest),
        ("/problems/invalid-request", 422, InvalidShipmentRequest),
        ("/problems/idempotency-key-mismatch", 422, IdempotencyKeyMismatch),
        ("/problems/request-in-flight", 409, IdempotencyInFlight),
        ("/problems/sku-refused", 422, SkuRefused),
        ("/problems/throttled", 429, WarehouseThrottled),
        ("/problems/internal-error", 500, WarehouseServerError),
        ("/problems/service-unavailable", 503, WarehouseServerError),
        ("/problems/not-found", 404, WarehouseRejected),
    ],
)
def test_problem_type_decides_the_class(
    type_: str, status: int, expected: type[WarehouseError]
) -> None:
    """Each problem type of the contract maps to its own exception class."""
    assert type(error_for_response(status, problem(type_, status))) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, WarehouseRejected),
        (401, WarehouseAuthError),
        (403, WarehouseAuthError),
        (404, WarehouseRejected),
        (409, IdempotencyInFlight),
        (422, WarehouseRejected),
        (429, WarehouseThrottled),
        (500, WarehouseServerError),
        (502, WarehouseServerError),
        (503, WarehouseServerError),
    ],
)
def test_status_decides_without_a_known_problem_type(
    status: int, expected: type[WarehouseError]
) -> None:
    """Without a contract problem type (a proxy's page, say) the status picks the class."""
    assert type(error_for_response(status, None, detail="<html>")) is expected


def test_absolute_problem_type_matches_its_relative_form() -> None:
    """A problem type sent as an absolute URI is matched by its path."""
    error = error_for_response(422, problem("https://warehouse.example/problems/sku-refused", 422))
    assert isinstance(error, SkuRefused)


def test_error_keeps_status_detail_type_and_problem() -> None:
    """The status stays an int and the problem's fields stay attributes."""
    doc = problem("/problems/sku-refused", 422, "SKU 'BAD-1' is refused")
    error = error_for_response(422, doc)
    assert (error.status, error.detail, error.problem_type, error.problem) == (
        422,
        "SKU 'BAD-1' is refused",
        "/problems/sku-refused",
        doc,
    )


def test_message_names_status_type_and_detail() -> None:
    """The message says what the warehouse answered and why."""
    error = error_for_response(422, problem("/problems/sku-refused", 422, "SKU 'BAD-1' is refused"))
    assert str(error) == "warehouse answered 422 (sku-refused): SKU 'BAD-1' is refused"


def test_message_counts_attempts_when_known() -> None:
    """An exception from a retrying call says how many attempts were made."""
    error = WarehouseServerError("warehouse answered 500", status=500, attempts=3)
    assert str(error) == "warehouse answered 500 (after 3 attempts)"


@pytest.mark.parametrize(
    ("type_", "status"), [("/problems/throttled", 429), ("/problems/service-unavailable", 503)]
)
def test_retry_after_is_kept(type_: str, status: int) -> None:
    """A 429 or 503 keeps the seconds from its Retry-After header."""
    assert error_for_response(status, problem(type_, status), retry_after=2.0).retry_after == 2.0


def test_transport_error_has_no_status() -> None:
    """A failure without an HTTP answer has status None."""
    assert WarehouseTimeout("no answer").status is None


@pytest.mark.parametrize(
    "error",
    [
        WarehouseTransportError("connection refused"),
        WarehouseTimeout("read timed out"),
        WarehouseServerError("500", status=500),
        WarehouseThrottled("429", retry_after=1.0),
        IdempotencyInFlight("409", status=409),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unavailable_and_in_flight_are_retryable(error: WarehouseError) -> None:
    """Transport failures, timeouts, 5xx, 429 and 409 are retried."""
    assert is_retryable(error)


@pytest.mark.parametrize(
    "error",
    [
        WarehouseRejected("404", status=404),
        InvalidShipmentRequest("422", status=422),
        SkuRefused("422", status=422),
        IdempotencyKeyMismatch("422", status=422),
        WarehouseAuthError("401", status=401),
        ValueError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_rejections_and_bugs_are_final(error: Exception) -> None:
    """Other 4xx answers and non-warehouse exceptions are never retried."""
    assert not is_retryable(error)


@pytest.mark.parametrize(
    ("cls", "parent"),
    [
        (WarehouseTimeout, WarehouseTransportError),
        (WarehouseTransportError, WarehouseUnavailable),
        (WarehouseServerError, WarehouseUnavailable),
        (WarehouseThrottled, WarehouseUnavailable),
        (IdempotencyInFlight, WarehouseError),
        (SkuRefused, WarehouseRejected),
        (IdempotencyKeyMismatch, WarehouseRejected),
        (InvalidShipmentRequest, WarehouseRejected),
        (WarehouseAuthError, WarehouseRejected),
        (WarehouseRejected, WarehouseError),
    ],
)
def test_tree_is_as_documented(cls: type[WarehouseError], parent: type[WarehouseError]) -> None:
    """Each class sits where the module docstring draws it."""
    assert issubclass(cls, parent)


def test_in_flight_is_not_a_rejection() -> None:
    """A 409 is neither final nor an outage: it is its own branch."""
    assert not issubclass(IdempotencyInFlight, WarehouseRejected | WarehouseUnavailable)


def test_pickling_keeps_every_attribute() -> None:
    """An exception survives pickling (process boundaries) with its attributes."""
    error = error_for_response(429, problem("/problems/throttled", 429), retry_after=3.0)
    error.attempts = 6
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.status, copy.retry_after, copy.attempts) == (
        WarehouseThrottled,
        str(error),
        429,
        3.0,
        6,
    )
