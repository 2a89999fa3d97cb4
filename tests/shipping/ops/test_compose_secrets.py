"""The compose stack's secret check: placeholders, weak values and reuse are refused."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from shipping.ops import compose_secrets

REPO = Path(__file__).resolve().parents[3]


def _env_example() -> dict[str, str]:
    lines = (REPO / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {pair[0]: pair[1] for pair in pairs}


def _strong() -> dict[str, str]:
    env = {name: secrets.token_hex(24) for name in compose_secrets.SECRETS}
    env["AIRFLOW_FERNET_KEY"] = base64.urlsafe_b64encode(os.urandom(32)).decode()
    return env


def test_strong_secrets_pass() -> None:
    """Fresh random values and a real Fernet key raise nothing."""
    assert compose_secrets.problems(_strong()) == []


@pytest.mark.parametrize("name", compose_secrets.SECRETS)
def test_the_env_example_placeholder_is_refused(name: str) -> None:
    """Each secret as .env.example ships it is refused, by name."""
    env = _strong() | {name: _env_example()[name]}
    assert [line for line in compose_secrets.problems(env) if line.startswith(name)]


@pytest.mark.parametrize("value", ["admin", "password1234", "aaaaaaaaaaaaaaaaaaaa"])
def test_a_weak_password_is_refused(value: str) -> None:
    """Short or repetitive values are refused as weak."""
    env = _strong() | {"AIRFLOW_ADMIN_PASSWORD": value}
    assert any("AIRFLOW_ADMIN_PASSWORD is weak" in p for p in compose_secrets.problems(env))


def test_one_value_for_two_secrets_is_refused() -> None:
    """Reusing one secret for another (say the Redis and PostgreSQL passwords) is refused."""
    env = _strong()
    env["REDIS_PASSWORD"] = env["POSTGRES_PASSWORD"]
    assert any("repeats" in p for p in compose_secrets.problems(env))


def test_no_value_is_printed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The command names the variable at fault, never its value, and exits 1."""
    env = _strong() | {"WAREHOUSE_ADMIN_TOKEN": "short-secret"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert compose_secrets.main() == 1
    err = capsys.readouterr().err
    assert "WAREHOUSE_ADMIN_TOKEN" in err
    assert "short-secret" not in err


def test_the_env_example_carries_no_valid_fernet_key() -> None:
    """.env.example's Fernet placeholder is not a usable key, so it cannot slip into use."""
    with pytest.raises(ValueError, match="32 url-safe base64"):
        Fernet(_env_example()["AIRFLOW_FERNET_KEY"])
