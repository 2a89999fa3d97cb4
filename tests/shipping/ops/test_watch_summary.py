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
    """An Airflow whose run holds a ship_item and a decide_line instance per line; it
    answers state filters and single instances, and counts the instances it sends."""

    def __init__(
        self, run_id: str, states: dict[int, str], decisions: dict[int, str | None]
    ) -> None:
        self.run = {"dag_run_id": run_id, "state": "running"}
        self.instances = [
            {
                "task_id": "ship_item",
                "map_index": i,
                "state": states.get(i, "scheduled"),
                "try_number": 1,
            }
            for i in range(LINES)
        ] + [
            {"task_id": "decide_line", "map_index": i, "state": decisions.get(i), "try_number": 0}
            for i in range(LINES)
        ]
        self.answered = 0

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.run

    def task_instances(self, dag_id: str, run_id: str, *, states: Any = ()) -> list[dict[str, Any]]:
        found = [ti for ti in self.instances if not states or ti["state"] in states]
        self.answered += len(found)
        return found

    def task_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int
    ) -> dict[str, Any] | None:
        self.answered += 1
        return next(
            ti for ti in self.instances if ti["task_id"] == task_id and ti["map_index"] == map_index
        )


def _order_with_line_500_refused(ledger: Ledger) -> tuple[dict[str, Any], str]:
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
    return doc, run_id


def test_a_poll_of_a_1000_line_order_reads_a_few_instances_and_counts_every_line(
    ledger: Ledger,
) -> None:
    """3 running, 1 refused whose decision waits, 996 waiting: counted from the ledger,
    5 instances fetched; the required action is named first, the CLI second."""
    doc, run_id = _order_with_line_500_refused(ledger)
    api = CountingAirflow(
        run_id, {0: "running", 1: "running", 2: "queued", 499: "failed"}, {499: "awaiting_input"}
    )
    summary, run, instances = watching.follow(ledger, api, doc["order_id"])
    assert api.answered == 5
    assert sorted(summary.notable) == [0, 1, 2, 499]  # the failed line and the running ones
    now = watching.progress(summary, run, instances)
    assert now.counts == {"running": 3, "awaiting a decision": 1, "waiting": 996}
    assert now.failing == [("500", "SkuRefused: no")]
    assert now.needs[0].startswith('answer the required action "Decide line 500')
    assert now.needs[1] == "or with the command line:"
    assert now.needs[2].startswith(f"shipping fix {doc['order_id']} --line 500")


def test_a_failed_line_whose_decision_is_yet_to_ask_is_fetched_alone_and_needs_nobody(
    ledger: Ledger,
) -> None:
    """A refused line whose decide_line is not scheduled yet (no state, which the state
    filter cannot ask for) is read by its one instance, and counts as running."""
    doc, run_id = _order_with_line_500_refused(ledger)
    api = CountingAirflow(run_id, {0: "running", 499: "failed"}, {})
    summary, run, instances = watching.follow(ledger, api, doc["order_id"])
    assert api.answered == 3  # two by the state filter, the decision by itself
    now = watching.progress(summary, run, instances)
    assert now.counts == {"running": 2, "waiting": 998}
    assert now.needs == []


def test_a_failed_line_whose_decision_was_skipped_needs_the_command_line(ledger: Ledger) -> None:
    """A failed line with no decision to come (skipped) is the CLI's: fix or cancel."""
    doc, run_id = _order_with_line_500_refused(ledger)
    api = CountingAirflow(run_id, {499: "failed"}, {499: "skipped"})
    now = watching.progress(*watching.follow(ledger, api, doc["order_id"]))
    assert now.counts == {"failed": 1, "waiting": 999}
    assert now.needs[0].startswith(f"shipping fix {doc['order_id']} --line 500")
