"""The warehouse API client: creates shipments exactly once, however often it has to ask.

:class:`WarehouseClient` holds one :class:`requests.Session` and puts a timeout on every
call. :meth:`WarehouseClient.create_shipment` computes the line's idempotency key once and
sends the identical bytes and headers on every attempt, so a retry after an ambiguous
failure (a timeout, a 500 after the commit) is answered with the stored shipment instead
of a second one.

Retries follow one :class:`RetryPolicy`, run by tenacity: failures that
:func:`shipping.errors.is_retryable` accepts (transport errors, timeouts, 5xx, 409, 429)
are retried with exponential backoff and full random jitter, never sooner than the
warehouse's ``Retry-After``, bounded by a number of attempts and by a total time; any other
4xx is final at once. The policy is for seconds-long blips; longer outages are left to the
caller's own retries (Airflow's task retries), which reuse the same key.

:class:`WarehouseAdmin` drives the warehouse's fault injection (demo and tests).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Final, Self, TypeVar
from urllib.parse import quote, urlsplit

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from shipping.errors import (
    RequestNotSent,
    ShipmentConflict,
    WarehouseError,
    WarehouseTimeout,
    WarehouseTransportError,
    WarehouseUnavailable,
    error_for_response,
    is_retryable,
)
from shipping.order import idempotency_key
from shipping.shipment import Shipment

__all__ = [
    "RetryPolicy",
    "ShipmentResult",
    "WarehouseAdmin",
    "WarehouseClient",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

#: (connect, read) seconds. Connect slightly above a multiple of 3 s, the TCP
#: retransmission window; read well above the warehouse's normal answer time.
DEFAULT_TIMEOUT: Final = (3.05, 10.0)

_T = TypeVar("_T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long the client retries a retryable failure.

    The wait after failed attempt ``n`` (1-based) is drawn uniformly from
    ``[0, min(max_backoff, initial_backoff * 2 ** (n - 1))]`` ("full jitter", so many
    clients that failed together do not come back together), and is never shorter than
    the warehouse's ``Retry-After``. Retrying stops after ``max_attempts`` attempts, or
    when the next wait would end beyond ``max_total_seconds`` from the first attempt;
    the last failure is then raised.

    The defaults (6 attempts, 0.5 s doubling to at most 10 s, 60 s in all) ride out a
    restart or a short overload of the warehouse (waits of up to 0.5 + 1 + 2 + 4 + 8 =
    15.5 s) while holding an Airflow task slot for about a minute at most (the budget
    plus one attempt's timeout); a longer outage is the job of Airflow's task retries.

    Attributes:
        max_attempts: Attempts in all, the first included; 1 disables retries.
        max_total_seconds: Time budget from the first attempt, waits and attempts included.
        initial_backoff: Ceiling of the first wait, in seconds.
        max_backoff: Largest ceiling of the exponential wait, in seconds (a longer
            ``Retry-After`` is still honoured while the budget lasts).
        jitter: Draw each wait at random below its ceiling; ``False`` waits the ceiling.
    """

    max_attempts: int = 6
    max_total_seconds: float = 60.0
    initial_backoff: float = 0.5
    max_backoff: float = 10.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("max_total_seconds", "initial_backoff", "max_backoff"):
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")

    def backoff(
        self,
        failed_attempt: int,
        *,
        retry_after: float | None = None,
        rng: Callable[[float, float], float] = random.uniform,
    ) -> float:
        """Seconds to wait after a failed attempt.

        Args:
            failed_attempt: The 1-based number of the attempt that just failed.
            retry_after: The warehouse's ``Retry-After`` in seconds, if it sent one.
            rng: Draws a number between its two bounds (for tests).

        Returns:
            The wait: exponential with full jitter, at least ``retry_after``.
        """
        # The exponent is bounded so that a large attempt number cannot overflow a float.
        growth = 2.0 ** min(failed_attempt - 1, 64)
        ceiling = min(self.max_backoff, self.initial_backoff * growth)
        wait = rng(0.0, ceiling) if self.jitter else ceiling
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait


@dataclass(frozen=True)
class ShipmentResult:
    """A shipment the warehouse holds for one order line.

    Attributes:
        shipment_id: The warehouse's id of the shipment.
        status: The shipment's status at the warehouse.
        replayed: Whether the warehouse answered from its idempotency store (the
            shipment was created by an earlier request with the same key).
        attempts: How many attempts the call needed.
        body: The warehouse's whole answer.
    """

    shipment_id: str
    status: str
    replayed: bool
    attempts: int
    body: dict[str, Any]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date).

    Returns:
        The seconds, never negative, or ``None`` when the header is absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _ExponentialJitterWait(wait_base):
    """tenacity wait: the policy's backoff, at least the failure's ``Retry-After``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, WarehouseError) else None
        return self.policy.backoff(retry_state.attempt_number, retry_after=retry_after)


class _StopBeforeBudget(stop_base):
    """tenacity stop: when the coming wait would end beyond the time budget.

    Unlike ``tenacity.stop_after_delay`` this reads an injectable clock, so tests can
    fake time, and it never starts a wait it cannot finish within the budget.
    """

    def __init__(self, budget: float, clock: Callable[[], float]) -> None:
        self.budget = budget
        self.clock = clock
        self.start = clock()

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() - self.start + retry_state.upcoming_sleep > self.budget


class _HttpApi:
    """What both clients share: URL checks, one session, timeouts and answer parsing."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        token_name: str,
        timeout: tuple[float, float],
        session: requests.Session | None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"warehouse base_url must be an http(s) URL, got {base_url!r}")
        if not token or not token.strip():
            raise ValueError(f"warehouse {token_name} must not be empty")
        if len(timeout) != 2 or min(timeout) <= 0:
            raise ValueError(f"timeout must be (connect, read) seconds > 0, got {timeout!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        # Per request rather than on the session, so a caller's session is not altered.
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json, application/problem+json",
        }

    def __repr__(self) -> str:
        # Never the token.
        return f"{type(self).__name__}({self.base_url!r})"

    def close(self) -> None:
        """Close the HTTP session, unless the caller passed in their own."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """One HTTP exchange; transport failures become typed errors."""
        url = f"{self.base_url}{path}"
        try:
            return self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers={**self._headers, **(headers or {})},
                timeout=self.timeout,
                # A redirect from this API is a misconfiguration; following it would
                # turn a POST into a GET and could send the token elsewhere.
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise WarehouseTimeout(f"{method} {url}: no answer in time ({exc})") from exc
        except (
            requests.ConnectionError,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ) as exc:
            raise WarehouseTransportError(f"{method} {url}: connection failed ({exc})") from exc
        except (requests.RequestException, ValueError) as exc:
            # An invalid header or URL: nothing was sent, and resending cannot help.
            raise RequestNotSent(f"{method} {url}: the request cannot be sent ({exc})") from exc

    @staticmethod
    def _json(response: requests.Response) -> Any:
        """The JSON body of a successful answer; unreadable bodies count as a blip."""
        try:
            return response.json()
        except ValueError as exc:
            raise WarehouseUnavailable(
                f"warehouse answered {response.status_code} with an unreadable body",
                status=response.status_code,
                detail=response.text[:200],
            ) from exc

    @staticmethod
    def _raise_for_status(response: requests.Response) -> None:
        """Raise the typed error of an unsuccessful answer (anything but 2xx)."""
        if 200 <= response.status_code < 300:
            return
        problem: dict[str, Any] | None = None
        detail: str | None = None
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict):
            problem = body
        else:
            detail = response.text[:200] or response.reason
        raise error_for_response(
            response.status_code,
            problem,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            detail=detail,
        )


class WarehouseClient(_HttpApi):
    """Client of the warehouse API for one bearer token.

    Args:
        base_url: The warehouse's base URL, ``http(s)://host[:port][/prefix]``.
        token: The client's bearer token.
        timeout: ``(connect, read)`` seconds, applied to every call.
        retry: The retry policy of :meth:`create_shipment` and the reads.
        session: A session to use instead of a new one (it is not closed by :meth:`close`).
        sleep: Waits between attempts (tests pass a fake that returns at once).
        clock: Monotonic seconds, for the time budget (tests pass a fake).

    Raises:
        ValueError: If ``base_url`` is not an http(s) URL, the token is empty or the
            timeout is not positive.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy = RetryPolicy(),
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(base_url, token, token_name="token", timeout=timeout, session=session)
        self.retry = retry
        self._sleep = sleep
        self._clock = clock

    def create_shipment(
        self,
        *,
        order_id: str,
        line_id: str,
        sku: str,
        quantity: int,
        ship_to: Mapping[str, Any],
        key: str | None = None,
    ) -> ShipmentResult:
        """Create the shipment of one order line, or get the one created before.

        The idempotency key (``key``; by default the line's first,
        ``<order_id>:<line_id>``) and the request body are fixed once; every attempt
        sends the same bytes and headers.

        Returns:
            The shipment; ``replayed`` says whether an earlier request had created it.

        Raises:
            WarehouseRejected: A final refusal (SKU refused, invalid request, key reused
                with another body, bad token), after one attempt.
            WarehouseUnavailable: The warehouse stayed unavailable (or throttling) for
                the whole retry policy.
            IdempotencyInFlight: An earlier request with this key was still running when
                the retry policy ran out.
            KeyVoided: The key was voided (an operator's amendment fenced it).
        """
        key = key if key is not None else idempotency_key(order_id, line_id)
        body = {
            "order_id": order_id,
            "line_id": line_id,
            "sku": sku,
            "quantity": quantity,
            "ship_to": dict(ship_to),
        }
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}

        def attempt(number: int) -> ShipmentResult:
            response = self._send("POST", "/v1/shipments", data=payload, headers=headers)
            self._raise_for_status(response)
            answer = self._json(response)
            if not isinstance(answer, dict) or not isinstance(answer.get("shipment_id"), str):
                raise WarehouseUnavailable(
                    f"warehouse answered {response.status_code} without a shipment_id",
                    status=response.status_code,
                    detail=response.text[:200],
                )
            replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
            return ShipmentResult(
                shipment_id=answer["shipment_id"],
                status=str(answer.get("status", "")),
                replayed=replayed,
                attempts=number,
                body=answer,
            )

        result = self._retrying(attempt, f"create shipment {key!r}")
        log.info(
            "shipment %s for %s (attempts=%d, replayed=%s)",
            result.shipment_id,
            key,
            result.attempts,
            result.replayed,
        )
        return result

    def list_shipments(self, order_id: str) -> list[dict[str, Any]]:
        """This client's shipments of an order (retried like a create).

        Raises:
            WarehouseError: When the warehouse refuses or stays unavailable.
        """
        return self._shipments({"order_id": order_id}, f"list shipments of order {order_id!r}")

    def shipments_of(self, order_id: str) -> list[Shipment]:
        """This client's shipments of an order, live and cancelled, typed.

        Raises:
            WarehouseError: When the warehouse refuses or stays unavailable.
        """
        return [self._typed(s) for s in self.list_shipments(order_id)]

    def find_shipment(
        self, *, order_id: str, line_id: str, key: str | None = None
    ) -> Shipment | None:
        """This client's shipment made under a line's key (live or cancelled), or None.

        One lookup by key, whatever the order's size; retried like a create.

        Args:
            order_id: The order.
            line_id: The line.
            key: The key; by default the line's first, ``<order_id>:<line_id>``.

        Raises:
            ShipmentConflict: The warehouse lists several shipments under the key.
            WarehouseError: When the warehouse refuses or stays unavailable.
        """
        key = key if key is not None else idempotency_key(order_id, line_id)
        shipments = self._shipments({"idempotency_key": key}, f"find shipment {key!r}")
        if len(shipments) > 1:
            ids = ", ".join(str(s.get("shipment_id")) for s in shipments)
            raise ShipmentConflict(
                f"the warehouse holds several shipments under key {key!r}: {ids}"
            )
        return self._typed(shipments[0]) if shipments else None

    def void_key(self, key: str, *, reason: str) -> Shipment | None:
        """Void ``key`` at the warehouse for good: nothing ships under it any more.

        A shipment made under it is cancelled; a request still in flight under it
        creates nothing; a later post under it is refused (410). Voiding again changes
        nothing. Retried like a create.

        Returns:
            The shipment the void cancelled (now ``cancelled``), or None if none was made.

        Raises:
            WarehouseError: When the warehouse refuses or stays unavailable.
        """
        payload = json.dumps(
            {"idempotency_key": key, "reason": reason[:500] or "voided"},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()

        def attempt(number: int) -> Shipment | None:
            response = self._send(
                "POST", "/v1/voids", data=payload, headers={"Content-Type": "application/json"}
            )
            self._raise_for_status(response)
            answer = self._json(response)
            if not isinstance(answer, dict) or answer.get("idempotency_key") != key:
                raise WarehouseUnavailable(
                    f"warehouse answered a void of {key!r} without the key",
                    status=response.status_code,
                    detail=response.text[:200],
                )
            shipment = answer.get("shipment")
            return self._typed(shipment) if isinstance(shipment, dict) else None

        voided = self._retrying(attempt, f"void key {key!r}")
        log.warning(
            "key %r voided at the warehouse%s",
            key,
            f"; shipment {voided.shipment_id} cancelled" if voided else "",
        )
        return voided

    @staticmethod
    def _typed(document: Mapping[str, Any]) -> Shipment:
        try:
            return Shipment.from_json(document)
        except ValueError as exc:
            raise WarehouseUnavailable(
                f"warehouse answered a malformed shipment: {exc}", detail=str(document)[:200]
            ) from None

    def _shipments(self, params: Mapping[str, str], what: str) -> list[dict[str, Any]]:
        def attempt(number: int) -> list[dict[str, Any]]:
            response = self._send("GET", "/v1/shipments", params=params)
            self._raise_for_status(response)
            answer = self._json(response)
            shipments = answer.get("shipments") if isinstance(answer, dict) else None
            if not isinstance(shipments, list) or not all(isinstance(s, dict) for s in shipments):
                raise WarehouseUnavailable(
                    "warehouse listed shipments without a 'shipments' list of objects",
                    status=response.status_code,
                    detail=response.text[:200],
                )
            return shipments

        return self._retrying(attempt, what)

    def get_shipment(self, shipment_id: str) -> dict[str, Any] | None:
        """One shipment by its id, or ``None`` if the warehouse has none with that id.

        Raises:
            WarehouseError: When the warehouse refuses otherwise or stays unavailable.
        """

        def attempt(number: int) -> dict[str, Any] | None:
            response = self._send("GET", f"/v1/shipments/{quote(shipment_id, safe='')}")
            if response.status_code == 404:
                return None
            self._raise_for_status(response)
            answer = self._json(response)
            if not isinstance(answer, dict):
                raise WarehouseUnavailable(
                    "warehouse answered a shipment that is not an object",
                    status=response.status_code,
                    detail=response.text[:200],
                )
            return answer

        return self._retrying(attempt, f"get shipment {shipment_id!r}")

    def health(self) -> bool:
        """Whether the warehouse answers its health check now (one attempt, no retries)."""
        try:
            response = self._send("GET", "/healthz")
        except WarehouseError as exc:
            log.info("warehouse health check failed: %s", exc)
            return False
        return response.status_code == 200

    def _retrying(self, attempt: Callable[[int], _T], what: str) -> _T:
        """Run ``attempt(number)`` under the retry policy; set ``attempts`` on failures."""
        policy = self.retry
        attempts = 0

        def numbered() -> _T:
            nonlocal attempts
            attempts += 1
            try:
                return attempt(attempts)
            except WarehouseError as exc:
                exc.attempts = attempts
                raise

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "%s: attempt %d of %d failed (%s: %s); retrying in %.2f s",
                what,
                state.attempt_number,
                policy.max_attempts,
                type(exc).__name__,
                exc,
                state.upcoming_sleep,
            )

        retrying = Retrying(
            stop=(
                stop_after_attempt(policy.max_attempts)
                | _StopBeforeBudget(policy.max_total_seconds, self._clock)
            ),
            wait=_ExponentialJitterWait(policy),
            retry=retry_if_exception(is_retryable),
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        )
        return retrying(numbered)


class WarehouseAdmin(_HttpApi):
    """The warehouse's fault-injection API (admin token), for demos and tests.

    Args:
        base_url: The warehouse's base URL.
        admin_token: The warehouse's admin bearer token.
        timeout: ``(connect, read)`` seconds, applied to every call.
        session: A session to use instead of a new one.

    Raises:
        ValueError: If ``base_url`` is not an http(s) URL or the token is empty.
    """

    def __init__(
        self,
        base_url: str,
        admin_token: str,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(
            base_url, admin_token, token_name="admin_token", timeout=timeout, session=session
        )

    def set_faults(self, **fields: Any) -> dict[str, Any]:
        """Set the warehouse's faults (``error_rate``, ``throttle_rate``, ``seed``, ...).

        Returns:
            The faults now in force, as the warehouse reports them.

        Raises:
            WarehouseError: When the warehouse refuses the faults or cannot be reached.
        """
        payload = json.dumps(fields).encode()
        headers = {"Content-Type": "application/json"}
        return self._object(self._send("PUT", "/_admin/faults", data=payload, headers=headers))

    def get_faults(self) -> dict[str, Any]:
        """The faults now in force."""
        return self._object(self._send("GET", "/_admin/faults"))

    def reset_faults(self) -> None:
        """Switch every fault off."""
        self._raise_for_status(self._send("DELETE", "/_admin/faults"))

    def _object(self, response: requests.Response) -> dict[str, Any]:
        self._raise_for_status(response)
        answer = self._json(response)
        if not isinstance(answer, dict):
            raise WarehouseUnavailable(
                "warehouse answered faults that are not an object",
                status=response.status_code,
                detail=response.text[:200],
            )
        return answer
