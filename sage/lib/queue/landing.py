"""Landing: each queued branch becomes one squash commit on the target, which moves by CAS.

A pass stacks the waiting entries' squash commits on the target's head (`merge-tree
--write-tree`, `commit-tree`: no working tree is touched), verifies the stack, records the
entries as "applying" with the old and new heads, and only then moves the ref from the head it
was computed on. If the ref moved meanwhile, everything is computed again on the new head.
Then the user's checkout of the target follows (`checkout`); the target never moves back. A
checkout that cannot follow yet keeps the entries "applying" and stops the queue (`behind`)
until a pass finishes its update.
"""

from __future__ import annotations

import random
import shlex
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from sage.lib import git, objects, tickets
from sage.lib.errors import GitError, RefRefused, SageError
from sage.lib.queue import checkout
from sage.lib.queue.entries import Entries, QueueEntry, Status, step
from sage.lib.queue.verify import Verifier
from sage.lib.tickets import (
    IndexDocument,
    StateChange,
    TicketStore,
    index_document,
    now,
    written_with,
)

SLOTS_DIR = "_slots"  # worker slots' worktrees, under the worktrees folder (see executors)
ACCEPTED = "refs/sage/accepted/"  # a target head the user says to land on, rewritten or not
PREVIOUS = "refs/sage/previous/"  # a conflicting attempt, kept for its resolve attempt
MAX_RACES = 8  # the target moved between computing and landing this many times in a row


def race_backoff(races: int) -> float:
    """Seconds before computing again after the target moved: jittered, doubling, at most 2 s
    (eight races wait about six seconds in all)."""
    delay: float = min(2.0, 0.05 * 2.0**races)
    return delay * (0.5 + random.random())


@dataclass(frozen=True, slots=True, kw_only=True)
class Landed:
    __match_args__ = ("entry", "commit")

    entry: QueueEntry
    commit: str
    warnings: tuple[str, ...] = ()  # about the user's checkout: their edits carried over


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


class Landing:
    """Passes over the queued entries of one target; the caller holds the queue lock."""

    def __init__(
        self, root: Path, target: str, entries: Entries, store: TicketStore, verifier: Verifier,
        *, worktrees_dir: Path, verify: Sequence[str] = (), run_id: str = "",
        merges: Mapping[str, checkout.Merge] | None = None,
    ) -> None:  # fmt: skip
        self.root, self.target, self.ref = root, target, f"refs/heads/{target}"
        self.entries, self.store, self.verifier = entries, store, verifier
        self.worktrees_dir, self.verify, self.run_id = worktrees_dir, tuple(verify), run_id
        self.merges: dict[str, checkout.Merge] = dict(merges or {})
        self.notify: Callable[[Landed], None] | None = None
        self.told: set[int] = set()  # the entries (seq) `notify` heard of in this pass
        self.behind: checkout.CheckoutBehind | None = None  # the checkout could not follow
        self.index_in_repo = _inside(store.path, root) if store.states is not None else None
        self._index_tracked: bool | None = None  # is the index in the target's tree
        self._not_carried: set[str] = set()  # tickets whose COMPLETED no landing commit holds
        # A stream tidies once, at its end (`tidy`): one git call for every landed branch.
        self.batch_cleanup = False
        self._untidy: list[QueueEntry] = []
        if self.index_in_repo is not None:  # the user may edit the index while sage lands
            self.merges.setdefault(self.index_in_repo, merge_index)
        # The checkout update under way, recorded beside the entries (see `checkout.follow`).
        self.record = checkout_record(entries.queue_dir, target)

    def target_head(self) -> str:
        head = git.rev_parse(self.root, self.ref)
        if head is None:
            raise SageError(
                f"target branch {self.target!r} does not exist",
                hint="create it, or set [stream] target_branch",
            )
        return head

    def run(self, todo: list[QueueEntry]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        races = 0
        while todo:
            onto = self.target_head()  # read from git's files: no cache to go stale
            rewritten = self._rewritten(onto)
            if rewritten:
                return outcomes + [self._blocked(e, rewritten) for e in todo]
            stack, rejected = self._stack(onto, todo)
            outcomes += rejected
            passed, culprit = self.verifier.check(
                self._command(stack), [(c.entry.ticket_id, c.commit) for c in stack]
            )
            landed = self._land(onto, stack[:passed])
            if self.behind is not None:  # landed, but the checkout is behind: nothing more
                return outcomes
            if landed is None:  # the target moved meanwhile: compute everything again on it
                races += 1
                todo = [c.entry for c in stack]
                if races < MAX_RACES:
                    time.sleep(race_backoff(races))
                    continue
                why = (
                    f"{self.target} kept moving while landing ({races} tries): something "
                    "commits to it often; the entries stay queued for `sage queue process`"
                )
                return outcomes + [self._blocked(e, why) for e in todo]
            outcomes += landed
            if culprit is None or any(isinstance(o, Rejected) for o in landed):
                # Blocked: what was not tried waits too. Otherwise stack[passed:] is empty.
                return outcomes + [self._blocked(c.entry, _detail(landed)) for c in stack[passed:]]
            outcomes.append(self._reject_verify(stack[culprit]))
            todo = [c.entry for c in stack[culprit + 1 :]]
        return outcomes

    def _rewritten(self, head: str) -> str | None:
        """Why nothing may land: the target no longer holds what the queue landed last (it was
        reset or rewritten outside the queue), or None. Landing on it would build on a history
        that dropped landed work."""
        last = self.entries.last_landed(self.target)
        commit = last.landed_commit if last else None
        if last is None or not commit or commit == head:
            return None
        accepted = f"{ACCEPTED}{self.target}"
        if git.is_ancestor(self.root, commit, head) or git.rev_parse(self.root, accepted) == head:
            return None
        return (
            f"{self.target} no longer contains {commit[:12]}, which sage landed for "
            f"{last.ticket_id}: it was reset or rewritten outside the queue. Restore it (`git "
            f"branch -f {self.target} {commit[:12]}` or a merge), or, if the rewrite was meant, "
            f"`git update-ref {accepted} {self.target}`; then `sage queue process`"
        )

    def _command(self, stack: Sequence[_Candidate]) -> tuple[str, ...]:
        """The queue's verify command, else the one an entry was queued under."""
        return self.verify or next((c.entry.verify for c in stack if c.entry.verify), ())

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
        step("stacked")
        return stack, rejected

    def _squash(self, onto: str, entry: QueueEntry) -> _Candidate | Rejected:
        # Nothing landed since the worker started: its tree is the merge, but only if its head
        # still descends from that base (a worker that reset below it would revert work).
        if onto == entry.base and entry.from_base:
            tree = f"{entry.head}^{{tree}}"
        else:
            tree = self._merged_here(onto, entry) or ""
        if not tree:
            try:
                merged = git.merge_tree(self.root, onto, entry.head)
            except GitError as exc:
                return self._conflict(entry, (), (), f"cannot merge {entry.branch}: {exc.message}")
            if not merged.clean:
                return self._collision(entry, onto, merged.conflicts)
            tree = merged.tree
        tree = self._completed_in(tree, entry)
        env = git.identity_env(self.root)
        commit = objects.commit(self.root, tree, [onto], entry.message, env=env)
        if commit is None:
            commit = git.commit_tree(self.root, tree, [onto], entry.message, env=env)
        return _Candidate(entry=entry, commit=commit)

    def _merged_here(self, onto: str, entry: QueueEntry) -> str | None:
        """The merge of the entry onto the target, in process, when the worker's base is the
        merge base (both are short lines of commits from it, which share none) and the two
        sides changed different paths; None: git merges."""
        if not entry.from_base or not entry.base:
            return None
        landed = git.linear_line(self.root, entry.base, onto)
        worked = git.linear_line(self.root, entry.base, entry.head)
        if landed is None or worked is None or set(landed) & set(worked):
            return None
        return objects.merged_tree(self.root, entry.base, onto, entry.head)

    def _completed_in(self, tree: str, entry: QueueEntry) -> str:
        """The tree with the ticket COMPLETED in the index it carries: the landing commit says
        the ticket is done, so the index in the user's checkout does once it follows."""
        if self.index_in_repo is None:
            return tree
        change = self._completed(entry, committed=True)
        edited = objects.edit_file(
            self.root, tree.removesuffix("^{tree}"), self.index_in_repo,
            lambda blob: completed_blob(blob, change),
        )  # fmt: skip
        if edited is not None:
            self._index_tracked = True
        else:  # not in the committed index (the user added it and has not committed it yet)
            self._not_carried.add(entry.ticket_id)
        return edited or tree

    def _collision(self, entry: QueueEntry, onto: str, paths: tuple[str, ...]) -> Rejected:
        touched = git.tickets_touching(self.root, entry.base, onto, paths)
        who = tuple(t for t in touched if t != entry.ticket_id)
        with_whom = f" with {', '.join(who)}" if who else ""
        return self._conflict(entry, paths, who, f"conflict in {', '.join(paths)}{with_whom}")

    def _conflict(
        self, entry: QueueEntry, paths: tuple[str, ...], who: tuple[str, ...], detail: str
    ) -> Rejected:
        entry = self.entries.write(
            replace(entry, status=Status.CONFLICT, attempts=entry.attempts + 1,
                    conflict_files=paths, collided_with=who, reason=detail)
        )  # fmt: skip
        return Rejected(entry=entry, kind="conflict", files=paths, collided_with=who, detail=detail)

    def _reject_verify(self, candidate: _Candidate) -> Rejected:
        code = self.verifier.exit_codes.get(candidate.commit)
        command = shlex.join(self._command([candidate]))
        detail = (
            f"`{command}` exited {code} on the candidate "
            f"{candidate.commit[:12]} (log: {self.verifier.log()})"
        )
        entry = self.entries.write(
            replace(candidate.entry, status=Status.VERIFY_FAILED,
                    attempts=candidate.entry.attempts + 1, reason=f"verify failed: {detail}")
        )  # fmt: skip
        return Rejected(entry=entry, kind="verify", detail=detail)

    def _blocked(self, entry: QueueEntry, detail: str) -> Rejected:
        entry = self.entries.write(replace(entry, reason=f"blocked: {detail}"))
        return Rejected(entry=entry, kind="blocked", detail=detail)

    def _land(self, onto: str, stack: Sequence[_Candidate]) -> list[Outcome] | None:
        """Move the target from `onto` to the top of `stack` in one compare-and-swap; None if
        the target is no longer at `onto`."""
        if not stack:
            return []
        new, trees = stack[-1].commit, git.checkouts(self.root)
        blocker = checkout.check(self.checkout(trees), onto, new, merges=self.merges)
        if blocker:
            return [self._blocked(c.entry, blocker) for c in stack]
        stamp = now()
        entries = [  # the write-ahead record: on disk before the target moves
            self.entries.write(
                replace(c.entry, status=Status.APPLYING, old_target=onto, new_target=c.commit,
                        landed_at=stamp), durable=True,
            )
            for c in stack
        ]  # fmt: skip
        step("recorded")
        try:
            moved = git.update_ref(self.root, self.ref, new, onto)
        except RefRefused as exc:
            back = self.entries.requeue(entries, reason=f"blocked: {exc.message}")
            return [Rejected(entry=e, kind="blocked", detail=exc.message) for e in back]
        if not moved:
            self.entries.requeue(entries)
            return None
        step("moved")
        self._tell(_landed(entries))  # landed: what it unblocks starts while the checkout follows
        return self.after_move(entries, onto, new, trees)

    def after_move(
        self, entries: Sequence[QueueEntry], old: str, new: str, trees: Mapping[Path, str | None],
        warnings: Sequence[str] = (),
    ) -> list[Outcome]:  # fmt: skip
        """Bring the user's checkout of the target along; the target stays where it is. If the
        checkout cannot follow now (a full disk, a lock held too long), its update stays recorded,
        the entries stay "applying", and `behind` says why: the next pass finishes both."""
        with self._index_held():  # held on through `finish`, which writes COMPLETED
            followed = checkout.follow(self.record, self.checkout(trees), self.ref, old, new,
                                       merges=self.merges)  # fmt: skip
            if followed.behind:
                self.behind = self._behind(entries, followed)
                return []
            step("checkout")
            return list(self.finish(entries, trees, (*warnings, *followed.warnings)))

    def _behind(
        self, entries: Sequence[QueueEntry], followed: checkout.Followed
    ) -> checkout.CheckoutBehind:
        landed = ", ".join(f"{e.ticket_id} ({str(e.new_target)[:12]})" for e in entries)
        what = f"{landed} landed on {self.target}, but " if landed else ""
        return checkout.CheckoutBehind(f"{what}{followed.behind}", hint=followed.hint)

    def _index_held(self) -> AbstractContextManager[object]:
        """The index's lock while the checkout follows: `sage add` never writes the index
        between the update reading and writing it. Held on through the rest of the landing
        (`finish`), whose COMPLETED written into the index takes it again: one acquire a
        landing, not two (filelock's costs about 0.4 ms of CPU in a run; a release 0.1)."""
        return self.store.lock if self.index_in_repo is not None else nullcontext()

    def checkout(self, trees: Mapping[Path, str | None]) -> Path | None:
        return next((path for path, branch in trees.items() if branch == self.ref), None)

    def finish(
        self, entries: Sequence[QueueEntry], trees: Mapping[Path, str | None],
        warnings: Sequence[str] = (),
    ) -> list[Landed]:  # fmt: skip
        """The ref has moved: tickets COMPLETED, branches and worktrees gone, entries archived.
        A recovery may run every step again, so each is idempotent. `warnings` (about the user's
        checkout) go with the top entry's outcome."""
        landed = _landed(entries)
        tracked = self._tracked(landed[-1].new_target) if landed else False
        known = last_index() if tracked else None
        if known is not None:  # most likely what the checkout now holds: compared, not parsed
            self.store.followed(*known)
        self.store.record([
            self._completed(e, committed=tracked and e.ticket_id not in self._not_carried)
            for e in landed
        ])  # fmt: skip
        step("completed")
        for entry in landed:
            self.entries.archive(entry)
        step("archived")
        outcomes = [Landed(entry=e, commit=str(e.landed_commit)) for e in landed]
        if outcomes and warnings:
            outcomes[-1] = replace(outcomes[-1], warnings=tuple(warnings))
        self._tell(landed)  # those a recovery finished
        # Last: a crash before this leaves a landed ticket's worktree, which a stream sweeps.
        if self.batch_cleanup:
            self._untidy += landed
        else:
            self.cleanup(landed, trees)
        step("cleaned")
        return outcomes

    def _tell(self, landed: Sequence[QueueEntry]) -> None:
        """`notify` hears of each landed entry once a pass, the moment its ref has moved."""
        for entry in landed:
            if self.notify is not None and entry.seq not in self.told:
                self.told.add(entry.seq)
                self.notify(Landed(entry=entry, commit=str(entry.landed_commit)))

    def _completed(self, entry: QueueEntry, *, committed: bool) -> StateChange:
        """In the landing commit (`committed`): no commit id, which the commit cannot hold."""
        commit = str(entry.landed_commit)
        where = f"landed on {self.target}" + ("" if committed else f" as {commit[:12]}")
        fields = {} if committed else {"commits": [entry.landed_commit]}
        return StateChange(
            ticket_id=entry.ticket_id, state="COMPLETED", reason=where, committed=committed,
            run_id=entry.run_id or self.run_id, fields=fields,
        )  # fmt: skip

    def _tracked(self, commit: str | None) -> bool:
        """Whether landing commits carry the index (it is in the target's tree)."""
        if self.index_in_repo is None or not commit:
            return False
        if self._index_tracked is None:
            path = self.index_in_repo
            found = objects.entries_at(self.root, commit, [path])  # in process, else git says
            self._index_tracked = (
                found[path] is not None
                if found is not None
                else objects.read(self.root, [f"{commit}:{path}"])[0] is not None
            )
        return self._index_tracked

    def cleanup(self, entries: Sequence[QueueEntry], trees: Mapping[Path, str | None]) -> None:
        """Remove the tickets' worktrees and branches, unless a branch moved on since it was
        queued or is checked out somewhere that is not sage's. A worker slot that still has the
        branch checked out is sage's and stays, on the branch's commit (its next ticket switches
        it). The branches are compared and deleted in process where git's files allow it, else
        in one git call; one more prunes the worktrees' registrations."""
        mine, slots = self.worktrees_dir.resolve(), (self.worktrees_dir / SLOTS_DIR).resolve()
        doomed: dict[str, tuple[QueueEntry, list[Path], list[Path]]] = {}  # worktrees, slots
        for entry in entries:
            ref = f"refs/heads/{entry.branch}"
            held = {path: path.resolve().parent for path, branch in trees.items() if branch == ref}
            if ref != self.ref and all(parent in (mine, slots) for parent in held.values()):
                doomed[ref] = (entry, [p for p, parent in held.items() if parent == mine],
                               [p for p, parent in held.items() if parent == slots])  # fmt: skip
        if not doomed:
            return
        # and each ticket's kept previous attempt, where there is one (told to git only where
        # it is: git would lock each ref it is told to delete, there or not)
        refs: dict[str, str | None] = {ref: entry.head for ref, (entry, _, _) in doomed.items()}
        previous = {f"{PREVIOUS}{entry.ticket_id}": None for entry, _, _ in doomed.values()}
        gone = git.delete_refs(self.root, {**refs, **previous})  # in process: no git to start
        if gone is not None:
            doomed = {ref: held for ref, held in doomed.items() if gone[ref]}
            return self._cleaned(doomed)
        refs.update((ref, None) for ref in previous if git.ref_exists(self.root, ref))
        if git.run(self.root, "update-ref", "--stdin", input=_deletions(refs)).returncode:
            # all or nothing: some branch moved on, so take them one by one
            doomed = {
                ref: held
                for ref, held in doomed.items()
                if git.run(self.root, "update-ref", "-d", ref, held[0].head).returncode == 0
            }
        self._cleaned(doomed)

    def _cleaned(self, doomed: Mapping[str, tuple[QueueEntry, list[Path], list[Path]]]) -> None:
        """The worktrees that held the deleted branches removed, the slots left on their
        commits."""
        for ref, (entry, holders, in_slots) in doomed.items():
            for path in holders:
                shutil.rmtree(path, ignore_errors=True)
            for path in in_slots:  # on a branch now gone: left on its commit instead
                admin = git.linked_git_dir(path)
                if admin is not None:
                    git.detach_head(self.root, admin / "HEAD", ref, entry.head,
                                    message="sage: its branch landed")  # fmt: skip
        if any(holders for _, holders, _ in doomed.values()):
            git.run(self.root, "worktree", "prune")

    def tidy(self, landed: Iterable[QueueEntry] = ()) -> None:
        """The branches and worktrees of what landed here since the last tidy (`batch_cleanup`)
        and of `landed` (by another process: a stream's lander), each once."""
        entries = list({e.seq: e for e in (*self._untidy, *landed)}.values())
        if entries:
            self.cleanup(entries, git.checkouts(self.root))
            self._untidy = []

    def recover(self) -> list[Landed]:
        """What a crash left: first the checkout update under way, finished (or CheckoutBehind
        raised: nothing lands on a checkout that is behind); then the entries left "applying":
        those whose ref moved are finished, the rest queued again. (Only a pass holding the
        queue's lock writes the record: none there, nothing to catch up, no lock to take.)"""
        warnings = self.catch_up(git.checkouts(self.root)) if self.record.exists() else ()
        applying = [e for e in self.entries.active() if e.status == Status.APPLYING]
        if not applying:
            return []
        head = self.target_head()
        moved = [e for e in applying if e.new_target and self._reached(e.new_target, head)]
        self.entries.requeue([e for e in applying if e not in moved])
        if not moved:
            return []
        trees = git.checkouts(self.root)
        top = next((e for e in moved if e.new_target == head), None)
        if top is None or top.old_target is None:  # built upon since: the checkout followed
            return self.finish(moved, trees, warnings)
        # Nothing moved the ref since: the crash may have come before the checkout followed.
        outcomes = self.after_move(moved, top.old_target, head, trees, warnings)
        if self.behind is not None:
            raise self.behind
        return [o for o in outcomes if isinstance(o, Landed)]

    def catch_up(self, trees: Mapping[Path, str | None]) -> tuple[str, ...]:
        """Finish a checkout update a pass left unfinished; its warnings. CheckoutBehind if it
        still cannot be finished."""
        with self._index_held():
            followed = checkout.resume(self.record, trees, merges=self.merges)
        if followed is None:
            return ()
        if followed.behind:
            applying = [e for e in self.entries.active() if e.status == Status.APPLYING]
            raise self._behind(applying, followed)
        return followed.warnings

    def _reached(self, commit: str, head: str) -> bool:
        return commit == head or git.is_ancestor(self.root, commit, head)


def _deletions(refs: Mapping[str, str | None]) -> str:
    """`git update-ref --stdin`'s script deleting each ref (at its old value, where given)."""
    return "".join(f"delete {ref} {old or ''}".rstrip() + "\n" for ref, old in refs.items())


def _landed(entries: Sequence[QueueEntry]) -> list[QueueEntry]:
    """The entries whose target moved to their `new_target`, as the archive keeps them."""
    return [
        replace(e, status=Status.LANDED, landed_commit=e.new_target,
                landed_at=e.landed_at or now())
        for e in entries
    ]  # fmt: skip


def completed_blob(blob: bytes, change: StateChange) -> bytes | None:
    """The index file's content with `change` recorded; None if it is not an index. The blob
    this wrote last is kept with its document: the next landing's index is that blob unless
    something else changed it, and parsing it again (every object checked for duplicate keys)
    is most of a landing's cost at 50k tickets. The document is a copy that shares what the
    change leaves alone (`written_with`): never changed, so the user's index, once the checkout
    follows, can be known by it too (`last_index`)."""
    with _LAST_LOCK:  # taken, not shared: its texts are changed below
        last = _LAST.pop() if _LAST and _LAST[-1][0] == blob else None
    if last is None:
        try:
            before = index_document(blob)
        except (UnicodeDecodeError, SageError):
            return None  # not valid (a conflict, a hand edit): the run's state says COMPLETED
        rendered: dict[int, str] = {}
    else:
        _, before, rendered = last
    written, document = written_with(before, [change], rendered)
    with _LAST_LOCK:
        _LAST[:] = [(written, document, rendered)]
    return written


def last_index() -> tuple[bytes, IndexDocument] | None:
    """The index blob `completed_blob` wrote last, and its document."""
    with _LAST_LOCK:
        return (_LAST[-1][0], _LAST[-1][1]) if _LAST else None


# The last blob written, its document and each ticket's text in it (`files.dumps`): one.
_LAST: list[tuple[bytes, IndexDocument, dict[int, str]]] = []
_LAST_LOCK = threading.Lock()


def checkout_record(queue_dir: Path, target: str) -> Path:
    """Where the checkout update of `target` under way is recorded."""
    return queue_dir / f"checkout-{urllib.parse.quote(target, safe='')}.json"


def recorded_targets(queue_dir: Path) -> list[str]:
    """The targets whose checkout update a dead process left recorded."""
    found = sorted(queue_dir.glob("checkout-*.json"))
    return [urllib.parse.unquote(p.stem.removeprefix("checkout-")) for p in found]


def merge_index(mine: bytes, base: bytes, theirs: bytes) -> checkout.Merged:
    """The user's uncommitted index and a landing's (`tickets.merge_index`); one that is not
    valid JSON is merged as text instead."""
    merged = tickets.merge_index(mine, base, theirs)
    if merged is None:
        raise ValueError("not a valid index: merged as text")
    return checkout.Merged(merged)


def _inside(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def _detail(outcomes: Sequence[Outcome]) -> str:
    return next(
        (o.detail for o in outcomes if isinstance(o, Rejected)), "an entry before it is blocked"
    )
