"""The `shipping` command where it needs no running stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shipping.ledger import LineState, LineStatus, OrderState, OrderStatus
from shipping.ops import cli
from shipping.ops.samples import sample_order


def test_submit_refuses_an_invalid_order_before_calling_airflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad order is refused locally with every reason, exit code 2."""
    doc = sample_order("ORD-1", 2)
    doc["items"][1]["line_id"] = "1"
    path = tmp_path / "order.json"
    path.write_text(json.dumps(doc))
    assert cli.main(["submit", str(path)]) == cli.EXIT_REFUSED
    assert "duplicate line_id '1'" in capsys.readouterr().err


def test_submit_refuses_a_file_that_is_not_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unreadable input is a clear refusal, not a traceback."""
    path = tmp_path / "order.json"
    path.write_text("{not json")
    assert cli.main(["submit", str(path)]) == cli.EXIT_REFUSED
    assert "cannot read" in capsys.readouterr().err


def test_status_of_an_unknown_order_exits_1_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An order the ledger does not know: exit code 1 and its id in the message."""
    from shipping.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger.from_url(url).create_schema()
    monkeypatch.setenv("SHIPPING_LEDGER_URL", url)
    assert cli.main(["status", "NOPE-1"]) == cli.EXIT_NOT_FOUND
    assert "unknown order 'NOPE-1'" in capsys.readouterr().err


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    """`shipping status ORDER --json | head -1`: the command stops quietly, as a shell tool does."""
    from shipping.ledger import Ledger
    from shipping.order import parse_order

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = Ledger.from_url(url)
    ledger.create_schema()
    # Far more output than a pipe holds, so the command is still writing when the reader goes.
    ledger.register_order(parse_order(sample_order("BIG-1", 1000)))
    ledger.dispose()
    env = {**os.environ, "SHIPPING_LEDGER_URL": url}
    command = [sys.executable, "-m", "shipping.ops.cli", "status", "BIG-1", "--json"]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline() == b"{\n"
        proc.stdout.close()
        error = proc.stderr.read().decode()
    assert error == ""
    assert proc.returncode == cli.EXIT_READER_GONE


def test_render_status_shows_each_line_the_reason_and_the_runs() -> None:
    """The table has a row per line; a rejected order shows why; the owner run and others show."""
    doc = {
        "order_id": "O-1",
        "state": "SHIPPING",
        "reason": "because",
        "run_id": "order-O-1",
        "other_runs": [{"run_id": "manual__x", "role": "DUPLICATE", "reason": "owned elsewhere"}],
        "lines": [
            {
                "line_id": "1",
                "sku": "A",
                "quantity": 1,
                "state": "SHIPPED",
                "attempts": 2,
                "shipment_id": "shp_1",
                "last_error": None,
            },
            {
                "line_id": "2",
                "sku": "B",
                "quantity": 3,
                "state": "FAILED",
                "attempts": 1,
                "shipment_id": None,
                "last_error": "sku refused",
            },
        ],
    }
    text = cli.render_status(doc)
    assert "order O-1: SHIPPING (1/2 lines shipped)" in text
    assert "reason: because" in text
    assert "run: order-O-1" in text
    assert "other run: manual__x (DUPLICATE: owned elsewhere)" in text
    assert "shp_1" in text
    assert "sku refused" in text
    assert "recovered from:" not in text


def test_render_status_marks_an_error_a_shipped_line_recovered_from() -> None:
    """A shipped line's last error is history, and the table says so."""
    line = {
        "line_id": "1",
        "sku": "A",
        "quantity": 1,
        "state": "SHIPPED",
        "attempts": 2,
        "shipment_id": "shp_1",
        "last_error": "sku refused",
    }
    text = cli.render_status({"order_id": "O-1", "state": "SHIPPED", "lines": [line]})
    assert "recovered from: sku refused" in text


def test_status_says_when_the_ledger_cannot_be_reached(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unreachable ledger is a one-line error and exit code 1, not a traceback."""
    monkeypatch.setenv("SHIPPING_LEDGER_URL", "postgresql+psycopg2://nobody@127.0.0.1:1/none")
    assert cli.main(["status", "ORD-1"]) == cli.EXIT_NOT_FOUND
    assert "cannot reach the ledger" in capsys.readouterr().err


def test_submit_says_when_airflow_cannot_be_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopped Airflow is a one-line error and exit code 1, not a traceback."""
    path = tmp_path / "order.json"
    path.write_text(json.dumps(sample_order("ORD-1", 1)))
    monkeypatch.setenv("SHIPPING_AIRFLOW_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AIRFLOW_ADMIN_PASSWORD", "some-password")
    assert cli.main(["submit", str(path)]) == cli.EXIT_NOT_FOUND
    assert "error: Airflow:" in capsys.readouterr().err


def _line(line_id: str, state: str, error: str | None = None) -> LineStatus:
    return LineStatus(line_id, "MUG", 1, LineState(state), 1, None, error)


def _order(*lines: LineStatus, state: str = "SHIPPING") -> OrderStatus:
    return OrderStatus("O-1", OrderState(state), None, None, tuple(lines), run_id="order-O-1")


def test_progress_counts_each_line_by_the_ledger_and_its_task() -> None:
    """Shipped from the ledger; running, retrying, waiting from Airflow; retries summed."""
    order = _order(
        _line("1", "SHIPPED"),
        _line("2", "PENDING"),
        _line("3", "FAILED", "WarehouseServerError: 503"),
        _line("4", "PENDING"),
    )
    instances = [
        {"map_index": 0, "state": "success", "try_number": 1},
        {"map_index": 1, "state": "running", "try_number": 1},
        {"map_index": 2, "state": "up_for_retry", "try_number": 3},
        {"map_index": 3, "state": "scheduled", "try_number": 0},
    ]
    now = cli.progress(order, {"state": "running"}, instances)
    assert now.counts == {"shipped": 1, "running": 1, "retrying": 1, "waiting": 1}
    assert now.retries == 2
    assert now.needs == []
    assert "line 3: WarehouseServerError: 503" in now.line()


@pytest.mark.parametrize(
    ("error", "command"),
    [
        ("SkuRefused: 422", "shipping fix O-1 --line 2"),
        ("SkuRefused: 422", "shipping cancel O-1 --line 2"),
        ("ShipmentConflict: other sku", "shipping reconcile O-1"),
        ("WarehouseServerError: 503 (after 6 attempts)", "shipping retry O-1"),
    ],
)
def test_a_failed_line_names_the_command_that_resolves_it(error: str, command: str) -> None:
    """A refusal asks for fix or cancel, a conflict for reconcile, an outage for retry."""
    order = _order(_line("1", "SHIPPED"), _line("2", "FAILED", error))
    instances = [{"map_index": 1, "state": "failed", "try_number": 1}]
    now = cli.progress(order, {"state": "failed"}, instances)
    assert any(command in needed for needed in now.needs)


def test_a_rejected_order_needs_a_new_order() -> None:
    """Nothing to retry: the operator is told to post a corrected order."""
    now = cli.progress(_order(state="REJECTED"), {"state": "failed"}, [])
    assert "new order_id" in now.needs[0]
