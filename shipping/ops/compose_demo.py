"""``make compose-demo``: the docker-compose stack, end to end, on a real Docker engine.

Phases, each timed:

1. *engine*: a Docker engine answers (``--start-dockerd`` starts one as root when none
   runs) and a compose command exists (``docker compose`` or ``docker-compose`` 1.29);
2. *bases*: the official base images when they are present or can be pulled, else the
   local ones of ``docker/base/build.sh`` (Debian bookworm by debootstrap);
3. *build*: the project's image from a build context of its own, which carries the CA
   bundle that ``SSL_CERT_FILE`` names (for a TLS-intercepting proxy) only when it is set;
   the final image is then checked not to contain it;
4. *up*: the stack with two Celery workers, under a project name of its own, with fresh
   random secrets in an env file of mode 0600, until every service is healthy;
   *roles*: in the scheduler's and the warehouse's containers, each database URL there
   (Airflow's, the ledger's, the warehouse's) must reach its own database and no other
   (``python -m shipping.ops.compose_databases --check``);
5. *orders*: the sample orders of ``docs/examples`` posted over Airflow's REST API from
   the host; each must end ``SHIPPED`` in the ledger with exactly one warehouse shipment
   per line, the ledger's shipment ids being the warehouse's;
6. *worker kill*: a large order, and the worker container running its lines killed
   mid-order (SIGKILL); the order must still ship each line exactly once;
7. *down*: ``down -v``, also when a phase failed.

Exit code 0 when everything held, 1 with the reason otherwise.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipping.contract import AIRFLOW_ADMIN_USER, DAG_ID
from shipping.ops import compose_secrets
from shipping.ops.airflow_api import AirflowClient, TriggerStatus
from shipping.ops.compose_images import BUILD_CA as BUILD_CA
from shipping.ops.compose_images import IMAGE as IMAGE
from shipping.ops.compose_images import REPO as REPO
from shipping.ops.compose_images import DemoFailure as DemoFailure
from shipping.ops.compose_images import build_context as build_context
from shipping.ops.compose_images import build_image, choose_bases, run_command, wait_for
from shipping.ops.compose_images import ensure_engine as ensure_engine
from shipping.ops.samples import sample_order
from shipping.order import parse_order
from shipping.warehouse import WarehouseClient

logger = logging.getLogger(__name__)

EXAMPLES = REPO / "docs" / "examples"
WORKER = "airflow-worker"
#: The containers whose database URLs are tried: the scheduler has Airflow's and the
#: ledger's, the warehouse its own.
ROLE_CHECK_SERVICES = ("airflow-scheduler", "warehouse")
SHIP_TASK = "ship_item"


@dataclass
class Timings:
    """How long each phase took, in order."""

    phases: list[tuple[str, float, str]] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase ``name``; record it as failed if it raises."""
        print(f"\n== {name}", flush=True)
        start = time.monotonic()
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        finally:
            elapsed = time.monotonic() - start
            self.phases.append((name, elapsed, outcome))
            print(f"-- {name}: {outcome} in {elapsed:.1f} s", flush=True)

    def report(self) -> str:
        """The phases as a table, with the total."""
        lines = [f"{'phase':<14} {'seconds':>8}  outcome"]
        lines += [f"{name:<14} {secs:>8.1f}  {outcome}" for name, secs, outcome in self.phases]
        lines.append(f"{'total':<14} {sum(s for _, s, _ in self.phases):>8.1f}")
        return "\n".join(lines)


# ------------------------------------------------------------------------ compose
def _free_port(preferred: int) -> int:
    """``preferred`` if it is free on 127.0.0.1 (another stack may hold it), else any free."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            bound: int = sock.getsockname()[1]
            return bound
    raise DemoFailure("no free port on 127.0.0.1")


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@dataclass
class ComposeStack:
    """One compose project of the demo: its command, env file and host ports."""

    compose: list[str]
    project: str
    env_file: Path
    env: dict[str, str]

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.env['SHIPPING_AIRFLOW_PORT']}"

    @property
    def warehouse_url(self) -> str:
        return f"http://127.0.0.1:{self.env['SHIPPING_WAREHOUSE_PORT']}"

    def run(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a compose subcommand on this project."""
        base = [*self.compose, "--project-name", self.project, "--env-file", str(self.env_file)]
        base += ["--file", str(REPO / "docker-compose.yaml"), "--project-directory", str(REPO)]
        return run_command([*base, *args], **kwargs)

    def containers(self, service: str | None = None) -> list[str]:
        """The ids of the project's containers (of one service), running or not."""
        return self.run("ps", "-q", *([service] if service else [])).stdout.split()

    def health(self) -> dict[str, str]:
        """Each container's name with its health (or state, when it has no healthcheck)."""
        ids = self.containers()
        if not ids:
            return {}
        fmt = (
            "{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}"
        )
        out = run_command(["docker", "inspect", "--format", fmt, *ids]).stdout
        return dict(line.lstrip("/").split(" ", 1) for line in out.splitlines() if line)


def make_stack(
    compose: list[str], project: str, bases: dict[str, str], folder: Path
) -> ComposeStack:
    """A stack with fresh random secrets in an env file (0600) under ``folder``."""
    env = {
        "POSTGRES_PASSWORD": secrets.token_hex(24),
        "AIRFLOW_DB_PASSWORD": secrets.token_hex(24),
        "LEDGER_DB_PASSWORD": secrets.token_hex(24),
        "WAREHOUSE_DB_PASSWORD": secrets.token_hex(24),
        "AIRFLOW_ADMIN_PASSWORD": secrets.token_hex(24),
        "REDIS_PASSWORD": secrets.token_hex(24),
        "AIRFLOW_JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW_API_SECRET_KEY": secrets.token_hex(32),
        "AIRFLOW_FERNET_KEY": _fernet_key(),
        "WAREHOUSE_API_TOKEN": secrets.token_hex(24),
        "WAREHOUSE_ADMIN_TOKEN": secrets.token_hex(24),
        "WAREHOUSE_CLIENTS": "",
        "WAREHOUSE_FAULTS": "",
        "SHIPPING_AIRFLOW_PORT": str(_free_port(8080)),
        "SHIPPING_WAREHOUSE_PORT": str(_free_port(8081)),
        **bases,
    }
    if faults := compose_secrets.problems(env):  # what airflow-init would refuse
        raise DemoFailure("generated secrets refused: " + "; ".join(faults))
    env_file = folder / "compose.env"
    fd = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.writelines(f"{key}={value}\n" for key, value in env.items())
    return ComposeStack(compose, project, env_file, env)


def start(stack: ComposeStack, workers: int, timeout: float) -> None:
    """Start the stack with ``workers`` Celery workers; wait until all are healthy."""
    stack.run("up", "--detach", "--no-build", "--scale", f"{WORKER}={workers}", capture=False)

    def all_healthy() -> dict[str, str] | None:
        health = stack.health()
        waiting = {
            name: state
            for name, state in health.items()
            if state != "healthy" and "airflow-init" not in name
        }
        running_workers = sum(
            1 for name in health if WORKER.replace("-", "_") in name or WORKER in name
        )
        return health if health and not waiting and running_workers == workers else None

    try:
        health = wait_for("every service to be healthy", all_healthy, timeout, poll=5)
    except DemoFailure:
        print(stack.run("ps", check=False).stdout)
        print(stack.run("logs", "--tail", "30", check=False).stdout[-6000:])
        raise
    print(f"healthy: {', '.join(sorted(health))}")


def check_database_roles(stack: ComposeStack) -> None:
    """Each service's database role reaches its own database and no other."""
    for service in ROLE_CHECK_SERVICES:
        command = ["python", "-m", "shipping.ops.compose_databases", "--check"]
        done = stack.run("exec", "-T", service, *command, check=False)
        if done.returncode != 0:
            raise DemoFailure(f"{service}: {(done.stderr or done.stdout).strip()}")
        print(f"{service}: {done.stdout.strip()}")


# ------------------------------------------------------------------------- orders
def ledger_status(stack: ComposeStack, order_id: str) -> dict[str, Any] | None:
    """The order as ``shipping status --json`` prints it inside the scheduler's container."""
    done = stack.run(
        "exec", "-T", "airflow-scheduler", "shipping", "status", order_id, "--json", check=False
    )
    if done.returncode != 0:
        return None
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def check_exactly_once(
    stack: ComposeStack, warehouse: WarehouseClient, order: dict[str, Any]
) -> list[str]:
    """What is wrong with a finished order: empty when it SHIPPED, each line exactly once."""
    order_id = order["order_id"]
    status = ledger_status(stack, order_id)
    if status is None:
        return [f"{order_id}: not in the ledger"]
    problems = []
    if status["state"] != "SHIPPED":
        problems.append(f"{order_id}: ledger state {status['state']}, expected SHIPPED")
    shipments = warehouse.list_shipments(order_id)
    per_line = Counter(s["line_id"] for s in shipments)
    by_line = {s["line_id"]: s["shipment_id"] for s in shipments}
    expected = {item["line_id"] for item in order["items"]}
    if extra := set(per_line) - expected:
        problems.append(f"{order_id}: shipments for lines not in the order: {sorted(extra)}")
    ledger_ids = {line["line_id"]: line["shipment_id"] for line in status["lines"]}
    for line_id in sorted(expected):
        if per_line[line_id] != 1:
            problems.append(f"{order_id}:{line_id}: {per_line[line_id]} warehouse shipments")
        elif ledger_ids.get(line_id) != by_line[line_id]:
            problems.append(f"{order_id}:{line_id}: ledger and warehouse shipment ids differ")
    return problems


def post(api: AirflowClient, order: dict[str, Any]) -> str:
    """Post an order over REST; return its run id."""
    parsed = parse_order(order)
    outcome = api.trigger(DAG_ID, parsed.run_id, order)
    if outcome.status is not TriggerStatus.ACCEPTED:
        raise DemoFailure(f"order {parsed.order_id}: {outcome.status.value} {outcome.reason}")
    print(f"posted {parsed.order_id} ({len(parsed.items)} lines) as run {parsed.run_id}")
    return parsed.run_id


def finish(api: AirflowClient, run_id: str, timeout: float) -> None:
    """Wait for the run to end; fail unless it succeeded."""
    try:
        run = api.wait_for_run(DAG_ID, run_id, timeout=timeout, poll=2)
    except TimeoutError as exc:
        raise DemoFailure(str(exc)) from exc
    if run["state"] != "success":
        failed = [ti for ti in api.task_instances(DAG_ID, run_id) if ti["state"] != "success"]
        detail = []
        for ti in failed[:3]:
            where = f"{ti['task_id']}[{ti.get('map_index', -1)}] {ti['state']}"
            try:
                log = api.task_log(DAG_ID, run_id, ti["task_id"], max(ti["try_number"], 1))
            except (LookupError, RuntimeError) as exc:
                log = f"(no log: {exc})"
            detail.append(f"{where}:\n" + "\n".join(log.splitlines()[-15:]))
        raise DemoFailure(f"run {run_id} ended {run['state']}\n" + "\n".join(detail))


def sample_orders() -> list[dict[str, Any]]:
    """The orders of docs/examples."""
    return [json.loads(path.read_text()) for path in sorted(EXAMPLES.glob("*.json"))]


def post_samples(stack: ComposeStack, api: AirflowClient, warehouse: WarehouseClient) -> None:
    """Post the sample orders; each must ship every line exactly once."""
    orders = sample_orders()
    if not orders:
        raise DemoFailure(f"no sample orders in {EXAMPLES.relative_to(REPO)}")
    runs = [post(api, order) for order in orders]
    for order, run_id in zip(orders, runs, strict=True):
        finish(api, run_id, timeout=600)
        if problems := check_exactly_once(stack, warehouse, order):
            raise DemoFailure("; ".join(problems))
        print(f"{order['order_id']}: SHIPPED, {len(order['items'])} lines, each shipped once")


def kill_worker_mid_order(
    stack: ComposeStack, api: AirflowClient, warehouse: WarehouseClient, lines: int
) -> None:
    """Kill the worker running a large order's lines; the order must still ship once."""
    order = sample_order(f"KILL-{time.strftime('%H%M%S')}", lines)
    run_id = post(api, order)
    workers = {cid[:12]: cid for cid in stack.containers(WORKER)}

    def victim() -> str | None:
        running = [
            ti
            for ti in api.mapped_instances(DAG_ID, run_id, SHIP_TASK)
            if ti["state"] == "running" and ti.get("hostname")
        ]
        shipped = len(warehouse.list_shipments(order["order_id"]))
        for ti in running:
            for short, cid in workers.items():
                # Mid-order: some lines shipped already, others still to come.
                if lines // 10 <= shipped < lines and short in str(ti["hostname"]):
                    return cid
        return None

    container = wait_for("a worker running a line of the large order", victim, 300, poll=0.5)
    shipped = len(warehouse.list_shipments(order["order_id"]))
    run_command(["docker", "kill", container])
    print(f"killed worker {container[:12]} with {shipped}/{lines} lines shipped")
    finish(api, run_id, timeout=900)
    retried = [ti for ti in api.mapped_instances(DAG_ID, run_id, SHIP_TASK) if ti["try_number"] > 1]
    if problems := check_exactly_once(stack, warehouse, order):
        raise DemoFailure("; ".join(problems))
    print(
        f"{order['order_id']}: SHIPPED, {lines} lines, each shipped once "
        f"({len(retried)} lines ran again after the kill)"
    )


# --------------------------------------------------------------------------- main
def run(args: argparse.Namespace) -> int:
    """Run every phase; ``down -v`` whatever happens. Return the exit code."""
    timings = Timings()
    stack: ComposeStack | None = None
    failure: str | None = None
    with tempfile.TemporaryDirectory(prefix="shipping-compose-") as scratch:
        # With --keep the env file outlives the run: compose needs it to take the stack down.
        folder = tempfile.mkdtemp(prefix="shipping-compose-") if args.keep else scratch
        try:
            with timings.phase("engine"):
                compose = ensure_engine(start=args.start_dockerd)
                print(f"compose command: {' '.join(compose)}")
            with timings.phase("bases"):
                bases = choose_bases(dict(os.environ))
                print("bases: " + ", ".join(f"{k}={v}" for k, v in bases.items()))
            with timings.phase("build"):
                ca = os.environ.get("SSL_CERT_FILE") or None
                if ca and not Path(ca).is_file():
                    raise DemoFailure(f"SSL_CERT_FILE names no file: {ca}")
                build_image(bases["SHIPPING_PYTHON_IMAGE"], ca)
            stack = make_stack(compose, args.project, bases, Path(folder))
            # Leftovers of an interrupted run of the same project would not be fresh.
            stack.run("down", "--volumes", "--remove-orphans", check=False)
            with timings.phase("up"):
                start(stack, args.workers, timeout=args.timeout)
            with timings.phase("roles"):
                check_database_roles(stack)
            with (
                AirflowClient(
                    stack.airflow_url, AIRFLOW_ADMIN_USER, stack.env["AIRFLOW_ADMIN_PASSWORD"]
                ) as api,
                WarehouseClient(stack.warehouse_url, stack.env["WAREHOUSE_API_TOKEN"]) as warehouse,
            ):
                with timings.phase("orders"):
                    post_samples(stack, api, warehouse)
                with timings.phase("worker kill"):
                    kill_worker_mid_order(stack, api, warehouse, args.kill_lines)
        except DemoFailure as exc:
            failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported, then the stack still goes down
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            if stack is not None and not args.keep:
                with timings.phase("down"):
                    stack.run("down", "--volumes", "--remove-orphans", check=False, capture=False)
            elif stack is not None:
                print(
                    f"\nkept: take it down with {' '.join(stack.compose)} --project-name "
                    f"{stack.project} --env-file {stack.env_file} down --volumes"
                )
    print("\n" + timings.report())
    if failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
        return 1
    print(f"\nOK: compose demo passed ({args.workers} workers, one killed mid-order).")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``make compose-demo``."""
    parser = argparse.ArgumentParser(prog="compose-demo", description=__doc__.split("\n")[0])
    parser.add_argument("--project", default="shipping-demo", help="compose project name")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    parser.add_argument(
        "--kill-lines", type=int, default=40, help="lines of the order whose worker is killed"
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds to become healthy")
    parser.add_argument(
        "--start-dockerd", action="store_true", help="start dockerd (as root) when none answers"
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack up (no down -v)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
