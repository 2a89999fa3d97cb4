"""The supervision helpers with real processes: the orphan sweep and the exec wrapper."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from shipping.supervision import Supervisor, sweep_orphans

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
        "shipping.supervision",
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


def test_a_supervisor_that_never_ran_has_no_pid_and_no_services(tmp_path: Path) -> None:
    """No pid file: not alive, no services, nothing to shut down or sweep."""
    supervisor = Supervisor(tmp_path)
    assert supervisor.pid() is None
    assert supervisor.services() == []
    assert supervisor.shutdown() is False
    assert supervisor.sweep_dead() == []
