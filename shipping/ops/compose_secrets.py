"""Refuse placeholder and weak secrets before the compose stack starts.

Compose's ``${VAR:?message}`` refuses a missing secret, not a bad one: the
``.env.example`` placeholders (public, and the same for everyone) would pass. This check
runs first in ``airflow-init``, on which every other Airflow service and the warehouse
wait, so a stack with a bad secret does not start; ``make compose-demo`` runs it on the
secrets it generates as well. Run as ``python -m shipping.ops.compose_secrets``: it reads
the variables of :data:`SECRETS` from the environment, prints what is wrong with each
(never the value) and exits 1 if anything is.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from collections.abc import Mapping
from typing import Final

#: The secrets of docker-compose.yaml, each required.
SECRETS: Final = (
    "POSTGRES_PASSWORD",
    "AIRFLOW_DB_PASSWORD",
    "LEDGER_DB_PASSWORD",
    "WAREHOUSE_DB_PASSWORD",
    "AIRFLOW_ADMIN_PASSWORD",
    "REDIS_PASSWORD",
    "AIRFLOW_JWT_SECRET",
    "AIRFLOW_API_SECRET_KEY",
    "AIRFLOW_FERNET_KEY",
    "WAREHOUSE_API_TOKEN",
    "WAREHOUSE_ADMIN_TOKEN",
)
FERNET_VAR: Final = "AIRFLOW_FERNET_KEY"
#: At least 16 characters: 64 bits even for hex, more for anything else.
MIN_LENGTH: Final = 16
PLACEHOLDER_MARK: Final = "change-me"


def _fernet_problem(value: str) -> str | None:
    try:
        raw = base64.urlsafe_b64decode(value.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return "is not url-safe base64"
    if len(raw) != 32:
        return "is not a Fernet key (32 bytes, url-safe base64)"
    if len(set(raw)) < 8:
        return "is a Fernet key with almost no entropy"
    return None


def problems(env: Mapping[str, str]) -> list[str]:
    """What is wrong with the secrets in ``env``: one line per fault, no value shown."""
    found = []
    seen: dict[str, str] = {}
    for name in SECRETS:
        value = env.get(name, "")
        if not value:
            found.append(f"{name} is not set")
            continue
        if PLACEHOLDER_MARK in value.lower():
            found.append(f"{name} is still a placeholder ({PLACEHOLDER_MARK}...): generate one")
        elif name == FERNET_VAR:
            if (fault := _fernet_problem(value)) is not None:
                found.append(f"{name} {fault}")
        elif len(value) < MIN_LENGTH or len(set(value)) < 6:
            found.append(f"{name} is weak: use at least {MIN_LENGTH} random characters")
        if (other := seen.setdefault(value, name)) != name:
            found.append(f"{name} repeats {other}: each secret must be its own")
    return found


def main() -> int:
    """Check the environment's secrets; exit 1 naming each fault."""
    found = problems(os.environ)
    for line in found:
        print(f"refused: {line}", file=sys.stderr)  # noqa: T201 - a command's report
    if found:
        print(  # noqa: T201
            "Set strong values in .env (see .env.example for how to generate them).",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
