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

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import requests
from sqlalchemy.engine import make_url

from shipping.connections import (
    TOKEN_VAR,
    TOKENS_VAR,
    ledger_connection,
    single_token,
    warehouse_connection,
)
from shipping.contract import (
    AIRFLOW_ADMIN_USER,
    AIRFLOW_DATABASE,
    AIRFLOW_PORT,
    DAG_ID,
    LEDGER_CONN_ID,
    LEDGER_DATABASE,
    WAREHOUSE_CONN_ID,
    WAREHOUSE_DATABASE,
    WAREHOUSE_POOL,
    WAREHOUSE_POOL_SLOTS,
    WAREHOUSE_PORT,
)
from shipping.errors import ConnectionConfigError
from shipping.ops import airflow_tuning, localpg
from shipping.ops.executor import WORKER_NAME_VAR, ExecutorSettings, redis_server_binary
from shipping.ops.settings import SettingsError
from shipping.ops.state import (
    PROJECT_ROOT,
    StackState,
    load_state,
    private_dir,
    stack_dir,
    write_private,
)
from shipping.ops.supervision import UP_STATES, ServiceInfo, Supervisor, SupervisorError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
#: The Airflow services ``up`` starts, in start order.
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Pools the stack creates before the first run (a task in a missing pool never runs).
BOOTSTRAP_POOLS: Mapping[str, int] = {WAREHOUSE_POOL: WAREHOUSE_POOL_SLOTS}
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0
#: Airflow's scheduler health check server (its own default port, moved with the stack).
SCHEDULER_HEALTH_PORT = 8974
#: The stack's own Redis in Celery mode (beside the health check; moves with the stack).
REDIS_PORT = 8975
#: How long a worker stopped on purpose may take to finish the lines it runs (Celery's warm
#: shutdown) before supervisord kills it.
WORKER_STOP_WAIT_S = 300

#: Airflow settings for fast recovery (read in the 3.3.2 source). A task's supervisor
#: heartbeats every 5 s (``[workers] min_heartbeat_interval``); after 30 s without one the
#: scheduler (checking every 5 s) fails the instance and Airflow retries it, instead of
#: after the default 300 s. Task instances queued or running under a scheduler that died
#: are reset for a new try after at most 30 s more (``orphaned_tasks_check_interval``,
#: default 300 s; a scheduler counts as dead 30 s after its last heartbeat,
#: ``scheduler_health_check_threshold``).
RECOVERY_SETTINGS: Mapping[str, str] = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "30",
}


#: Where each generated credential is kept in state.json.
_STATE_KEY: Final = {
    "AIRFLOW_ADMIN_PASSWORD": "admin_password",
    "WAREHOUSE_API_TOKEN": "warehouse_api_token",
    "WAREHOUSE_ADMIN_TOKEN": "warehouse_admin_token",
}
#: The shortest admin password accepted from the environment (a generated one has 24).
MIN_PASSWORD_LENGTH: Final = 12
_COMMON_PASSWORDS: Final = frozenset(
    {"password", "password123", "admin", "administrator", "airflow", "airflow123", "qwerty"}
)
_PLACEHOLDER_MARKERS: Final = ("change-me", "changeme", "change_me", "changethis", "replace-me")


def generated_notice(var: str, value: str, state_file: Path) -> str:
    """What ``make up`` says of a credential it generated: where it is, never the value
    (stdout lands in CI logs)."""
    return (
        f"Generated {var} ({len(value)} characters): kept in {state_file} "
        f"(key {_STATE_KEY[var]}, mode 0600)"
    )


def password_problem(password: str | None) -> str | None:
    """Why an admin password given in the environment is too weak, or None."""
    if password is None or password == "":
        return None  # generated
    lowered = password.lower()
    if lowered in _COMMON_PASSWORDS or any(m in lowered for m in _PLACEHOLDER_MARKERS):
        return "is a well-known or placeholder value; unset it to have one generated"
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"is shorter than {MIN_PASSWORD_LENGTH} characters; use a random one, e.g. "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(18))'`, or unset it"
        )
    return None


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says why and where to look."""


ADMIN_TOKEN_VAR = "WAREHOUSE_ADMIN_TOKEN"
#: The file (in the state folder, 0600) keeping ``WAREHOUSE_API_TOKENS`` once set.
ACCEPTED_TOKENS_FILE = "warehouse_api_tokens"
WAREHOUSE_CONN_VAR = f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}"


@dataclass(frozen=True)
class WarehouseTokens:
    """The token the pipeline sends, the tokens the warehouse accepts, the admin token.

    Attributes:
        client: ``WAREHOUSE_API_TOKEN``: one token, sent by the pipeline and the CLI.
        accepted: ``WAREHOUSE_API_TOKENS`` (comma-separated), or None: the warehouse
            then accepts ``client`` alone.
        admin: ``WAREHOUSE_ADMIN_TOKEN``.
    """

    client: str
    accepted: str | None
    admin: str

    @property
    def warehouse_accepts(self) -> str:
        """What the warehouse accepts, as it reads it."""
        return self.accepted or self.client

    def warehouse_env(self) -> dict[str, str | None]:
        """The warehouse service's token variables (None: removed)."""
        return {TOKEN_VAR: self.client, TOKENS_VAR: self.accepted, ADMIN_TOKEN_VAR: self.admin}

    def pipeline_env(self, warehouse_url: str) -> dict[str, str | None]:
        """An Airflow component's: the connection with the one token; never the list."""
        connection = json.dumps(warehouse_connection(warehouse_url, self.client))
        return {WAREHOUSE_CONN_VAR: connection, TOKEN_VAR: self.client, TOKENS_VAR: None}


@dataclass(frozen=True)
class Ports:
    """The TCP ports the stack listens on (all on 127.0.0.1).

    Airflow's log servers (8793, 8794) are not among them: they bind every interface
    (hard-coded in 3.3.2), and on one machine the UI reads task logs from the shared log
    folder, so the stack starts the scheduler and triggerer with ``--skip-serve-logs``.
    """

    airflow: int = AIRFLOW_PORT
    warehouse: int = WAREHOUSE_PORT
    # Move with the Airflow port, so that two stacks do not collide.
    scheduler_health: int = SCHEDULER_HEALTH_PORT
    redis: int = REDIS_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        """Ports from ``SHIPPING_AIRFLOW_PORT`` / ``SHIPPING_WAREHOUSE_PORT`` (tests move them)."""
        airflow = _port(env, "SHIPPING_AIRFLOW_PORT", AIRFLOW_PORT)
        warehouse = _port(env, "SHIPPING_WAREHOUSE_PORT", WAREHOUSE_PORT)
        health = SCHEDULER_HEALTH_PORT + airflow - AIRFLOW_PORT
        redis = REDIS_PORT + airflow - AIRFLOW_PORT
        if not 1024 <= health <= redis <= 65535:
            raise StackError(
                f"SHIPPING_AIRFLOW_PORT={airflow} puts the scheduler's health check and "
                f"Redis on {health} and {redis}, outside 1024-65535; choose a port below "
                f"{65535 - (REDIS_PORT - AIRFLOW_PORT)}"
            )
        return cls(airflow, warehouse, health, redis)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise StackError(f"{name} must be a port number 1024-65535, got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class Program:
    """One service as a supervisord program."""

    name: str
    argv: list[str]
    env_file: Path | None = None
    #: The system user to run as (the embedded PostgreSQL refuses root).
    user: str | None = None
    #: PostgreSQL's fast shutdown is SIGINT; everything else stops on SIGTERM.
    stop_signal: str = "TERM"
    #: Seconds a start must stay up to count as started.
    start_s: int = 3
    #: Send the stop signal to the whole process group. A Celery worker gets it alone: its
    #: warm shutdown lets the tasks it runs finish (their processes must not be signalled).
    stop_as_group: bool = True
    #: Seconds after the stop signal before the process group is killed.
    stop_wait_s: int = 20


def _ini(value: str) -> str:
    # supervisord expands %(name)s in values: a literal % is %%.
    return value.replace("%", "%%")


def supervisord_config(directory: Path, logs: Path, programs: Sequence[Program]) -> str:
    """supervisord's configuration for the stack in ``directory``.

    The control socket is a Unix socket in ``directory`` (mode 0700, no TCP listener).
    Every program runs through ``python -m shipping.ops.supervision exec`` (start counting,
    leftovers of a crashed predecessor swept, environment file, exec), restarts whenever
    it dies, and is stopped together with its children (its process group). Programs do
    not start with supervisord: ``up`` starts them in order, after the bootstrap.
    """
    supervisor = Supervisor(directory)
    lines = [
        "; Written by `python -m shipping.ops.stack up`; changes are overwritten.",
        "[supervisord]",
        f"logfile={_ini(str(logs / 'supervisord.log'))}",
        "logfile_maxbytes=10MB",
        "logfile_backups=2",
        f"pidfile={_ini(str(supervisor.pidfile))}",
        f"directory={_ini(str(directory))}",
        f"childlogdir={_ini(str(logs))}",
        "identifier=shipping-stack",
        # Logs (customer addresses), the Redis append-only file and every file a service
        # writes are its owner's alone.
        "umask=077",
        "",
        "[unix_http_server]",
        f"file={_ini(str(supervisor.socket))}",
        "chmod=0700",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_ini(str(supervisor.socket))}",
    ]
    for program in programs:
        wrapper = [
            sys.executable,
            "-m",
            "shipping.ops.supervision",
            "exec",
            "--run-dir",
            str(supervisor.run_dir),
        ]
        if program.env_file is not None:
            wrapper += ["--env-file", str(program.env_file)]
        if program.user is not None:
            wrapper += ["--user", program.user]
        command = shlex.join([*wrapper, program.name, "--", *program.argv])
        lines += [
            "",
            f"[program:{program.name}]",
            f"command={_ini(command)}",
            f"directory={_ini(str(directory))}",
            "autostart=false",
            "autorestart=true",
            f"startsecs={program.start_s}",
            "startretries=5",
            f"stopsignal={program.stop_signal}",
            f"stopwaitsecs={program.stop_wait_s}",
            f"stopasgroup={str(program.stop_as_group).lower()}",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={_ini(str(logs / f'{program.name}.log'))}",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
        ]
    return "\n".join(lines) + "\n"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


class Stack:
    """Start, stop and inspect the local stack kept in one state folder."""

    def __init__(
        self,
        directory: Path | None = None,
        env: Mapping[str, str] | None = None,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.env = dict(os.environ if env is None else env)
        self.dir = directory or stack_dir(self.env)
        self.logs = self.dir / "logs"
        self.ports = Ports.from_env(self.env)
        try:
            self.executor = ExecutorSettings.from_env(self.env)
        except SettingsError as exc:
            raise StackError(str(exc)) from None
        # Several stacks (a developer's and the tests') can share one PostgreSQL server.
        self.db_prefix = self.env.get("SHIPPING_DATABASE_PREFIX", "")
        self.echo = echo
        self.supervisor = Supervisor(self.dir)

    # ----------------------------------------------------------------- queries
    def state(self) -> StackState | None:
        """The recorded state, or None if the stack was never started here."""
        return load_state(self.dir)

    def services(self) -> list[ServiceInfo]:
        """Each service as supervisord sees it; empty when supervisord is not running."""
        return self.supervisor.services()

    def running(self) -> dict[str, bool]:
        """Each service and whether it runs; empty when the stack is not running."""
        return {s.name: s.running for s in self.services()}

    # ---------------------------------------------------------------------- up
    def up(self) -> StackState:
        """Start what is not running and return when everything is healthy.

        On a stack that runs fully this only says so; on a half-running one it starts
        just the missing services. If supervisord itself died, what it left running is
        killed first and the stack starts afresh.

        Raises:
            StackError: Something did not start (a fresh start is stopped again).
        """
        try:
            previous = load_state(self.dir) if (self.dir / "state.json").is_file() else None
            # An embedded PostgreSQL run as its own user (we are root) passes through.
            passes = previous is not None and previous.embedded_postgres and os.geteuid() == 0
            private_dir(self.dir, 0o710 if passes else 0o700)
        except PermissionError as exc:
            raise StackError(str(exc)) from None
        # Whatever this process and its children create (Airflow's files, the databases'
        # bootstrap) is the owner's alone, like what supervisord's services create.
        os.umask(0o077)
        state = self.state()
        self._check_client_token(state)
        if problem := password_problem(self.env.get("AIRFLOW_ADMIN_PASSWORD")):
            raise StackError(f"AIRFLOW_ADMIN_PASSWORD {problem}")
        if state is not None and self.supervisor.alive():
            return self._up_missing(state)
        if swept := self.supervisor.sweep_dead():
            self.echo(f"supervisord had died; stopped {len(swept)} process(es) it left behind.")
        self._stop_legacy(state)
        for port in self._listening_ports(self.executor):
            if _port_open(port):
                raise StackError(f"port {port} on {HOST} is already in use by another program")
        started = time.monotonic()
        private_dir(self.logs)
        try:
            state = self._up_fresh()
        except BaseException:
            self.echo(f"Start failed; logs are in {self.logs}")
            self.down(quiet=True)
            raise
        self.echo(f"The stack is up ({time.monotonic() - started:.0f} s).\n{self.describe(state)}")
        return state

    def _listening_ports(self, executor: ExecutorSettings) -> list[int]:
        ports = [self.ports.airflow, self.ports.warehouse, self.ports.scheduler_health]
        if executor.celery and executor.redis_url is None:
            ports.append(self.ports.redis)
        return ports

    def _up_fresh(self) -> StackState:
        embedded = not self.env.get("SHIPPING_POSTGRES_URL")
        pg = localpg.prepare(self.dir / "postgres") if embedded else None
        self._close_folder(pg)
        self._write_supervisord_config(pg, self.executor)
        self.supervisor.start_daemon(self._base_env())
        if pg is not None:
            self.echo("Starting the project's own PostgreSQL ...")
            self._start_postgres()
        state = self._prepare(pg.url if pg is not None else None)
        self._save_tokens(state, self._tokens(state))
        if self.executor.celery and self.executor.redis_url is None:
            self.echo("Starting the Redis broker ...")
            self.supervisor.start("redis")
        env = self._airflow_env(state)
        self._write_env_files(state, self.executor)
        self.echo("Migrating Airflow's database ...")
        self._run(["airflow", "db", "migrate"], env, "airflow-migrate")
        for pool, slots in BOOTSTRAP_POOLS.items():
            self._run(
                ["airflow", "pools", "set", pool, str(slots), "Calls to the warehouse API"],
                env,
                "airflow-pools",
            )
        self._run(["airflow", "dags", "reserialize"], env, "airflow-reserialize")
        self.echo("Starting the warehouse and Airflow ...")
        for name in ("warehouse", *AIRFLOW_COMPONENTS, *self.executor.worker_names()):
            self.supervisor.start(name)
        self._wait_healthy(state)
        self._unpause(state)
        state.pids = {s.name: s.pid for s in self.services()}
        self._save(state)
        return state

    def _up_missing(self, state: StackState) -> StackState:
        self._scale_workers(state)
        self._apply_tokens(state)
        missing = [s.name for s in self.services() if s.state not in UP_STATES]
        if not missing:
            self._wait_healthy(state)
            state.pids = {s.name: s.pid for s in self.services()}
            self._save(state)
            self.echo(f"The stack is already up: Airflow {state.airflow_url}")
            return state
        self.echo(f"Starting what is not running: {', '.join(missing)} ...")
        if "postgres" in missing:
            self._start_postgres()
            missing.remove("postgres")
        for name in missing:
            self.supervisor.start(name)
        self._wait_healthy(state)
        state.pids = {s.name: s.pid for s in self.services()}
        self._save(state)
        self.echo(f"The stack is up.\n{self.describe(state)}")
        return state

    def _close_folder(self, pg: localpg.ServerCommand | None) -> None:
        """The stack folder back to its owner's alone after the embedded server's set-up.

        The PostgreSQL wheel opens its data folder's parents to everyone (0755), since as
        root it runs the server as a user of its own. That user needs only to pass through
        the stack folder: 0710 with that user's group; nobody else can enter it.
        """
        if pg is None or pg.user is None or os.geteuid() != 0:
            private_dir(self.dir)
            return
        import pwd

        os.chown(self.dir, -1, pwd.getpwnam(pg.user).pw_gid)
        self.dir.chmod(0o710)

    def _check_client_token(self, previous: StackState | None) -> None:
        """Refuse, before anything starts, a ``WAREHOUSE_API_TOKEN`` that is a list."""
        if self.env.get(TOKEN_VAR):
            token, source = self.env[TOKEN_VAR], TOKEN_VAR
        elif previous is not None:
            token = previous.warehouse_api_token
            source = f"{TOKEN_VAR} as the stack last ran ({self.dir / 'state.json'})"
        else:
            return
        try:
            single_token(token, source=source)
        except ConnectionConfigError as exc:
            raise StackError(str(exc)) from None

    def _saved_accepted(self) -> str | None:
        """``WAREHOUSE_API_TOKENS`` as the stack last ran with it (None: never set)."""
        path = self.dir / ACCEPTED_TOKENS_FILE
        if not path.exists():
            return None
        return path.read_text().strip() or None

    def _tokens(self, state: StackState) -> WarehouseTokens:
        """The warehouse tokens: each variable set now, else what the stack ran with."""
        tokens = WarehouseTokens(
            client=self.env.get(TOKEN_VAR) or state.warehouse_api_token,
            accepted=self.env.get(TOKENS_VAR) or self._saved_accepted(),
            admin=self.env.get(ADMIN_TOKEN_VAR) or state.warehouse_admin_token,
        )
        accepted = [t.strip() for t in tokens.warehouse_accepts.split(",")]
        if tokens.client not in accepted:
            self.echo(
                f"warning: {TOKEN_VAR} is not among the {TOKENS_VAR} the warehouse accepts: "
                "the warehouse will refuse the pipeline"
            )
        return tokens

    def _save_tokens(self, state: StackState, tokens: WarehouseTokens) -> None:
        state.warehouse_api_token = tokens.client
        state.warehouse_admin_token = tokens.admin
        self._save(state)
        path = self.dir / ACCEPTED_TOKENS_FILE
        if tokens.accepted:
            write_private(path, tokens.accepted + "\n")
        else:
            path.unlink(missing_ok=True)

    def _apply_tokens(self, state: StackState) -> None:
        """Honour changed warehouse tokens on a running stack, restarting only what reads
        them: the warehouse for what it accepts, Airflow for what the pipeline sends."""
        old = WarehouseTokens(
            state.warehouse_api_token, self._saved_accepted(), state.warehouse_admin_token
        )
        new = self._tokens(state)
        if new == old:
            return
        self._save_tokens(state, new)
        run = self.supervisor.run_dir
        restart: list[str] = []
        self._patch_env_file(run / "warehouse.env.json", new.warehouse_env())
        if (new.warehouse_accepts, new.admin) != (old.warehouse_accepts, old.admin):
            restart.append("warehouse")
        pipeline = new.pipeline_env(state.warehouse_url)
        workers = [s.name for s in self.services() if s.name.startswith("worker-")]
        for name in ["airflow", *workers]:
            self._patch_env_file(run / f"{name}.env.json", pipeline)
        if new.client != old.client:
            restart += [*AIRFLOW_COMPONENTS, *workers]
        for name in restart:
            self.echo(f"Restarting {name} with the changed warehouse tokens ...")
            self.supervisor.stop(name)
            self.supervisor.start(name)

    @staticmethod
    def _patch_env_file(path: Path, values: Mapping[str, str | None]) -> None:
        """Set (None: remove) these variables in a service's environment file, keeping the
        rest as the stack was started."""
        current = json.loads(path.read_text()) if path.exists() else {}
        write_private(path, json.dumps(current | dict(values), indent=2))

    def _running_executor(self, state: StackState) -> ExecutorSettings:
        """The executor settings for a stack that runs: what the environment leaves unset
        keeps the value the stack was started with."""
        started = {
            "SHIPPING_EXECUTOR": state.executor,
            "SHIPPING_CELERY_WORKERS": str(state.celery_workers or ""),
            "SHIPPING_CELERY_CONCURRENCY": str(state.celery_concurrency or ""),
            "SHIPPING_REDIS_URL": "" if state.embedded_redis else state.broker_url,
        }
        merged = started | {k: v for k, v in self.env.items() if k in started and v}
        try:
            return ExecutorSettings.from_env(merged)
        except SettingsError as exc:
            raise StackError(str(exc)) from None

    def _scale_workers(self, state: StackState) -> None:
        """Add or gracefully stop Celery workers to match ``SHIPPING_CELERY_WORKERS``."""
        wanted = self._running_executor(state)
        if wanted.kind != state.executor:
            raise StackError(
                f"the stack runs with the {state.executor} executor; stop it (make down) "
                f"before starting it with the {wanted.kind} executor"
            )
        if wanted.concurrency != state.celery_concurrency and state.executor == "celery":
            raise StackError(
                f"the workers run with {state.celery_concurrency} slots each; stop the stack "
                "(make down) to change SHIPPING_CELERY_CONCURRENCY"
            )
        if not wanted.celery or wanted.workers == state.celery_workers:
            return
        pg = localpg.prepare(self.dir / "postgres") if state.embedded_postgres else None
        self._close_folder(pg)
        self._write_supervisord_config(pg, wanted)
        self._write_env_files(state, wanted)
        added, removed = self.supervisor.reload()
        for name in removed:
            self.echo(f"Stopping {name} (it finishes the lines it runs first) ...")
        self.supervisor.remove(removed)
        for name in added:
            self.echo(f"Adding {name} ...")
            self.supervisor.start(name)
        state.celery_workers = wanted.workers
        self._save(state)

    def _write_supervisord_config(
        self, pg: localpg.ServerCommand | None, executor: ExecutorSettings
    ) -> None:
        programs = self._programs(pg, executor)
        write_private(self.supervisor.config, supervisord_config(self.dir, self.logs, programs))

    def _start_postgres(self) -> None:
        self.supervisor.start("postgres")
        pgdata = self.dir / "postgres"
        if not _wait_until(lambda: localpg.is_ready(pgdata), 60):
            raise StackError(f"PostgreSQL is not ready; see {self.logs / 'postgres.log'}")

    def _programs(
        self, pg: localpg.ServerCommand | None, executor: ExecutorSettings
    ) -> list[Program]:
        run = self.supervisor.run_dir
        airflow = str(Path(sys.executable).parent / "airflow")
        programs = []
        if pg is not None:
            programs.append(
                Program("postgres", pg.argv, user=pg.user, stop_signal="INT", start_s=1)
            )
        if executor.celery and executor.redis_url is None:
            programs.append(Program("redis", self._redis_argv(), start_s=1))
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
                    str(self.ports.warehouse),
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

    def _redis_argv(self) -> list[str]:
        """The stack's own Redis: loopback, a password, every write on disk before it is
        answered (a broker restarted mid-order loses no queued task)."""
        data = self.dir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        secrets_file = self.dir / "redis.secret"
        if not secrets_file.exists():
            write_private(secrets_file, secrets.token_urlsafe(24))
        # The password goes in a config file, not on the command line (ps shows it).
        config = data / "redis.conf"
        write_private(config, f"requirepass {secrets_file.read_text().strip()}\n")
        return [
            redis_server_binary(self.env),
            str(config),
            "--bind",
            HOST,
            "--port",
            str(self.ports.redis),
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

    def _own_redis_url(self) -> str:
        password = (self.dir / "redis.secret").read_text().strip()
        return f"redis://:{password}@{HOST}:{self.ports.redis}"

    def _write_env_files(self, state: StackState, executor: ExecutorSettings) -> None:
        """Each service's environment beyond supervisord's own, for the exec wrapper (0600)."""
        base = self._base_env()
        run = self.supervisor.run_dir
        airflow = self._airflow_env(state)
        envs = {"warehouse": self._warehouse_env(state), "airflow": airflow}
        for name in executor.worker_names():
            envs[name] = worker_env(airflow) | {WORKER_NAME_VAR: name}
        for name, env in envs.items():
            extra: dict[str, str | None] = {k: v for k, v in env.items() if base.get(k) != v}
            # The token variables are always written: a value equal to this shell's must
            # still override what supervisord's own environment (an earlier shell) holds.
            extra |= {k: env.get(k) for k in (TOKEN_VAR, TOKENS_VAR)}
            # What supervisord's own environment holds but this service must not see.
            extra |= dict.fromkeys(base.keys() - env.keys())
            write_private(run / f"{name}.env.json", json.dumps(extra, indent=2))

    def describe(self, state: StackState) -> str:
        """Where the services are and where their credentials and logs are."""
        password = (
            "from AIRFLOW_ADMIN_PASSWORD"
            if self.env.get("AIRFLOW_ADMIN_PASSWORD")
            else f"in {self.dir / 'state.json'}"
        )
        return (
            f"  Airflow UI and API  {state.airflow_url}  (user {AIRFLOW_ADMIN_USER}, password {password})\n"
            f"  Warehouse API       {state.warehouse_url}  (docs at /docs)\n"
            f"  Logs                {self.logs}"
        )

    def _prepare(self, embedded_url: str | None) -> StackState:
        """Credentials, the three databases and the ledger's tables."""
        previous = self.state()
        generated: list[str] = []

        def credential(var: str, old: str | None) -> str:
            if self.env.get(var):
                return self.env[var]
            if old:
                return old
            generated.append(var)
            return secrets.token_urlsafe(18)

        admin_password = credential(
            "AIRFLOW_ADMIN_PASSWORD", previous.admin_password if previous else None
        )
        api_token = credential(TOKEN_VAR, previous.warehouse_api_token if previous else None)
        admin_token = credential(
            "WAREHOUSE_ADMIN_TOKEN", previous.warehouse_admin_token if previous else None
        )

        server = embedded_url or self.env["SHIPPING_POSTGRES_URL"]
        for database in (AIRFLOW_DATABASE, WAREHOUSE_DATABASE):
            localpg.ensure_database(server, self.db_prefix + database)
        if self.env.get("SHIPPING_LEDGER_URL"):
            # The ledger on a server of its own (workers on other machines reach it, and
            # only it): the database is created there if missing.
            ledger_url = make_url(self.env["SHIPPING_LEDGER_URL"])
            ledger_server = ledger_url.set(database="postgres")
            localpg.ensure_database(
                ledger_server.render_as_string(hide_password=False), str(ledger_url.database)
            )
        else:
            ledger_url = make_url(server).set(database=self.db_prefix + LEDGER_DATABASE)
            localpg.ensure_database(server, self.db_prefix + LEDGER_DATABASE)

        from shipping.ledger import Ledger

        ledger = Ledger.from_url(ledger_url.render_as_string(hide_password=False))
        ledger.create_schema()
        ledger.engine.dispose()

        for var in generated:
            value = {
                "AIRFLOW_ADMIN_PASSWORD": admin_password,
                "WAREHOUSE_API_TOKEN": api_token,
                "WAREHOUSE_ADMIN_TOKEN": admin_token,
            }[var]
            self.echo(generated_notice(var, value, self.dir / "state.json"))
        executor = self.executor
        return StackState(
            executor=executor.kind,
            celery_workers=executor.workers if executor.celery else 0,
            celery_concurrency=executor.concurrency if executor.celery else 0,
            broker_url=(executor.redis_url or self._own_redis_url()) if executor.celery else "",
            embedded_redis=executor.celery and executor.redis_url is None,
            airflow_url=f"http://{HOST}:{self.ports.airflow}",
            warehouse_url=f"http://{HOST}:{self.ports.warehouse}",
            admin_password=admin_password,
            warehouse_api_token=api_token,
            warehouse_admin_token=admin_token,
            ledger_url=ledger_url.render_as_string(hide_password=False),
            postgres_url=server,
            embedded_postgres=embedded_url is not None,
        )

    def _save(self, state: StackState) -> None:
        write_private(self.dir / "state.json", state.to_json())

    def _base_env(self) -> dict[str, str]:
        env = dict(self.env)
        # Airflow starts its components as subprocesses named `airflow`.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _warehouse_env(self, state: StackState) -> dict[str, str]:
        env = self._base_env()
        env["WAREHOUSE_DATABASE_URL"] = (
            make_url(state.postgres_url)
            .set(database=self.db_prefix + WAREHOUSE_DATABASE)
            .render_as_string(hide_password=False)
        )
        for name, value in self._tokens_of(state).warehouse_env().items():
            _set_or_drop(env, name, value)
        return env

    def _tokens_of(self, state: StackState) -> WarehouseTokens:
        """The tokens the stack runs with (as saved; see :meth:`_tokens` for new ones)."""
        return WarehouseTokens(
            state.warehouse_api_token, self._saved_accepted(), state.warehouse_admin_token
        )

    def _airflow_env(self, state: StackState) -> dict[str, str]:
        home = self.dir / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        passwords = home / "passwords.json"
        write_private(passwords, json.dumps({AIRFLOW_ADMIN_USER: state.admin_password}))
        secrets_file = home / "secrets.json"
        if not secrets_file.exists():
            write_private(secrets_file, json.dumps({"jwt": secrets.token_urlsafe(32)}))
        jwt_secret = json.loads(secrets_file.read_text())["jwt"]
        metadata = make_url(state.postgres_url).set(database=self.db_prefix + AIRFLOW_DATABASE)
        env = self._base_env()
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": (
                    "CeleryExecutor" if state.executor == "celery" else "LocalExecutor"
                ),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{AIRFLOW_ADMIN_USER}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{state.airflow_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata.render_as_string(
                    hide_password=False
                ),
                "AIRFLOW__API__HOST": HOST,
                "AIRFLOW__API__PORT": str(self.ports.airflow),
                "AIRFLOW__API__BASE_URL": state.airflow_url,
                "AIRFLOW__API_AUTH__JWT_SECRET": jwt_secret,
                # Task logs: the UI reads them from this folder (no log server, see Ports).
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "airflow"),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
                    self.ports.scheduler_health
                ),
                **RECOVERY_SETTINGS,
                f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}": json.dumps(
                    ledger_connection(state.ledger_url)
                ),
            }
        )
        for name, value in self._tokens_of(state).pipeline_env(state.warehouse_url).items():
            _set_or_drop(env, name, value)
        if state.executor == "celery":
            env.update(celery_settings(state.broker_url, state.celery_concurrency))
        env.update(airflow_tuning.airflow_env(self.env, celery=state.executor == "celery"))
        airflow_tuning.write_local_settings(home, self.env)
        return env

    def _run(self, argv: list[str], env: Mapping[str, str], name: str) -> None:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            result = subprocess.run(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir, check=False
            )
        if result.returncode != 0:
            raise StackError(
                f"`{' '.join(argv)}` failed ({result.returncode}); {log} ends with:\n{_tail(log)}"
            )

    def _wait_healthy(self, state: StackState) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = {"warehouse", "airflow"}
        workers = {s.name for s in self.services() if s.name.startswith("worker-")}
        if state.executor == "celery":
            pending |= {"broker", *workers}
        while True:
            services = self.services()
            if not services:
                raise StackError(f"supervisord is not running; see {self.logs / 'supervisord.log'}")
            for service in services:
                if service.state == "FATAL":
                    log = self.logs / f"{service.name}.log"
                    raise StackError(
                        f"{service.name} keeps exiting; {log} ends with:\n{_tail(log)}"
                    )
            if "warehouse" in pending and _healthy(f"{state.warehouse_url}/healthz"):
                pending.discard("warehouse")
            if "airflow" in pending and _airflow_healthy(state.airflow_url):
                pending.discard("airflow")
            if "broker" in pending and _redis_healthy(state.broker_url):
                pending.discard("broker")
            if "broker" not in pending and pending & workers:
                pending -= _workers_answering(state.broker_url)
            if not pending and all(s.running for s in services):
                return
            if time.monotonic() > deadline:
                down = sorted(pending | {s.name for s in services if not s.running})
                raise StackError(f"not healthy after {START_TIMEOUT_S:.0f} s: {down}")
            time.sleep(1)

    def _unpause(self, state: StackState) -> None:
        """Make sure ``order_intake`` is known to the API server and unpaused."""
        from shipping.ops.airflow_api import AirflowClient

        with AirflowClient(state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password) as api:
            deadline = time.monotonic() + 120
            while True:
                try:
                    api.unpause(DAG_ID)
                    return
                except (LookupError, requests.ConnectionError, requests.Timeout) as exc:
                    # Not parsed yet, or an API server too busy to answer in time (a
                    # loaded machine): ask again.
                    if time.monotonic() > deadline:
                        raise StackError(
                            f"DAG {DAG_ID} could not be unpaused ({exc}); see the logs"
                        ) from None
                    time.sleep(1)

    # -------------------------------------------------------------------- down
    def down(self, *, quiet: bool = False) -> bool:
        """Stop every service and supervisord, leaving no process; return whether any ran."""
        state = self.state()
        stopped = [s.name for s in self.services() if s.state in UP_STATES]
        if not self.supervisor.shutdown() and self.supervisor.sweep_dead():
            stopped.append("leftovers of a dead supervisord")
        stopped += self._stop_legacy(state)
        # An embedded server started outside supervisord (an older stack, or by hand).
        if (self.dir / "postgres").exists() and localpg.stop(self.dir / "postgres"):
            stopped.append("postgres")
        if state is not None:
            state.pids.clear()
            self._save(state)
        for port in self._listening_ports(self.executor):
            _wait_until(lambda p=port: not _port_open(p), STOP_TIMEOUT_S)  # type: ignore[misc]
        if not quiet:
            self.echo(f"Stopped: {', '.join(stopped)}." if stopped else "Nothing was running.")
        return bool(stopped)

    def _stop_legacy(self, state: StackState | None) -> list[str]:
        """Stop the process groups of a stack started before supervisord ran it."""
        if state is None or not state.pids or self.supervisor.config.exists():
            return []
        stopped = []
        for name, pid in state.pids.items():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
                stopped.append(name)
        if stopped and not _wait_until(
            lambda: not any(_group_alive(p) for p in state.pids.values()), STOP_TIMEOUT_S
        ):
            for pid in state.pids.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        state.pids.clear()
        self._save(state)
        return stopped

    def status(self) -> int:
        """Print each service's state, pid, uptime and restarts; 0 when all run."""
        state = self.state()
        services = self.services()
        if state is None or not services:
            self.echo("The stack is not running (supervisord is down).")
            return 1
        self.echo(f"  {'service':<14} {'state':<9} {'pid':>7}  {'uptime':>9}  restarts")
        for s in services:
            uptime = _duration(s.uptime_s) if s.running else "-"
            pid = str(s.pid) if s.pid else "-"
            self.echo(f"  {s.name:<14} {s.state:<9} {pid:>7}  {uptime:>9}  {s.restarts}")
        self.echo(
            f"  supervisord    pid {self.supervisor.pid()}, "
            f"control: supervisorctl -c {self.supervisor.config}"
        )
        self.echo(self.describe(state))
        return 0 if all(s.running for s in services) else 1


def _set_or_drop(env: dict[str, str], name: str, value: str | None) -> None:
    if value is None:
        env.pop(name, None)
    else:
        env[name] = value


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _healthy(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _airflow_healthy(base_url: str) -> bool:
    try:
        response = requests.get(f"{base_url}/api/v2/monitor/health", timeout=2)
        body = response.json()
    except (requests.RequestException, ValueError):
        return False
    parts = ("metadatabase", "scheduler", "dag_processor", "triggerer")
    return response.status_code == 200 and all(
        (body.get(p) or {}).get("status") == "healthy" for p in parts
    )


def _workers_answering(broker_url: str) -> set[str]:
    """The stack's workers that answer a Celery ping through the broker (ready for tasks)."""
    from celery import Celery

    app = Celery(broker=broker_url)
    try:
        replies = app.control.ping(timeout=1.0)
    except Exception:  # the broker is coming up or going down: nobody answers
        logger.debug("Celery ping failed", exc_info=True)
        return set()
    finally:
        app.close()
    return {name.partition("@")[0] for reply in replies for name in reply}


def _redis_healthy(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


#: What a Celery worker is not given: Airflow's metadata database (workers talk to the API
#: server's Execution API instead, and could run on a machine that cannot reach it).
WORKER_WITHHELD = frozenset({"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"})


def worker_env(airflow_env: Mapping[str, str]) -> dict[str, str]:
    """A Celery worker's environment: the Airflow components' minus what it must not have."""
    return {k: v for k, v in airflow_env.items() if k not in WORKER_WITHHELD}


def celery_settings(broker_url: str, concurrency: int) -> dict[str, str]:
    """Airflow's settings for the CeleryExecutor with a Redis broker (every component).

    Redis is the broker and the result backend: a worker then needs the broker and the
    API server, never Airflow's database (Airflow's default result backend is that
    database). Celery acknowledges a task when it ends (Airflow's default), so a task
    whose worker died is not lost; its instance is failed by the heartbeat timeout and
    retried (RECOVERY_SETTINGS).

    A broker restart (measured: Redis back 1.5 s after kill -9): sending a task waits up
    to 5 s for the broker instead of Airflow's 1 s, so a restart does not fail it. Airflow
    3.3.2's scheduler still exits when the result backend is unreachable while it polls
    (supervisord starts it again within seconds); a task it was sending at that moment can
    be left queued with no message, and is sent again after 300 s in the queued state
    (Airflow's default is 600 s). A task waits in the queue at most for the workers' slots
    to take the ``parallelism`` (64) queued before it: under 3 minutes on the loaded 2-core
    machine the benchmark ran on (0.4 lines/s); a slower cluster must raise it.
    """
    return {
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": broker_url,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": "5",
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "shipping.ops.executor.hostname",
    }


def _wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@contextlib.contextmanager
def running_stack(stack: Stack) -> Iterator[StackState]:
    """Start ``stack`` unless it runs, and stop it afterwards only if this started it."""
    already = bool(stack.running()) and all(stack.running().values())
    state = stack.up()
    try:
        yield state
    finally:
        if not already:
            stack.down()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m shipping.ops.stack``."""
    parser = argparse.ArgumentParser(
        prog="python -m shipping.ops.stack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "status", "clean"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    stack = Stack()
    try:
        if args.command == "up":
            stack.up()
        elif args.command == "down":
            stack.down()
        elif args.command == "clean":
            stack.down(quiet=True)
            shutil.rmtree(stack.dir, ignore_errors=True)
        else:
            return stack.status()
    except (StackError, SupervisorError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
