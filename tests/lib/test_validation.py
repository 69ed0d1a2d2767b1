"""`validation.validate`: every problem in one report, prerequisites, parallelization analysis."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from sage.lib import project, tickets, validation
from sage.lib.errors import SageError
from tests.conftest import FIXTURE, git, state_dir, ticket, write_index


def load(tmp_path: Path, entries: list[dict[str, object]]) -> tickets.Index:
    return tickets.load(write_index(tmp_path, entries))


def test_the_example_is_clean_with_its_analysis() -> None:
    report = validation.validate(tickets.load(FIXTURE))
    assert report.problems == () and report.exit_code(strict=True) == 0
    a = report.analysis
    assert a is not None
    assert (a.remaining, a.ready_now, a.widths) == (29, 9, (9, 8, 5, 4, 1, 2))
    assert (a.critical_minutes, a.total_minutes, a.recommended_workers) == (220, 785, 4)
    assert a.critical_path[0] == "TASK-001" and len(a.critical_path) == 6
    assert a.as_dict()["parallel_share"] == round(9 / 29, 4)


def test_the_analysis_counts_only_what_is_left(tmp_path: Path) -> None:
    index = load(tmp_path, [
        ticket("A-1", state="COMPLETED", estimate_minutes=60),
        ticket("A-2", "A-1", estimate_minutes=30),
        ticket("A-3", "A-1", estimate_minutes=20),
        ticket("A-4", "A-2", "A-3", estimate_minutes=10),
        ticket("A-5", state="IN_PROGRESS", estimate_minutes=5),
    ])  # fmt: skip
    a = validation.validate(index).analysis
    assert a is not None
    assert (a.remaining, a.ready_now, a.widths) == (4, 2, (3, 1))
    assert a.critical_path == ("A-2", "A-4") and a.critical_minutes == 40
    assert a.total_minutes == 65 and a.recommended_workers == 2


def test_analysis_can_be_skipped() -> None:
    report = validation.validate(tickets.load(FIXTURE), analysis=False)
    assert report.analysis is None and report.problems == ()


def test_every_problem_in_one_report(tmp_path: Path) -> None:
    index = load(tmp_path, [
        ticket("A", "C"), ticket("B", "A"), ticket("C", "B"),
        ticket("D", "A"), ticket("E", "D", "MISSING-9"),
        ticket("S-1", "S-1"), ticket("DUP-1"), ticket("DUP-1", state="DONE"),
        ticket("../x"), ticket("P-1", parent="NOBODY-1"),
    ])  # fmt: skip
    report = validation.validate(index)
    by_code = {}
    for p in report.problems:
        by_code.setdefault(p.code, []).append(p.message)
    assert by_code["cycle"] == ["cycle: S-1 → S-1", "cycle: A → B → C → A"]
    assert by_code["unknown-dependency"] == ["E: depends on unknown ticket MISSING-9"]
    assert by_code["unknown-parent"] == ["P-1: parent NOBODY-1 is not a ticket"]
    assert by_code["duplicate-id"] == ["DUP-1: ID is used by 2 tickets"]
    assert by_code["bad-state"] and by_code["unsafe-id"]
    assert report.analysis is None  # no critical path through a cycle
    assert report.exit_code() == 1
    with pytest.raises(SageError, match=rf"has {len(report.errors)} errors, first:") as caught:
        validation.require_no_errors(report)
    assert "sage validate" in (caught.value.hint or "")


def test_strict_turns_warnings_into_failure(tmp_path: Path) -> None:
    report = validation.validate(load(tmp_path, [ticket("lowercase_id")]))
    assert [p.code for p in report.warnings] == ["id-format"] and report.errors == []
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1
    validation.require_no_errors(report)  # warnings never block


def test_prerequisites_in_a_repository(repo: Path) -> None:
    write_index(repo, [ticket("A-1", command=[sys.executable, "-c", "pass"]), ticket("A-2")])
    found = project.open_project(repo)
    report = validation.validate(tickets.load(found.index_path), found)
    checks = {c.name: c for c in report.checks}
    assert checks["git"].ok and "merge-tree" in checks["git"].detail
    assert checks["repository"].ok and checks["queue dir"].ok and checks["lock dir"].ok
    assert checks["worker"].ok and "none configured" in checks["worker"].detail
    assert checks[f"command {sys.executable}"].ok
    assert report.problems == ()


def test_missing_programs_are_errors_and_no_repository_a_warning(tmp_path: Path) -> None:
    write_index(tmp_path, [ticket("A-1", command=["no-such-tool-xyz", "go"])])
    (tmp_path / ".sage" / "config.toml").write_text('[stream]\nworker = "no-such-agent-xyz -p"\n')
    found = project.open_project(tmp_path)
    report = validation.validate(tickets.load(found.index_path), found)
    assert sorted((p.level, p.message) for p in report.problems) == [
        ("error", "command no-such-tool-xyz: no-such-tool-xyz not found on PATH"),
        ("error", "worker: no-such-agent-xyz not found on PATH"),
        ("warning", f"repository: {found.root} is not a git repository (needed by `sage stream`)"),
    ]


def test_done_tickets_need_no_worker(tmp_path: Path) -> None:
    write_index(tmp_path, [ticket("A-1", state="COMPLETED", command=["no-such-tool-xyz"])])
    found = project.open_project(tmp_path)
    checks = validation.validate(tickets.load(found.index_path), found).checks
    assert [c.name for c in checks] == [
        "git", "repository", "queue dir", "lock dir", "worktrees dir"
    ]  # fmt: skip


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_an_unwritable_state_dir_is_an_error(tmp_path: Path) -> None:
    write_index(tmp_path, [ticket("A-1")])
    git(tmp_path, "init", "-q")
    state = state_dir(tmp_path)
    state.mkdir()
    state.chmod(0o555)
    try:
        found = project.open_project(tmp_path)
        checks = {
            c.name: c for c in validation.prerequisites(found, tickets.load(found.index_path))
        }
        assert not checks["queue dir"].ok and "not writable" in checks["queue dir"].detail
    finally:
        state.chmod(0o755)


def test_a_worker_preset_is_checked_by_its_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_index(tmp_path, [ticket("A-1")])
    fake = tmp_path / "bin"
    fake.mkdir()
    shutil.copy("/bin/true", fake / "claude")
    (tmp_path / ".sage" / "config.toml").write_text('[stream]\nworker = "claude"\n')
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    found = project.open_project(tmp_path)
    checks = {c.name: c for c in validation.prerequisites(found, tickets.load(found.index_path))}
    assert checks["worker"].ok and str(fake / "claude") in checks["worker"].detail


def test_unknown_dependencies_and_cycles_come_with_a_hint(tmp_path: Path) -> None:
    index = load(tmp_path, [ticket("CORE-001"), ticket("APP-1", "CORE-01"),
                            ticket("B-1", "B-2"), ticket("B-2", "B-1")])  # fmt: skip
    found = {p.code: p for p in validation.validate(index).errors}
    assert found["unknown-dependency"].hint == "did you mean CORE-001?"
    assert found["unknown-dependency"].as_dict()["hint"] == "did you mean CORE-001?"
    assert found["cycle"].hint and "B-1" in found["cycle"].hint


def test_without_estimates_the_analysis_counts_tickets(tmp_path: Path) -> None:
    index = load(tmp_path, [ticket("A-1"), ticket("A-2", "A-1")])
    a = validation.validate(index).analysis
    assert a is not None and a.unit == "tickets" and a.critical_minutes == 2


def test_duplicate_ids_are_counted_once_in_the_share(tmp_path: Path) -> None:
    index = load(tmp_path, [ticket("A-1"), ticket("A-1"), ticket("A-2"), ticket("A-3", "A-2")])
    a = validation.validate(index).analysis
    assert a is not None and (a.ready_now, a.remaining) == (2, 3)


def open_with(tmp_path: Path, config_text: str) -> project.Project:
    (tmp_path / ".sage").mkdir(exist_ok=True)
    (tmp_path / ".sage" / "config.toml").write_text(config_text)
    return project.open_project(tmp_path)


def test_a_typo_in_a_worker_placeholder_is_refused(tmp_path: Path) -> None:
    proj = open_with(tmp_path, "[stream]\nworker = \"sh -c 'echo {titel} {print}' {ticket_id}\"\n")
    index = load(tmp_path, [ticket("A-1")])
    found = [
        p for p in validation.validate(index, proj).problems if p.code == "unknown-placeholder"
    ]
    assert [(p.level, (p.hint or "").split("?")[0]) for p in found] == [
        ("error", "did you mean {title}"),
        ("warning", "placeholders are {ticket_id} {title} {worktree} {context_file} {run_id} "
                    "{attempt}")]  # fmt: skip
    with pytest.raises(SageError, match=r"unknown placeholder \{titel\}"):
        validation.require_runnable(proj, index)


def test_a_tickets_own_braces_are_left_alone(tmp_path: Path) -> None:
    proj = open_with(tmp_path, "")
    index = load(tmp_path, [ticket("A-1", command=["sh", "-c", "echo ${HOME} {x}"]),
                            ticket("A-2", command=["echo", "{ticketid}"])])  # fmt: skip
    found = [
        p for p in validation.validate(index, proj).problems if p.code == "unknown-placeholder"
    ]
    assert [p.message for p in found] == ["ticket A-2: unknown placeholder {ticketid}"]


def test_the_id_pattern_replaces_the_default_format(tmp_path: Path) -> None:
    index = load(tmp_path, [ticket("T001"), ticket("AUTH-1")])
    assert [p.ticket for p in validation.validate(index).warnings] == ["T001"]
    proj = open_with(tmp_path, "[tickets]\nid_pattern = 'T[0-9]+'\n")
    warned = [p for p in validation.validate(index, proj).problems if p.code == "id-format"]
    assert [p.ticket for p in warned] == ["AUTH-1"] and "id_pattern 'T[0-9]+'" in warned[0].message


def test_problems_of_a_known_kind_say_what_fixes_them(tmp_path: Path) -> None:
    index = load(tmp_path, [ticket("A-1"), ticket("A-1"), ticket("weird")])
    hints = {p.code: p.hint for p in validation.validate(index).problems}
    assert hints["duplicate-id"] and "id_pattern" in (hints["id-format"] or "")
