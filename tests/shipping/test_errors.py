"""Tests for the warehouse exception tree and its retry rule."""

from __future__ import annotations

import importlib
import pickle
from typing import Any

import pytest

from shipping.errors import (
    FAMILIES,
    AmendmentRefused,
    Classification,
    ConnectionConfigError,
    DriftFound,
    ErrorFamily,
    IdempotencyInFlight,
    IdempotencyKeyMismatch,
    InvalidShipmentRequest,
    KeyVoided,
    LedgerError,
    LineFenced,
    OrderConflict,
    OrderIncomplete,
    OrderNotFound,
    OrderRejected,
    RequestNotSent,
    ShipmentConflict,
    ShipmentMismatch,
    SkuRefused,
    WarehouseAuthError,
    WarehouseError,
    WarehouseRejected,
    WarehouseServerError,
    WarehouseThrottled,
    WarehouseTimeout,
    WarehouseTransportError,
    WarehouseUnavailable,
    classify,
    error_for_response,
    family_of,
    is_retryable,
    retry_rules,
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
        ("/problems/key-voided", 410, KeyVoided),
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
        (410, KeyVoided),
        (411, WarehouseRejected),
        (422, WarehouseRejected),
        (429, WarehouseThrottled),
        (500, WarehouseServerError),
        (502, WarehouseServerError),
        (503, WarehouseServerError),
        (499, WarehouseRejected),
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


# Finality: every class the ledger may record, with its family and whether a retry can
# cure it. Subclasses of a final base sit in a retried family (a fenced try) and the
# other way round (a bug's ValueError base), so the order of FAMILIES matters.
FINALITY: list[tuple[type[BaseException], ErrorFamily, bool]] = [
    (LineFenced, ErrorFamily.FENCED, False),
    (KeyVoided, ErrorFamily.FENCED, False),
    (WarehouseAuthError, ErrorFamily.CONFIGURATION, True),
    (RequestNotSent, ErrorFamily.CONFIGURATION, True),
    (ConnectionConfigError, ErrorFamily.CONFIGURATION, True),
    (ShipmentConflict, ErrorFamily.CONFLICT, True),
    (IdempotencyKeyMismatch, ErrorFamily.CONFLICT, True),
    (ShipmentMismatch, ErrorFamily.CONFLICT, True),
    (WarehouseRejected, ErrorFamily.REFUSED, True),
    (InvalidShipmentRequest, ErrorFamily.REFUSED, True),
    (SkuRefused, ErrorFamily.REFUSED, True),
    (LedgerError, ErrorFamily.ORDER, True),
    (OrderConflict, ErrorFamily.ORDER, True),
    (OrderRejected, ErrorFamily.ORDER, True),
    (OrderNotFound, ErrorFamily.ORDER, True),
    (OrderIncomplete, ErrorFamily.ORDER, True),
    (AmendmentRefused, ErrorFamily.ORDER, True),
    (DriftFound, ErrorFamily.ORDER, True),
    (WarehouseUnavailable, ErrorFamily.OUTAGE, False),
    (WarehouseTransportError, ErrorFamily.OUTAGE, False),
    (WarehouseTimeout, ErrorFamily.OUTAGE, False),
    (WarehouseServerError, ErrorFamily.OUTAGE, False),
    (WarehouseThrottled, ErrorFamily.OUTAGE, False),
    (IdempotencyInFlight, ErrorFamily.OUTAGE, False),
    (ValueError, ErrorFamily.BUG, False),
    (KeyError, ErrorFamily.BUG, False),
]


def instance_of(cls: type[BaseException]) -> BaseException:
    """An instance of ``cls`` without its constructor (only its class is classified)."""
    return cls.__new__(cls)


def first_matching_rule(exc: BaseException) -> tuple[tuple[str, ...], bool, str] | None:
    """The retry rule Airflow applies to ``exc``: the first whose classes match it."""
    for rule in retry_rules():
        classes = tuple(
            getattr(importlib.import_module(path.rsplit(".", 1)[0]), path.rsplit(".", 1)[1])
            for path in rule[0]
        )
        if isinstance(exc, classes):
            return rule
    return None


@pytest.mark.parametrize(
    ("cls", "family", "final"), FINALITY, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_classify_gives_each_error_class_its_family_and_finality(
    cls: type[BaseException], family: ErrorFamily, final: bool
) -> None:
    """An error is classified by its class: the name the ledger stores, family and finality."""
    assert classify(instance_of(cls)) == Classification(cls.__name__, family, final)


@pytest.mark.parametrize(
    ("cls", "family", "final"), FINALITY, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_the_dags_retry_rule_fails_final_errors_and_retries_the_others(
    cls: type[BaseException], family: ErrorFamily, final: bool
) -> None:
    """The first retry rule matching an error is final exactly when its family is."""
    rule = first_matching_rule(instance_of(cls))
    if family is ErrorFamily.BUG:
        assert rule is None  # no rule: the task's own retries apply
    else:
        assert rule is not None
        assert rule[1] is final


@pytest.mark.parametrize(
    ("cls", "family", "final"), FINALITY, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_family_of_a_stored_class_name_is_its_classes_family(
    cls: type[BaseException], family: ErrorFamily, final: bool
) -> None:
    """The family read back from the ledger's stored class name is the class's own."""
    assert family_of(cls.__name__) is family


@pytest.mark.parametrize(
    ("name", "family"),
    [
        (None, None),
        ("", None),
        ("OperationalError", ErrorFamily.OUTAGE),
        ("InterfaceError", ErrorFamily.OUTAGE),
        ("DisconnectionError", ErrorFamily.OUTAGE),
        ("Family", ErrorFamily.BUG),  # a class of the module, but no exception
        ("urlsplit", ErrorFamily.BUG),  # a name of the module, but no class
        ("NoSuchError", ErrorFamily.BUG),
    ],
)
def test_family_of_a_name_the_module_does_not_raise(
    name: str | None, family: ErrorFamily | None
) -> None:
    """No error has no family; the database's outages are outages; anything else is a bug."""
    assert family_of(name) is family


def test_there_is_one_retry_rule_per_family_in_order() -> None:
    """retry_rules states each family's dotted classes, finality and reason, in order."""
    assert retry_rules() == [
        (
            tuple(f"{c.__module__}.{c.__qualname__}" for c in f.classes),
            f.final,
            f.reason,
        )
        for f in FAMILIES
    ]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.family.value)
def test_each_retry_rules_reason_says_whether_it_retries(family: Any) -> None:
    """A final family's reason starts with "final:", a retried one's with "retried:"."""
    assert family.reason.startswith("final:" if family.final else "retried:")


def test_a_throttle_without_a_status_given_is_a_429() -> None:
    """WarehouseThrottled says 429 unless told otherwise."""
    assert WarehouseThrottled("slow down").status == 429


def test_drift_found_names_the_count_and_each_order_once() -> None:
    """The reducer's drift error counts the drifts and names each order once, sorted."""
    report = {"drift": [{"order_id": "B"}, {"order_id": "A"}, {"order_id": "B"}]}
    error = DriftFound(report)
    assert (str(error), error.report) == (
        "3 drift(s) between the ledger and the warehouse in order(s) A, B; run "
        "`shipping reconcile ORDER_ID` for each",
        report,
    )


def test_a_throttle_keeps_every_field_it_is_given() -> None:
    """WarehouseThrottled hands its message, status, problem, detail, wait and attempts on."""
    doc = problem("/problems/throttled", 503, "busy")
    error = WarehouseThrottled(
        "slow down", status=503, problem=doc, detail="come back", retry_after=2.5, attempts=4
    )
    assert (
        str(error),
        error.status,
        error.problem,
        error.problem_type,
        error.detail,
        error.retry_after,
        error.attempts,
    ) == ("slow down (after 4 attempts)", 503, doc, "/problems/throttled", "come back", 2.5, 4)


def test_a_problem_type_without_a_slash_is_named_whole() -> None:
    """RFC 9457's default type "about:blank" is named as it is, the status picks the class."""
    error = error_for_response(500, problem("about:blank", 500, "boom"))
    assert (type(error), str(error)) == (
        WarehouseServerError,
        "warehouse answered 500 (about:blank): boom",
    )


def test_an_answer_without_a_problem_document_keeps_its_detail_in_the_message() -> None:
    """A proxy's page: the message says there was no problem document and quotes the excerpt."""
    error = error_for_response(502, None, detail="<html>bad gateway</html>")
    assert (str(error), error.detail, error.problem) == (
        "warehouse answered 502 (no problem document): <html>bad gateway</html>",
        "<html>bad gateway</html>",
        None,
    )


def test_a_drift_found_rebuilt_from_its_args_keeps_its_report() -> None:
    """DriftFound's args are its report, so a copy made from them is the same error."""
    report = {"drift": [{"order_id": "A"}]}
    copy = DriftFound(*DriftFound(report).args)
    assert (copy.report, str(copy)) == (report, str(DriftFound(report)))


def test_a_warehouse_errors_args_and_repr_hold_its_message() -> None:
    """The message is the exception's only arg, so its repr (in tracebacks) shows it."""
    error = WarehouseServerError("warehouse answered 500", status=500)
    assert (error.args, repr(error)) == (
        ("warehouse answered 500",),
        "WarehouseServerError('warehouse answered 500')",
    )


def test_one_attempt_is_counted_in_the_singular() -> None:
    """An exception after a single attempt says "1 attempt", not "1 attempts"."""
    error = WarehouseServerError("warehouse answered 500", status=500, attempts=1)
    assert str(error) == "warehouse answered 500 (after 1 attempt)"


def test_a_problems_fields_that_are_not_text_are_not_kept_as_text() -> None:
    """A detail that is a list (a framework's validation errors) or a numeric type is None."""
    error = error_for_response(422, {"type": 7, "detail": [{"loc": ["body"], "msg": "bad"}]})
    assert (type(error), error.detail, error.problem_type) == (WarehouseRejected, None, None)
