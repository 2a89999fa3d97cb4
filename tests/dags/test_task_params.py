"""A task's params processing does not grow with the order: the lines are checked at the door.

Airflow 3.3.2's task runner calls ``process_params`` (the run's conf validated against the
task's Params) when a task starts, and a mapped task calls it again once unmapped. With the
DAG's Params that is the whole order, every line, in every line's task. ``ship_item`` and
``finalize_order`` override them with task-level Params that check nothing; the door keeps
the DAG's. These tests count the JSON-schema work (validator descents) of each call, so they
fail if Airflow starts validating a task's conf against something else than the task's
Params, or if a task gets the order's schema back.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shipping.contract import DAG_ID
from shipping.ops.samples import sample_order
from shipping.order import ORDER_SCHEMA
from tests.dags.conftest import dag_bag

SMALL, BIG = 10, 1000


@pytest.fixture(scope="module")
def dag() -> Any:
    return dag_bag().dags[DAG_ID]


@pytest.fixture
def descents(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts every JSON-schema descent (one schema keyword into one part of a value).

    ``Param.resolve`` validates with ``jsonschema.validate``, which picks the 2020-12
    validator for the Params' schemas (they name no ``$schema``) and for their meta-schema.
    """
    from jsonschema import Draft202012Validator

    count = [0]
    real = Draft202012Validator.descend

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Draft202012Validator, "descend", counting)
    return count


def _work(task: Any, dag: Any, lines: int, descents: list[int]) -> int:
    """The descents of one ``process_params`` call, as the task runner makes it."""
    from airflow.sdk.definitions.param import process_params

    conf = sample_order(f"ORD-{lines}", lines)
    before = descents[0]
    process_params(dag, task, conf, suppress_exception=False)
    return descents[0] - before


def _unmapped_ship_item(dag: Any) -> Any:
    """ship_item as one mapped instance runs it (Airflow unmaps it before rendering)."""
    line = {"line_id": "1", "sku": "MUG-RED", "quantity": 1}
    order = {"order_id": "ORD-1", "ship_to": {}}
    return dag.get_task("ship_item").unmap({"op_kwargs": {"order": order, "line": line}})


def test_the_task_runner_validates_the_conf_with_process_params() -> None:
    """What the counts below rest on: the calls Airflow 3.3.2 makes in a task process."""
    import inspect

    from airflow.sdk.execution_time import context, task_runner

    assert "process_params(self.task.dag, self.task, dag_run_conf" in inspect.getsource(
        task_runner.RuntimeTaskInstance.get_template_context
    )
    assert "process_params(" in inspect.getsource(context.context_update_for_unmapped)


def test_the_counter_sees_the_lines_where_the_conf_is_read(dag: Any, descents: list[int]) -> None:
    """register_order reads the conf: Airflow still checks every line of it there."""
    task = dag.get_task("register_order")
    small = _work(task, dag, SMALL, descents)
    assert small > 0
    assert _work(task, dag, BIG, descents) > 10 * small


@pytest.mark.parametrize("which", ["ship_item", "ship_item unmapped", "finalize_order"])
def test_a_tasks_params_work_does_not_grow_with_the_order(
    dag: Any, descents: list[int], which: str
) -> None:
    """The same work for 10 lines and 1000, and no line is looked at."""
    task = _unmapped_ship_item(dag) if which == "ship_item unmapped" else dag.get_task(which)
    small = _work(task, dag, SMALL, descents)
    assert _work(task, dag, BIG, descents) == small
    assert _work(task, dag, 1, descents) == small


def test_the_door_still_checks_every_line(dag: Any) -> None:
    """The DAG's Params, which the API server validates a trigger with, are the order's."""
    from airflow.exceptions import ParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    for name, schema in ORDER_SCHEMA["properties"].items():
        body = {k: v for k, v in schema.items() if k != "description"}
        assert dag.params.get_param(name).schema == body, name
    door = DagSerialization.from_dict(DagSerialization.to_dict(dag)).params
    doc = sample_order("ORD-BAD", BIG)
    door.deep_merge(doc).validate()
    bad = copy.deepcopy(doc)
    bad["items"][-1]["quantity"] = 0
    with pytest.raises(ParamValidationError, match="Invalid input for param items"):
        door.deep_merge(bad).validate()
