"""Names shared by every part of the system: contracts, not settings.

The DAGs, the local stack, ``docker-compose.yaml`` and the tests all use these ids, and a
test checks that compose agrees with them. Settings read from the environment live with
the code that reads them (:mod:`shipping.ops.settings` for the ``shipping`` command).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

DAG_ID: Final = "order_intake"
#: order_intake's task ids (the REST API's clear and HITL calls name them).
INTAKE_TASK: Final = "register_order"
SHIP_TASK: Final = "ship_item"
DECIDE_TASK: Final = "decide_line"  # a line's required action when it failed for good
REDUCER_TASK: Final = "finalize_order"
WAREHOUSE_POOL: Final = "warehouse"
WAREHOUSE_POOL_SLOTS: Final = 16
SHIP_ITEM_MAX_ACTIVE_PER_RUN: Final = 8
WAREHOUSE_CONN_ID: Final = "warehouse_api"
LEDGER_CONN_ID: Final = "shipping_ledger"

AIRFLOW_PORT: Final = 8080
WAREHOUSE_PORT: Final = 8081
DEFAULT_AIRFLOW_URL: Final = f"http://127.0.0.1:{AIRFLOW_PORT}"
DEFAULT_WAREHOUSE_URL: Final = f"http://127.0.0.1:{WAREHOUSE_PORT}"
AIRFLOW_ADMIN_USER: Final = "admin"

# Databases created on the PostgreSQL server (SHIPPING_POSTGRES_URL or the embedded one).
AIRFLOW_DATABASE: Final = "airflow"
LEDGER_DATABASE: Final = "shipping_ledger"
WAREHOUSE_DATABASE: Final = "warehouse"

#: Every environment variable the system reads, with what it is for (``.env.example``
#: and the compose test are checked against this list).
ENVIRONMENT_VARIABLES: Final[Mapping[str, str]] = {
    "SHIPPING_POSTGRES_URL": "PostgreSQL server for Airflow, the ledger and the warehouse",
    "AIRFLOW_ADMIN_PASSWORD": "password of the Airflow user 'admin'",
    "WAREHOUSE_API_TOKEN": "the one bearer token the pipeline and the shipping command send",
    "WAREHOUSE_API_TOKENS": (
        "tokens the warehouse accepts for the client 'default', comma-separated (NEW,OLD"
        " while rotating; default: WAREHOUSE_API_TOKEN)"
    ),
    "WAREHOUSE_CLIENTS": "further warehouse clients, JSON {client id: [tokens]}",
    "WAREHOUSE_ADMIN_TOKEN": "bearer token of the warehouse fault-injection API",
    "WAREHOUSE_DATABASE_URL": "the warehouse service's own database",
    "WAREHOUSE_FAULTS": "faults the warehouse starts with (JSON)",
    "SHIPPING_AIRFLOW_URL": "Airflow API base URL used by the shipping command",
    "SHIPPING_LEDGER_URL": (
        "ledger database URL: where the stack keeps the ledger and the shipping command"
        " reads it (default: a database on the stack's PostgreSQL)"
    ),
    "SHIPPING_WAREHOUSE_URL": "warehouse URL used by the shipping command (default: the stack's)",
    "SHIPPING_OPERATOR": "who amends a line with `shipping fix` / `cancel` (default: the login)",
    "SHIPPING_STACK_DIR": "folder of the local stack's state and logs (default .stack/)",
    "SHIPPING_AIRFLOW_PORT": "port of the local Airflow API and UI (default 8080)",
    "SHIPPING_WAREHOUSE_PORT": "port of the local warehouse (default 8081)",
    "SHIPPING_DATABASE_PREFIX": "prefix of the stack's database names on a shared server",
    "SHIPPING_DAGS_FOLDER": "DAG folder of the local stack (default dags/; the benchmark's own)",
    "SHIPPING_AIRFLOW_TUNING": "the stack's Airflow tuning levers: off, all, or preimport,settings",
    "SHIPPING_BENCH_POSTGRES_URL": "PostgreSQL server for `make bench` (default: its own)",
    "SHIPPING_EXECUTOR": "the local stack's executor: local (default) or celery",
    "SHIPPING_CELERY_WORKERS": "Celery mode: how many workers the stack runs (default 2)",
    "SHIPPING_CELERY_CONCURRENCY": "Celery mode: task slots per worker (default 4)",
    "SHIPPING_REDIS_URL": "Celery mode: an existing Redis as broker (default: the stack's own)",
    "SHIPPING_WORKER_NAME": "a Celery worker's name, recorded with the host in each task it runs",
}
