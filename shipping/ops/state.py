"""The local stack's state file: where it listens and its credentials (a contract).

``.stack/state.json`` (mode 0600; ``SHIPPING_STACK_DIR`` moves the folder) holds at least
``admin_password``, ``warehouse_api_token`` and ``warehouse_admin_token``. The stack writes
it; the ``shipping`` command, the demo and the benchmark read it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


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
    #: ``local`` or ``celery`` (``SHIPPING_EXECUTOR`` when the stack was started).
    executor: str = "local"
    #: Celery mode: how many workers run, and the task slots of each.
    celery_workers: int = 0
    celery_concurrency: int = 0
    #: Celery mode: the Redis the stack uses as broker and result backend (with password).
    broker_url: str = ""
    #: Whether that Redis is the stack's own (a supervised service) or SHIPPING_REDIS_URL's.
    embedded_redis: bool = False
    #: Airflow's metadata and the warehouse's database, each as its own role (``ledger_url``
    #: is the ledger's role); empty in a state file of an older stack.
    airflow_database_url: str = ""
    warehouse_database_url: str = ""
    #: Whether each database has a role of its own (False: the server's user for all).
    database_roles: bool = False
    #: Celery mode with the stack's own Redis: which ``redis-server`` runs, its version,
    #: and why that one (:func:`shipping.ops.executor.choose_redis_server`).
    redis_server: str = ""
    redis_version: str = ""
    redis_reason: str = ""
    #: Each service's pid when ``up`` last returned (``status`` asks supervisord for now).
    pids: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        """The state as JSON (it holds secrets: the file is written 0600)."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> StackState:
        """Read a state file, ignoring keys this version does not know."""
        raw = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def stack_dir(env: Mapping[str, str] | None = None) -> Path:
    """The folder holding the stack's state, logs and embedded database."""
    env = os.environ if env is None else env
    return Path(env.get("SHIPPING_STACK_DIR") or PROJECT_ROOT / ".stack").resolve()


def load_state(directory: Path | None = None) -> StackState | None:
    """The state of the stack in ``directory`` (default: :func:`stack_dir`), if it was started."""
    path = (directory or stack_dir()) / "state.json"
    if not path.exists():
        return None
    return StackState.from_json(path.read_text())


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """``path`` as a folder only its owner can enter (0700), made if missing.

    ``mode`` 0710 lets the folder's group pass through, and no more (the stack's embedded
    PostgreSQL, run as its own user when we are root).

    Raises:
        PermissionError: It is a symlink, not a folder, or owned by another user (whoever
            owns it could read or swap the stack's secrets and databases).
    """
    if path.is_symlink():
        raise PermissionError(f"{path} is a symlink; the stack's folder must be a real folder")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise PermissionError(f"{path} is not a folder")
    if info.st_uid != os.geteuid():
        raise PermissionError(
            f"{path} belongs to user id {info.st_uid}, not to you ({os.geteuid()}); "
            "refusing to keep secrets there: remove it or choose SHIPPING_STACK_DIR"
        )
    if stat.S_IMODE(info.st_mode) != mode:
        path.chmod(mode)
    return path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (0600), never through a
    symlink (``O_NOFOLLOW``), whatever mode an older file had. A missing folder is made
    private; an existing one keeps its mode (``make up`` decides it)."""
    if not path.parent.exists():
        private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
