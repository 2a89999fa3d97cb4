"""Settings of the warehouse service: one object, read from the environment, checked when built.

| variable | meaning | default |
|---|---|---|
| ``WAREHOUSE_DATABASE_URL`` | SQLAlchemy URL of the service's own database | ``sqlite:///warehouse.db`` (current directory) |
| ``WAREHOUSE_API_TOKENS`` | the bearer tokens the warehouse accepts for the client ``default``, comma-separated; while rotating, ``NEW,OLD`` | ``WAREHOUSE_API_TOKEN`` |
| ``WAREHOUSE_API_TOKEN`` | used only when ``WAREHOUSE_API_TOKENS`` is unset: the token of the client ``default`` (a comma list is still accepted, for compatibility). The pipeline sends this one variable, so it holds a single token | required if ``WAREHOUSE_API_TOKENS`` is unset |
| ``WAREHOUSE_CLIENTS`` | further clients, JSON ``{"<client id>": ["<token>", ...]}``; each client has its own idempotency keys and sees only its own shipments | none |
| ``WAREHOUSE_RETIRED_TOKENS`` | tokens no longer accepted whose rows of the per-token era must move to their client at start, JSON ``{"<client id>": ["<old token>", ...]}`` (``default`` included) | none |
| ``WAREHOUSE_ADMIN_TOKEN`` | bearer token of ``/_admin`` | required |
| ``WAREHOUSE_FAULTS`` | faults at start, the JSON of ``PUT /_admin/faults`` | no faults |
| ``WAREHOUSE_RETENTION_HOURS`` | how long stored responses are replayed (>= 24) | 48 |
| ``WAREHOUSE_INFLIGHT_LEASE_SECONDS`` | how long an in-flight claim blocks its key | 30 |
| ``WAREHOUSE_HEADER_TIMEOUT_SECONDS`` | how long a client may take to send a request's line and headers before it gets a 408 and is disconnected (``python -m warehouse_mock``; 0.1-300) | 10 |

An empty variable counts as unset. Rotation of the client ``default``: set
``WAREHOUSE_API_TOKENS=NEW,OLD`` at the warehouse, switch the senders'
``WAREHOUSE_API_TOKEN`` to ``NEW``, then set ``WAREHOUSE_API_TOKENS=NEW``. ``Settings()`` reads the environment (pydantic-settings);
keyword arguments, as in tests, take precedence over it. Every error raised is a
:class:`SettingsError` whose message starts with the name of the variable at fault.
"""

from __future__ import annotations

import json
import os
import re
from typing import Annotated, Any, Final, Self

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from warehouse_mock.schemas import FaultConfig

ENV_PREFIX: Final = "WAREHOUSE_"
API_TOKEN_VAR: Final = "WAREHOUSE_API_TOKEN"
API_TOKENS_VAR: Final = "WAREHOUSE_API_TOKENS"
CLIENTS_VAR: Final = "WAREHOUSE_CLIENTS"
RETIRED_TOKENS_VAR: Final = "WAREHOUSE_RETIRED_TOKENS"
ADMIN_TOKEN_VAR: Final = "WAREHOUSE_ADMIN_TOKEN"

MIN_TOKEN_LENGTH: Final = 8
#: The client whose tokens are ``WAREHOUSE_API_TOKEN``.
DEFAULT_CLIENT_ID: Final = "default"
_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")

# Values copied from examples and templates; a service that accepts them is open to anyone.
PLACEHOLDER_TOKENS: Final = frozenset(
    {"changeme", "change-me", "change_me", "changethis", "change-this", "replaceme", "replace-me"}
    | {"placeholder", "password", "secret", "token", "example", "xxxxxxxx", "12345678"}
    | {"test-token", "your-token", "your-token-here"}
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


def _check_token(token: SecretStr) -> SecretStr:
    value = token.get_secret_value()
    if not value:
        raise ValueError("a token is empty")
    lowered = value.lower()
    if lowered in PLACEHOLDER_TOKENS or any(marker in lowered for marker in PLACEHOLDER_MARKERS):
        raise ValueError(
            "a token is a placeholder value; generate one, for example with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if len(value) < MIN_TOKEN_LENGTH:
        raise ValueError(f"a token is shorter than {MIN_TOKEN_LENGTH} characters; use a random one")
    if not all("\x21" <= ch <= "\x7e" and ch != "," for ch in value):
        raise ValueError("a token must be printable ASCII without spaces or commas")
    return token


def _distinct_tokens(tokens: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
    if not tokens:
        raise ValueError("has no token")
    return tuple(dict.fromkeys(tokens))


def _split_commas(value: object) -> object:
    return [part.strip() for part in value.split(",")] if isinstance(value, str) else value


def _from_json(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ValueError(f"is not valid JSON ({exc})") from None


def _check_client_id(client: str) -> str:
    if client == DEFAULT_CLIENT_ID or not _CLIENT_ID.fullmatch(client):
        raise ValueError(
            f"client id {client!r} must be 1-64 of A-Z a-z 0-9 _ . - and not {DEFAULT_CLIENT_ID!r}"
        )
    return client


def _check_database_url(url: str) -> str:
    try:
        make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise ValueError(f"not a usable SQLAlchemy database URL ({exc})") from None
    return url


def _check_retired_token(token: SecretStr) -> SecretStr:
    # Only a lookup key for old rows, never accepted: no strength rules, but no commas.
    value = token.get_secret_value()
    if not value or "," in value:
        raise ValueError("a retired token is empty or holds a comma")
    return token


Token = Annotated[SecretStr, AfterValidator(_check_token)]
Tokens = Annotated[tuple[Token, ...], AfterValidator(_distinct_tokens)]
RetiredTokens = Annotated[
    tuple[Annotated[SecretStr, AfterValidator(_check_retired_token)], ...],
    AfterValidator(_distinct_tokens),
]
ClientId = Annotated[str, AfterValidator(_check_client_id)]


class Settings(BaseSettings):
    """The validated configuration of one warehouse process.

    ``Settings()`` reads the environment; keyword arguments (field names, in tests) take
    precedence. Either way every field is checked and a :class:`SettingsError` names the
    environment variable that holds the field at fault.

    Attributes:
        api_tokens: The tokens accepted for the client ``default``
            (``WAREHOUSE_API_TOKENS``, else ``WAREHOUSE_API_TOKEN``). A client's tokens
            are interchangeable: its idempotency keys and shipments belong to the client,
            so a token rotates (new and old listed together, then the old one dropped)
            without resetting any key.
        admin_token: The token of the ``/_admin`` endpoints.
        other_clients: Further clients by id, each with its tokens; each client has its
            own idempotency keys and sees only its own shipments.
        retired_tokens: Tokens no longer accepted, by client id: rows stored under their
            per-token scopes (before keys were per client) move to the client at start.
        database_url: SQLAlchemy URL of the service's database (SQLite or PostgreSQL).
        faults: Faults injected from the start.
        retention_hours: How long a stored response is replayed; purged lazily afterwards.
        inflight_lease_seconds: How long an in-flight claim blocks its key before another
            request may take it over (a crashed request leaves its claim behind).
        header_timeout_seconds: How long a client may take to send a request's head
            before the server drops it (:mod:`warehouse_mock.protocol`).
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        enable_decoding=False,  # JSON is parsed by the fields that take it, errors named
        validate_by_name=True,
        str_strip_whitespace=True,
        allow_inf_nan=False,
        frozen=True,
    )

    api_tokens: Annotated[
        Tokens,
        BeforeValidator(_split_commas),
        # The first variable set wins: the accepted tokens, else the legacy single variable.
        Field(validation_alias=AliasChoices(API_TOKENS_VAR, API_TOKEN_VAR)),
    ]
    admin_token: Token
    other_clients: Annotated[
        dict[ClientId, Tokens],
        BeforeValidator(_from_json),
        Field(default_factory=dict, validation_alias=CLIENTS_VAR),
    ]
    retired_tokens: Annotated[
        dict[str, RetiredTokens],
        BeforeValidator(_from_json),
        Field(default_factory=dict, validation_alias=RETIRED_TOKENS_VAR),
    ]
    database_url: Annotated[str, AfterValidator(_check_database_url)] = "sqlite:///warehouse.db"
    faults: Annotated[FaultConfig, BeforeValidator(_from_json), Field(default_factory=FaultConfig)]
    # The contract promises replays for at least a day.
    retention_hours: Annotated[float, Field(ge=24)] = 48.0
    inflight_lease_seconds: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Long enough for any client on a slow link (a head is a few hundred bytes), short
    # enough that stalled connections do not pile up.
    header_timeout_seconds: Annotated[float, Field(ge=0.1, le=300)] = 10.0

    def __init__(self, **values: Any) -> None:
        """Read the environment, apply ``values`` and check the result.

        Raises:
            SettingsError: A variable is missing or invalid; the message names it.
        """
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _settings_error(exc) from None

    @model_validator(mode="after")
    def _each_token_has_one_owner(self) -> Self:
        """A token belongs to one client, and the admin token to none."""
        owner: dict[SecretStr, str] = {}
        for client, tokens in self.clients.items():
            for token in tokens:
                if owner.setdefault(token, client) != client:
                    raise SettingsError(CLIENTS_VAR, f"client {client!r} shares a token")
        if self.admin_token in owner:
            raise SettingsError(ADMIN_TOKEN_VAR, "must differ from every client token")
        for client, tokens in self.retired_tokens.items():
            if client not in self.clients:
                raise SettingsError(
                    RETIRED_TOKENS_VAR,
                    f"client {client!r} is not configured (WAREHOUSE_CLIENTS or 'default')",
                )
            for token in tokens:
                if owner.get(token, client) != client:
                    raise SettingsError(
                        RETIRED_TOKENS_VAR, f"a retired token of {client!r} is another client's"
                    )
        return self

    @property
    def clients(self) -> dict[str, tuple[SecretStr, ...]]:
        """Every client's id with its tokens, the client ``default`` first."""
        return {DEFAULT_CLIENT_ID: self.api_tokens, **self.other_clients}


def _variable(key: str) -> str:
    """The environment variable of a field, given its name or alias."""
    field = Settings.model_fields.get(key) or next(
        (
            f
            for f in Settings.model_fields.values()
            if isinstance(f.validation_alias, AliasChoices) and key in f.validation_alias.choices
        ),
        None,
    )
    if field is None:
        return key  # an alias, which is the variable's name
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        # The variable that was read: the first one set, else the one to set.
        names = [str(choice) for choice in alias.choices]
        return next((name for name in names if os.environ.get(name, "").strip()), names[-1])
    return alias if isinstance(alias, str) else f"{ENV_PREFIX}{key.upper()}"


def _settings_error(exc: ValidationError) -> SettingsError:
    """Every problem of ``exc``, the variable first; input values (tokens) are never shown."""
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False, include_input=False):
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, SettingsError):
            return cause
        field, *path = error["loc"]
        where = "".join(f"[{p}]" if isinstance(p, int) else f" {p}" for p in path if p != "[key]")
        detail = str(cause) if isinstance(cause, ValueError) else error["msg"]
        problems.append((_variable(str(field)), f"{where.strip()}: {detail}" if where else detail))
    (variable, first), *others = problems
    return SettingsError(variable, "; ".join([first, *(f"{v}: {d}" for v, d in others)]))
