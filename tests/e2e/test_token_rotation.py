"""The warehouse token rotation of docs/operator-runbook.md, run as written on a real stack of its own.

Each step is ``make up`` (``python -m shipping.ops.stack up``) with the step's variables on
the running stack, as an operator would type it; orders ship before, during and after.
Then a pipeline token the warehouse does not accept: ``watch`` names the configuration,
and after fixing it ``shipping retry`` ends the order SHIPPED.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from shipping.contract import DAG_ID
from shipping.ops.samples import sample_order
from shipping.order import run_id_for
from shipping.warehouse import WarehouseClient
from tests.e2e.conftest import LiveStack, started_stack
from tests.e2e.support import RUN_TIMEOUT_S

pytestmark = pytest.mark.e2e

OLD = f"old-{secrets.token_urlsafe(12)}"
NEW = f"new-{secrets.token_urlsafe(12)}"


@pytest.fixture(scope="module")
def rotating(
    tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str
) -> Iterator[LiveStack]:
    """A stack of its own whose pipeline starts with the token OLD."""
    with started_stack(tmp_path_factory, postgres_server_url, WAREHOUSE_API_TOKEN=OLD) as stack:
        yield stack


def make_up(stack: LiveStack, **variables: str) -> str:
    """`make up` with these variables on the running stack (the shell keeps the rest)."""
    stack.env.update(variables)
    result = subprocess.run(
        [sys.executable, "-m", "shipping.ops.stack", "up"],
        env=stack.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def accepts(stack: LiveStack, token: str) -> bool:
    """Whether the warehouse takes ``token`` now (200) or refuses it (401)."""
    response = requests.get(
        f"{stack.state.warehouse_url}/v1/shipments",
        params={"order_id": "none"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def post(stack: LiveStack, prefix: str) -> dict[str, Any]:
    doc = sample_order(f"{prefix}-{uuid.uuid4().hex[:8]}", 2)
    stack.api.trigger(DAG_ID, run_id_for(doc["order_id"]), doc)
    return doc


def shipped_once(stack: LiveStack, doc: dict[str, Any], token: str) -> None:
    """The order is SHIPPED, one shipment per line at the warehouse (read with ``token``)."""
    watched = stack.shipping("watch", doc["order_id"], "--timeout", str(RUN_TIMEOUT_S))
    assert watched.returncode == 0, watched.stdout + watched.stderr
    with WarehouseClient(stack.state.warehouse_url, token) as client:
        lines = Counter(s["line_id"] for s in client.list_shipments(doc["order_id"]))
    assert lines == Counter({item["line_id"]: 1 for item in doc["items"]})


def pipeline_token(stack: LiveStack) -> str:
    """The token in the Airflow components' connection, as the stack wrote it."""
    run = Path(stack.env["SHIPPING_STACK_DIR"]) / "run" / "airflow.env.json"
    connection = json.loads(json.loads(run.read_text())["AIRFLOW_CONN_WAREHOUSE_API"])
    return str(connection["password"])


def test_the_rotation_runbook_keeps_orders_shipping(rotating: LiveStack) -> None:
    """NEW,OLD at the warehouse; NEW in the pipeline; NEW alone: every order ships."""
    shipped_once(rotating, post(rotating, "ROT-BEFORE"), OLD)

    make_up(rotating, WAREHOUSE_API_TOKENS=f"{NEW},{OLD}")  # step 1
    assert accepts(rotating, NEW)
    assert accepts(rotating, OLD)
    assert pipeline_token(rotating) == OLD
    shipped_once(rotating, post(rotating, "ROT-STEP1"), NEW)

    make_up(rotating, WAREHOUSE_API_TOKENS=f"{NEW},{OLD}", WAREHOUSE_API_TOKEN=NEW)  # step 2
    assert pipeline_token(rotating) == NEW
    shipped_once(rotating, post(rotating, "ROT-STEP2"), NEW)

    make_up(rotating, WAREHOUSE_API_TOKENS=NEW, WAREHOUSE_API_TOKEN=NEW)  # step 3
    assert accepts(rotating, NEW)
    assert not accepts(rotating, OLD)
    shipped_once(rotating, post(rotating, "ROT-AFTER"), NEW)


def test_a_token_list_for_the_pipeline_is_refused_naming_the_accepted_tokens(
    rotating: LiveStack,
) -> None:
    """The old runbook's WAREHOUSE_API_TOKEN=NEW,OLD: `make up` refuses it, nothing restarts."""
    env = {**rotating.env, "WAREHOUSE_API_TOKEN": f"{NEW},{OLD}"}
    result = subprocess.run(
        [sys.executable, "-m", "shipping.ops.stack", "up"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1
    assert "WAREHOUSE_API_TOKENS" in result.stderr
    assert pipeline_token(rotating) == rotating.env["WAREHOUSE_API_TOKEN"]


def test_a_wrong_pipeline_token_is_fixed_in_the_configuration_then_retried(
    rotating: LiveStack,
) -> None:
    """A token the warehouse refuses: watch names WAREHOUSE_API_TOKEN (exit 3, no fix or
    cancel); after `make up` with the right one, `shipping retry` ships the order."""
    right = rotating.env["WAREHOUSE_API_TOKEN"]  # what the pipeline sends now, accepted
    wrong = f"wrong-{secrets.token_urlsafe(12)}"
    said = make_up(rotating, WAREHOUSE_API_TOKENS=right, WAREHOUSE_API_TOKEN=wrong)
    assert "not among" in said  # make up warns: the warehouse will refuse the pipeline
    doc = post(rotating, "ROT-WRONG")
    run = rotating.api.wait_for_run(DAG_ID, run_id_for(doc["order_id"]), timeout=RUN_TIMEOUT_S)
    assert run["state"] == "failed"

    watched = rotating.shipping("watch", doc["order_id"], "--timeout", "60")
    assert watched.returncode == 3, watched.stdout + watched.stderr
    assert "WAREHOUSE_API_TOKEN" in watched.stdout
    assert f"shipping retry {doc['order_id']}" in watched.stdout
    assert "shipping fix" not in watched.stdout
    assert "shipping cancel" not in watched.stdout

    make_up(rotating, WAREHOUSE_API_TOKEN=right)
    retried = rotating.shipping("retry", doc["order_id"])
    assert retried.returncode == 0, retried.stderr
    assert "failed on the configuration" in retried.stdout
    shipped_once(rotating, doc, right)
    assert rotating.status(doc["order_id"])["state"] == "SHIPPED"
