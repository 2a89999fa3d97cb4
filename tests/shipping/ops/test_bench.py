"""The benchmark's pieces without a stack: its stack's setup, the schedule, the reports."""

from __future__ import annotations

from pathlib import Path

from shipping.ops import bench
from shipping.ops.bench import Results, Sample


def _results() -> Results:
    results = Results(bench.machine(), [10], 1, (2, 5))
    results.samples = [
        Sample("product", 10, 11.0, 5.5),
        Sample("noop", 10, 10.0, 5.0),
        Sample("line_runs", 10, 20.0, 8.0),
        Sample("loop", 10, 2.0, 0.5),
        Sample("burst_product", 10, 9.0, 4.0),
        Sample("burst_noop", 10, 8.0, 4.0),
    ]
    results.command = "make bench"
    return results


def test_the_schedule_interleaves_the_variants() -> None:
    """Each size runs A B C D A B C D, so slow drifts of a shared machine hit every variant."""
    order = list(bench._schedule([10, 100], 2, ["a", "b"]))
    assert order == [("a", 10), ("b", 10), ("a", 10), ("b", 10)] + [
        ("a", 100),
        ("b", 100),
        ("a", 100),
        ("b", 100),
    ]


def test_rows_are_ratios_to_the_noop_fanout_of_the_same_size() -> None:
    """Time and CPU of each variant are divided by the no-op's at the same size."""
    rows = {(r["variant"], r["lines"]): r for r in bench.table_rows(_results())}
    assert rows[("product", 10)]["time_ratio"] == 1.1
    assert rows[("product", 10)]["cpu_per_line"] == 0.55
    assert rows[("loop", 10)]["lines_per_s"] == 5.0
    assert rows[("burst_product", 10)]["time_ratio"] == 9.0 / 8.0


def test_the_reports_are_a_table_raw_numbers_and_a_chart(tmp_path: Path) -> None:
    """benchmark.md holds the table and the machine; the JSON and the PNG are written too."""
    written = bench.write_reports(_results(), tmp_path)
    text = (tmp_path / "benchmark.md").read_text()
    assert "| product (order_intake) | 10 | 11.0 s |" in text
    assert "cores" in text
    assert "make bench" in text
    assert (tmp_path / "img" / "benchmark.png").read_bytes()[:4] == b"\x89PNG"
    assert len(written) == 3


def test_the_bench_dags_folder_holds_the_product_and_the_comparisons(tmp_path: Path) -> None:
    """The benchmark's stack loads the project's DAGs beside the comparison DAGs, afresh."""
    (tmp_path / "stale.py").write_text("")
    folder = bench.prepare_dags_folder(tmp_path)
    names = sorted(p.name for p in folder.glob("*.py"))
    assert names == [
        "amend_order_line.py",
        "bench_line_run.py",
        "bench_loop.py",
        "bench_noop_fanout.py",
        "order_intake.py",
        "reconcile_ledger.py",
    ]
    assert (folder / "dag_support" / "defaults.py").exists()
    assert (folder / ".airflowignore").exists()


def test_the_bench_stack_is_its_own(tmp_path: Path) -> None:
    """Its own folder, ports and DAG folder, and its own PostgreSQL (its CPU is measured)."""
    env = bench.bench_env(
        {"SHIPPING_POSTGRES_URL": "postgresql://elsewhere/x", "PATH": "/bin"}, tmp_path
    )
    assert env["SHIPPING_STACK_DIR"] == str(tmp_path)
    assert "SHIPPING_POSTGRES_URL" not in env
    assert env["SHIPPING_DAGS_FOLDER"] == str(tmp_path / "dags")
    assert int(env["SHIPPING_WAREHOUSE_PORT"]) == int(env["SHIPPING_AIRFLOW_PORT"]) + 1


def test_the_report_shows_where_the_cpu_goes_by_service() -> None:
    """Per-service CPU per line is tabled for the largest size, when it was measured."""
    results = _results()
    results.samples[0].cpu_by_service = {"scheduler": 4.0, "warehouse": 1.5}
    text = bench.markdown(results)
    assert "| variant | scheduler | warehouse |" in text
    assert "| product (order_intake) | 400 | 150 |" in text


def test_the_report_shows_the_idle_memory_by_service() -> None:
    """The idle stack's PSS is tabled per service, after the warm-up and after the load."""
    results = _results()
    results.idle_pss_by_service_mb = {"api-server": 200.4, "scheduler": 300.0}
    results.loaded_pss_by_service_mb = {"api-server": 250.0, "scheduler": 600.0}
    text = bench.markdown(results)
    assert "| idle stack | api-server | scheduler | total |" in text
    assert "| after the warm-up | 200 | 300 | 500 |" in text
    assert "| after the load | 250 | 600 | 850 |" in text
