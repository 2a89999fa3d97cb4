"""``make bench-celery``: throughput of a burst across Celery workers, to size a cluster.

One Celery stack of the benchmark's own (``.stack-bench-celery/``, free ports, its own
PostgreSQL and Redis). For each repetition and each worker count of ``--workers`` in turn
(interleaved: 1 2 1 2 ...), the stack is scaled to that many workers (``make up
WORKERS=N``), then a burst of ``--burst`` orders is posted at once, the product
(``order_intake``) and, right after, the same burst of no-op fan-outs (Airflow's own cost
of the same shape). Reported per worker count (medians): lines per second of each burst,
the product against the no-op, and the stack's CPU seconds per line (every service,
workers and their task processes included), from which a reader can size a cluster:
lines per second per core is roughly ``1 / (CPU s per line)``.

Results go to ``docs/benchmark-celery.md`` and ``docs/benchmark-celery.json``.

``python -m shipping.ops.bench_celery [--workers 1 2] [--concurrency 4] [--burst 20 10]
[--repeat 3] [--quick] [--out DIR]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shipping.contract import AIRFLOW_ADMIN_USER
from shipping.ledger import Ledger
from shipping.ops.airflow_api import AirflowClient
from shipping.ops.bench import Runner, Sample, bench_env, machine, unpause_bench_dags
from shipping.ops.stack import Stack, running_stack
from shipping.ops.state import PROJECT_ROOT


@dataclass
class CeleryResults:
    """What one run measured: bursts per worker count, with the machine."""

    machine: dict[str, Any]
    workers: list[int]
    concurrency: int
    burst: tuple[int, int]
    repeat: int
    samples: dict[int, list[Sample]] = field(default_factory=dict)
    command: str = ""

    def median(self, workers: int, variant: str, attr: str) -> float:
        """Median of ``attr`` over the bursts of ``variant`` with ``workers`` workers."""
        values: list[float] = [
            getattr(s, attr) for s in self.samples[workers] if s.variant == variant
        ]
        return statistics.median(values)

    def rows(self) -> list[dict[str, Any]]:
        """One row per worker count: lines/s of both bursts, their ratio, CPU per line."""
        orders, lines = self.burst
        total = orders * lines
        rows = []
        for workers in self.workers:
            product = total / self.median(workers, "product", "seconds")
            noop = total / self.median(workers, "noop", "seconds")
            rows.append(
                {
                    "workers": workers,
                    "slots": workers * self.concurrency,
                    "product_lines_per_s": round(product, 2),
                    "noop_lines_per_s": round(noop, 2),
                    "product_vs_noop": round(product / noop, 2),
                    "product_cpu_s_per_line": round(
                        self.median(workers, "product", "cpu_seconds") / total, 3
                    ),
                }
            )
        return rows


def measure(
    stack_env: Mapping[str, str],
    *,
    workers: Sequence[int],
    burst: tuple[int, int],
    repeat: int,
    concurrency: int,
    echo: Callable[[str], None] = print,
) -> CeleryResults:
    """Scale the running Celery stack of ``stack_env`` through ``workers`` and time bursts."""
    results = CeleryResults(machine(), list(workers), concurrency, burst, repeat)
    orders, lines = burst
    for _ in range(repeat):
        for count in workers:
            stack = Stack(env={**stack_env, "SHIPPING_CELERY_WORKERS": str(count)}, echo=echo)
            state = stack.up()
            ledger = Ledger.from_url(state.ledger_url)
            try:
                with AirflowClient(
                    state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password
                ) as api:
                    unpause_bench_dags(api)
                    runner = Runner(stack, state, api, ledger, echo)
                    for variant in ("product", "noop"):
                        sample = runner.measure(variant, lines, orders)
                        results.samples.setdefault(count, []).append(sample)
                        echo(
                            f"{count} worker(s) burst {orders}x{lines} {variant:<8}"
                            f" {sample.seconds:7.1f} s  {sample.cpu_seconds / (orders * lines):.3f}"
                            " CPU s/line"
                        )
            finally:
                ledger.dispose()
    return results


def markdown(results: CeleryResults) -> str:
    """The report: the table, the machine and the command."""
    m = results.machine
    orders, lines = results.burst
    out = [
        "# Celery throughput: a burst across workers",
        "",
        f"A burst of {orders} orders x {lines} lines posted at once, per worker count "
        f"({results.concurrency} task slots per worker), medians of {results.repeat} runs "
        "interleaved with the same burst of no-op fan-outs on the same stack.",
        f"Machine: {m['cores']} cores, {m['cpu']}, {m['ram_gib']} GiB, Python {m['python']}.",
        f"Command: `{results.command}`.",
        "",
        "| workers | task slots | product lines/s | no-op lines/s | product / no-op "
        "| stack CPU s per line |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results.rows():
        out.append(
            f"| {row['workers']} | {row['slots']} | {row['product_lines_per_s']:.2f} "
            f"| {row['noop_lines_per_s']:.2f} | {row['product_vs_noop']:.2f} "
            f"| {row['product_cpu_s_per_line']:.3f} |"
        )
    return "\n".join(out) + "\n"


def write_reports(results: CeleryResults, out: Path) -> list[Path]:
    """``benchmark-celery.md`` and ``.json`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "benchmark-celery.md", out / "benchmark-celery.json"
    md.write_text(markdown(results))
    doc = asdict(results) | {"rows": results.rows()}
    js.write_text(json.dumps(doc, indent=2) + "\n")
    return [md, js]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make bench-celery``."""
    parser = argparse.ArgumentParser(prog="python -m shipping.ops.bench_celery")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--burst", type=int, nargs=2, default=[20, 10], metavar=("ORDERS", "LINES"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a 2x2 burst, 1 repeat")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs")
    parser.add_argument("--stack-dir", type=Path, default=PROJECT_ROOT / ".stack-bench-celery")
    args = parser.parse_args(argv)
    if args.quick:
        args.burst, args.repeat = [2, 2], 1
    env = bench_env(os.environ, args.stack_dir.resolve()) | {
        "SHIPPING_EXECUTOR": "celery",
        "SHIPPING_CELERY_WORKERS": str(args.workers[0]),
        "SHIPPING_CELERY_CONCURRENCY": str(args.concurrency),
    }
    with running_stack(Stack(env=env)):
        results = measure(
            env,
            workers=args.workers,
            burst=(args.burst[0], args.burst[1]),
            repeat=args.repeat,
            concurrency=args.concurrency,
        )
    results.command = "make bench-celery" + (
        f" ARGS='{' '.join(argv or sys.argv[1:])}'" if (argv or sys.argv[1:]) else ""
    )
    for path in write_reports(results, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
