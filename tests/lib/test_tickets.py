"""The ticket model, the index parser's checks, and the locked, atomic store."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sage.lib import files, tickets
from sage.lib.errors import IndexFileError, LockHeld, SageError
from tests.conftest import FIXTURE, git, ticket, write_index

UNSAFE = {
    "../x": "contains '..'",
    "a b": "contains whitespace",
    "..": "contains '..'",
    "x.lock": "ends with '.lock'",
    "-rf": "starts with '-'",
    "ctl\x07x": "contains a control character",
    "\u0422ASK-1": "contains a non-ASCII character",  # Cyrillic Т, looks like TASK-1
    "a/b": "contains a path separator",
    ".hidden": "starts with '.'",
    "": "is empty",
}


def parse(entries: list[Any], path: Path = Path("index.json")) -> tickets.Index:
    return tickets.parse(json.dumps({"tickets": entries}), path)


def codes(index: tickets.Index) -> list[tuple[str, str | None]]:
    return [(p.code, p.ticket) for p in index.problems]


# ---- parsing --------------------------------------------------------------------------------


def test_the_example_index_parses_cleanly() -> None:
    index = tickets.load(FIXTURE)
    assert len(index.tickets) == 29
    assert index.problems == ()
    assert sum(t.weight for t in index.tickets) == 785


def test_defaults_and_known_fields() -> None:
    index = parse([
        {"id": "A-1", "title": "first"},
        {"id": "A-2", "title": "second", "state": "COMPLETED", "priority": "P0", "type": "bug",
         "dependencies": ["A-1", "A-1"], "estimate_minutes": 30, "command": ["make", "x"],
         "parent": "A-1"},
    ])  # fmt: skip
    first, second = index.tickets
    assert (first.state, first.priority, first.type, first.dependencies) == (
        "UNPROCESSED",
        "P2",
        "implementation",
        (),
    )
    assert first.weight == 1.0 and first.command is None  # no estimate: one unit per ticket
    assert second.dependencies == ("A-1",)  # repeated dependencies collapse
    assert (second.weight, second.command, second.parent, second.rank) == (
        30.0,
        ("make", "x"),
        "A-1",
        0,
    )
    assert index.problems == ()


def test_a_bare_list_is_accepted_as_the_tickets() -> None:
    index = tickets.parse('[{"id": "A-1", "title": "t"}]', Path("i.json"))
    assert [t.id for t in index.tickets] == ["A-1"]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"tickets": [\n  {"id": "A-1",}\n]}', ":2:16:"),
        ('{"tickets": [\n', ":2:1:"),
        ("", ":1:1:"),
    ],
)
def test_malformed_json_names_line_and_column(text: str, where: str) -> None:
    with pytest.raises(IndexFileError) as caught:
        tickets.parse(text, Path("idx.json"))
    assert f"idx.json{where} invalid JSON" in caught.value.message
    assert caught.value.hint


@pytest.mark.parametrize("text", ['{"tickets": {}}', '"just text"', "{}", "42"])
def test_a_document_without_a_tickets_list_is_refused(text: str) -> None:
    with pytest.raises(IndexFileError, match='"tickets" list'):
        tickets.parse(text, Path("idx.json"))


def test_every_problem_is_reported_in_one_pass() -> None:
    index = parse([
        "not an object",
        {"title": "no id"},
        {"id": "B-1"},
        {"id": "B-2", "title": "t", "state": "DONE", "priority": "P9", "type": "weird"},
        {"id": "B-3", "title": "t", "dependencies": "B-1", "estimate_minutes": -5},
        {"id": "B-4", "title": "t", "command": "make test", "estimate_minutes": True},
        {"id": "B-5", "title": "t", "state": ["list"]},
    ])  # fmt: skip
    assert codes(index) == [
        ("not-an-object", None),
        ("missing-field", None),
        ("missing-field", "B-1"),
        ("bad-state", "B-2"),
        ("bad-priority", "B-2"),
        ("bad-type", "B-2"),
        ("bad-dependencies", "B-3"),
        ("bad-estimate", "B-3"),
        ("bad-estimate", "B-4"),
        ("bad-command", "B-4"),
        ("bad-state", "B-5"),
    ]
    assert "tickets[0]" in index.problems[0].message
    assert "'DONE' is not one of UNPROCESSED" in index.problems[3].message
    # a bad field falls back to its default: the ticket is still there for the other checks
    assert [t.id for t in index.tickets] == ["B-1", "B-2", "B-3", "B-4", "B-5"]


def test_duplicated_ids_are_each_named() -> None:
    index = parse([ticket("D-1"), ticket("D-2"), ticket("D-1"), ticket("D-2"), ticket("D-2")])
    dupes = {p.ticket: p.message for p in index.problems if p.code == "duplicate-id"}
    assert dupes == {"D-1": "D-1: ID is used by 2 tickets", "D-2": "D-2: ID is used by 3 tickets"}


@pytest.mark.parametrize(("tid", "reason"), UNSAFE.items())
def test_unsafe_ids_are_refused_by_name(tid: str, reason: str) -> None:
    assert tickets.unsafe_id_reason(tid) == reason
    index = parse([ticket(tid)])
    [problem] = index.problems
    assert (problem.level, problem.code, problem.ticket) == ("error", "unsafe-id", tid)
    assert repr(tid) in problem.message and reason in problem.message


@pytest.mark.parametrize("tid", ["AUTH-001", "TASK-1", "a.b_c-d", "x", "v1.2", "API-V2-10b"])
def test_safe_ids(tid: str) -> None:
    assert tickets.unsafe_id_reason(tid) is None


def test_unconventional_but_safe_ids_are_warnings() -> None:
    index = parse([ticket("task_1"), ticket("AUTH-002")])
    assert [(p.level, p.code, p.ticket) for p in index.problems] == [
        ("warning", "id-format", "task_1")
    ]
    assert index.errors == []


def test_require_valid_names_the_first_errors() -> None:
    index = parse([ticket("E-1", title=""), ticket("E-1"), {"id": "E-2"}, {"id": "E-3"}])
    with pytest.raises(IndexFileError) as caught:
        tickets.require_valid(index)
    assert "4 errors" in caught.value.message and "(and 1 more)" in caught.value.message
    assert "sage validate" in (caught.value.hint or "")
    assert tickets.require_valid(parse([ticket("OK-1")])).tickets[0].id == "OK-1"


def test_loading_a_missing_index_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(IndexFileError) as caught:
        tickets.load(tmp_path / "nope.json")
    assert "no ticket index" in caught.value.message and "sage init" in (caught.value.hint or "")


def test_loading_a_non_utf8_index_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "index.json"
    path.write_bytes(b'{"tickets": ["\xff"]}')
    with pytest.raises(IndexFileError, match="cannot read"):
        tickets.load(path)


def test_quiet_gc_restores_the_collector() -> None:
    import gc

    assert gc.isenabled()
    with tickets.quiet_gc():
        assert not gc.isenabled()
        with tickets.quiet_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


# ---- the store ------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> tickets.TicketStore:
    path = tmp_path / ".sage" / "tickets" / "index.json"
    path.parent.mkdir(parents=True)
    doc = {
        "version": 3,
        "project": {"name": "demo", "owner": "someone"},
        "tickets": [
            ticket("S-1", docs={"spec": "docs/s1.md"}, labels=["x"], estimate_minutes=10),
            ticket("S-2", "S-1", custom={"nested": [1, 2, {"deep": True}]}),
            "garbage entries stay as they are",
        ],
    }
    path.write_text(json.dumps(doc, indent=4) + "\n")
    return tickets.TicketStore(path, lock_timeout=5)


def test_a_transition_keeps_every_unknown_field(store: tickets.TicketStore) -> None:
    before = json.loads(store.path.read_text())
    store.transition([("S-1", "IN_PROGRESS")], reason="picked", run_id="run-1",
                     fields={"S-1": {"worker": "w1"}})  # fmt: skip
    after = json.loads(store.path.read_text())
    assert after["version"] == 3 and after["project"] == before["project"]
    assert after["tickets"][2] == "garbage entries stay as they are"
    assert after["tickets"][1] == before["tickets"][1]
    s1 = after["tickets"][0]
    assert s1["docs"] == {"spec": "docs/s1.md"} and s1["labels"] == ["x"]
    assert (s1["state"], s1["worker"]) == ("IN_PROGRESS", "w1")
    assert s1["state_history"][0]["reason"] == "picked"
    assert s1["state_history"][0]["run"] == "run-1"


def test_state_history_records_each_change_in_utc(store: tickets.TicketStore) -> None:
    started = datetime.now(UTC)
    store.transition([("S-1", "IN_PROGRESS"), ("S-2", "DEFERRED")])
    store.transition([("S-1", "COMPLETED")], reason="landed")
    raw = {t["id"]: t for t in json.loads(store.path.read_text())["tickets"] if isinstance(t, dict)}
    history = raw["S-1"]["state_history"]
    assert [(h["from"], h["to"]) for h in history] == [
        ("UNPROCESSED", "IN_PROGRESS"),
        ("IN_PROGRESS", "COMPLETED"),
    ]
    assert raw["S-2"]["state_history"][0]["to"] == "DEFERRED"
    assert "reason" not in history[0] and history[1]["reason"] == "landed"
    for entry in history:
        assert entry["at"].endswith("Z")
        at = datetime.fromisoformat(entry["at"])
        assert at.utcoffset() == timedelta(0)
        assert started - timedelta(seconds=1) <= at <= datetime.now(UTC) + timedelta(seconds=1)
    assert store.load().by_id()["S-1"].state == "COMPLETED"


def test_a_transition_of_an_unknown_ticket_changes_nothing(store: tickets.TicketStore) -> None:
    before = store.path.read_text()
    with pytest.raises(SageError, match="GONE-1 is no longer in"):
        store.transition([("S-1", "COMPLETED"), ("GONE-1", "COMPLETED")])
    assert store.path.read_text() == before


def test_writes_leave_no_temporary_files(store: tickets.TicketStore) -> None:
    for state in ("IN_PROGRESS", "COMPLETED", "UNPROCESSED"):
        store.transition([("S-1", state)])
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["index.json", "index.json.lock"]


def test_a_failing_write_leaves_the_old_file_intact(
    store: tickets.TicketStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = store.path.read_text()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(SageError, match=r"cannot write .*No space left") as caught:
        store.transition([("S-1", "COMPLETED")])
    assert "unchanged" in (caught.value.hint or "")
    monkeypatch.undo()
    assert store.path.read_text() == before
    assert [p.name for p in store.path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_value_that_cannot_be_written_leaves_the_old_file_intact(
    store: tickets.TicketStore,
) -> None:
    before = store.path.read_text()
    with pytest.raises(TypeError):
        store.update(lambda raw: raw.__setitem__("oops", object()))
    assert store.path.read_text() == before


def test_write_atomic_creates_parents_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c.json"
    files.write_json(target, {"x": "é"})
    files.write_atomic(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert os.listdir(target.parent) == ["c.json"]


def test_a_held_lock_is_refused_with_a_clear_error(store: tickets.TicketStore) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from filelock import FileLock
            with FileLock({str(store.path) + ".lock"!r}):
                print("held", flush=True)
                sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waiting = tickets.TicketStore(store.path, lock_timeout=0.2)
        with pytest.raises(LockHeld) as caught:
            waiting.transition([("S-1", "COMPLETED")])
        assert "locked" in caught.value.message and caught.value.hint
    finally:
        holder.communicate("", timeout=10)
    assert store.load().by_id()["S-1"].state == "UNPROCESSED"


WRITER = """
import sys
from pathlib import Path
from sage.lib.tickets import TicketStore
store = TicketStore(Path(sys.argv[1]), lock_timeout=60)
name, rounds = sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for i in range(rounds):
    state = ("IN_PROGRESS", "UNPROCESSED")[i % 2]
    store.transition([("S-1", state), (f"{name}-1", state)], reason=f"{name}:{i}",
                     fields={f"{name}-1": {"count": i + 1}})
"""


def test_two_processes_transitioning_at_once_lose_no_update(tmp_path: Path) -> None:
    path = write_index(tmp_path, [ticket("S-1"), ticket("P-1"), ticket("Q-1")])
    rounds = 25
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, str(rounds)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name in ("P", "Q")
    ]  # fmt: skip
    for proc in procs:  # both started and importing done: release them together
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    raw = {t["id"]: t for t in json.loads(path.read_text())["tickets"]}
    shared = [h["reason"] for h in raw["S-1"]["state_history"]]
    assert sorted(shared) == sorted(f"{n}:{i}" for n in "PQ" for i in range(rounds))
    for name in ("P", "Q"):  # each process's own order survives, and its last write
        mine = [r for r in shared if r.startswith(name)]
        assert mine == [f"{name}:{i}" for i in range(rounds)]
        assert len(raw[f"{name}-1"]["state_history"]) == rounds
        assert raw[f"{name}-1"]["count"] == rounds


# ---- duplicate keys: never a lossy view ---------------------------------------------------------

DUPLICATES = [
    ('{"tickets": [{"id": "A-1", "title": "a"}],\n "tickets": []}', 2, 2, '"tickets"'),
    ('{"tickets": [\n  {"id": "A-1", "title": "a", "id": "A-2"}]}', 2, 31, '"id"'),
    ('{"tickets": [{"id": "A-1", "title": "a",\n "docs": {"x": 1, "x": 2}}]}', 2, 19, '"x"'),
]


@pytest.mark.parametrize(("text", "line", "column", "key"), DUPLICATES)
def test_a_duplicate_key_is_an_error_at_its_line_and_column(
    text: str, line: int, column: int, key: str
) -> None:
    with pytest.raises(IndexFileError) as error:
        tickets.parse(text, Path("index.json"))
    assert error.value.message.startswith(f"index.json:{line}:{column}: duplicate key {key}")
    assert error.value.hint


def test_a_duplicate_key_inside_a_string_is_not_one() -> None:
    text = '{"tickets": [{"id": "A-1", "title": "\\"id\\": \\"id\\": {\\"a\\": 1, \\"a\\": 2}"}]}'
    assert [t.id for t in tickets.parse(text, Path("i.json")).tickets] == ["A-1"]


def test_the_store_never_writes_from_a_view_that_hides_tickets(
    store: tickets.TicketStore,
) -> None:
    text = '{"tickets": [{"id": "A-1", "title": "a"}],\n "tickets": [{"id": "B-1", "title": "b"}]}'
    store.path.write_text(text, encoding="utf-8")
    with pytest.raises(IndexFileError, match="duplicate key"):
        store.transition([("B-1", "IN_PROGRESS")])
    assert store.path.read_text(encoding="utf-8") == text


@pytest.mark.parametrize("depth", [100_000, 3_000])
def test_a_deeply_nested_index_is_an_error_not_a_crash(depth: int) -> None:
    text = '{"tickets": [], "x": ' + "[" * depth + "]" * depth + "}"
    with pytest.raises(IndexFileError) as error:
        tickets.parse(text, Path("index.json"))
    assert error.value.message.startswith("index.json: ")
    assert "nested" in error.value.message and error.value.hint


def test_a_number_too_long_to_read_is_an_error_not_a_crash() -> None:
    text = '{"tickets": [{"id": "A-1", "title": "a", "estimate_minutes": ' + "9" * 5000 + "}]}"
    with pytest.raises(IndexFileError, match=r"index\.json: .*number"):
        tickets.parse(text, Path("index.json"))


# ---- input that validated and then crashed every run ------------------------------------------


@pytest.mark.parametrize("tid", ["A" * 101, "A-" + "1" * 99, "x" * 250])
def test_an_id_too_long_for_a_file_name_is_unsafe(tid: str) -> None:
    assert tickets.unsafe_id_reason(tid) == "is longer than 100 characters"
    assert ("unsafe-id", tid) in codes(parse([ticket(tid)]))


def test_an_id_of_100_characters_is_fine() -> None:
    assert tickets.unsafe_id_reason("A-" + "1" * 98) is None
    assert codes(parse([ticket("A-" + "1" * 98)])) == []


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"title": "a\x00b"}, "bad-title"),
        ({"command": ["python", "-c", "pass\x00"]}, "bad-command"),
        ({"state_history": "oops"}, "bad-state-history"),
        ({"state_history": {"from": "UNPROCESSED"}}, "bad-state-history"),
        ({"state_history": ["not a change"]}, "bad-state-history"),
    ],
)
def test_fields_no_run_could_use_are_errors(fields: dict[str, Any], code: str) -> None:
    """Found by a stream: NUL bytes cannot go into an argv or environment (every attempt failed
    with `ValueError`), and a non-list history crashed the first state change."""
    assert codes(parse([ticket("A-1", **fields)])) == [(code, "A-1")]


def test_a_lone_surrogate_is_an_error_at_its_line_and_column() -> None:
    text = '{"tickets": [\n {"id": "A-1", "title": "a\\ud800b"}]}'
    with pytest.raises(IndexFileError) as error:
        tickets.parse(text, Path("index.json"))
    assert error.value.message.startswith("index.json:2:27: ")
    assert "\\ud800" in error.value.message


def test_a_surrogate_pair_is_one_character() -> None:
    text = '{"tickets": [{"id": "A-1", "title": "smile \\ud83d\\ude00"}]}'
    assert tickets.parse(text, Path("i.json")).tickets[0].title == "smile \U0001f600"


# ---- text fit for a terminal and a commit subject ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain title", "plain title"),
        ("\x1b[31mred\x1b[0m alert", "red alert"),
        ("set \x1b]0;pwned\x07title", "set title"),
        ("osc \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "osc link"),
        ("c1 \x9b31mcsi and \x85next", "c1 csi and next"),
        ("bell\x07 back\x08space nul\x00", "bell backspace nul"),
        ("  many\n\tlines\r\n  here  ", "many lines here"),
        ("evil \u202egnp.exe", "evil gnp.exe"),
        ("unicode stays: é ✓ 日本", "unicode stays: é ✓ 日本"),
    ],
)
def test_printable_strips_escapes_and_controls_and_folds_whitespace(text: str, shown: str) -> None:
    assert tickets.printable(text) == shown


def test_allow_empty_is_a_flag() -> None:
    index = parse(
        [ticket("A-1", allow_empty=True), ticket("A-2"), ticket("A-3", allow_empty="yes")]
    )
    assert [t.allow_empty for t in index.tickets] == [True, False, False]
    assert codes(index) == [("bad-allow-empty", "A-3")]


def test_notes_that_are_not_utf8_are_read_without_a_crash(tmp_path: Path) -> None:
    """Found by a stream: the run crashed (exit 70) reading them."""
    (tmp_path / "A-1.md").write_bytes(b"\xff\xfe notes")
    assert tickets.read_notes(tmp_path / "index.json", "A-1") == "\ufffd\ufffd notes"
    assert (tmp_path / "A-1.md").read_bytes() == b"\xff\xfe notes"
    assert tickets.read_notes(tmp_path / "index.json", "B-1") is None
    (tmp_path / "C-1.md").mkdir()
    with pytest.raises(IndexFileError, match=r"C-1\.md"):
        tickets.read_notes(tmp_path / "index.json", "C-1")


# ---- merging the user's uncommitted index with a landing's -------------------------------------

_IDS = st.lists(st.sampled_from([f"M-{n}" for n in range(8)]), unique=True, min_size=1)


def _doc(entries: list[dict[str, Any]]) -> bytes:
    return files.json_text({"tickets": entries}).encode()


@given(ids=_IDS, data=st.data())
def test_merge_index_keeps_the_users_edits_and_the_landings(ids: list[str], data: Any) -> None:
    base = [ticket(tid) for tid in ids]
    landed = data.draw(st.lists(st.sampled_from(ids), unique=True))
    retitled = data.draw(st.lists(st.sampled_from(ids), unique=True))
    added = data.draw(st.lists(st.sampled_from(["U-1", "U-2"]), unique=True))
    theirs = json.loads(_doc(base))
    tickets.record_changes(theirs, [
        tickets.StateChange(ticket_id=t, state="COMPLETED", reason="landed") for t in landed
    ])  # fmt: skip
    mine = json.loads(_doc(base))
    for entry in mine["tickets"]:
        if entry["id"] in retitled:
            entry["title"] = "the user's title"
    mine["tickets"] += [ticket(tid) for tid in added]

    merged = tickets.merge_index(_doc(mine["tickets"]), _doc(base), _doc(theirs["tickets"]))

    assert merged is not None
    got = {t["id"]: t for t in json.loads(merged)["tickets"]}
    assert list(got) == [*ids, *added]  # the user's order, their tickets kept
    for tid in ids:
        assert got[tid]["state"] == ("COMPLETED" if tid in landed else "UNPROCESSED")
        assert got[tid]["title"] == ("the user's title" if tid in retitled else f"Ticket {tid}")
        assert len(got[tid].get("state_history", [])) == (tid in landed)
    if not retitled and not added:
        assert merged == _doc(theirs["tickets"])  # nothing of the user's: the landing's file


def test_merge_index_adds_tickets_a_worker_added_and_keeps_a_removal_by_the_user() -> None:
    base = [ticket("A-1"), ticket("A-2")]
    theirs = [ticket("A-1", state="COMPLETED"), ticket("A-2"), ticket("W-1")]
    mine = [ticket("A-1")]  # the user removed A-2

    merged = tickets.merge_index(_doc(mine), _doc(base), _doc(theirs))

    assert merged is not None
    assert [(t["id"], t["state"]) for t in json.loads(merged)["tickets"]] == [
        ("A-1", "COMPLETED"), ("W-1", "UNPROCESSED"),
    ]  # fmt: skip


def test_merge_index_declines_what_is_not_an_index() -> None:
    good = _doc([ticket("A-1")])
    assert tickets.merge_index(b'{"tickets": [', good, good) is None
    assert tickets.merge_index(b'{"tickets": [], "tickets": []}', good, good) is None


# ---- ticket states kept beside the index ----------------------------------------------------


def test_run_states_lay_over_the_index_until_the_index_says_otherwise(tmp_path: Path) -> None:
    path = write_index(tmp_path, [ticket("R-1"), ticket("R-2")])
    before = path.read_bytes()
    store = tickets.TicketStore(path, states=tmp_path / "state" / "tickets.json")
    store.transition([("R-1", "IN_PROGRESS")], reason="started", run_id="r1")
    store.transition(
        [("R-1", "DEFERRED")], reason="failed", fields={"R-1": {"deferred_reason": "x"}}
    )

    assert path.read_bytes() == before  # the index is the user's: nothing transient in it
    raw = store.load().raw["tickets"][0]
    assert (raw["state"], raw["deferred_reason"]) == ("DEFERRED", "x")
    assert [h["to"] for h in raw["state_history"]] == ["IN_PROGRESS", "DEFERRED"]

    data = json.loads(path.read_text())  # the user sets the state in the index: theirs wins
    data["tickets"][0]["state"] = "COMPLETED"
    path.write_text(json.dumps(data))
    assert {t.id: t.state for t in store.load().tickets} == {
        "R-1": "COMPLETED",
        "R-2": "UNPROCESSED",
    }


def test_a_landing_commits_completed_so_nothing_is_kept_beside_the_index(tmp_path: Path) -> None:
    path = write_index(tmp_path, [ticket("R-1")])
    states = tmp_path / "tickets.json"
    store = tickets.TicketStore(path, states=states)
    store.transition([("R-1", "IN_PROGRESS")])
    data = json.loads(path.read_text())  # as the checkout brought it with the landing
    data["tickets"][0]["state"] = "COMPLETED"
    path.write_text(json.dumps(data))
    landed = tickets.StateChange(ticket_id="R-1", state="COMPLETED", reason="landed",
                                 committed=True)  # fmt: skip
    store.record([landed])
    assert json.loads(states.read_text()) == {"tickets": {}}

    untracked = write_index(tmp_path / "u", [ticket("U-1")])  # no commit carried it
    store = tickets.TicketStore(untracked, states=tmp_path / "u.json")
    store.record([tickets.StateChange(ticket_id="U-1", state="COMPLETED", reason="landed")])
    assert json.loads(untracked.read_text())["tickets"][0]["state"] == "COMPLETED"


@given(st.lists(st.tuples(st.integers(0, 19), st.booleans()), min_size=1, max_size=12))
def test_completed_written_into_the_index_is_json_s_own_text_every_time(
    steps: list[tuple[int, bool]],
) -> None:
    """Each write reuses the text of the tickets it leaves alone; an edit from outside (the
    user's, a checkout's) in between makes it render everything again."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        path = write_index(root, [ticket(f"W-{i}", priority="P1") for i in range(20)])
        store = tickets.TicketStore(path, states=root / "state.json")
        titles = {i: f"Ticket W-{i}" for i in range(20)}
        for number, edited in steps:
            if edited:  # another writer: new dicts, maybe at the ids of the old ones
                data = json.loads(path.read_text())
                data["tickets"][(number + 7) % 20]["title"] += " (edited)"
                titles[(number + 7) % 20] += " (edited)"
                path.write_text(json.dumps(data))
            store.record([tickets.StateChange(ticket_id=f"W-{number}", state="COMPLETED",
                                              reason=f"landed {number}")])  # fmt: skip
            data = json.loads(path.read_text())
            assert path.read_text() == json.dumps(data, indent=2, ensure_ascii=False) + "\n"
            assert data["tickets"][number]["state"] == "COMPLETED"
            assert [t["title"] for t in data["tickets"]] == list(titles.values())


def test_corrupt_run_states_are_one_clear_error(tmp_path: Path) -> None:
    path = write_index(tmp_path, [ticket("R-1")])
    states = tmp_path / "tickets.json"
    for text in ("{", "[]", '{"tickets": []}'):
        states.write_text(text)
        with pytest.raises(IndexFileError, match=r"tickets\.json") as caught:
            tickets.TicketStore(path, states=states).load()
        assert caught.value.hint and "delete it" in caught.value.hint


def test_run_states_are_written_without_a_flush_and_the_index_with_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The durability policy (`sage.lib.files`): IN_PROGRESS is run state; a COMPLETED written
    into the index is a write of the user's file."""
    path = write_index(tmp_path, [ticket("R-1")])
    store = tickets.TicketStore(path, states=tmp_path / "state" / "tickets.json")
    flushed: list[int] = []
    monkeypatch.setattr(os, "fsync", flushed.append)
    store.transition([("R-1", "IN_PROGRESS")])
    assert flushed == []
    store.record([tickets.StateChange(ticket_id="R-1", state="COMPLETED", reason="landed")])
    assert len(flushed) == 2  # the file, then its folder


# ---- the store reuses what it read while the files are unchanged ------------------------------


def test_transitions_parse_an_unchanged_index_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_index(tmp_path, [ticket("R-1"), ticket("R-2")])
    store = tickets.TicketStore(path, states=tmp_path / "state" / "tickets.json")
    parsed: list[str] = []
    real = tickets._decode
    monkeypatch.setattr(
        tickets, "_decode", lambda text, where: parsed.append(text) or real(text, where)
    )
    store.transition([("R-1", "IN_PROGRESS")])
    store.transition([("R-2", "IN_PROGRESS")])
    store.record([tickets.StateChange(ticket_id="R-1", state="COMPLETED", reason="landed")])
    store.transition([("R-2", "DEFERRED")])  # after its own write of the index: no parse
    assert len(parsed) == 1


EDIT_IN_PLACE = """
import sys
path, old, new = sys.argv[1:]
with open(path, "r+b") as f:  # same size, same inode: only the timestamps tell
    data = f.read().replace(old.encode(), new.encode())
    f.seek(0)
    f.write(data)
"""


def test_an_edit_by_another_process_between_two_transitions_is_seen(tmp_path: Path) -> None:
    path = write_index(tmp_path, [ticket("R-1"), ticket("R-2")])
    states = tmp_path / "state" / "tickets.json"
    store = tickets.TicketStore(path, states=states)
    store.transition([("R-1", "IN_PROGRESS")])
    subprocess.run([sys.executable, "-c", EDIT_IN_PLACE, str(path), '"R-2"', '"R-3"'], check=True)
    with pytest.raises(SageError, match="R-2 is no longer in"):
        store.transition([("R-2", "IN_PROGRESS")])
    store.transition([("R-3", "IN_PROGRESS")])
    assert set(json.loads(states.read_text())["tickets"]) == {"R-1", "R-3"}

    store.record([tickets.StateChange(ticket_id="R-1", state="COMPLETED", reason="landed")])
    subprocess.run([sys.executable, "-c", EDIT_IN_PLACE, str(path), "Ticket R-2", "Ticket X-2"],
                   check=True)  # fmt: skip
    store.record([tickets.StateChange(ticket_id="R-3", state="COMPLETED", reason="landed")])
    written = {t["id"]: t for t in json.loads(path.read_text())["tickets"]}
    assert (written["R-1"]["state"], written["R-3"]["state"]) == ("COMPLETED", "COMPLETED")
    assert written["R-3"]["title"] == "Ticket X-2"  # the edit made since the last write is kept

    subprocess.run([sys.executable, "-c", EDIT_IN_PLACE, str(states), "R-1", "R-9"], check=True)
    assert set(tickets.RunStates(states, lock_timeout=1).read()) == set(store.states.read())


STATE_OPS = ("start", "defer", "reset", "complete", "landed")  # what the store does
EDITS = ("retitle", "drop", "add", "forget")  # what another writer does meanwhile
IDS = ("R-1", "R-2", "R-3")


def _do(store: tickets.TicketStore, op: str, tid: str) -> str:
    """What `op` on `tid` did: "" or the type of the error it raised."""
    states = {"start": "IN_PROGRESS", "defer": "DEFERRED", "reset": "UNPROCESSED"}
    try:
        if op in states:
            store.transition([(tid, states[op])], reason=op, fields={tid: {"why": [op, tid]}})
        else:
            store.record(
                [
                    tickets.StateChange(
                        ticket_id=tid,
                        state="COMPLETED",
                        reason=op,
                        committed=op == "landed",
                        fields={"n": (1, 2)},
                    )
                ]
            )
    except SageError as exc:
        return type(exc).__name__
    return ""


def _edit(index: Path, states: Path, op: str, tid: str) -> None:
    data = json.loads(index.read_text())
    if op == "retitle":  # in place, the same size
        text, title = index.read_text(), f'"Ticket {tid}"'
        old, new = (title, title.swapcase()) if title in text else (title.swapcase(), title)
        with open(index, "r+", encoding="utf-8") as handle:
            handle.write(text.replace(old, new))
    elif op == "drop":  # rewritten in place
        data["tickets"] = [t for t in data["tickets"] if t["id"] != tid]
        index.write_text(json.dumps(data, indent=2))
    elif op == "add":  # replaced by another file
        if all(t["id"] != tid for t in data["tickets"]):
            data["tickets"].append(ticket(tid))
        files.write_atomic(index, json.dumps(data), durable=False)
    else:
        states.unlink(missing_ok=True)


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.rglob("*.json")}


@given(st.lists(st.tuples(st.sampled_from(STATE_OPS + EDITS), st.sampled_from(IDS)),
                max_size=14))  # fmt: skip
def test_a_store_that_reuses_its_reads_writes_what_a_fresh_one_would(
    steps: list[tuple[str, str]],
) -> None:
    """Each change of state, made by a store that has read and written the files before and by a
    fresh one from the same files, writes the same bytes, whatever another writer did between."""
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(tickets, "now", lambda: "2026-01-01T00:00:00.000Z")
        real, shadow = Path(folder, "real"), Path(folder, "shadow")
        index = write_index(real, [ticket(t) for t in IDS[:2]], path="index.json")
        store = tickets.TicketStore(index, states=real / "tickets.json")
        for op, tid in steps:
            if op in EDITS:
                _edit(index, real / "tickets.json", op, tid)
                continue
            shutil.rmtree(shadow, ignore_errors=True)
            shutil.copytree(real, shadow)
            fresh = tickets.TicketStore(shadow / "index.json", states=shadow / "tickets.json")
            assert _do(store, op, tid) == _do(fresh, op, tid)
            assert _contents(real) == _contents(shadow)


def test_a_failed_write_leaves_nothing_of_its_change_in_what_the_store_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_index(tmp_path, [ticket("R-1"), ticket("R-2")])
    states = tmp_path / "state" / "tickets.json"
    store = tickets.TicketStore(path, states=states)
    store.transition([("R-1", "IN_PROGRESS")])

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", disk_full)
        for change in ("COMPLETED", "DEFERRED"):  # into the index; into the run states
            with pytest.raises(SageError, match="No space left"):
                store.record([tickets.StateChange(ticket_id="R-1", state=change, reason="x")])
    store.transition([("R-2", "IN_PROGRESS")])
    store.record([tickets.StateChange(ticket_id="R-2", state="COMPLETED", reason="landed")])
    index = {t["id"]: t for t in json.loads(path.read_text())["tickets"]}
    assert (index["R-1"]["state"], index["R-2"]["state"]) == ("UNPROCESSED", "COMPLETED")
    assert [h["to"] for h in json.loads(states.read_text())["tickets"]["R-1"]["history"]] == [
        "IN_PROGRESS"
    ]


def test_a_transition_during_a_checkouts_update_of_the_index_waits_for_it(repo: Path) -> None:
    """`git read-tree -u` deletes the index and writes it again, under the store's lock (the
    landing holds it while the user's checkout follows): a transition that reads the index
    meanwhile finds it gone or cut short, and reads it again under the lock."""
    path = write_index(repo, [ticket(f"R-{i}") for i in range(30)])
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tickets")
    data = json.loads(path.read_text())
    data["tickets"][0]["state"] = "COMPLETED"
    path.write_text(json.dumps(data, indent=2))
    git(repo, "commit", "-qam", "R-0 landed")
    old, new = git(repo, "rev-parse", "HEAD~1"), git(repo, "rev-parse", "HEAD")
    store = tickets.TicketStore(path, states=repo / ".git" / "sage" / "tickets.json",
                                lock=repo / ".git" / "sage" / "index.lock")  # fmt: skip
    stop = threading.Event()

    def checkout_follows() -> None:
        tree = (old, new)
        while not stop.is_set():
            with store.lock:
                git(repo, "read-tree", "-m", "-u", *tree)
            tree = tree[::-1]

    follower = threading.Thread(target=checkout_follows)
    follower.start()
    try:
        for i in range(100):
            store.transition([(f"R-{1 + i % 29}", ("IN_PROGRESS", "DEFERRED")[i % 2])])
    finally:
        stop.set()
        follower.join()


LANDER_WRITES = """
import pickle, sys
from pathlib import Path
from sage.lib import tickets
path, states, told, *ids = sys.argv[1:]
store = tickets.TicketStore(Path(path), states=Path(states))
writes = []
store.on_write = writes.append
for tid in ids:
    store.record([tickets.StateChange(ticket_id=tid, state="COMPLETED", reason="landed")])
Path(told).write_bytes(pickle.dumps(writes))
"""


def test_a_store_follows_another_process_s_writes_of_the_index_without_parsing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lander's process writes COMPLETED into the index and says so (`on_write`): the
    stream's store, told, reads the index after each write without parsing it, and reads what
    a parse gives. A user's edit in between is parsed, as before, and a write told over an
    index the store does not know is not taken."""
    path = write_index(tmp_path, [ticket(f"R-{i}") for i in range(20)])
    states = tmp_path / "state" / "tickets.json"
    store = tickets.TicketStore(path, states=states)
    parsed: list[str] = []
    real = tickets._decode
    monkeypatch.setattr(
        tickets, "_decode", lambda text, where: parsed.append(text) or real(text, where)
    )
    store.transition([("R-0", "IN_PROGRESS")])
    assert len(parsed) == 1

    def lander(*ids: str) -> list[tickets.IndexWrite]:
        told = tmp_path / "told.pickle"
        subprocess.run([sys.executable, "-c", LANDER_WRITES, str(path), str(states), str(told),
                        *ids], check=True)  # fmt: skip
        return list(pickle.loads(told.read_bytes()))

    for write in lander("R-0", "R-1"):  # two writes, the second over the first
        store.follow(write)
    store.transition([("R-2", "IN_PROGRESS")])
    assert len(parsed) == 1
    assert store._document().raw == json.loads(path.read_text())  # as a parse reads it

    data = json.loads(path.read_text())  # the user's edit, then a landing over it
    data["tickets"][5]["title"] = "edited by hand"
    path.write_text(json.dumps(data, indent=2) + "\n")
    (write,) = lander("R-2")
    store.follow(write)  # over the user's edit, which this store has not read: not taken
    store.transition([("R-3", "IN_PROGRESS")])
    assert len(parsed) == 2
    loaded = {t.id: t for t in store.load().tickets}
    assert loaded["R-5"].title == "edited by hand"
    assert [loaded[f"R-{i}"].state for i in range(4)] == ["COMPLETED"] * 3 + ["IN_PROGRESS"]
