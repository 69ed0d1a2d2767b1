"""git.py against real repositories: what is read from git's files agrees with git itself."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sage.lib import git as sage_git
from tests.conftest import git

MESSAGES = [
    "simple",
    "\n\n  leading blank lines, then  \nmore subject\t \n\nbody",
    "ünïcode ✓ \r\n\r\nbody",
    "a\n \nb",
]


def commit(repo: Path, message: str) -> str:
    git(repo, "commit", "-q", "--allow-empty", "--cleanup=verbatim", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def asked_of_git(repo: Path, base: str, head: str) -> tuple[list[tuple[str, str]], bool]:
    out = git(repo, "log", "--reverse", "--format=%H %P%x00%s", f"{base}..{head}")
    rows = [(line.split()[0], line.partition("\0")[2]) for line in out.splitlines()]
    return rows, True


def test_a_line_of_loose_commits_is_read_as_git_log_shows_it(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = [commit(repo, message) for message in MESSAGES][-1]
    assert sage_git._linear_history(repo, base, head) is not None  # no git process
    assert sage_git.history(repo, base, head) == asked_of_git(repo, base, head)
    assert sage_git.history(repo, head, head) == ([], True)
    one = git(repo, "rev-parse", "HEAD~3")
    assert sage_git.loose_commit(repo, one) == ((base,), "simple\n")


@pytest.mark.parametrize("why", ["packed", "replaced", "merge", "not below base"])
def test_what_the_files_cannot_tell_is_asked_of_git(repo: Path, why: str) -> None:
    base = git(repo, "rev-parse", "HEAD")
    head = commit(repo, "one")
    if why == "packed":
        git(repo, "gc", "-q", "--prune=now")
    elif why == "replaced":
        tree = git(repo, "rev-parse", "HEAD^{tree}")
        git(repo, "replace", head, git(repo, "commit-tree", tree, "-m", "replaced"))
    elif why == "merge":
        git(repo, "checkout", "-q", "-b", "side", base)
        side = commit(repo, "side")
        git(repo, "checkout", "-q", "main")
        git(repo, "merge", "-q", "--no-edit", side)
        head = git(repo, "rev-parse", "HEAD")
    else:
        git(repo, "checkout", "-q", "--orphan", "other")
        head, base = commit(repo, "unrelated"), head
    assert sage_git._linear_history(repo, base, head) is None
    assert (sage_git.loose_commit(repo, head) is None) == (why in ("packed", "replaced"))
    rows, descends = sage_git.history(repo, base, head)
    assert rows == asked_of_git(repo, base, head)[0]
    assert descends == (why in ("packed", "merge"))


def test_a_ref_is_read_from_its_file_when_git_would_say_the_same(repo: Path) -> None:
    tip = commit(repo, "tip")
    git(repo, "tag", "-a", "-m", "annotated", "v1")
    git(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/main")
    git(repo, "branch", "packed")
    git(repo, "pack-refs", "--all")
    git(repo, "branch", "loose")
    for ref in ("refs/heads/loose", "refs/heads/main", "refs/heads/packed", "refs/tags/v1",
                "refs/heads/alias", "refs/heads/missing", "HEAD"):  # fmt: skip
        done = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet",
                               f"{ref}^{{commit}}"], capture_output=True, text=True)  # fmt: skip
        assert sage_git.rev_parse(repo, ref) == (done.stdout.strip() or None), ref
    assert sage_git._ref_tip(repo, "refs/heads/loose") == tip  # from the file
    assert sage_git._ref_tip(repo, "refs/tags/v1") is None  # a tag object: git peels it


def test_a_loose_ref_to_a_packed_commit_is_read_and_moved_in_process(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh clone's branch: its ref file is loose (`git checkout -b`), its commit in the
    pack. No git process may read or move it (none on PATH)."""
    packed = commit(repo, "packed")
    git(repo, "gc", "-q")
    git(repo, "branch", "-f", "work", packed)  # a loose ref file, a packed commit
    assert sage_git.loose_commit(repo, packed) is None
    new = commit(repo, "next")  # loose
    git(repo, "update-ref", "refs/heads/main", packed)
    assert sage_git.settings(repo) is not None  # read once a run (`git var`): then no process
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert sage_git.rev_parse(repo, "refs/heads/work") == packed
    assert sage_git._update_loose_ref(repo, "refs/heads/work", new, packed) is True
    assert sage_git.rev_parse(repo, "refs/heads/work") == new


def test_a_loose_ref_to_a_packed_tree_is_no_commit(repo: Path) -> None:
    tree = git(repo, "rev-parse", "HEAD^{tree}")
    git(repo, "gc", "-q")
    git(repo, "update-ref", "refs/tags/tree", tree)  # loose, to an object in the pack
    assert sage_git._ref_tip(repo, "refs/tags/tree") is None
    assert sage_git.rev_parse(repo, "refs/tags/tree") is None  # as git says: not a commit


def reflog_shape(line: str) -> tuple[str, ...]:
    """A reflog line without its time: old, new, who, and the message after a tab (if any)."""
    head, tab, message = line.partition("\t")
    fields = head.split(" ")
    return (*fields[:2], " ".join(fields[2:-2]), tab, message)


def test_a_ref_is_moved_in_process_as_git_moves_it(repo: Path) -> None:
    """The compare-and-swap without a process: the same ref, and the same reflog lines (the
    branch's, and HEAD's while it is checked out) as `git update-ref` writes."""
    old = git(repo, "rev-parse", "HEAD")
    git(repo, "branch", "twin")
    new = commit(repo, "next")
    git(repo, "update-ref", "refs/heads/main", old)  # back; git writes its own lines
    git(repo, "update-ref", "refs/heads/twin", new, old)
    assert sage_git._update_loose_ref(repo, "refs/heads/main", new, old) is True
    assert git(repo, "rev-parse", "main") == new
    for log in ("logs/refs/heads/main", "logs/HEAD"):
        mine = (repo / ".git" / log).read_text().splitlines()[-1]
        assert reflog_shape(mine) == (old, new, reflog_shape(mine)[2], "", "")
    theirs = (repo / ".git" / "logs/refs/heads/twin").read_text().splitlines()[-1]
    mine = (repo / ".git" / "logs/refs/heads/main").read_text().splitlines()[-1]
    assert reflog_shape(mine) == reflog_shape(theirs)
    assert not (repo / ".git" / "refs/heads/main.lock").exists()


def test_a_ref_that_moved_meanwhile_is_not_swapped(repo: Path) -> None:
    old = git(repo, "rev-parse", "HEAD")
    new = commit(repo, "next")  # main is at `new` now, not at `old`
    other = commit(repo, "other")
    git(repo, "update-ref", "refs/heads/main", new)
    assert sage_git.update_ref(repo, "refs/heads/main", other, old) is False
    assert git(repo, "rev-parse", "main") == new
    assert not (repo / ".git" / "refs/heads/main.lock").exists()


@pytest.mark.parametrize("why", ["lock held", "hook", "shared repository", "symbolic"])
def test_what_git_must_decide_leaves_the_ref_to_git(repo: Path, why: str) -> None:
    old = git(repo, "rev-parse", "HEAD")
    new = commit(repo, "next")
    git(repo, "update-ref", "refs/heads/main", old)
    ref = "refs/heads/main"
    if why == "lock held":
        (repo / ".git" / "refs/heads/main.lock").write_text("")
    elif why == "hook":
        hook = repo / ".git" / "hooks" / "reference-transaction"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text("#!/bin/sh\nexit 0\n")
        hook.chmod(0o755)
    elif why == "shared repository":
        git(repo, "config", "core.sharedRepository", "group")
    else:
        git(repo, "symbolic-ref", "refs/heads/alias", ref)
        ref = "refs/heads/alias"
    assert sage_git._update_loose_ref(repo, ref, new, old) is None
    assert git(repo, "rev-parse", "main") == old


def test_a_step_reads_the_settings_once_and_the_next_step_sees_a_change(repo: Path) -> None:
    """As a git process reads its config once when it starts: a change made during a step
    (by another process) counts from the next step, and outside a step at once."""
    git(repo, "config", "core.hooksPath", "first")
    with sage_git.one_look():
        assert sage_git.hooks_dir(repo) == repo / "first"
        git(repo, "config", "core.hooksPath", "second")
        assert sage_git.hooks_dir(repo) == repo / "first"
        with sage_git.one_look():  # a nested step is the same step
            assert sage_git.hooks_dir(repo) == repo / "first"
    assert sage_git.hooks_dir(repo) == repo / "second"
    with sage_git.one_look():
        assert sage_git.hooks_dir(repo) == repo / "second"


def test_a_step_sees_replace_refs_made_before_it_and_not_those_made_during_it(repo: Path) -> None:
    tip = commit(repo, "tip")
    with sage_git.one_look():
        assert sage_git.loose_commit(repo, tip) is not None
        git(repo, "replace", "--graft", tip)
        assert sage_git.loose_commit(repo, tip) is not None  # as it stood when the step began
    assert sage_git.loose_commit(repo, tip) is None  # replaced: git must say


def test_the_common_dir_is_read_from_the_files_as_git_tells_it(repo: Path, tmp_path: Path) -> None:
    commit(repo, "base")
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "--detach", str(linked))
    (repo / "sub").mkdir()
    (tmp_path / "via-link").symlink_to(repo)
    separate = tmp_path / "separate"
    git(tmp_path, "init", "-q", "--separate-git-dir", str(tmp_path / "separate.git"), str(separate))
    for place in (repo, linked, repo / "sub", tmp_path / "via-link", separate):
        asked = git(place, "rev-parse", "--git-common-dir")
        expected = Path(asked) if Path(asked).is_absolute() else (place / asked).resolve()
        assert sage_git.common_dir(place) == expected.resolve(), place
    assert sage_git._common_dir_here(repo / "sub") is None  # not a top: git says
    assert sage_git._common_dir_here(linked) == repo.resolve() / ".git"


def test_a_ref_exists_loose_or_packed(repo: Path) -> None:
    tip = commit(repo, "tip")
    git(repo, "update-ref", "refs/sage/previous/A-1", tip)
    git(repo, "update-ref", "refs/sage/previous/B-1", tip)
    git(repo, "pack-refs", "--all")
    git(repo, "update-ref", "refs/sage/previous/C-1", tip)  # loose
    for name, there in (("A-1", True), ("B-1", True), ("C-1", True), ("D-1", False)):
        assert sage_git.ref_exists(repo, f"refs/sage/previous/{name}") is there, name


def test_refs_are_deleted_in_process_as_git_deletes_them(repo: Path) -> None:
    """Each at its old value (or any), its reflog and the folders it leaves empty gone, git's
    own folders kept; one that moved on is kept; one that is not there is gone already."""
    tip, other = commit(repo, "tip"), commit(repo, "other")
    for name in ("A-1", "B-1", "C-1"):
        git(repo, "branch", f"sage/{name}", tip)
    git(repo, "update-ref", "refs/sage/previous/A-1", tip)
    git(repo, "update-ref", "refs/heads/sage/C-1", other)  # moved on since it was queued
    git(repo, "config", "core.logAllRefUpdates", "true")
    git(repo, "update-ref", "refs/heads/sage/A-1", tip, tip)  # a reflog line for A-1
    assert (repo / ".git/logs/refs/heads/sage/A-1").exists()
    gone = sage_git.delete_refs(repo, {
        "refs/heads/sage/A-1": tip, "refs/heads/sage/B-1": None, "refs/heads/sage/C-1": tip,
        "refs/sage/previous/A-1": None, "refs/sage/previous/B-1": None,
    })  # fmt: skip
    assert gone == {"refs/heads/sage/A-1": True, "refs/heads/sage/B-1": True,
                    "refs/heads/sage/C-1": False, "refs/sage/previous/A-1": True,
                    "refs/sage/previous/B-1": True}  # fmt: skip
    left = git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    assert sorted(left) == sorted([f"refs/heads/main {other}", f"refs/heads/sage/C-1 {other}"])
    assert not (repo / ".git/logs/refs/heads/sage/A-1").exists()
    assert not list((repo / ".git/refs").rglob("*.lock"))
    # the folders it left empty removed, but not the two at the top, as git 2.39 does
    assert not (repo / ".git/refs/sage/previous").exists() and (repo / ".git/refs/sage").is_dir()
    git(repo, "branch", "-D", "sage/C-1")
    assert not (repo / ".git/refs/heads/sage").exists() and (repo / ".git/refs/heads").is_dir()
    assert git(repo, "fsck", "--no-progress") == ""


@pytest.mark.parametrize("why", ["packed", "hook", "reftable"])
def test_refs_git_must_delete_are_left_to_git(repo: Path, why: str) -> None:
    tip = commit(repo, "tip")
    git(repo, "branch", "sage/A-1", tip)
    if why == "packed":
        git(repo, "pack-refs", "--all")
    elif why == "hook":
        hook = repo / ".git" / "hooks" / "reference-transaction"
        hook.parent.mkdir(exist_ok=True)
        hook.write_text("#!/bin/sh\nexit 0\n")
        hook.chmod(0o755)
    else:
        git(repo, "config", "extensions.refStorage", "reftable")
    assert sage_git.delete_refs(repo, {"refs/heads/sage/A-1": tip}) is None
    if why != "reftable":
        assert git(repo, "rev-parse", "sage/A-1") == tip


def test_a_ref_whose_lock_is_held_is_kept(repo: Path) -> None:
    tip = commit(repo, "tip")
    git(repo, "branch", "sage/A-1", tip)
    (repo / ".git/refs/heads/sage/A-1.lock").write_text("")  # a git process is moving it
    assert sage_git.delete_refs(repo, {"refs/heads/sage/A-1": tip}) == {
        "refs/heads/sage/A-1": False
    }
    assert (repo / ".git/refs/heads/sage/A-1.lock").exists()  # not ours: left alone
    assert git(repo, "rev-parse", "sage/A-1") == tip


def test_the_checked_out_branch_is_read_as_git_says_it(repo: Path, tmp_path: Path) -> None:
    git(repo, "tag", "main")  # `symbolic-ref --short` would say heads/main: the branch is main
    assert sage_git.head_branch(repo) == "main"
    linked = tmp_path / "linked"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(linked))
    assert sage_git.head_branch(linked) == "feature"
    git(linked, "checkout", "-q", "--detach")
    assert sage_git.head_branch(linked) is None
