"""The supervision helpers with real processes: orphan sweep, exec wrapper, supervised PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from shipping.ops import localpg
from shipping.ops.stack import Program, supervisord_config
from shipping.ops.supervision import Supervisor, sweep_orphans

# A session leader that starts a long sleep and exits: the sleep is left behind in its session.
LEAVE_AN_ORPHAN = (
    "import subprocess, sys; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    "print(p.pid, flush=True)"
)


def test_sweep_kills_what_a_dead_session_leader_left_behind() -> None:
    """A process left in a dead leader's session is killed; the sweep names it."""
    leader = subprocess.Popen(
        [sys.executable, "-c", LEAVE_AN_ORPHAN],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert leader.stdout is not None
    with leader.stdout:
        orphan = int(leader.stdout.readline())
    leader.wait()
    assert psutil.pid_exists(orphan)
    assert sweep_orphans(session=leader.pid, supervisor_pid=None) == [orphan]
    time.sleep(0.1)
    assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == "zombie"


def test_sweep_spares_the_live_supervisors_descendants() -> None:
    """Children of the given supervisor are not leftovers."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        assert sweep_orphans(session=child.pid, supervisor_pid=child.pid) == []
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_the_exec_wrapper_counts_starts_and_applies_the_environment_file(tmp_path: Path) -> None:
    """Each start is counted; the service sees its environment file's variables."""
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"SHIPPING_TEST_VALUE": "from-the-file"}))
    command = [
        sys.executable,
        "-m",
        "shipping.ops.supervision",
        "exec",
        "--run-dir",
        str(tmp_path / "run"),
        "--env-file",
        str(env_file),
        "demo",
        "--",
        sys.executable,
        "-c",
        "import os; print(os.environ['SHIPPING_TEST_VALUE'])",
    ]
    for _ in range(2):
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == "from-the-file"
    assert Supervisor(tmp_path).starts("demo") == 2


def test_a_null_in_the_environment_file_removes_the_variable(tmp_path: Path) -> None:
    """A service can be kept from a variable that supervisord's own environment holds."""
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"SHIPPING_TEST_SECRET": None}))
    command = [
        *(sys.executable, "-m", "shipping.ops.supervision", "exec"),
        *("--run-dir", str(tmp_path / "run"), "--env-file", str(env_file), "demo", "--"),
        *(sys.executable, "-c", "import os; print(os.environ.get('SHIPPING_TEST_SECRET'))"),
    ]
    env = {**os.environ, "SHIPPING_TEST_SECRET": "held-by-supervisord"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "None"


def test_a_service_sees_only_its_environment_file_not_supervisords_environment(
    tmp_path: Path,
) -> None:
    """The environment file is the whole environment: supervisord's own variables stay out."""
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"SHIPPING_TEST_VALUE": "allowed"}))
    command = [
        *(sys.executable, "-m", "shipping.ops.supervision", "exec"),
        *("--run-dir", str(tmp_path / "run"), "--env-file", str(env_file), "demo", "--"),
        *(sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"),
    ]
    env = {**os.environ, "AIRFLOW_ADMIN_PASSWORD": "held-by-supervisord"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    seen = json.loads(result.stdout)
    assert "AIRFLOW_ADMIN_PASSWORD" not in seen
    assert seen["SHIPPING_TEST_VALUE"] == "allowed"
    assert "held-by-supervisord" not in result.stdout


def test_a_supervisor_that_never_ran_has_no_pid_and_no_services(tmp_path: Path) -> None:
    """No pid file: not alive, no services, nothing to shut down or sweep."""
    supervisor = Supervisor(tmp_path)
    assert supervisor.pid() is None
    assert supervisor.services() == []
    assert supervisor.shutdown() is False
    assert supervisor.sweep_dead() == []


def test_the_embedded_postgres_comes_back_after_kill_9_of_its_postmaster(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Under supervisord, a SIGKILLed postmaster is started again and accepts connections."""
    directory = tmp_path_factory.mktemp("pgsup")  # short: the socket path has a length limit
    pg = localpg.prepare(directory / "postgres")
    program = Program("postgres", pg.argv, user=pg.user, stop_signal="INT", start_s=1)
    (directory / "logs").mkdir()
    (directory / "supervisord.conf").write_text(
        supervisord_config(directory, directory / "logs", [program])
    )
    supervisor = Supervisor(directory)
    supervisor.start_daemon(dict(os.environ))
    try:
        supervisor.start("postgres")
        wait_until(lambda: localpg.is_ready(directory / "postgres"))
        first = {s.name: s for s in supervisor.services()}["postgres"]
        os.kill(first.pid, signal.SIGKILL)
        wait_until(lambda: supervisor.services()[0].pid not in (0, first.pid))
        wait_until(lambda: localpg.is_ready(directory / "postgres"))
        engine = sa.create_engine(pg.url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        engine.dispose()
        assert supervisor.services()[0].restarts == 1
    finally:
        assert supervisor.shutdown() is True
    assert not localpg.is_ready(directory / "postgres")


def wait_until(check: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
