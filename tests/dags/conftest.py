"""Airflow for the DAG tests: a throw-away AIRFLOW_HOME and a migrated metadata database.

The environment is set when this file is imported, before any test imports Airflow
(Airflow reads its configuration once, at import). ``dag.test()`` runs tasks in this
process one after another, so SQLite is enough here; the scheduler-driven tests in
``tests/e2e`` run on PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
_HOME = Path(tempfile.mkdtemp(prefix="shipping-airflow-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }
)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """A migrated Airflow metadata database (once per session)."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run(
        [str(airflow), "db", "migrate"], check=True, capture_output=True, env=dict(os.environ)
    )
    yield _HOME
    shutil.rmtree(_HOME, ignore_errors=True)


def dag_bag() -> Any:
    """The DAG folder parsed as Airflow's processes parse it (a bundle on ``sys.path``)."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(REPO / "dags"), bundle_path=REPO / "dags")
