"""The local stack: PostgreSQL, the warehouse and Airflow, supervised in the background.

``python -m shipping.ops.stack up|down|status`` (``make up``, ``make down``, ``make status``).

Every service is a program of one supervisord (:mod:`shipping.ops.supervision`), which
restarts it within seconds when it dies, without touching the others: the embedded
PostgreSQL of :mod:`shipping.ops.localpg` (unless ``SHIPPING_POSTGRES_URL`` names a server),
the warehouse service, and Airflow's api-server, scheduler, dag-processor and triggerer
with the LocalExecutor. This module decides what runs and how it is configured: the state
file and credentials, supervisord's configuration, Airflow's settings (fast recovery of
killed tasks, every listener on 127.0.0.1), the bootstrap (migrations, the pool, making
``order_intake`` visible and unpaused) and the health waits.

``up`` starts what is not running (everything on a fresh start, only the missing services
on a half-running stack) and returns when everything is healthy; ``down`` stops
everything and leaves no process behind; ``status`` shows each service's state, uptime
and restarts. State and logs live in one folder, ``.stack/`` at the project root
(``SHIPPING_STACK_DIR`` to move it).

Credentials come from ``AIRFLOW_ADMIN_PASSWORD``, ``WAREHOUSE_API_TOKEN`` and
``WAREHOUSE_ADMIN_TOKEN`` when set; otherwise they are generated once, kept in the state
folder (mode 0600) and printed. ``WAREHOUSE_API_TOKEN`` is the one token the pipeline and
the ``shipping`` command send (a list is refused); ``WAREHOUSE_API_TOKENS``, when set,
is what the warehouse accepts instead (``NEW,OLD`` while rotating), kept likewise.

Changed warehouse tokens are honoured by ``up`` on a running stack too: the warehouse
restarts when the tokens it accepts (or its admin token) change, Airflow's components
(and workers) when the token the pipeline sends changes; nothing else restarts. On a
stopped stack the next ``up`` starts with them. A variable left unset keeps the value
the stack last ran with.
"""

from shipping.ops.stack.command import main
from shipping.ops.stack.common import (
    AIRFLOW_COMPONENTS,
    BOOTSTRAP_POOLS,
    HOST,
    WORKER_STOP_WAIT_S,
    StackError,
)
from shipping.ops.stack.core import Stack, running_stack
from shipping.ops.stack.credentials import WarehouseTokens, generated_notice, password_problem
from shipping.ops.stack.environment import RECOVERY_SETTINGS, celery_settings, worker_env
from shipping.ops.stack.ports import Ports
from shipping.ops.stack.supervisord import Program, supervisord_config

__all__ = [
    "AIRFLOW_COMPONENTS",
    "BOOTSTRAP_POOLS",
    "HOST",
    "RECOVERY_SETTINGS",
    "WORKER_STOP_WAIT_S",
    "Ports",
    "Program",
    "Stack",
    "StackError",
    "WarehouseTokens",
    "celery_settings",
    "generated_notice",
    "main",
    "password_problem",
    "running_stack",
    "supervisord_config",
    "worker_env",
]
