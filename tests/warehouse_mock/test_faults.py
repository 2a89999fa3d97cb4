"""Tests for the fault draws: rates, seeds and SKU globs (no server involved)."""

from __future__ import annotations

from typing import Any

import pytest

from warehouse_mock.faults import FaultInjector, FaultPlan
from warehouse_mock.schemas import FaultConfig

RATE_EFFECTS: list[tuple[str, str, Any]] = [
    ("error_rate", "error_status", None),
    ("throttle_rate", "throttle", False),
    ("timeout_rate", "hang_ms", 0),
    ("commit_then_error_rate", "commit_then_error", False),
]


def draws(config: FaultConfig, count: int) -> list[FaultPlan]:
    """``count`` plans drawn from a fresh injector."""
    injector = FaultInjector(config)
    return [injector.draw() for _ in range(count)]


@pytest.mark.parametrize(("rate", "effect", "off"), RATE_EFFECTS)
def test_rate_zero_never_fires(rate: str, effect: str, off: Any) -> None:
    """A fault with rate 0 never strikes."""
    plans = draws(FaultConfig(**{rate: 0.0}, seed=1), 200)
    assert all(getattr(p, effect) == off for p in plans)


@pytest.mark.parametrize(("rate", "effect", "off"), RATE_EFFECTS)
def test_rate_one_always_fires(rate: str, effect: str, off: Any) -> None:
    """A fault with rate 1 strikes every request."""
    plans = draws(FaultConfig(**{rate: 1.0}, seed=1), 200)
    assert all(getattr(p, effect) != off for p in plans)


def test_injected_errors_are_500_or_503() -> None:
    """An injected error answers 500 or 503, both kinds turning up."""
    statuses = {p.error_status for p in draws(FaultConfig(error_rate=1.0, seed=5), 50)}
    assert statuses == {500, 503}


def test_same_seed_draws_the_same_sequence() -> None:
    """Two injectors with one seed decide the same faults for the same requests."""
    config = FaultConfig(error_rate=0.3, throttle_rate=0.3, timeout_rate=0.3, seed=42)
    assert draws(config, 100) == draws(config, 100)


def test_configuring_again_restarts_the_sequence_from_the_seed() -> None:
    """PUT with the same seed replays the faults from the beginning."""
    config = FaultConfig(error_rate=0.5, seed=9)
    injector = FaultInjector(config)
    first = [injector.draw() for _ in range(20)]
    injector.configure(config)
    assert [injector.draw() for _ in range(20)] == first


def test_reset_turns_every_fault_off() -> None:
    """After a reset the configuration is the default one: no fault."""
    injector = FaultInjector(FaultConfig(error_rate=1.0, latency_ms=5, reject_skus=("X*",)))
    injector.reset()
    assert injector.config == FaultConfig()
    assert injector.draw() == FaultPlan(retry_after_seconds=1)


@pytest.mark.parametrize(
    ("sku", "refused"),
    [("BAD-1", True), ("BAD-", True), ("bad-1", False), ("GOOD-1", False), ("MUG-BAD", False)],
)
def test_refused_skus_match_case_sensitive_globs(sku: str, refused: bool) -> None:
    """``reject_skus`` are fnmatch globs, matched case-sensitively on the whole SKU."""
    assert FaultPlan(reject_skus=("BAD-*", "EXACT")).refuses(sku) is refused


def test_delay_adds_latency_and_timeout_hang() -> None:
    """A request holds its claim for the injected latency plus any timeout hang."""
    plan = draws(FaultConfig(timeout_rate=1.0, timeout_hang_ms=1500, latency_ms=250), 1)[0]
    assert plan.delay_seconds == pytest.approx(1.75)
