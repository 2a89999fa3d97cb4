"""order_intake under ``dag.test()`` against a real warehouse service and a PostgreSQL ledger."""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from shipping.connections import ledger_connection, warehouse_connection
from shipping.contract import DAG_ID, LEDGER_CONN_ID, WAREHOUSE_CONN_ID
from shipping.ledger import Ledger
from shipping.ops.samples import sample_order
from tests.dags.conftest import dag_bag

pytestmark = pytest.mark.airflow


@pytest.fixture
def ledger(postgres_url: str) -> Iterator[Ledger]:
    """An empty ledger on a fresh PostgreSQL database."""
    ledger = Ledger.from_url(postgres_url)
    ledger.create_schema()
    yield ledger
    ledger.dispose()


@pytest.fixture
def dag(airflow_db: Any, warehouse: Any, ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> Any:
    """order_intake with its connections pointing at the test warehouse and ledger."""
    url = ledger.engine.url.render_as_string(hide_password=False)
    monkeypatch.setenv(f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}", json.dumps(ledger_connection(url)))
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}",
        json.dumps(warehouse_connection(warehouse.base_url, warehouse.api_token)),
    )
    return dag_bag().dags[DAG_ID]


def states(run: Any) -> Counter[tuple[str, str]]:
    return Counter((ti.task_id, str(ti.state)) for ti in run.get_task_instances())


def test_all_lines_ship_and_the_order_is_finalized(
    dag: Any, ledger: Ledger, warehouse: Any
) -> None:
    """Every line gets one shipment; the reducer marks the order SHIPPED."""
    doc = sample_order(f"DT-{uuid.uuid4().hex[:8]}", 4)
    run = dag.test(run_conf=doc)
    assert str(run.state) == "success"
    status = ledger.get_order(doc["order_id"])
    assert status is not None
    assert status.state == "SHIPPED"
    assert Counter(s["line_id"] for s in warehouse.shipments(doc["order_id"])) == Counter(
        {"1": 1, "2": 1, "3": 1, "4": 1}
    )


def test_each_task_stores_one_result_not_one_xcom_per_key(
    dag: Any, ledger: Ledger, warehouse: Any
) -> None:
    """A returned dict is one XCom: every extra key would be one more API call per line."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    doc = sample_order(f"DT-{uuid.uuid4().hex[:8]}", 3)
    run = dag.test(run_conf=doc)
    assert str(run.state) == "success"
    with create_session() as session:
        stored = Counter(
            (task_id, key)
            for task_id, key in session.execute(
                select(XComModel.task_id, XComModel.key).where(XComModel.run_id == run.run_id)
            )
        )
    assert stored == Counter(
        {
            ("register_order", "order"): 1,
            ("register_order", "return_value"): 1,
            ("ship_item", "return_value"): 3,
            ("finalize_order", "return_value"): 1,
        }
    )


class Answerer(threading.Thread):
    """Answers the run's required action as the REST API does, once it is asked.

    ``dag.test()`` keeps a run alive while a task waits in ``awaiting_input``, until an
    answer recorded from outside moves it on: this writes the answer to the metadata
    database and resumes the task with Airflow's own handler (what ``PATCH .../hitlDetails``
    calls), then stops.
    """

    def __init__(self, choice: str, params_input: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.choice, self.params_input = choice, params_input
        self.asked: dict[str, Any] | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        import sqlalchemy as sa
        from airflow._shared.timezones import timezone
        from airflow.models.hitl import HITLDetail, HITLUser
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.trigger import handle_event_submit
        from airflow.triggers.base import TriggerEvent
        from airflow.utils.session import create_session
        from airflow.utils.state import TaskInstanceState

        while not self.stop.wait(0.5):
            with create_session() as session:
                detail = session.scalars(
                    sa.select(HITLDetail).where(HITLDetail.responded_at.is_(None))
                ).first()
                ti = session.get(TaskInstance, detail.ti_id) if detail else None
                if detail is None or ti is None or ti.state != TaskInstanceState.AWAITING_INPUT:
                    continue
                self.asked = {"subject": detail.subject, "params": dict(detail.params)}
                detail.responded_by = HITLUser(id="grace", name="grace")
                detail.responded_at = timezone.utcnow()
                detail.chosen_options = [self.choice]
                detail.params_input = self.params_input
                handle_event_submit(
                    TriggerEvent(detail.as_resume_event_payload()),
                    task_instance=ti,
                    session=session,
                )
                return


def test_a_refused_line_asks_for_a_decision_and_the_answer_ships_it(
    dag: Any, ledger: Ledger, warehouse: Any
) -> None:
    """A refused SKU fails its own instance and asks; siblings ship; the answer (a fix)
    ships the line under its next key, recorded with the user who answered, and the
    order finalizes by itself."""
    doc = sample_order(f"DT-{uuid.uuid4().hex[:8]}", 3)
    doc["items"][2]["sku"] = "NOPE-1"
    warehouse.set_faults(reject_skus=["NOPE-*"])
    answerer = Answerer("Fix and ship", {"sku": "MUG-RED", "quantity": 5, "reason": "renamed"})
    answerer.start()
    try:
        run = dag.test(run_conf=doc)
    finally:
        answerer.stop.set()
    assert answerer.asked is not None
    assert answerer.asked["subject"] == f"Decide line 3 · NOPE-1 of order {doc['order_id']}"
    assert answerer.asked["params"]["sku"]["value"] == "NOPE-1"  # pre-filled
    assert str(run.state) == "success"
    assert states(run)[("ship_item", "success")] == 2
    assert states(run)[("ship_item", "failed")] == 1
    assert states(run)[("decide_line", "skipped")] == 2
    assert states(run)[("decide_line", "success")] == 1
    status = ledger.get_order(doc["order_id"])
    assert status is not None
    assert status.state == "SHIPPED"
    line = status.lines[2]
    assert (line.sku, line.quantity, line.idempotency_key) == (
        "MUG-RED",
        5,
        f"{doc['order_id']}:3#1",
    )
    [amendment] = status.to_json()["amendments"]
    assert (amendment["by"], amendment["reason"]) == ("grace", "renamed")
    assert [(s["line_id"], s["sku"]) for s in warehouse.shipments(doc["order_id"])].count(
        ("3", "MUG-RED")
    ) == 1


def test_duplicate_line_ids_reject_the_order(dag: Any, ledger: Ledger, warehouse: Any) -> None:
    """Duplicate line ids: REJECTED with the reason, nothing shipped."""
    doc = sample_order(f"DT-{uuid.uuid4().hex[:8]}", 2)
    doc["items"][1]["line_id"] = "1"
    run = dag.test(run_conf=doc)
    assert str(run.state) == "failed"
    status = ledger.get_order(doc["order_id"])
    assert status is not None
    assert status.state == "REJECTED"
    assert warehouse.shipments(doc["order_id"]) == []


def test_a_second_run_of_an_order_makes_no_warehouse_call_and_names_the_owner(
    dag: Any, ledger: Ledger, warehouse: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same order under another run id fans out to nothing and succeeds at once."""
    doc = sample_order(f"DT-{uuid.uuid4().hex[:8]}", 3)
    first = dag.test(run_conf=doc)
    assert str(first.state) == "success"
    calls: list[str] = []
    real = requests.Session.request

    def spy(self: requests.Session, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if url.startswith(warehouse.base_url):
            calls.append(f"{method} {url}")
        return real(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    second = dag.test(run_conf=doc)
    monkeypatch.undo()
    assert str(second.state) == "success"
    assert calls == []
    assert states(second)[("ship_item", "success")] == 0
    status = ledger.get_order(doc["order_id"])
    assert status is not None
    assert (status.state, status.run_id) == ("SHIPPED", first.run_id)
    [other] = status.other_runs
    assert (other.run_id, other.role) == (second.run_id, "DUPLICATE")
    assert first.run_id in (other.reason or "")
    assert len(warehouse.shipments(doc["order_id"])) == 3
