"""A pytest plugin for mutation runs only (``setup.cfg``'s ``[mutmut]``): each process gets a
base temporary directory of its own under /tmp/pt-mutation, so parallel mutants never
share (or clean) one. ``make test`` never loads it."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Point ``--basetemp`` at /tmp/pt-mutation/p<pid>."""
    os.makedirs("/tmp/pt-mutation", exist_ok=True)
    config.option.basetemp = f"/tmp/pt-mutation/p{os.getpid()}"
