"""Settings of the ``shipping`` command: built once per process, validated when built,
naming the variable at fault."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from shipping.contract import AIRFLOW_ADMIN_USER, DEFAULT_AIRFLOW_URL


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
    return value


@dataclass(frozen=True)
class ClientSettings:
    """How the ``shipping`` command reaches Airflow's REST API."""

    airflow_url: str
    username: str
    password: str | None

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, fallback_password: str | None = None
    ) -> ClientSettings:
        """Build from ``SHIPPING_AIRFLOW_URL`` and ``AIRFLOW_ADMIN_PASSWORD``.

        Args:
            env: The environment (``os.environ`` when omitted).
            fallback_password: Used when ``AIRFLOW_ADMIN_PASSWORD`` is unset (the local
                stack's generated password).

        Raises:
            SettingsError: Naming the variable that is malformed.
        """
        env = os.environ if env is None else env
        password = env.get("AIRFLOW_ADMIN_PASSWORD") or fallback_password
        return cls(
            airflow_url=_url(env, "SHIPPING_AIRFLOW_URL", DEFAULT_AIRFLOW_URL),
            username=AIRFLOW_ADMIN_USER,
            password=password,
        )
