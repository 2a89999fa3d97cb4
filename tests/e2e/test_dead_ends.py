"""Orders that failed outside their lines, ended by the ``shipping`` command (issue 18).

The ledger fails where no line records it: while ``register_order`` runs (the order is
lost before the ledger knows it), or when only ``finalize_order`` is left. Each test makes
the ledger fail for real on the stack's own PostgreSQL, lets the run fail, restores the
ledger, and then ends the order only with the commands ``watch`` names.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from shipping.contract import DAG_ID
from shipping.ops.samples import sample_order
from shipping.order import run_id_for
from tests.e2e.conftest import LiveStack
from tests.e2e.support import RUN_TIMEOUT_S, assert_completed_once

pytestmark = pytest.mark.e2e


def _server(stack: LiveStack) -> tuple[sa.Engine, str]:
    """An autocommit engine on the ledger's server (its ``postgres`` database), and the
    ledger's database name."""
    url = make_url(stack.state.ledger_url)
    engine = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    return engine, str(url.database)


@contextlib.contextmanager
def ledger_refusing_connections(stack: LiveStack) -> Iterator[None]:
    """The ledger's database refuses every new connection and its open ones are ended,
    as a database down for maintenance looks to its clients; accepted again after."""
    engine, database = _server(stack)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            )
        yield
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
        engine.dispose()


@contextlib.contextmanager
def ledger_failing_finalize(stack: LiveStack, order_id: str) -> Iterator[None]:
    """The ledger fails the statement that makes ``order_id`` SHIPPED, with the error of a
    server shutting down (SQLSTATE 57P01: the driver raises OperationalError, as for a
    ledger that went away), until the block ends."""
    engine = sa.create_engine(stack.state.ledger_url, isolation_level="AUTOCOMMIT")
    name = f"e2e_fail_finalize_{uuid.uuid4().hex[:8]}"
    literal = order_id.replace("'", "''")
    try:
        with engine.connect() as conn:
            conn.execute(
                sa.text(
                    f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF NEW.order_id = '{literal}' AND NEW.state::text = 'SHIPPED' THEN "
                    "RAISE EXCEPTION 'terminating connection due to administrator command' "
                    "USING ERRCODE = '57P01'; END IF; RETURN NEW; END $$"
                )
            )
            conn.execute(
                sa.text(
                    f"CREATE TRIGGER {name} BEFORE UPDATE ON orders "
                    f"FOR EACH ROW EXECUTE FUNCTION {name}()"
                )
            )
        yield
    finally:
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS {name} ON orders"))
            conn.execute(sa.text(f"DROP FUNCTION IF EXISTS {name}()"))
        engine.dispose()


def _order_file(tmp_path: Path, prefix: str, lines: int) -> tuple[dict[str, Any], Path]:
    doc = sample_order(f"{prefix}-{uuid.uuid4().hex[:10]}", lines)
    path = tmp_path / "order.json"
    path.write_text(json.dumps(doc))
    return doc, path


def _tries(stack: LiveStack, doc: dict[str, Any]) -> dict[tuple[str, int], int]:
    instances = stack.api.task_instances(DAG_ID, run_id_for(doc["order_id"]))
    return {(ti["task_id"], ti["map_index"]): ti["try_number"] for ti in instances}


def test_an_order_whose_reducer_failed_is_finalized_by_retry(
    stack: LiveStack, tmp_path: Path
) -> None:
    """Only finalize_order failed: watch names `shipping retry`, which clears it alone.

    The ledger must fail for the reducer only, after every line recorded its shipment:
    stopping the whole database at that moment is a race with the scheduler. So a trigger
    on the ledger's ``orders`` table fails the one statement that makes this order
    SHIPPED with the error of a server going down (OperationalError), for all the
    reducer's tries; the lines' writes go through. Then the trigger is dropped.
    """
    doc, path = _order_file(tmp_path, "REDUCER", 2)
    order_id = doc["order_id"]
    with ledger_failing_finalize(stack, order_id):
        assert stack.shipping("submit", str(path)).returncode == 0
        run = stack.api.wait_for_run(DAG_ID, run_id_for(order_id), timeout=RUN_TIMEOUT_S)
        assert run["state"] == "failed"
    status = stack.status(order_id)
    assert status["state"] == "SHIPPING"
    assert {line["state"] for line in status["lines"]} == {"SHIPPED"}
    before = _tries(stack, doc)
    assert before[("finalize_order", -1)] == 3  # the ledger was down for all its tries

    watched = stack.shipping("watch", order_id, "--timeout", "60")
    assert watched.returncode == 3, watched.stdout + watched.stderr
    assert f"shipping retry {order_id}" in watched.stdout
    assert "shipping fix" not in watched.stdout

    retried = stack.shipping("retry", order_id)
    assert retried.returncode == 0, retried.stderr
    assert "retrying finalize_order" in retried.stdout, retried.stdout  # not "nothing to retry"
    assert "finalize_order failed" in watched.stdout  # watch said why, too
    assert_completed_once(stack, doc)
    after = _tries(stack, doc)
    # Only what failed ran again: the reducer, not the lines.
    assert {k: v for k, v in after.items() if k[0] == "ship_item"} == {
        k: v for k, v in before.items() if k[0] == "ship_item"
    }
    assert after[("finalize_order", -1)] == 4


def test_an_order_lost_at_intake_is_found_and_shipped_by_retry(
    stack: LiveStack, tmp_path: Path
) -> None:
    """The ledger is unreachable while register_order runs: every command finds the run.

    The ledger's database refuses connections (``ALLOW_CONNECTIONS false``) for all of
    register_order's tries, so the run fails before the ledger knows the order. Then:
    submitting again says intake failed and names retry (exit 3), status says what it
    knows (exit 3), watch needs an operator (exit 3, not a timeout), and retry clears
    register_order with everything after it: the order ships, one shipment per line.
    """
    doc, path = _order_file(tmp_path, "INTAKE", 2)
    order_id = doc["order_id"]
    with ledger_refusing_connections(stack):
        accepted = stack.shipping("submit", str(path))
        assert accepted.returncode == 0, accepted.stderr
        run = stack.api.wait_for_run(DAG_ID, run_id_for(order_id), timeout=RUN_TIMEOUT_S)
        assert run["state"] == "failed"

    again = stack.shipping("submit", str(path))
    assert again.returncode == 3, again.stdout + again.stderr
    assert "failed at intake" in again.stdout
    assert f"shipping retry {order_id}" in again.stdout
    assert "already accepted" not in again.stdout

    shown = stack.shipping("status", order_id, "--json")
    assert shown.returncode == 3, shown.stderr
    assert json.loads(shown.stdout)["intake"] == "failed"

    watched = stack.shipping("watch", order_id, "--timeout", "60")
    assert watched.returncode == 3, watched.stdout + watched.stderr
    assert f"shipping retry {order_id}" in watched.stdout

    retried = stack.shipping("retry", order_id)
    assert retried.returncode == 0, retried.stderr
    assert "retrying register_order" in retried.stdout
    assert_completed_once(stack, doc)
    assert stack.shipping("watch", order_id, "--timeout", "60").returncode == 0
