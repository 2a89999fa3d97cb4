"""How the local stack tunes Airflow for cheap task instances on a small machine.

Two levers, both measured with ``make bench`` (see ``docs/benchmark.md``):

* :func:`write_local_settings` writes ``$AIRFLOW_HOME/config/airflow_local_settings.py``,
  which every Airflow process imports at start. In the scheduler it imports, once, what
  every ``order_intake`` task needs (the Task SDK's runner, the DAG file's imports,
  SQLAlchemy with psycopg2, requests, the project's modules). The LocalExecutor's workers
  are forked from the scheduler and fork each task process in turn, so every task
  inherits those modules instead of importing (and, without bytecode, compiling) them.
  The other components skip it: they do not run tasks and would only grow.
* :func:`airflow_env` returns Airflow settings fitted to the machine: ``parallelism``
  (LocalExecutor worker processes, kept by the scheduler for good once spawned) at 8
  instead of 32, which bounds the idle stack's memory after a load without
  slowing a CPU-bound fan-out. With the CeleryExecutor the workers' slots bound what runs
  and the scheduler keeps no process per slot, so the cap is :data:`CELERY_PARALLELISM`.

``SHIPPING_AIRFLOW_TUNING`` turns them off for measurements: ``off`` (neither), or a
comma-separated subset of ``preimport,settings`` (default: both).
``SHIPPING_DAGS_FOLDER`` points the stack at another DAG folder (the benchmark's).

Compose takes the same parallelism from :mod:`shipping.ops.airflow_settings` (``docker/airflow.env``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

LEVERS: Final = ("preimport", "settings")
#: LocalExecutor worker processes: 4 per core of the 2-core machines the stack runs on. More
#: cannot run at once (tasks are CPU-bound) and each one stays alive, holding memory.
PARALLELISM: Final = 8

#: With the CeleryExecutor, parallelism only caps the task instances queued or running
#: across all workers (what runs at once is bounded by the workers' slots, and the
#: scheduler keeps no process per slot): room for 16 workers of 4 slots.
CELERY_PARALLELISM: Final = 64

#: What a task process of ``order_intake`` imports beyond the scheduler's own modules.
PREIMPORTS: Final = (
    "airflow.sdk",
    "airflow.sdk.execution_time.task_runner",
    "airflow.dag_processing.dagbag",  # the task re-parses its DAG file with it
    "airflow.sdk.bases.decorator",
    "airflow.sdk.definitions.retry_policy",
    "airflow.providers.standard.decorators.python",
    "airflow.providers.standard.operators.python",
    "sqlalchemy",
    "sqlalchemy.dialects.postgresql.psycopg2",
    "psycopg2",
    "requests",
    "tenacity",
    "jsonschema",
    "shipping.order",
    "shipping.contract",
    "shipping.connections",
    "shipping.ledger",
    "shipping.pipeline",
    "shipping.warehouse",
)

LOCAL_SETTINGS_TEMPLATE: Final = '''\
"""Written by shipping.ops.airflow_tuning (the local stack rewrites it at every start).

In the scheduler only: import once what every task process needs, so that the
LocalExecutor's forked task processes inherit it instead of importing it each time.
"""

import importlib
import logging
import sys

PREIMPORTS = {modules!r}


def _preimport() -> None:
    if sys.argv[1:2] != ["scheduler"]:
        return
    for name in PREIMPORTS:
        try:
            importlib.import_module(name)
        except Exception:  # a missing module must never stop the scheduler
            logging.getLogger(__name__).warning("could not pre-import %s", name, exc_info=True)


_preimport()
'''


def enabled_levers(env: Mapping[str, str]) -> frozenset[str]:
    """The levers ``SHIPPING_AIRFLOW_TUNING`` leaves on (all unless it says otherwise).

    Raises:
        ValueError: The variable names a lever that does not exist.
    """
    raw = env.get("SHIPPING_AIRFLOW_TUNING", "").strip().lower()
    if raw in ("", "on", "all"):
        return frozenset(LEVERS)
    if raw == "off":
        return frozenset()
    levers = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = levers - set(LEVERS)
    if unknown:
        raise ValueError(
            f"SHIPPING_AIRFLOW_TUNING: unknown lever(s) {sorted(unknown)}; "
            f"use off, all or a subset of {','.join(LEVERS)}"
        )
    return levers


def airflow_env(env: Mapping[str, str], *, celery: bool = False) -> dict[str, str]:
    """Airflow settings (``AIRFLOW__...``) to add to the stack's environment.

    Args:
        env: The stack's settings (``SHIPPING_AIRFLOW_TUNING``, ``SHIPPING_DAGS_FOLDER``).
        celery: The stack runs the CeleryExecutor (another parallelism, see
            :data:`CELERY_PARALLELISM`).
    """
    extra: dict[str, str] = {}
    if "settings" in enabled_levers(env):
        extra["AIRFLOW__CORE__PARALLELISM"] = str(CELERY_PARALLELISM if celery else PARALLELISM)
    if env.get("SHIPPING_DAGS_FOLDER"):
        extra["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(env["SHIPPING_DAGS_FOLDER"]).resolve())
    return extra


def write_local_settings(airflow_home: Path, env: Mapping[str, str]) -> Path | None:
    """Write (or, with the lever off, remove) ``config/airflow_local_settings.py``.

    Returns:
        The file written, or None when the pre-import lever is off.
    """
    path = airflow_home / "config" / "airflow_local_settings.py"
    if "preimport" not in enabled_levers(env):
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LOCAL_SETTINGS_TEMPLATE.format(modules=PREIMPORTS))
    return path
