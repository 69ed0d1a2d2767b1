"""Reading a run back from its events: spans per slot and queue, phases, what still runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sage.lib import history
from sage.lib.errors import SageError
from sage.lib.project import open_project
from tests.conftest import git, state_dir


def at(seconds: float) -> str:
    whole, frac = divmod(seconds, 1)
    return f"2026-12-01T10:00:{int(whole):02d}.{round(frac * 1000):03d}Z"


def ev(kind: str, seconds: float, ticket: str | None = None, **data: Any) -> dict[str, Any]:
    return {"event": kind, "ticket": ticket, "at": at(seconds), **data}


def write_run(runs: Path, run_id: str, events: list[dict[str, Any]], tail: str = "") -> Path:
    folder = runs / run_id
    folder.mkdir(parents=True)
    text = "".join(json.dumps(e) + "\n" for e in events) + tail
    (folder / "events.jsonl").write_text(text)
    return folder


RUN = [
    ev("run-started", 0, workers=2, tickets=3),
    ev("started", 0.1, "A", slot=0, attempt=1, title="Alpha", log="A.log"),
    ev("started", 0.2, "B", slot=1, attempt=1, title="Beta", log="B.log"),
    ev("exited", 1.0, "A", slot=0),
    ev("finished", 1.1, "A", slot=0, outcome="ok"),
    ev("queued", 1.1, "A", depth=1),
    ev("finished", 1.5, "B", slot=1, outcome="failed", detail="exit 1"),
    ev("retry", 1.5, "B", attempt=2, delay=0.5, reason="exit 1"),
    ev("landed", 1.3, "A", commit="abc"),
    ev("started", 2.0, "B", slot=1, attempt=2, title="Beta", log="B.log"),
    ev("exited", 2.5, "B", slot=1),
    ev("finished", 2.6, "B", slot=1, outcome="error", detail="could not queue"),
    ev("deferred", 2.6, "B", reason="could not queue"),
    ev("blocked", 2.6, "C", by="B"),
    ev("run-finished", 2.7, **{"event": "summary", "completed": ["A"], "skipped": []}),
]


def test_spans_per_slot_queue_and_retries(tmp_path: Path) -> None:
    h = history.load(write_run(tmp_path, "20261201-100000-aaaaaa", RUN))
    got = [(s.ticket, s.lane, s.kind, s.start, s.end, s.attempt) for s in h.spans]
    assert got == [
        ("A", "slot 0", "running", 0.1, 1.0, 1),
        ("B", "slot 1", "failed", 0.2, 1.5, 1),
        ("B", "retries", "retry", 1.5, 2.0, 2),
        ("A", "queue", "landed", 1.1, 1.3, 1),
        ("B", "slot 1", "failed", 2.0, 2.5, 2),  # exited, but its work could not be queued
    ]
    assert h.phases == {"A": "landed", "B": "deferred", "C": "blocked"}
    assert h.workers == 2 and h.finished and h.running == ()


def test_a_live_run_has_running_attempts_and_open_spans(tmp_path: Path) -> None:
    half = RUN[:6]  # A queued, B running; the last line is being written
    h = history.load(write_run(tmp_path, "20261201-100000-aaaaaa", half, tail='{"event": "ex'))
    assert not h.finished
    assert [(r.ticket, r.slot, r.attempt, r.title) for r in h.running] == [("B", 1, 1, "Beta")]
    open_spans = [(s.ticket, s.kind, s.end) for s in h.spans if s.end == 1.1 and s.start < 1.1]
    assert ("B", "running", 1.1) in open_spans
    assert [s.kind for s in h.spans if s.lane == "queue"] == ["waiting"]


def test_runs_newest_first_and_found_by_prefix(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    for run_id in ("20261130-090000-aaaaaa", "20261201-090000-bbbbbb", "20261201-100000-cccccc"):
        write_run(state_dir(tmp_path) / "runs", run_id, RUN[:1])
    project = open_project(tmp_path)
    assert history.find_run(project).name == "20261201-100000-cccccc"
    assert history.find_run(project, "20261130").name == "20261130-090000-aaaaaa"
    with pytest.raises(SageError, match="2 runs matching '20261201'"):
        history.find_run(project, "20261201")


def test_two_runs_in_the_same_second_are_ordered_by_their_first_event(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    runs = state_dir(tmp_path) / "runs"
    write_run(runs, "20261201-100000-zzzzzz", [ev("run-started", 0.1)])
    write_run(runs, "20261201-100000-aaaaaa", [ev("run-started", 0.5)])
    newest = history.find_run(open_project(tmp_path))
    assert newest.name == "20261201-100000-aaaaaa"


def test_a_question_not_yet_answered_is_what_the_run_waits_on(tmp_path: Path) -> None:
    asked = [*RUN[:1], ev("asked", 0.1, "A", title="Alpha", priority="P1")]
    h = history.load(write_run(tmp_path, "20261201-100000-aaaaaa", asked), live=True)
    assert h.asking is not None and (h.asking.ticket, h.asking.title) == ("A", "Alpha")
    assert h.asking.since == history.parse_time(at(0.1))
    answered = [*asked, {**ev("answered", 3.0, "A", answer="yes"), "seconds": 2.9}]
    assert history.load(write_run(tmp_path, "20261201-100001-bbbbbb", answered)).asking is None
    ended = [*asked, RUN[-1]]  # Ctrl+C at the prompt: no answer, but the run is over
    assert history.load(write_run(tmp_path, "20261201-100002-cccccc", ended)).asking is None


def test_the_time_at_the_prompt_is_a_span_of_its_own(tmp_path: Path) -> None:
    events = [
        ev("run-started", 0, workers=1, tickets=1),
        ev("asked", 0.1, "A", title="Alpha", priority="P1"),
        {**ev("answered", 4.1, "A", answer="yes"), "seconds": 4.0},
        ev("started", 4.2, "A", slot=0, attempt=1, title="Alpha", log="A.log"),
        ev("exited", 5.0, "A", slot=0),
        ev("asked", 5.5, "B", title="Beta", priority="P1"),
    ]
    h = history.load(write_run(tmp_path, "20261201-100000-aaaaaa", events))
    prompt = [(s.ticket, s.kind, s.start, s.end, s.note, s.open) for s in h.spans
              if s.lane == "prompt"]  # fmt: skip
    assert prompt == [("A", "asked", 0.1, 4.1, "answered yes", False),
                      ("B", "asked", 5.5, 5.5, "waiting for an answer", True)]  # fmt: skip
