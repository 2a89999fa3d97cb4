"""The local stack: PostgreSQL, the warehouse and Airflow, started in the background.

``python -m shipping.stack up|down|status`` (``make up``, ``make down``, ``make status``).

``up`` starts, on 127.0.0.1 only: PostgreSQL (the server at ``SHIPPING_POSTGRES_URL``, else
the embedded one of :mod:`shipping.localpg`), the warehouse service, and Airflow's
api-server, scheduler, dag-processor and triggerer with the LocalExecutor. It migrates
Airflow's database, creates the pool and hands Airflow its connections, makes
``order_intake`` visible and unpaused, and returns only when everything is healthy.
``down`` stops exactly what ``up`` started. State and logs live in one folder,
``.stack/`` at the project root (``SHIPPING_STACK_DIR`` to move it).

Credentials come from ``AIRFLOW_ADMIN_PASSWORD``, ``WAREHOUSE_API_TOKEN`` and
``WAREHOUSE_ADMIN_TOKEN`` when set; otherwise they are generated once, kept in the state
folder (mode 0600) and printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
from sqlalchemy.engine import make_url

from shipping import airflow_tuning, localpg
from shipping.connections import ledger_connection, warehouse_connection
from shipping.settings import (
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

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
#: The services ``up`` starts, in start order, each with the command's arguments.
AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Pools the stack creates before the first run (a task in a missing pool never runs).
BOOTSTRAP_POOLS: Mapping[str, int] = {WAREHOUSE_POOL: WAREHOUSE_POOL_SLOTS}
START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0


#: Services this process started, by pid, so that `down` in the same process reaps them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class StackError(RuntimeError):
    """The stack could not be started or stopped; the message says why and where to look."""


@dataclass(frozen=True)
class Ports:
    """The TCP ports the stack listens on (all on 127.0.0.1)."""

    airflow: int = AIRFLOW_PORT
    warehouse: int = WAREHOUSE_PORT
    # Airflow's log servers; the defaults (8793, 8794) would collide with a second stack.
    worker_logs: int = 8793
    triggerer_logs: int = 8794

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Ports:
        """Ports from ``SHIPPING_AIRFLOW_PORT`` / ``SHIPPING_WAREHOUSE_PORT`` (tests move them)."""
        airflow = _port(env, "SHIPPING_AIRFLOW_PORT", AIRFLOW_PORT)
        warehouse = _port(env, "SHIPPING_WAREHOUSE_PORT", WAREHOUSE_PORT)
        shift = airflow - AIRFLOW_PORT
        return cls(airflow, warehouse, 8793 + shift, 8794 + shift)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    if not raw.isdigit() or not 1024 <= int(raw) <= 65535:
        raise StackError(f"{name} must be a port number 1024-65535, got {raw!r}")
    return int(raw)


@dataclass
class StackState:
    """What a running stack is: where it listens, its credentials, what to stop."""

    airflow_url: str
    warehouse_url: str
    admin_password: str
    warehouse_api_token: str
    warehouse_admin_token: str
    ledger_url: str
    postgres_url: str
    embedded_postgres: bool
    pids: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """The state as JSON (it holds secrets: the file is written 0600)."""
        return json.dumps(asdict(self), indent=2)


def stack_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder holding the stack's state, logs and embedded database."""
    env = os.environ if env is None else env
    return Path(env.get("SHIPPING_STACK_DIR") or PROJECT_ROOT / ".stack").resolve()


def load_state(directory: Path | None = None) -> StackState | None:
    """The state of the stack in ``directory`` (default: :func:`stack_dir`), if it was started."""
    path = (directory or stack_dir()) / "state.json"
    if not path.exists():
        return None
    return StackState(**json.loads(path.read_text()))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by us) counts as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


class Stack:
    """Start and stop the local stack kept in one state folder."""

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
        # Several stacks (a developer's and the tests') can share one PostgreSQL server.
        self.db_prefix = self.env.get("SHIPPING_DATABASE_PREFIX", "")
        self.echo = echo

    # ----------------------------------------------------------------- queries
    def state(self) -> StackState | None:
        """The recorded state, or None if the stack was never started here."""
        return load_state(self.dir)

    def running(self) -> dict[str, bool]:
        """Each recorded process and whether it is alive."""
        state = self.state()
        return {} if state is None else {n: _alive(p) for n, p in state.pids.items()}

    # ---------------------------------------------------------------------- up
    def up(self) -> StackState:
        """Start everything and return when it is healthy (or say it is already up).

        Raises:
            StackError: Something did not start; what was started is stopped again.
        """
        alive = self.running()
        if alive and all(alive.values()):
            state = self.state()
            assert state is not None
            self.echo(f"The stack is already up: Airflow {state.airflow_url}")
            return state
        if alive:
            self.echo("A previous stack is partly running; stopping it first.")
            self.down()
        for port in (self.ports.airflow, self.ports.warehouse):
            if _port_open(port):
                raise StackError(f"port {port} on {HOST} is already in use by another program")

        started = time.monotonic()
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            state = self._prepare()
            self._save(state)
            env = self._airflow_env(state)
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
            state.pids["warehouse"] = self._spawn(
                [
                    sys.executable,
                    "-m",
                    "warehouse_mock",
                    "--host",
                    HOST,
                    "--port",
                    str(self.ports.warehouse),
                ],
                self._warehouse_env(state),
                "warehouse",
            )
            for component in AIRFLOW_COMPONENTS:
                state.pids[component] = self._spawn(["airflow", component], env, component)
            self._save(state)
            self._wait_healthy(state)
            self._unpause(state)
        except BaseException:
            self.echo(f"Start failed; logs are in {self.logs}")
            self.down(quiet=True)
            raise
        self.echo(f"The stack is up ({time.monotonic() - started:.0f} s).\n{self.describe(state)}")
        return state

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

    def _prepare(self) -> StackState:
        """Credentials, PostgreSQL and its three databases, the ledger's tables."""
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
        api_token = credential(
            "WAREHOUSE_API_TOKEN", previous.warehouse_api_token if previous else None
        )
        admin_token = credential(
            "WAREHOUSE_ADMIN_TOKEN", previous.warehouse_admin_token if previous else None
        )

        server = self.env.get("SHIPPING_POSTGRES_URL")
        embedded = not server
        if embedded:
            self.echo("Starting the project's own PostgreSQL ...")
            server = localpg.start(self.dir / "postgres", keep_running=True)
        assert server is not None
        for database in (AIRFLOW_DATABASE, LEDGER_DATABASE, WAREHOUSE_DATABASE):
            localpg.ensure_database(server, self.db_prefix + database)
        ledger_url = make_url(server).set(database=self.db_prefix + LEDGER_DATABASE)

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
            self.echo(f"Generated {var}={value}")
        return StackState(
            airflow_url=f"http://{HOST}:{self.ports.airflow}",
            warehouse_url=f"http://{HOST}:{self.ports.warehouse}",
            admin_password=admin_password,
            warehouse_api_token=api_token,
            warehouse_admin_token=admin_token,
            ledger_url=ledger_url.render_as_string(hide_password=False),
            postgres_url=server,
            embedded_postgres=embedded,
        )

    def _save(self, state: StackState) -> None:
        _write_private(self.dir / "state.json", state.to_json())

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
        env["WAREHOUSE_API_TOKEN"] = state.warehouse_api_token
        env["WAREHOUSE_ADMIN_TOKEN"] = state.warehouse_admin_token
        return env

    def _airflow_env(self, state: StackState) -> dict[str, str]:
        home = self.dir / "airflow"
        home.mkdir(parents=True, exist_ok=True)
        passwords = home / "passwords.json"
        _write_private(passwords, json.dumps({AIRFLOW_ADMIN_USER: state.admin_password}))
        secrets_file = home / "secrets.json"
        if not secrets_file.exists():
            _write_private(secrets_file, json.dumps({"jwt": secrets.token_urlsafe(32)}))
        jwt_secret = json.loads(secrets_file.read_text())["jwt"]
        metadata = make_url(state.postgres_url).set(database=self.db_prefix + AIRFLOW_DATABASE)
        env = self._base_env()
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
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
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self.ports.worker_logs),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self.ports.triggerer_logs),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "airflow"),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}": json.dumps(
                    warehouse_connection(state.warehouse_url, state.warehouse_api_token)
                ),
                f"AIRFLOW_CONN_{LEDGER_CONN_ID.upper()}": json.dumps(
                    ledger_connection(state.ledger_url)
                ),
            }
        )
        env.update(airflow_tuning.airflow_env(self.env))
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

    def _spawn(self, argv: list[str], env: Mapping[str, str], name: str) -> int:
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            # A session of its own: `down` signals the whole group (LocalExecutor workers
            # included) and nothing else; the process outlives this command.
            proc = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.dir,
                start_new_session=True,
            )
        _CHILDREN[proc.pid] = proc
        return proc.pid

    def _wait_healthy(self, state: StackState) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = {"warehouse", "airflow"}
        while pending:
            for name, pid in state.pids.items():
                if not _alive(pid):
                    log = self.logs / f"{name}.log"
                    raise StackError(f"{name} exited during start; {log} ends with:\n{_tail(log)}")
            if "warehouse" in pending and _healthy(f"{state.warehouse_url}/healthz"):
                pending.discard("warehouse")
            if "airflow" in pending and _airflow_healthy(state.airflow_url):
                pending.discard("airflow")
            if time.monotonic() > deadline:
                raise StackError(f"not healthy after {START_TIMEOUT_S:.0f} s: {sorted(pending)}")
            time.sleep(1)

    def _unpause(self, state: StackState) -> None:
        """Make sure ``order_intake`` is known to the API server and unpaused."""
        from shipping.airflow_api import AirflowClient

        with AirflowClient(state.airflow_url, AIRFLOW_ADMIN_USER, state.admin_password) as api:
            deadline = time.monotonic() + 60
            while True:
                try:
                    api.unpause(DAG_ID)
                    return
                except LookupError:
                    if time.monotonic() > deadline:
                        raise StackError(f"DAG {DAG_ID} did not appear; see the logs") from None
                    time.sleep(1)

    # -------------------------------------------------------------------- down
    def down(self, *, quiet: bool = False) -> bool:
        """Stop everything ``up`` started; return whether anything was running."""
        state = self.state()
        pids = state.pids if state else {}
        stopped = _stop_groups(pids)
        for pid in pids.values():
            if (child := _CHILDREN.pop(pid, None)) is not None:
                child.wait()  # reap our own child (a `make up` process has long exited)
        # The embedded server is ours whenever it runs, even if `up` failed before it
        # could record its state.
        if (self.dir / "postgres").exists() and localpg.stop(self.dir / "postgres"):
            stopped.append("postgres")
        if state is not None:
            state.pids.clear()
            self._save(state)
        for port in (self.ports.airflow, self.ports.warehouse):
            _wait_until(lambda p=port: not _port_open(p), STOP_TIMEOUT_S)  # type: ignore[misc]
        if not quiet:
            self.echo(f"Stopped: {', '.join(stopped)}." if stopped else "Nothing was running.")
        return bool(stopped)

    def status(self) -> int:
        """Print each process and whether it runs; 0 when all run."""
        running = self.running()
        state = self.state()
        if not running or state is None:
            self.echo("The stack is not running.")
            return 1
        for name, ok in running.items():
            self.echo(f"  {name:<14} {'running' if ok else 'STOPPED'}")
        self.echo(self.describe(state))
        return 0 if all(running.values()) else 1


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


def _wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _stop_groups(pids: Mapping[str, int]) -> list[str]:
    """SIGTERM each process group, then SIGKILL what is left after a grace period."""
    stopped = []
    for name, pid in reversed(list(pids.items())):
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            stopped.append(name)
    for name, pid in pids.items():
        if not _wait_until(lambda p=pid: not _group_alive(p), STOP_TIMEOUT_S):  # type: ignore[misc]
            logger.warning("%s did not stop in %.0f s; killing it", name, STOP_TIMEOUT_S)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    return stopped


def _group_alive(pgid: int) -> bool:
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[2]) == pgid and stat[0] != "Z":
                return True
    return False


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
    """Entry point of ``python -m shipping.stack``."""
    parser = argparse.ArgumentParser(
        prog="python -m shipping.stack", description=__doc__.split("\n")[0]
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
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
