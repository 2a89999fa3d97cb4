"""DAG integrity: the DAG folder imports cleanly and order_intake is wired as designed."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from shipping.contract import DAG_ID, WAREHOUSE_POOL
from shipping.ops.stack import BOOTSTRAP_POOLS
from shipping.ops.state import PROJECT_ROOT as REPO
from shipping.order import ORDER_SCHEMA
from tests.dags.conftest import dag_bag


@pytest.fixture(scope="module")
def dagbag() -> Any:
    return dag_bag()


@pytest.fixture(scope="module")
def dag(dagbag: Any) -> Any:
    return dagbag.dags[DAG_ID]


def test_dag_folder_imports_without_errors(dagbag: Any) -> None:
    """Every DAG file parses; no import errors."""
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dag_ids


def test_tasks_are_register_ship_decide_finalize_in_that_order(dag: Any) -> None:
    """register_order -> ship_item -> decide_line (one pair per line) -> finalize_order."""
    assert set(dag.task_ids) == {"register_order", "ship_item", "decide_line", "finalize_order"}
    assert dag.get_task("ship_item").upstream_task_ids == {"register_order"}
    assert dag.get_task("decide_line").upstream_task_ids == {"register_order", "ship_item"}
    assert dag.get_task("finalize_order").upstream_task_ids == {"register_order", "decide_line"}


def test_a_lines_decision_shares_its_map_index_and_asks_only_when_it_failed(dag: Any) -> None:
    """Both line tasks are mapped in one group (per-index dependencies); the decision is a
    human-in-the-loop task that runs when its line's ship_item failed, in the warehouse pool."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    ship, decide = dag.get_task("ship_item"), dag.get_task("decide_line")
    group = ship.get_closest_mapped_task_group()
    assert group is not None
    assert decide.get_closest_mapped_task_group() is group
    assert isinstance(decide, HITLOperator)
    assert (decide.trigger_rule, decide.pool) == ("one_failed", WAREHOUSE_POOL)
    assert decide.response_timeout is None  # a decision waits until answered
    assert set(decide.serialized_params) == {"sku", "quantity", "reason"}
    assert dag.get_task("finalize_order").trigger_rule == "none_failed"


def test_every_task_has_retries_and_a_retry_policy(dag: Any) -> None:
    """Outages are retried everywhere; final errors are classified by a retry policy."""
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_policy is not None, task.task_id


def test_ship_item_is_pooled_capped_and_named(dag: Any) -> None:
    """ship_item runs in the warehouse pool, capped per run, named per line."""
    ship = dag.get_task("ship_item")
    assert ship.pool == WAREHOUSE_POOL
    assert ship.max_active_tis_per_dagrun is not None
    assert ship.map_index_template == "{{ line_label }}"
    assert ship.retry_exponential_backoff


def test_every_pool_the_dag_uses_is_created_by_the_stack(dag: Any) -> None:
    """A task in a missing pool is never scheduled: the stack must create each one."""
    used = {task.pool for task in dag.tasks} - {"default_pool"}
    assert used <= set(BOOTSTRAP_POOLS)


def test_params_are_the_order_schema(dag: Any) -> None:
    """The Params schema is the shipping order schema, one Param per top-level field."""
    params = dag.params
    assert set(params.keys()) == set(ORDER_SCHEMA["properties"])
    for name, schema in ORDER_SCHEMA["properties"].items():
        param = params.get_param(name)
        assert {**param.schema, "description": param.description} == {
            "description": None,
            **schema,
        }
    assert set(ORDER_SCHEMA["required"]) == set(params.keys())


def test_dag_is_manual_only_and_documented(dag: Any) -> None:
    """Orders arrive over REST: no schedule, no catchup, docs shown in the UI."""
    assert type(dag.timetable).__name__ == "NullTimetable"
    assert dag.catchup is False
    assert "Retry a failed line" in dag.doc_md


@pytest.mark.parametrize(
    "dag_file", ["order_intake.py", "amend_order_line.py", "reconcile_ledger.py"]
)
def test_parsing_a_dag_file_does_not_import_the_task_code(dag_file: str) -> None:
    """Every task process re-parses its DAG file: the client and ledger load in tasks only."""
    probe = (
        "import runpy, sys; sys.path.insert(0, sys.argv[2]); runpy.run_path(sys.argv[1]); "
        "print(sorted(m for m in sys.modules if m.startswith(('shipping.', 'tenacity'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "dags" / dag_file), str(REPO / "dags")],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = result.stdout.strip().splitlines()[-1]
    for heavy in ("shipping.warehouse", "shipping.ledger", "shipping.pipeline"):
        assert heavy not in loaded


def test_every_task_of_every_dag_retries_outages_and_fails_refusals_at_once(
    dagbag: Any,
) -> None:
    """One retry policy for the whole project: final errors fail, outages retry."""
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.retries >= 1, (dag.dag_id, task.task_id)
            assert task.retry_policy is not None, (dag.dag_id, task.task_id)


def test_every_task_of_every_dag_returns_one_xcom(dagbag: Any) -> None:
    """No task splits a returned dict into one XCom per key (an API call each, per line)."""
    for dag in dagbag.dags.values():
        for task in dag.tasks:
            assert task.multiple_outputs is False, (dag.dag_id, task.task_id)


def test_the_ledger_is_reconciled_hourly_without_catchup(dagbag: Any) -> None:
    """reconcile_ledger runs every hour, once at a time, never for missed hours."""
    dag = dagbag.dags["reconcile_ledger"]
    assert dag.timetable.expression == "0 * * * *"
    assert (dag.catchup, dag.max_active_runs) == (False, 1)


def test_the_amend_form_asks_for_the_line_the_action_and_a_reason(dagbag: Any) -> None:
    """amend_order_line's trigger form: what to amend, how, and why (required)."""
    params = dagbag.dags["amend_order_line"].params
    assert set(params.keys()) == {"order_id", "line_id", "action", "sku", "quantity", "reason"}
    assert params.get_param("action").schema["enum"] == ["fix", "cancel"]
    assert params["sku"] is None
    assert params["quantity"] is None
    titles = {name: params.get_param(name).schema.get("title") for name in params}
    assert titles == {  # the labels of the form's fields
        "order_id": "Order id",
        "line_id": "Line id",
        "action": "Fix or cancel",
        "sku": "New SKU",
        "quantity": "New quantity",
        "reason": "Why",
    }
