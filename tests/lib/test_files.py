"""Atomic writes: the file a user owns keeps the mode a plain write would give it."""

from __future__ import annotations

import json
import os
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

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


# ---- snapshots --------------------------------------------------------------------------------


class Parses:
    """A parse that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes) -> str:
        self.calls += 1
        return data.decode()


def test_a_snapshot_parses_a_file_again_only_once_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    path.write_text("one\n")
    parse = Parses()
    seen = files.Snapshot(path, parse)
    assert (seen.read(), seen.read(), parse.calls) == ("one\n", "one\n", 1)
    path.write_text("two\n")  # in place, same size, within the same tick of the clock
    assert (seen.read(), parse.calls) == ("two\n", 2)
    files.write_atomic(path, "two\n")  # another file with the same bytes: nothing to parse
    assert (seen.read(), parse.calls) == ("two\n", 2)
    path.unlink()
    with pytest.raises(FileNotFoundError):
        seen.read()


def test_a_snapshot_takes_a_write_of_its_own_without_parsing_it(tmp_path: Path) -> None:
    path = tmp_path / "tickets.json"
    parse = Parses()
    seen = files.Snapshot(path, parse)
    files.write_atomic(path, b"mine\n", durable=False)
    seen.wrote(b"mine\n", "what mine parses to")
    assert (seen.read(), parse.calls) == ("what mine parses to", 0)
    path.write_text("them\n")  # another process, right after
    assert (seen.read(), parse.calls) == ("them\n", 1)


def test_a_racy_snapshot_compares_the_bytes_when_the_signature_cannot_tell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a filesystem whose timestamps are coarser than the writes (FAT: 2 s), a same-size
    edit in place keeps the signature: a read so soon after a change reads the bytes again."""
    monkeypatch.setattr(files, "_signature", lambda found: (1, 4, 0, 0))
    monkeypatch.setattr(files.time, "time_ns", lambda: files.RACY_NS - 1)  # within a tick
    path = tmp_path / "index.json"
    path.write_text("one\n")
    seen = files.Snapshot(path, bytes.decode)
    assert seen.read() == "one\n"
    path.write_text("two\n")
    assert seen.read() == "two\n"


def test_a_settled_snapshot_trusts_the_signature_and_still_sees_an_edit_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "RACY_NS", 20_000_000)  # 20 ms: clearly longer than a tick here
    path = tmp_path / "index.json"
    path.write_text("one\n")
    time.sleep(0.05)
    parse = Parses()
    seen = files.Snapshot(path, parse)
    assert seen.read() == "one\n" and seen._seen is not None and seen._seen.settled
    reads: list[object] = []

    def opened(*args: Any) -> Any:
        reads.append(args)
        return open(*args)

    monkeypatch.setattr(files, "open", opened, raising=False)
    assert (seen.read(), reads) == ("one\n", [])  # settled: one stat, no read
    path.write_text("two\n")  # same size, same inode: the ctime moved on
    assert (seen.read(), parse.calls) == ("two\n", 2)


@given(st.lists(st.sampled_from(["in place", "replace", "same bytes", "own write", "read"]),
                max_size=12))  # fmt: skip
def test_a_snapshot_always_reads_what_the_file_holds(steps: list[str]) -> None:
    """Whatever writes the file, and however soon after a read, the snapshot gives the value of
    the bytes it holds now."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "index.json"
        path.write_bytes(b"0000")
        seen = files.Snapshot(path, bytes.decode)
        for n, step in enumerate(steps, start=1):
            data = f"{n:04d}".encode()
            if step == "in place":
                path.write_bytes(data)  # same size: only the timestamps can tell
            elif step == "replace":
                files.write_atomic(path, data, durable=False)
            elif step == "same bytes":
                files.write_atomic(path, path.read_bytes(), durable=False)
            elif step == "own write":
                files.write_atomic(path, data, durable=False)
                seen.wrote(data, data.decode())
            assert seen.read() == path.read_text()


@pytest.mark.parametrize("size", [0, 1, 4096, (1 << 20) - 1, 1 << 20, (3 << 20) + 7])
def test_read_bytes_reads_the_whole_file(tmp_path: Path, size: int) -> None:
    path = tmp_path / "data"
    data = os.urandom(size)
    path.write_bytes(data)
    assert files.read_bytes(path) == data
    assert files.read_text(tmp_path / "data", errors="replace") == data.decode(errors="replace")


def test_read_bytes_raises_as_open_does(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        files.read_bytes(tmp_path / "missing")
    with pytest.raises(IsADirectoryError):
        files.read_bytes(tmp_path)


def test_present_lists_the_names_in_a_folder_with_one_look(tmp_path: Path) -> None:
    (tmp_path / "MERGE_HEAD").write_text("x")
    (tmp_path / "rebase-merge").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    names = ["rebase-merge", "index.lock", "MERGE_HEAD", "dangling"]
    assert files.present(tmp_path, names) == ["rebase-merge", "MERGE_HEAD", "dangling"]
    assert files.present(tmp_path / "missing", names) == []


def test_an_atomic_write_makes_its_folder_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.json"
    files.write_atomic(path, "one\n", durable=False)
    files.write_atomic(path, b"two\n")
    assert path.read_text() == "two\n"
    assert os.listdir(path.parent) == ["state.json"]


def test_new_files_made_at_once_by_many_threads_never_share_a_name(tmp_path: Path) -> None:
    import threading

    made: list[str] = []

    def make() -> None:
        for _ in range(50):
            fd, name = files.new_file(f"{tmp_path}/.x.", ".tmp")
            os.close(fd)
            made.append(name)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(made)) == 400 == len(os.listdir(tmp_path))
    (tmp_path / "objects").mkdir()
    fd, name = files.new_file(f"{tmp_path}/objects/", "", 0o444)  # read-only, open for writing
    os.write(fd, b"x")
    os.close(fd)
    assert mode(Path(name)) == 0o444 & ~files._UMASK and Path(name).read_bytes() == b"x"


def test_dumps_reuses_the_texts_a_caller_kept_and_fills_in_the_rest() -> None:
    doc = {"tickets": [{"id": f"T-{i}", "n": i} for i in range(20)], "version": 1}
    rendered: dict[int, str] = {}
    assert files.dumps(doc, rendered=rendered) == json.dumps(doc, indent=2, ensure_ascii=False)
    assert set(rendered) == {id(t) for t in doc["tickets"]}
    doc["tickets"][3]["n"] = 99  # changed in place, and dropped by the caller
    del rendered[id(doc["tickets"][3])]
    rendered[id(doc["tickets"][4])] = '"kept"'  # what it keeps is written as it is
    text = files.dumps(doc, rendered=rendered)
    assert '"n": 99' in text and '"kept"' in text and '"n": 4' not in text


tickets_lists = st.lists(
    st.dictionaries(st.sampled_from(["id", "title", "state", "n", "history"]), json_values,
                    min_size=1, max_size=5),
    min_size=16, max_size=24,
)  # fmt: skip


@given(tickets_lists, st.sampled_from(["sage", "compact", "indent 4", "one by hand"]))
def test_the_texts_found_in_a_file_write_what_json_writes(
    tickets: list[dict[str, Any]], layout: str
) -> None:
    """`rendered_in`: whatever the file's layout, what `dumps` writes from the texts it found
    reads back as the document, types and key order kept; from a file sage wrote, every ticket's
    text is found, and the write is sage's own layout, byte for byte."""
    canonical = files.json_text({"tickets": tickets})
    text = {
        "sage": canonical,
        "compact": json.dumps({"tickets": tickets}),
        "indent 4": json.dumps({"tickets": tickets}, indent=4, ensure_ascii=False),
        "one by hand": canonical.replace("\n      ", "\n        ", 3),
    }[layout]
    data = json.loads(text)
    rendered = files.rendered_in(text, data)
    written = files.dumps(data, rendered=rendered) + "\n"
    compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    assert compact(json.loads(written)) == compact(data)
    if layout == "sage":
        assert len(rendered) == len(tickets) and written == canonical


def test_a_snapshot_told_of_another_process_s_write_reads_it_without_parsing(
    tmp_path: Path,
) -> None:
    path, parse = tmp_path / "index.json", Parses()
    path.write_text("old")
    seen = files.Snapshot(path, parse)
    assert seen.read() == "old" and parse.calls == 1
    seen.told(files.content_digest(b"new"), "new, as told")  # told before the file is there
    assert seen.read() == "old" and seen.latest() == (files.content_digest(b"new"), "new, as told")
    files.write_atomic(path, b"new", durable=False)
    assert seen.read() == "new, as told" and parse.calls == 1
    seen.told(files.content_digest(b"what it meant to write"), "meant")
    files.write_atomic(path, b"what a user wrote", durable=False)  # not what it was told of
    assert seen.read() == "what a user wrote" and parse.calls == 2
