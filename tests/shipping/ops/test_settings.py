"""Tests for the settings of the command-line tool."""

import pytest

from shipping.contract import DEFAULT_AIRFLOW_URL
from shipping.ops.settings import ClientSettings, SettingsError


def test_defaults_point_at_the_local_stack() -> None:
    """With nothing set, the tool talks to the local stack as user admin."""
    settings = ClientSettings.from_env({}, fallback_password="generated")
    assert settings.airflow_url == DEFAULT_AIRFLOW_URL
    assert settings.username == "admin"
    assert settings.password == "generated"


def test_password_from_the_environment_wins() -> None:
    """AIRFLOW_ADMIN_PASSWORD overrides the stack's generated password."""
    settings = ClientSettings.from_env(
        {"AIRFLOW_ADMIN_PASSWORD": "s3cret-pw"}, fallback_password="x"
    )
    assert settings.password == "s3cret-pw"


def test_malformed_url_names_the_variable() -> None:
    """A bad SHIPPING_AIRFLOW_URL fails with the variable's name."""
    with pytest.raises(SettingsError, match="SHIPPING_AIRFLOW_URL"):
        ClientSettings.from_env({"SHIPPING_AIRFLOW_URL": "localhost:8080"})
