"""
### bench_noop_fanout: Airflow's own cost of an order's shape (benchmark only)

1 -> N mapped -> 1, doing nothing: `split` hands out `lines` numbers, `noop` runs once per
number and returns a small dict, `join` reads every result (in one call, like
`order_intake`'s reducer). What `make bench` compares the product against.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, get_current_context, task


@dag(
    dag_id="bench_noop_fanout",
    schedule=None,
    catchup=False,
    doc_md=__doc__,
    params={"lines": Param(10, type="integer", minimum=1, maximum=1000)},
    tags=["bench"],
)
def bench_noop_fanout() -> None:
    """Wire the no-op fan-out."""

    @task
    def split() -> list[int]:
        return list(range(int(get_current_context()["params"]["lines"])))

    @task
    def noop(item: int) -> dict[str, int]:
        return {"item": item}

    @task
    def join(results: Any) -> int:
        return len(results[:])

    join(noop.expand(item=split()))


bench_noop_fanout()
