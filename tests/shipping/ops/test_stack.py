"""The local stack's configuration, without starting anything: supervisord's, Airflow's, ports."""

from __future__ import annotations

import io
import json
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from supervisor.datatypes import RestartUnconditionally

from shipping.ops.executor import ExecutorSettings
from shipping.ops.stack import (
    AIRFLOW_COMPONENTS,
    RECOVERY_SETTINGS,
    WORKER_STOP_WAIT_S,
    Ports,
    Program,
    Stack,
    StackError,
    credentials,
    environment,
    generated_notice,
    password_problem,
    supervisord_config,
)
from shipping.ops.stack import programs as stack_programs
from shipping.ops.state import StackState

STATE = StackState(
    airflow_url="http://127.0.0.1:8080",
    warehouse_url="http://127.0.0.1:8081",
    admin_password="pw-for-the-test",
    warehouse_api_token="client-token-for-the-test",
    warehouse_admin_token="admin-token-for-the-test",
    ledger_url="postgresql+psycopg2://u@db/shipping_ledger",
    postgres_url="postgresql+psycopg2://u@db/postgres",
    embedded_postgres=False,
)


def stack_at(tmp_path: Path, **env: str) -> Stack:
    return Stack(directory=tmp_path, env=env, echo=lambda _: None)


CELERY = ExecutorSettings("celery", workers=3, concurrency=2)
CELERY_STATE = StackState(
    **{
        **json.loads(STATE.to_json()),
        "executor": "celery",
        "celery_workers": 3,
        "celery_concurrency": 2,
        "broker_url": "redis://:pw@127.0.0.1:8975",
        "embedded_redis": True,
    }
)


def programs(
    tmp_path: Path, embedded: bool = True, executor: ExecutorSettings | None = None
) -> list[Program]:
    stack = stack_at(tmp_path, PATH="/usr/bin:/bin")
    pg = None
    if embedded:
        from shipping.ops.localpg import ServerCommand

        pg = ServerCommand(["/pg/bin/postgres", "-D", "/data"], "pgserver", "postgresql://x")
    return stack_programs.programs(stack, pg, executor or ExecutorSettings())


def parsed(tmp_path: Path, progs: list[Program]) -> Any:
    """The configuration as supervisord itself reads it."""
    from supervisor.options import ServerOptions

    options = ServerOptions()
    (tmp_path / "logs").mkdir(exist_ok=True)
    # A file object: supervisord leaves a file it opens itself unclosed.
    options.configfile = io.StringIO(supervisord_config(tmp_path, tmp_path / "logs", progs))
    options.process_config(do_usage=False)
    return options


def test_supervisord_parses_the_config_with_one_program_per_service(tmp_path: Path) -> None:
    """supervisord reads the generated file; every service is a program of its own."""
    options = parsed(tmp_path, programs(tmp_path))
    names = {group.name for group in options.process_group_configs}
    assert names == {"postgres", "warehouse", *AIRFLOW_COMPONENTS}


def test_the_control_socket_is_a_private_unix_socket_and_nothing_listens_on_tcp(
    tmp_path: Path,
) -> None:
    """supervisord's only server is a Unix socket (mode 0700) in the stack folder."""
    options = parsed(tmp_path, programs(tmp_path))
    (server,) = options.configroot.supervisord.server_configs
    assert server["family"] is socket.AF_UNIX
    assert server["file"] == str(tmp_path / "supervisor.sock")
    assert server["chmod"] == 0o700
    assert "inet_http_server" not in supervisord_config(tmp_path, tmp_path, programs(tmp_path))


def test_every_service_restarts_by_itself_and_stops_with_its_process_group(
    tmp_path: Path,
) -> None:
    """autorestart always; stop and kill reach the whole process group; started by `up`."""
    options = parsed(tmp_path, programs(tmp_path))
    for group in options.process_group_configs:
        (proc,) = group.process_configs
        assert proc.autorestart is RestartUnconditionally, proc.name
        assert proc.stopasgroup is True, proc.name
        assert proc.killasgroup is True, proc.name
        assert proc.autostart is False, proc.name


def test_every_service_logs_to_its_own_file_in_the_logs_folder(tmp_path: Path) -> None:
    """One log file per service, stdout and stderr together."""
    options = parsed(tmp_path, programs(tmp_path))
    for group in options.process_group_configs:
        (proc,) = group.process_configs
        assert proc.stdout_logfile == str(tmp_path / "logs" / f"{proc.name}.log")
        assert proc.redirect_stderr is True


def test_each_service_runs_through_the_exec_wrapper(tmp_path: Path) -> None:
    """The command is the wrapper, then `--` and the service's own argv, unchanged."""
    options = parsed(tmp_path, programs(tmp_path))
    for group in options.process_group_configs:
        (proc,) = group.process_configs
        argv = shlex.split(proc.command)
        assert argv[:4] == [sys.executable, "-m", "shipping.ops.supervision", "exec"]
        assert argv[argv.index("--") - 1] == proc.name
    (postgres_group,) = [g for g in options.process_group_configs if g.name == "postgres"]
    postgres = shlex.split(postgres_group.process_configs[0].command)
    assert postgres[postgres.index("--user") + 1] == "pgserver"
    assert postgres[postgres.index("--") + 1 :] == ["/pg/bin/postgres", "-D", "/data"]


def test_postgres_stops_with_a_fast_shutdown(tmp_path: Path) -> None:
    """PostgreSQL's fast shutdown is SIGINT; the others stop on SIGTERM."""
    options = parsed(tmp_path, programs(tmp_path))
    signals = {g.name: g.process_configs[0].stopsignal for g in options.process_group_configs}
    assert signals.pop("postgres") == 2
    assert set(signals.values()) == {15}


def test_a_percent_sign_in_a_path_reaches_the_program_unchanged(tmp_path: Path) -> None:
    """supervisord expands %(...)s: a literal % is escaped, and comes out as written."""
    program = Program("warehouse", ["/opt/100%/bin/warehouse", "--flag"])
    options = parsed(tmp_path, [program])
    command = options.process_group_configs[0].process_configs[0].command
    assert shlex.split(command)[-2:] == ["/opt/100%/bin/warehouse", "--flag"]


def test_no_postgres_program_when_a_server_url_is_given(tmp_path: Path) -> None:
    """With SHIPPING_POSTGRES_URL the stack supervises only its own services."""
    names = [p.name for p in programs(tmp_path, embedded=False)]
    assert names == ["warehouse", *AIRFLOW_COMPONENTS]


def test_scheduler_and_triggerer_start_without_their_log_servers(tmp_path: Path) -> None:
    """Airflow's log servers bind every interface (3.3.2): the stack does not start them."""
    argv = {p.name: p.argv for p in programs(tmp_path)}
    assert "--skip-serve-logs" in argv["scheduler"]
    assert "--skip-serve-logs" in argv["triggerer"]


def test_airflow_listens_on_loopback_at_ports_that_move_with_the_stack(tmp_path: Path) -> None:
    """API server and scheduler health check on 127.0.0.1; the health port follows Airflow's."""
    env = environment.airflow_env(stack_at(tmp_path, SHIPPING_AIRFLOW_PORT="18080"), STATE)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] == "18974"


def test_airflow_notices_a_dead_task_within_half_a_minute(tmp_path: Path) -> None:
    """The heartbeat timeout and the orphan check are 30 s, not Airflow's 300 s."""
    env = environment.airflow_env(stack_at(tmp_path), STATE)
    for name, value in RECOVERY_SETTINGS.items():
        assert env[name] == value
    assert int(env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) <= 30


@pytest.mark.parametrize(
    ("airflow", "warehouse", "expected"),
    [
        ({}, {}, Ports(8080, 8081, 8974, 8975)),
        (
            {"SHIPPING_AIRFLOW_PORT": "18080"},
            {"SHIPPING_WAREHOUSE_PORT": "18081"},
            Ports(18080, 18081, 18974, 18975),
        ),
    ],
)
def test_ports_move_with_the_stack_settings(
    airflow: dict[str, str], warehouse: dict[str, str], expected: Ports
) -> None:
    """Two stacks on other Airflow ports get other health check and Redis ports too."""
    assert Ports.from_env({**airflow, **warehouse}) == expected


def test_an_airflow_port_that_pushes_the_health_port_out_of_range_is_refused() -> None:
    """The error names the variable."""
    with pytest.raises(StackError, match="SHIPPING_AIRFLOW_PORT"):
        Ports.from_env({"SHIPPING_AIRFLOW_PORT": "65000"})


def test_the_state_file_keeps_its_contract_keys(tmp_path: Path) -> None:
    """admin_password and the two warehouse tokens are in state.json, which is 0600."""
    stack = stack_at(tmp_path)
    stack.save(STATE)
    path = tmp_path / "state.json"
    assert path.stat().st_mode & 0o777 == 0o600
    doc = json.loads(path.read_text())
    assert {"admin_password", "warehouse_api_token", "warehouse_admin_token"} <= set(doc)


def test_a_state_file_with_unknown_keys_still_loads(tmp_path: Path) -> None:
    """A state file from another version (extra keys) is read, not refused."""
    doc = json.loads(STATE.to_json())
    doc["something_new"] = 1
    (tmp_path / "state.json").write_text(json.dumps(doc))
    assert stack_at(tmp_path).state() == STATE


def test_status_of_a_stack_that_never_ran_is_not_running(tmp_path: Path) -> None:
    """No supervisord: status says so and exits 1; running() is empty."""
    said: list[str] = []
    stack = Stack(directory=tmp_path, env={}, echo=said.append)
    assert stack.status() == 1
    assert stack.running() == {}
    assert "not running" in said[0]


# === Celery mode =========================================================================


def test_celery_mode_adds_redis_and_one_program_per_worker(tmp_path: Path) -> None:
    """The broker and worker-1..N are services of their own beside Airflow's."""
    options = parsed(tmp_path, programs(tmp_path, executor=CELERY))
    names = {group.name for group in options.process_group_configs}
    workers = {"worker-1", "worker-2", "worker-3"}
    assert names == {"postgres", "redis", "warehouse", *AIRFLOW_COMPONENTS, *workers}


def test_no_redis_program_when_an_existing_redis_is_given(tmp_path: Path) -> None:
    """SHIPPING_REDIS_URL: the stack starts no broker of its own."""
    executor = ExecutorSettings("celery", workers=1, redis_url="redis://cache:6379/0")
    names = {p.name for p in programs(tmp_path, executor=executor)}
    assert "redis" not in names
    assert "worker-1" in names


def test_a_stopped_worker_finishes_its_tasks_before_it_is_killed(tmp_path: Path) -> None:
    """SIGTERM reaches the worker alone (Celery's warm shutdown), the group is killed late."""
    options = parsed(tmp_path, programs(tmp_path, executor=CELERY))
    for group in options.process_group_configs:
        (proc,) = group.process_configs
        if proc.name.startswith("worker-"):
            assert proc.stopasgroup is False
            assert proc.killasgroup is True
            assert proc.stopwaitsecs == WORKER_STOP_WAIT_S
            assert proc.autorestart is RestartUnconditionally


def test_each_worker_has_its_own_celery_name_and_no_log_server(tmp_path: Path) -> None:
    """worker-N@host for Celery; no log server (it would bind every interface)."""
    argv = {p.name: p.argv for p in programs(tmp_path, executor=CELERY)}
    for name in ("worker-1", "worker-2", "worker-3"):
        assert argv[name][1:3] == ["celery", "worker"]
        assert argv[name][argv[name].index("--celery-hostname") + 1] == f"{name}@%h"
        assert argv[name][argv[name].index("--concurrency") + 1] == "2"
        assert "--skip-serve-logs" in argv[name]


def test_the_stack_redis_listens_on_loopback_and_writes_every_change_to_disk(
    tmp_path: Path,
) -> None:
    """127.0.0.1 at the stack's Redis port, append-only with fsync; password not in argv."""
    (redis,) = [p for p in programs(tmp_path, executor=CELERY) if p.name == "redis"]
    argv = redis.argv
    assert argv[argv.index("--bind") + 1] == "127.0.0.1"
    assert argv[argv.index("--port") + 1] == "8975"
    assert argv[argv.index("--appendfsync") + 1] == "always"
    password = (tmp_path / "redis.secret").read_text().strip()
    assert password not in " ".join(argv)
    assert f"requirepass {password}" in Path(argv[1]).read_text()


def test_celery_mode_configures_every_airflow_component_for_redis(tmp_path: Path) -> None:
    """CeleryExecutor, Redis as broker and result backend, worker names as host names."""
    env = environment.airflow_env(stack_at(tmp_path), CELERY_STATE)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == CELERY_STATE.broker_url
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == CELERY_STATE.broker_url
    assert env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] == "2"
    assert env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] == "shipping.ops.executor.hostname"


def test_celery_mode_rides_out_a_broker_restart(tmp_path: Path) -> None:
    """Sending waits 5 s for Redis; a task left queued without a message is resent at 300 s."""
    env = environment.airflow_env(stack_at(tmp_path), CELERY_STATE)
    assert float(env["AIRFLOW__CELERY__OPERATION_TIMEOUT"]) >= 5
    assert int(env["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]) == 300


def test_a_worker_gets_no_metadata_database_but_its_own_name(tmp_path: Path) -> None:
    """A worker's environment file holds no database URL, even one supervisord has."""
    stack = Stack(
        directory=tmp_path,
        env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://leaked/airflow"},
        echo=lambda _: None,
    )
    environment.write_env_files(stack, CELERY_STATE, CELERY)
    worker = json.loads((stack.supervisor.run_dir / "worker-2.env.json").read_text())
    airflow = json.loads((stack.supervisor.run_dir / "airflow.env.json").read_text())
    assert worker["SHIPPING_WORKER_NAME"] == "worker-2"
    # The file is the worker's whole environment (the wrapper passes nothing else on).
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in worker
    assert worker["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].endswith("/execution/")
    assert airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")


def test_the_local_executor_stays_the_default(tmp_path: Path) -> None:
    """Without SHIPPING_EXECUTOR: LocalExecutor, no broker, no workers."""
    env = environment.airflow_env(stack_at(tmp_path), STATE)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert not any(k.startswith("AIRFLOW__CELERY__") for k in env)
    assert {p.name for p in programs(tmp_path)} == {"postgres", "warehouse", *AIRFLOW_COMPONENTS}


def test_a_bad_executor_setting_is_refused_naming_the_variable(tmp_path: Path) -> None:
    """The stack refuses to build with SHIPPING_EXECUTOR=kubernetes."""
    with pytest.raises(StackError, match="SHIPPING_EXECUTOR"):
        stack_at(tmp_path, SHIPPING_EXECUTOR="kubernetes")


# === warehouse tokens: one sent, a list accepted, changes honoured ======================


@pytest.mark.parametrize("source", ["env", "state"])
def test_a_token_list_in_warehouse_api_token_is_refused_before_anything_starts(
    tmp_path: Path, source: str
) -> None:
    """WAREHOUSE_API_TOKEN=NEW,OLD (set now, or kept from an old stack): refused at start,
    naming WAREHOUSE_API_TOKENS; supervisord never starts."""
    env = {"WAREHOUSE_API_TOKEN": "new-token-123,old-token-456"} if source == "env" else {}
    if source == "state":
        state = json.loads(STATE.to_json()) | {"warehouse_api_token": "new-token-1,old-token-2"}
        (tmp_path / "state.json").write_text(json.dumps(state))
    stack = stack_at(tmp_path, **env)
    with pytest.raises(StackError, match="WAREHOUSE_API_TOKENS"):
        stack.up()
    assert not stack.supervisor.config.exists()


def _env_files(stack: Stack) -> tuple[dict[str, Any], dict[str, Any]]:
    run = stack.supervisor.run_dir
    warehouse = json.loads((run / "warehouse.env.json").read_text())
    airflow = json.loads((run / "airflow.env.json").read_text())
    return warehouse, airflow


def test_the_warehouse_accepts_the_token_list_and_the_pipeline_sends_one_token(
    tmp_path: Path,
) -> None:
    """WAREHOUSE_API_TOKENS goes to the warehouse alone; the connection holds the one token."""
    stack = stack_at(
        tmp_path, WAREHOUSE_API_TOKEN="new-token-123", WAREHOUSE_API_TOKENS="new-token-123,old-1"
    )
    state = StackState.from_json(STATE.to_json())
    credentials.save_tokens(stack, state, credentials.wanted_tokens(stack, state))
    environment.write_env_files(stack, state, ExecutorSettings())
    warehouse, airflow = _env_files(stack)
    assert warehouse["WAREHOUSE_API_TOKENS"] == "new-token-123,old-1"
    assert warehouse["WAREHOUSE_API_TOKEN"] == "new-token-123"
    assert json.loads(airflow["AIRFLOW_CONN_WAREHOUSE_API"])["password"] == "new-token-123"
    assert "WAREHOUSE_API_TOKENS" not in airflow  # the pipeline never sees it
    assert stack.state() is not None
    assert stack.state().warehouse_api_token == "new-token-123"  # type: ignore[union-attr]


class RecordingSupervisor:
    """What apply_tokens asks of supervisord, recorded."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.restarted: list[str] = []

    def services(self) -> list[Any]:
        return []

    def stop(self, name: str) -> None:
        pass

    def start(self, name: str) -> None:
        self.restarted.append(name)


@pytest.mark.parametrize(
    ("step", "env", "restarted"),
    [
        ("nothing changed", {}, []),
        (
            "1: the warehouse accepts NEW,OLD",
            {"WAREHOUSE_API_TOKENS": "new-1234,old-1234"},
            ["warehouse"],
        ),
        (
            "2: the pipeline sends NEW",
            {"WAREHOUSE_API_TOKENS": "new-1234,old-1234", "WAREHOUSE_API_TOKEN": "new-1234"},
            list(AIRFLOW_COMPONENTS),
        ),
        (
            "3: the warehouse accepts NEW alone",
            {"WAREHOUSE_API_TOKENS": "new-1234", "WAREHOUSE_API_TOKEN": "new-1234"},
            ["warehouse"],
        ),
    ],
)
def test_a_running_stack_restarts_only_what_reads_a_changed_token(
    tmp_path: Path, step: str, env: dict[str, str], restarted: list[str]
) -> None:
    """Each rotation step, as `make up` on a running stack: env files and restarts."""
    before = {
        "nothing changed": ("old-1234", None),
        "1: the warehouse accepts NEW,OLD": ("old-1234", None),
        "2: the pipeline sends NEW": ("old-1234", "new-1234,old-1234"),
        "3: the warehouse accepts NEW alone": ("new-1234", "new-1234,old-1234"),
    }[step]
    state = StackState.from_json(STATE.to_json())
    first = stack_at(
        tmp_path,
        WAREHOUSE_API_TOKEN=before[0],
        **({"WAREHOUSE_API_TOKENS": before[1]} if before[1] else {}),
    )
    credentials.save_tokens(first, state, credentials.wanted_tokens(first, state))
    environment.write_env_files(first, state, ExecutorSettings())
    stack = stack_at(tmp_path, **env)
    supervisor = RecordingSupervisor(stack.supervisor.run_dir)
    stack.supervisor = supervisor  # type: ignore[assignment]
    credentials.apply_tokens(stack, state)
    assert supervisor.restarted == restarted
    warehouse, airflow = _env_files(stack)
    accepted = env.get("WAREHOUSE_API_TOKENS", before[1])
    client = env.get("WAREHOUSE_API_TOKEN", before[0])
    assert (warehouse.get("WAREHOUSE_API_TOKENS"), warehouse["WAREHOUSE_API_TOKEN"]) == (
        accepted,
        client,
    )
    assert json.loads(airflow["AIRFLOW_CONN_WAREHOUSE_API"])["password"] == client
    assert stack.state().warehouse_api_token == client  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("var", "key"),
    [
        ("AIRFLOW_ADMIN_PASSWORD", "admin_password"),
        ("WAREHOUSE_API_TOKEN", "warehouse_api_token"),
        ("WAREHOUSE_ADMIN_TOKEN", "warehouse_admin_token"),
    ],
)
def test_a_generated_secret_is_never_printed_only_where_it_is_kept(
    var: str, key: str, tmp_path: Path
) -> None:
    """make up names the file and key of a generated secret, not the secret."""
    value = "Zq8-generated-secret-value-1"
    notice = generated_notice(var, value, tmp_path / "state.json")
    assert value not in notice
    assert f"{tmp_path / 'state.json'} (key {key}," in notice
    assert key in json.loads(STATE.to_json())


@pytest.mark.parametrize(
    "password", ["admin", "password", "Airflow", "change-me-now-please", "short-pw1"]
)
def test_a_weak_admin_password_is_refused_before_anything_starts(
    password: str, tmp_path: Path
) -> None:
    """A well-known, placeholder or short AIRFLOW_ADMIN_PASSWORD stops make up, naming it."""
    said: list[str] = []
    stack = Stack(directory=tmp_path, env={"AIRFLOW_ADMIN_PASSWORD": password}, echo=said.append)
    with pytest.raises(StackError, match="AIRFLOW_ADMIN_PASSWORD"):
        stack.up()
    assert not (tmp_path / "state.json").exists()
    assert not (tmp_path / "logs").exists()


def test_a_long_random_admin_password_passes() -> None:
    """What secrets.token_urlsafe makes, or any 12+ characters that are not well known."""
    assert password_problem("k3J_v9-Qw2xZ") is None
    assert password_problem(None) is None


def _fake_redis(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    server = folder / "redis-server"
    server.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=0:0 malloc=libc bits=64'\n")
    server.chmod(0o755)
    return server


def test_the_stack_runs_a_recent_machine_redis_and_says_which_and_why(tmp_path: Path) -> None:
    """The redis program is the machine's 7.x server; the status text names its version
    and the reason."""
    machine = _fake_redis(tmp_path / "bin", "7.2.4")
    stack = stack_at(tmp_path / "stack", PATH=str(machine.parent))
    (redis,) = [p for p in stack_programs.programs(stack, None, CELERY) if p.name == "redis"]
    assert redis.argv[0] == str(machine)
    assert stack.redis_server is not None
    assert stack.redis_server.version == "7.2.4"
    state = StackState(
        **{
            **json.loads(CELERY_STATE.to_json()),
            "redis_server": stack.redis_server.binary,
            "redis_version": stack.redis_server.version,
            "redis_reason": stack.redis_server.reason,
        }
    )
    assert (
        f"Redis broker        redis-server 7.2.4 (the machine's {machine}, 6.2.0 or newer"
        in stack.describe(state)
    )


def test_the_stack_passes_over_an_old_machine_redis_for_the_bundled_one(tmp_path: Path) -> None:
    """A machine's Redis 5 is not the broker: the bundled server is, and the reason says why."""
    machine = _fake_redis(tmp_path / "bin", "5.0.7")
    stack = stack_at(tmp_path / "stack", PATH=str(machine.parent))
    (redis,) = [p for p in stack_programs.programs(stack, None, CELERY) if p.name == "redis"]
    assert redis.argv[0] == str(Path(sys.executable).parent / "redis-server")
    assert stack.redis_server is not None
    assert "is 5.0.7, older than 6.2.0" in stack.redis_server.reason


def test_each_service_gets_its_own_database_role_url(tmp_path: Path) -> None:
    """Airflow's metadata and the warehouse's database URLs are their roles' from the state."""
    state = StackState(
        **{
            **json.loads(STATE.to_json()),
            "airflow_database_url": "postgresql+psycopg2://airflow:a-pw@db/airflow",
            "warehouse_database_url": "postgresql+psycopg2://warehouse:w-pw@db/warehouse",
            "database_roles": True,
        }
    )
    stack = stack_at(tmp_path)
    airflow = environment.airflow_env(stack, state)
    warehouse = environment.warehouse_env(stack, state)
    assert airflow["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == state.airflow_database_url
    assert warehouse["WAREHOUSE_DATABASE_URL"] == state.warehouse_database_url
