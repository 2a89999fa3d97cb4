"""Tests for the warehouse settings: defaults, parsing and errors that name the variable."""

from __future__ import annotations

import pytest

from warehouse_mock.schemas import FaultConfig
from warehouse_mock.settings import Settings, SettingsError

API = "WAREHOUSE_API_TOKEN"
ADMIN = "WAREHOUSE_ADMIN_TOKEN"
CLIENT_TOKEN = "client-token-4f9a2c"
ADMIN_TOKEN = "admin-token-7d1e0b"


def env(**extra: str) -> dict[str, str]:
    """A valid environment plus ``extra``."""
    return {API: CLIENT_TOKEN, ADMIN: ADMIN_TOKEN, **extra}


def refusal(environ: dict[str, str]) -> SettingsError:
    """The error of building settings from ``environ``."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(environ)
    return caught.value


def test_defaults_apply_when_only_the_tokens_are_set() -> None:
    """Database, retention, lease and faults take their documented defaults."""
    settings = Settings.from_env(env())
    assert settings.database_url == "sqlite:///warehouse.db"
    assert settings.retention_hours == 48
    assert settings.inflight_lease_seconds == 30
    assert settings.faults == FaultConfig()


@pytest.mark.parametrize(
    "variable",
    [
        "WAREHOUSE_CLIENTS",
        "WAREHOUSE_DATABASE_URL",
        "WAREHOUSE_FAULTS",
        "WAREHOUSE_RETENTION_HOURS",
        "WAREHOUSE_INFLIGHT_LEASE_SECONDS",
    ],
)
def test_an_empty_optional_variable_means_its_default(variable: str) -> None:
    """An empty value (compose passes ``WAREHOUSE_FAULTS=``) is the same as an unset one."""
    assert Settings.from_env(env(**{variable: ""})) == Settings.from_env(env())


def test_a_client_token_listed_twice_is_kept_once() -> None:
    """Repeating a token in WAREHOUSE_API_TOKEN is harmless; it is listed once."""
    settings = Settings.from_env(env(**{API: f"{CLIENT_TOKEN},{CLIENT_TOKEN}"}))
    assert settings.api_tokens == (CLIENT_TOKEN,)


def test_comma_separated_client_tokens_are_all_accepted() -> None:
    """WAREHOUSE_API_TOKEN may list several client tokens, spaces around commas ignored."""
    settings = Settings.from_env(env(**{API: "client-token-one, client-token-two"}))
    assert settings.api_tokens == ("client-token-one", "client-token-two")


def test_numbers_and_database_url_are_read() -> None:
    """Retention, lease and database URL come from their variables."""
    settings = Settings.from_env(
        env(
            WAREHOUSE_RETENTION_HOURS="72",
            WAREHOUSE_INFLIGHT_LEASE_SECONDS="2.5",
            WAREHOUSE_DATABASE_URL="postgresql+psycopg2://u:p@localhost/warehouse",
        )
    )
    assert (settings.retention_hours, settings.inflight_lease_seconds) == (72, 2.5)
    assert settings.database_url == "postgresql+psycopg2://u:p@localhost/warehouse"


def test_faults_json_is_read_at_start() -> None:
    """WAREHOUSE_FAULTS takes the JSON of PUT /_admin/faults."""
    settings = Settings.from_env(
        env(WAREHOUSE_FAULTS='{"error_rate": 0.25, "reject_skus": ["BAD-*"], "seed": 3}')
    )
    assert settings.faults == FaultConfig(error_rate=0.25, reject_skus=("BAD-*",), seed=3)


@pytest.mark.parametrize("variable", [API, ADMIN])
def test_missing_token_variable_is_named(variable: str) -> None:
    """A required token that is not set is refused with its variable's name."""
    environ = env()
    del environ[variable]
    error = refusal(environ)
    assert error.variable == variable
    assert str(error).startswith(variable)


@pytest.mark.parametrize("variable", [API, ADMIN])
@pytest.mark.parametrize(
    "token",
    [
        "",
        " ",
        "changeme",
        "CHANGEME",
        "change-me-warehouse-api-token",
        "secret",
        "short7!",
        "has a space",
        "client-token-one,,client-token-two",
    ],
)
def test_placeholder_empty_or_short_token_is_refused(variable: str, token: str) -> None:
    """Tokens that anyone could guess, or that cannot travel in a header, are refused."""
    error = refusal(env(**{variable: token}))
    assert error.variable == variable
    assert str(error).startswith(variable)


@pytest.mark.parametrize("token", ["short7!", "has a space", "change-me-warehouse-api-token"])
def test_a_refused_token_is_not_repeated_in_the_message(token: str) -> None:
    """The error, which is logged, never shows the value of a token."""
    error = refusal(env(**{ADMIN: token}))
    assert token not in str(error)


def test_admin_token_equal_to_a_client_token_is_refused() -> None:
    """The admin token must not also be a client token."""
    error = refusal(env(**{ADMIN: CLIENT_TOKEN}))
    assert error.variable == ADMIN
    assert "must differ from every client token" in str(error)


@pytest.mark.parametrize("value", ["23.9", "0", "-48", "nan", "inf", "two days"])
def test_retention_below_24_hours_or_not_a_number_is_refused(value: str) -> None:
    """Stored responses must be kept at least 24 hours."""
    error = refusal(env(WAREHOUSE_RETENTION_HOURS=value))
    assert error.variable == "WAREHOUSE_RETENTION_HOURS"


@pytest.mark.parametrize("value", ["0", "-1", "3601", "nan", "soon"])
def test_invalid_inflight_lease_is_refused(value: str) -> None:
    """The in-flight lease is a positive number of seconds, at most an hour."""
    error = refusal(env(WAREHOUSE_INFLIGHT_LEASE_SECONDS=value))
    assert error.variable == "WAREHOUSE_INFLIGHT_LEASE_SECONDS"


@pytest.mark.parametrize("value", ["not a url", "nosuchdialect://host/db"])
def test_unusable_database_url_is_refused(value: str) -> None:
    """A database URL SQLAlchemy cannot use is refused at start, not at the first request."""
    error = refusal(env(WAREHOUSE_DATABASE_URL=value))
    assert error.variable == "WAREHOUSE_DATABASE_URL"
    assert "not a usable SQLAlchemy database URL" in str(error)


@pytest.mark.parametrize(
    "value",
    ["{not json", "[]", '{"error_rate": 1.5}', '{"latency_ms": -1}', '{"eror_rate": 0.1}'],
)
def test_invalid_faults_are_refused(value: str) -> None:
    """WAREHOUSE_FAULTS is validated like the body of PUT /_admin/faults."""
    error = refusal(env(WAREHOUSE_FAULTS=value))
    assert error.variable == "WAREHOUSE_FAULTS"


def test_settings_built_in_code_are_checked_too() -> None:
    """Direct construction validates like from_env and names the variable."""
    with pytest.raises(SettingsError, match="^WAREHOUSE_RETENTION_HOURS"):
        Settings(api_tokens=(CLIENT_TOKEN,), admin_token=ADMIN_TOKEN, retention_hours=12)


def test_repr_never_shows_a_token() -> None:
    """Logging the settings object does not leak the tokens."""
    text = repr(Settings.from_env(env()))
    assert CLIENT_TOKEN not in text
    assert ADMIN_TOKEN not in text


def test_further_clients_are_read_from_warehouse_clients() -> None:
    """WAREHOUSE_CLIENTS adds clients beside `default`, each with its tokens."""
    settings = Settings.from_env(
        env(WAREHOUSE_CLIENTS='{"other-shop": ["other-token-1a2b3c", "other-token-4d5e6f"]}')
    )
    assert settings.clients == {
        "default": (CLIENT_TOKEN,),
        "other-shop": ("other-token-1a2b3c", "other-token-4d5e6f"),
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "is not valid JSON"),
        ('["other-token-1a2b3c"]', "must be a JSON object"),
        ('{"default": ["other-token-1a2b3c"]}', "client id 'default'"),
        ('{"bad id": ["other-token-1a2b3c"]}', "client id 'bad id'"),
        ('{"shop": []}', "has no token"),
        (f'{{"shop": ["{CLIENT_TOKEN}"]}}', "client 'shop' shares a token"),
        ('{"shop": ["change-me"]}', "placeholder"),
    ],
)
def test_bad_warehouse_clients_are_refused_naming_the_variable(raw: str, message: str) -> None:
    """Every problem of WAREHOUSE_CLIENTS is named, with the variable first."""
    error = refusal(env(WAREHOUSE_CLIENTS=raw))
    assert str(error).startswith("WAREHOUSE_CLIENTS")
    assert message in str(error)
