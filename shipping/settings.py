"""Names shared by every part of the system, and the settings read from the environment.

The constants here are contracts: the DAG, the local stack, ``docker-compose.yaml`` and
the tests all use these ids, and a test checks that compose agrees with them.

:class:`ClientSettings` is what the command-line tool needs to reach Airflow's REST API;
it is built once per process, validated when built, and names the variable at fault.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

DAG_ID: Final = "order_intake"
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
    "WAREHOUSE_API_TOKEN": "bearer token(s) of warehouse clients (comma-separated)",
    "WAREHOUSE_ADMIN_TOKEN": "bearer token of the warehouse fault-injection API",
    "WAREHOUSE_DATABASE_URL": "the warehouse service's own database",
    "WAREHOUSE_FAULTS": "faults the warehouse starts with (JSON)",
    "SHIPPING_AIRFLOW_URL": "Airflow API base URL used by the shipping command",
    "SHIPPING_LEDGER_URL": "ledger database URL used by `shipping status` (default: the stack's)",
    "SHIPPING_STACK_DIR": "folder of the local stack's state and logs (default .stack/)",
    "SHIPPING_AIRFLOW_PORT": "port of the local Airflow API and UI (default 8080)",
    "SHIPPING_WAREHOUSE_PORT": "port of the local warehouse (default 8081)",
    "SHIPPING_DATABASE_PREFIX": "prefix of the stack's database names on a shared server",
    "SHIPPING_DAGS_FOLDER": "DAG folder of the local stack (default dags/; the benchmark's own)",
    "SHIPPING_AIRFLOW_TUNING": "the stack's Airflow tuning levers: off, all, or preimport,settings",
    "SHIPPING_BENCH_POSTGRES_URL": "PostgreSQL server for `make bench` (default: its own)",
}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
    return value


@dataclass(frozen=True)
class ClientSettings:
    """How the ``shipping`` command reaches Airflow's REST API."""

    airflow_url: str
    username: str
    password: str | None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, fallback_password: str | None = None
    ) -> ClientSettings:
        """Build from ``SHIPPING_AIRFLOW_URL`` and ``AIRFLOW_ADMIN_PASSWORD``.

        Args:
            env: The environment (``os.environ`` when omitted).
            fallback_password: Used when ``AIRFLOW_ADMIN_PASSWORD`` is unset (the local
                stack's generated password).

        Raises:
            SettingsError: Naming the variable that is malformed.
        """
        env = os.environ if env is None else env
        password = env.get("AIRFLOW_ADMIN_PASSWORD") or fallback_password
        return cls(
            airflow_url=_url(env, "SHIPPING_AIRFLOW_URL", DEFAULT_AIRFLOW_URL),
            username=AIRFLOW_ADMIN_USER,
            password=password,
        )
