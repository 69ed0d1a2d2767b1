"""`sage clean`'s survey in real repositories: what has landed goes, anything else stays."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sage.lib import clean, locks
from sage.lib.project import open_project
from sage.lib.queue.entries import Entries, new_entry
from tests.conftest import git


def commit_on(repo: Path, branch: str, name: str, text: str, *, start: str = "main") -> str:
    git(repo, "branch", "-f", branch, start)
    wt = repo.parent / f"wt-{name}"
    git(repo, "worktree", "add", "-q", str(wt), branch)
    (wt / name).write_text(text)
    git(wt, "add", name)
    git(wt, "commit", "-q", "-m", f"work on {name}")
    git(repo, "worktree", "remove", str(wt))
    return git(repo, "rev-parse", branch)


def land_as_squash(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"X: squash of {name}")


def survey(repo: Path) -> dict[str, clean.Item]:
    project = open_project(repo)
    return {Path(i.name).name if i.kind != "branch" else i.name: i
            for i in clean.survey(project, "main", keep_runs=2)}  # fmt: skip


def test_landed_work_goes_and_unlanded_work_stays(repo: Path) -> None:
    commit_on(repo, "sage/A-1", "a.txt", "a\n")
    land_as_squash(repo, "a.txt", "a\n")  # landed, as the queue does: one new commit
    commit_on(repo, "sage/B-1", "b.txt", "b\n")  # never landed
    git(repo, "branch", "sage/C-1-recovered-run1", "HEAD~1")  # its commits are on main
    commit_on(repo, "sage/D-1-deferred-run2", "d.txt", "d\n")
    (repo / "a.txt").write_text("changed again\n")  # main moves on past A-1's change
    git(repo, "commit", "-qam", "later change to a.txt")
    found = survey(repo)
    assert found["sage/A-1"].safe is False  # merging it now would change a.txt back: kept
    assert not found["sage/B-1"].safe and "1 commit" in found["sage/B-1"].why
    assert found["sage/C-1-recovered-run1"].safe
    assert found["sage/C-1-recovered-run1"].why == "kept by a recovery: its commits are on main"
    assert not found["sage/D-1-deferred-run2"].safe
    assert "kept when its ticket was deferred" in found["sage/D-1-deferred-run2"].why


def test_a_squash_landed_branch_goes(repo: Path) -> None:
    commit_on(repo, "sage/A-1", "a.txt", "a\n")
    land_as_squash(repo, "a.txt", "a\n")
    item = survey(repo)["sage/A-1"]
    assert item.safe and item.why.endswith("already on main (landed as a squash commit)")
    project = open_project(repo)
    clean.remove(project, item)
    assert git(repo, "branch", "--list", "sage/*") == ""


def test_worktrees_queue_entries_and_old_runs(repo: Path) -> None:
    project = open_project(repo)
    trees = project.worktrees_dir
    git(repo, "worktree", "add", "-q", "-b", "sage/W-1", str(trees / "W-1"))
    git(repo, "worktree", "add", "-q", "-b", "sage/W-2", str(trees / "W-2"))
    (trees / "W-2" / "left.txt").write_text("uncommitted work")
    git(repo, "worktree", "add", "-q", "--detach", str(trees / "_verify"))
    commit_on(repo, "sage/Q-1", "q.txt", "q\n")
    Entries(project.queue_dir, project.locks_dir, 5).add(
        new_entry(ticket_id="Q-1", title="q", branch="sage/Q-1", base="x", head="y")
    )
    for n in range(4):
        (project.runs_dir / f"2026120{n}-000000-aaaaaa").mkdir(parents=True)
    found = survey(repo)
    assert found["W-1"].safe and found["sage/W-1"].safe  # the worktree goes, then its branch
    assert found["W-2"].why == "has uncommitted changes" and not found["W-2"].safe
    assert "checked out in" in found["sage/W-2"].why and not found["sage/W-2"].safe
    assert found["_verify"].safe and "queued to land (#1)" in found["sage/Q-1"].why
    runs = sorted(k for k, i in found.items() if i.kind == "run")
    assert runs == ["20261200-000000-aaaaaa", "20261201-000000-aaaaaa"]
    for item in clean.survey(project, "main", keep_runs=2):
        clean.remove(project, item)
    assert sorted(p.name for p in project.runs_dir.iterdir()) == [
        "20261202-000000-aaaaaa", "20261203-000000-aaaaaa"]  # fmt: skip
    assert (trees / "W-2" / "left.txt").exists() and not (trees / "W-1").exists()
    left = git(repo, "branch", "--format=%(refname:short)", "--list", "sage/*").split()
    assert sorted(left) == ["sage/Q-1", "sage/W-2"]


def test_clean_is_refused_while_a_stream_runs_but_dry_run_works(repo: Path) -> None:
    project = open_project(repo)
    git(repo, "branch", "sage/A-1")
    argv = [sys.executable, "-m", "sage", "clean"]
    with locks.hold(project.locks_dir / "stream.lock", timeout=0, what="a sage stream"):
        done = subprocess.run(argv, cwd=repo, capture_output=True, text=True, timeout=60)
        dry = subprocess.run([*argv, "--dry-run"], cwd=repo, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("error: a sage stream is held by PID")
    assert "hint: wait for it to finish" in done.stderr
    assert dry.returncode == 0 and "would remove  branch sage/A-1: ticket branch" in dry.stdout
    assert git(repo, "branch", "--list", "sage/A-1")
