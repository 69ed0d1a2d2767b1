"""One worker run against a real repository: what it leaves is landed, or it is a clear non-OK
outcome naming the cause. Never COMPLETED with nothing landed, never a silent drop."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from sage.lib import workers, worktrees
from sage.lib.tickets import Ticket
from sage.lib.workers import Outcome, WorkerJob, WorkerResult
from sage.lib.worktrees import SlotSetup
from tests.conftest import git, worktrees_dir

GIT = "import subprocess\ndef git(*a): subprocess.run(['git', *a], check=True)\n"


def run(
    repo: Path, code: str, tid: str = "W-1", *, slot: bool = False, **fields: Any
) -> WorkerResult:
    """Run `code` (Python, with a `git(...)` helper) as ticket `tid`'s worker in a fresh
    worktree of `repo` (or in worker slot 0), the way the stream does."""
    ticket = Ticket(id=tid, title=fields.pop("title", f"Ticket {tid}"), **fields)
    runs = repo.parent / "runs"
    runs.mkdir(exist_ok=True)
    job = WorkerJob(
        ticket=ticket,
        run_id="run-1",
        attempt=1,
        base=git(repo, "rev-parse", "HEAD"),
        argv=(sys.executable, "-c", GIT + code),
        timeout=60,
        log=runs / f"{tid}.log",
        context_file=runs / f"{tid}.context.md",
    )
    slots = (worktrees_dir(repo) / "_slots", SlotSetup()) if slot else None
    return workers.run(repo, worktrees_dir(repo) / tid, job, slots=slots)


def landed(repo: Path, result: WorkerResult) -> list[str]:
    """The paths the result's commits change against its base."""
    return git(repo, "diff", "--name-only", "--no-renames", result.base, result.head).splitlines()


def commit_all(repo: Path, message: str = "setup") -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


# ---- ordinary work ------------------------------------------------------------------------------


def test_leftover_changes_are_committed_with_a_trailer(repo: Path) -> None:
    result = run(repo, "open('a.txt', 'w').write('a')")
    assert result.outcome == Outcome.OK, result.detail
    assert landed(repo, result) == ["a.txt"]
    message = git(repo, "log", "-1", "--format=%B", result.head)
    assert message == "W-1: Ticket W-1\n\nSage-Ticket: W-1"


def test_escape_sequences_in_a_title_never_reach_the_commit_subject(repo: Path) -> None:
    title = "\x1b[2J\x1b]0;owned\x07Fix\tthe\nbug\x9b31m"
    result = run(repo, "open('a.txt', 'w').write('a')", title=title)
    assert git(repo, "log", "-1", "--format=%s", result.head) == "W-1: Fix the bug"
    result = run(repo, "open('b.txt', 'w').write('b')", tid="W-2", title="\x1b[0m\x07")
    assert git(repo, "log", "-1", "--format=%s", result.head) == "W-2"


@pytest.mark.parametrize("old", ["1abc.txt", "2 two.txt", "u.txt", "#hash.txt", "? q.txt"])
def test_a_staged_rename_from_any_name_lands(repo: Path, old: str) -> None:
    """Found here: a rename record carries its old path as a NUL field of its own, which the
    parser read as a record: `1…` or `u…` raised IndexError, and the ticket was deferred."""
    (repo / old).write_text("content that stays the same\n" * 20)
    commit_all(repo)
    result = run(repo, f"git('mv', {old!r}, 'new.txt')")
    assert result.outcome == Outcome.OK, result.detail
    assert sorted(landed(repo, result)) == sorted([old, "new.txt"])


def test_a_background_process_the_worker_left_is_killed_and_named(repo: Path) -> None:
    code = (
        "import pathlib\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'],"
        " start_new_session=True)\n"
        "pathlib.Path('a.txt').write_text('a')\n"
    )
    result = run(repo, "import sys\n" + code)
    assert result.outcome == Outcome.OK, result.detail
    assert "killed what the worker left running" in result.detail and "sleep" in result.detail


def test_staged_work_is_committed_as_it_is_without_a_git_call(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `git apply --index` leaves: every change staged, nothing untracked. The index file
    and the files say it all (no `git status`), and the commit is written in process (the one
    `var` is what a process asks once about a worktree: its settings)."""
    from tests.reliability.test_process_count import classify, logging_git

    (repo / "old.txt").write_text("old\n")
    commit_all(repo)
    code = "open('README.md', 'w').write('2'); git('mv', 'old.txt', 'new.txt'); git('add', '.')"
    bin_dir, log = logging_git(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    result = run(repo, code)
    assert result.outcome == Outcome.OK, result.detail
    assert sorted(landed(repo, result)) == ["README.md", "new.txt", "old.txt"]
    calls = [classify(line) for line in log.read_text().splitlines() if "\t-C\t" in line]
    in_worktree = [sub for side, sub in calls if side == "worker" and sub != "worktree add"]
    assert in_worktree == ["var"]  # no status, add, diff or commit
    head = git(repo, "rev-parse", result.head)
    assert git(repo, "log", "-1", "--format=%s%n%b", head).startswith(f"{result.ticket_id}: ")


@pytest.mark.parametrize(
    ("code", "tidy"),
    [("open('new.txt', 'w').write('n'); open('README.md', 'w').write('r')", True),
     ("open('new.txt', 'w').write('n'); open('x.lock', 'w').write('ignored')", False)],
    ids=["all landed", "an ignored file left"],
)  # fmt: skip
def test_a_slot_is_known_tidy_only_when_nothing_is_left_behind(
    repo: Path, code: str, tidy: bool
) -> None:
    """A tidy slot's next switch skips `git clean`: only when its collect saw nothing ignored
    and committed every untracked file."""
    result = run(repo, code, slot=True)
    assert result.outcome == Outcome.OK, result.detail
    slot = worktrees_dir(repo) / "_slots" / "slot-0"
    assert (str(slot) in worktrees._TIDY) is tidy
    worktrees.prepare_slot(repo, slot.parent, 0, "W-2", git(repo, "rev-parse", "HEAD"))
    assert git(slot, "status", "--porcelain", "--ignored", "--untracked-files=all") == ""
    assert not (slot / "new.txt").exists()


# ---- nothing to land ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code",
    ["pass", "open('a.txt', 'w').write('a'); git('add', 'a.txt'); git('commit', '-qm', 'a');"
     "git('rm', '-q', 'a.txt'); git('commit', '-qm', 'undo')",
     # what `git status` lists but cancels out once everything is staged
     "open('README.md', 'w').write('x'); git('add', '.'); open('README.md', 'w').write('hello\\n')",
     "git('rm', '-q', '--cached', 'README.md')"],
    ids=["nothing", "undone", "staged then reverted", "unstaged as it was"],
)  # fmt: skip
def test_a_worker_that_leaves_nothing_is_no_changes(repo: Path, code: str) -> None:
    result = run(repo, code)
    assert result.outcome == Outcome.NO_CHANGES and not result.ok
    assert "nothing to land" in result.detail and "allow_empty" in result.detail


def test_a_ticket_that_allows_empty_completes_with_nothing(repo: Path) -> None:
    result = run(repo, "pass", allow_empty=True)
    assert result.outcome == Outcome.OK, result.detail
    assert landed(repo, result) == [] and "Sage-Ticket: W-1" in git(
        repo, "log", "-1", "--format=%B", result.head
    )


# ---- work that cannot land as it is -------------------------------------------------------------


@pytest.mark.parametrize("commit", [False, True], ids=["cargo-new", "with-a-commit"])
def test_a_nested_repository_is_refused_by_name(repo: Path, commit: bool) -> None:
    """`git init lib` (as `cargo new` does): `git add` would fail, or land a link to a commit
    that exists only in the worktree, which is deleted after the run."""
    code = "import os\ngit('init', '-q', 'lib')\nopen('lib/main.rs', 'w').write('fn main() {}')\n"
    if commit:
        code += "git('-C', 'lib', 'add', '-A'); git('-C', 'lib', 'commit', '-qm', 'lib')\n"
    result = run(repo, code + "open('top.txt', 'w').write('t')")
    assert result.outcome == Outcome.FAILED, result
    assert "lib" in result.detail and "git repository of its own" in result.detail


def test_a_committed_link_to_a_nested_repository_is_refused(repo: Path) -> None:
    code = (
        "git('init', '-q', 'lib'); open('lib/a', 'w').write('a')\n"
        "git('-C', 'lib', 'add', '-A'); git('-C', 'lib', 'commit', '-qm', 'lib')\n"
        "git('add', 'lib'); git('commit', '-qm', 'vendored lib')\n"
    )
    result = run(repo, code)
    assert result.outcome == Outcome.FAILED, result
    assert "lib" in result.detail and "not a submodule" in result.detail


@pytest.fixture
def with_submodule(repo: Path, tmp_path: Path) -> Path:
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    git(origin, "commit", "-q", "--allow-empty", "-m", "origin")
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(origin), "sub")
    commit_all(repo, "submodule")
    return repo


def test_writes_into_a_submodule_that_is_not_checked_out_are_named(with_submodule: Path) -> None:
    """Found here: git cannot see these files, so they landed as an empty commit."""
    result = run(with_submodule, "open('sub/new.txt', 'w').write('lost')")
    assert result.outcome == Outcome.FAILED, result
    assert "sub" in result.detail and "submodule" in result.detail


def conflicting_merge(tid: str = "W-1") -> str:
    return (
        "git('switch', '-q', '-c', 'side'); open('README.md', 'w').write('side\\n')\n"
        "git('commit', '-qam', 'side'); git('switch', '-q', 'sage/" + tid + "')\n"
        "open('README.md', 'w').write('ours\\n'); git('commit', '-qam', 'ours')\n"
        "subprocess.run(['git', 'merge', '-q', 'side'])\n"
    )


def test_a_worker_that_exits_in_the_middle_of_a_merge_is_refused(repo: Path) -> None:
    result = run(repo, conflicting_merge())
    assert result.outcome == Outcome.FAILED, result
    assert "merge" in result.detail and "README.md" in result.detail


def test_an_unmerged_index_without_a_merge_in_progress_is_refused(repo: Path) -> None:
    code = conflicting_merge() + (
        "import os\n"
        "head = subprocess.run(['git', 'rev-parse', '--git-path', 'MERGE_HEAD'],"
        " capture_output=True, text=True).stdout.strip()\n"
        "os.remove(head)\n"
    )
    result = run(repo, code)
    assert result.outcome == Outcome.FAILED, result
    assert "unmerged" in result.detail and "README.md" in result.detail


def test_conflict_markers_left_in_a_file_are_refused(repo: Path) -> None:
    text = "<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> side\n"
    result = run(repo, f"open('README.md', 'w').write({text!r})")
    assert result.outcome == Outcome.FAILED, result
    assert "conflict marker" in result.detail and "README.md" in result.detail


def test_an_underline_or_a_quoted_marker_is_no_conflict(repo: Path) -> None:
    text = "Install\n=======\n\nA conflict starts with a line such as\n\n<<<<<<< HEAD\n"
    result = run(repo, f"open('guide.rst', 'w').write({text!r})")
    assert result.outcome == Outcome.OK, result.detail


# ---- .sage/: what the project tracks lands, sage's own files never -----------------------------


def test_project_files_under_sage_land_and_what_does_not_is_said(repo: Path) -> None:
    (repo / ".sage/tickets").mkdir(parents=True)
    (repo / ".sage/tickets/index.json").write_text('{"tickets": []}\n')
    (repo / ".sage/config.toml").write_text("[stream]\n")
    commit_all(repo)
    code = (
        "import pathlib\n"
        "pathlib.Path('.sage/config.toml').write_text('[stream]\\nworkers = 2\\n')\n"
        "pathlib.Path('.sage/tickets/W-1.md').write_text('notes')\n"
        "pathlib.Path('.sage/tickets/index.json').write_text('garbage')\n"
        "pathlib.Path('real.txt').write_text('ok')\n"
    )
    result = run(repo, code)
    assert result.outcome == Outcome.OK, result.detail
    assert sorted(landed(repo, result)) == [".sage/config.toml", ".sage/tickets/W-1.md", "real.txt"]
    assert "not landed: .sage/tickets/index.json" in result.detail
    assert "not landed: .sage/tickets/index.json" in result.log.read_text()


def test_files_named_like_sage_state_under_sage_are_the_projects_and_land(repo: Path) -> None:
    """Run state lives outside every worktree now: `.sage/runs/`, `.sage/lib/…` (the bash tool
    sage grew from keeps its scripts there) are the project's files like any other."""
    (repo / ".sage/lib").mkdir(parents=True)
    (repo / ".sage/config.json").write_text("{}\n")
    (repo / ".sage/lib/a.sh").write_text("echo a\n")
    commit_all(repo)
    names = [
        ".sage/config.json",
        ".sage/lib/x.sh",
        ".sage/lib/queue.lock.sh",
        ".sage/runs/r.md",
        ".sage/logs/l.txt",
        ".sage/worktrees/w.txt",
        ".sage/locks/k.txt",
        ".sage/queue/1.json",
    ]
    code = "import pathlib\n" + "".join(
        f"pathlib.Path({name!r}).parent.mkdir(parents=True, exist_ok=True)\n"
        f"pathlib.Path({name!r}).write_text('x')\n"
        for name in names
    )
    result = run(repo, code)
    assert result.outcome == Outcome.OK, result.detail
    assert sorted(landed(repo, result)) == sorted(names)
    assert "not landed" not in result.detail + result.log.read_text()


def test_a_committed_change_to_the_index_is_taken_out_and_said(repo: Path) -> None:
    (repo / ".sage/tickets").mkdir(parents=True)
    (repo / ".sage/tickets/index.json").write_text('{"tickets": []}\n')
    commit_all(repo)
    code = (
        "open('.sage/tickets/index.json', 'w').write('garbage'); open('b.txt', 'w').write('b')\n"
        "git('add', '-A'); git('commit', '-qm', 'mine')\n"
    )
    result = run(repo, code)
    assert result.outcome == Outcome.OK, result.detail
    assert landed(repo, result) == ["b.txt"] and "index.json" in result.detail


def test_a_staged_change_to_the_index_is_taken_out_and_said(repo: Path) -> None:
    (repo / ".sage/tickets").mkdir(parents=True)
    (repo / ".sage/tickets/index.json").write_text('{"tickets": []}\n')
    commit_all(repo)
    code = "open('.sage/tickets/index.json', 'w').write('x'); git('add', '-A')"
    result = run(repo, code, allow_empty=True)
    assert result.outcome == Outcome.OK, result.detail
    assert landed(repo, result) == [] and "index.json" in result.detail


# ---- the worktree and the user's branch are sage's to move -------------------------------------


def user_checkout_unchanged(repo: Path, head: str) -> None:
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_a_worker_that_points_its_worktree_at_the_main_repository_is_refused(repo: Path) -> None:
    """Found here: sage's leftover commit then ran against the user's index and HEAD."""
    head = git(repo, "rev-parse", "HEAD")
    code = (
        f"open('.git', 'w').write('gitdir: {repo / '.git'}\\n')\n"
        "open('README.md', 'w').write('changed by the worker\\n')\n"
    )
    result = run(repo, code)
    assert result.outcome == Outcome.FAILED, result
    assert ".git" in result.detail and "nothing was collected" in result.detail
    user_checkout_unchanged(repo, head)


def test_a_worker_that_switches_to_the_users_branch_is_refused(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    code = (
        "git('switch', '-q', '--ignore-other-worktrees', 'main')\n"
        "open('x.txt', 'w').write('x'); git('add', 'x.txt'); git('commit', '-qm', 'onto main')\n"
    )
    result = run(repo, code)
    assert result.outcome == Outcome.FAILED, result
    assert "moved its worktree off sage/W-1" in result.detail
    assert "main" in result.detail and head != git(repo, "rev-parse", "main")


def test_a_worker_that_switches_away_and_back_is_refused(repo: Path) -> None:
    code = (
        "git('switch', '-q', '--ignore-other-worktrees', 'main')\n"
        "open('x.txt', 'w').write('x'); git('add', 'x.txt'); git('commit', '-qm', 'onto main')\n"
        "git('switch', '-q', 'sage/W-1'); open('y.txt', 'w').write('y')\n"
    )
    result = run(repo, code)
    assert result.outcome == Outcome.FAILED, result
    assert "main" in result.detail


def test_a_worker_that_moves_the_users_branch_is_refused(repo: Path) -> None:
    code = (
        "open('x.txt', 'w').write('x'); git('add', 'x.txt'); git('commit', '-qm', 'mine')\n"
        "git('update-ref', 'refs/heads/main', 'HEAD')\n"
    )
    result = run(repo, code)
    assert result.outcome == Outcome.FAILED, result
    assert "refs/heads/main" in result.detail


def test_git_contains(repo: Path) -> None:
    from sage.lib import git as sage_git

    first = git(repo, "rev-parse", "HEAD")
    git(repo, "commit", "-q", "--allow-empty", "-m", "second")
    git(repo, "branch", "old", first)
    assert sage_git.contains(repo, "refs/heads/main", first)
    second = git(repo, "rev-parse", "HEAD")
    assert not sage_git.contains(repo, "refs/heads/old", second)
    assert not sage_git.contains(repo, "refs/heads/missing", first)
    assert not sage_git.contains(repo, "refs/heads/main", "0" * 40)
