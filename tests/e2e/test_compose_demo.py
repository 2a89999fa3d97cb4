"""``make compose-demo`` on a real Docker engine: the compose stack end to end.

Runs the demo's driver (:mod:`shipping.ops.compose_demo`) under a project name of its
own: it builds the images (local bases where none can be pulled), starts the stack with
two Celery workers, posts the sample orders over REST, kills a worker mid-order, and
runs ``down -v``. It takes 3 to 15 minutes here (docs/docker-compose.md), so it has the
marker ``compose``, deselected by default: ``make test-compose`` runs it. As root it
starts ``dockerd`` when none runs. Where no engine can be had the driver fails
naming what to install, and so does this test: it never skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from shipping.ops.compose_demo import REPO

pytestmark = [pytest.mark.compose, pytest.mark.timeout(3600)]

PHASES = ("engine", "bases", "build", "up", "roles", "orders", "worker kill", "down")


@pytest.fixture(scope="module")
def demo() -> tuple[str, subprocess.CompletedProcess[str]]:
    """One run of the compose demo under a fresh project name; its name and its outcome."""
    project = f"shipping-e2e-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "shipping.ops.compose_demo", "--project", project]
    if os.geteuid() == 0:  # CI on a clean machine: start the engine when none runs
        argv.append("--start-dockerd")
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    return project, done


def test_the_compose_demo_passes(demo: tuple[str, subprocess.CompletedProcess[str]]) -> None:
    """The demo exits 0: every order SHIPPED, each line once, a worker killed mid-order."""
    _, done = demo
    assert done.returncode == 0, f"compose demo failed:\n{done.stdout[-4000:]}\n{done.stderr}"
    assert "ORD-1001: SHIPPED, 2 lines, each shipped once" in done.stdout
    assert "killed worker" in done.stdout


@pytest.mark.parametrize("phase", PHASES)
def test_the_demo_reports_how_long_the_phase_took(
    demo: tuple[str, subprocess.CompletedProcess[str]], phase: str
) -> None:
    """The summary table names each phase, ok, with its seconds."""
    _, done = demo
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [*phase.split(), "ok"] in [[*row[:-2], row[-1]] for row in rows if len(row) >= 3]


def test_the_demo_leaves_no_container_or_volume(
    demo: tuple[str, subprocess.CompletedProcess[str]],
) -> None:
    """`down -v` ran: nothing of the demo's project remains on the engine."""
    project, _ = demo
    label = f"label=com.docker.compose.project={project}"
    for kind in (["ps", "-a"], ["volume", "ls"], ["network", "ls"]):
        listed = subprocess.run(
            ["docker", *kind, "-q", "--filter", label], capture_output=True, text=True, check=True
        )
        assert listed.stdout.strip() == "", f"docker {' '.join(kind)}: {listed.stdout}"
