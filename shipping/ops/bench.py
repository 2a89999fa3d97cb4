"""``make bench``: the product against the patterns it replaces, on one stack.

Four variants of the same work, measured interleaved (A B C D A B C D ...) on one stack,
each ``--repeat`` times per size, medians reported:

* ``product``: one ``order_intake`` run (1 -> N mapped ``ship_item`` -> 1);
* ``noop``: ``bench_noop_fanout``, the same shape doing nothing (Airflow's own cost);
* ``line_runs``: one run of ``bench_line_run`` per line, shipping with the project's code;
* ``loop``: one run of ``bench_loop``, one task shipping every line in turn.

Plus a burst: ``--burst`` orders of ``--burst-lines`` lines triggered at once, against the
same burst of no-op fan-outs. Each measurement runs from the first trigger to the last run's
success and records the CPU seconds the stack's processes spent meanwhile (every process
of every service, PostgreSQL included when it is the stack's own; finished task processes
are counted through their parents). The idle stack's memory (PSS) is measured before and
after the load.

The comparison DAGs live in ``bench/dags/``: the benchmark's stack (its own folder
``.stack-bench/`` and ports, so it never meets a developer's stack) loads them beside
``dags/order_intake.py`` from a DAG folder of its own. Results go to ``docs/benchmark.md``,
``docs/benchmark.json`` and ``docs/img/benchmark.png``.

``python -m shipping.ops.bench [--sizes 10 100 1000] [--repeat 3] [--quick] [--out DIR]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from shipping import pipeline
from shipping.contract import AIRFLOW_ADMIN_USER, DAG_ID
from shipping.ledger import Ledger
from shipping.ops.airflow_api import AirflowClient, TriggerStatus
from shipping.ops.bench_report import LABELS as LABELS
from shipping.ops.bench_report import VARIANTS as VARIANTS
from shipping.ops.bench_report import Results as Results
from shipping.ops.bench_report import Sample as Sample
from shipping.ops.bench_report import markdown as markdown
from shipping.ops.bench_report import table_rows as table_rows
from shipping.ops.bench_report import write_reports as write_reports
from shipping.ops.samples import sample_order
from shipping.ops.stack import Stack, running_stack
from shipping.ops.state import PROJECT_ROOT, StackState
from shipping.order import run_id_for

BENCH_DAGS = PROJECT_ROOT / "bench" / "dags"
PRODUCT_DAG_FILE = PROJECT_ROOT / "dags" / "order_intake.py"
NOOP_DAG, LINE_RUN_DAG, LOOP_DAG = "bench_noop_fanout", "bench_line_run", "bench_loop"
POLL_S = 0.5
TIMEOUT_S = 1800.0
SETTLE_S = 10.0


# --------------------------------------------------------------------------- the stack
def bench_env(base: Mapping[str, str], directory: Path) -> dict[str, str]:
    """The environment of the benchmark's own stack: its folder, free ports, its DAG folder.

    Its PostgreSQL is its own (embedded) so that its CPU is the stack's, unless
    ``SHIPPING_BENCH_POSTGRES_URL`` names a server to use instead.
    """
    env = {k: v for k, v in base.items() if k != "SHIPPING_POSTGRES_URL"}
    if base.get("SHIPPING_BENCH_POSTGRES_URL"):
        env["SHIPPING_POSTGRES_URL"] = base["SHIPPING_BENCH_POSTGRES_URL"]
        env["SHIPPING_DATABASE_PREFIX"] = "bench_"
    port = _free_airflow_port()
    env.update(
        {
            "SHIPPING_STACK_DIR": str(directory),
            "SHIPPING_AIRFLOW_PORT": str(port),
            "SHIPPING_WAREHOUSE_PORT": str(port + 1),
            "SHIPPING_DAGS_FOLDER": str(prepare_dags_folder(directory / "dags")),
        }
    )
    return env


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _free_airflow_port() -> int:
    """A port p with p, p+1, the scheduler's health check (p+894) and Redis (p+895) free."""
    for base in range(8180, 9000, 10):
        if all(_free(p) for p in (base, base + 1, base + 894, base + 895)):
            return base
    raise RuntimeError("no free ports for the benchmark's stack")


def prepare_dags_folder(folder: Path) -> Path:
    """A DAG folder holding the project's DAGs (with their ``dag_support``) and the
    comparison DAGs, copied afresh."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(PRODUCT_DAG_FILE.parent, folder, ignore=shutil.ignore_patterns("__pycache__"))
    for source in sorted(BENCH_DAGS.glob("*.py")):
        shutil.copy2(source, folder / source.name)
    return folder


# ------------------------------------------------------------------------ the meter
def _service_roots(stack: Stack, state: StackState) -> dict[str, int]:
    """The root process of each service, its own PostgreSQL's postmaster included."""
    roots = dict(state.pids)
    pidfile = stack.dir / "postgres" / "postmaster.pid"
    if state.embedded_postgres and pidfile.exists():
        with contextlib.suppress(ValueError, OSError):
            roots["postgres"] = int(pidfile.read_text().split()[0])
    return roots


def _tree(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def _by_service(
    stack: Stack, state: StackState, measure: Callable[[psutil.Process], float]
) -> dict[str, float]:
    """``measure`` summed over each service's live processes."""
    totals: dict[str, float] = {}
    for name, pid in _service_roots(stack, state).items():
        total = 0.0
        for proc in _tree(pid):
            with contextlib.suppress(psutil.Error):
                total += measure(proc)
        totals[name] = total
    return totals


def _cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def stack_cpu_by_service(stack: Stack, state: StackState) -> dict[str, float]:
    """CPU seconds spent so far by each service's processes and their reaped children."""
    return _by_service(stack, state, _cpu_seconds)


def stack_cpu_seconds(stack: Stack, state: StackState) -> float:
    """CPU seconds spent so far by the stack's processes and their reaped children."""
    return sum(stack_cpu_by_service(stack, state).values())


def stack_pss_by_service(stack: Stack, state: StackState) -> dict[str, float]:
    """Proportional set size in bytes of each service's processes (shared pages counted once)."""
    return _by_service(stack, state, lambda proc: float(proc.memory_full_info().pss))


def machine() -> dict[str, Any]:
    """Cores, CPU model and memory of this machine."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
    }


class Runner:
    """Triggers the variants on a running stack and measures them."""

    def __init__(
        self,
        stack: Stack,
        state: StackState,
        api: AirflowClient,
        ledger: Ledger,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.stack, self.state, self.api, self.ledger, self.echo = stack, state, api, ledger, echo

    def measure(self, variant: str, lines: int, orders: int = 1) -> Sample:
        """Run ``orders`` orders of ``lines`` lines as ``variant``; time and CPU to done."""
        tag = f"b{uuid.uuid4().hex[:10]}"
        cpu0 = stack_cpu_by_service(self.stack, self.state)
        started = time.monotonic()
        dag_id, expected = self._trigger(variant, tag, lines, orders)
        self._wait(dag_id, tag, expected)
        seconds = time.monotonic() - started
        cpu1 = stack_cpu_by_service(self.stack, self.state)
        by_service = {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1}
        return Sample(variant, lines * orders, seconds, sum(by_service.values()), by_service)

    def _trigger(self, variant: str, tag: str, lines: int, orders: int) -> tuple[str, int]:
        docs = [sample_order(f"{tag}-{k}", lines) for k in range(orders)]
        if variant == "product":
            for doc in docs:
                self._post(DAG_ID, run_id_for(doc["order_id"]), doc)
            return DAG_ID, orders
        if variant == "noop":
            for k in range(orders):
                self._post(NOOP_DAG, f"{tag}-{k}", {"lines": lines})
            return NOOP_DAG, orders
        if variant == "loop":
            for doc in docs:
                self._post(LOOP_DAG, f"{tag}-{doc['order_id']}", doc)
            return LOOP_DAG, orders
        if variant == "line_runs":
            for doc in docs:
                registered = pipeline.register(self.ledger, doc, run_id=f"{tag}-register")
                for line in registered["lines"]:
                    conf = {"order_id": doc["order_id"], "ship_to": doc["ship_to"], "line": line}
                    self._post(LINE_RUN_DAG, f"{doc['order_id']}-{line['line_id']}", conf)
            return LINE_RUN_DAG, orders * lines
        raise ValueError(f"unknown variant {variant!r}")

    def _post(self, dag_id: str, run_id: str, conf: Mapping[str, Any]) -> None:
        outcome = self.api.trigger(dag_id, run_id, conf)
        if outcome.status is not TriggerStatus.ACCEPTED:
            raise RuntimeError(f"{dag_id}: trigger {run_id} refused: {outcome.reason}")

    def _count(self, dag_id: str, tag: str, state: str) -> int:
        page = self.api._json(
            "GET",
            f"/dags/{dag_id}/dagRuns",
            params={"run_id_pattern": tag, "state": state, "limit": 1},
        )
        return int(page["total_entries"])

    def _wait(self, dag_id: str, tag: str, expected: int) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            if self._count(dag_id, tag, "success") >= expected:
                return
            if failed := self._count(dag_id, tag, "failed"):
                raise RuntimeError(f"{dag_id}: {failed} run(s) of {tag} failed")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{dag_id}: runs of {tag} not done after {TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)

    def pss_mb(self, settle: float) -> dict[str, float]:
        """The idle stack's PSS in MB by service, after ``settle`` seconds of quiet."""
        time.sleep(settle)
        return {
            name: size / 1e6 for name, size in stack_pss_by_service(self.stack, self.state).items()
        }


def _schedule(
    sizes: Sequence[int], repeat: int, variants: Sequence[str]
) -> Iterator[tuple[str, int]]:
    """Interleaved order: per size, A B C D repeated ``repeat`` times."""
    for size in sizes:
        for _ in range(repeat):
            for variant in variants:
                yield variant, size


def run(
    runner: Runner,
    *,
    sizes: Sequence[int],
    repeat: int,
    burst: tuple[int, int],
    variants: Sequence[str] = VARIANTS,
    settle: float = SETTLE_S,
    warmup: bool = True,
) -> Results:
    """Warm up, then measure every variant at every size and the burst, interleaved."""
    results = Results(machine(), list(sizes), repeat, burst)
    echo = runner.echo
    for variant in variants if warmup else ():  # the first run of a DAG pays for cold caches
        runner.measure(variant, 2)
    results.idle_pss_by_service_mb = runner.pss_mb(settle)
    results.idle_pss_mb = sum(results.idle_pss_by_service_mb.values())
    echo(f"idle stack: {results.idle_pss_mb:.0f} MB PSS")
    for variant, size in _schedule(sizes, repeat, variants):
        sample = runner.measure(variant, size)
        results.samples.append(sample)
        echo(
            f"{LABELS[variant]:<24} {size:>5} lines  {sample.seconds:7.1f} s  "
            f"{sample.cpu_seconds / size:6.3f} CPU s/line"
        )
    orders, lines = burst
    for _ in range(repeat if orders and lines else 0):
        for variant in ("product", "noop"):
            sample = runner.measure(variant, lines, orders)
            sample.variant = f"burst_{variant}"
            results.samples.append(sample)
            echo(f"burst {orders}x{lines} {variant:<10} {sample.seconds:7.1f} s")
    results.loaded_pss_by_service_mb = runner.pss_mb(settle)
    results.loaded_pss_mb = sum(results.loaded_pss_by_service_mb.values())
    results.load_average = [round(x, 2) for x in os.getloadavg()]
    echo(f"idle stack after the load: {results.loaded_pss_mb:.0f} MB PSS")
    return results


# ---------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make bench``."""
    parser = argparse.ArgumentParser(prog="python -m shipping.ops.bench", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--burst", type=int, nargs=2, default=[20, 10], metavar=("ORDERS", "LINES"))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="2 lines, 1 repeat, a 2x2 burst")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs")
    parser.add_argument("--stack-dir", type=Path, default=PROJECT_ROOT / ".stack-bench")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat, args.burst = [2], 1, [2, 2]
    env = bench_env(os.environ, args.stack_dir.resolve())
    stack = Stack(env=env)
    with running_stack(stack) as state:
        ledger = Ledger.from_url(state.ledger_url)
        with AirflowClient(state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password) as api:
            unpause_bench_dags(api)
            results = run(
                Runner(stack, state, api, ledger),
                sizes=args.sizes,
                repeat=args.repeat,
                burst=(args.burst[0], args.burst[1]),
                variants=args.variants,
                settle=2.0 if args.quick else SETTLE_S,
            )
        ledger.dispose()
    results.command = "make bench" + (
        f" ARGS='{' '.join(argv or sys.argv[1:])}'" if (argv or sys.argv[1:]) else ""
    )
    for path in write_reports(results, args.out):
        print(f"wrote {path}")
    return 0


def unpause_bench_dags(api: AirflowClient, timeout: float = 120.0) -> None:
    """Wait for the comparison DAGs to be parsed and make sure they are unpaused."""
    deadline = time.monotonic() + timeout
    for dag_id in (NOOP_DAG, LINE_RUN_DAG, LOOP_DAG):
        while True:
            try:
                api.unpause(dag_id)
                break
            except LookupError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"DAG {dag_id} did not appear; see the logs") from None
                time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
