"""The `shipping` command where it needs no running stack."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shipping import errors
from shipping.errors import ErrorFamily
from shipping.ledger import LineState, LineStatus, OrderState, OrderStatus
from shipping.ops import cli
from shipping.ops.airflow_api import TriggerOutcome, TriggerStatus
from shipping.ops.cli import advice, common, watching
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


def test_a_line_waiting_for_a_decision_names_the_required_action_first() -> None:
    """Its required action (a link to it) comes before the CLI's fix and cancel."""
    order = _order(_line("1", "SHIPPED"), _line("2", "FAILED", "SkuRefused: 422"))
    instances = [
        {"task_id": "ship_item", "map_index": 1, "state": "failed", "try_number": 1},
        {"task_id": "decide_line", "map_index": 1, "state": "awaiting_input", "try_number": 1},
    ]
    now = cli.progress(order, {"state": "running"}, instances, airflow_url="http://af:8080/")
    assert now.counts == {"shipped": 1, "awaiting a decision": 1}
    assert now.needs[0] == (
        'answer the required action "Decide line 2 · MUG": http://af:8080/dags/order_intake/'
        "runs/order-O-1/tasks/decide_line/mapped/1/required_actions"
    )
    assert now.needs[1:] == [
        "or with the command line:",
        'shipping fix O-1 --line 2 --sku NEW_SKU --reason "..."',
        'shipping cancel O-1 --line 2 --reason "..."',
    ]


@pytest.mark.parametrize("decision", [None, "scheduled", "queued", "running"])
def test_a_failed_line_whose_decision_is_about_to_ask_is_not_the_operators_yet(
    decision: str | None,
) -> None:
    """Between the line's failure and its question, watch keeps waiting (no exit 3)."""
    order = _order(_line("1", "FAILED", "SkuRefused: 422"))
    instances = [
        {"task_id": "ship_item", "map_index": 0, "state": "failed", "try_number": 1},
        {"task_id": "decide_line", "map_index": 0, "state": decision, "try_number": 0},
    ]
    now = cli.progress(order, {"state": "running"}, instances)
    assert (now.counts, now.needs) == ({"running": 1}, [])


def test_a_failed_decision_leaves_the_cli_path() -> None:
    """A decision that failed (its answer refused, a new SKU refused) names fix and cancel."""
    order = _order(_line("1", "FAILED", "SkuRefused: 422"))
    instances = [
        {"task_id": "ship_item", "map_index": 0, "state": "failed", "try_number": 1},
        {"task_id": "decide_line", "map_index": 0, "state": "failed", "try_number": 1},
    ]
    now = cli.progress(order, {"state": "failed"}, instances)
    assert now.counts == {"failed": 1}
    assert 'shipping fix O-1 --line 1 --sku NEW_SKU --reason "..."' in now.needs


def test_a_rejected_order_needs_a_new_order() -> None:
    """Nothing to retry: the operator is told to post a corrected order."""
    now = cli.progress(_order(state="REJECTED"), {"state": "failed"}, [])
    assert "new order_id" in now.needs[0]


# === advice by error family, retry's decisions (a fake Airflow and ledger) ==============


@dataclass(frozen=True)
class ClassedLine:
    """A line as the ledger reads it once it stores its last error's class."""

    line_id: str
    state: str
    last_error: str | None
    error_class: str | None
    error_final: bool | None = None


#: A class of each family, and what its failed line must and must not be told.
FAMILY_ADVICE = {
    ErrorFamily.REFUSED: ("SkuRefused", ["shipping fix O-1 --line 2", "shipping cancel O-1"], []),
    ErrorFamily.CONFLICT: (
        "ShipmentConflict",
        ["shipping reconcile O-1 --repair", "shipping retry O-1"],
        ["shipping fix", "shipping cancel"],
    ),
    ErrorFamily.CONFIGURATION: (
        "WarehouseAuthError",
        ["WAREHOUSE_API_TOKEN", "WAREHOUSE_API_TOKENS", "shipping retry O-1"],
        ["shipping fix", "shipping cancel"],
    ),
    ErrorFamily.OUTAGE: ("WarehouseServerError", ["shipping retry O-1"], ["shipping fix"]),
    ErrorFamily.FENCED: ("LineFenced", ["shipping retry O-1"], ["shipping fix"]),
    ErrorFamily.BUG: ("KeyError", ["shipping retry O-1"], ["shipping fix"]),
    ErrorFamily.ORDER: (
        "OrderNotFound",
        ["shipping status O-1", "shipping retry O-1"],
        ["shipping fix"],
    ),
}


def test_every_error_family_has_its_advice() -> None:
    """The advice table below covers each family of shipping.errors."""
    assert set(FAMILY_ADVICE) == set(ErrorFamily)
    assert {errors.family_of(name) for name, _, _ in FAMILY_ADVICE.values()} == set(ErrorFamily)


@pytest.mark.parametrize("stored", [True, False], ids=["error_class", "last_error_prefix"])
@pytest.mark.parametrize("family", list(ErrorFamily))
def test_watch_advises_by_the_error_family_of_a_failed_line(
    family: ErrorFamily, stored: bool
) -> None:
    """Each family gets its commands, read from error_class or, before it, the message."""
    error_class, wanted, unwanted = FAMILY_ADVICE[family]
    error = f"{error_class}: it went wrong"
    line: Any = (
        ClassedLine("2", "FAILED", "warehouse answered: wording that changed", error_class)
        if stored
        else _line("2", "FAILED", error)
    )
    order = _order(_line("1", "SHIPPED"), line)
    instances = [{"map_index": 1, "state": "failed", "try_number": 1}]
    needs = "\n".join(cli.progress(order, {"state": "failed"}, instances).needs)
    for command in wanted:
        assert command in needs
    for command in unwanted:
        assert command not in needs


@dataclass(frozen=True)
class FencedLine(ClassedLine):
    """A line with the fence's fields: its pending void."""

    void_key: str | None = None


@pytest.mark.parametrize(
    "line",
    [
        FencedLine("2", "FAILED", "SkuRefused: 422", "SkuRefused", error_final=False),
        FencedLine("2", "CANCELLING", "SkuRefused: 422", "SkuRefused", error_final=True),
        FencedLine("2", "FAILED", "SkuRefused: 422", "SkuRefused", True, void_key="O-1:2"),
        FencedLine("2", "FAILED", "ShipmentConflict: x", "ShipmentConflict", error_final=False),
    ],
    ids=["fixed-since", "cancelling", "void-pending", "conflict-voided-since"],
)
def test_an_amended_line_or_a_pending_void_is_ended_by_retry_not_amended_again(
    line: FencedLine,
) -> None:
    """A line amended since its refusal, or whose void is pending, needs only `retry`."""
    order = _order(_line("1", "SHIPPED"), line)
    instances = [{"map_index": 1, "state": "failed", "try_number": 1}]
    needs = cli.progress(order, {"state": "failed"}, instances).needs
    assert needs == ["shipping retry O-1"]


@pytest.mark.parametrize(
    ("cls", "final"),
    [(cls, family.final) for family in errors.FAMILIES for cls in family.classes],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_a_line_error_is_final_exactly_when_its_family_is(cls: type, final: bool) -> None:
    """Finality comes from shipping.errors for every class it names, by name alone."""
    assert advice.is_final(ClassedLine("1", "FAILED", "any text", cls.__name__)) is final
    assert advice.is_final(_line("1", "FAILED", f"{cls.__name__}: any text")) is final


def test_a_connection_error_names_the_pipeline_connection() -> None:
    """A request that cannot be built points at AIRFLOW_CONN_WAREHOUSE_API, then retry."""
    order = _order(_line("1", "FAILED", "RequestNotSent: invalid header"))
    needs = cli.progress(order, {"state": "failed"}, [{"map_index": 0, "state": "failed"}]).needs
    assert "AIRFLOW_CONN_WAREHOUSE_API" in needs[0]
    assert needs[-1] == "shipping retry O-1"


def test_only_a_failed_reducer_needs_retry_and_says_so() -> None:
    """Every line shipped, finalize_order failed: watch names `shipping retry` and why."""
    order = _order(_line("1", "SHIPPED"), _line("2", "SHIPPED"))
    instances = [
        {"task_id": "ship_item", "map_index": 0, "state": "success"},
        {"task_id": "ship_item", "map_index": 1, "state": "success"},
        {"task_id": "finalize_order", "map_index": -1, "state": "failed"},
    ]
    now = cli.progress(order, {"state": "failed"}, instances)
    assert now.needs == ["shipping retry O-1"]
    assert "finalize_order failed" in now.line()


class FakeAirflow:
    """The calls of AirflowClient the commands make, recorded; runs and instances given."""

    def __init__(self, run: dict[str, Any] | None, instances: list[dict[str, Any]]) -> None:
        self.run = run
        self.instances = instances
        self.cleared: list[tuple[str, list[Any]]] = []
        self.asked_states: list[tuple[str, ...]] = []

    def __enter__(self) -> FakeAirflow:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def get_run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        return self.run

    def task_instances(self, dag_id: str, run_id: str, *, states: Any = ()) -> list[dict[str, Any]]:
        self.asked_states.append(tuple(states))
        return [ti for ti in self.instances if not states or ti["state"] in states]

    def mapped_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        return [ti for ti in self.instances if ti["task_id"] == task_id]

    def clear_tasks(self, dag_id: str, run_id: str, task_ids: list[str]) -> list[Any]:
        self.cleared.append(("tasks", list(task_ids)))
        return []

    def clear_mapped(self, dag_id: str, run_id: str, task_id: str, indexes: list[int]) -> list[Any]:
        self.cleared.append((task_id, list(indexes)))
        return []

    def clear_waiting(
        self, dag_id: str, run_id: str, task_id: str, indexes: list[int]
    ) -> list[Any]:
        self.cleared.append(("waiting " + task_id, list(indexes)))
        return []

    def set_mapped_state(self, *args: Any, **kwargs: Any) -> None:
        self.cleared.append(("set state", list(args[2:5])))

    def trigger(self, dag_id: str, run_id: str, conf: Any) -> TriggerOutcome:
        return TriggerOutcome(TriggerStatus.EXISTS, 409, run=self.run)


class FakeLedger:
    def __init__(self, order: Any) -> None:
        self.order = order

    def get_order(self, order_id: str) -> Any:
        return self.order

    def order_summary(self, order_id: str, *, positions: Any = ()) -> Any:
        """The ledger's summary: every line of the order is among its notable ones."""
        return None if self.order is None else watching._summary_of(self.order, [])


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakeAirflow]:
    """Point the commands at a fake ledger holding ``order`` and a fake Airflow."""

    def install(
        order: Any, run: dict[str, Any] | None, instances: list[dict[str, Any]]
    ) -> FakeAirflow:
        api = FakeAirflow(run, instances)
        monkeypatch.setattr(common, "open_airflow", lambda: api)
        monkeypatch.setattr(
            common, "open_ledger", lambda: contextlib.nullcontext(FakeLedger(order))
        )
        monkeypatch.setattr(watching.time, "sleep", lambda _: None)
        return api

    return install


def _ti(task_id: str, state: str, map_index: int = -1) -> dict[str, Any]:
    return {"task_id": task_id, "map_index": map_index, "state": state, "try_number": 3}


INTAKE_FAILED_RUN = {"dag_run_id": "order-O-1", "state": "failed", "conf": sample_order("O-1", 1)}
INTAKE_FAILED = [_ti("register_order", "failed"), _ti("ship_item", "upstream_failed")]


def test_retry_clears_only_the_failed_reducer_when_every_line_is_done(
    fake: Callable[..., FakeAirflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """No failed line, finalize_order failed: it alone is cleared, exit 0."""
    order = _order(_line("1", "SHIPPED"), _line("2", "CANCELLED"))
    api = fake(
        order,
        {"dag_run_id": "order-O-1", "state": "failed"},
        [_ti("ship_item", "success", 0), _ti("ship_item", "success", 1)]
        + [_ti("register_order", "success"), _ti("finalize_order", "failed")],
    )
    assert cli.main(["retry", "O-1"]) == cli.EXIT_OK
    assert api.cleared == [("tasks", ["finalize_order"])]
    assert "retrying finalize_order" in capsys.readouterr().out


def test_retry_clears_nothing_while_the_reducer_has_not_failed(
    fake: Callable[..., FakeAirflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """A reducer still running is left alone: nothing to retry."""
    order = _order(_line("1", "SHIPPED"))
    api = fake(
        order,
        {"dag_run_id": "order-O-1", "state": "running"},
        [_ti("ship_item", "success", 0), _ti("finalize_order", "up_for_retry")],
    )
    assert cli.main(["retry", "O-1"]) == cli.EXIT_OK
    assert api.cleared == []
    assert "nothing to retry" in capsys.readouterr().out


def test_retry_says_the_configuration_comes_first_and_still_clears(
    fake: Callable[..., FakeAirflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """A line failed on the token: retry names WAREHOUSE_API_TOKEN, then clears the line."""
    order = _order(_line("1", "FAILED", "WarehouseAuthError: warehouse answered 401"))
    api = fake(
        order,
        {"dag_run_id": "order-O-1", "state": "failed"},
        [_ti("ship_item", "failed", 0), _ti("finalize_order", "upstream_failed")],
    )
    assert cli.main(["retry", "O-1"]) == cli.EXIT_OK
    assert api.cleared == [("ship_item", [0])]
    out = capsys.readouterr().out
    assert "failed on the configuration" in out
    assert "WAREHOUSE_API_TOKEN" in out


def test_retry_of_an_order_lost_at_intake_clears_register_order(
    fake: Callable[..., FakeAirflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """Not in the ledger, its run failed at register_order: that task and downstream clear."""
    api = fake(None, INTAKE_FAILED_RUN, INTAKE_FAILED)
    assert cli.main(["retry", "O-1"]) == cli.EXIT_OK
    assert api.cleared == [("tasks", ["register_order"])]
    assert "failed at intake" in capsys.readouterr().out


def test_retry_of_an_order_neither_the_ledger_nor_airflow_knows_exits_1(
    fake: Callable[..., FakeAirflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown everywhere: exit 1 and the order's id."""
    fake(None, None, [])
    assert cli.main(["retry", "O-1"]) == cli.EXIT_NOT_FOUND
    assert "unknown order 'O-1'" in capsys.readouterr().err


def test_submit_again_of_an_order_lost_at_intake_names_retry(
    fake: Callable[..., FakeAirflow], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not a bare "already accepted": exit 3 and `shipping retry ORDER_ID`."""
    fake(None, INTAKE_FAILED_RUN, INTAKE_FAILED)
    path = tmp_path / "order.json"
    path.write_text(json.dumps(sample_order("O-1", 1)))
    assert cli.main(["submit", str(path)]) == cli.EXIT_OPERATOR
    out = capsys.readouterr().out
    assert "failed at intake" in out
    assert "shipping retry O-1" in out
    assert "already accepted" not in out


def test_status_of_an_order_lost_at_intake_says_what_is_known(
    fake: Callable[..., FakeAirflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """The run exists and intake failed: said, with the command, exit 3; in JSON too."""
    fake(None, INTAKE_FAILED_RUN, INTAKE_FAILED)
    assert cli.main(["status", "O-1"]) == cli.EXIT_OPERATOR
    assert "shipping retry O-1" in capsys.readouterr().out
    assert cli.main(["status", "O-1", "--json"]) == cli.EXIT_OPERATOR
    doc = json.loads(capsys.readouterr().out)
    assert (doc["run_id"], doc["intake"], doc["needs"]) == (
        "order-O-1",
        "failed",
        ["shipping retry O-1"],
    )


def test_watch_of_an_order_lost_at_intake_needs_an_operator(
    fake: Callable[..., FakeAirflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 3 naming `shipping retry`, at once, not a timeout."""
    fake(None, INTAKE_FAILED_RUN, INTAKE_FAILED)
    assert cli.watch("O-1", timeout=0, interactive=False) == cli.EXIT_OPERATOR
    assert "shipping retry O-1" in capsys.readouterr().out


def test_watch_waits_while_intake_is_retried(
    fake: Callable[..., FakeAirflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """register_order up for retry is not a failure yet: watch goes on (here: times out)."""
    fake(
        None,
        {"dag_run_id": "order-O-1", "state": "running"},
        [_ti("register_order", "up_for_retry")],
    )
    assert cli.watch("O-1", timeout=0, interactive=False) == cli.EXIT_DRIFT_OR_TIMEOUT
    assert "not in the ledger yet" in capsys.readouterr().out


def test_the_command_refuses_a_token_list_naming_the_accepted_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """WAREHOUSE_API_TOKEN=NEW,OLD is never sent as one bearer: exit 1 naming TOKENS."""
    from shipping.ledger import Ledger

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger.from_url(url).create_schema()
    monkeypatch.setenv("SHIPPING_LEDGER_URL", url)
    monkeypatch.setenv("SHIPPING_WAREHOUSE_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("WAREHOUSE_API_TOKEN", "new-token-123,old-token-456")
    assert cli.main(["reconcile", "--all"]) == cli.EXIT_NOT_FOUND
    assert "WAREHOUSE_API_TOKENS" in capsys.readouterr().err


def test_retry_of_a_line_clears_its_waiting_decision_after_the_line(
    fake: Callable[..., FakeAirflow], capsys: pytest.CaptureFixture[str]
) -> None:
    """The failed ship_item first (only failed, downstream), then its decision still waiting,
    which would otherwise hold the run open; other lines' decisions are left alone."""
    order = _order(_line("1", "FAILED", "SkuRefused: 422"), _line("2", "FAILED", "SkuRefused"))
    api = fake(
        order,
        {"dag_run_id": "order-O-1", "state": "running"},
        [_ti("register_order", "success"), _ti("ship_item", "failed", 0)]
        + [_ti("ship_item", "failed", 1), _ti("decide_line", "awaiting_input", 0)]
        + [_ti("decide_line", "awaiting_input", 1), _ti("finalize_order", "none")],
    )
    assert cli.main(["retry", "O-1", "--line", "1"]) == cli.EXIT_OK
    assert api.cleared == [("ship_item", [0]), ("waiting decide_line", [0])]
    assert "retrying line(s) 1 and finalize_order" in capsys.readouterr().out


def test_retry_of_a_line_the_ledger_shows_shipped_resolves_its_waiting_decision(
    fake: Callable[..., FakeAirflow],
) -> None:
    """Shipped behind Airflow's back (reconcile adopted it): its task is marked success and
    its waiting decision cleared (then skipped); the reducer is cleared if it failed."""
    order = _order(_line("1", "SHIPPED"))
    api = fake(
        order,
        {"dag_run_id": "order-O-1", "state": "running"},
        [_ti("register_order", "success"), _ti("ship_item", "failed", 0)]
        + [_ti("decide_line", "awaiting_input", 0), _ti("finalize_order", "none")],
    )
    assert cli.main(["retry", "O-1"]) == cli.EXIT_OK
    assert api.cleared == [
        ("set state", ["ship_item", 0, "success"]),
        ("waiting decide_line", [0]),
        ("tasks", ["finalize_order"]),
    ]
