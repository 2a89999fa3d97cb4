"""The stack's Airflow tuning: which levers are on, the settings, the local-settings file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shipping.ops import airflow_tuning
from shipping.ops.airflow_tuning import (
    CELERY_PARALLELISM,
    PARALLELISM,
    airflow_env,
    enabled_levers,
    write_local_settings,
)


@pytest.mark.parametrize(
    ("raw", "levers"),
    [
        ("", {"preimport", "settings"}),
        ("all", {"preimport", "settings"}),
        ("off", set()),
        ("preimport", {"preimport"}),
        (" settings , preimport ", {"preimport", "settings"}),
    ],
)
def test_the_tuning_variable_chooses_the_levers(raw: str, levers: set[str]) -> None:
    """SHIPPING_AIRFLOW_TUNING turns levers off; unset means all of them."""
    assert enabled_levers({"SHIPPING_AIRFLOW_TUNING": raw}) == levers


def test_an_unknown_lever_is_refused_by_name() -> None:
    """A misspelt lever fails naming the variable, rather than silently tuning nothing."""
    with pytest.raises(ValueError, match="SHIPPING_AIRFLOW_TUNING"):
        enabled_levers({"SHIPPING_AIRFLOW_TUNING": "preimports"})


def test_the_settings_lever_bounds_the_executor() -> None:
    """With the settings lever on, parallelism is fitted; off, Airflow's default stays."""
    assert airflow_env({})["AIRFLOW__CORE__PARALLELISM"] == str(PARALLELISM)
    assert "AIRFLOW__CORE__PARALLELISM" not in airflow_env({"SHIPPING_AIRFLOW_TUNING": "off"})


def test_with_celery_parallelism_leaves_room_for_many_workers() -> None:
    """Celery mode: the cap is CELERY_PARALLELISM, above what 2 workers of 4 slots need."""
    assert airflow_env({}, celery=True)["AIRFLOW__CORE__PARALLELISM"] == str(CELERY_PARALLELISM)
    assert CELERY_PARALLELISM >= 16 * 4


def test_another_dags_folder_is_passed_to_airflow(tmp_path: Path) -> None:
    """SHIPPING_DAGS_FOLDER becomes Airflow's DAG folder (the benchmark's stack uses it)."""
    env = airflow_env({"SHIPPING_DAGS_FOLDER": str(tmp_path)})
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path.resolve())
    assert "AIRFLOW__CORE__DAGS_FOLDER" not in airflow_env({})


def test_compose_gets_the_same_tuned_settings() -> None:
    """Every tuned Airflow setting of the Celery stack is in compose's settings, same value."""
    from shipping.ops.airflow_settings import compose_settings

    compose = compose_settings()
    for name, value in airflow_env({}, celery=True).items():
        assert compose[name] == value, name


def test_the_local_settings_file_is_removed_with_its_lever_off(tmp_path: Path) -> None:
    """Turning the pre-import lever off takes the file away, not just stops writing it."""
    assert write_local_settings(tmp_path, {}) is not None
    assert write_local_settings(tmp_path, {"SHIPPING_AIRFLOW_TUNING": "settings"}) is None
    assert not (tmp_path / "config" / "airflow_local_settings.py").exists()


@pytest.mark.parametrize(("argv1", "imported"), [("scheduler", True), ("api-server", False)])
def test_the_local_settings_preimport_only_in_the_scheduler(
    tmp_path: Path, argv1: str, imported: bool
) -> None:
    """The scheduler (whose forks run the tasks) imports the task's modules; others do not."""
    path = write_local_settings(tmp_path, {})
    assert path is not None
    probe = (
        "import runpy, sys; sys.argv = ['airflow', sys.argv[1]]; "
        f"runpy.run_path({str(path)!r}); print('shipping.pipeline' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, argv1], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == str(imported)


def test_every_preimport_exists() -> None:
    """Each pre-imported module is installed (a typo would only log a warning at start)."""
    import importlib.util

    for name in airflow_tuning.PREIMPORTS:
        assert importlib.util.find_spec(name) is not None, name
