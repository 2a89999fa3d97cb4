"""Tests for the warehouse settings: defaults, parsing and errors that name the variable."""

from __future__ import annotations

import os

import pytest
from pydantic import SecretStr

from warehouse_mock.schemas import FaultConfig
from warehouse_mock.settings import Settings, SettingsError

API = "WAREHOUSE_API_TOKEN"
ADMIN = "WAREHOUSE_ADMIN_TOKEN"
CLIENT_TOKEN = "client-token-4f9a2c"
ADMIN_TOKEN = "admin-token-7d1e0b"
API_TOKENS = "WAREHOUSE_API_TOKENS"
RETIRED = "WAREHOUSE_RETIRED_TOKENS"
OPTIONAL = [
    API_TOKENS,
    RETIRED,
    "WAREHOUSE_CLIENTS",
    "WAREHOUSE_DATABASE_URL",
    "WAREHOUSE_FAULTS",
    "WAREHOUSE_RETENTION_HOURS",
    "WAREHOUSE_INFLIGHT_LEASE_SECONDS",
    "WAREHOUSE_HEADER_TIMEOUT_SECONDS",
]


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A valid environment: the two tokens, and no other warehouse variable of the machine."""
    for name in list(os.environ):
        if name.upper().startswith("WAREHOUSE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv(API, CLIENT_TOKEN)
    monkeypatch.setenv(ADMIN, ADMIN_TOKEN)
    return monkeypatch


def settings_with(environment: pytest.MonkeyPatch, **variables: str) -> Settings:
    """The settings read from the environment plus ``variables``."""
    for name, value in variables.items():
        environment.setenv(name, value)
    return Settings()


def refusal(environment: pytest.MonkeyPatch, **variables: str) -> SettingsError:
    """The error of reading the settings from the environment plus ``variables``."""
    with pytest.raises(SettingsError) as caught:
        settings_with(environment, **variables)
    return caught.value


def test_defaults_apply_when_only_the_tokens_are_set() -> None:
    """Database, retention, lease and faults take their documented defaults."""
    settings = Settings()
    assert settings.database_url == "sqlite:///warehouse.db"
    assert settings.retention_hours == 48
    assert settings.inflight_lease_seconds == 30
    assert settings.header_timeout_seconds == 10
    assert settings.faults == FaultConfig()
    assert settings.other_clients == {}


@pytest.mark.parametrize("variable", OPTIONAL)
def test_an_empty_optional_variable_means_its_default(
    environment: pytest.MonkeyPatch, variable: str
) -> None:
    """An empty value (compose passes ``WAREHOUSE_FAULTS=``) is the same as an unset one."""
    assert settings_with(environment, **{variable: ""}) == Settings()


def test_comma_separated_client_tokens_are_all_accepted(environment: pytest.MonkeyPatch) -> None:
    """WAREHOUSE_API_TOKEN may list several client tokens, spaces around commas ignored."""
    settings = settings_with(environment, **{API: "client-token-one, client-token-two"})
    assert settings.api_tokens == (SecretStr("client-token-one"), SecretStr("client-token-two"))


def test_a_client_token_listed_twice_is_kept_once(environment: pytest.MonkeyPatch) -> None:
    """Repeating a token in WAREHOUSE_API_TOKEN is harmless; it is listed once."""
    settings = settings_with(environment, **{API: f"{CLIENT_TOKEN},{CLIENT_TOKEN}"})
    assert settings.api_tokens == (SecretStr(CLIENT_TOKEN),)


def test_numbers_and_database_url_are_read(environment: pytest.MonkeyPatch) -> None:
    """Retention, lease and database URL come from their variables."""
    settings = settings_with(
        environment,
        WAREHOUSE_RETENTION_HOURS="72",
        WAREHOUSE_INFLIGHT_LEASE_SECONDS="2.5",
        WAREHOUSE_DATABASE_URL="postgresql+psycopg2://u:p@localhost/warehouse",
    )
    assert (settings.retention_hours, settings.inflight_lease_seconds) == (72, 2.5)
    assert settings.database_url == "postgresql+psycopg2://u:p@localhost/warehouse"


def test_faults_json_is_read_at_start(environment: pytest.MonkeyPatch) -> None:
    """WAREHOUSE_FAULTS takes the JSON of PUT /_admin/faults."""
    settings = settings_with(
        environment,
        WAREHOUSE_FAULTS='{"error_rate": 0.25, "reject_skus": ["BAD-*"], "seed": 3}',
    )
    assert settings.faults == FaultConfig(error_rate=0.25, reject_skus=("BAD-*",), seed=3)


def test_keyword_arguments_take_precedence_over_the_environment(
    environment: pytest.MonkeyPatch,
) -> None:
    """A field given in code wins over its variable; the others still come from the environment."""
    environment.setenv("WAREHOUSE_RETENTION_HOURS", "100")
    settings = Settings(retention_hours=72, admin_token="admin-token-in-code")
    assert settings.retention_hours == 72
    assert settings.admin_token == SecretStr("admin-token-in-code")
    assert settings.api_tokens == (SecretStr(CLIENT_TOKEN),)


@pytest.mark.parametrize("variable", [API, ADMIN])
def test_missing_token_variable_is_named(environment: pytest.MonkeyPatch, variable: str) -> None:
    """A required token that is not set is refused with its variable's name."""
    environment.delenv(variable)
    error = refusal(environment)
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
def test_placeholder_empty_or_short_token_is_refused(
    environment: pytest.MonkeyPatch, variable: str, token: str
) -> None:
    """Tokens that anyone could guess, or that cannot travel in a header, are refused."""
    error = refusal(environment, **{variable: token})
    assert error.variable == variable
    assert str(error).startswith(variable)


@pytest.mark.parametrize("token", ["short7!", "has a space", "change-me-warehouse-api-token"])
def test_a_refused_token_is_not_repeated_in_the_message(
    environment: pytest.MonkeyPatch, token: str
) -> None:
    """The error, which is logged, never shows the value of a token."""
    error = refusal(environment, **{ADMIN: token})
    assert token not in str(error)


def test_admin_token_equal_to_a_client_token_is_refused(environment: pytest.MonkeyPatch) -> None:
    """The admin token must not also be a client token."""
    error = refusal(environment, **{ADMIN: CLIENT_TOKEN})
    assert error.variable == ADMIN
    assert "must differ from every client token" in str(error)


@pytest.mark.parametrize("value", ["23.9", "0", "-48", "nan", "inf", "two days"])
def test_retention_below_24_hours_or_not_a_number_is_refused(
    environment: pytest.MonkeyPatch, value: str
) -> None:
    """Stored responses must be kept at least 24 hours."""
    error = refusal(environment, WAREHOUSE_RETENTION_HOURS=value)
    assert error.variable == "WAREHOUSE_RETENTION_HOURS"


@pytest.mark.parametrize("value", ["0", "-1", "3601", "nan", "soon"])
def test_invalid_inflight_lease_is_refused(environment: pytest.MonkeyPatch, value: str) -> None:
    """The in-flight lease is a positive number of seconds, at most an hour."""
    error = refusal(environment, WAREHOUSE_INFLIGHT_LEASE_SECONDS=value)
    assert error.variable == "WAREHOUSE_INFLIGHT_LEASE_SECONDS"


@pytest.mark.parametrize("value", ["0", "0.05", "301", "nan", "soon"])
def test_invalid_header_timeout_is_refused(environment: pytest.MonkeyPatch, value: str) -> None:
    """The request-head deadline is 0.1 to 300 seconds."""
    error = refusal(environment, WAREHOUSE_HEADER_TIMEOUT_SECONDS=value)
    assert error.variable == "WAREHOUSE_HEADER_TIMEOUT_SECONDS"


def test_the_header_timeout_is_read(environment: pytest.MonkeyPatch) -> None:
    """WAREHOUSE_HEADER_TIMEOUT_SECONDS sets the request-head deadline."""
    assert (
        settings_with(environment, WAREHOUSE_HEADER_TIMEOUT_SECONDS="2.5").header_timeout_seconds
        == 2.5
    )


@pytest.mark.parametrize("value", ["not a url", "nosuchdialect://host/db"])
def test_unusable_database_url_is_refused(environment: pytest.MonkeyPatch, value: str) -> None:
    """A database URL SQLAlchemy cannot use is refused at start, not at the first request."""
    error = refusal(environment, WAREHOUSE_DATABASE_URL=value)
    assert error.variable == "WAREHOUSE_DATABASE_URL"
    assert "not a usable SQLAlchemy database URL" in str(error)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "valid dictionary"),
        ('{"error_rate": 1.5}', "error_rate: Input should be less than or equal to 1"),
        ('{"latency_ms": -1}', "latency_ms: Input should be greater than or equal to 0"),
        ('{"eror_rate": 0.1}', "eror_rate: Extra inputs are not permitted"),
    ],
)
def test_invalid_faults_are_refused(
    environment: pytest.MonkeyPatch, value: str, message: str
) -> None:
    """WAREHOUSE_FAULTS is validated like the body of PUT /_admin/faults, the field named."""
    error = refusal(environment, WAREHOUSE_FAULTS=value)
    assert error.variable == "WAREHOUSE_FAULTS"
    assert message in str(error)


def test_every_problem_is_reported_at_once(environment: pytest.MonkeyPatch) -> None:
    """Two bad variables give one error naming both, the first variable in front."""
    error = refusal(environment, WAREHOUSE_RETENTION_HOURS="1", WAREHOUSE_FAULTS="{")
    assert str(error).startswith("WAREHOUSE_FAULTS: ")
    assert "; WAREHOUSE_RETENTION_HOURS: " in str(error)


def test_settings_built_in_code_are_checked_too() -> None:
    """Direct construction validates like the environment and names the variable."""
    with pytest.raises(SettingsError, match="^WAREHOUSE_RETENTION_HOURS"):
        Settings(api_tokens=(CLIENT_TOKEN,), admin_token=ADMIN_TOKEN, retention_hours=12)


def test_repr_str_and_json_never_show_a_token(environment: pytest.MonkeyPatch) -> None:
    """Logging or serialising the settings object does not leak a token."""
    settings = settings_with(
        environment, WAREHOUSE_CLIENTS='{"other-shop": ["other-token-1a2b3c"]}'
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert CLIENT_TOKEN not in text
        assert ADMIN_TOKEN not in text
        assert "other-token-1a2b3c" not in text


def test_further_clients_are_read_from_warehouse_clients(environment: pytest.MonkeyPatch) -> None:
    """WAREHOUSE_CLIENTS adds clients beside `default`, each with its tokens."""
    settings = settings_with(
        environment,
        WAREHOUSE_CLIENTS='{"other-shop": ["other-token-1a2b3c", "other-token-4d5e6f"]}',
    )
    assert settings.clients == {
        "default": (SecretStr(CLIENT_TOKEN),),
        "other-shop": (SecretStr("other-token-1a2b3c"), SecretStr("other-token-4d5e6f")),
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("not json", "is not valid JSON"),
        ('["other-token-1a2b3c"]', "valid dictionary"),
        ('{"shop": "other-token-1a2b3c"}', "shop: Input should be a valid tuple"),
        ('{"default": ["other-token-1a2b3c"]}', "client id 'default'"),
        ('{"bad id": ["other-token-1a2b3c"]}', "client id 'bad id'"),
        ('{"shop": []}', "shop: has no token"),
        (f'{{"shop": ["{CLIENT_TOKEN}"]}}', "client 'shop' shares a token"),
        ('{"shop": ["change-me"]}', "placeholder"),
    ],
)
def test_bad_warehouse_clients_are_refused_naming_the_variable(
    environment: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    """Every problem of WAREHOUSE_CLIENTS is named, with the variable first."""
    error = refusal(environment, WAREHOUSE_CLIENTS=raw)
    assert str(error).startswith("WAREHOUSE_CLIENTS")
    assert message in str(error)


def test_accepted_tokens_come_from_warehouse_api_tokens_first(
    environment: pytest.MonkeyPatch,
) -> None:
    """WAREHOUSE_API_TOKENS (NEW,OLD while rotating) wins over WAREHOUSE_API_TOKEN."""
    settings = settings_with(environment, **{API_TOKENS: "client-token-new, client-token-old"})
    assert settings.api_tokens == (SecretStr("client-token-new"), SecretStr("client-token-old"))


def test_warehouse_api_tokens_alone_is_enough(environment: pytest.MonkeyPatch) -> None:
    """With the accepted tokens set, the sender's single-token variable is not needed."""
    environment.delenv(API)
    settings = settings_with(environment, **{API_TOKENS: CLIENT_TOKEN})
    assert settings.api_tokens == (SecretStr(CLIENT_TOKEN),)


def test_a_bad_accepted_token_names_warehouse_api_tokens(environment: pytest.MonkeyPatch) -> None:
    """An invalid token in WAREHOUSE_API_TOKENS is reported under that variable."""
    error = refusal(environment, **{API_TOKENS: f"{CLIENT_TOKEN},short"})
    assert error.variable == API_TOKENS


def test_retired_tokens_are_read_per_client_and_never_accepted(
    environment: pytest.MonkeyPatch,
) -> None:
    """WAREHOUSE_RETIRED_TOKENS maps clients to old tokens; they are not among the accepted."""
    settings = settings_with(
        environment,
        **{
            "WAREHOUSE_CLIENTS": '{"shop-b": ["shop-b-token-1"]}',
            RETIRED: '{"default": ["old"], "shop-b": ["shop-b-token-0", "x-1"]}',
        },
    )
    assert settings.retired_tokens == {
        "default": (SecretStr("old"),),
        "shop-b": (SecretStr("shop-b-token-0"), SecretStr("x-1")),
    }
    accepted = {t for tokens in settings.clients.values() for t in tokens}
    assert SecretStr("old") not in accepted


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{nope", "not valid JSON"),
        ('{"unknown-shop": ["old-token"]}', "not configured"),
        ('{"default": []}', "has no token"),
        ('{"default": [""]}', "empty"),
        ('["old-token"]', "dictionary"),
    ],
    ids=["not-json", "unknown-client", "no-token", "empty-token", "not-an-object"],
)
def test_bad_retired_tokens_are_refused_naming_the_variable(
    environment: pytest.MonkeyPatch, value: str, message: str
) -> None:
    """Every problem of WAREHOUSE_RETIRED_TOKENS is refused at start with the variable's name."""
    error = refusal(environment, **{RETIRED: value})
    assert error.variable == RETIRED
    assert message in str(error)


def test_a_retired_token_of_another_client_is_refused(environment: pytest.MonkeyPatch) -> None:
    """A token accepted for one client cannot be retired for another."""
    error = refusal(
        environment,
        **{
            "WAREHOUSE_CLIENTS": '{"shop-b": ["shop-b-token-1"]}',
            RETIRED: f'{{"shop-b": ["{CLIENT_TOKEN}"]}}',
        },
    )
    assert error.variable == RETIRED
