"""``make bench``'s results: the samples, their medians, and the reports written from them.

``docs/benchmark.md`` (tables, ratios to the no-op fan-out, where the CPU and memory go),
``docs/benchmark.json`` (every sample) and ``docs/img/benchmark.png`` (the chart).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VARIANTS = ("product", "noop", "line_runs", "loop")
LABELS = {
    "product": "product (order_intake)",
    "noop": "no-op fan-out",
    "line_runs": "one DAG run per line",
    "loop": "one task looping",
}


# -------------------------------------------------------------------- measurements
@dataclass
class Sample:
    """One measurement: a variant at a size, its wall time and the stack's CPU."""

    variant: str
    lines: int
    seconds: float
    cpu_seconds: float
    cpu_by_service: dict[str, float] = field(default_factory=dict)


@dataclass
class Results:
    """Everything one benchmark run measured, with the machine it ran on."""

    machine: dict[str, Any]
    sizes: list[int]
    repeat: int
    burst: tuple[int, int]
    samples: list[Sample] = field(default_factory=list)
    idle_pss_mb: float = 0.0
    loaded_pss_mb: float = 0.0
    idle_pss_by_service_mb: dict[str, float] = field(default_factory=dict)
    loaded_pss_by_service_mb: dict[str, float] = field(default_factory=dict)
    load_average: list[float] = field(default_factory=list)
    command: str = ""

    def median(self, variant: str, lines: int, attr: str) -> float | None:
        """Median of ``attr`` over the samples of ``variant`` at ``lines``."""
        values = [
            getattr(s, attr) for s in self.samples if s.variant == variant and s.lines == lines
        ]
        return statistics.median(values) if values else None


# ----------------------------------------------------------------------- reporting
def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table_rows(results: Results) -> list[dict[str, Any]]:
    """One row per variant and size (and the burst), with ratios to the no-op fan-out."""
    rows: list[dict[str, Any]] = []
    groups = [(v, n, "noop") for n in results.sizes for v in VARIANTS]
    total = results.burst[0] * results.burst[1]
    groups += [("burst_product", total, "burst_noop"), ("burst_noop", total, "burst_noop")]
    for variant, lines, base in groups:
        seconds = results.median(variant, lines, "seconds")
        cpu = results.median(variant, lines, "cpu_seconds")
        if seconds is None or cpu is None:
            continue
        base_s = results.median(base, lines, "seconds")
        base_cpu = results.median(base, lines, "cpu_seconds")
        rows.append(
            {
                "variant": variant,
                "lines": lines,
                "seconds": seconds,
                "lines_per_s": lines / seconds,
                "cpu_per_line": cpu / lines,
                "time_ratio": seconds / base_s if base_s else None,
                "cpu_ratio": cpu / base_cpu if base_cpu else None,
            }
        )
    return rows


def markdown(results: Results) -> str:
    """The results as the markdown page ``docs/benchmark.md``."""
    m = results.machine
    orders, lines = results.burst
    label = {
        **LABELS,
        "burst_product": f"burst {orders} x {lines}: product",
        "burst_noop": f"burst {orders} x {lines}: no-op fan-outs",
    }
    out = [
        "# Benchmark: the product against the patterns it replaces",
        "",
        f"Made by `{results.command}` (medians of {results.repeat}, interleaved, one stack).",
        f"Machine: {m['cores']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM, Python {m['python']};"
        f" load average at the end {results.load_average} (the stack's own work included).",
        "",
        "Time is from the first trigger to the last run's success; CPU is the stack's "
        "(every service's processes and their task processes, PostgreSQL included); "
        "ratios are to the no-op fan-out of the same size (lower is better).",
        "",
        "| variant | lines | time | lines/s | CPU s/line | time vs no-op | CPU vs no-op |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table_rows(results):
        out.append(
            f"| {label[row['variant']]} | {row['lines']} | {row['seconds']:.1f} s "
            f"| {row['lines_per_s']:.2f} | {row['cpu_per_line']:.3f} "
            f"| {_fmt(row['time_ratio'], '.2f')}x | {_fmt(row['cpu_ratio'], '.2f')}x |"
        )
    out += _cpu_breakdown(results)
    out += [
        "",
        f"Idle stack: {results.idle_pss_mb:.0f} MB PSS after the warm-up, "
        f"{results.loaded_pss_mb:.0f} MB after the load.",
    ]
    out += _memory_breakdown(results)
    out += [
        "",
        "![Benchmark chart](img/benchmark.png)",
        "",
    ]
    return "\n".join(out)


def _cpu_breakdown(results: Results) -> list[str]:
    """Where the stack's CPU went, per line, by service (medians), at the largest size."""
    size = max(results.sizes)
    samples = [s for s in results.samples if s.lines == size and s.cpu_by_service]
    services = sorted({name for s in samples for name in s.cpu_by_service})
    if not samples:
        return []
    out = [
        "",
        f"Where the stack's CPU goes at {size} lines (CPU ms per line, medians; `scheduler` "
        "holds the task processes, which the LocalExecutor forks):",
        "",
        "| variant | " + " | ".join(services) + " |",
        "|---|" + "---:|" * len(services),
    ]
    for variant in VARIANTS:
        mine = [s for s in samples if s.variant == variant]
        if mine:
            cells = [
                f"{1000 * statistics.median(s.cpu_by_service.get(n, 0.0) for s in mine) / size:.0f}"
                for n in services
            ]
            out.append(f"| {LABELS[variant]} | " + " | ".join(cells) + " |")
    return out


def _memory_breakdown(results: Results) -> list[str]:
    """The idle stack's PSS by service, after the warm-up and after the load."""
    before, after = results.idle_pss_by_service_mb, results.loaded_pss_by_service_mb
    services = sorted(before.keys() | after.keys())
    if not services:
        return []
    out = [
        "",
        "The idle stack's memory by service (MB PSS; `scheduler` holds the LocalExecutor's "
        "worker processes):",
        "",
        "| idle stack | " + " | ".join(services) + " | total |",
        "|---|" + "---:|" * (len(services) + 1),
    ]
    for label, sizes in (("after the warm-up", before), ("after the load", after)):
        cells = [f"{sizes[n]:.0f}" if n in sizes else "-" for n in services]
        out.append(f"| {label} | " + " | ".join(cells) + f" | {sum(sizes.values()):.0f} |")
    return out


def chart(results: Results, path: Path) -> None:
    """Bars per size and for the burst: time and CPU per line, relative to the no-op fan-out.

    Each bar carries its ratio; the scale is logarithmic, so 0.5x and 2x lie as far from 1x.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import FixedLocator, NullLocator

    rows = table_rows(results)
    groups: list[tuple[str, int, list[str]]] = [
        (f"{n} lines", n, list(VARIANTS)) for n in results.sizes
    ]
    orders, lines = results.burst
    if any(r["variant"].startswith("burst_") for r in rows):
        groups.append((f"burst {orders} x {lines}", orders * lines, ["product", "noop"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6))
    width = 0.8 / len(VARIANTS)
    colours = {variant: f"C{i}" for i, variant in enumerate(VARIANTS)}
    for ax, key, title in (
        (axes[0], "time_ratio", "trigger -> done, relative to the no-op fan-out"),
        (axes[1], "cpu_ratio", "stack CPU per line, relative to the no-op fan-out"),
    ):
        for k, (label, n, variants) in enumerate(groups):
            burst = label.startswith("burst")
            for i, variant in enumerate(variants):
                name = f"burst_{variant}" if burst else variant
                value = next(
                    (r[key] for r in rows if r["variant"] == name and r["lines"] == n), None
                )
                if not value:
                    continue
                x = k + (i - (len(variants) - 1) / 2) * width
                ax.bar(x, value, width, color=colours[variant])
                ax.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(groups)), [label for label, _, _ in groups])
        ax.set_title(title, fontsize=10)
        ax.set_yscale("log")
        ax.set_ylim(0.05, 4)
        ax.yaxis.set_major_locator(FixedLocator([0.1, 0.2, 0.5, 1, 2]))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_yticklabels(["0.1x", "0.2x", "0.5x", "1x", "2x"])
    handles = [Rectangle((0, 0), 1, 1, color=colours[v]) for v in VARIANTS]
    fig.legend(handles, [LABELS[v] for v in VARIANTS], loc="lower center", ncol=4, fontsize=8)
    m = results.machine
    fig.suptitle(
        f"make bench: {m['cores']} cores, {m['cpu']} "
        + (f"(medians of {results.repeat})" if results.repeat > 1 else "(one run each)"),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(results: Results, out: Path) -> list[Path]:
    """Write ``benchmark.md``, ``benchmark.json`` and ``img/benchmark.png`` under ``out``."""
    md, raw, png = out / "benchmark.md", out / "benchmark.json", out / "img" / "benchmark.png"
    out.mkdir(parents=True, exist_ok=True)
    md.write_text(markdown(results))
    raw.write_text(json.dumps(asdict(results), indent=2) + "\n")
    chart(results, png)
    return [md, raw, png]
