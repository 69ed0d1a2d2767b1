"""The user's checkout follows each landing; the target never moves back for it.

A user's edit that appears between the dry run and the update (the queue's step hook, right
after the compare-and-swap) is carried over: saved in git, the path set to the landed version,
the edit merged back in. A path with a registered merge is carried over even when the dry run
sees the edit. A checkout that cannot follow keeps its record, and nothing lands until it does.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from sage.lib import queue as commit_queue
from sage.lib.queue import CheckoutBehind, CommitQueue, Landed, Merged, Rejected, checkout
from tests.conftest import git
from tests.lib.test_queue import enqueue, landed_ids, make_queue, setup, states, user_changes, work
from tests.reliability.conftest import SAGE, moves_chain, reflog
from tests.support.git_wrapper import GitWrapper, git_wrapper

__all__ = ["git_wrapper"]

LINES = "one\ntwo\nthree\nfour\nfive\n"


def tracked(repo: Path, name: str, text: str) -> None:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"add {name}")


def edit_after_the_dry_run(monkeypatch: pytest.MonkeyPatch, path: Path, text: str) -> None:
    """The user saves `path` right after the target moved, before the checkout follows."""

    def hook(step: str) -> None:
        if step == "moved":
            path.write_text(text)

    monkeypatch.setattr(commit_queue, "step_hook", hook)


def saved_copy(warning: str) -> str:
    found = re.search(r"`git show (\S+)`", warning)
    assert found, warning
    return found.group(1)


def one_landing(q: CommitQueue) -> Landed:
    [outcome] = q.process()
    assert isinstance(outcome, Landed), outcome
    return outcome


def test_an_edit_made_after_the_dry_run_is_merged_in_and_the_landing_stands(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracked(repo, "notes.txt", LINES)
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"notes.txt": LINES.replace("five", "FIVE")}))
    (repo / "README.md").write_text("unrelated edit\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    edit_after_the_dry_run(monkeypatch, repo / "notes.txt", LINES.replace("one", "ONE"))
    moves = len(reflog(repo))

    outcome = one_landing(q)

    assert git(repo, "rev-parse", "main") == outcome.commit
    assert len(moves_chain(repo, 1)) == moves  # one move forward, none back
    assert (repo / "notes.txt").read_text() == "ONE\ntwo\nthree\nfour\nFIVE\n"
    assert git(repo, "show", "main:notes.txt") == "one\ntwo\nthree\nfour\nFIVE"
    [warning] = outcome.warnings
    assert "notes.txt" in warning and "merged" in warning
    assert git(repo, "show", saved_copy(warning)) == LINES.replace("one", "ONE").strip()
    assert sorted(user_changes(repo)) == [" M README.md", " M notes.txt", "A  staged.txt"]
    assert (repo / "README.md").read_text() == "unrelated edit\n"
    assert states(store) == {"T-1": "COMPLETED"}
    assert not q.landing.record.exists()


def test_a_conflicting_edit_leaves_markers_and_names_the_saved_copy(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracked(repo, "notes.txt", LINES)
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"notes.txt": LINES.replace("three", "theirs")}))
    edit_after_the_dry_run(monkeypatch, repo / "notes.txt", LINES.replace("three", "mine"))

    outcome = one_landing(q)

    assert git(repo, "show", "main:notes.txt").splitlines()[2] == "theirs"
    text = (repo / "notes.txt").read_text()
    assert "<<<<<<< your uncommitted version\nmine\n=======\ntheirs\n>>>>>>> landed\n" in text
    [warning] = outcome.warnings
    assert "conflict" in warning and "notes.txt" in warning
    assert git(repo, "show", saved_copy(warning)) == LINES.replace("three", "mine").strip()
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/sage/carried/") == (
        "refs/sage/carried/main"
    )


def union(mine: bytes, base: bytes, theirs: bytes) -> Merged:
    """A JSON-aware merge of flat objects: each side's changes to the base, both kept."""
    ours, old, new = (json.loads(side or b"{}") for side in (mine, base, theirs))
    merged = dict(old)
    clean = True
    for key in set(ours) | set(new):
        if ours.get(key) != old.get(key) and new.get(key) != old.get(key):
            clean = clean and ours.get(key) == new.get(key)
            merged[key] = ours.get(key)
        else:
            merged[key] = new.get(key) if new.get(key) != old.get(key) else ours.get(key)
    return Merged(json.dumps(dict(sorted(merged.items()))).encode() + b"\n", clean=clean)


def test_a_path_with_a_registered_merge_never_blocks_a_landing(repo: Path) -> None:
    tracked(repo, "state.json", '{"a": 1}\n')
    project, store = setup(repo, "T-1")
    q = make_queue(project, store, merges={"state.json": union})
    enqueue(q, "T-1", work(project, "T-1", {"state.json": '{"a": 2}\n'}))
    (repo / "state.json").write_text('{"a": 1, "mine": true}\n')  # before the dry run
    git(repo, "add", "state.json")  # and staged

    outcome = one_landing(q)

    assert outcome.warnings == ()  # a registered merge that went cleanly is routine
    assert json.loads((repo / "state.json").read_text()) == {"a": 2, "mine": True}
    assert json.loads(git(repo, "show", ":state.json")) == {"a": 2, "mine": True}  # still staged
    assert json.loads(git(repo, "show", "main:state.json")) == {"a": 2}
    assert user_changes(repo) == ["M  state.json"]


def test_a_registered_merge_that_conflicts_is_named(repo: Path) -> None:
    tracked(repo, "state.json", '{"a": 1}\n')
    project, store = setup(repo, "T-1")
    q = make_queue(project, store, merges={"state.json": union})
    enqueue(q, "T-1", work(project, "T-1", {"state.json": '{"a": 2}\n'}))
    (repo / "state.json").write_text('{"a": 3}\n')

    outcome = one_landing(q)

    [warning] = outcome.warnings
    assert "state.json" in warning and "conflict" in warning
    assert json.loads(git(repo, "show", saved_copy(warning))) == {"a": 3}
    assert json.loads((repo / "state.json").read_text()) == {"a": 3}  # the merge's choice


def test_an_edit_to_an_ordinary_file_still_blocks_before_the_target_moves(repo: Path) -> None:
    """Dry-run edits are carried over only for registered paths: for any other file, the user
    is asked to commit or stash (an editor with the file open would write it back)."""
    tracked(repo, "state.json", '{"a": 1}\n')
    project, store = setup(repo, "T-1")
    q = make_queue(project, store, merges={"state.json": union})
    enqueue(q, "T-1", work(project, "T-1", {"state.json": '{"a": 2}\n', "README.md": "new\n"}))
    before = git(repo, "rev-parse", "main")
    (repo / "state.json").write_text('{"a": 1, "mine": true}\n')
    (repo / "README.md").write_text("mine\n")

    [outcome] = q.process()

    assert isinstance(outcome, Rejected) and outcome.kind == "blocked"
    assert "(README.md)" in outcome.detail and "commit or stash" in outcome.detail
    assert git(repo, "rev-parse", "main") == before


CRASHER = """
import os
import sys
from pathlib import Path
from sage.lib import queue
from sage.lib.project import open_project
from sage.lib.tickets import TicketStore

repo, name, text = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def hook(step):
    if step == "moved" and name:
        (repo / name).write_text(text)
    if step in sys.argv[4:]:
        os.kill(os.getpid(), 9)

queue.step_hook = hook
project = open_project(repo)
queue.CommitQueue(project, project.ticket_store(), target_branch="main").process()
"""


def test_a_carry_over_killed_halfway_is_finished_by_the_next_pass(
    repo: Path, git_wrapper: GitWrapper
) -> None:
    tracked(repo, "notes.txt", LINES)
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"notes.txt": LINES.replace("five", "FIVE")}))
    git_wrapper.arm("checkout", "kill-caller")  # the carry-over's `git checkout NEW -- paths`
    mine = LINES.replace("one", "ONE")
    done = subprocess.run([sys.executable, "-c", CRASHER, str(repo), "notes.txt", mine],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == -9 and git_wrapper.fired, done.stderr
    landed = git(repo, "rev-parse", "main")
    record = json.loads(q.landing.record.read_text())
    assert [c["path"] for c in record["carried"]] == ["notes.txt"]
    git_wrapper.disarm()

    [outcome] = q.recover()

    assert isinstance(outcome, Landed) and outcome.commit == landed
    assert (repo / "notes.txt").read_text() == "ONE\ntwo\nthree\nfour\nFIVE\n"
    assert git(repo, "show", saved_copy(outcome.warnings[0])) == mine.strip()
    assert user_changes(repo) == [" M notes.txt"]
    assert not q.landing.record.exists() and landed_ids(repo) == ["T-1"]


def test_a_kill_right_after_the_update_leaves_a_record_the_next_pass_just_drops(
    repo: Path, git_wrapper: GitWrapper
) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))
    # killed once the files and the index are at NEW, before the record goes
    done = subprocess.run([sys.executable, "-c", CRASHER, str(repo), "", "", "updated"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == -9 and q.landing.record.exists(), done.stderr
    git_wrapper.disarm()
    written = (repo / "a.txt").stat().st_mtime_ns

    [outcome] = q.recover()

    assert isinstance(outcome, Landed) and outcome.warnings == ()
    assert (repo / "a.txt").stat().st_mtime_ns == written  # not written again
    assert not q.landing.record.exists() and user_changes(repo) == []
    assert "checkout" not in git_wrapper.calls  # nothing was set again


@contextmanager
def index_lock_held(repo: Path) -> Iterator[None]:
    """A process (not a git) that holds the checkout's index lock until the block ends."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)\n"
         "print('held', flush=True)\ntime.sleep(600)\n", str(repo / ".git/index.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout and holder.stdout.readline() == "held\n"
    try:
        yield
    finally:
        holder.kill()
        holder.communicate()
        (repo / ".git/index.lock").unlink()


def test_nothing_lands_on_a_checkout_that_is_behind_until_it_has_followed(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, store = setup(repo, "T-1", "T-2")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"one.txt": "1\n"}))
    base = work(project, "T-2", {"two.txt": "2\n"})
    monkeypatch.setattr(checkout, "LOCK_WAIT", 0.3)
    monkeypatch.setattr(checkout, "STALE_LOCK", 0.1)  # the holder is no git, and keeps it open

    first = _land_while_the_lock_is_held(repo, q, monkeypatch)
    assert "T-1" in first.message and "index.lock" in first.message
    landed = git(repo, "rev-parse", "main")
    assert git(repo, "show", "--format=%s", "-s", "main") == "T-1: Ticket T-1"
    assert not (repo / "one.txt").exists() and q.landing.record.exists()
    assert [e.status for e in q.pending()] == ["applying"]
    told = subprocess.run([*SAGE, "queue", "status"], cwd=repo, capture_output=True, text=True)
    assert f"unfinished: the update of {repo} from " in told.stdout, told.stdout + told.stderr
    assert q.unfinished() is not None and q.unfinished().new == landed  # type: ignore[union-attr]

    enqueue(q, "T-2", base)
    with index_lock_held(repo), pytest.raises(CheckoutBehind):
        q.process()
    assert git(repo, "rev-parse", "main") == landed  # T-2 did not stack on it

    outcomes = q.process()  # the lock is gone: the update is finished, then T-2 lands
    assert [(type(o), o.entry.ticket_id) for o in outcomes] == [(Landed, "T-1"), (Landed, "T-2")]
    assert (repo / "one.txt").read_text() == "1\n" and (repo / "two.txt").read_text() == "2\n"
    assert user_changes(repo) == [] and not q.landing.record.exists()
    assert states(store) == {"T-1": "COMPLETED", "T-2": "COMPLETED"}
    moves_chain(repo, 1)


def _land_while_the_lock_is_held(
    repo: Path, q: CommitQueue, monkeypatch: pytest.MonkeyPatch
) -> CheckoutBehind:
    """Land with the index lock taken right after the target moved (after the dry run)."""
    with ExitStack() as lock:

        def take_the_lock(step: str) -> None:
            if step == "moved":
                lock.enter_context(index_lock_held(repo))

        monkeypatch.setattr(commit_queue, "step_hook", take_the_lock)
        with pytest.raises(CheckoutBehind) as behind:
            q.process()
        monkeypatch.setattr(commit_queue, "step_hook", None)
    return behind.value


def test_a_directory_of_the_users_where_the_landing_puts_a_file_is_kept(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"new.txt": "landed\n"}))

    def make_a_folder(step: str) -> None:
        if step == "moved":
            (repo / "new.txt").mkdir()
            (repo / "new.txt/mine.txt").write_text("mine\n")

    monkeypatch.setattr(commit_queue, "step_hook", make_a_folder)
    with pytest.raises(CheckoutBehind) as behind:
        q.process()
    assert "new.txt" in behind.value.message and "move it away" in str(behind.value.hint)
    assert (repo / "new.txt/mine.txt").read_text() == "mine\n"

    monkeypatch.setattr(commit_queue, "step_hook", None)
    (repo / "new.txt").rename(repo / "moved-away")
    [outcome] = q.process()
    assert isinstance(outcome, Landed) and (repo / "new.txt").read_text() == "landed\n"
    assert project.ticket_store().load().tickets[0].state == "COMPLETED"
