"""Atomic writes: the file a user owns keeps the mode a plain write would give it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(json_values, json_values)
def test_dumps_writes_what_json_writes(first: object, second: object) -> None:
    """Even when a value's indented text is reused from an earlier write."""
    many = [first, second] * 9
    for data in ({"tickets": many}, {"tickets": many[::-1]}, {"tickets": [first]}, first):
        assert files.dumps(data) == json.dumps(data, indent=2, ensure_ascii=False)


def test_the_reused_texts_are_kept_for_a_document_larger_than_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A document with more tickets than `_KEEP_MOST` is not written from scratch each time."""
    monkeypatch.setattr(files, "_KEEP_MOST", 20)
    monkeypatch.setattr(files, "_KEPT", {})
    data = {"tickets": [{"id": f"T-{i}"} for i in range(30)]}
    files.dumps(data)
    data["tickets"][0] = {"id": "T-0", "state": "COMPLETED"}
    encoded: list[object] = []
    monkeypatch.setattr(files, "_plain", lambda value, depth: encoded.append(value) or "{}")
    files.dumps(data)
    assert encoded == [data["tickets"][0]]  # only the changed ticket is indented again


# ---- durability -------------------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    done: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: done.append(fd) or real(fd))
    return done


def test_a_durable_write_fsyncs_the_file_and_its_folder(tmp_path: Path, fsyncs: list[int]) -> None:
    files.write_atomic(tmp_path / "config.toml", "x = 1\n")
    files.write_json(tmp_path / "index.json", {"tickets": []})
    assert len(fsyncs) == 4


def test_run_state_is_replaced_atomically_without_a_flush(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    path = tmp_path / "state" / "tickets.json"
    files.write_json(path, {"tickets": {}}, durable=False)
    files.write_atomic(path, "{}\n", durable=False)
    assert fsyncs == [] and path.read_text() == "{}\n"
    assert os.listdir(path.parent) == ["tickets.json"]  # no temporary file left
