"""The stack's credentials: the admin password's rules and the warehouse tokens.

Credentials come from ``AIRFLOW_ADMIN_PASSWORD``, ``WAREHOUSE_API_TOKEN`` and
``WAREHOUSE_ADMIN_TOKEN`` when set; otherwise they are generated once and kept in the
state folder (mode 0600), never printed. ``WAREHOUSE_API_TOKEN`` is the one token the
pipeline and the ``shipping`` command send (a list is refused); ``WAREHOUSE_API_TOKENS``,
when set, is what the warehouse accepts instead (``NEW,OLD`` while rotating), kept likewise.

Changed warehouse tokens are honoured by ``up`` on a running stack too: the warehouse
restarts when the tokens it accepts (or its admin token) change, Airflow's components
(and workers) when the token the pipeline sends changes; nothing else restarts. On a
stopped stack the next ``up`` starts with them. A variable left unset keeps the value
the stack last ran with.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from shipping.connections import TOKEN_VAR, TOKENS_VAR, single_token, warehouse_connection
from shipping.contract import WAREHOUSE_CONN_ID
from shipping.errors import ConnectionConfigError
from shipping.ops.stack.common import AIRFLOW_COMPONENTS, StackError
from shipping.ops.state import StackState, write_private

if TYPE_CHECKING:
    from shipping.ops.stack.core import Stack

#: Where each generated credential is kept in state.json.
_STATE_KEY: Final = {
    "AIRFLOW_ADMIN_PASSWORD": "admin_password",
    "WAREHOUSE_API_TOKEN": "warehouse_api_token",
    "WAREHOUSE_ADMIN_TOKEN": "warehouse_admin_token",
}
#: The shortest admin password accepted from the environment (a generated one has 24).
MIN_PASSWORD_LENGTH: Final = 12
_COMMON_PASSWORDS: Final = frozenset(
    {"password", "password123", "admin", "administrator", "airflow", "airflow123", "qwerty"}
)
_PLACEHOLDER_MARKERS: Final = ("change-me", "changeme", "change_me", "changethis", "replace-me")


def generated_notice(var: str, value: str, state_file: Path) -> str:
    """What ``make up`` says of a credential it generated: where it is, never the value
    (stdout lands in CI logs)."""
    return (
        f"Generated {var} ({len(value)} characters): kept in {state_file} "
        f"(key {_STATE_KEY[var]}, mode 0600)"
    )


def password_problem(password: str | None) -> str | None:
    """Why an admin password given in the environment is too weak, or None."""
    if password is None or password == "":
        return None  # generated
    lowered = password.lower()
    if lowered in _COMMON_PASSWORDS or any(m in lowered for m in _PLACEHOLDER_MARKERS):
        return "is a well-known or placeholder value; unset it to have one generated"
    if len(password) < MIN_PASSWORD_LENGTH:
        return (
            f"is shorter than {MIN_PASSWORD_LENGTH} characters; use a random one, e.g. "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(18))'`, or unset it"
        )
    return None


ADMIN_TOKEN_VAR = "WAREHOUSE_ADMIN_TOKEN"
#: The file (in the state folder, 0600) keeping ``WAREHOUSE_API_TOKENS`` once set.
ACCEPTED_TOKENS_FILE = "warehouse_api_tokens"
WAREHOUSE_CONN_VAR = f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}"


@dataclass(frozen=True)
class WarehouseTokens:
    """The token the pipeline sends, the tokens the warehouse accepts, the admin token.

    Attributes:
        client: ``WAREHOUSE_API_TOKEN``: one token, sent by the pipeline and the CLI.
        accepted: ``WAREHOUSE_API_TOKENS`` (comma-separated), or None: the warehouse
            then accepts ``client`` alone.
        admin: ``WAREHOUSE_ADMIN_TOKEN``.
    """

    client: str
    accepted: str | None
    admin: str

    @property
    def warehouse_accepts(self) -> str:
        """What the warehouse accepts, as it reads it."""
        return self.accepted or self.client

    def warehouse_env(self) -> dict[str, str | None]:
        """The warehouse service's token variables (None: removed)."""
        return {TOKEN_VAR: self.client, TOKENS_VAR: self.accepted, ADMIN_TOKEN_VAR: self.admin}

    def pipeline_env(self, warehouse_url: str) -> dict[str, str | None]:
        """An Airflow component's: the connection with the one token; never the list."""
        connection = json.dumps(warehouse_connection(warehouse_url, self.client))
        return {WAREHOUSE_CONN_VAR: connection, TOKEN_VAR: self.client, TOKENS_VAR: None}


def check_client_token(stack: Stack, previous: StackState | None) -> None:
    """Refuse, before anything starts, a ``WAREHOUSE_API_TOKEN`` that is a list."""
    if stack.env.get(TOKEN_VAR):
        token, source = stack.env[TOKEN_VAR], TOKEN_VAR
    elif previous is not None:
        token = previous.warehouse_api_token
        source = f"{TOKEN_VAR} as the stack last ran ({stack.dir / 'state.json'})"
    else:
        return
    try:
        single_token(token, source=source)
    except ConnectionConfigError as exc:
        raise StackError(str(exc)) from None


def saved_accepted(stack: Stack) -> str | None:
    """``WAREHOUSE_API_TOKENS`` as the stack last ran with it (None: never set)."""
    path = stack.dir / ACCEPTED_TOKENS_FILE
    if not path.exists():
        return None
    return path.read_text().strip() or None


def wanted_tokens(stack: Stack, state: StackState) -> WarehouseTokens:
    """The warehouse tokens: each variable set now, else what the stack ran with."""
    tokens = WarehouseTokens(
        client=stack.env.get(TOKEN_VAR) or state.warehouse_api_token,
        accepted=stack.env.get(TOKENS_VAR) or saved_accepted(stack),
        admin=stack.env.get(ADMIN_TOKEN_VAR) or state.warehouse_admin_token,
    )
    accepted = [t.strip() for t in tokens.warehouse_accepts.split(",")]
    if tokens.client not in accepted:
        stack.echo(
            f"warning: {TOKEN_VAR} is not among the {TOKENS_VAR} the warehouse accepts: "
            "the warehouse will refuse the pipeline"
        )
    return tokens


def save_tokens(stack: Stack, state: StackState, tokens: WarehouseTokens) -> None:
    """Keep the tokens the stack runs with: in the state file, the accepted list beside it."""
    state.warehouse_api_token = tokens.client
    state.warehouse_admin_token = tokens.admin
    stack.save(state)
    path = stack.dir / ACCEPTED_TOKENS_FILE
    if tokens.accepted:
        write_private(path, tokens.accepted + "\n")
    else:
        path.unlink(missing_ok=True)


def apply_tokens(stack: Stack, state: StackState) -> None:
    """Honour changed warehouse tokens on a running stack, restarting only what reads
    them: the warehouse for what it accepts, Airflow for what the pipeline sends."""
    old = WarehouseTokens(
        state.warehouse_api_token, saved_accepted(stack), state.warehouse_admin_token
    )
    new = wanted_tokens(stack, state)
    if new == old:
        return
    save_tokens(stack, state, new)
    run = stack.supervisor.run_dir
    restart: list[str] = []
    patch_env_file(run / "warehouse.env.json", new.warehouse_env())
    if (new.warehouse_accepts, new.admin) != (old.warehouse_accepts, old.admin):
        restart.append("warehouse")
    pipeline = new.pipeline_env(state.warehouse_url)
    workers = [s.name for s in stack.services() if s.name.startswith("worker-")]
    for name in ["airflow", *workers]:
        patch_env_file(run / f"{name}.env.json", pipeline)
    if new.client != old.client:
        restart += [*AIRFLOW_COMPONENTS, *workers]
    for name in restart:
        stack.echo(f"Restarting {name} with the changed warehouse tokens ...")
        stack.supervisor.stop(name)
        stack.supervisor.start(name)


def patch_env_file(path: Path, values: Mapping[str, str | None]) -> None:
    """Set (None: remove) these variables in a service's environment file, keeping the
    rest as the stack was started."""
    current = json.loads(path.read_text()) if path.exists() else {}
    write_private(path, json.dumps(current | dict(values), indent=2))


def tokens_of(stack: Stack, state: StackState) -> WarehouseTokens:
    """The tokens the stack runs with (as saved; see :func:`wanted_tokens` for new ones)."""
    return WarehouseTokens(
        state.warehouse_api_token, saved_accepted(stack), state.warehouse_admin_token
    )
