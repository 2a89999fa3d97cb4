"""Tests for the warehouse client.

Most tests drive the real warehouse service (the ``warehouse`` fixture) with its fault
injection; waits are injected, so retry tests take milliseconds and can assert the waits.
The few edge cases the service cannot produce on demand (a 403, a proxy's HTML page, an
unreadable success body) use an in-process requests adapter.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict

from shipping.errors import (
    IdempotencyKeyMismatch,
    InvalidShipmentRequest,
    RequestNotSent,
    ShipmentConflict,
    SkuRefused,
    WarehouseAuthError,
    WarehouseRejected,
    WarehouseServerError,
    WarehouseThrottled,
    WarehouseTransportError,
    is_retryable,
)
from shipping.warehouse import (
    RetryPolicy,
    ShipmentResult,
    WarehouseAdmin,
    WarehouseClient,
    parse_retry_after,
)
from warehouse_mock.testing import WarehouseHandle

SHIP_TO = {
    "name": "Ada Lovelace",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}
#: Deterministic waits, and enough attempts that only the test's own limit applies.
EXACT = RetryPolicy(max_attempts=6, max_total_seconds=60, initial_backoff=0.5, jitter=False)


@dataclass
class FakeTime:
    """A clock that moves only when the client sleeps; records every wait.

    ``actions[n]`` runs during the n-th wait: the test's way to change the warehouse
    between two attempts (clear its faults, say) without waiting for real.
    """

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)
    actions: dict[int, Callable[[], object]] = field(default_factory=dict)

    def sleep(self, seconds: float) -> None:
        """Record the wait, advance the clock by it and run the wait's action."""
        self.sleeps.append(seconds)
        self.now += seconds
        action = self.actions.get(len(self.sleeps))
        if action is not None:
            action()

    def clock(self) -> float:
        """The current fake monotonic time."""
        return self.now


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Answer:
    """One scripted HTTP answer."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def problem_answer(status: int, type_: str, **headers: str) -> Answer:
    """A problem+json answer as the warehouse writes it."""
    doc = {"type": type_, "title": type_, "status": status, "detail": f"{type_} detail"}
    return Answer(
        status, json.dumps(doc).encode(), {"Content-Type": "application/problem+json", **headers}
    )


SHIPMENT = Answer(
    201,
    json.dumps({"shipment_id": "SHP-1", "status": "CREATED", "order_id": "ORD-1"}).encode(),
    {"Content-Type": "application/json"},
)


class ScriptedAdapter(BaseAdapter):
    """A requests transport that answers from a script and records what was sent."""

    def __init__(self, answers: list[Answer]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.sent: list[requests.PreparedRequest] = []
        self.closed = False

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """Record the request and answer with the next scripted answer."""
        self.sent.append(request)
        answer = self.answers.pop(0)
        response = requests.Response()
        response.status_code = answer.status
        response._content = answer.body
        response.headers = CaseInsensitiveDict(answer.headers)
        response.request = request
        response.url = str(request.url)
        return response

    def close(self) -> None:
        """Note that the transport was closed."""
        self.closed = True


# --- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url", ["", "127.0.0.1:8081", "ftp://warehouse.test", "http://", "warehouse"]
)
def test_client_refuses_a_base_url_that_is_not_http(base_url: str) -> None:
    """A base URL without an http(s) scheme and host fails at construction."""
    with pytest.raises(ValueError, match="http"):
        WarehouseClient(base_url, "token")


@pytest.mark.parametrize("token", ["", "   "])
def test_client_refuses_an_empty_token(token: str) -> None:
    """An empty token fails at construction, naming the token."""
    with pytest.raises(ValueError, match="token must not be empty"):
        WarehouseClient("http://warehouse.test", token)


@pytest.mark.parametrize("timeout", [(0.0, 1.0), (1.0, -1.0)])
def test_client_refuses_a_timeout_that_is_not_positive(timeout: tuple[float, float]) -> None:
    """Every call has a real timeout: zero or negative seconds are refused."""
    with pytest.raises(ValueError, match="timeout"):
        WarehouseClient("http://warehouse.test", "token", timeout=timeout)


def test_admin_refuses_an_empty_admin_token() -> None:
    """The admin client names the admin token when it is empty."""
    with pytest.raises(ValueError, match="admin_token must not be empty"):
        WarehouseAdmin("http://warehouse.test", "")


def test_repr_never_shows_the_token() -> None:
    """The client's repr names the URL, not the secret."""
    client = WarehouseClient("http://warehouse.test/", "s3cret-token")
    assert repr(client) == "WarehouseClient('http://warehouse.test')"


def test_close_leaves_a_callers_session_open() -> None:
    """A session passed in belongs to the caller and survives the client's close."""
    session = requests.Session()
    adapter = ScriptedAdapter([])
    session.mount("http://", adapter)
    with WarehouseClient("http://warehouse.test", "token", session=session):
        pass
    assert not adapter.closed
    session.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_total_seconds": -1}, "max_total_seconds"),
        ({"initial_backoff": -0.1}, "initial_backoff"),
        ({"max_backoff": -1}, "max_backoff"),
    ],
)
def test_retry_policy_refuses_impossible_values(kwargs: dict[str, Any], message: str) -> None:
    """A policy that cannot work fails when built, naming the field."""
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


# --- the backoff ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failed_attempt", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 10.0), (1000, 10.0)],
)
def test_backoff_doubles_up_to_its_cap(failed_attempt: int, expected: float) -> None:
    """Without jitter the wait doubles from initial_backoff and stops at max_backoff."""
    assert RetryPolicy(jitter=False).backoff(failed_attempt) == expected


@pytest.mark.parametrize("failed_attempt", [1, 3, 9])
def test_jitter_draws_between_zero_and_the_ceiling(failed_attempt: int) -> None:
    """Full jitter draws each wait uniformly from zero to the exponential ceiling."""
    bounds: list[tuple[float, float]] = []

    def rng(low: float, high: float) -> float:
        bounds.append((low, high))
        return high / 2

    wait = RetryPolicy().backoff(failed_attempt, rng=rng)
    ceiling = RetryPolicy(jitter=False).backoff(failed_attempt)
    assert (bounds, wait) == ([(0.0, ceiling)], ceiling / 2)


@pytest.mark.parametrize("retry_after", [3.0, 30.0])
def test_backoff_is_never_shorter_than_retry_after(retry_after: float) -> None:
    """The server's Retry-After is a floor, even above max_backoff."""
    assert RetryPolicy().backoff(1, retry_after=retry_after) >= retry_after


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("2", 2.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_header_is_read_as_seconds(header: str | None, expected: float | None) -> None:
    """Retry-After as seconds or an HTTP date (past dates wait nothing); junk is ignored."""
    assert parse_retry_after(header) == expected


# --- transport failures (no server needed) --------------------------------------------


def test_connection_refused_is_retried_until_max_attempts() -> None:
    """A refused connection is a transport failure, retried up to the attempt limit."""
    fake = FakeTime()
    policy = RetryPolicy(max_attempts=3, jitter=False)
    client = WarehouseClient(
        f"http://127.0.0.1:{closed_port()}",
        "token",
        retry=policy,
        sleep=fake.sleep,
        clock=fake.clock,
    )
    with client, pytest.raises(WarehouseTransportError) as caught:
        client.create_shipment(
            order_id="ORD-1", line_id="1", sku="MUG", quantity=1, ship_to=SHIP_TO
        )
    assert (caught.value.status, caught.value.attempts, fake.sleeps) == (None, 3, [0.5, 1.0])


def test_health_is_false_when_nothing_listens() -> None:
    """The health check answers False, without retrying, when the warehouse is down."""
    fake = FakeTime()
    with WarehouseClient(f"http://127.0.0.1:{closed_port()}", "token", sleep=fake.sleep) as client:
        assert client.health() is False
    assert fake.sleeps == []


# --- answers the real service cannot give on demand: a scripted adapter ----------------


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedAdapter, FakeTime, WarehouseClient]]:
    """A client on a scripted adapter with fake time; script by filling adapter.answers."""
    adapter = ScriptedAdapter([])
    session = requests.Session()
    session.mount("http://", adapter)
    fake = FakeTime()
    client = WarehouseClient(
        "http://warehouse.test",
        "token",
        retry=EXACT,
        session=session,
        sleep=fake.sleep,
        clock=fake.clock,
    )
    yield adapter, fake, client
    session.close()


def create(
    client: WarehouseClient,
    *,
    order_id: str = "ORD-1",
    line_id: str = "1",
    sku: str = "MUG-RED",
    quantity: int = 1,
) -> ShipmentResult:
    """Create a shipment with the test address."""
    return client.create_shipment(
        order_id=order_id, line_id=line_id, sku=sku, quantity=quantity, ship_to=SHIP_TO
    )


def test_forbidden_is_an_auth_error_after_one_attempt(
    scripted: tuple[ScriptedAdapter, FakeTime, WarehouseClient],
) -> None:
    """A 403 (a token without the right) is final configuration trouble, not retried."""
    adapter, fake, client = scripted
    adapter.answers = [Answer(403, b"forbidden")]
    with pytest.raises(WarehouseAuthError) as caught:
        create(client)
    assert (caught.value.status, caught.value.attempts, fake.sleeps) == (403, 1, [])


def test_proxy_error_page_is_retried_and_keeps_its_text(
    scripted: tuple[ScriptedAdapter, FakeTime, WarehouseClient],
) -> None:
    """A 502 HTML page from a proxy is a retryable 5xx whose text is kept as the detail."""
    adapter, _, client = scripted
    adapter.answers = [Answer(502, b"<html>bad gateway</html>")] * EXACT.max_attempts
    with pytest.raises(WarehouseServerError) as caught:
        create(client)
    assert (caught.value.status, caught.value.detail, caught.value.attempts) == (
        502,
        "<html>bad gateway</html>",
        EXACT.max_attempts,
    )


def test_unreadable_success_body_is_retried(
    scripted: tuple[ScriptedAdapter, FakeTime, WarehouseClient],
) -> None:
    """A 2xx whose body is not the shipment is retried; the key makes that safe."""
    adapter, _, client = scripted
    adapter.answers = [Answer(201, b"<html>"), SHIPMENT]
    result = create(client)
    assert (result.shipment_id, result.attempts) == ("SHP-1", 2)


def test_retry_after_beyond_the_budget_ends_the_retries_at_once(
    scripted: tuple[ScriptedAdapter, FakeTime, WarehouseClient],
) -> None:
    """A Retry-After longer than the time left is not waited for: the 429 is raised."""
    adapter, fake, client = scripted
    adapter.answers = [problem_answer(429, "/problems/throttled", **{"Retry-After": "120"})]
    with pytest.raises(WarehouseThrottled) as caught:
        create(client)
    assert (caught.value.retry_after, caught.value.attempts, fake.sleeps) == (120.0, 1, [])


def test_redirect_is_not_followed(
    scripted: tuple[ScriptedAdapter, FakeTime, WarehouseClient],
) -> None:
    """A redirect is a misconfigured URL: final, and the token goes nowhere else."""
    adapter, _, client = scripted
    adapter.answers = [Answer(307, b"", {"Location": "http://elsewhere.test/v1/shipments"})]
    with pytest.raises(WarehouseRejected, match="307"):
        create(client)
    assert [r.url for r in adapter.sent] == ["http://warehouse.test/v1/shipments"]


# --- against the real warehouse service -----------------------------------------------


class RecordingAdapter(HTTPAdapter):
    """The real HTTP transport, recording every request sent and every answer got."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []
        self.answers: list[requests.Response] = []

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        """Record the request, send it for real, record the answer."""
        self.sent.append(request)
        response = super().send(request, *args, **kwargs)
        self.answers.append(response)
        return response


@dataclass
class Harness:
    """A client on the live warehouse with fake time, a recording transport and an admin."""

    warehouse: WarehouseHandle
    client: WarehouseClient
    admin: WarehouseAdmin
    time: FakeTime
    transport: RecordingAdapter
    order_id: str = field(default_factory=lambda: f"ORD-{uuid.uuid4().hex[:12]}")

    def create(
        self, *, line_id: str = "1", sku: str = "MUG-RED", quantity: int = 1
    ) -> ShipmentResult:
        """Create the shipment of one line of this test's order."""
        return self.client.create_shipment(
            order_id=self.order_id, line_id=line_id, sku=sku, quantity=quantity, ship_to=SHIP_TO
        )

    def shipments(self) -> list[dict[str, Any]]:
        """What the warehouse holds for this test's order (asked through the fixture)."""
        return list(self.warehouse.shipments(self.order_id))

    def wait_for_shipment(self, deadline_seconds: float = 10.0) -> None:
        """Block until the warehouse has committed a shipment of this order (a hung request)."""
        deadline = time.monotonic() + deadline_seconds
        while not self.shipments():
            assert time.monotonic() < deadline, "the hung request never committed"
            time.sleep(0.02)


@pytest.fixture
def make_live(warehouse: WarehouseHandle) -> Iterator[Callable[..., Harness]]:
    """Build harnesses on the live warehouse with a chosen policy, timeout or token."""
    with contextlib.ExitStack() as stack:

        def make(
            *,
            policy: RetryPolicy = EXACT,
            timeout: tuple[float, float] = (2.0, 5.0),
            token: str | None = None,
        ) -> Harness:
            fake = FakeTime()
            transport = RecordingAdapter()
            session = stack.enter_context(requests.Session())
            session.mount("http://", transport)
            client = WarehouseClient(
                warehouse.base_url,
                token if token is not None else warehouse.api_token,
                timeout=timeout,
                retry=policy,
                session=session,
                sleep=fake.sleep,
                clock=fake.clock,
            )
            admin = stack.enter_context(WarehouseAdmin(warehouse.base_url, warehouse.admin_token))
            return Harness(warehouse, client, admin, fake, transport)

        yield make


@pytest.fixture
def live(make_live: Callable[..., Harness]) -> Harness:
    """A harness on the live warehouse with the exact test policy."""
    return make_live()


def test_new_line_is_created_in_one_attempt(live: Harness) -> None:
    """A healthy warehouse creates the shipment at the first attempt."""
    result = live.create()
    assert (result.attempts, result.replayed, live.time.sleeps) == (1, False, [])
    assert [s["shipment_id"] for s in live.shipments()] == [result.shipment_id]


def test_same_line_again_replays_the_same_shipment(live: Harness) -> None:
    """Creating a line twice answers the stored shipment, marked as replayed."""
    first = live.create()
    again = live.create()
    assert (again.shipment_id, again.replayed, len(live.shipments())) == (
        first.shipment_id,
        True,
        1,
    )


def test_server_errors_are_retried_until_one_shipment_is_created(live: Harness) -> None:
    """5xx answers are retried; the third attempt succeeds and one shipment exists."""
    live.warehouse.set_faults(error_rate=1.0, retry_after_seconds=0, seed=7)
    live.time.actions[2] = live.admin.reset_faults
    result = live.create()
    assert {a.status_code for a in live.transport.answers[:2]} <= {500, 503}
    assert (result.attempts, len(live.shipments())) == (3, 1)


def test_throttling_waits_at_least_the_retry_after_header(live: Harness) -> None:
    """After a 429 the client waits no less than the server's Retry-After, then succeeds."""
    live.warehouse.set_faults(throttle_rate=1.0, retry_after_seconds=3, seed=7)
    live.time.actions[1] = live.admin.reset_faults
    result = live.create()
    throttled = live.transport.answers[0]
    assert throttled.status_code == 429
    assert live.time.sleeps[0] >= float(throttled.headers["Retry-After"]) == 3.0
    assert (result.attempts, len(live.shipments())) == (2, 1)


def test_persistent_throttling_raises_throttled_with_retry_after(
    make_live: Callable[..., Harness],
) -> None:
    """When every attempt is throttled the last 429 is raised with its Retry-After."""
    live = make_live(policy=RetryPolicy(max_attempts=3, jitter=False))
    live.warehouse.set_faults(throttle_rate=1.0, retry_after_seconds=2, seed=7)
    with pytest.raises(WarehouseThrottled) as caught:
        live.create()
    assert (caught.value.status, caught.value.retry_after, caught.value.attempts) == (
        429,
        2.0,
        3,
    )
    assert live.shipments() == []


def test_timeout_is_retried_into_a_replay_of_the_committed_shipment(
    make_live: Callable[..., Harness],
) -> None:
    """A read timeout is retried; the hung request commits and the retry replays it."""
    live = make_live(timeout=(2.0, 0.1))
    live.warehouse.set_faults(timeout_rate=1.0, timeout_hang_ms=400, seed=7)

    def after_timeout() -> None:
        live.admin.reset_faults()
        live.wait_for_shipment()

    live.time.actions[1] = after_timeout
    result = live.create()
    # Two requests sent, one answer got: the first attempt timed out.
    assert (len(live.transport.sent), len(live.transport.answers)) == (2, 1)
    assert (result.attempts, result.replayed) == (2, True)
    assert [s["shipment_id"] for s in live.shipments()] == [result.shipment_id]


def test_request_in_flight_is_retried_after_its_retry_after(
    make_live: Callable[..., Harness],
) -> None:
    """A 409 while the timed-out attempt still runs is retried, no sooner than its Retry-After."""
    live = make_live(timeout=(2.0, 0.1))
    live.warehouse.set_faults(timeout_rate=1.0, timeout_hang_ms=600, seed=7)
    live.time.actions[1] = live.admin.reset_faults
    live.time.actions[2] = live.wait_for_shipment
    result = live.create()
    in_flight = live.transport.answers[0]  # the first attempt timed out without one
    assert in_flight.status_code == 409
    assert live.time.sleeps[1] >= float(in_flight.headers["Retry-After"])
    assert (result.attempts, result.replayed, len(live.shipments())) == (3, True, 1)


def test_commit_then_error_is_retried_into_a_replay(live: Harness) -> None:
    """A 500 after the commit is retried and answered with the shipment already made."""
    live.warehouse.set_faults(commit_then_error_rate=1.0, seed=7)
    live.time.actions[1] = live.admin.reset_faults
    result = live.create()
    assert live.transport.answers[0].status_code == 500
    assert (result.attempts, result.replayed) == (2, True)
    assert [s["shipment_id"] for s in live.shipments()] == [result.shipment_id]


def test_refused_sku_is_final_after_one_attempt(live: Harness) -> None:
    """A refused SKU is not retried and nothing is shipped."""
    live.warehouse.set_faults(reject_skus=["BAD-*"])
    with pytest.raises(SkuRefused) as caught:
        live.create(sku="BAD-1")
    assert (caught.value.status, caught.value.attempts, live.time.sleeps) == (422, 1, [])
    assert live.shipments() == []


def test_invalid_request_is_final_after_one_attempt(live: Harness) -> None:
    """A body the warehouse finds invalid is not retried."""
    with pytest.raises(InvalidShipmentRequest) as caught:
        live.create(quantity=0)
    assert (caught.value.status, caught.value.attempts, live.time.sleeps) == (422, 1, [])


def test_wrong_token_is_final_after_one_attempt(make_live: Callable[..., Harness]) -> None:
    """A 401 is configuration trouble: one attempt, no retry."""
    live = make_live(token="not-the-token")
    with pytest.raises(WarehouseAuthError) as caught:
        live.create()
    assert (caught.value.status, caught.value.attempts, live.time.sleeps) == (401, 1, [])


def test_same_key_with_another_body_is_a_final_mismatch(live: Harness) -> None:
    """Reusing a line's key with another quantity is refused once and not retried."""
    live.create(quantity=1)
    with pytest.raises(IdempotencyKeyMismatch) as caught:
        live.create(quantity=2)
    assert (caught.value.status, caught.value.attempts, live.time.sleeps) == (422, 1, [])
    assert len(live.shipments()) == 1


def test_retries_stop_after_max_attempts(make_live: Callable[..., Harness]) -> None:
    """A warehouse that keeps failing is asked max_attempts times, then the 5xx is raised."""
    live = make_live(policy=RetryPolicy(max_attempts=4, jitter=False))
    live.warehouse.set_faults(error_rate=1.0, retry_after_seconds=0, seed=7)
    with pytest.raises(WarehouseServerError) as caught:
        live.create()
    assert (caught.value.attempts, len(live.transport.sent), live.time.sleeps) == (
        4,
        4,
        [0.5, 1.0, 2.0],
    )
    assert live.shipments() == []


def test_retries_stop_before_max_total_seconds(make_live: Callable[..., Harness]) -> None:
    """Retrying ends when the next wait would end beyond the time budget."""
    policy = RetryPolicy(max_attempts=100, max_total_seconds=5, initial_backoff=1, jitter=False)
    live = make_live(policy=policy)
    live.warehouse.set_faults(error_rate=1.0, retry_after_seconds=0, seed=7)
    with pytest.raises(WarehouseServerError) as caught:
        live.create()
    # Waits 1 and 2 fit in 5 s; the next (4) would end at 7 s.
    assert (caught.value.attempts, live.time.sleeps) == (3, [1.0, 2.0])


def test_every_attempt_sends_the_same_bytes_and_key(live: Harness) -> None:
    """The key is computed once and every attempt sends identical body and headers."""
    live.warehouse.set_faults(error_rate=1.0, retry_after_seconds=0, seed=7)
    live.time.actions[2] = live.admin.reset_faults
    live.create()
    bodies = {r.body for r in live.transport.sent}
    keys = [r.headers["Idempotency-Key"] for r in live.transport.sent]
    assert (len(live.transport.sent), len(bodies), keys) == (3, 1, [f"{live.order_id}:1"] * 3)
    assert json.loads(bodies.pop() or b"") == {
        "order_id": live.order_id,
        "line_id": "1",
        "sku": "MUG-RED",
        "quantity": 1,
        "ship_to": SHIP_TO,
    }


def test_each_retry_is_logged_as_a_warning(live: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """Every retry logs one WARNING naming the attempt number and the reason."""
    live.warehouse.set_faults(error_rate=1.0, retry_after_seconds=0, seed=7)
    live.time.actions[2] = live.admin.reset_faults
    with caplog.at_level(logging.WARNING, logger="shipping.warehouse"):
        live.create()
    messages = [r.getMessage() for r in caplog.records if r.name == "shipping.warehouse"]
    assert len(messages) == 2
    assert all(
        f"attempt {n} of 6 failed (WarehouseServerError" in m
        for n, m in zip((1, 2), messages, strict=True)
    )


def test_list_shipments_returns_each_line_of_the_order(live: Harness) -> None:
    """The order's shipments are listed, one per created line."""
    ids = {live.create(line_id=line).shipment_id for line in ("1", "2")}
    assert {s["shipment_id"] for s in live.client.list_shipments(live.order_id)} == ids


def test_get_shipment_returns_the_shipment(live: Harness) -> None:
    """A shipment is read back by its id."""
    result = live.create()
    assert live.client.get_shipment(result.shipment_id) == result.body


def test_get_unknown_shipment_returns_none(live: Harness) -> None:
    """An id the warehouse does not know reads as None."""
    assert live.client.get_shipment("shp_unknown") is None


def test_health_is_true_when_the_warehouse_answers(live: Harness) -> None:
    """The health check of a running warehouse is True."""
    assert live.client.health() is True


def test_admin_sets_reads_and_resets_faults(live: Harness) -> None:
    """Faults set through the admin client are read back, and reset to none."""
    live.admin.set_faults(error_rate=0.25, reject_skus=["X-*"])
    assert (live.admin.get_faults()["error_rate"], live.admin.get_faults()["reject_skus"]) == (
        0.25,
        ["X-*"],
    )
    live.admin.reset_faults()
    assert live.admin.get_faults()["error_rate"] == 0.0


def test_find_shipment_answers_the_lines_shipment_by_its_key(live: Harness) -> None:
    """One lookup by key finds the line's shipment, with the content to compare."""
    created = live.create(line_id="2")
    found = live.client.find_shipment(order_id=live.order_id, line_id="2")
    assert found is not None
    assert (found.shipment_id, found.sku, found.ship_to) == (
        created.shipment_id,
        "MUG-RED",
        SHIP_TO,
    )
    assert live.client.find_shipment(order_id=live.order_id, line_id="1") is None


def test_several_shipments_under_one_key_are_a_conflict(
    scripted: tuple[ScriptedAdapter, FakeTime, WarehouseClient],
) -> None:
    """A warehouse listing two shipments for a key is never trusted: final ShipmentConflict."""
    adapter, _, client = scripted
    two = {"shipments": [{"shipment_id": "shp_1"}, {"shipment_id": "shp_2"}]}
    adapter.answers = [Answer(200, json.dumps(two).encode(), {"Content-Type": "application/json"})]
    with pytest.raises(ShipmentConflict, match="shp_1, shp_2"):
        client.find_shipment(order_id="ORD-1", line_id="1")


def test_a_request_that_cannot_be_sent_is_final_and_not_retried(
    scripted: tuple[ScriptedAdapter, FakeTime, WarehouseClient],
) -> None:
    """A key that is not a valid header value fails typed and final, after one attempt."""
    adapter, fake, client = scripted
    with pytest.raises(RequestNotSent) as caught:
        create(client, order_id="ORD-1\n")
    assert not is_retryable(caught.value)
    assert (caught.value.status, caught.value.attempts, adapter.sent, fake.sleeps) == (
        None,
        1,
        [],
        [],
    )
