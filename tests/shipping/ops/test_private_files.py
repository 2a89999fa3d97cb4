"""The stack's folder and files are its owner's alone, and never written through a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from shipping.ops.stack import Stack, StackError
from shipping.ops.state import private_dir, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_an_existing_open_folder_is_closed_to_0700(tmp_path: Path) -> None:
    """A stack folder left 0755 is made 0700."""
    folder = tmp_path / "stack"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    private_dir(folder)
    assert mode(folder) == 0o700


def test_a_new_folder_is_made_0700(tmp_path: Path) -> None:
    """A folder made for the stack is private from the start."""
    assert mode(private_dir(tmp_path / "a" / "stack")) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_folder_owned_by_someone_else_is_refused_by_make_up(tmp_path: Path) -> None:
    """Another user's folder is never reused: its owner could read or swap the secrets."""
    folder = tmp_path / "stack"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    stack = Stack(directory=folder, env={}, echo=lambda _: None)
    with pytest.raises(StackError, match="belongs to user id 65534"):
        stack.up()
    assert list(folder.iterdir()) == []


def test_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    """The stack folder must be a real folder, not a link to one."""
    (tmp_path / "real").mkdir()
    (tmp_path / "stack").symlink_to(tmp_path / "real")
    with pytest.raises(PermissionError, match="symlink"):
        private_dir(tmp_path / "stack")


def test_a_private_file_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    """A link planted where state.json goes is not followed; its target is untouched."""
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "stack").mkdir(mode=0o700)
    (tmp_path / "stack" / "state.json").symlink_to(target)
    with pytest.raises(OSError):  # noqa: PT011 - ELOOP, whatever its subclass
        write_private(tmp_path / "stack" / "state.json", "secret")
    assert target.read_text() == "keep"


def test_a_private_file_is_0600_even_over_an_older_open_file(tmp_path: Path) -> None:
    """An older 0644 file is rewritten 0600 (O_CREAT alone keeps the old mode)."""
    path = tmp_path / "state.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private(path, "new")
    assert (mode(path), path.read_text()) == (0o600, "new")
