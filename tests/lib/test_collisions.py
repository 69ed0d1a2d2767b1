"""The early warning's two questions, on real repositories and slots: did a running ticket start
on what just landed, and what has its worker changed so far."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sage.lib import collisions, worktrees
from tests.conftest import git


@pytest.fixture
def project(repo: Path) -> Path:
    (repo / "shared.txt").write_text("one\n")
    (repo / "other.txt").write_text("other\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two files")
    return repo


def commit(repo: Path, name: str, text: str) -> str:
    (repo / name).write_text(text)
    git(repo, "commit", "-q", "-am", f"edit {name}")
    return git(repo, "rev-parse", "HEAD")


def test_a_base_at_or_after_the_landing_is_based_on_it(project: Path) -> None:
    first = git(project, "rev-parse", "HEAD")
    landed = commit(project, "shared.txt", "two\n")
    later = commit(project, "other.txt", "three\n")
    older = {first}
    assert collisions.based_on(project, landed, landed, older)
    assert collisions.based_on(project, later, landed, older)  # a landing not heard of yet
    assert not collisions.based_on(project, first, landed, older)


def test_the_walk_stops_at_what_is_known_to_be_older_and_after_a_few_steps(
    project: Path,
) -> None:
    landed = commit(project, "shared.txt", "two\n")
    tips = [commit(project, "other.txt", f"{n}\n") for n in range(collisions._WALK + 2)]
    assert collisions.based_on(project, tips[collisions._WALK - 2], landed, set())
    assert not collisions.based_on(project, tips[-1], landed, set())  # too far: files decide
    assert not collisions.based_on(project, tips[3], landed, {tips[1]})


def test_a_packed_base_cannot_be_told_so_the_files_decide(project: Path) -> None:
    landed = commit(project, "shared.txt", "two\n")
    later = commit(project, "other.txt", "three\n")
    git(project, "gc", "-q")
    assert collisions.based_on(project, landed, landed, set())  # the same commit, unread
    assert not collisions.based_on(project, later, landed, set())


def slot_with_leftovers(project: Path, tmp_path: Path) -> tuple[Path, str]:
    """Slot 0 as its last ticket (A) left it: A's change to shared.txt committed on sage/A."""
    slots = tmp_path / "slots"
    base = git(project, "rev-parse", "HEAD")
    slot = worktrees.prepare_slot(project, slots, 0, "A", base)
    (slot.path / "shared.txt").write_text("A's change\n")
    git(slot.path, "commit", "-q", "-am", "A")
    return slot.path, base


def test_a_slot_still_on_another_tickets_branch_has_done_nothing_for_this_one(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, base = slot_with_leftovers(project, tmp_path)
    # Ticket B was started in slot 0, whose worker thread has not switched it yet: A's work is
    # still there, none of it B's. No git may be asked (nothing on PATH to ask).
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert collisions.work_so_far(path, base, {"shared.txt"}, branch="sage/B") == set()


def test_a_slot_on_the_tickets_own_branch_is_looked_at(project: Path, tmp_path: Path) -> None:
    path, base = slot_with_leftovers(project, tmp_path)
    # the same files, but this is A's own slot: its work touches shared.txt
    assert collisions.work_so_far(path, base, {"shared.txt"}, branch="sage/A") == {"shared.txt"}


def test_a_slot_on_a_branch_of_the_workers_own_is_looked_at(project: Path, tmp_path: Path) -> None:
    path, base = slot_with_leftovers(project, tmp_path)
    git(path, "checkout", "-q", "-b", "feature")  # the worker's own branch: its work, not A's
    assert collisions.work_so_far(path, base, {"shared.txt"}, branch="sage/A") == {"shared.txt"}


def test_without_a_branch_every_slot_is_looked_at(project: Path, tmp_path: Path) -> None:
    path, base = slot_with_leftovers(project, tmp_path)
    assert shutil.which("git", path=os.environ["PATH"])
    assert collisions.work_so_far(path, base, {"shared.txt"}) == {"shared.txt"}


def no_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))


def test_committed_work_elsewhere_is_told_from_the_objects(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, base = slot_with_leftovers(project, tmp_path)  # sage/A changed shared.txt
    no_git(monkeypatch, tmp_path)
    assert collisions.work_so_far(path, base, {"other.txt"}, branch="sage/A") == set()


def test_committed_work_on_the_landed_file_is_found(project: Path, tmp_path: Path) -> None:
    path, base = slot_with_leftovers(project, tmp_path)
    assert collisions.work_so_far(path, base, {"shared.txt", "other.txt"}, branch="sage/A") == {
        "shared.txt"
    }


def test_while_the_worker_writes_its_index_the_files_still_answer(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = git(project, "rev-parse", "HEAD")
    slot = worktrees.prepare_slot(project, tmp_path / "slots", 0, "A", base)
    admin = Path(git(slot.path, "rev-parse", "--absolute-git-dir"))
    (admin / "index.lock").write_bytes(b"")  # a `git apply --index` under way
    path = os.environ["PATH"]
    try:
        no_git(monkeypatch, tmp_path)
        assert collisions.work_so_far(slot.path, base, {"shared.txt"}, branch="sage/A") == set()
        (slot.path / "shared.txt").write_text("being applied\n")  # the worker's change, unstaged
        monkeypatch.setenv("PATH", path)
        assert collisions.work_so_far(slot.path, base, {"shared.txt"}, branch="sage/A") == {
            "shared.txt"
        }
    finally:
        (admin / "index.lock").unlink()


def test_a_slot_git_is_still_making_has_done_nothing(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`git worktree add --detach` points HEAD at the base before it writes the files: a look
    then would take every file not written yet for the worker's deletion."""
    base = git(project, "rev-parse", "HEAD")
    path = tmp_path / "slots" / "slot-0"
    git(project, "worktree", "add", "-q", "--no-checkout", "--detach", str(path), base)
    no_git(monkeypatch, tmp_path)
    assert collisions.work_so_far(path, base, {"shared.txt"}, branch="sage/B") == set()


def test_a_slot_folder_git_has_not_linked_yet_has_done_nothing(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`git worktree add` makes the folder before its `.git` file: a git asked there then
    would find no worktree, or one with no files yet."""
    path = tmp_path / "slots" / "slot-0"
    path.mkdir(parents=True)
    base = git(project, "rev-parse", "HEAD")
    no_git(monkeypatch, tmp_path)
    assert collisions.work_so_far(path, base, {"shared.txt"}, branch="sage/B") == set()
