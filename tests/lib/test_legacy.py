"""An older sage's run state under `.sage/`: moved where this one keeps it, nothing lost; a
running older sage is refused; what the project tracks there is the project's."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from sage.lib import git as sgit
from sage.lib import history, legacy, locks, worktrees
from sage.lib.errors import SageError
from sage.lib.project import Project
from sage.lib.tickets import TicketStore
from tests.conftest import git
from tests.lib.test_queue import enqueue, landed_ids, make_queue, setup, states, work

RUN_ID = "20261130-090000-aaaaaa"
ENTRY = "000001-Q-1.json"  # the queue file of Q-1, queued first


def as_before(project: Project) -> Project:
    """The project as an older sage saw it: all run state under `.sage/`."""
    return replace(
        project, state_dir=project.sage_dir, worktrees_dir=project.sage_dir / "worktrees"
    )


def older_sage_was_here(repo: Path) -> tuple[Project, TicketStore]:
    """What an older sage leaves: Q-1 queued to land, a worker slot, a past run with its log,
    a dead worker's pid file, a crash log, and the `.gitignore` it wrote, committed."""
    project, store = setup(repo, "Q-1", "R-1")
    (repo / ".sage/.gitignore").write_text(legacy.OLD_GITIGNORE)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "sage init")
    old = as_before(project)
    base = work(old, "Q-1", {"q.txt": "from the older sage\n"})
    enqueue(make_queue(old, store), "Q-1", base)
    worktrees.prepare_slot(repo, old.worktrees_dir / "_slots", 0, "R-1", base)
    run = old.runs_dir / RUN_ID
    run.mkdir(parents=True)
    event = {"event": "run-started", "at": "2026-11-30T09:00:00.000Z", "workers": 1}
    (run / "events.jsonl").write_text(json.dumps(event) + "\n")
    (run / "Q-1.log").write_text("the older sage's log of Q-1\n")
    (old.locks_dir / "workers").mkdir(parents=True)
    (old.locks_dir / "workers" / "R-1.pid").write_text("")
    (old.logs_dir).mkdir()
    (old.logs_dir / "crash-20261130T090000.log").write_text("Traceback …\n")
    return project, store


def test_an_older_sages_state_moves_and_its_queued_commit_lands(repo: Path) -> None:
    project, store = older_sage_was_here(repo)

    notes = legacy.adopt(project)

    assert notes == [
        "moved 1 past run from .sage/runs/ to .git/sage/runs",
        "moved 1 queued commit from .sage/queue/ to .git/sage/queue",
        "removed 2 worktrees an older sage left in .sage/worktrees/ (their commits stay on "
        "their branches)",
        "removed .sage/.gitignore: sage's run state is no longer in .sage/ (commit the change)",
    ]
    assert sorted(p.name for p in project.sage_dir.iterdir()) == ["tickets"]
    assert [p.name for p in history.run_dirs(project)] == [RUN_ID]
    assert (project.locks_dir / "workers" / "R-1.pid").exists()
    assert (project.logs_dir / "crash-20261130T090000.log").exists()
    assert list(sgit.worktrees(repo)) == [repo]
    make_queue(project, store).process()
    assert landed_ids(repo) == ["Q-1"] and states(store)["Q-1"] == "COMPLETED"
    assert (repo / "q.txt").read_text() == "from the older sage\n"
    assert legacy.adopt(project) == []


def test_onto_another_file_system_it_is_copied_then_renamed(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.git` may be a gitfile pointing elsewhere: no rename across file systems (EXDEV)."""
    project, store = older_sage_was_here(repo)

    def cross_device(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(legacy.os, "rename", cross_device)
    legacy.adopt(project)

    assert (project.runs_dir / RUN_ID / "Q-1.log").read_text() == "the older sage's log of Q-1\n"
    assert [e.ticket_id for e in make_queue(project, store).pending()] == ["Q-1"]
    assert not list(project.runs_dir.glob(".*")) and not list(project.queue_dir.glob(".*"))
    assert sorted(p.name for p in project.sage_dir.iterdir()) == ["tickets"]


def test_the_first_command_after_an_upgrade_moves_it_and_says_so(repo: Path) -> None:
    older_sage_was_here(repo)

    status = sage(repo, "status")
    assert status.returncode == 0, status.stderr
    assert "note: moved 1 queued commit from .sage/queue/ to .git/sage/queue" in status.stderr
    assert "#1 Q-1" in status.stdout
    log = sage(repo, "log", "Q-1")
    assert log.stdout == "the older sage's log of Q-1\n" and log.stderr == ""
    landed = sage(repo, "queue", "process")
    assert landed.returncode == 0, landed.stderr
    assert landed_ids(repo) == ["Q-1"]


def test_a_running_older_sage_is_refused_and_nothing_moves(repo: Path) -> None:
    older_sage_was_here(repo)
    held = repo / ".sage/locks/stream.lock"

    with locks.hold(held, timeout=0, what="an older sage's stream"):
        done = sage(repo, "stream", "--auto")

    assert done.returncode == 1 and "Traceback" not in done.stderr
    error, hint = done.stderr.splitlines()
    assert error.startswith("error: the stream lock of an older sage is held by PID "), error
    assert hint.startswith("hint: wait for it to finish"), hint
    assert [p.name for p in (repo / ".sage/queue").glob("*.json")] == [ENTRY]
    assert (repo / ".sage/runs" / RUN_ID / "Q-1.log").exists()


def test_a_folder_the_project_tracks_is_the_projects(repo: Path) -> None:
    project, _ = setup(repo, "L-1")
    (repo / ".sage/logs").mkdir()
    (repo / ".sage/logs/README.md").write_text("the project's own logs folder\n")
    (repo / ".sage/runs").mkdir()
    (repo / ".sage/runs/leftover.txt").write_text("an older sage's\n")
    git(repo, "add", ".sage/logs")
    git(repo, "commit", "-q", "-m", "logs")

    assert legacy.leftovers(project) == ["runs"]
    legacy.adopt(project)
    assert (repo / ".sage/logs/README.md").exists() and not (repo / ".sage/runs").exists()


def test_two_queue_entries_with_one_number_are_refused_and_both_kept(repo: Path) -> None:
    project, _ = older_sage_was_here(repo)
    theirs, ours = repo / ".sage/queue" / ENTRY, project.queue_dir / ENTRY
    ours.parent.mkdir(parents=True)
    ours.write_text(theirs.read_text().replace("Ticket Q-1", "another ticket"))

    with pytest.raises(SageError, match="two queue entries with the same number") as raised:
        legacy.adopt(project)

    assert f"rename .sage/queue/{ENTRY} to a number not used" in str(raised.value.hint)
    assert theirs.exists() and ours.exists()


def test_a_gitignore_the_user_edited_is_kept(repo: Path) -> None:
    project, _ = setup(repo, "G-1")
    edited = legacy.OLD_GITIGNORE + "scratch/\n"
    (repo / ".sage/.gitignore").write_text(edited)

    assert legacy.adopt(project) == []
    assert (repo / ".sage/.gitignore").read_text() == edited


def sage(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sage", *args], cwd=repo, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
