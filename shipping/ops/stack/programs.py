"""What the stack runs: each service as a supervisord program, and the stack's own Redis.

The embedded PostgreSQL of :mod:`shipping.ops.localpg` (unless ``SHIPPING_POSTGRES_URL``
names a server), the warehouse service, Airflow's api-server, scheduler, dag-processor and
triggerer, and in Celery mode a Redis broker (unless ``SHIPPING_REDIS_URL``) and the workers.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from shipping.ops import localpg
from shipping.ops.executor import ExecutorSettings, RedisServer, choose_redis_server
from shipping.ops.settings import SettingsError
from shipping.ops.stack.common import (
    AIRFLOW_COMPONENTS,
    HOST,
    WORKER_STOP_WAIT_S,
    StackError,
    wait_until,
)
from shipping.ops.stack.supervisord import Program, supervisord_config
from shipping.ops.state import write_private

if TYPE_CHECKING:
    from shipping.ops.stack.core import Stack


def write_supervisord_config(
    stack: Stack, pg: localpg.ServerCommand | None, executor: ExecutorSettings
) -> None:
    """supervisord's configuration for ``stack``, with these services (0600)."""
    config = supervisord_config(stack.dir, stack.logs, programs(stack, pg, executor))
    write_private(stack.supervisor.config, config)


def start_postgres(stack: Stack) -> None:
    """Start the embedded PostgreSQL and wait until it accepts connections."""
    stack.supervisor.start("postgres")
    pgdata = stack.dir / "postgres"
    if not wait_until(lambda: localpg.is_ready(pgdata), 60):
        raise StackError(f"PostgreSQL is not ready; see {stack.logs / 'postgres.log'}")


def programs(
    stack: Stack, pg: localpg.ServerCommand | None, executor: ExecutorSettings
) -> list[Program]:
    """Every service of ``stack`` as a supervisord program, in start order."""
    run = stack.supervisor.run_dir
    airflow = str(Path(sys.executable).parent / "airflow")
    programs = []
    if pg is not None:
        programs.append(Program("postgres", pg.argv, user=pg.user, stop_signal="INT", start_s=1))
    if executor.celery and executor.redis_url is None:
        programs.append(Program("redis", redis_argv(stack), start_s=1))
    programs.append(
        Program(
            "warehouse",
            [
                sys.executable,
                "-m",
                "warehouse_mock",
                "--host",
                HOST,
                "--port",
                str(stack.ports.warehouse),
            ],
            env_file=run / "warehouse.env.json",
        )
    )
    for component in AIRFLOW_COMPONENTS:
        argv = [airflow, component]
        if component in ("scheduler", "triggerer"):
            argv.append("--skip-serve-logs")  # its log server binds every interface
        programs.append(Program(component, argv, env_file=run / "airflow.env.json"))
    for name in executor.worker_names():
        argv = [
            airflow,
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            str(executor.concurrency),
            # Its log server binds every interface; on one machine the UI reads the
            # task logs from the shared folder (see Ports).
            "--skip-serve-logs",
        ]
        programs.append(
            Program(
                name,
                argv,
                env_file=run / f"{name}.env.json",
                start_s=5,
                stop_as_group=False,
                stop_wait_s=WORKER_STOP_WAIT_S,
            )
        )
    return programs


def redis_argv(stack: Stack) -> list[str]:
    """The stack's own Redis: loopback, a password, every write on disk before it is
    answered (a broker restarted mid-order loses no queued task)."""
    data = stack.dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    secrets_file = stack.dir / "redis.secret"
    if not secrets_file.exists():
        write_private(secrets_file, secrets.token_urlsafe(24))
    # The password goes in a config file, not on the command line (ps shows it).
    config = data / "redis.conf"
    write_private(config, f"requirepass {secrets_file.read_text().strip()}\n")
    return [
        redis_server(stack).binary,
        str(config),
        "--bind",
        HOST,
        "--port",
        str(stack.ports.redis),
        "--dir",
        str(data),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--protected-mode",
        "yes",
    ]


def redis_server(stack: Stack) -> RedisServer:
    """The redis-server of the stack's own broker: the machine's when it is recent enough,
    else the bundled one (chosen once per :class:`Stack`)."""
    if stack.redis_server is None:
        try:
            stack.redis_server = choose_redis_server(stack.env)
        except SettingsError as exc:
            raise StackError(str(exc)) from None
    return stack.redis_server


def own_redis_url(stack: Stack) -> str:
    """The URL of the stack's own Redis, with its password."""
    password = (stack.dir / "redis.secret").read_text().strip()
    return f"redis://:{password}@{HOST}:{stack.ports.redis}"
