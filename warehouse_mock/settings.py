"""Settings of the warehouse service: one object, read from the environment, checked when built.

| variable | meaning | default |
|---|---|---|
| ``WAREHOUSE_DATABASE_URL`` | SQLAlchemy URL of the service's own database | ``sqlite:///warehouse.db`` (current directory) |
| ``WAREHOUSE_API_TOKEN`` | bearer token(s) of the client ``default``, comma-separated (list the new and the old one while rotating) | required |
| ``WAREHOUSE_CLIENTS`` | further clients, JSON ``{"<client id>": ["<token>", ...]}``; each client has its own idempotency keys and sees only its own shipments | none |
| ``WAREHOUSE_ADMIN_TOKEN`` | bearer token of ``/_admin`` | required |
| ``WAREHOUSE_FAULTS`` | faults at start, the JSON of ``PUT /_admin/faults`` | no faults |
| ``WAREHOUSE_RETENTION_HOURS`` | how long stored responses are replayed (>= 24) | 48 |
| ``WAREHOUSE_INFLIGHT_LEASE_SECONDS`` | how long an in-flight claim blocks its key | 30 |

Every error raised here is a :class:`SettingsError` whose message starts with the name of
the variable at fault.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from warehouse_mock.schemas import FaultConfig

DATABASE_URL_VAR: Final = "WAREHOUSE_DATABASE_URL"
API_TOKEN_VAR: Final = "WAREHOUSE_API_TOKEN"
CLIENTS_VAR: Final = "WAREHOUSE_CLIENTS"
ADMIN_TOKEN_VAR: Final = "WAREHOUSE_ADMIN_TOKEN"
FAULTS_VAR: Final = "WAREHOUSE_FAULTS"
RETENTION_VAR: Final = "WAREHOUSE_RETENTION_HOURS"
LEASE_VAR: Final = "WAREHOUSE_INFLIGHT_LEASE_SECONDS"

DEFAULT_DATABASE_URL: Final = "sqlite:///warehouse.db"
DEFAULT_RETENTION_HOURS: Final = 48.0
MIN_RETENTION_HOURS: Final = 24.0  # the contract promises replays for at least a day
DEFAULT_LEASE_SECONDS: Final = 30.0
MAX_LEASE_SECONDS: Final = 3600.0
MIN_TOKEN_LENGTH: Final = 8
#: The client whose tokens are ``WAREHOUSE_API_TOKEN``.
DEFAULT_CLIENT_ID: Final = "default"
_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# Values copied from examples and templates; a service that accepts them is open to anyone.
PLACEHOLDER_TOKENS: Final = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "change-this",
        "replaceme",
        "replace-me",
        "placeholder",
        "password",
        "secret",
        "token",
        "example",
        "xxxxxxxx",
        "12345678",
        "test-token",
        "your-token",
        "your-token-here",
    }
)
# Markers of a value that was meant to be replaced (``change-me-warehouse-api-token``).
PLACEHOLDER_MARKERS: Final = ("change-me", "changeme", "change_me", "changethis", "replace-me")


class SettingsError(ValueError):
    """A setting is missing or wrong; the message starts with the variable's name.

    Attributes:
        variable: The environment variable at fault.
    """

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {message}")


def _check_token(variable: str, token: str) -> None:
    if not token:
        raise SettingsError(variable, "a token is empty")
    lowered = token.lower()
    if lowered in PLACEHOLDER_TOKENS or any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        raise SettingsError(
            variable,
            "a token is a placeholder value; generate one, for example with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise SettingsError(
            variable, f"a token is shorter than {MIN_TOKEN_LENGTH} characters; use a random one"
        )
    if not all("\x21" <= ch <= "\x7e" and ch != "," for ch in token):
        raise SettingsError(variable, "a token must be printable ASCII without spaces or commas")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """The validated configuration of one warehouse process.

    Build it with :meth:`from_env`, or directly in tests; both check every field and raise
    :class:`SettingsError` naming the environment variable that holds it.

    Attributes:
        api_tokens: The tokens of the client ``default``. A client's tokens are
            interchangeable: its idempotency keys and shipments belong to the client, so
            a token rotates (new and old listed together, then the old one dropped)
            without resetting any key.
        admin_token: The token of the ``/_admin`` endpoints.
        other_clients: Further clients by id, each with its tokens; each client has its
            own idempotency keys and sees only its own shipments.
        database_url: SQLAlchemy URL of the service's database (SQLite or PostgreSQL).
        faults: Faults injected from the start.
        retention_hours: How long a stored response is replayed; purged lazily afterwards.
        inflight_lease_seconds: How long an in-flight claim blocks its key before another
            request may take it over (a crashed request leaves its claim behind).
    """

    api_tokens: tuple[str, ...] = field(repr=False)
    admin_token: str = field(repr=False)
    other_clients: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    database_url: str = DEFAULT_DATABASE_URL
    faults: FaultConfig = field(default_factory=FaultConfig)
    retention_hours: float = DEFAULT_RETENTION_HOURS
    inflight_lease_seconds: float = DEFAULT_LEASE_SECONDS

    def __post_init__(self) -> None:
        if not self.api_tokens:
            raise SettingsError(API_TOKEN_VAR, "at least one client token is required")
        for token in self.api_tokens:
            _check_token(API_TOKEN_VAR, token)
        owner: dict[str, str] = dict.fromkeys(self.api_tokens, DEFAULT_CLIENT_ID)
        for client, tokens in self.other_clients.items():
            if client == DEFAULT_CLIENT_ID or not _CLIENT_ID.fullmatch(client):
                raise SettingsError(
                    CLIENTS_VAR,
                    f"client id {client!r} must be 1-64 of A-Z a-z 0-9 _ . - and not "
                    f"{DEFAULT_CLIENT_ID!r}",
                )
            if not tokens:
                raise SettingsError(CLIENTS_VAR, f"client {client!r} has no token")
            for token in tokens:
                _check_token(CLIENTS_VAR, token)
                if owner.setdefault(token, client) != client:
                    raise SettingsError(CLIENTS_VAR, f"client {client!r} shares a token")
        _check_token(ADMIN_TOKEN_VAR, self.admin_token)
        if self.admin_token in owner:
            raise SettingsError(ADMIN_TOKEN_VAR, "must differ from every client token")
        try:
            make_url(self.database_url).get_dialect()
        except (ArgumentError, NoSuchModuleError, ValueError) as exc:
            raise SettingsError(
                DATABASE_URL_VAR, f"not a usable SQLAlchemy database URL ({exc})"
            ) from None
        if not (
            math.isfinite(self.retention_hours) and self.retention_hours >= MIN_RETENTION_HOURS
        ):
            raise SettingsError(
                RETENTION_VAR,
                f"must be a number of hours >= {MIN_RETENTION_HOURS:g}, got {self.retention_hours!r}",
            )
        if not (0 < self.inflight_lease_seconds <= MAX_LEASE_SECONDS):
            raise SettingsError(
                LEASE_VAR,
                f"must be a number of seconds in (0, {MAX_LEASE_SECONDS:g}], "
                f"got {self.inflight_lease_seconds!r}",
            )

    @property
    def clients(self) -> dict[str, tuple[str, ...]]:
        """Every client's id with its tokens, the client ``default`` first."""
        return {DEFAULT_CLIENT_ID: self.api_tokens, **self.other_clients}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and check the settings.

        Args:
            environ: The variables to read; ``os.environ`` when omitted.

        Returns:
            The checked settings.

        Raises:
            SettingsError: A variable is missing or invalid; the message names it.
        """
        env = os.environ if environ is None else environ

        api_raw = env.get(API_TOKEN_VAR)
        if api_raw is None:
            raise SettingsError(API_TOKEN_VAR, "is not set; give the client token(s)")
        api_tokens = tuple(dict.fromkeys(part.strip() for part in api_raw.split(",")))
        admin_token = env.get(ADMIN_TOKEN_VAR)
        if admin_token is None:
            raise SettingsError(ADMIN_TOKEN_VAR, "is not set; give the admin token")

        return cls(
            api_tokens=api_tokens,
            admin_token=admin_token.strip(),
            other_clients=_parse_clients(env.get(CLIENTS_VAR, "")),
            database_url=env.get(DATABASE_URL_VAR, "").strip() or DEFAULT_DATABASE_URL,
            faults=_parse_faults(env.get(FAULTS_VAR, "")),
            retention_hours=_parse_number(env, RETENTION_VAR, DEFAULT_RETENTION_HOURS),
            inflight_lease_seconds=_parse_number(env, LEASE_VAR, DEFAULT_LEASE_SECONDS),
        )


def _parse_clients(raw: str) -> dict[str, tuple[str, ...]]:
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise SettingsError(CLIENTS_VAR, f"is not valid JSON ({exc})") from None
    if not isinstance(document, dict) or not all(
        isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)
        for tokens in document.values()
    ):
        raise SettingsError(CLIENTS_VAR, 'must be a JSON object {"<client id>": ["<token>", ...]}')
    return {str(client): tuple(dict.fromkeys(tokens)) for client, tokens in document.items()}


def _parse_number(env: Mapping[str, str], variable: str, default: float) -> float:
    raw = env.get(variable, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(variable, f"must be a number, got {raw!r}") from None


def _parse_faults(raw: str) -> FaultConfig:
    if not raw.strip():
        return FaultConfig()
    try:
        return FaultConfig.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise SettingsError(FAULTS_VAR, f"invalid fault configuration: {problems}") from None
