"""The commit queue on real repositories: landing, CAS, conflicts, the user's checkout, verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from unittest import mock

import pytest
from filelock import FileLock
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.lib import files, locks, tickets
from sage.lib import git as sgit
from sage.lib import queue as commit_queue
from sage.lib.errors import LockHeld, SageError
from sage.lib.project import Project, open_project
from sage.lib.queue import CommitQueue, Landed, QueueEntry, Rejected
from sage.lib.queue.entries import Entries, Status, new_entry
from sage.lib.queue.landing import completed_blob
from sage.lib.tickets import StateChange, TicketStore, parse_document, record_changes
from tests.conftest import git, ticket, write_index

FORBID = ("sh", "-c", "test ! -e forbidden.txt")


# ---- helpers shared by the queue tests ---------------------------------------------------------


def setup(repo: Path, *ids: str) -> tuple[Project, TicketStore]:
    """Tickets in a committed (tracked) index, as in a real project."""
    write_index(repo, [ticket(tid) for tid in ids])
    git(repo, "add", ".sage/tickets/index.json")
    git(repo, "commit", "-q", "-m", "tickets")
    project = open_project(repo)
    store = project.ticket_store()
    store.transition([(tid, "IN_PROGRESS") for tid in ids], reason="a stream started it")
    return project, store


def work(project: Project, tid: str, changes: dict[str, str], *, commits: int = 1) -> str:
    """A ticket's worktree on sage/<tid> from main's head, as the stream makes it; the base."""
    repo, base = project.root, git(project.root, "rev-parse", "main")
    path = project.worktrees_dir / tid
    git(repo, "worktree", "add", "-q", "-b", f"sage/{tid}", str(path), base)
    for number in range(commits):
        for name, text in changes.items():
            (path / name).write_text(text if number == commits - 1 else f"draft {number}\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"{tid} step {number + 1}")
    return base


def enqueue(q: CommitQueue, tid: str, base: str, attempts: int = 0) -> QueueEntry:
    return q.enqueue(
        ticket_id=tid, title=f"Ticket {tid}", branch=f"sage/{tid}", base=base, attempts=attempts
    )


def make_queue(project: Project, store: TicketStore, **options: object) -> CommitQueue:
    return CommitQueue(project, store, target_branch="main", run_id="test-run", **options)  # type: ignore[arg-type]


def landed_ids(repo: Path) -> list[str]:
    """Sage-Ticket trailers on main, oldest first."""
    out = git(repo, "log", "--reverse", "--format=%(trailers:key=Sage-Ticket,valueonly)", "main")
    return [line.strip() for line in out.splitlines() if line.strip()]


def states(store: TicketStore) -> dict[str, str]:
    return {t.id: t.state for t in store.load().tickets}


def user_changes(repo: Path) -> list[str]:
    """`git status` of the user's checkout (the index sage writes comes with the landings)."""
    out = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    return out.splitlines()


# ---- landing -----------------------------------------------------------------------------------


def test_lands_one_squash_commit_with_trailer_and_cleans_up(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    old = git(repo, "rev-parse", "main")
    entry = enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}, commits=2))
    assert entry.status == "queued" and len(entry.commits) == 2
    assert (project.queue_dir / entry.filename).exists()

    [outcome] = q.process()

    assert isinstance(outcome, Landed)
    assert git(repo, "rev-parse", "main") == outcome.commit
    assert git(repo, "rev-parse", "main^") == old
    message = git(repo, "log", "-1", "--format=%B", "main")
    assert message.splitlines()[0] == "T-1: Ticket T-1"
    assert "- T-1 step 1" in message and "- T-1 step 2" in message
    assert message.splitlines()[-1] == "Sage-Ticket: T-1"
    raw = json.loads(project.index_path.read_text())["tickets"][0]
    assert raw["state"] == "COMPLETED" and raw["state_history"][-1]["run"] == "test-run"
    committed = json.loads(git(repo, "show", "main:.sage/tickets/index.json"))["tickets"][0]
    assert committed == raw  # it came with the landing commit
    assert json.loads(git(repo, "show", "main^:.sage/tickets/index.json"))["tickets"][0] == {
        **ticket("T-1")
    }
    assert git(repo, "status", "--porcelain", "-uno") == ""
    assert q.pending() == []
    assert [e.status for e in q.archived()] == ["landed"]
    assert sgit.rev_parse(repo, "refs/heads/sage/T-1") is None
    assert not (project.worktrees_dir / "T-1").exists()
    assert (repo / "a.txt").read_text() == "a\n"  # the checkout followed main
    assert user_changes(repo) == []


def test_a_landing_takes_the_index_lock_once(repo: Path) -> None:
    """An index the landing commits do not carry (untracked, as a replay keeps it): the lock
    held while the checkout follows is held on for COMPLETED, not taken a second time."""
    (repo / ".git" / "info" / "exclude").write_text(".sage/\n")
    write_index(repo, [ticket("T-1")])
    project = open_project(repo)
    store = project.ticket_store()
    store.transition([("T-1", "IN_PROGRESS")], reason="a stream started it")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))
    taken: list[str] = []
    acquire = FileLock.acquire

    def counted(lock: FileLock, *args: object, **kwargs: object) -> object:
        if lock.lock_file == store.lock.lock_file and not lock.is_locked:
            taken.append(lock.lock_file)
        return acquire(lock, *args, **kwargs)  # type: ignore[arg-type]

    with mock.patch.object(FileLock, "acquire", counted):
        [outcome] = q.process()

    assert isinstance(outcome, Landed)
    assert json.loads(project.index_path.read_text())["tickets"][0]["state"] == "COMPLETED"
    assert git(repo, "show", "main:a.txt") == "a" and (repo / "a.txt").read_text() == "a\n"
    assert len(taken) == 1


def test_the_index_a_landing_brings_is_known_without_a_parse(repo: Path) -> None:
    """The landing commit carries the index with COMPLETED; once the user's checkout holds it,
    the queue's store knows its document (`completed_blob` made it) and compares bytes instead
    of parsing the file again. What it reads is what a parse gives."""
    project, store = setup(repo, "T-1", "T-2")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))
    q.process()
    enqueue(q, "T-2", work(project, "T-2", {"b.txt": "b\n"}))
    parse = tickets.index_document
    parsed: list[bytes] = []

    def counted(data: bytes, path: Path = Path("index.json")) -> tickets.IndexDocument:
        parsed.append(data)
        return parse(data, path)

    with mock.patch.object(tickets, "index_document", counted):
        [outcome] = q.process()

    assert isinstance(outcome, Landed) and parsed == []
    assert states(store) == {"T-1": "COMPLETED", "T-2": "COMPLETED"}
    assert states(project.ticket_store()) == {"T-1": "COMPLETED", "T-2": "COMPLETED"}
    assert user_changes(repo) == []


def test_update_ref_is_a_compare_and_swap(repo: Path) -> None:
    head = git(repo, "rev-parse", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "moved")
    moved = git(repo, "rev-parse", "main")
    assert not sgit.update_ref(repo, "refs/heads/main", head, head)  # main is no longer at head
    assert git(repo, "rev-parse", "main") == moved


def test_target_moving_during_a_landing_is_recomputed_on_its_new_head(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))
    moves: list[str] = []

    def user_commits(step: str) -> None:
        if step == "recorded" and not moves:  # between recording the entry and the CAS
            (repo / "user.txt").write_text("mine\n")
            git(repo, "add", "user.txt")
            git(repo, "commit", "-q", "-m", "user work")
            moves.append(git(repo, "rev-parse", "main"))

    monkeypatch.setattr(commit_queue, "step_hook", user_commits)
    [outcome] = q.process()

    assert isinstance(outcome, Landed)
    assert git(repo, "rev-parse", "main^") == moves[0]
    assert landed_ids(repo) == ["T-1"]
    assert (repo / "a.txt").exists() and (repo / "user.txt").exists()
    assert user_changes(repo) == []


def queued(
    repo: Path, changes: dict[str, dict[str, str]], **options: object
) -> tuple[Project, TicketStore, CommitQueue]:
    """Each ticket set up, worked on from main's head and queued, in order."""
    project, store = setup(repo, *changes)
    q = make_queue(project, store, **options)
    bases = {tid: work(project, tid, files) for tid, files in changes.items()}
    for tid, base in bases.items():
        enqueue(q, tid, base)
    return project, store, q


def conflicting_pair(repo: Path) -> tuple[Project, TicketStore, CommitQueue]:
    """T-1 and T-2 rewrite the same line of README.md from the same base; both queued."""
    return queued(repo, {"T-1": {"README.md": "one\n"}, "T-2": {"README.md": "two\n"}})


def test_two_tickets_rewriting_one_line_one_lands_the_other_conflicts(repo: Path) -> None:
    project, store, q = conflicting_pair(repo)

    first, second = q.process()

    assert isinstance(first, Landed) and first.entry.ticket_id == "T-1"
    assert isinstance(second, Rejected) and second.kind == "conflict"
    assert second.files == ("README.md",) and second.collided_with == ("T-1",)
    assert "README.md" in second.detail and "T-1" in second.detail
    assert second.entry.status == "conflict" and second.entry.attempts == 1
    assert states(store) == {"T-1": "COMPLETED", "T-2": "IN_PROGRESS"}  # the caller decides
    assert landed_ids(repo) == ["T-1"]
    assert user_changes(repo) == []

    # The stream's retry: the entry goes, the ticket runs again on the new head, and lands.
    q.discard(second.entry)
    assert sgit.rev_parse(repo, "refs/heads/sage/T-2") is None
    enqueue(q, "T-2", work(project, "T-2", {"README.md": "one\ntwo\n"}), attempts=1)
    [again] = q.process()
    assert isinstance(again, Landed) and again.entry.attempts == 1
    assert landed_ids(repo) == ["T-1", "T-2"]
    assert (repo / "README.md").read_text() == "one\ntwo\n"
    assert user_changes(repo) == []


def test_unrelated_uncommitted_edits_of_the_user_are_kept(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))
    (repo / "README.md").write_text("my edit\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")

    [outcome] = q.process()

    assert isinstance(outcome, Landed)
    assert (repo / "README.md").read_text() == "my edit\n"
    assert (repo / "a.txt").read_text() == "a\n"
    assert sorted(user_changes(repo)) == [" M README.md", "A  staged.txt"]


def test_user_edits_in_the_way_block_the_landing_and_move_nothing(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"README.md": "theirs\n"}))
    before = git(repo, "rev-parse", "main")
    (repo / "README.md").write_text("mine\n")

    [outcome] = q.process()

    assert isinstance(outcome, Rejected) and outcome.kind == "blocked"
    assert "README.md" in outcome.detail and "commit or stash" in outcome.detail
    assert git(repo, "rev-parse", "main") == before
    assert (repo / "README.md").read_text() == "mine\n"
    assert [e.status for e in q.pending()] == ["queued"]
    assert states(store) == {"T-1": "IN_PROGRESS"}

    git(repo, "checkout", "--", "README.md")  # the user puts their edit away
    [outcome] = q.process()
    assert isinstance(outcome, Landed)
    assert (repo / "README.md").read_text() == "theirs\n"


def test_untracked_file_in_the_way_blocks(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"new.txt": "theirs\n"}))
    (repo / "new.txt").write_text("mine, untracked\n")
    [outcome] = q.process()
    assert isinstance(outcome, Rejected) and outcome.kind == "blocked"
    assert "new.txt" in outcome.detail
    assert (repo / "new.txt").read_text() == "mine, untracked\n"


def test_target_not_checked_out_moves_only_the_ref(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    git(repo, "switch", "-q", "-c", "elsewhere")
    q = make_queue(project, store)
    enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))
    [outcome] = q.process()
    assert isinstance(outcome, Landed) and git(repo, "rev-parse", "main") == outcome.commit
    assert not (repo / "a.txt").exists()


def test_newer_entry_of_a_ticket_supersedes_older_ones(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    base = work(project, "T-1", {"a.txt": "a\n"})
    old = enqueue(q, "T-1", base)
    new = enqueue(q, "T-1", base)
    assert new.seq == old.seq + 1
    [outcome] = q.process()
    assert isinstance(outcome, Landed) and outcome.entry.seq == new.seq
    assert landed_ids(repo) == ["T-1"]
    assert {e.seq: e.status for e in q.archived()} == {old.seq: "discarded", new.seq: "landed"}


def test_defer_keeps_the_branch_and_records_the_reason(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    entry = enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))
    q.defer(entry, "conflict in a.txt with T-0")
    raw = store.load().raw["tickets"][0]
    assert raw["state"] == "DEFERRED" and raw["deferred_reason"] == "conflict in a.txt with T-0"
    assert sgit.rev_parse(repo, "refs/heads/sage/T-1") == entry.head
    assert q.pending() == [] and q.archived()[0].status == "deferred"


def test_a_ticket_missing_from_the_index_does_not_stall_the_queue(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store)
    enqueue(q, "T-9", work(project, "T-9", {"a.txt": "a\n"}))
    [outcome] = q.process()
    assert isinstance(outcome, Landed) and landed_ids(repo) == ["T-9"]


# ---- verify ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [True, False])
def test_verify_failure_keeps_forbidden_file_off_main(repo: Path, batch: bool) -> None:
    project, store = setup(repo, "T-1", "T-2")
    q = make_queue(project, store, verify=FORBID, verify_batch=batch)
    enqueue(q, "T-1", work(project, "T-1", {"forbidden.txt": "no\n"}))
    enqueue(q, "T-2", work(project, "T-2", {"ok.txt": "yes\n"}))

    outcomes = q.process()

    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    assert [(o.entry.ticket_id, o.kind) for o in rejected] == [("T-1", "verify")]
    assert rejected[0].entry.status == "verify-failed" and rejected[0].entry.attempts == 1
    assert landed_ids(repo) == ["T-2"]
    assert "forbidden.txt" not in git(repo, "log", "--name-only", "--format=", "main")
    assert not (repo / "forbidden.txt").exists()
    log = project.runs_dir / "test-run" / "_verify.log"
    assert "test ! -e forbidden.txt" in log.read_text()


def test_a_hung_verify_times_out_as_a_failure_and_frees_the_queue(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store, verify=("sleep", "30"), verify_timeout=0.3)
    head = git(repo, "rev-parse", "main")
    enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))

    [outcome] = q.process()

    assert isinstance(outcome, Rejected) and outcome.kind == "verify"
    assert git(repo, "rev-parse", "main") == head


@pytest.mark.parametrize(
    ("batch", "culprit", "runs"),
    [(True, None, 1), (False, None, 6), (True, 3, 4), (False, 3, 6)],
)
def test_batch_verify_bisects_to_the_culprit_with_fewer_runs(
    repo: Path, batch: bool, culprit: int | None, runs: int
) -> None:
    ids = [f"T-{n}" for n in range(6)]
    project, store = setup(repo, *ids)
    q = make_queue(project, store, verify=FORBID, verify_batch=batch)
    for n, tid in enumerate(ids):
        name = "forbidden.txt" if n == culprit else f"{tid}.txt"
        enqueue(q, tid, work(project, tid, {name: tid}))

    outcomes = q.process()

    assert q.verify_runs == runs
    expected = [tid for n, tid in enumerate(ids) if n != culprit]
    assert landed_ids(repo) == expected
    rejected = [o.entry.ticket_id for o in outcomes if isinstance(o, Rejected)]
    assert rejected == ([] if culprit is None else [ids[culprit]])
    assert sorted(o.entry.ticket_id for o in outcomes if isinstance(o, Landed)) == expected


def test_verify_reuses_its_scratch_worktree_and_sees_only_the_candidate(repo: Path) -> None:
    project, store = setup(repo, "T-1", "T-2")
    check = ("sh", "-c", "test -e a.txt && test ! -e stray.txt && touch stray.txt")
    q = make_queue(project, store, verify=check)
    enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))
    q.process()
    enqueue(q, "T-2", work(project, "T-2", {"b.txt": "b\n"}))
    [outcome] = q.process()  # stray.txt from the first run was cleaned away
    assert isinstance(outcome, Landed) and q.verify_runs == 2
    assert (project.worktrees_dir / "_verify" / "b.txt").exists()


# ---- the lock, across processes ----------------------------------------------------------------

LANDER = """
import sys
from pathlib import Path
from sage.lib.project import open_project
from sage.lib.queue import CommitQueue, Landed

repo, ids = Path(sys.argv[1]), sys.argv[2:]
project = open_project(repo)
q = CommitQueue(project, project.ticket_store(), target_branch="main", lock_timeout=30)
base = {tid: sys.stdin.readline().strip() for tid in ids}
for tid in ids:
    q.enqueue(ticket_id=tid, title=tid, branch=f"sage/{tid}", base=base[tid])
    for outcome in q.process():
        print(type(outcome).__name__, outcome.entry.ticket_id, flush=True)
"""


def test_two_processes_contending_for_the_lock_both_land(repo: Path) -> None:
    ids = [f"T-{n}" for n in range(6)]
    project, store = setup(repo, *ids)
    bases = {tid: work(project, tid, {f"{tid}.txt": tid}) for tid in ids}
    groups = [ids[0::2], ids[1::2]]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LANDER, str(repo), *group],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for group in groups
    ]
    results = [
        p.communicate("".join(bases[t] + "\n" for t in g), timeout=60)
        for p, g in zip(procs, groups, strict=True)
    ]
    assert [p.returncode for p in procs] == [0, 0], results
    assert sorted(landed_ids(repo)) == ids  # each exactly once
    assert set(states(store).values()) == {"COMPLETED"}
    reported = [line.split() for out, _ in results for line in out.splitlines()]
    assert sorted(tid for kind, tid in reported if kind == "Landed") == ids
    assert user_changes(repo) == []


def test_a_held_lock_times_out_naming_the_holder(repo: Path) -> None:
    project, store = setup(repo, "T-1")
    q = make_queue(project, store, lock_timeout=0.2)
    held = locks.hold(project.locks_dir / "queue.lock", timeout=1, what="test")
    with held, pytest.raises(LockHeld, match="the commit queue is held by PID"):
        q.process()


def test_an_entry_queued_under_verify_is_verified_whoever_lands_it(repo: Path) -> None:
    """Found by hand: `sage queue process` without --verify landed what a --verify stream
    queued, bypassing the gate."""
    project, store = setup(repo, "V-1")
    base = work(project, "V-1", {"forbidden.txt": "secret\n"})
    gate = ("sh", "-c", "test ! -e forbidden.txt")
    enqueue(make_queue(project, store, verify=gate), "V-1", base)
    by_hand = make_queue(project, store)  # no verify of its own
    (outcome,) = by_hand.process()
    assert isinstance(outcome, Rejected) and outcome.kind == "verify"
    assert "test ! -e forbidden.txt" in outcome.detail
    assert landed_ids(repo) == []


def test_the_target_rewritten_outside_the_queue_stops_landings(repo: Path) -> None:
    project, store = setup(repo, "W-1", "W-2")
    q = make_queue(project, store)
    enqueue(q, "W-1", work(project, "W-1", {"w1.txt": "1\n"}))
    (first,) = q.process()
    assert isinstance(first, Landed)
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # someone moves main back past the landing
    enqueue(q, "W-2", work(project, "W-2", {"w2.txt": "2\n"}))
    (second,) = make_queue(project, store).process()
    assert isinstance(second, Rejected) and second.kind == "blocked"
    assert "no longer contains" in second.detail and "W-1" in second.detail
    assert landed_ids(repo) == []
    git(repo, "update-ref", "refs/sage/accepted/main", "main")  # the rewrite was meant
    (third,) = make_queue(project, store).process()
    assert isinstance(third, Landed) and landed_ids(repo) == ["W-2"]


def test_a_user_commit_after_a_landing_makes_no_false_conflict(repo: Path) -> None:
    """Found by the queue's state machine: the head remembered from the last landing was
    stacked on after the user committed to main, and a ticket that touches its own file only
    was rejected for a conflict (an attempt used) before the swap noticed the move."""
    project, store = setup(repo, "T-0", "T-1", "T-2")
    q = make_queue(project, store)
    enqueue(q, "T-0", work(project, "T-0", {"shared.txt": "T-0\n"}))
    [first] = q.process()
    (repo / "shared.txt").write_text("the user's\n")
    git(repo, "commit", "-qam", "the user's work")
    enqueue(q, "T-1", work(project, "T-1", {"shared.txt": "T-1\n"}))
    enqueue(q, "T-2", work(project, "T-2", {"own.txt": "T-2\n"}))

    outcomes = q.process()

    assert isinstance(first, Landed)
    assert [(type(o).__name__, o.entry.attempts) for o in outcomes] == [("Landed", 0)] * 2
    assert landed_ids(repo) == ["T-0", "T-1", "T-2"]


def test_of_an_entrys_writes_only_the_write_ahead_before_the_swap_is_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The durability policy (`sage.lib.files`): the entry marked applying, written with
    `durable=True` before the target ref moves, is on disk first; the others are run state."""
    entries = Entries(tmp_path / "queue", tmp_path / "locks", lock_timeout=5)
    flushed: list[int] = []
    monkeypatch.setattr(os, "fsync", flushed.append)
    entry = entries.add(new_entry(ticket_id="A-1", title="a", branch="sage/A-1",
                                  base="0" * 40, head="1" * 40))  # fmt: skip
    entries.requeue([replace(entry, status=Status.CONFLICT)])
    assert flushed == []
    entries.write(replace(entry, status=Status.APPLYING), durable=True)
    assert len(flushed) == 2  # the file, then its folder
    entries.archive(replace(entry, status=Status.LANDED))
    assert len(flushed) == 2 and [e.status for e in entries.archived()] == [Status.LANDED]


class _ArchivingWhileRead(Entries):
    """Entries that archive `entry` for real right after their `after`-th listing (of the queue
    or of the archive, whichever comes first), as the lander may while a reader lists both."""

    def __init__(self, queue_dir: Path, locks_dir: Path, *, entry: QueueEntry, after: int) -> None:
        super().__init__(queue_dir, locks_dir, lock_timeout=5)
        self.entry, self.after, self.looks = entry, after, 0
        self._looked(0)

    def _looked(self, looks: int) -> None:
        self.looks = looks
        if looks == self.after:
            self.archive(replace(self.entry, status=Status.LANDED))

    def active(self) -> list[QueueEntry]:
        found = super().active()
        self._looked(self.looks + 1)
        return found

    def archived(self, ticket_id: str | None = None) -> list[QueueEntry]:
        found = super().archived(ticket_id)
        self._looked(self.looks + 1)
        return found


@pytest.mark.parametrize("after", [0, 1, 2], ids=["before", "between the reads", "after"])
def test_a_tickets_entries_are_found_while_the_lander_archives_them(
    tmp_path: Path, after: int
) -> None:
    """An entry moves from the queue to done/ (written there first, then unlinked). A reader of
    a ticket's entries (the stream's reconcile, after a pass that looked before the entry was
    queued) must find it in one place or the other: in neither, the stream took a landed
    ticket for lost and ran it again on a target that already had its patch."""
    plain = Entries(tmp_path / "queue", tmp_path / "locks", lock_timeout=5)
    entry = plain.add(new_entry(ticket_id="A-1", title="a", branch="sage/A-1",
                                base="0" * 40, head="1" * 40))  # fmt: skip
    racing = _ArchivingWhileRead(tmp_path / "queue", tmp_path / "locks", entry=entry, after=after)

    found = racing.of_ticket("A-1")

    assert [e.seq for e in found] == [entry.seq]
    assert found[-1].status == (Status.QUEUED if after == 2 else Status.LANDED)
    assert [e.status for e in plain.of_ticket("A-1")] == [Status.LANDED]


def test_numbering_goes_on_from_the_kept_number_and_from_the_entries_without_it(
    tmp_path: Path,
) -> None:
    """Each entry gets the next number; the last one is kept beside the numbering lock, so an
    enqueue does not list the archive (every entry of every run). Without that file (an older
    sage, a hand edit), or with one behind the waiting entries, the entries say."""
    entries = Entries(tmp_path / "queue", tmp_path / "locks", lock_timeout=5)

    def add(tid: str) -> QueueEntry:
        return entries.add(new_entry(ticket_id=tid, title=tid, branch=f"sage/{tid}",
                                     base="0" * 40, head="1" * 40))  # fmt: skip

    first = [add(f"A-{i}") for i in range(3)]
    assert [e.seq for e in first] == [1, 2, 3]
    for entry in first:
        entries.archive(replace(entry, status=Status.LANDED, target="main"))
    assert add("B-1").seq == 4
    (tmp_path / "locks" / "queue-seq").unlink()
    assert add("B-2").seq == 5  # counted from the archive and the queue
    (tmp_path / "locks" / "queue-seq").write_text("1\n")  # behind the waiting entries
    assert add("B-3").seq == 6
    assert (tmp_path / "locks" / "queue-seq").read_text() == f"{6:020d}\n"  # written in place
    (tmp_path / "locks" / "queue-seq").write_bytes(b"000000\0\0\0")  # a write cut short
    assert add("B-4").seq == 7
    assert entries.last_landed("main") == replace(first[2], status=Status.LANDED, target="main")


def test_the_last_landing_is_named_not_searched_for_and_searched_for_when_the_name_fails(
    tmp_path: Path,
) -> None:
    """Every landing pass asks which entry landed last on its target (to see whether the target
    was rewritten since). The archive, which keeps every entry of every run, is listed only when
    the name kept for it is missing or wrong: a crash between naming and archiving, a hand edit."""
    entries = Entries(tmp_path / "queue", tmp_path / "locks", lock_timeout=5)

    def landed(tid: str, target: str = "main") -> QueueEntry:
        entry = entries.add(new_entry(ticket_id=tid, title=tid, branch=f"sage/{tid}",
                                      base="0" * 40, head="1" * 40))  # fmt: skip
        return replace(entry, status=Status.LANDED, target=target)

    held, later, elsewhere = landed("A-1"), landed("A-2"), landed("B-1", "release")
    entries.archive(later)
    entries.archive(held)  # held back, landed after a later entry: the last landing is its
    entries.archive(elsewhere)
    assert entries.last_landed("main") == held and entries.last_landed("release") == elsewhere
    with mock.patch("sage.lib.queue.entries._entry_names", side_effect=AssertionError("listed")):
        assert entries.last_landed("main") == held  # named: no listing of the archive

    named = tmp_path / "queue" / "done" / ".last-landed.json"
    crashed = landed("A-3")
    named.write_text(json.dumps({"main": crashed.filename}))  # named, then killed
    assert entries.last_landed("main") == later  # searched: the newest landed in the archive
    named.write_text("{not json")
    assert entries.last_landed("release") == elsewhere
    entries.archive(crashed)
    assert entries.last_landed("main") == crashed
    assert [e.ticket_id for e in entries.archived()] == ["A-1", "A-2", "B-1", "A-3"]


def test_a_tickets_archived_entries_are_read_by_name_only(tmp_path: Path) -> None:
    """A ticket's entries (the stream's reconcile asks) come from its own files in the archive:
    another ticket's, however many and even damaged, are not read."""
    entries = Entries(tmp_path / "queue", tmp_path / "locks", lock_timeout=5)
    mine = entries.add(new_entry(ticket_id="A-1", title="a", branch="sage/A-1",
                                 base="0" * 40, head="1" * 40))  # fmt: skip
    entries.archive(replace(mine, status=Status.LANDED, target="main"))
    (tmp_path / "queue" / "done" / "000007-A-10.json").write_text("{damaged")
    (tmp_path / "queue" / "done" / "000008-X-A-1.json").write_text("{damaged")

    assert [(e.ticket_id, e.status) for e in entries.of_ticket("A-1")] == [("A-1", "landed")]
    with pytest.raises(SageError):
        entries.archived()  # every entry: the damaged ones are read, and said to be


@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["COMPLETED", "FAILED"]),
                          st.booleans()), max_size=12))  # fmt: skip
@settings(max_examples=60, deadline=None)
def test_the_landing_index_edit_is_what_a_fresh_parse_gives(steps) -> None:
    """`completed_blob` keeps the document of the blob it wrote last; whatever comes next (that
    blob, or one edited outside), its output is what parsing the blob afresh would give."""
    doc = {"version": 1, "tickets": [ticket(f"T-{i}", title=f"t{i}") for i in range(6)]}
    blob = files.json_text(doc).encode()
    with mock.patch("sage.lib.tickets.now", return_value="2026-12-01T00:00:00.000Z"):
        for number, state, edited_outside in steps:
            if edited_outside:  # another landing, or the user, changed the index meanwhile
                raw = parse_document(blob.decode())
                raw["tickets"][0]["title"] += "!"
                blob = files.json_text(raw).encode()
            change = StateChange(ticket_id=f"T-{number}", state=state, reason="landed",
                                 run_id="r", committed=True, fields={"note": [number]})  # fmt: skip
            expected = parse_document(blob.decode())
            record_changes(expected, [change])
            out = completed_blob(blob, change)
            assert out == files.json_text(expected).encode()
            blob = out
    not_an_index = StateChange(ticket_id="T-0", state="COMPLETED", reason="")
    assert completed_blob(b"not json", not_an_index) is None


def test_warm_reads_ahead_what_a_first_landing_reads_cold(repo: Path) -> None:
    """A lander's process warms its queue while it waits: git's settings and identity read
    then are not asked again by the landing (no `git var` process of its own)."""
    project, store = setup(repo, "T-1")
    git(repo, "gc", "-q")  # the target's commit in a pack, as in a clone
    q = make_queue(project, store)
    entry = enqueue(q, "T-1", work(project, "T-1", {"a.txt": "a\n"}))
    q.warm()
    calls: list[tuple[str, ...]] = []
    real = sgit.run

    def logged(repo: Path, *args: str, **kwargs: object) -> object:
        calls.append(args)
        return real(repo, *args, **kwargs)  # type: ignore[arg-type]

    with mock.patch.object(sgit, "run", logged):
        [outcome] = q.process()
    assert isinstance(outcome, Landed) and outcome.entry.seq == entry.seq
    assert not [c for c in calls if c[:1] == ("var",)], calls


_text = st.text(max_size=12)


@given(
    st.builds(
        QueueEntry, seq=st.integers(0, 10**6), ticket_id=_text, title=_text, branch=_text,
        base=_text, head=_text, attempts=st.integers(0, 9), status=st.sampled_from(list(Status)),
        landed_commit=st.none() | _text, conflict_files=st.lists(_text, max_size=3).map(tuple),
        verify=st.lists(_text, max_size=3).map(tuple), from_base=st.booleans(),
    )
)  # fmt: skip
def test_an_entry_as_written_is_what_asdict_says_and_reads_back_the_same(entry: QueueEntry) -> None:
    assert entry.as_dict() == asdict(entry)
    assert QueueEntry.from_dict(json.loads(json.dumps(entry.as_dict()))) == entry


def test_active_and_archived_read_entry_files_only_and_drop_a_copy_already_archived(
    tmp_path: Path,
) -> None:
    entries = Entries(tmp_path / "queue", tmp_path / "locks", lock_timeout=5)
    first = entries.add(
        new_entry(ticket_id="A-1", title="a", branch="sage/A-1", base="b", head="h")
    )
    second = entries.add(
        new_entry(ticket_id="A-2", title="b", branch="sage/A-2", base="b", head="h")
    )
    entries.archive(replace(first, status=Status.LANDED))
    entries.write(first)  # a crash between archive's two steps: in both folders
    (tmp_path / "queue" / ".tmp-half.json").write_text("{")  # a temporary file: not an entry
    (tmp_path / "queue" / "notes.txt").write_text("x")

    assert [e.ticket_id for e in entries.active()] == ["A-2"]
    assert not (tmp_path / "queue" / first.filename).exists()
    assert [(e.ticket_id, e.status) for e in entries.archived()] == [("A-1", Status.LANDED)]
    assert entries.active()[0] == second
