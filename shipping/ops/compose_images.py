"""The compose demo's images: a Docker engine, the base images, the project's image.

The engine phase finds a Docker engine (starting ``dockerd`` as root when asked) and a
compose command; the bases are the official images when present or pullable, else the
local ones of ``docker/base/build.sh``; the project's image is built from a context of its
own, which carries the CA bundle ``SSL_CERT_FILE`` names only when it is set, and is
checked not to keep it.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
IMAGE = "shipping-airflow:local"
# The build context: what the Dockerfile copies, and nothing else.
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "uv.lock", "README.md")
CONTEXT_DIRS = ("shipping", "warehouse_mock", "dags")
BUILD_CA = "build-ca.pem"
# Official base images (the defaults of docker-compose.yaml and the Dockerfile) and the
# local ones docker/base/build.sh makes, by the variable that selects each.
OFFICIAL_BASES = {
    "SHIPPING_PYTHON_IMAGE": "python:3.11-slim-bookworm",
    "SHIPPING_POSTGRES_IMAGE": "postgres:16",
    "SHIPPING_REDIS_IMAGE": "redis:7.2-bookworm",
}
LOCAL_BASES = {
    "SHIPPING_PYTHON_IMAGE": "shipping-base/python:3.11-bookworm",
    "SHIPPING_POSTGRES_IMAGE": "shipping-base/postgres:15-bookworm",
    "SHIPPING_REDIS_IMAGE": "shipping-base/redis:7.0-bookworm",
}
INSTALL_HINT = (
    "install Docker (Debian, as root: apt-get install -y docker.io debootstrap docker-compose) "
    "and start its engine (as root: dockerd >/var/log/dockerd.log 2>&1 &)"
)


_T = TypeVar("_T")


class DemoFailure(RuntimeError):
    """A phase of the demo found something wrong; the message says what."""


def run_command(
    argv: Sequence[str], *, check: bool = True, capture: bool = True, timeout: float = 1800
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise DemoFailure with its last output lines."""
    logger.debug("running %s", argv)
    try:
        done = subprocess.run(
            list(argv), capture_output=capture, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise DemoFailure(f"{argv[0]} not found: {INSTALL_HINT}") from exc
    except subprocess.TimeoutExpired as exc:
        raise DemoFailure(f"{' '.join(argv[:4])} ... still running after {timeout:.0f} s") from exc
    if check and done.returncode != 0:
        tail = "\n".join(((done.stdout or "") + (done.stderr or "")).splitlines()[-25:])
        raise DemoFailure(f"{' '.join(argv[:6])} failed (exit {done.returncode}):\n{tail}")
    return done


def wait_for(what: str, probe: Callable[[], _T | None], timeout: float, poll: float = 2.0) -> _T:
    """Call ``probe`` until it returns something other than None; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = probe()
        except (OSError, RuntimeError) as exc:  # a service still starting
            logger.debug("%s: %s", what, exc)
            found = None
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise DemoFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


# ------------------------------------------------------------------------- engine
def _engine_answers() -> bool:
    return run_command(["docker", "info"], check=False, timeout=60).returncode == 0


def ensure_engine(*, start: bool) -> list[str]:
    """Check the Docker engine (starting dockerd if asked); return the compose command.

    Raises:
        DemoFailure: No docker CLI, no engine or no compose command, naming what to install.
    """
    if shutil.which("docker") is None:
        raise DemoFailure(f"no docker command: {INSTALL_HINT}")
    if not _engine_answers():
        if not start:
            raise DemoFailure(f"the Docker engine does not answer (docker info): {INSTALL_HINT}")
        if os.geteuid() != 0 or shutil.which("dockerd") is None:
            raise DemoFailure(f"no engine, and dockerd cannot be started here: {INSTALL_HINT}")
        print("starting dockerd (log: /var/log/dockerd.log)")
        with open("/var/log/dockerd.log", "ab") as log:
            subprocess.Popen(  # left running: the engine outlives the demo
                ["dockerd"], stdout=log, stderr=log, start_new_session=True
            )
        wait_for("dockerd to answer", lambda: True if _engine_answers() else None, 60)
    if run_command(["docker", "compose", "version"], check=False).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose") is not None:
        return ["docker-compose"]
    raise DemoFailure(
        "no compose command (docker compose or docker-compose): "
        "install one (Debian: apt-get install -y docker-compose)"
    )


# -------------------------------------------------------------------------- bases
def _image_present(image: str) -> bool:
    return run_command(["docker", "image", "inspect", image], check=False).returncode == 0


def choose_bases(env: dict[str, str]) -> dict[str, str]:
    """The base images to use: as set in ``env``, else official if at hand, else local.

    The official images are used when each is present or can be pulled. Otherwise
    ``docker/base/build.sh`` builds (or finds) the local ones, and those are used for all
    three, so that the stack runs on one Debian release.
    """
    if all(env.get(name) for name in OFFICIAL_BASES):
        return {name: env[name] for name in OFFICIAL_BASES}
    missing = [
        image
        for image in OFFICIAL_BASES.values()
        if not _image_present(image)
        and run_command(["docker", "pull", image], check=False, timeout=600).returncode != 0
    ]
    if not missing:
        print("official base images: present")
        return dict(OFFICIAL_BASES)
    print(f"cannot pull {', '.join(missing)}: using local bases (docker/base/build.sh)")
    run_command([str(REPO / "docker" / "base" / "build.sh")], capture=False, timeout=3600)
    return dict(LOCAL_BASES)


# -------------------------------------------------------------------------- build
def build_context(target: Path, ca_bundle: str | None) -> None:
    """Fill ``target`` with what the Dockerfile copies, plus the CA bundle when given."""
    for name in CONTEXT_FILES:
        shutil.copy2(REPO / name, target / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in CONTEXT_DIRS:
        shutil.copytree(REPO / name, target / name, ignore=ignore)
    (target / "docker").mkdir()
    shutil.copy2(REPO / "docker" / "entrypoint.sh", target / "docker" / "entrypoint.sh")
    if ca_bundle:
        shutil.copyfile(ca_bundle, target / BUILD_CA)


def build_image(python_image: str, ca_bundle: str | None) -> None:
    """Build the project's image; fail if the CA bundle reached the final image."""
    with tempfile.TemporaryDirectory(prefix="shipping-build-") as context:
        build_context(Path(context), ca_bundle)
        run_command(
            [
                "docker",
                "build",
                "--build-arg",
                f"PYTHON_IMAGE={python_image}",
                "--tag",
                IMAGE,
                context,
            ],
            capture=False,
            timeout=3600,
        )
    history = run_command(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE])
    found = run_command(
        [
            "docker",
            "run",
            "--rm",
            "--entrypoint",
            "sh",
            IMAGE,
            "-c",
            f"find / -xdev -name '{BUILD_CA}' 2>/dev/null; test ! -e /opt/project && echo clean",
        ],
    ).stdout
    if BUILD_CA in history.stdout or BUILD_CA in found or "clean" not in found:
        raise DemoFailure(f"the build's CA bundle reached the image {IMAGE}: {found.strip()}")
