"""The local stack's lifecycle: ``up``, ``down`` and ``status`` over one state folder.

:class:`Stack` decides in what order things start and stop; what each service runs, with
which environment and credentials, lives in the sibling modules of :mod:`shipping.ops.stack`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from shipping.contract import AIRFLOW_ADMIN_USER
from shipping.ops import localpg
from shipping.ops.executor import ExecutorSettings, RedisServer
from shipping.ops.settings import SettingsError
from shipping.ops.stack import credentials, environment, health, programs
from shipping.ops.stack.common import (
    AIRFLOW_COMPONENTS,
    BOOTSTRAP_POOLS,
    HOST,
    STOP_TIMEOUT_S,
    StackError,
    tail,
    wait_until,
)
from shipping.ops.stack.databases import prepare
from shipping.ops.stack.ports import Ports, port_open
from shipping.ops.state import StackState, load_state, private_dir, stack_dir, write_private
from shipping.ops.supervision import UP_STATES, ServiceInfo, Supervisor


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
        #: The redis-server of the stack's own broker, once chosen (Celery mode).
        self.redis_server: RedisServer | None = None

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
        credentials.check_client_token(self, state)
        if problem := credentials.password_problem(self.env.get("AIRFLOW_ADMIN_PASSWORD")):
            raise StackError(f"AIRFLOW_ADMIN_PASSWORD {problem}")
        if state is not None and self.supervisor.alive():
            return self._up_missing(state)
        if swept := self.supervisor.sweep_dead():
            self.echo(f"supervisord had died; stopped {len(swept)} process(es) it left behind.")
        self._stop_legacy(state)
        for port in self._listening_ports(self.executor):
            if port_open(port):
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
        programs.write_supervisord_config(self, pg, self.executor)
        self.supervisor.start_daemon(environment.base_env(self))
        if pg is not None:
            self.echo("Starting the project's own PostgreSQL ...")
            programs.start_postgres(self)
        state = prepare(self, pg.url if pg is not None else None)
        credentials.save_tokens(self, state, credentials.wanted_tokens(self, state))
        if self.executor.celery and self.executor.redis_url is None:
            redis = programs.redis_server(self)
            self.echo(
                f"Starting the Redis broker (redis-server {redis.version}: {redis.reason}) ..."
            )
            self.supervisor.start("redis")
        env = environment.airflow_env(self, state)
        environment.write_env_files(self, state, self.executor)
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
        health.wait_healthy(self, state)
        health.unpause(self, state)
        state.pids = {s.name: s.pid for s in self.services()}
        self.save(state)
        return state

    def _up_missing(self, state: StackState) -> StackState:
        self._scale_workers(state)
        credentials.apply_tokens(self, state)
        missing = [s.name for s in self.services() if s.state not in UP_STATES]
        if not missing:
            health.wait_healthy(self, state)
            state.pids = {s.name: s.pid for s in self.services()}
            self.save(state)
            self.echo(f"The stack is already up: Airflow {state.airflow_url}")
            return state
        self.echo(f"Starting what is not running: {', '.join(missing)} ...")
        if "postgres" in missing:
            programs.start_postgres(self)
            missing.remove("postgres")
        for name in missing:
            self.supervisor.start(name)
        health.wait_healthy(self, state)
        state.pids = {s.name: s.pid for s in self.services()}
        self.save(state)
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
        programs.write_supervisord_config(self, pg, wanted)
        environment.write_env_files(self, state, wanted)
        added, removed = self.supervisor.reload()
        for name in removed:
            self.echo(f"Stopping {name} (it finishes the lines it runs first) ...")
        self.supervisor.remove(removed)
        for name in added:
            self.echo(f"Adding {name} ...")
            self.supervisor.start(name)
        state.celery_workers = wanted.workers
        self.save(state)

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
            + (
                f"\n  Redis broker        redis-server {state.redis_version} ({state.redis_reason})"
                if state.redis_version
                else ""
            )
        )

    def save(self, state: StackState) -> None:
        """Write the state file (0600)."""
        write_private(self.dir / "state.json", state.to_json())

    def _run(self, argv: list[str], env: Mapping[str, str], name: str) -> None:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            result = subprocess.run(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir, check=False
            )
        if result.returncode != 0:
            raise StackError(
                f"`{' '.join(argv)}` failed ({result.returncode}); {log} ends with:\n{tail(log)}"
            )

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
            self.save(state)
        for port in self._listening_ports(self.executor):
            wait_until(lambda p=port: not port_open(p), STOP_TIMEOUT_S)  # type: ignore[misc]
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
        if stopped and not wait_until(
            lambda: not any(_group_alive(p) for p in state.pids.values()), STOP_TIMEOUT_S
        ):
            for pid in state.pids.values():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        state.pids.clear()
        self.save(state)
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
