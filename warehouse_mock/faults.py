"""Fault injection: which faults hit the next shipment request.

The configuration lives in memory, per process (``PUT /_admin/faults`` on each server of a
multi-process setup). Every shipment request draws a :class:`FaultPlan` from one
``random.Random(seed)``; each draw consumes the same count of random numbers whatever the
outcome, so a seed replays the same sequence of faults for the same sequence of requests.

What each fault does (see :mod:`warehouse_mock.service` for where it strikes):

- ``error``: 500 or 503 before anything is stored.
- ``throttle``: 429 with ``Retry-After`` before anything is stored.
- ``timeout``: the request holds its in-flight claim for ``timeout_hang_ms``, then is
  processed normally; a client that gave up meets 409, then the replay.
- ``commit_then_error``: the shipment and its response are committed, then 500.
- ``latency_ms``: added delay while the claim is held.
- ``reject_skus``: 422 ``sku-refused`` for matching SKUs, nothing stored.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import dataclass
from typing import Final

from warehouse_mock.schemas import FaultConfig

_DRAWS_PER_REQUEST: Final = 5


@dataclass(frozen=True)
class FaultPlan:
    """The faults decided for one shipment request.

    Attributes:
        error_status: 500 or 503 to answer at once, or None.
        throttle: Answer 429 at once.
        hang_ms: Injected timeout: hold the claim this long before processing.
        latency_ms: Added delay while the claim is held.
        commit_then_error: Answer 500 after committing.
        reject_skus: Globs of refused SKUs at the time of the draw.
        retry_after_seconds: The ``Retry-After`` of throttled and unavailable answers.
    """

    error_status: int | None = None
    throttle: bool = False
    hang_ms: int = 0
    latency_ms: int = 0
    commit_then_error: bool = False
    reject_skus: tuple[str, ...] = ()
    retry_after_seconds: int = 1

    @property
    def delay_seconds(self) -> float:
        """How long the request holds its claim before doing its work."""
        return (self.hang_ms + self.latency_ms) / 1000

    def refuses(self, sku: str) -> bool:
        """Whether ``sku`` matches one of the refused globs (case-sensitive)."""
        return any(fnmatch.fnmatchcase(sku, pattern) for pattern in self.reject_skus)


class FaultInjector:
    """The fault configuration of one process and its seeded random source.

    Thread-safe: draws and updates may come from any thread.
    """

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = FaultConfig()
        self._rng = random.Random()
        self.configure(config or FaultConfig())

    @property
    def config(self) -> FaultConfig:
        """The configuration in force."""
        with self._lock:
            return self._config

    def configure(self, config: FaultConfig) -> None:
        """Replace the configuration and restart the random sequence from its seed."""
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed)

    def reset(self) -> None:
        """Turn every fault off."""
        self.configure(FaultConfig())

    def draw(self) -> FaultPlan:
        """Decide the faults of the next shipment request."""
        with self._lock:
            c = self._config
            r = [self._rng.random() for _ in range(_DRAWS_PER_REQUEST)]
        # random() is in [0, 1): a rate of 0 never fires, a rate of 1 always does.
        error_status = (503 if r[1] < 0.5 else 500) if r[0] < c.error_rate else None
        return FaultPlan(
            error_status=error_status,
            throttle=r[2] < c.throttle_rate,
            hang_ms=c.timeout_hang_ms if r[3] < c.timeout_rate else 0,
            latency_ms=c.latency_ms,
            commit_then_error=r[4] < c.commit_then_error_rate,
            reject_skus=c.reject_skus,
            retry_after_seconds=c.retry_after_seconds,
        )
