"""Markdown task lists read into tasks: spec-kit, TASK-NNN lists, headings, and the seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sage.lib import tasklist
from sage.lib.errors import SageError
from tests.conftest import ROOT

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


def parse(text: str) -> tasklist.Document:
    return tasklist.parse(text, Path("tasks.md"))


def by_id(doc: tasklist.Document) -> dict[str, tasklist.Task]:
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
    assert tasklist.parse_estimate(text) == minutes


def test_a_document_without_tasks_is_refused_with_the_forms() -> None:
    with pytest.raises(SageError, match="no tasks found") as caught:
        parse("# Plan\n\n- [ ] SHA256 validation\n- [x] All tests pass\n")
    assert "T001" in (caught.value.hint or "")


def test_a_repeated_id_keeps_the_first_and_says_so() -> None:
    doc = parse("## Phase 1\n- [ ] T001 One\n- [ ] T002 Two\n## Phase 2\n- [ ] T001 Again\n")
    assert [t.fields["title"] for t in doc.tasks] == ["One", "Two"]
    assert "1 task reuses an ID" in doc.warnings[0] and "line 5" in doc.warnings[0]


def seed(prefix: str) -> Path:
    if prefix == "003":
        return PAR_001
    found = sorted(SEEDS.glob(f"{prefix}_*.txt"))
    if not found:
        pytest.skip("the seed documents are not on this machine")
    return found[0]


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
    tasks = by_id(tasklist.read(seed("000")))
    assert tasks["T009"].fields["priority"] == "P1" and tasks["T022"].fields["priority"] == "P2"
    assert tasks["T002"].fields["dependencies"] == [] and tasks["T003"].fields["dependencies"] == [
        "T001", "T002"]  # fmt: skip
    assert tasks["T001"].done and not tasks["T009"].done


def test_seed_000_phase_dependencies_are_the_documents() -> None:
    """Its "Phase Dependencies": US4 and US3 after US1, US2 after Foundational only, Polish
    after every story; inside a phase the order stays."""
    deps = {t.id: t.fields["dependencies"] for t in tasklist.read(seed("000")).tasks}
    assert deps["T009"] == ["T008"]  # US1 after Foundational
    assert deps["T016"] == ["T015"] and deps["T026"] == ["T015"]  # US4, US3 after US1
    assert deps["T022"] == ["T008"]  # US2: Foundational only, beside US1
    assert deps["T029"] == deps["T030"] == ["T015", "T021", "T025", "T028"]
    assert deps["T023"] == ["T022"] and deps["T031"] == ["T029", "T030", "T030a"]


PHASED = """\
# Tasks: Phased

## Phase 1: Setup

## Phase 2: Foundational (Blocking Prerequisites)

- [ ] T001 Schema in src/db.py
- [ ] T002 Models in src/models.py

## Phase 3: User Story 1 - Sign in (Priority: P1)

- [ ] T003 [US1] Login in src/login.py
- [ ] T004 [US1] Logout in src/logout.py

## Phase 4: User Story 2 - Profile (Priority: P2)

- [ ] T005 [P] [US2] Avatar in src/avatar.py
- [ ] T006 [P] [US2] Bio in src/bio.py

## Phase 5: User Story 3 - Export (Priority: P3)

- [ ] T007 [US3] Export in src/export.py

## Phase 6: Polish

- [ ] T008 Docs in README.md

## Dependencies & Execution Order

### Phase Dependencies

- **Setup (Phase 1)**: No dependencies - can start immediately
- **Foundational (Phase 2)**: Depends on Setup completion - BLOCKS all user stories
- **User Stories (Phase 3+)**: All depend on Foundational phase completion
  - then in parallel, if staffed
- **User Story 3 (Phase 5)**: Depends on US1 and User Story 2
- **Polish (Final Phase)**: Depends on all desired user stories being complete

## Notes

- **Export (Phase 5)**: Depends on Setup; not under a dependencies heading, so not read
"""


def test_spec_kit_phase_dependencies_replace_the_order_between_phases() -> None:
    doc = parse(PHASED)
    deps = {t.id: t.fields["dependencies"] for t in doc.tasks}
    assert deps == {
        "T001": [],  # Setup has no tasks and waits for nothing
        "T002": ["T001"],  # inside a phase the order stays
        "T003": ["T002"],  # "Phase 3+": every story after Foundational
        "T004": ["T003"],
        "T005": ["T002"],  # US2 beside US1, not after it
        "T006": ["T002"],
        "T007": ["T004", "T005", "T006"],  # its own bullet wins over "Phase 3+"
        "T008": ["T004", "T005", "T006", "T007"],  # the final phase: after every story
    }
    assert doc.warnings == ()


def test_a_phase_dependency_it_cannot_read_is_not_used_and_it_says_so() -> None:
    text = PHASED.replace("Depends on US1 and User Story 2", "Depends on the weather")
    doc = parse(text)
    deps = {t.id: t.fields["dependencies"] for t in doc.tasks}
    assert deps["T007"] == ["T002"]  # "Phase 3+" still speaks for it
    assert len(doc.warnings) == 1 and "User Story 3 (Phase 5)" in doc.warnings[0]
    assert "the bullet is not used" in doc.warnings[0]
    unread = PHASED.replace("All depend on Foundational phase completion", "All of them")
    assert {t.id: t.fields["dependencies"] for t in parse(unread).tasks}["T005"] == ["T004"]


def test_a_phase_never_waits_for_a_later_one() -> None:
    text = PHASED.replace("Depends on US1 and User Story 2", "Depends on Polish")
    doc = parse(text)
    deps = {t.id: t.fields["dependencies"] for t in doc.tasks}
    assert deps["T007"] == ["T002"]  # Polish comes after it: "Phase 3+" speaks for it
    assert deps["T008"] == ["T004", "T005", "T006", "T007"]
    assert len(doc.warnings) == 1 and "names no earlier phase" in doc.warnings[0]
    both = PHASED.replace("Depends on US1 and User Story 2", "Depends on US1 and Polish")
    assert {t.id: t.fields["dependencies"] for t in parse(both).tasks}["T007"] == ["T004"]


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


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=2), min_size=1, max_size=7),
    st.dictionaries(st.integers(1, 7), st.sets(st.integers(1, 7), max_size=3), max_size=5),
)
def test_phase_dependencies_only_point_back(sizes: list[int], stated: dict[int, set[int]]) -> None:
    """Phases of 0-2 tasks, bullets naming any phases (later ones too, or none): each task
    waits only for earlier tasks."""
    assume(any(sizes))
    lines, number = [], 0
    for phase, size in enumerate(sizes, 1):
        lines.append(f"## Phase {phase}: Part {phase}")
        for _ in range(size):
            number += 1
            lines.append(f"- [ ] T{number:03d} Task {number}")
    lines += ["## Dependencies", "### Phase Dependencies"]
    for phase, targets in stated.items():
        said = ", ".join(f"Phase {t}" for t in sorted(targets)) or "nothing"
        lines.append(f"- **Part {phase} (Phase {phase})**: Depends on {said}")
    tasks = parse("\n".join(lines)).tasks
    order = {t.id: i for i, t in enumerate(tasks)}
    for task in tasks:
        assert all(order[d] < order[task.id] for d in task.fields["dependencies"])
