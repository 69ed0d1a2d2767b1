"""Atomic writes: the file a user owns keeps the mode a plain write would give it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sage.lib import files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_respects_the_umask(tmp_path: Path, umask: int, expected: int) -> None:
    old = os.umask(umask)
    try:
        files.write_atomic(tmp_path / "new.json", "{}\n")
    finally:
        os.umask(old)
    assert mode(tmp_path / "new.json") == expected


def test_a_replaced_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    path.write_text("old\n")
    path.chmod(0o640)
    files.write_json(path, {"tickets": []})
    assert mode(path) == 0o640 and path.read_text() == '{\n  "tickets": []\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["index.json"]  # no temp file left
