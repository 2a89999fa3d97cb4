"""The benchmark's code paths on the real stack, at a tiny size (its timings are not tested)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipping.ledger import Ledger
from shipping.ops import bench
from shipping.ops.stack import Stack
from tests.e2e.conftest import LiveStack

pytestmark = pytest.mark.e2e


def test_the_benchmark_runs_every_variant_and_writes_its_reports(
    stack: LiveStack, tmp_path: Path
) -> None:
    """Every variant and the burst complete on the stack; the table and chart are written."""
    ledger = Ledger.from_url(stack.state.ledger_url)
    try:
        bench.unpause_bench_dags(stack.api)
        runner = bench.Runner(Stack(env=stack.env), stack.state, stack.api, ledger, echo=print)
        results = bench.run(runner, sizes=[2], repeat=1, burst=(2, 2), warmup=False, settle=0)
    finally:
        ledger.dispose()
    assert sorted(s.variant for s in results.samples) == sorted(
        [*bench.VARIANTS, "burst_product", "burst_noop"]
    )
    assert all(s.seconds > 0 and s.cpu_seconds > 0 for s in results.samples)
    assert results.idle_pss_mb > 0
    assert {"api-server", "scheduler", "warehouse"} <= results.loaded_pss_by_service_mb.keys()
    assert all(size > 0 for size in results.loaded_pss_by_service_mb.values())
    bench.write_reports(results, tmp_path)
    assert "| no-op fan-out | 2 |" in (tmp_path / "benchmark.md").read_text()
