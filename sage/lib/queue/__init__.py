"""The commit queue: each ticket branch lands on the target as one squash commit, by CAS.

A file lock serializes every application, across processes. The parts, each in its module:
entries on disk (`entries`), landing by merge, squash and compare-and-swap (`landing`), the
`--verify` gate with bisection (`verify`), the user's checkout (`checkout`, and `carry` for the
user's edits in the way of its update); recovery of what a crash left is `Landing.recover`.
`CommitQueue` is the facade the stream and `sage queue` use. Only the ticket store writes the
index: the queue hands it state changes.

`merges` (path → `Merge`) registers a merge for a path of the user's checkout: their uncommitted
edit there never stops a landing, it is merged with the landed version (see `checkout`). A pass
whose checkout update cannot finish (a full disk) raises `CheckoutBehind` after what it landed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path

from sage.lib import git, locks, objects, policy, worktrees
from sage.lib.errors import SageError
from sage.lib.project import Project
from sage.lib.queue import checkout
from sage.lib.queue.checkout import CheckoutBehind, Merge, Merged, merge_text
from sage.lib.queue.entries import (
    REJECTED,
    RETRYABLE,
    TRAILER,
    Entries,
    QueueEntry,
    Status,
    new_entry,
    read_entry,  # fmt: skip
    squash_message,
)
from sage.lib.queue.landing import MAX_RACES, PREVIOUS, Landed, Landing, Outcome, Rejected
from sage.lib.queue.verify import VERIFY_DIR, Verifier
from sage.lib.tickets import IndexWrite, StateChange, TicketStore, now

__all__ = [
    "MAX_RACES", "REJECTED", "RETRYABLE", "TRAILER", "VERIFY_DIR", "CheckoutBehind", "CommitQueue",
    "Landed", "Merge", "Merged", "Outcome", "QueueEntry", "Rejected", "Status", "merge_text",
    "read_entry", "squash_message", "step_hook",
]  # fmt: skip

# Crash-safety tests set this to kill the process between the steps of an application.
step_hook: Callable[[str], None] | None = None


class CommitQueue:
    """The queue of one repository's target branch; see the module docstring."""

    def __init__(
        self, project: Project, store: TicketStore, *, target_branch: str,
        verify: Sequence[str] = (), verify_batch: bool = True, lock_timeout: float = 60.0,
        verify_timeout: float = 0.0, run_id: str = "", merges: Mapping[str, Merge] | None = None,
    ) -> None:  # fmt: skip
        self.project, self.store, self.root = project, store, project.root
        self.target = target_branch.removeprefix("refs/heads/")
        self.ref = f"refs/heads/{self.target}"
        self.lock_timeout, self.run_id, self.verify = lock_timeout, run_id, tuple(verify)
        self.entries = Entries(project.queue_dir, project.locks_dir, lock_timeout)
        self.verifier = Verifier(project.root, project.worktrees_dir, self._log_dir,
                                 batch=verify_batch, timeout=verify_timeout)  # fmt: skip
        self.landing = Landing(
            project.root, self.target, self.entries, store, self.verifier,
            worktrees_dir=project.worktrees_dir, verify=verify, run_id=run_id, merges=merges,
        )  # fmt: skip

    @property
    def verify_runs(self) -> int:
        return self.verifier.runs

    def head(self) -> str:
        """The target branch's head now."""
        return self.landing.target_head()

    def warm(self) -> None:
        """Read ahead what a first landing reads cold: git's settings and identity for the
        repository and the target's commit (which opens the pack holding it, importing the pack
        reader). A lander in a process of its own does it while it waits for its first pass."""
        with git.one_look():
            git.settings(self.root)
            git.identity_env(self.root)
            objects.tree_id(self.root, self.head())

    def enqueue(
        self, *, ticket_id: str, title: str, branch: str, base: str, worker: str = "",
        attempts: int = 0, head: str | None = None,
    ) -> QueueEntry:  # fmt: skip
        """Persist a new queued entry for `branch` (its tip now, or `head` if the caller knows
        it), with its commits and squash message, and return it."""
        with git.one_look():
            head = head or git.rev_parse(self.root, f"refs/heads/{branch}")
            if head is None:
                raise SageError(
                    f"cannot queue {ticket_id}: branch {branch} does not exist",
                    hint="the ticket's work is gone; run the ticket again",
                )
            pairs, descends = git.history(self.root, base, head)
        entry = new_entry(
            ticket_id=ticket_id, title=title, branch=branch, base=base, head=head,
            worker=worker, run_id=self.run_id, attempts=attempts, verify=self.verify,
            commits=tuple(sha for sha, _ in pairs), from_base=descends, target=self.target,
            message=squash_message(ticket_id, title, [subject for _, subject in pairs]),
        )  # fmt: skip
        return self.entries.add(entry)

    def pending(self) -> list[QueueEntry]:
        """Entries not yet landed, deferred or discarded, in queue order."""
        return self.entries.active()

    def archived(self) -> list[QueueEntry]:
        """Landed, deferred and discarded entries, oldest first."""
        return self.entries.archived()

    def latest(self, ticket_id: str) -> QueueEntry | None:
        """A ticket's newest entry, waiting or archived."""
        mine = self.entries.of_ticket(ticket_id)
        return mine[-1] if mine else None

    def process(self, notify: Callable[[Landed], None] | None = None) -> list[Outcome]:
        """Land every entry queued now; outcomes in queue order, after what a dead process left.

        `notify` hears of each landing the moment the target has moved (before the user's
        checkout follows, the ticket is recorded COMPLETED and its worktree and branch are
        cleaned up), so a stream can start the dependents that much earlier; an outcome with
        warnings about the checkout comes later, in the list returned.

        CheckoutBehind: the user's checkout could not follow a landing (this pass's, or one
        before it); what landed was recorded (and told to `notify`), nothing more lands.
        """
        self.landing.notify, self.landing.behind, self.landing.told = notify, None, set()
        with self._lock(), git.one_look():
            recovered: list[Outcome] = list(self.landing.recover())
            outcomes = self.landing.run(self.entries.queued())
            if self.landing.behind is not None:
                raise self.landing.behind
            return recovered + sorted(outcomes, key=lambda o: o.entry.seq)

    def unfinished(self) -> checkout.Update | None:
        """A checkout update of the target that a pass could not finish (or a dead process
        left): the next `process()` finishes it before anything else lands."""
        return checkout.recorded(self.landing.record)

    def tidy(self, landed: Iterable[QueueEntry] = ()) -> None:
        """Delete the branches of what landed, in one git call: a stream asks once, at its end
        (with `batch_cleanup`), naming what its lander landed (maybe in a process of its own);
        a crash before leaves them to the next run's sweep."""
        with self._lock():
            self.landing.tidy(landed)

    def tell_index_writes(self, tell: Callable[[IndexWrite], None]) -> None:
        """`tell` hears of each write of the ticket index this queue's store makes."""
        self.store.on_write = tell

    def recover(self) -> list[Landed]:
        """At the start of a run: finish applications whose ref moved before a crash and queue
        the others again. A rejection nobody settled (the run died first) is queued again too,
        its attempt uncounted, so that the next `process()` reports it once more. CheckoutBehind
        when the user's checkout still cannot follow a landing."""
        self.landing.behind = None
        with self._lock():
            landed = self.landing.recover()
            for entry in self.entries.active():
                if entry.status in REJECTED:
                    self.entries.requeue([replace(entry, attempts=max(0, entry.attempts - 1))])
            return landed

    def defer(self, entry: QueueEntry, reason: str) -> QueueEntry:
        """The ticket becomes DEFERRED with `reason`; its branch is kept for a later retry."""
        with self._lock():
            done = replace(self.entries.current(entry), status=Status.DEFERRED, reason=reason)
            self._record(done, "DEFERRED", reason, {"deferred_reason": reason})
            tree = self.project.worktrees_dir / done.ticket_id
            if tree.exists():
                worktrees.remove(self.root, tree)
            return self.entries.archive(done)

    def discard(self, entry: QueueEntry, reason: str | None = None) -> QueueEntry:
        """Archive an entry whose ticket will run again; its worktree and branch go."""
        with self._lock():
            current = self.entries.current(entry)
            done = replace(current, status=Status.DISCARDED, reason=reason or current.reason)
            self.landing.cleanup([done], git.checkouts(self.root))
            return self.entries.archive(done)

    def keep_previous(self, entry: QueueEntry) -> None:
        """Keep a conflicting attempt's commit as `refs/sage/previous/<ID>` (its branch goes
        when the entry is discarded): the next attempt resolves from it. Gone once it lands."""
        git.git(self.root, "update-ref", f"{PREVIOUS}{entry.ticket_id}", entry.head)

    def settle(self, entry: QueueEntry, *, limits: policy.Limits) -> str:
        """A rejected entry's next step, as the stream would take it: "deferred" at the attempt
        limit, else "requeued" (the ticket back to UNPROCESSED, to run again on the new head)."""
        rejection = policy.Rejection(kind="verify" if entry.status == Status.VERIFY_FAILED
                                     else "conflict", attempts=entry.attempts,
                                     detail=entry.reason or entry.status,
                                     files=entry.conflict_files,
                                     collided_with=entry.collided_with)  # fmt: skip
        decision = policy.after_rejection(rejection, limits)
        if isinstance(decision, policy.Defer):
            self.defer(entry, decision.reason)
            return "deferred"
        why = f"landing attempt {entry.attempts} of {limits.max_attempts} failed: {decision.reason}"
        self._record(entry, "UNPROCESSED", why, {"queue_attempts": entry.attempts})
        self.discard(entry)
        return "requeued"

    def retry(self, ticket_id: str) -> QueueEntry:
        """Queue a ticket's rejected or deferred entry again, from its branch's tip now."""
        with self._lock():
            old = self._retryable(ticket_id)
            tip = git.rev_parse(self.root, f"refs/heads/{old.branch}")
            if tip is None:
                raise SageError(
                    f"cannot retry {ticket_id}: its branch {old.branch} no longer exists",
                    hint=f"run it again: set {ticket_id} to UNPROCESSED and run sage stream",
                )
            entry = self.entries.add(
                replace(
                    old, head=tip, base=git.git(self.root, "merge-base", self.ref, tip),
                    status=Status.QUEUED, reason=None, queued_at=now(), conflict_files=(),
                    collided_with=(), old_target=None, new_target=None, run_id=self.run_id,
                )
            )  # fmt: skip
            if old.status in REJECTED:
                why = f"retried as #{entry.seq}"
                self.entries.archive(replace(old, status=Status.DISCARDED, reason=why))
            self._record(entry, "IN_PROGRESS", "re-queued by `sage queue retry`", {})
            return entry

    def _retryable(self, ticket_id: str) -> QueueEntry:
        mine = self.entries.of_ticket(ticket_id)
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

    def _record(
        self, entry: QueueEntry, state: str, reason: str, fields: dict[str, object]
    ) -> None:
        run = entry.run_id or self.run_id or None
        change = StateChange(ticket_id=entry.ticket_id, state=state, reason=reason, run_id=run,
                             fields=fields)  # fmt: skip
        self.store.record([change])

    def _lock(self) -> AbstractContextManager[None]:
        return locks.hold(
            self.project.locks_dir / "queue.lock",
            timeout=self.lock_timeout,
            what="the commit queue",
            hint="another sage process is landing commits: wait, or raise [queue] lock_timeout",
        )

    def _log_dir(self) -> Path:
        return self.project.runs_dir / self.run_id if self.run_id else self.project.logs_dir
