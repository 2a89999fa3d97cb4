"""docker-compose.yaml, its Dockerfile and .env.example agree with the project's contracts
and with the local stack's Celery mode.

No Docker engine runs here, so the stack is checked statically: the compose file against
the Compose Specification's JSON schema (``../shared/compose-spec.json``, beside the
clone; CI has it), its names (DAG, pool, connections, ports, databases, variables)
against :mod:`shipping.contract`, which the DAG and the local stack use as well, and, in
the last part, against the local stack in Celery mode as :mod:`shipping.ops.stack` builds
it (its programs and their commands, connections, pool and DAG folder), so that the two
ways of running the system cannot drift apart. Airflow's settings are not compared here:
both take them from :mod:`shipping.ops.airflow_settings` (compose through the env files
that tests/shipping/ops/test_airflow_settings.py keeps fresh).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator, Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from sqlalchemy.engine import make_url

from shipping import contract
from shipping.ops.stack import Program

REPO = Path(__file__).resolve().parents[1]
COMPOSE_SPEC = REPO.parent / "shared" / "compose-spec.json"
PYTHON_IMAGE = "python:3.11-slim-bookworm"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)
WORKER = "airflow-worker"
# The Airflow services that use Airflow's metadata database: all but the Celery workers.
DATABASE_SERVICES = tuple(name for name in AIRFLOW_SERVICES if name != WORKER)
REQUIRED_SERVICES = ("postgres", "redis", *AIRFLOW_SERVICES, "warehouse")
# Everything but postgres, redis and airflow-init itself waits for airflow-init to finish.
AFTER_INIT_SERVICES = (*AIRFLOW_SERVICES[1:], "warehouse")
WAREHOUSE_CONN_VAR = f"AIRFLOW_CONN_{contract.WAREHOUSE_CONN_ID.upper()}"
LEDGER_CONN_VAR = f"AIRFLOW_CONN_{contract.LEDGER_CONN_ID.upper()}"
# What every Airflow component, the workers included, must see identically, or they
# cannot talk to each other.
SHARED_AIRFLOW_SETTINGS = (
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    WAREHOUSE_CONN_VAR,
    LEDGER_CONN_VAR,
)
# What the components with the metadata database must see identically: the database, the
# key that signs the tasks' tokens, the key that encrypts stored credentials.
DATABASE_SETTINGS = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__FERNET_KEY",
)
#: What no Celery worker gets (it signs nothing, stores nothing, reads no metadata).
WORKER_WITHHELD = (*DATABASE_SETTINGS, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
#: Secrets only the one-shot airflow-init sees (it checks them and writes the password file).
INIT_ONLY_SECRETS = ("AIRFLOW_ADMIN_PASSWORD", "WAREHOUSE_ADMIN_TOKEN")
SECRET_NAME = re.compile(r"(PASSWORD|TOKEN|SECRET|_KEY)$")
# Compose interpolation: `$$` is a literal dollar, `${NAME...}` and `$NAME` substitute.
INTERPOLATION = re.compile(r"\$\$|\$\{(?P<braced>[^}]*)\}|\$(?P<bare>[A-Za-z_]\w*)")
REQUIRED_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_]\w*):\?[^}]+\}")
# Variables a service's own scripts read from its container environment.
SCRIPT_VARIABLE = re.compile(
    r"os\.environ\[\s*[\"'](\w+)[\"']\s*\]|os\.environ\.get\(\s*[\"'](\w+)[\"']|\$\$\{?(\w+)"
)
IMAGE_PROVIDED_VARIABLES = frozenset({"HOSTNAME", "HOME", "PATH", "AIRFLOW_HOME"})


class Interpolation(NamedTuple):
    """One `${...}` in the compose file: the variable, its operator and where it is."""

    name: str
    operator: str
    argument: str
    where: str


def _strings(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """Every string value in a parsed YAML tree (not keys: compose interpolates values)."""
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, f"{where}[{index}]")


def _interpolations(compose: dict[str, Any]) -> list[Interpolation]:
    found = []
    for where, text in _strings(compose):
        for match in INTERPOLATION.finditer(text):
            if match["braced"] is not None:
                parts = re.fullmatch(r"([A-Za-z_]\w*)(:?[-?+])?(.*)", match["braced"], re.DOTALL)
                assert parts, f"{where}: unreadable interpolation ${{{match['braced']}}}"
                found.append(Interpolation(parts[1], parts[2] or "", parts[3], where))
            elif match["bare"] is not None:
                found.append(Interpolation(match["bare"], "bare", "", where))
    return found


def _resolve(text: str) -> str:
    """The text with each `${NAME...}` replaced by `__NAME__`, to parse what it builds."""
    return re.sub(r"\$\{([A-Za-z_]\w*)[^}]*\}", r"__\1__", text)


def _env_file(path: str) -> dict[str, str]:
    """The variables of an `env_file` (KEY=VALUE lines; `#` comments), as compose reads it."""
    lines = (REPO / path).read_text().splitlines()
    pairs = [line.partition("=") for line in lines if line.strip() and not line.startswith("#")]
    return {key: value for key, _, value in pairs}


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment: its env files, then its `environment` (which wins)."""
    files = service.get("env_file") or []
    merged: dict[str, str] = {}
    for path in [files] if isinstance(files, str) else files:
        merged |= _env_file(path)
    env = service.get("environment") or {}
    if isinstance(env, list):
        return merged | dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return merged | {key: "" if value is None else str(value) for key, value in env.items()}


def _script(service: dict[str, Any]) -> str:
    """The service's command, entrypoint and healthcheck as one text."""
    parts = [service.get("command"), service.get("entrypoint"), service.get("healthcheck")]
    return "\n".join(text for _, text in _strings(parts))


def _env_example() -> dict[str, str]:
    assignments = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assignments[name.strip()] = value.strip().strip("'\"")
    return assignments


def _dockerfile() -> list[tuple[int, str, list[str]]]:
    """The Dockerfile's instructions as (stage index, keyword, arguments)."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stage, instructions = -1, []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append((stage, keyword, rest.split()))
    return instructions


def _copy_sources() -> list[str]:
    """Build-context paths that the Dockerfile copies (not those from other stages)."""
    sources = []
    for _, keyword, args in _dockerfile():
        if keyword in ("COPY", "ADD") and not any(arg.startswith("--from") for arg in args):
            sources.extend([arg for arg in args if not arg.startswith("--")][:-1])
    return sources


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _admitted_by_dockerignore(path: str) -> bool:
    """Whether a path of the repository is in the build context (last matching pattern
    wins; a pattern that matches a folder applies to everything in it)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
    admitted = True
    for pattern in _dockerignore():
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        if any(fnmatch(prefix, glob) for prefix in prefixes):
            admitted = negated
    return admitted


COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The services plus the shared anchors, whose values the Airflow services merge in.
SOURCES = {
    "x-airflow-env": {"environment": COMPOSE["x-airflow-env"]},
    "x-airflow-common": COMPOSE["x-airflow-common"],
    **SERVICES,
}
# What every Airflow component sees (its env file and the shared secrets; the workers: their
# allowlist of it), and what all but the workers do (with the metadata database and keys).
AIRFLOW_ENV = _environment({**SOURCES["x-airflow-env"], "env_file": "docker/airflow.env"})
COMMON_ENV = _environment(COMPOSE["x-airflow-common"])
INTERPOLATIONS = _interpolations(COMPOSE)
INTERPOLATED_NAMES = sorted({item.name for item in INTERPOLATIONS})
ENV_EXAMPLE = _env_example()
PUBLISHED = [
    (name, port) for name, service in SERVICES.items() for port in service.get("ports", [])
]


def _published(port: str | int | dict[str, Any]) -> tuple[str, int, int]:
    """(host address, host port, container port) of one `ports` entry; "" = all addresses."""
    if isinstance(port, dict):
        return port.get("host_ip", ""), int(port.get("published", 0)), int(port["target"])
    # A host port may be a setting with a default (`${SHIPPING_AIRFLOW_PORT:-8080}`).
    port = re.sub(r"\$\{[A-Za-z_]\w*:-([^}]*)\}", r"\1", str(port))
    parts = port.split("/")[0].split(":")
    host_ip = parts[0] if len(parts) == 3 else ""
    return host_ip, int(parts[-2]) if len(parts) > 1 else 0, int(parts[-1])


def test_compose_file_validates_against_the_compose_spec() -> None:
    """docker-compose.yaml is valid under the Compose Specification's JSON schema."""
    if not COMPOSE_SPEC.is_file():
        pytest.fail(
            f"The Compose Specification schema is missing: expected {COMPOSE_SPEC} "
            "(shared/compose-spec.json beside the repository, as CI provides it)."
        )
    schema = json.loads(COMPOSE_SPEC.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [
        f"{'/'.join(str(part) for part in error.absolute_path) or '(top level)'}: {error.message}"
        for error in jsonschema.Draft7Validator(schema).iter_errors(COMPOSE)
    ]
    assert errors == []


@pytest.mark.parametrize("service", REQUIRED_SERVICES)
def test_the_stack_defines_the_service(service: str) -> None:
    """Each service of the stack is defined."""
    assert service in SERVICES


@pytest.mark.parametrize("service", [*AIRFLOW_SERVICES, "warehouse"])
def test_the_service_runs_the_project_image(service: str) -> None:
    """Airflow and the warehouse run the image built from the project's Dockerfile."""
    build = SERVICES[service]["build"]
    assert (build["context"], build["dockerfile"]) == (".", "Dockerfile")


@pytest.mark.parametrize("setting", SHARED_AIRFLOW_SETTINGS)
@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_every_airflow_service_shares_the_setting(service: str, setting: str) -> None:
    """Each Airflow component, the workers too, sees the common value of a shared setting."""
    assert AIRFLOW_ENV.get(setting) is not None
    assert _environment(SERVICES[service]).get(setting) == AIRFLOW_ENV[setting]


@pytest.mark.parametrize("setting", DATABASE_SETTINGS)
@pytest.mark.parametrize("service", DATABASE_SERVICES)
def test_every_airflow_service_but_the_workers_uses_the_metadata_database(
    service: str, setting: str
) -> None:
    """The components that use Airflow's database share its URL."""
    assert COMMON_ENV.get(setting) is not None
    assert _environment(SERVICES[service]).get(setting) == COMMON_ENV[setting]


def test_the_workers_get_no_metadata_database() -> None:
    """A Celery worker gets no database URL, as in the local stack (it uses the Execution API)."""
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in _environment(SERVICES[WORKER])
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in AIRFLOW_ENV
    assert not any(
        re.match(r"postgres\w*://", value) for value in _environment(SERVICES[WORKER]).values()
    )


def test_the_execution_api_is_the_api_servers() -> None:
    """Task processes reach the execution API on the airflow-apiserver service."""
    url = AIRFLOW_ENV["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert url == f"http://airflow-apiserver:{contract.AIRFLOW_PORT}/execution/"


def test_airflow_runs_the_celery_executor() -> None:
    """Airflow runs tasks with the CeleryExecutor and loads no example DAGs."""
    assert AIRFLOW_ENV["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert AIRFLOW_ENV["AIRFLOW__CORE__LOAD_EXAMPLES"].lower() == "false"


@pytest.mark.parametrize(
    "setting", ["AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"]
)
def test_the_broker_and_result_backend_are_the_redis_service(setting: str) -> None:
    """Celery's broker and result backend are the redis service, with its password."""
    url = urlsplit(_resolve(AIRFLOW_ENV[setting]))
    redis_password = _environment(SERVICES["redis"])["REDIS_PASSWORD"]
    assert (url.scheme, url.hostname, url.port) == ("redis", "redis", 6379)
    assert url.password == _resolve(redis_password) == "__REDIS_PASSWORD__"


def test_redis_requires_its_password() -> None:
    """Redis's password goes from REDIS_PASSWORD into a config file, not onto its command line."""
    script = _script(SERVICES["redis"])
    assert re.search(r"printf 'requirepass %s\\n' \"\$\$REDIS_PASSWORD\" > (\S+)", script)
    config = re.search(r"> (\S+)", script)
    assert config
    server = _redis_server_argv()
    assert server[0] == "redis-server"
    assert server[1] == config[1]
    assert "--requirepass" not in server


def _redis_server_argv() -> list[str]:
    """The redis-server command line in the redis service's script."""
    lines = [line for line in _script(SERVICES["redis"]).splitlines() if "redis-server" in line]
    assert len(lines) == 1, lines
    argv = shlex.split(lines[0])
    return argv[argv.index("redis-server") :]


def test_dags_start_unpaused() -> None:
    """New DAGs are not paused, so order_intake runs the orders posted to it."""
    assert COMMON_ENV["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"].lower() == "false"


@pytest.mark.parametrize(("service", "port"), PUBLISHED)
def test_published_ports_are_bound_to_loopback(service: str, port: str) -> None:
    """No port is published beyond 127.0.0.1."""
    assert _published(port)[0] == "127.0.0.1"


def test_published_ports_are_the_airflow_and_warehouse_ports() -> None:
    """Only the API server and the warehouse are published, on the settings' ports."""
    published = {
        name: [_published(port)[1:] for port in service["ports"]]
        for name, service in SERVICES.items()
        if service.get("ports")
    }
    assert published == {
        "airflow-apiserver": [(contract.AIRFLOW_PORT, contract.AIRFLOW_PORT)],
        "warehouse": [(contract.WAREHOUSE_PORT, contract.WAREHOUSE_PORT)],
    }


def test_the_warehouse_serves_on_its_published_port() -> None:
    """The warehouse service runs warehouse_mock on all container addresses, its port."""
    command = SERVICES["warehouse"]["command"]
    assert command[:3] == ["python", "-m", "warehouse_mock"]
    options = dict(zip(command[3::2], command[4::2], strict=True))
    assert options == {"--host": "0.0.0.0", "--port": str(contract.WAREHOUSE_PORT)}


@pytest.mark.parametrize(
    ("service", "url"),
    [
        ("airflow-apiserver", f"http://localhost:{contract.AIRFLOW_PORT}/api/v2/monitor/health"),
        ("warehouse", f"http://localhost:{contract.WAREHOUSE_PORT}/healthz"),
    ],
)
def test_the_health_check_probes_the_health_endpoint(service: str, url: str) -> None:
    """The API server and the warehouse are healthy when their health endpoint answers."""
    assert url in SERVICES[service]["healthcheck"]["test"]


@pytest.mark.parametrize("service", AFTER_INIT_SERVICES)
def test_the_service_waits_for_airflow_init_to_complete(service: str) -> None:
    """Nothing starts before airflow-init has migrated and bootstrapped successfully."""
    condition = SERVICES[service]["depends_on"]["airflow-init"]["condition"]
    assert condition == "service_completed_successfully"


def test_airflow_init_runs_once() -> None:
    """airflow-init is a one-shot job, never restarted."""
    assert SERVICES["airflow-init"].get("restart", "no") == "no"


# Services that run until stopped (all but the one-shot airflow-init).
LONG_RUNNING = tuple(name for name in REQUIRED_SERVICES if name != "airflow-init")


@pytest.mark.parametrize("service", LONG_RUNNING)
def test_every_long_running_service_has_a_healthcheck(service: str) -> None:
    """Each service that keeps running says when it is healthy (depends_on waits on it)."""
    test = SERVICES[service]["healthcheck"]["test"]
    assert isinstance(test, list)
    assert test[0] in ("CMD", "CMD-SHELL")
    assert len(test) > 1


def test_redis_is_healthy_when_it_answers_ping() -> None:
    """Redis is healthy when `redis-cli ping`, with its password from REDISCLI_AUTH, gets PONG."""
    test = SERVICES["redis"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    assert re.fullmatch(r"redis-cli ping \| grep -q PONG", test[1])
    env = _environment(SERVICES["redis"])
    assert env["REDISCLI_AUTH"] == env["REDIS_PASSWORD"]


def test_a_worker_is_healthy_when_its_celery_node_answers_ping() -> None:
    """A worker is healthy when its Celery node (celery@<hostname>) answers `inspect ping`."""
    test = SERVICES[WORKER]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    argv = shlex.split(test[1])
    assert argv[:2] == ["celery", "--app"]
    module, _, attribute = argv[2].rpartition(".")
    assert (module, attribute) == ("airflow.providers.celery.executors.celery_executor", "app")
    assert importlib.util.find_spec(module) is not None, f"{module} is not installed"
    assert argv[3:5] == ["inspect", "ping"]
    assert argv[argv.index("--destination") + 1] == "celery@$${HOSTNAME}"
    # The worker keeps Celery's default node name, the one pinged.
    assert "--celery-hostname" not in _command(SERVICES[WORKER])


def test_the_scheduler_healthcheck_probes_its_health_check_server() -> None:
    """The scheduler's healthcheck asks the health check server where compose puts it."""
    host = AIRFLOW_ENV["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"]
    port = AIRFLOW_ENV["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"]
    assert AIRFLOW_ENV["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"].lower() == "true"
    assert f"http://{host}:{port}/health" in SERVICES["airflow-scheduler"]["healthcheck"]["test"]


@pytest.mark.parametrize(
    ("service", "dependency"),
    [(name, dep) for name, service in SERVICES.items() for dep in service.get("depends_on", {})],
)
def test_a_service_waits_for_its_dependency_to_be_ready(service: str, dependency: str) -> None:
    """depends_on waits for a healthy dependency, or for airflow-init to complete successfully."""
    depends_on = SERVICES[service]["depends_on"]
    assert isinstance(depends_on, dict), "depends_on without conditions only orders the starts"
    expected = (
        "service_completed_successfully"
        if dependency == "airflow-init"
        else "service_healthy"
        if "healthcheck" in SERVICES[dependency]
        else "a dependency without a healthcheck"
    )
    assert depends_on[dependency]["condition"] == expected


@pytest.mark.parametrize("service", [name for name in AIRFLOW_SERVICES if name != "airflow-init"])
def test_airflow_services_wait_for_the_databases_and_the_broker(service: str) -> None:
    """No Airflow component starts before PostgreSQL and Redis are healthy."""
    assert {"postgres", "redis"} <= set(SERVICES[service]["depends_on"])


def test_the_workers_wait_for_what_their_tasks_call() -> None:
    """Tasks run in the workers: they need the Execution API and the warehouse."""
    depends_on = SERVICES[WORKER]["depends_on"]
    assert {"airflow-apiserver", "warehouse", "postgres"} <= set(depends_on)


@pytest.mark.parametrize("key", ["container_name", "hostname", "ports", "scale"])
def test_the_worker_can_be_scaled(key: str) -> None:
    """The worker scales: no container name, host name, published port or count to share."""
    assert key not in SERVICES[WORKER]
    assert "replicas" not in SERVICES[WORKER].get("deploy", {})


def test_a_worker_is_not_given_one_fixed_worker_name() -> None:
    """Each replica records its own host name: no SHIPPING_WORKER_NAME shared by all."""
    from shipping.ops.executor import WORKER_NAME_VAR

    assert WORKER_NAME_VAR not in _environment(SERVICES[WORKER])


@pytest.mark.parametrize("service", [name for name in AIRFLOW_SERVICES if name != "airflow-init"])
def test_every_airflow_component_shares_the_log_folder(service: str) -> None:
    """Every component mounts the one log volume where Airflow writes task logs."""
    folder = AIRFLOW_ENV["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]
    mounts = [v.split(":") for v in SERVICES[service]["volumes"]]
    assert ["airflow-logs", folder] in mounts


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def _shell_scripts() -> list[tuple[str, str, str]]:
    """(where, shell, script) of each `sh -c` / `bash -c` command and CMD-SHELL healthcheck,
    with compose's `$$` unescaped to the `$` the shell gets."""
    found = []
    for name, service in SERVICES.items():
        command = _command(service)
        if command[:1] in (["sh"], ["bash"]) and command[1:2] == ["-c"]:
            found.append((f"{name}.command", command[0], command[2]))
        test = service.get("healthcheck", {}).get("test", [])
        if test[:1] == ["CMD-SHELL"]:
            found.append((f"{name}.healthcheck", "sh", test[1]))
    return [(where, shell, script.replace("$$", "$")) for where, shell, script in found]


@pytest.mark.parametrize(
    ("where", "shell", "script"), _shell_scripts(), ids=[where for where, _, _ in _shell_scripts()]
)
def test_compose_shell_scripts_parse(where: str, shell: str, script: str) -> None:
    """Each script compose hands to a shell is syntactically valid for that shell."""
    binary = shutil.which(shell)
    assert binary, f"{shell} is needed to check {where}"
    result = subprocess.run(
        [binary, "-n", "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_worker_stop_lets_running_tasks_finish() -> None:
    """A stopped worker alone gets SIGTERM, so Celery's warm shutdown lets its tasks finish."""
    assert _the_entrypoint_execs_the_command()
    assert _seconds(SERVICES[WORKER]["stop_grace_period"]) >= 60


def _the_entrypoint_execs_the_command() -> bool:
    """The image's entrypoint replaces itself with the command (exec), so the command is
    the container's PID 1 and alone gets docker stop's SIGTERM, not its child processes."""
    dockerfile = _dockerfile()
    entrypoint = [args for _, keyword, args in dockerfile if keyword == "ENTRYPOINT"]
    assert entrypoint == [['["shipping-entrypoint"]']]
    lines = (REPO / "docker" / "entrypoint.sh").read_text().splitlines()
    runs = [line for line in lines if '"$@"' in line and not line.strip().startswith("#")]
    return bool(runs) and all("exec " in line for line in runs)


def _seconds(duration: str) -> int:
    """A compose duration such as `300s`, `5m` or `1m30s` in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", str(duration))
    assert parts, f"unreadable duration {duration!r}"
    assert any(parts.groups()), f"unreadable duration {duration!r}"
    hours, minutes, seconds = (int(group or 0) for group in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


def test_the_image_gets_the_celery_provider_from_the_lock_file() -> None:
    """The Celery provider and the Redis client are runtime dependencies in the image's uv.lock."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (project,) = [p for p in lock["package"] if p["source"] == {"editable": "."}]
    runtime = {dep["name"] for dep in project["dependencies"]}
    assert {"apache-airflow-providers-celery", "redis"} <= runtime


def test_airflow_init_creates_the_warehouse_pool() -> None:
    """airflow-init creates the pool the DAG uses, with the configured slots."""
    pools = re.findall(r"airflow pools set (\S+) (\d+)", _script(SERVICES["airflow-init"]))
    assert pools == [(contract.WAREHOUSE_POOL, str(contract.WAREHOUSE_POOL_SLOTS))]


def test_airflow_init_migrates_the_metadata_database() -> None:
    """airflow-init migrates Airflow's metadata database."""
    assert "airflow db migrate" in _script(SERVICES["airflow-init"])


#: Each service's database, the variable holding its URL, the role it connects as and the
#: .env variable of that role's password. The role is named after its database.
DATABASE_ROLES = [
    ("airflow-scheduler", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW_DB_PASSWORD"),
    ("airflow-scheduler", "SHIPPING_LEDGER_URL", "LEDGER_DB_PASSWORD"),
    ("warehouse", "WAREHOUSE_DATABASE_URL", "WAREHOUSE_DB_PASSWORD"),
]
ROLE_CREATION = "python -m shipping.ops.compose_databases"


def _init_commands() -> list[str]:
    script = SERVICES["airflow-init"]["command"][-1]
    return [line.strip() for line in script.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "database",
    [contract.AIRFLOW_DATABASE, contract.LEDGER_DATABASE, contract.WAREHOUSE_DATABASE],
)
def test_the_database_is_created(database: str) -> None:
    """airflow-init creates each database, owned by its role, from a URL it is given."""
    from shipping.ops.compose_databases import SERVICE_URL_VARS

    assert ROLE_CREATION in _init_commands()
    init_env = _environment(SERVICES["airflow-init"])
    created = {make_url(_resolve(init_env[var])).database for var in SERVICE_URL_VARS}
    assert database in created


@pytest.mark.parametrize(("service", "variable", "password"), DATABASE_ROLES)
def test_each_service_connects_as_the_role_of_its_database(
    service: str, variable: str, password: str
) -> None:
    """A service's URL names a role of its own (its database's name) with its own password,
    never the superuser."""
    url = make_url(_resolve(_environment(SERVICES[service])[variable]))
    assert url.username == url.database
    assert url.username != _environment(SERVICES["postgres"])["POSTGRES_USER"]
    assert url.password == f"__{password}__"


def test_the_roles_and_their_passwords_are_distinct() -> None:
    """No two services share a role or a password variable."""
    urls = [
        make_url(_resolve(_environment(SERVICES[service])[variable]))
        for service, variable, _ in DATABASE_ROLES
    ]
    assert len({url.username for url in urls}) == len(DATABASE_ROLES)
    assert len({url.password for url in urls}) == len(DATABASE_ROLES)


@pytest.mark.parametrize(("service", "variable", "password"), DATABASE_ROLES)
def test_airflow_init_creates_the_role_from_the_url_the_service_uses(
    service: str, variable: str, password: str
) -> None:
    """The role airflow-init makes is the one in the service's own URL (no second copy),
    and the one Airflow's components and the ledger's users see."""
    from shipping.ops.compose_databases import SERVICE_URL_VARS

    assert variable in SERVICE_URL_VARS
    init_env = _environment(SERVICES["airflow-init"])
    assert init_env[variable] == _environment(SERVICES[service])[variable]
    assert f"${{{password}:?" in init_env[variable]


def test_airflow_init_alone_reaches_the_server_as_the_superuser() -> None:
    """airflow-init gets the superuser's URL for creating the roles; its URL names the
    postgres service's superuser and password."""
    from shipping.ops.compose_databases import SERVER_URL_VAR

    postgres = _environment(SERVICES["postgres"])
    url = make_url(_resolve(_environment(SERVICES["airflow-init"])[SERVER_URL_VAR]))
    assert (url.username, url.password) == (
        postgres["POSTGRES_USER"],
        _resolve(postgres["POSTGRES_PASSWORD"]),
    )
    assert (url.host, url.database) == ("postgres", "postgres")


@pytest.mark.parametrize(
    "service", [name for name in SERVICES if name not in ("airflow-init", "postgres")]
)
def test_no_service_but_init_gets_the_superuser_password(service: str) -> None:
    """POSTGRES_PASSWORD reaches no service but airflow-init (and the server itself): not
    by name, not inside a URL or a connection."""
    env = _environment(SERVICES[service])
    assert "POSTGRES_PASSWORD" not in env
    assert not any("${POSTGRES_PASSWORD" in value for value in env.values())
    superuser = _environment(SERVICES["postgres"])["POSTGRES_USER"]
    assert not any(f"://{superuser}:" in value for value in env.values())


def test_airflow_init_creates_the_roles_before_anything_uses_them() -> None:
    """The roles exist (and own their databases) before the ledger's schema and Airflow's
    migration run as them."""
    commands = _init_commands()
    roles = commands.index(ROLE_CREATION)
    assert roles < commands.index("airflow db migrate")
    ledger = next(i for i, line in enumerate(commands) if "create_schema()" in line)
    assert roles < ledger


@pytest.mark.parametrize(
    ("service", "variable", "database"),
    [
        ("airflow-scheduler", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", contract.AIRFLOW_DATABASE),
        ("airflow-scheduler", "SHIPPING_LEDGER_URL", contract.LEDGER_DATABASE),
        ("warehouse", "WAREHOUSE_DATABASE_URL", contract.WAREHOUSE_DATABASE),
    ],
)
def test_the_database_url_names_the_configured_database(
    service: str, variable: str, database: str
) -> None:
    """Airflow, the ledger and the warehouse use their own databases on postgres."""
    url = make_url(_resolve(_environment(SERVICES[service])[variable]))
    assert (url.host, url.database) == ("postgres", database)


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_connection_variables_are_named_after_the_connection_ids(service: str) -> None:
    """Airflow gets exactly the DAG's two connections, named from the settings."""
    env = _environment(SERVICES[service])
    names = {name for name in env if name.startswith("AIRFLOW_CONN_")}
    assert names == {WAREHOUSE_CONN_VAR, LEDGER_CONN_VAR}


def test_the_warehouse_connection_reaches_the_warehouse_service() -> None:
    """The warehouse connection is http to the warehouse service with its client token."""
    conn = json.loads(_resolve(COMMON_ENV[WAREHOUSE_CONN_VAR]))
    token = _resolve(_environment(SERVICES["warehouse"])["WAREHOUSE_API_TOKEN"])
    assert conn == {
        "conn_type": "http",
        "schema": "http",
        "host": "warehouse",
        "port": contract.WAREHOUSE_PORT,
        "password": token,
    }


def test_the_ledger_connection_reaches_the_ledger_database() -> None:
    """The ledger connection is postgres, to the ledger database, as the ledger's role: the
    user and password of SHIPPING_LEDGER_URL."""
    conn = json.loads(_resolve(COMMON_ENV[LEDGER_CONN_VAR]))
    ledger = make_url(_resolve(COMMON_ENV["SHIPPING_LEDGER_URL"]))
    assert conn == {
        "conn_type": "postgres",
        "host": "postgres",
        "port": 5432,
        "login": contract.LEDGER_DATABASE,
        "password": "__LEDGER_DB_PASSWORD__",
        "schema": contract.LEDGER_DATABASE,
    }
    assert (ledger.username, ledger.password) == (conn["login"], conn["password"])


def test_the_admin_user_is_the_configured_one() -> None:
    """SimpleAuthManager knows one admin, whose password airflow-init writes."""
    users = COMMON_ENV["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    assert users == f"{contract.AIRFLOW_ADMIN_USER}:admin"
    written = re.findall(
        r"json\.dump\(\{\"(\w+)\": os\.environ\[\"AIRFLOW_ADMIN_PASSWORD\"\]\}",
        _script(SERVICES["airflow-init"]),
    )
    assert written == [contract.AIRFLOW_ADMIN_USER]


def test_the_password_file_is_on_a_volume_of_init_and_the_api_server() -> None:
    """The API server reads the password file from the volume airflow-init writes it to."""
    folder = str(Path(COMMON_ENV["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).parent)
    mounts = {
        service: {
            v.split(":")[0] for v in SERVICES[service]["volumes"] if v.split(":")[1] == folder
        }
        for service in ("airflow-init", "airflow-apiserver")
    }
    assert mounts["airflow-init"] == mounts["airflow-apiserver"] != set()


@pytest.mark.parametrize(
    "snippet",
    re.findall(
        r"python - <<'PYTHON'\n(.*?)\nPYTHON\n", _script(SERVICES["airflow-init"]), re.DOTALL
    ),
)
def test_airflow_init_python_compiles_and_its_imports_exist(snippet: str) -> None:
    """airflow-init's Python steps are valid and import names the project still has."""
    tree = ast.parse(snippet)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            assert all(hasattr(module, alias.name) for alias in node.names), node.module


def test_the_dag_file_named_after_the_dag_id_exists() -> None:
    """dags/ holds the DAG file named after the DAG id that the image bakes in."""
    assert (REPO / "dags" / f"{contract.DAG_ID}.py").is_file()


@pytest.mark.parametrize(
    "item",
    [item for item in INTERPOLATIONS if SECRET_NAME.search(item.name)],
    ids=lambda item: f"{item.name}@{item.where}",
)
def test_secret_variables_are_required_without_defaults(item: Interpolation) -> None:
    """Each secret is `${NAME:?message}`: compose refuses to start without it."""
    assert (item.operator, bool(item.argument.strip())) == (":?", True)


@pytest.mark.parametrize(
    ("service", "variable"),
    [
        (name, variable)
        for name, service in SERVICES.items()
        for variable in _environment(service)
        if SECRET_NAME.search(variable)
    ],
)
def test_secret_settings_come_only_from_env(service: str, variable: str) -> None:
    """A secret setting is exactly one required variable from .env, nothing literal."""
    assert REQUIRED_VARIABLE.fullmatch(_environment(SERVICES[service])[variable])


@pytest.mark.parametrize(
    ("source", "variable"),
    [
        (name, variable)
        for name, source in SOURCES.items()
        for variable, value in _environment(source).items()
        if re.search(r"://[^/@\s]+@|\"password\"", _resolve(value))
    ],
)
def test_credentials_in_urls_and_connections_come_from_env(source: str, variable: str) -> None:
    """Passwords inside database URLs and connections are required .env variables."""
    value = _environment(SOURCES[source])[variable]
    if value.lstrip().startswith("{"):
        password = json.loads(_resolve(value))["password"]
    else:
        password = make_url(_resolve(value)).password
    assert re.fullmatch(r"__\w+__", str(password))
    assert REQUIRED_VARIABLE.search(value)


def test_variables_are_interpolated_with_braces() -> None:
    """Compose variables are written `${NAME}`; a bare `$` would be a silent substitution."""
    assert [item for item in INTERPOLATIONS if item.operator == "bare"] == []


@pytest.mark.parametrize("name", INTERPOLATED_NAMES)
def test_every_compose_variable_is_in_env_example(name: str) -> None:
    """Each variable compose reads from .env is listed in .env.example."""
    assert name in ENV_EXAMPLE


@pytest.mark.parametrize("name", sorted(ENV_EXAMPLE))
def test_every_env_example_variable_is_used_by_compose(name: str) -> None:
    """.env.example lists no variable that compose ignores."""
    assert name in INTERPOLATED_NAMES


@pytest.mark.parametrize(
    ("service", "name"),
    sorted(
        {
            (service_name, next(group for group in match.groups() if group))
            for service_name, service in SERVICES.items()
            for match in SCRIPT_VARIABLE.finditer(_script(service))
        }
    ),
)
def test_every_variable_a_service_script_reads_is_set(service: str, name: str) -> None:
    """Scripts in compose read only variables that compose sets in their container."""
    assert name in _environment(SERVICES[service]) or name in IMAGE_PROVIDED_VARIABLES


@pytest.mark.parametrize(
    "name", sorted(set(contract.ENVIRONMENT_VARIABLES) & set(INTERPOLATED_NAMES))
)
def test_env_example_assigns_every_project_variable_compose_reads(name: str) -> None:
    """Each project variable that compose takes from .env has a line in .env.example."""
    assert name in ENV_EXAMPLE


@pytest.mark.parametrize("name", sorted(contract.ENVIRONMENT_VARIABLES))
def test_env_example_mentions_every_project_variable(name: str) -> None:
    """.env.example names every variable the project reads, used by compose or not."""
    assert re.search(rf"\b{name}\b", (REPO / ".env.example").read_text())


@pytest.mark.parametrize("name", [name for name in ENV_EXAMPLE if SECRET_NAME.search(name)])
def test_env_example_secrets_are_placeholders(name: str) -> None:
    """Secret values in .env.example are obvious placeholders, never real secrets."""
    assert ENV_EXAMPLE[name].startswith("change-me")


def test_the_image_is_built_on_the_python_base_a_build_argument_names() -> None:
    """Every stage is FROM ${PYTHON_IMAGE}, an ARG before the first FROM, by default the
    official Python 3.11 image (docker/base/build.sh makes a local one where none is pulled)."""
    instructions = _dockerfile()
    first_from = next(i for i, (_, keyword, _) in enumerate(instructions) if keyword == "FROM")
    args = [args[0] for _, keyword, args in instructions[:first_from] if keyword == "ARG"]
    assert f"PYTHON_IMAGE={PYTHON_IMAGE}" in args
    bases = {args[0] for _, keyword, args in instructions if keyword == "FROM"}
    assert bases == {"${PYTHON_IMAGE}"}


def test_compose_passes_the_python_base_with_the_dockerfiles_default() -> None:
    """Compose builds with PYTHON_IMAGE from SHIPPING_PYTHON_IMAGE, defaulting to the same image."""
    build_args = COMPOSE["x-airflow-common"]["build"]["args"]
    assert build_args["PYTHON_IMAGE"] == f"${{SHIPPING_PYTHON_IMAGE:-{PYTHON_IMAGE}}}"


@pytest.mark.parametrize(
    ("service", "variable", "default"),
    [
        ("postgres", "SHIPPING_POSTGRES_IMAGE", "postgres:16"),
        ("redis", "SHIPPING_REDIS_IMAGE", "redis:7.2-bookworm"),
    ],
)
def test_the_base_service_image_is_a_setting_defaulting_to_the_official_one(
    service: str, variable: str, default: str
) -> None:
    """PostgreSQL's and Redis's images can be replaced (local bases); the official by default."""
    assert SERVICES[service]["image"] == f"${{{variable}:-{default}}}"


def test_the_image_installs_dependencies_from_the_lock_file() -> None:
    """The image syncs uv.lock, frozen, without the dev group, as `make install` does."""
    instructions = _dockerfile()
    runs = [" ".join(args) for _, keyword, args in instructions if keyword == "RUN"]
    assert any("uv.lock" in args for _, keyword, args in instructions if keyword == "COPY")
    syncs = [run for run in runs if "uv sync" in run]
    assert syncs
    for sync in syncs:
        assert "--frozen" in sync
        assert "--no-dev" in sync


def test_the_image_checks_the_locked_airflow_version() -> None:
    """The build fails unless the installed Airflow is the lock file's version."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked = {package["name"]: package["version"] for package in lock["package"]}
    runs = [" ".join(args) for _, keyword, args in _dockerfile() if keyword == "RUN"]
    checks = {
        v for run in runs for v in re.findall(r"version\('apache-airflow'\) == '([\w.]+)'", run)
    }
    assert checks == {locked["apache-airflow"]}


def test_the_build_ca_bundle_stays_in_the_first_stage() -> None:
    """A proxy's CA bundle (build-ca.pem) is copied only into the venv stage, and the
    final stage takes nothing from that stage but the virtual environment."""
    instructions = _dockerfile()
    final = max(stage for stage, _, _ in instructions)
    ca_copies = {
        stage
        for stage, keyword, args in instructions
        if keyword == "COPY" and any("build-ca" in a for a in args)
    }
    assert ca_copies == {0}
    from_first = [
        args
        for stage, keyword, args in instructions
        if stage == final and keyword == "COPY" and any(a.startswith("--from") for a in args)
    ]
    assert from_first == [["--from=venv", "/opt/venv", "/opt/venv"]]


def test_the_build_context_excludes_everything_by_default() -> None:
    """.dockerignore is an allowlist, so `.env` and other local files never reach the image."""
    assert _dockerignore()[0] == "*"


@pytest.mark.parametrize("path", [".env", ".venv", ".git", ".stack", ".tools", "tests"])
def test_the_build_context_leaves_out_local_files(path: str) -> None:
    """Secrets, virtualenvs, history, the stack's state and the tests stay out of the image."""
    assert not _admitted_by_dockerignore(path)


@pytest.mark.parametrize("source", _copy_sources())
def test_every_file_the_dockerfile_copies_is_in_the_build_context(source: str) -> None:
    """Each file or folder the Dockerfile copies exists and .dockerignore admits it."""
    if any(char in source for char in "*?["):  # a glob may match nothing (build-ca.pe[m])
        assert _admitted_by_dockerignore(source.replace("[", "").replace("]", ""))
        return
    assert (REPO / source).exists()
    assert _admitted_by_dockerignore(source)


@pytest.mark.parametrize("service", AIRFLOW_SERVICES)
def test_airflow_services_read_the_generated_settings(service: str) -> None:
    """Each Airflow service reads Airflow's settings from the generated env file of its role."""
    expected = "docker/airflow-worker.env" if service == WORKER else "docker/airflow.env"
    assert SERVICES[service]["env_file"] == expected


@pytest.mark.parametrize("setting", WORKER_WITHHELD)
def test_the_workers_get_no_signing_secret_database_or_credential_key(setting: str) -> None:
    """A Celery worker gets no JWT secret, Fernet key, metadata database or password file."""
    assert setting not in _environment(SERVICES[WORKER])
    assert setting in _environment(SERVICES["airflow-scheduler"])


@pytest.mark.parametrize("variable", INIT_ONLY_SECRETS)
@pytest.mark.parametrize("service", [s for s in SERVICES if s not in ("airflow-init", "warehouse")])
def test_no_service_but_init_sees_the_admin_password_or_admin_token(
    service: str, variable: str
) -> None:
    """The admin password and the warehouse admin token reach no Airflow component, worker
    or database: neither by name nor interpolated into another setting."""
    env = _environment(SERVICES[service])
    assert variable not in env
    assert not any(f"${{{variable}" in value for value in env.values())


def test_the_warehouse_sees_its_admin_token_but_not_the_admin_password() -> None:
    """The warehouse serves /_admin with its token; Airflow's password is none of its business."""
    env = _environment(SERVICES["warehouse"])
    assert "WAREHOUSE_ADMIN_TOKEN" in env
    assert not any("AIRFLOW_ADMIN_PASSWORD" in f"{key}={value}" for key, value in env.items())


# === compose against the local stack's Celery mode =======================================
# The local stack (`make up EXECUTOR=celery`) as shipping/ops/stack/ builds it, without
# starting anything: its supervised programs with their command lines, and the environment
# each one runs with (what the exec wrapper makes of supervisord's environment and the
# program's environment file). The tests below compare compose with that, not with a copy.

#: Compose service -> the local stack's program. The one `airflow-worker` service is
#: scaled to N replicas; the stack runs worker-1 ... worker-N.
COMPOSE_TO_STACK: Mapping[str, str] = {
    "postgres": "postgres",
    "redis": "redis",
    "warehouse": "warehouse",
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    WORKER: "worker-N",
}
#: airflow-init is not a program of the stack: `up` runs the same bootstrap (databases,
#: migration, pool) itself, with the Airflow components' environment, before starting them.
BOOTSTRAP = "airflow-init"
#: Each compose Airflow service and its counterpart in the stack.
AIRFLOW_PAIRS = [
    (BOOTSTRAP, "bootstrap"),
    *((name, program) for name, program in COMPOSE_TO_STACK.items() if name in AIRFLOW_SERVICES),
]

#: Flags of the stack's Airflow command lines that compose leaves out.
ONLY_LOCAL_FLAGS: Mapping[str, str] = {
    # Airflow's log servers bind every interface of the host (hard-coded), so the stack
    # runs none and the UI reads the shared log folder. In compose they listen inside the
    # compose network only (nothing is published) and serve the logs of running tasks.
    "--skip-serve-logs": "host-specific",
    # worker-N@host keeps the stack's workers on one host apart; each compose replica is a
    # container of its own, named celery@<its hostname> (what its healthcheck pings).
    "--celery-hostname": "host-specific",
    # Compose sets the same number as AIRFLOW__CELERY__WORKER_CONCURRENCY, the option's
    # default (checked below), so that one setting holds it.
    "--concurrency": "the same value as a setting",
}
#: The flags above that take a value (worker-1@%h, 4): not subcommands.
VALUE_FLAGS = frozenset({"--celery-hostname", "--concurrency"})


class LocalStack(NamedTuple):
    """The local stack in Celery mode, as shipping/ops/stack/ builds it."""

    #: Each supervised program by name (its command line, stop signal and wait).
    programs: dict[str, Program]
    #: The environment each program runs with.
    envs: dict[str, dict[str, str]]
    #: The environment of the bootstrap commands (`airflow db migrate`, `pools set`).
    bootstrap_env: dict[str, str]


def _build_local_stack(directory: Path) -> LocalStack:
    from shipping.ops import localpg
    from shipping.ops.stack import HOST, Stack, environment
    from shipping.ops.stack import programs as stack_programs
    from shipping.ops.state import StackState

    # Only what selects Celery mode: every other setting at the stack's default. PATH
    # for the redis-server the stack finds there (or in the project's environment).
    env = {"SHIPPING_EXECUTOR": "celery", "PATH": os.environ.get("PATH", "")}
    stack = Stack(directory=directory, env=env, echo=lambda _: None)
    # The stack's embedded PostgreSQL (its command line does not matter here).
    pg = localpg.ServerCommand(["postgres", "-D", str(directory / "pg")], None, "postgresql://")
    programs = {p.name: p for p in stack_programs.programs(stack, pg, stack.executor)}
    # What `up` records before it configures Airflow (databases.prepare), with test secrets.
    state = StackState(
        airflow_url=f"http://{HOST}:{stack.ports.airflow}",
        warehouse_url=f"http://{HOST}:{stack.ports.warehouse}",
        admin_password="admin-password-of-the-test",
        warehouse_api_token="client-token-of-the-test",
        warehouse_admin_token="admin-token-of-the-test",
        ledger_url=f"postgresql+psycopg2://u:pw@{HOST}:5432/{contract.LEDGER_DATABASE}",
        postgres_url=f"postgresql+psycopg2://u:pw@{HOST}:5432/postgres",
        embedded_postgres=True,
        executor=stack.executor.kind,
        celery_workers=stack.executor.workers,
        celery_concurrency=stack.executor.concurrency,
        broker_url=stack_programs.own_redis_url(stack),
        embedded_redis=True,
    )
    environment.write_env_files(stack, state, stack.executor)
    envs = {}
    for name, program in programs.items():
        program_env = environment.base_env(stack)
        if program.env_file is not None:
            for key, value in json.loads(program.env_file.read_text()).items():
                if value is None:
                    program_env.pop(key, None)
                else:
                    program_env[key] = value
        envs[name] = program_env
    return LocalStack(programs, envs, environment.airflow_env(stack, state))


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> LocalStack:
    return _build_local_stack(tmp_path_factory.mktemp("stack"))


def _kind(program: str) -> str:
    """The stack's program name with a worker's number generalised (worker-2 -> worker-N)."""
    return re.sub(r"^worker-\d+$", "worker-N", program)


def _local_programs(local: LocalStack, kind: str) -> list[str]:
    names = [name for name in local.programs if _kind(name) == kind]
    assert names, f"the local stack runs no {kind}"
    return names


def _local_env(local: LocalStack, compose_service: str) -> list[dict[str, str]]:
    """The environments of the stack's counterparts of a compose Airflow service."""
    if compose_service == BOOTSTRAP:
        return [local.bootstrap_env]
    return [local.envs[name] for name in _local_programs(local, COMPOSE_TO_STACK[compose_service])]


def test_compose_runs_the_services_of_the_local_stack(local: LocalStack) -> None:
    """Each compose service is one of the stack's programs, and each program a compose service."""
    assert set(SERVICES) == {*COMPOSE_TO_STACK, BOOTSTRAP}
    assert {_kind(name) for name in local.programs} == set(COMPOSE_TO_STACK.values())


def test_the_local_stack_runs_several_workers_as_compose_scales_one(local: LocalStack) -> None:
    """The stack's Celery mode has worker-1 ... worker-N (N > 1 by default)."""
    from shipping.ops.executor import DEFAULT_WORKERS

    assert _local_programs(local, "worker-N") == [
        f"worker-{i}" for i in range(1, DEFAULT_WORKERS + 1)
    ]


@pytest.mark.parametrize(("service", "program"), [p for p in AIRFLOW_PAIRS if p[0] != BOOTSTRAP])
def test_compose_runs_the_same_airflow_command(
    local: LocalStack, service: str, program: str
) -> None:
    """Each Airflow service runs the stack's Airflow command; flags differ only as listed."""
    compose = _command(SERVICES[service])
    for name in _local_programs(local, program):
        argv = local.programs[name].argv
        assert Path(argv[0]).name == "airflow"
        words = [arg for arg in argv[1:] if not arg.startswith("-")]
        flags = {arg for arg in argv[1:] if arg.startswith("-")}
        compose_words = [arg for arg in compose if not arg.startswith("-")]
        compose_flags = {arg for arg in compose if arg.startswith("-")}
        values = {argv[argv.index(flag) + 1] for flag in flags & VALUE_FLAGS}
        assert compose_words == [word for word in words if word not in values]
        assert compose_flags == flags - set(ONLY_LOCAL_FLAGS)


def test_every_flag_exemption_still_applies(local: LocalStack) -> None:
    """Each flag listed as the stack's own is on one of its Airflow command lines."""
    flags = {
        arg for program in local.programs.values() for arg in program.argv if arg.startswith("-")
    }
    assert set(ONLY_LOCAL_FLAGS) <= flags


def test_a_worker_has_as_many_slots_as_the_stacks(local: LocalStack) -> None:
    """Compose's workers get the stack's `--concurrency` as AIRFLOW__CELERY__WORKER_CONCURRENCY."""
    for name in _local_programs(local, "worker-N"):
        argv = local.programs[name].argv
        slots = argv[argv.index("--concurrency") + 1]
        assert slots == local.envs[name]["AIRFLOW__CELERY__WORKER_CONCURRENCY"]
        assert slots == _environment(SERVICES[WORKER])["AIRFLOW__CELERY__WORKER_CONCURRENCY"]


def test_a_stopped_worker_has_as_long_to_finish_as_the_stacks(local: LocalStack) -> None:
    """A stopped worker alone gets the signal and as long to finish as the stack's workers."""
    for name in _local_programs(local, "worker-N"):
        program = local.programs[name]
        assert program.stop_signal == "TERM"  # what docker stop sends too
        assert program.stop_as_group is False
        assert _the_entrypoint_execs_the_command()
        assert _seconds(SERVICES[WORKER]["stop_grace_period"]) == program.stop_wait_s


def test_redis_keeps_every_write_as_the_stacks(local: LocalStack) -> None:
    """Compose's Redis persists like the stack's: append-only, fsync always, no snapshots."""
    persistence = ("--appendonly", "--appendfsync", "--save")

    def options(argv: list[str]) -> dict[str, str]:
        return {flag: argv[argv.index(flag) + 1] for flag in persistence if flag in argv}

    stack_options = options(local.programs["redis"].argv)
    assert set(stack_options) == set(persistence)
    assert options(_redis_server_argv()) == stack_options


def test_compose_names_airflows_default_auth_manager() -> None:
    """The auth manager compose names explicitly is the one the stack gets by default."""
    spec = importlib.util.find_spec("airflow")
    assert spec
    assert spec.submodule_search_locations
    config = Path(next(iter(spec.submodule_search_locations))) / "config_templates" / "config.yml"
    default = yaml.safe_load(config.read_text())["core"]["options"]["auth_manager"]["default"]
    assert AIRFLOW_ENV["AIRFLOW__CORE__AUTH_MANAGER"] == default


@pytest.mark.parametrize(("service", "program"), AIRFLOW_PAIRS)
def test_compose_gives_the_connections_the_stack_gives(
    local: LocalStack, service: str, program: str
) -> None:
    """The same connection ids, types and fields (their hosts and secrets differ)."""

    def connections(env: Mapping[str, str]) -> dict[str, tuple[str, list[str]]]:
        found = {}
        for key, value in env.items():
            if key.startswith("AIRFLOW_CONN_"):
                conn = json.loads(_resolve(value))
                found[key] = (conn["conn_type"], sorted(conn))
        return found

    compose = connections(_environment(SERVICES[service]))
    for env in _local_env(local, service):
        assert compose == connections(env)
        assert set(compose) == {WAREHOUSE_CONN_VAR, LEDGER_CONN_VAR}


def test_airflow_init_creates_the_stacks_pools() -> None:
    """airflow-init creates the pools the stack creates, with the same slots."""
    from shipping.ops.stack import BOOTSTRAP_POOLS

    pools = re.findall(r"airflow pools set (\S+) (\d+)", _script(SERVICES[BOOTSTRAP]))
    assert {name: int(slots) for name, slots in pools} == dict(BOOTSTRAP_POOLS)
    assert dict(BOOTSTRAP_POOLS) == {contract.WAREHOUSE_POOL: contract.WAREHOUSE_POOL_SLOTS}


def _dag_files(folder: Path) -> set[str]:
    """The files of a DAG folder that Airflow can read (not bytecode caches)."""
    return {
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def test_the_image_bakes_the_stacks_dag_folder(local: LocalStack) -> None:
    """The Dockerfile copies every file of the stack's DAG folder to compose's DAGS_FOLDER."""
    folders = {
        Path(env["AIRFLOW__CORE__DAGS_FOLDER"])
        for env in local.envs.values()
        if "AIRFLOW__CORE__DAGS_FOLDER" in env
    }
    (folder,) = folders
    assert folder.resolve().parent == REPO
    source = folder.resolve().relative_to(REPO).as_posix()
    copies = [
        args[-2:]
        for _, keyword, args in _dockerfile()
        if keyword == "COPY" and not any(arg.startswith("--from") for arg in args)
    ]
    assert [source, AIRFLOW_ENV["AIRFLOW__CORE__DAGS_FOLDER"]] in copies
    files = _dag_files(folder)
    assert f"{contract.DAG_ID}.py" in files
    assert {f for f in files if _admitted_by_dockerignore(f"{source}/{f}")} == files


def test_airflow_init_refuses_placeholder_and_weak_secrets_first() -> None:
    """airflow-init checks the secrets before anything else, and gets each one to check."""
    from shipping.ops.compose_secrets import SECRETS

    script = SERVICES["airflow-init"]["command"][-1]
    commands = [line.strip() for line in script.splitlines() if line.strip()]
    first = next(line for line in commands if not line.startswith(("set ", "echo ")))
    assert first == "python -m shipping.ops.compose_secrets"
    env = _environment(SERVICES["airflow-init"])
    for name in SECRETS:
        assert re.fullmatch(rf"\$\{{{name}:\?[^}}]+\}}", env[name]), name


def test_the_warehouse_gets_its_token_list_when_set() -> None:
    """WAREHOUSE_API_TOKENS (the rotation list) reaches the warehouse, empty when unset;
    the pipeline's connection keeps sending WAREHOUSE_API_TOKEN."""
    assert (
        _environment(SERVICES["warehouse"])["WAREHOUSE_API_TOKENS"] == "${WAREHOUSE_API_TOKENS:-}"
    )
    assert "${WAREHOUSE_API_TOKEN:?" in AIRFLOW_ENV[WAREHOUSE_CONN_VAR]
    assert "WAREHOUSE_API_TOKENS" not in AIRFLOW_ENV[WAREHOUSE_CONN_VAR]
