"""Every door of an order agrees: Airflow's REST door, ``shipping submit``, register_order
and the warehouse.

Orders are generated from ``ORDER_SCHEMA`` (hypothesis-jsonschema) and then mutated the
way real payloads go wrong (a trailing newline, a NUL, ``..``, ``2.0`` as a quantity, a
duplicate line id, an unknown field, a lone surrogate, a value too long). Each one must be
refused at the REST door, or rejected by register_order before any line is posted, or
ship completely. The REST door is Airflow's own check: the serialized DAG's Params, as
``create_dagrun`` validates a triggered run's conf.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from shipping import pipeline
from shipping.contract import DAG_ID
from shipping.errors import OrderRejected
from shipping.ledger import Ledger
from shipping.ops import localpg
from shipping.order import ORDER_SCHEMA, InvalidOrder, parse_order
from shipping.warehouse import WarehouseClient
from tests.dags.conftest import dag_bag
from warehouse_mock.testing import WarehouseHandle

pytestmark = pytest.mark.postgres

_SCHEMA = copy.deepcopy(ORDER_SCHEMA)
_SCHEMA["properties"]["items"]["maxItems"] = 3  # small orders: the fields are what varies
_ids = itertools.count()

# Ways a payload goes wrong, each a function of the current value.
_MUTATIONS: dict[str, Any] = {
    "trailing newline": lambda v: f"{v}\n" if isinstance(v, str) else v,
    "NUL inside": lambda v: f"{v[:1]}\x00{v[1:]}" if isinstance(v, str) else v,
    "tab inside": lambda v: f"{v}\tx" if isinstance(v, str) else v,
    "double dot": lambda v: f"{v}..x" if isinstance(v, str) else v,
    "lone surrogate": lambda v: f"{v}\ud800" if isinstance(v, str) else v,
    "too long": lambda v: v * 201 if isinstance(v, str) and v else v,
    "empty": lambda v: "" if isinstance(v, str) else v,
    "non-ASCII": lambda v: f"{v}é" if isinstance(v, str) else v,
    "integral float": lambda v: float(v) if isinstance(v, int) else v,
    "fractional": lambda v: v + 0.5 if isinstance(v, int) else v,
    "boolean": lambda v: True,
    "number as text": lambda v: str(v),
    "null": lambda v: None,
}


def _leaves(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _leaves(value, (*path, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _leaves(value, (*path, index))
    else:
        yield path


def _apply(doc: dict[str, Any], path: tuple[Any, ...], change: Any) -> None:
    target: Any = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = change(target[path[-1]])


@st.composite
def orders(draw: st.DrawFn) -> dict[str, Any]:
    """An order from the schema, with a fresh order_id, then 0-2 mutations."""
    doc: dict[str, Any] = draw(from_schema(_SCHEMA))
    doc["order_id"] = f"DOOR-{uuid.uuid4().hex[:8]}-{next(_ids)}"
    for _ in range(draw(st.integers(0, 2))):
        kind = draw(st.sampled_from([*_MUTATIONS, "duplicate line", "unknown field", "drop"]))
        if kind == "duplicate line":
            doc["items"].append(copy.deepcopy(doc["items"][0]))
        elif kind == "unknown field":
            doc["coupon"] = "FREE"
        elif kind == "drop":
            path = draw(st.sampled_from(list(_leaves(doc))))
            target: Any = doc
            for part in path[:-1]:
                target = target[part]
            if isinstance(target, dict):
                del target[path[-1]]
        else:
            _apply(doc, draw(st.sampled_from(list(_leaves(doc)))), _MUTATIONS[kind])
    return doc


@pytest.fixture(scope="module")
def rest_door() -> Any:
    """The Params of order_intake as the API server holds them (the serialized DAG)."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dag_bag().dags[DAG_ID]
    return DagSerialization.from_dict(DagSerialization.to_dict(dag)).params


@pytest.fixture(scope="module")
def ledger(postgres_server_url: str) -> Iterator[Ledger]:
    """A ledger on PostgreSQL (where a NUL would fail), shared by the examples."""
    name = f"doors_{uuid.uuid4().hex[:10]}"
    ledger = Ledger.from_url(localpg.ensure_database(postgres_server_url, name))
    ledger.create_schema()
    yield ledger
    ledger.dispose()
    localpg.drop_database(postgres_server_url, name)


def _door_accepts(params: Any, doc: dict[str, Any]) -> bool:
    from airflow.exceptions import ParamValidationError

    try:
        params.deep_merge(doc).validate()
    except ParamValidationError:
        return False
    return True


def _submit_accepts(doc: dict[str, Any]) -> bool:
    try:
        parse_order(doc)
    except InvalidOrder:
        return False
    return True


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(doc=orders())
def test_every_door_accepts_the_same_orders(
    rest_door: Any, ledger: Ledger, warehouse_server: WarehouseHandle, doc: dict[str, Any]
) -> None:
    """Refused at the door, or rejected before any post, or shipped completely."""
    door = _door_accepts(rest_door, doc)
    submit = _submit_accepts(doc)
    if not door:
        assert not submit, "shipping submit accepts what Airflow's REST door refuses"
        return
    run_id = f"order-{doc['order_id']}"
    try:
        registered = pipeline.register(ledger, doc, run_id=run_id)
    except OrderRejected:
        assert not submit, "register_order rejects what shipping submit accepts"
        status = ledger.get_order(doc["order_id"])
        assert status is not None
        assert (status.state, status.lines) == ("REJECTED", ())
        assert status.reason
        assert warehouse_server.shipments(doc["order_id"]) == []
        return
    assert submit, "register_order accepts what shipping submit refuses"
    with WarehouseClient(
        warehouse_server.base_url, warehouse_server.api_token, sleep=lambda _: None
    ) as client:
        results = [
            pipeline.ship_line(
                ledger=ledger,
                client=client,
                order_id=registered["order_id"],
                ship_to=registered["ship_to"],
                line=line,
                try_number=1,
            )
            for line in registered["lines"]
        ]
    summary = pipeline.finalize(ledger, doc["order_id"], results)
    assert summary["state"] == "SHIPPED"
    shipped = warehouse_server.shipments(doc["order_id"])
    assert sorted(s["line_id"] for s in shipped) == sorted(i["line_id"] for i in doc["items"])
