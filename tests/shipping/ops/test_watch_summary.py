"""`shipping watch` on a large order: the ledger's summary and only the instances that matter."""

from __future__ import annotations

import uuid
from typing import Any

from shipping import pipeline
from shipping.ledger import Ledger
from shipping.ops.cli import watching
from shipping.ops.samples import sample_order

LINES = 1000


class CountingAirflow:
    """An Airflow whose run holds one instance per line; it answers state filters."""

    def __init__(self, run_id: str, states: dict[int, str]) -> None:
        self.run = {"dag_run_id": run_id, "state": "running"}
        self.instances = [
            {
                "task_id": "ship_item",
                "map_index": i,
                "state": states.get(i, "scheduled"),
                "try_number": 1,
            }
            for i in range(LINES)
        ]
        self.answered = 0

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.run

    def task_instances(self, dag_id: str, run_id: str, *, states: Any = ()) -> list[dict[str, Any]]:
        found = [ti for ti in self.instances if not states or ti["state"] in states]
        self.answered += len(found)
        return found


def test_a_poll_of_a_1000_line_order_reads_a_few_instances_and_counts_every_line(
    ledger: Ledger,
) -> None:
    """3 running, 1 refused, 996 waiting: counted from the ledger, 4 instances fetched."""
    doc = sample_order(f"W-{uuid.uuid4().hex[:8]}", LINES)
    run_id = f"order-{doc['order_id']}"
    pipeline.register(ledger, doc, run_id=run_id)
    ledger.record_failed(
        order_id=doc["order_id"],
        line_id="500",
        try_number=1,
        requests=1,
        error="SkuRefused: no",
        error_class="SkuRefused",
        error_final=True,
    )
    api = CountingAirflow(run_id, {0: "running", 1: "running", 2: "queued", 499: "failed"})
    summary, run, instances = watching.follow(ledger, api, doc["order_id"])
    assert api.answered == 4
    assert sorted(summary.notable) == [0, 1, 2, 499]  # the failed line and the running ones
    now = watching.progress(summary, run, instances)
    assert now.counts == {"running": 3, "failed": 1, "waiting": 996}
    assert now.failing == [("500", "SkuRefused: no")]
    assert now.needs[0].startswith(f"shipping fix {doc['order_id']} --line 500")
