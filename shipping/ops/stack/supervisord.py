"""supervisord's configuration for the stack: one program per service."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shipping.ops.supervision import Supervisor


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
