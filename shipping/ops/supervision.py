"""supervisord for the local stack: start it, ask it, stop it, and clean up after crashes.

:mod:`shipping.ops.stack` decides *what* runs (it writes supervisord's configuration);
this module is *how* it runs:

- :class:`Supervisor` starts ``supervisord`` as a daemon with its control socket (a Unix
  socket in the stack folder, no TCP listener) and talks XML-RPC to it: each service's
  state, pid, uptime and restart count; start what is missing; stop everything.
- ``python -m shipping.ops.supervision exec ... NAME -- COMMAND`` is the command supervisord runs for
  every service. It counts the service's starts (supervisord keeps no restart count),
  kills what a crashed predecessor left behind (see :func:`sweep_orphans`), replaces its
  environment with the service's environment file, optionally drops root, and execs the service: the service
  keeps the wrapper's pid, so supervisord watches and signals the service itself.

Why the sweep: supervisord puts every service in its own process group and restarts it
when its main process dies, but a main process killed with SIGKILL leaves its children
behind (the scheduler's LocalExecutor workers and their task processes, PostgreSQL's
backends). Everything the stack starts stays in supervisord's session (nothing calls
``setsid``), so whatever is in that session but no longer below supervisord is such a
leftover. The sweep uses psutil and ``getsid``: the same on Linux and macOS.
PostgreSQL's backends are the exception: they call ``setsid`` themselves, and they exit
by themselves when their postmaster dies (PostgreSQL watches for that).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psutil

logger = logging.getLogger(__name__)

#: supervisord's state names for a service that is up or on its way up by itself.
UP_STATES = frozenset({"RUNNING", "STARTING", "BACKOFF"})
STOP_TIMEOUT_S = 60.0


class SupervisorError(RuntimeError):
    """supervisord could not be reached or refused a request."""


@dataclass(frozen=True)
class ServiceInfo:
    """One service as supervisord sees it."""

    name: str
    state: str
    pid: int
    uptime_s: float
    restarts: int
    logfile: str

    @property
    def running(self) -> bool:
        """Whether the service's process runs (and has stayed up past its start)."""
        return self.state == "RUNNING"


class Supervisor:
    """The supervisord of one stack folder."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.config = directory / "supervisord.conf"
        self.socket = directory / "supervisor.sock"
        self.pidfile = directory / "supervisord.pid"
        #: Start counters of the services, written by the exec wrapper.
        self.run_dir = directory / "run"

    # ------------------------------------------------------------------ daemon
    def pid(self) -> int | None:
        """supervisord's pid if it runs (a stale pid file counts as not running)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def alive(self) -> bool:
        """Whether supervisord runs and answers on its socket."""
        if self.pid() is None:
            return False
        try:
            self._call("getState")
        except (OSError, xmlrpc.client.Error):
            return False
        return True

    def start_daemon(self, env: dict[str, str], timeout: float = 30.0) -> None:
        """Start supervisord in the background (it daemonizes) and wait for its socket.

        The services' start counters are reset: restarts count from this start.
        """
        for counter in self.run_dir.glob("*.starts"):
            counter.unlink()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        result = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.config)],
            env=env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SupervisorError(f"supervisord did not start: {result.stderr.strip()}")
        deadline = time.monotonic() + timeout
        while not self.alive():
            if time.monotonic() > deadline:
                raise SupervisorError(f"supervisord did not answer on {self.socket}")
            time.sleep(0.2)

    def shutdown(self) -> bool:
        """Stop every service (process groups included), then supervisord; sweep leftovers.

        Returns:
            Whether supervisord or any leftover process was running.
        """
        pid = self.pid()
        if pid is None:
            return False
        try:
            self._call("stopAllProcesses", True)
            self._call("shutdown")
        except (OSError, xmlrpc.client.Error) as exc:
            logger.warning("supervisord did not answer (%s); killing it", exc)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if not _wait_gone([pid], STOP_TIMEOUT_S):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Task processes sit in process groups of their own; their supervisor is gone.
        sweep_orphans(session=pid, supervisor_pid=None)
        self.pidfile.unlink(missing_ok=True)
        return True

    def sweep_dead(self) -> list[int]:
        """After supervisord died: kill what its session left running (its old services)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return []
        # A supervisord killed a moment ago may not be reaped yet: give it a few seconds.
        if _alive(pid) and not _wait_gone([pid], timeout=10):
            return []
        self.pidfile.unlink(missing_ok=True)
        return sweep_orphans(session=pid, supervisor_pid=None)

    # --------------------------------------------------------------- services
    def services(self) -> list[ServiceInfo]:
        """Every configured service with its state; empty when supervisord is down."""
        if not self.alive():
            return []
        infos = cast(list[dict[str, Any]], self._call("getAllProcessInfo"))
        result = []
        for info in infos:
            name = str(info["name"])
            running = info["statename"] == "RUNNING"
            result.append(
                ServiceInfo(
                    name=name,
                    state=str(info["statename"]),
                    pid=int(info["pid"]),
                    uptime_s=float(info["now"] - info["start"]) if running else 0.0,
                    restarts=max(0, self.starts(name) - 1),
                    logfile=str(info["stdout_logfile"]),
                )
            )
        return result

    def starts(self, name: str) -> int:
        """How often the service was started since supervisord started."""
        try:
            return int((self.run_dir / f"{name}.starts").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def start(self, name: str) -> None:
        """Start one service (without waiting: the health waits tell when it is up)."""
        try:
            self._call("startProcess", name, False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise SupervisorError(f"{name} did not start: {fault.faultString}") from None

    def stop(self, name: str) -> None:
        """Stop one service (with its process group); supervisord leaves it stopped."""
        try:
            self._call("stopProcess", name, True)
        except xmlrpc.client.Fault as fault:
            if "NOT_RUNNING" not in fault.faultString:
                raise SupervisorError(f"{name} did not stop: {fault.faultString}") from None

    def reload(self) -> tuple[list[str], list[str]]:
        """Re-read the configuration file and add its new programs (not started).

        Returns:
            The programs added and the programs no longer configured (still running:
            :meth:`remove` stops and drops them).
        """
        [[added, _changed, removed]] = self._call("reloadConfig")
        for name in added:
            self._call("addProcessGroup", name)
        return [str(n) for n in added], [str(n) for n in removed]

    def remove(self, names: Iterable[str]) -> None:
        """Stop each service (waiting for its stop to complete) and forget it."""
        for name in names:
            self.stop(name)
            self._call("removeProcessGroup", name)

    def _call(self, method: str, *args: Any) -> Any:
        """One XML-RPC call on the control socket (``supervisor.<method>``)."""
        # A heavy import, only where supervisord is talked to.
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.socket}")
        try:
            proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
            return getattr(proxy.supervisor, method)(*args)
        finally:
            transport.close()


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(pids: Iterable[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:  # gone, or (macOS) in another session: not ours either way
        return None


def sweep_orphans(*, session: int, supervisor_pid: int | None) -> list[int]:
    """SIGKILL every process of ``session`` that ``supervisor_pid`` no longer parents.

    Args:
        session: The session id of the stack (supervisord's pid: it calls ``setsid``).
        supervisor_pid: The live supervisord, whose descendants are spared; None when it
            is gone and everything left in its session is a leftover.

    Returns:
        The pids killed.
    """
    spare = {os.getpid(), os.getppid()}
    if supervisor_pid is not None:
        spare.add(supervisor_pid)
        with contextlib.suppress(psutil.Error):
            spare.update(p.pid for p in psutil.Process(supervisor_pid).children(recursive=True))
    victims = []
    names = []
    for proc in psutil.process_iter():
        if proc.pid in spare or _session_of(proc.pid) != session:
            continue
        with contextlib.suppress(psutil.Error):
            names.append(f"{proc.pid} {' '.join(proc.cmdline())[:60]}")
            proc.kill()
            victims.append(proc)
    psutil.wait_procs(victims, timeout=10)
    if victims:
        logger.warning("killed %d leftover process(es): %s", len(victims), "; ".join(names))
    return [p.pid for p in victims]


# ------------------------------------------------------------------ exec wrapper
def exec_service(
    name: str, argv: Sequence[str], *, run_dir: Path, env_file: Path | None, user: str | None
) -> None:
    """Count the start, sweep a crashed predecessor's leftovers, then exec ``argv``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    counter = run_dir / f"{name}.starts"
    try:
        starts = int(counter.read_text().strip() or 0)
    except (OSError, ValueError):
        starts = 0
    counter.write_text(f"{starts + 1}\n")
    if starts and os.getsid(0) == os.getppid():
        # supervisord (our parent, the leader of our session) restarts us: the previous
        # run died, its children may not have. Never sweep a session we do not lead through
        # our parent (run by hand, the wrapper would otherwise sweep the caller's session).
        sweep_orphans(session=os.getsid(0), supervisor_pid=os.getppid())
    env = dict(os.environ)
    if env_file is not None:
        # The file is the service's whole environment (an allowlist, built by the stack):
        # nothing supervisord was started with reaches the service unless it is there.
        # A null value (a variable a running stack dropped) leaves it out.
        env = {k: v for k, v in json.loads(env_file.read_text()).items() if v is not None}
    if user is not None:
        from shipping.ops.localpg import exec_as

        exec_as(user)
        env.update({k: os.environ[k] for k in ("HOME", "USER", "LOGNAME") if k in os.environ})
    sys.stdout.flush()
    os.execvpe(argv[0], list(argv), env)


def main(argv: list[str] | None = None) -> int:
    """``python -m shipping.ops.supervision exec --run-dir D [--env-file F] [--user U] NAME -- COMMAND``."""
    parser = argparse.ArgumentParser(prog="python -m shipping.ops.supervision")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("exec", help="run one service under supervisord (used in its config)")
    run.add_argument("--run-dir", type=Path, required=True)
    run.add_argument("--env-file", type=Path)
    run.add_argument("--user")
    run.add_argument("name")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        parser.error("no command to run")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    exec_service(args.name, command, run_dir=args.run_dir, env_file=args.env_file, user=args.user)
    return 1  # not reached: exec replaced this process


if __name__ == "__main__":
    sys.exit(main())
