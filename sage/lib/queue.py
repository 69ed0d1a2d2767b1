"""The commit queue: each ticket branch lands on the target as one squash commit, by CAS.

A file lock serializes every application. A landing is computed without touching any working tree
(`merge-tree --write-tree`, `commit-tree`), optionally tested in a scratch worktree, recorded in the
entry, and only then does the target ref move, from the head it was computed on. An entry written
as "applying" carries the old and new target heads, so after a crash `recover()` can tell whether
the ref moved (finish the landing) or not (queue it again).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from sage.lib import files, git, locks, proc, worktrees
from sage.lib.errors import GitError, SageError
from sage.lib.project import Project
from sage.lib.tickets import TicketStore, now, record_state

TRAILER = git.TRAILER
REJECTED = ("conflict", "verify-failed")
RETRYABLE = ("conflict", "verify-failed", "deferred", "discarded")
MAX_RACES = 5  # the target moved between computing and landing this many times in a row
VERIFY_DIR = "_verify"  # ticket IDs cannot start with "_", so this never clashes with one
_IN_THE_WAY = re.compile(r"(?:Entry|working tree file) '([^']+)'")

# Crash-safety tests set this to kill the process between the steps of an application.
step_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if step_hook is not None:
        step_hook(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueEntry:
    """One ticket branch waiting to land, as persisted in `.sage/queue/`."""

    seq: int
    ticket_id: str
    title: str
    branch: str
    base: str
    head: str
    worker: str = ""
    run_id: str = ""
    attempts: int = 0
    status: str = "queued"
    queued_at: str = ""
    landed_at: str | None = None
    landed_commit: str | None = None
    old_target: str | None = None
    new_target: str | None = None
    conflict_files: tuple[str, ...] = ()
    collided_with: tuple[str, ...] = ()
    reason: str | None = None
    commits: tuple[str, ...] = ()
    message: str = ""

    @property
    def filename(self) -> str:
        return f"{self.seq:06d}-{self.ticket_id}.json"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueueEntry:
        known = {f.name for f in fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, kw_only=True)
class Landed:
    __match_args__ = ("entry", "commit")

    entry: QueueEntry
    commit: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    """Not landed. kind: "conflict", "verify", or "blocked" (the entry stays queued)."""

    __match_args__ = ("entry", "kind", "files", "collided_with", "detail")

    entry: QueueEntry
    kind: str
    files: tuple[str, ...] = ()
    collided_with: tuple[str, ...] = ()
    detail: str = ""


Outcome = Landed | Rejected


@dataclass(frozen=True, slots=True, kw_only=True)
class _Candidate:
    """An entry's squash commit, on the target head or on the candidate below it."""

    entry: QueueEntry
    commit: str


def squash_message(ticket_id: str, title: str, subjects: Sequence[str]) -> str:
    """`<ID>: <title>`, the branch's commit subjects, and the Sage-Ticket trailer."""
    header = f"{ticket_id}: {' '.join(title.split())}"
    listed = "".join(f"- {s}\n" for s in subjects if s and s != header)
    body = f"{listed}\n" if listed else ""
    return f"{header}\n\n{body}{TRAILER}: {ticket_id}\n"


def read_entry(path: Path) -> QueueEntry | None:
    """An entry file, or None when it was archived meanwhile."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SageError(
            f"cannot read queue entry {path}: {exc}",
            hint="move the file aside; its ticket can be re-run with `sage stream`",
        ) from None
    return QueueEntry.from_dict(data)


class CommitQueue:
    """The queue of one repository's target branch; see the module docstring."""

    def __init__(
        self,
        project: Project,
        store: TicketStore,
        *,
        target_branch: str,
        verify: Sequence[str] = (),
        verify_batch: bool = True,
        lock_timeout: float = 60.0,
        verify_timeout: float = 0.0,
        run_id: str = "",
    ) -> None:
        self.project, self.store, self.root = project, store, project.root
        self.target = target_branch.removeprefix("refs/heads/")
        self.ref = f"refs/heads/{self.target}"
        self.verify = tuple(verify)
        self.verify_batch = verify_batch
        self.lock_timeout = lock_timeout
        self.verify_timeout = verify_timeout  # a hung verify must not hold the lock forever
        self.run_id = run_id
        self.verify_runs = 0  # how often the verify command ran (the bench reports it)
        self._exit_codes: dict[str, int] = {}
        self._notify: Callable[[Landed], None] | None = None

    @property
    def queue_dir(self) -> Path:
        return self.project.queue_dir

    @property
    def done_dir(self) -> Path:
        return self.project.queue_dir / "done"

    # ---- the public API ------------------------------------------------------------------

    def enqueue(
        self,
        *,
        ticket_id: str,
        title: str,
        branch: str,
        base: str,
        worker: str = "",
        attempts: int = 0,
        head: str | None = None,
    ) -> QueueEntry:
        """Persist a new queued entry for `branch` (its tip now, or `head` if the caller knows
        it) and return it."""
        head = head or git.rev_parse(self.root, f"refs/heads/{branch}")
        if head is None:
            raise SageError(
                f"cannot queue {ticket_id}: branch {branch} does not exist",
                hint="the ticket's work is gone; run the ticket again",
            )
        entry = QueueEntry(
            seq=0, ticket_id=ticket_id, title=title, branch=branch, base=base, head=head,
            worker=worker, run_id=self.run_id, attempts=attempts, queued_at=now(),
        )  # fmt: skip
        return self._add(entry)

    def head(self) -> str:
        """The target branch's head now."""
        return self._target_head()

    def latest(self, ticket_id: str) -> QueueEntry | None:
        """A ticket's newest entry, waiting or archived."""
        mine = _sorted(e for e in [*self.archived(), *self._active()] if e.ticket_id == ticket_id)
        return mine[-1] if mine else None

    def pending(self) -> list[QueueEntry]:
        """Entries not yet landed, deferred or discarded, in queue order."""
        return self._active()

    def archived(self) -> list[QueueEntry]:
        """Landed, deferred and discarded entries, oldest first."""
        return _sorted(read_entry(p) for p in self.done_dir.glob("[0-9]*.json"))

    def process(self, notify: Callable[[Landed], None] | None = None) -> list[Outcome]:
        """Land every entry queued now; outcomes in queue order, after what a dead process left.

        `notify` hears of each landing as soon as it is recorded, before its worktree and branch
        are cleaned up, so a stream can start the dependents that much earlier.
        """
        self._notify = notify
        with self._lock():
            recovered: list[Outcome] = list(self._recover())
            outcomes = self._process(self._queued())
            return recovered + sorted(outcomes, key=lambda o: o.entry.seq)

    def recover(self) -> list[Landed]:
        """At the start of a run: finish applications whose ref moved before a crash and queue
        the others again. A rejection nobody settled (the run died first) is queued again too,
        its attempt uncounted, so that the next `process()` reports it once more."""
        with self._lock():
            landed = self._recover()
            for entry in self._active():
                if entry.status in REJECTED:
                    self._requeue([replace(entry, attempts=max(0, entry.attempts - 1))])
            return landed

    def defer(self, entry: QueueEntry, reason: str) -> QueueEntry:
        """The ticket becomes DEFERRED with `reason`; its branch is kept for a later retry."""
        with self._lock():
            done = replace(self._current(entry), status="deferred", reason=reason)
            self._record([(done, "DEFERRED", reason, {"deferred_reason": reason})])
            tree = self.project.worktrees_dir / done.ticket_id
            if tree.exists():
                worktrees.remove(self.root, tree)
            return self._archive(done)

    def discard(self, entry: QueueEntry, reason: str | None = None) -> QueueEntry:
        """Archive an entry whose ticket will run again; its worktree and branch go."""
        with self._lock():
            current = self._current(entry)
            done = replace(current, status="discarded", reason=reason or current.reason)
            self._cleanup_all([done], git.checkouts(self.root))
            return self._archive(done)

    def settle(self, entry: QueueEntry, *, max_attempts: int) -> str:
        """A rejected entry's next step: "deferred" at the attempt limit, else "requeued"
        (the ticket back to UNPROCESSED, to run again on the new head)."""
        why = entry.reason or entry.status
        if entry.attempts >= max_attempts:
            self.defer(entry, f"could not land after {entry.attempts} attempt(s): {why}")
            return "deferred"
        reason = f"landing attempt {entry.attempts} of {max_attempts} failed: {why}"
        self._record([(entry, "UNPROCESSED", reason, {"queue_attempts": entry.attempts})])
        self.discard(entry)
        return "requeued"

    def retry(self, ticket_id: str) -> QueueEntry:
        """Queue a ticket's rejected or deferred entry again, from its branch's tip now."""
        with self._lock():
            old = self._latest(ticket_id)
            tip = git.rev_parse(self.root, f"refs/heads/{old.branch}")
            if tip is None:
                raise SageError(
                    f"cannot retry {ticket_id}: its branch {old.branch} no longer exists",
                    hint=f"run it again: set {ticket_id} to UNPROCESSED and run sage stream",
                )
            entry = self._add(
                replace(
                    old, head=tip, base=git.git(self.root, "merge-base", self.ref, tip),
                    status="queued", reason=None, queued_at=now(), conflict_files=(),
                    collided_with=(), old_target=None, new_target=None, run_id=self.run_id,
                )
            )  # fmt: skip
            if old.status in REJECTED:
                self._archive(replace(old, status="discarded", reason=f"retried as #{entry.seq}"))
            self._record([(entry, "IN_PROGRESS", "re-queued by `sage queue retry`", {})])
            return entry

    # ---- entries on disk -----------------------------------------------------------------

    def _lock(self) -> AbstractContextManager[None]:
        return locks.hold(
            self.project.locks_dir / "queue.lock",
            timeout=self.lock_timeout,
            what="the commit queue",
            hint="another sage process is landing commits: wait, or raise [queue] lock_timeout",
        )

    def _add(self, entry: QueueEntry) -> QueueEntry:
        """Write `entry`, with its commits and squash message, under the next sequence number.
        Numbering has a lock of its own: enqueuing never waits for a landing's verify run."""
        pairs = git.commits_between(self.root, entry.base, entry.head)
        subjects = [subject for _, subject in pairs]
        entry = replace(
            entry,
            commits=tuple(sha for sha, _ in pairs),
            message=squash_message(entry.ticket_id, entry.title, subjects),
        )
        numbering = self.project.locks_dir / "queue-seq.lock"
        with locks.hold(numbering, timeout=self.lock_timeout, what="the queue's numbering"):
            names = [*self.queue_dir.glob("[0-9]*.json"), *self.done_dir.glob("[0-9]*.json")]
            seq = max((int(p.name.split("-", 1)[0]) for p in names), default=0) + 1
            return self._write(replace(entry, seq=seq))

    def _write(self, entry: QueueEntry) -> QueueEntry:
        files.write_json(self.queue_dir / entry.filename, entry.as_dict())
        return entry

    def _archive(self, entry: QueueEntry) -> QueueEntry:
        """Into done/ first, then out of the queue: a crash in between leaves two copies, which
        `_active` reads as archived."""
        files.write_json(self.done_dir / entry.filename, entry.as_dict())
        (self.queue_dir / entry.filename).unlink(missing_ok=True)
        return entry

    def _active(self) -> list[QueueEntry]:
        paths = []
        for path in self.queue_dir.glob("[0-9]*.json"):
            if (self.done_dir / path.name).exists():
                path.unlink(missing_ok=True)
            else:
                paths.append(path)
        return _sorted(map(read_entry, paths))

    def _current(self, entry: QueueEntry) -> QueueEntry:
        """The entry as on disk now (the caller's copy may be older), else the caller's."""
        return read_entry(self.queue_dir / entry.filename) or entry

    def _latest(self, ticket_id: str) -> QueueEntry:
        mine = _sorted(e for e in [*self.archived(), *self._active()] if e.ticket_id == ticket_id)
        if not mine or mine[-1].status not in RETRYABLE:
            what = (
                f"its latest queue entry is {mine[-1].status}" if mine else "it has no queue entry"
            )
            raise SageError(
                f"cannot retry {ticket_id}: {what}",
                hint="retry takes a ticket whose landing was rejected or deferred "
                "(see sage queue status)",
            )
        return mine[-1]

    def _queued(self) -> list[QueueEntry]:
        """Queued entries in order, one per ticket: a newer entry supersedes older ones."""
        active = self._active()
        latest = {e.ticket_id: e for e in active if e.status == "queued"}
        for entry in active:
            newer = latest.get(entry.ticket_id)
            if newer and entry.seq < newer.seq and entry.status != "applying":
                why = f"superseded by #{newer.seq}"
                self._archive(replace(entry, status="discarded", reason=why))
        return sorted(latest.values(), key=lambda e: e.seq)

    def _requeue(
        self, entries: Sequence[QueueEntry], reason: str | None = None
    ) -> list[QueueEntry]:
        return [
            self._write(
                replace(e, status="queued", old_target=None, new_target=None, landed_at=None,
                        reason=reason)
            )
            for e in entries
        ]  # fmt: skip

    def _record(self, changes: Sequence[tuple[QueueEntry, str, str, Mapping[str, Any]]]) -> None:
        """Ticket states in one write. A ticket already there with those fields (a recovery
        doing it again) or gone from the index is left alone: the queue must not stall on it."""

        def apply(raw: dict[str, Any]) -> None:
            by_id = {t.get("id"): t for t in raw["tickets"] if isinstance(t, dict)}
            for entry, state, reason, extra in changes:
                ticket = by_id.get(entry.ticket_id)
                if ticket is None or (
                    ticket.get("state") == state
                    and all(ticket.get(k) == v for k, v in extra.items())
                ):
                    continue
                run = entry.run_id or self.run_id or None
                record_state(ticket, state, reason=reason, run_id=run)
                ticket.update(extra)

        self.store.update(apply)

    # ---- landing -------------------------------------------------------------------------

    def _target_head(self) -> str:
        head = git.rev_parse(self.root, self.ref)
        if head is None:
            raise SageError(
                f"target branch {self.target!r} does not exist",
                hint="create it, or set [stream] target_branch",
            )
        return head

    def _process(self, todo: list[QueueEntry]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        races = 0
        while todo:
            onto = self._target_head()
            stack, rejected = self._stack(onto, todo)
            outcomes += rejected
            passed, culprit = self._verify_stack(stack)
            landed = self._land(onto, stack[:passed])
            if landed is None:  # the target moved meanwhile: compute everything again on it
                races += 1
                todo = [c.entry for c in stack]
                if races < MAX_RACES:
                    continue
                why = f"{self.target} kept moving while landing"
                return outcomes + [self._blocked(e, why) for e in todo]
            outcomes += landed
            if culprit is None or any(isinstance(o, Rejected) for o in landed):
                # Blocked: what was not tried waits too. Otherwise stack[passed:] is empty.
                return outcomes + [self._blocked(c.entry, _detail(landed)) for c in stack[passed:]]
            outcomes.append(self._reject_verify(stack[culprit]))
            todo = [c.entry for c in stack[culprit + 1 :]]
        return outcomes

    def _stack(
        self, onto: str, entries: Sequence[QueueEntry]
    ) -> tuple[list[_Candidate], list[Rejected]]:
        """Each entry's squash commit on top of the previous one; conflicts are rejected."""
        stack: list[_Candidate] = []
        rejected: list[Rejected] = []
        for entry in entries:
            made = self._squash(stack[-1].commit if stack else onto, entry)
            if isinstance(made, Rejected):
                rejected.append(made)
            else:
                stack.append(made)
        _step("stacked")
        return stack, rejected

    def _squash(self, onto: str, entry: QueueEntry) -> _Candidate | Rejected:
        tree = f"{entry.head}^{{tree}}"  # nothing landed since the worker started: its tree
        if onto != entry.base:
            try:
                merged = git.merge_tree(self.root, onto, entry.head)
            except GitError as exc:
                return self._conflict(entry, (), (), f"cannot merge {entry.branch}: {exc.message}")
            if not merged.clean:
                return self._collision(entry, onto, merged.conflicts)
            tree = merged.tree
        env = git.identity_env(self.root)
        commit = git.commit_tree(self.root, tree, [onto], entry.message, env=env)
        return _Candidate(entry=entry, commit=commit)

    def _collision(self, entry: QueueEntry, onto: str, paths: tuple[str, ...]) -> Rejected:
        touched = git.tickets_touching(self.root, entry.base, onto, paths)
        who = tuple(t for t in touched if t != entry.ticket_id)
        with_whom = f" with {', '.join(who)}" if who else ""
        return self._conflict(entry, paths, who, f"conflict in {', '.join(paths)}{with_whom}")

    def _conflict(
        self, entry: QueueEntry, paths: tuple[str, ...], who: tuple[str, ...], detail: str
    ) -> Rejected:
        entry = self._write(
            replace(entry, status="conflict", attempts=entry.attempts + 1, conflict_files=paths,
                    collided_with=who, reason=detail)
        )  # fmt: skip
        return Rejected(entry=entry, kind="conflict", files=paths, collided_with=who, detail=detail)

    def _reject_verify(self, candidate: _Candidate) -> Rejected:
        code = self._exit_codes.get(candidate.commit)
        detail = (
            f"`{shlex.join(self.verify)}` exited {code} on the candidate "
            f"{candidate.commit[:12]} (log: {self._verify_log()})"
        )
        entry = candidate.entry
        entry = self._write(
            replace(entry, status="verify-failed", attempts=entry.attempts + 1,
                    reason=f"verify failed: {detail}")
        )  # fmt: skip
        return Rejected(entry=entry, kind="verify", detail=detail)

    def _blocked(self, entry: QueueEntry, detail: str) -> Rejected:
        entry = self._write(replace(entry, reason=f"blocked: {detail}"))
        return Rejected(entry=entry, kind="blocked", detail=detail)

    def _land(self, onto: str, stack: Sequence[_Candidate]) -> list[Outcome] | None:
        """Move the target from `onto` to the top of `stack` in one compare-and-swap; None if
        the target is no longer at `onto`."""
        if not stack:
            return []
        new, trees = stack[-1].commit, git.checkouts(self.root)
        blocker = self._follow(self._checkout(trees), onto, new, dry_run=True)
        if blocker:
            return [self._blocked(c.entry, blocker) for c in stack]
        stamp = now()
        entries = [
            self._write(
                replace(c.entry, status="applying", old_target=onto, new_target=c.commit,
                        landed_at=stamp)
            )
            for c in stack
        ]  # fmt: skip
        _step("recorded")
        if not git.update_ref(self.root, self.ref, new, onto):
            self._requeue(entries)
            return None
        _step("moved")
        return self._after_move(entries, onto, new, trees)

    def _after_move(
        self, entries: Sequence[QueueEntry], old: str, new: str, trees: Mapping[Path, str | None]
    ) -> list[Outcome]:
        """Bring the user's checkout of the target along; if their changes got in the way since
        the dry run, put the ref back (unless something was built on it already)."""
        blocker = self._follow(self._checkout(trees), old, new, dry_run=False)
        if blocker and git.update_ref(self.root, self.ref, old, new):
            back = self._requeue(entries, reason=f"blocked: {blocker}")
            return [Rejected(entry=e, kind="blocked", detail=blocker) for e in back]
        _step("checkout")
        return list(self._finish(entries, trees))

    def _checkout(self, trees: Mapping[Path, str | None]) -> Path | None:
        return next((path for path, branch in trees.items() if branch == self.ref), None)

    def _follow(self, checkout: Path | None, old: str, new: str, *, dry_run: bool) -> str | None:
        """Update the checkout's index and files from `old` to `new` (a two-tree merge: files
        the user changed are never overwritten); why it cannot, or None."""
        if checkout is None:
            return None
        args = ("read-tree", "-m", "-u", *(["-n"] if dry_run else []), old, new)
        done = git.run(checkout, *args)
        if done.returncode != 0 and dry_run:  # stale stat data is no change: refresh, ask again
            git.run(checkout, "update-index", "-q", "--refresh")
            done = git.run(checkout, *args)
        if done.returncode != 0 and self._undo_half_update(checkout, old, new, done.stderr):
            done = git.run(checkout, *args)
        if done.returncode == 0:
            return None
        lock = git.lock_in_the_way(done.stderr)
        if lock:  # a git killed in the checkout, or one still running there: not the user's edits
            return (
                f"{lock} exists: another git is running in {checkout}, or one died "
                "there; if none is running, remove that file, then run `sage queue process`"
            )
        paths = list(dict.fromkeys(_IN_THE_WAY.findall(done.stderr)))
        what = ", ".join(paths) or (done.stderr.strip().splitlines() or ["read-tree failed"])[-1]
        return (
            f"uncommitted changes in {checkout} are in the way ({what}); "
            "commit or stash them, then run `sage queue process`"
        )

    def _undo_half_update(self, checkout: Path, old: str, new: str, error: str) -> bool:
        """Files in the way whose content is exactly `new`'s were written by an update that was
        killed halfway (nobody else writes that content there): put them back as in `old`, so
        the update can run again. Anything else in the way is the user's and stays."""
        paths = list(dict.fromkeys(_IN_THE_WAY.findall(error)))
        if not paths:
            return False
        have = git.run(checkout, "hash-object", "--", *paths)
        want = git.run(checkout, "rev-parse", *(f"{new}:{p}" for p in paths))
        if have.returncode or want.returncode or have.stdout.split() != want.stdout.split():
            return False
        in_old = set(
            git.git(checkout, "ls-tree", "-r", "--name-only", old, "--", *paths).split("\n")
        )
        if in_old - {""}:
            git.git(checkout, "checkout", old, "--", *sorted(in_old - {""}))
        for path in set(paths) - in_old:
            (checkout / path).unlink(missing_ok=True)
        return True

    def _finish(
        self, entries: Sequence[QueueEntry], trees: Mapping[Path, str | None]
    ) -> list[Landed]:
        """The ref has moved: tickets COMPLETED, branches and worktrees gone, entries archived.
        A recovery may run every step again, so each is idempotent."""
        landed = [
            replace(e, status="landed", landed_commit=e.new_target, landed_at=e.landed_at or now())
            for e in entries
        ]
        self._record([_completed(e, self.target) for e in landed])
        _step("completed")
        for entry in landed:
            self._archive(entry)
        _step("archived")
        outcomes = [Landed(entry=e, commit=str(e.landed_commit)) for e in landed]
        if self._notify is not None:
            for outcome in outcomes:
                self._notify(outcome)
        # Last: a crash before this leaves a landed ticket's worktree, which a stream sweeps.
        self._cleanup_all(landed, trees)
        _step("cleaned")
        return outcomes

    def _cleanup_all(self, entries: Sequence[QueueEntry], trees: Mapping[Path, str | None]) -> None:
        """Remove the tickets' worktrees and branches, unless a branch moved on since it was
        queued or is checked out somewhere that is not sage's. One git call for the branches
        (compare-and-delete), one to prune the worktrees' registrations."""
        mine = self.project.worktrees_dir.resolve()
        doomed: dict[str, tuple[QueueEntry, list[Path]]] = {}
        for entry in entries:
            ref = f"refs/heads/{entry.branch}"
            holders = [path for path, branch in trees.items() if branch == ref]
            if ref != self.ref and all(path.resolve().parent == mine for path in holders):
                doomed[ref] = (entry, holders)
        if not doomed:
            return
        script = "".join(f"delete {ref} {entry.head}\n" for ref, (entry, _) in doomed.items())
        if git.run(self.root, "update-ref", "--stdin", input=script).returncode != 0:
            # all or nothing: some branch moved on, so take them one by one
            doomed = {
                ref: held
                for ref, held in doomed.items()
                if git.run(self.root, "update-ref", "-d", ref, held[0].head).returncode == 0
            }
        for _, holders in doomed.values():
            for path in holders:
                shutil.rmtree(path, ignore_errors=True)
        if any(holders for _, holders in doomed.values()):
            git.run(self.root, "worktree", "prune")

    # ---- verify --------------------------------------------------------------------------

    def _verify_stack(self, stack: Sequence[_Candidate]) -> tuple[int, int | None]:
        """How many candidates from the bottom pass, and the index of the first failing one."""
        if not self.verify or not stack:
            return len(stack), None
        if not self.verify_batch:
            failing = next((i for i in range(len(stack)) if not self._passes(stack[: i + 1])), None)
            return (len(stack), None) if failing is None else (failing, failing)
        if self._passes(stack):
            return len(stack), None
        good, bad = 0, len(stack)  # the first `good` pass (0: the target itself); `bad` fail
        while bad - good > 1:
            middle = (good + bad) // 2
            if self._passes(stack[:middle]):
                good = middle
            else:
                bad = middle
        return good, bad - 1

    def _passes(self, prefix: Sequence[_Candidate]) -> bool:
        """Run the verify command on the top of `prefix`, checked out in the scratch worktree."""
        top = prefix[-1].commit
        where = self._scratch(top)
        ids = " ".join(c.entry.ticket_id for c in prefix)
        log = self._verify_log()
        with log.open("a", encoding="utf-8") as sink:
            sink.write(f"\n== {now()} verify {top[:12]} ({ids}): {shlex.join(self.verify)}\n")
        self.verify_runs += 1
        env = proc.clean_env({"SAGE_VERIFY_COMMIT": top, "SAGE_VERIFY_TICKETS": ids})
        done = proc.run_logged(
            self.verify, cwd=where, env=env, log=log, timeout=self.verify_timeout or None
        )
        self._exit_codes[top] = done.returncode
        _step("verified")
        return done.returncode == 0

    def _verify_log(self) -> Path:
        folder = self.project.runs_dir / self.run_id if self.run_id else self.project.logs_dir
        folder.mkdir(parents=True, exist_ok=True)
        return folder / "_verify.log"

    def _scratch(self, commit: str) -> Path:
        """The reusable scratch worktree, checked out (detached) at `commit` and nothing else."""
        path = self.project.worktrees_dir / VERIFY_DIR
        # Without its own .git, `git -C path` would act on the enclosing repository.
        if (path / ".git").exists():
            moved = git.run(path, "checkout", "--quiet", "--force", "--detach", commit)
            if moved.returncode == 0:
                git.run(path, "clean", "-fdq")
                return path
        worktrees.remove(self.root, path)
        path.parent.mkdir(parents=True, exist_ok=True)
        git.git(self.root, "worktree", "add", "--quiet", "--force", "--detach", str(path), commit)
        return path

    # ---- recovery ------------------------------------------------------------------------

    def _recover(self) -> list[Landed]:
        applying = [e for e in self._active() if e.status == "applying"]
        if not applying:
            return []
        head = self._target_head()
        moved = [e for e in applying if e.new_target and self._reached(e.new_target, head)]
        self._requeue([e for e in applying if e not in moved])
        if not moved:
            return []
        trees = git.checkouts(self.root)
        top = next((e for e in moved if e.new_target == head), None)
        if top is None or top.old_target is None:  # built upon since: the checkout followed
            return self._finish(moved, trees)
        # Nothing moved the ref since: the crash may have come before the checkout followed.
        outcomes = self._after_move(moved, top.old_target, head, trees)
        return [o for o in outcomes if isinstance(o, Landed)]

    def _reached(self, commit: str, head: str) -> bool:
        return commit == head or git.is_ancestor(self.root, commit, head)


def _completed(entry: QueueEntry, target: str) -> tuple[QueueEntry, str, str, dict[str, Any]]:
    reason = f"landed on {target} as {str(entry.landed_commit)[:12]}"
    return (
        entry,
        "COMPLETED",
        reason,
        {"commits": [entry.landed_commit], "landed_at": entry.landed_at},
    )


def _sorted(entries: Iterable[QueueEntry | None]) -> list[QueueEntry]:
    return sorted((e for e in entries if e is not None), key=lambda e: e.seq)


def _detail(outcomes: Sequence[Outcome]) -> str:
    return next(
        (o.detail for o in outcomes if isinstance(o, Rejected)), "an entry before it is blocked"
    )
