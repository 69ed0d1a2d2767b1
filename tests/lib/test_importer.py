"""Markdown task lists into tickets: both forms, the merge, and the seeds' real documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.lib import config, importer, tickets
from sage.lib import graph as dag
from sage.lib.errors import SageError
from tests.conftest import FIXTURE, ROOT

# the other task lists sage was designed from, next to the checkout (or its main worktree)
SEEDS = next((p / "shared" / "seeds" for p in ROOT.parents if (p / "shared" / "seeds").is_dir()),
             ROOT / "missing")  # fmt: skip
PAR_001 = ROOT / "examples" / "par-001.md"  # seed 003: the task list behind par-001.json

SPEC_KIT = """\
# Tasks: Demo

## Phase 1: Setup

- [x] T001 Create the package in src/app/__init__.py
- [ ] T002 [P] Add config in src/app/config.py
- [ ] T003 [P] Add logging in src/app/log.py

## Phase 2: User Story 1 - Fast path (Priority: P1) MVP

- [ ] T004 [US1] Build it in src/app/fast.py (see `docs/fast.md`)
- [ ] T005 [P] [US1] Test it in tests/test_fast.py
- [ ] T005a [P] [US2] Document start/stop, e.g. in README.md

```bash
- [ ] T999 a task in a code block is an example, not a task
```

## Phase 3: User Story 2 - Config (Priority: P2)

- [ ] T006 [US2] Last
"""

TASK_LIST = """\
### Phase 1: Core

- [ ] **TASK-001: First thing**
  - **Description:** Do the first thing
  - **Estimate:** 1 hour
  - **Files:** `lib/one.sh`
  - **Dependencies:** None

- [x] **TASK-002: Second thing**
  - **Estimate:** 1h 30m
  - **Validation:** run it
  - **Dependencies:** TASK-001

### Phase 2: More

- [ ] **TASK-003: Third**
  - **Estimate:** 20 minutes
  - **Files:** `commands/stream.md` (Section 0), `b.py`
  - **Dependencies:** TASK-001, TASK-002
"""


def parse(text: str) -> importer.Document:
    return importer.parse(text, Path("tasks.md"))


def by_id(doc: importer.Document) -> dict[str, importer.Task]:
    return {t.id: t for t in doc.tasks}


def test_spec_kit_phases_and_parallel_runs_become_dependencies() -> None:
    doc = parse(SPEC_KIT)
    tasks = by_id(doc)
    assert doc.form == "spec-kit" and "T999" not in tasks
    deps = {tid: t.fields["dependencies"] for tid, t in tasks.items()}
    assert deps == {
        "T001": [],
        "T002": ["T001"],
        "T003": ["T001"],  # [P] runs are independent of each other
        "T004": ["T002", "T003"],  # a new phase waits for the whole run before it
        "T005": ["T004"],
        "T005a": ["T004"],
        "T006": ["T005", "T005a"],
    }
    assert tasks["T001"].done and not tasks["T002"].done


def test_spec_kit_priorities_files_and_titles() -> None:
    tasks = by_id(parse(SPEC_KIT))
    assert tasks["T004"].fields["priority"] == "P1"
    assert tasks["T005a"].fields["priority"] == "P2"  # its story's heading, not the phase
    assert "priority" not in tasks["T001"].fields  # setup states none: a new ticket gets P2
    assert tasks["T004"].fields["files"] == ["docs/fast.md"]  # backticks say exactly
    assert tasks["T002"].fields["files"] == ["src/app/config.py"]
    assert tasks["T005a"].fields["files"] == ["README.md"]  # not start/stop, not e.g.
    assert tasks["T002"].fields["title"] == "Add config in src/app/config.py"


def test_task_lists_take_stated_fields() -> None:
    doc = parse(TASK_LIST)
    tasks = by_id(doc)
    assert doc.form == "task-list"
    first, second, third = tasks["TASK-001"], tasks["TASK-002"], tasks["TASK-003"]
    assert first.fields["title"] == "First thing"
    assert first.fields["description"] == "Do the first thing"
    assert first.fields["estimate_minutes"] == 60 and second.fields["estimate_minutes"] == 90
    assert first.fields["files"] == ["lib/one.sh"]
    assert third.fields["files"] == ["commands/stream.md", "b.py"]
    assert third.fields["dependencies"] == ["TASK-001", "TASK-002"]
    assert second.fields["details"] == {"validation": "run it"}
    assert first.defaults == {"priority": "P0"} and third.defaults == {"priority": "P1"}
    assert second.done


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30 minutes", 30), ("1 hour", 60), ("1.5 hours", 90), ("1h 30m", 90), ("45", 45),
     ("~2 hrs", 120), ("1 day", 480), ("soon", None)],
)  # fmt: skip
def test_estimates(text: str, minutes: float | None) -> None:
    assert importer.parse_estimate(text) == minutes


def test_a_document_without_tasks_is_refused_with_the_forms() -> None:
    with pytest.raises(SageError, match="no tasks found") as caught:
        parse("# Plan\n\n- [ ] SHA256 validation\n- [x] All tests pass\n")
    assert "T001" in (caught.value.hint or "")


def test_a_repeated_id_keeps_the_first_and_says_so() -> None:
    doc = parse("## Phase 1\n- [ ] T001 One\n- [ ] T002 Two\n## Phase 2\n- [ ] T001 Again\n")
    assert [t.fields["title"] for t in doc.tasks] == ["One", "Two"]
    assert "reuse an ID" in doc.warnings[0] and "line 5" in doc.warnings[0]


def merged(raw: dict[str, Any], text: str) -> importer.Merge:
    return importer.merge(raw, parse(text), source="tasks.md")


def test_merge_adds_then_keeps_states_and_fields() -> None:
    raw: dict[str, Any] = {"tickets": []}
    first = merged(raw, TASK_LIST)
    assert first.added == ("TASK-001", "TASK-002", "TASK-003")
    assert first.completed == ("TASK-002",)
    entries = {e["id"]: e for e in raw["tickets"]}
    assert entries["TASK-002"]["state"] == "COMPLETED"
    assert entries["TASK-002"]["state_history"][0]["reason"] == "checked in tasks.md"
    entries["TASK-001"]["state"] = "DEFERRED"  # sage deferred it
    entries["TASK-001"]["priority"] = "P3"  # the user changed what the list did not state
    entries["TASK-003"]["notes"] = "mine"
    again = merged(raw, TASK_LIST.replace("Third", "Third, renamed"))
    assert again.added == () and again.updated == {"TASK-003": ("title",)}
    assert again.kept == {"TASK-001": "DEFERRED"}
    assert entries["TASK-001"]["state"] == "DEFERRED" and entries["TASK-001"]["priority"] == "P3"
    assert entries["TASK-003"]["notes"] == "mine"
    assert entries["TASK-003"]["title"] == "Third, renamed"


def test_unchecking_never_undoes_a_completed_ticket() -> None:
    raw: dict[str, Any] = {"tickets": []}
    merged(raw, TASK_LIST)
    result = merged(raw, TASK_LIST.replace("[x]", "[ ]"))
    assert result.kept == {"TASK-002": "COMPLETED"} and not result.changed
    assert raw["tickets"][1]["state"] == "COMPLETED"


def test_tickets_not_in_the_document_stay() -> None:
    raw: dict[str, Any] = {"tickets": [{"id": "AUTH-001", "title": "Mine"}]}
    result = merged(raw, TASK_LIST)
    assert result.elsewhere == ("AUTH-001",) and raw["tickets"][0] == {"id": "AUTH-001",
                                                                      "title": "Mine"}  # fmt: skip


def seed(prefix: str) -> Path:
    if prefix == "003":
        return PAR_001
    found = sorted(SEEDS.glob(f"{prefix}_*.txt"))
    if not found:
        pytest.skip("the seed documents are not on this machine")
    return found[0]


def as_index(doc: importer.Document, *, open_all: bool = False) -> tickets.Index:
    raw: dict[str, Any] = {"tickets": []}
    importer.merge(raw, doc, source="seed")
    if open_all:
        for entry in raw["tickets"]:
            entry["state"] = "UNPROCESSED"
    return tickets.parse(json.dumps(raw), Path("index.json"))


def test_seed_003_is_the_par_001_graph() -> None:
    imported = as_index(importer.read(seed("003")), open_all=True)
    fixture = tickets.load(FIXTURE)
    shape = [(t.id, t.title, t.dependencies, t.estimate_minutes, t.priority)
             for t in fixture.tickets]  # fmt: skip
    assert [(t.id, t.title, t.dependencies, t.estimate_minutes, t.priority)
            for t in imported.tickets] == shape  # fmt: skip
    graph = dag.build(imported.tickets)
    path = dag.critical_path(graph, {t.id: t.weight for t in imported.tickets})
    assert path.minutes == 220
    assert path.tickets[:3] == ("TASK-001", "TASK-002", "TASK-004")
    raw = {e["id"]: e for e in imported.raw["tickets"]}
    assert raw["TASK-001"]["files"] == [".sage/lib/parallel-scheduler.sh"]


@pytest.mark.parametrize(
    ("prefix", "form", "count"),
    [("000", "spec-kit", 35), ("001", "spec-kit", 37), ("002", "spec-kit", 42),
     ("003", "task-list", 29), ("004", "headings", 7)],
)  # fmt: skip
def test_every_seed_imports_without_errors(prefix: str, form: str, count: int) -> None:
    doc = importer.read(seed(prefix))
    index = as_index(doc)
    graph = dag.build(index.tickets)
    assert index.errors == [] and dag.problems(index.tickets, graph) == []
    assert (doc.form, len(index.tickets)) == (form, count)


HEADINGS = """# Plan

### Stream A: Config schema (Blocker: None)
**Duration**: 1-2 days
**Dependencies**: None (independent)

### Stream B: Manager
**Duration**: 4 hours
**Dependencies**:
- Hard: Stream A (needs the schema)
- External: `tqdm`

### Stream C: Docs
**Dependencies**:
- Soft: Streams A, B (as they develop)

### TASK-009: Release
**Status**: ✅ Done
**Dependencies**: Streams B + C, TASK-001

## Definition of done
- [ ] SHA256 checked
"""


def test_headings_with_stated_fields_are_tasks() -> None:
    doc = parse(HEADINGS)
    tasks = by_id(doc)
    assert doc.form == "headings" and list(tasks) == [
        "STREAM-A",
        "STREAM-B",
        "STREAM-C",
        "TASK-009",
    ]
    assert tasks["STREAM-A"].fields["title"] == "Config schema"
    assert tasks["STREAM-A"].fields["estimate_minutes"] == 720  # 1.5 days of 8 hours
    assert tasks["STREAM-B"].fields["dependencies"] == ["STREAM-A"]  # External is no ticket
    assert tasks["STREAM-C"].fields["dependencies"] == []  # soft is not a dependency
    assert tasks["TASK-009"].fields["dependencies"] == ["TASK-001", "STREAM-B", "STREAM-C"]
    assert tasks["TASK-009"].done and not tasks["STREAM-B"].done


def test_seed_000_story_priorities() -> None:
    tasks = by_id(importer.read(seed("000")))
    assert tasks["T009"].fields["priority"] == "P1" and tasks["T022"].fields["priority"] == "P2"
    assert tasks["T002"].fields["dependencies"] == [] and tasks["T003"].fields["dependencies"] == [
        "T001", "T002"]  # fmt: skip
    assert tasks["T001"].done and not tasks["T009"].done


def test_set_value_keeps_the_comments(tmp_path: Path) -> None:
    path = tmp_path / config.CONFIG_PATH
    path.parent.mkdir(parents=True)
    path.write_text(config.TEMPLATE)
    config.set_value(tmp_path, "tickets", "id_pattern", importer.SPEC_KIT_ID)
    assert config.load(tmp_path).id_pattern == importer.SPEC_KIT_ID
    assert path.read_text().startswith(config.TEMPLATE.split("[tickets]")[0])


def test_set_value_adds_a_section_an_old_config_lacks(tmp_path: Path) -> None:
    path = tmp_path / config.CONFIG_PATH
    path.parent.mkdir(parents=True)
    path.write_text("[stream]\nretries = 1\n")
    config.set_value(tmp_path, "tickets", "id_pattern", "T[0-9]+|it's")
    loaded = config.load(tmp_path, environ={})
    assert (loaded.retries, loaded.id_pattern) == (1, "T[0-9]+|it's")


def render(entries: list[dict[str, Any]]) -> str:
    """The index as a TASK-NNN list (what an export would write)."""
    out = ["### Phase 1: All", ""]
    for e in entries:
        mark = "x" if e["state"] == "COMPLETED" else " "
        out.append(f"- [{mark}] **{e['id']}: {e['title']}**")
        out.append(f"  - **Estimate:** {e['estimate_minutes']:g} minutes")
        out.append(f"  - **Dependencies:** {', '.join(e['dependencies']) or 'None'}")
        if e.get("files"):
            out.append(f"  - **Files:** {', '.join(f'`{f}`' for f in e['files'])}")
        out.append("")
    return "\n".join(out)


@st.composite
def backlogs(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=12))
    ids = [f"TASK-{n:03d}" for n in range(1, count + 1)]
    words = st.text(st.sampled_from("abcdefghij XYZ"), min_size=1, max_size=12).map(str.strip)
    entries = []
    for i, tid in enumerate(ids):
        entries.append({
            "id": tid,
            "title": draw(words.filter(bool)),
            "state": draw(st.sampled_from(["UNPROCESSED", "COMPLETED"])),
            "dependencies": sorted(draw(st.sets(st.sampled_from(ids[:i]))) if i else []),
            "estimate_minutes": draw(st.integers(min_value=1, max_value=600)),
            "files": draw(st.lists(st.sampled_from(["a.py", "src/b.py", "docs/"]), unique=True)),
        })  # fmt: skip
    return entries


@settings(max_examples=60, deadline=None)
@given(backlogs())
def test_import_export_import_is_stable(entries: list[dict[str, Any]]) -> None:
    raw: dict[str, Any] = {"tickets": []}
    merged(raw, render(entries))
    keys = ("id", "title", "state", "dependencies", "estimate_minutes")
    assert [{k: e[k] for k in keys} for e in raw["tickets"]] == [
        {k: e[k] for k in keys} for e in entries
    ]
    assert [e.get("files", []) for e in raw["tickets"]] == [e["files"] for e in entries]
    again = merged(raw, render(raw["tickets"]))
    assert not again.changed and len(again.unchanged) == len(entries)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30))
def test_spec_kit_order_only_points_back_and_keeps_parallel_runs_apart(
    shape: list[tuple[bool, bool]],
) -> None:
    """Whatever the mix of [P] tasks and phase breaks, each task waits only for earlier ones,
    and the tasks of one [P] run never wait for each other."""
    lines, runs, run = ["## Phase 1"], [], []
    for number, (parallel, new_phase) in enumerate(shape, 1):
        if new_phase:
            lines.append(f"## Phase {number + 1}")
        if not (parallel and run and not new_phase):
            runs.append(run := [])
        if parallel:
            run.append(f"T{number:03d}")
        lines.append(f"- [ ] T{number:03d} {'[P] ' if parallel else ''}Task {number}")
    tasks = parse("\n".join(lines)).tasks
    order = {t.id: i for i, t in enumerate(tasks)}
    for task in tasks:
        assert all(order[d] < order[task.id] for d in task.fields["dependencies"])
    deps = {t.id: set(t.fields["dependencies"]) for t in tasks}
    assert all(not deps[tid] & set(group) for group in runs for tid in group)
    assert tasks[0].fields["dependencies"] == []
