"""Keeping a run's books: each decision about a ticket applied to its ledger record, the ticket
index, the ready set and the journal together, so that none of them can tell another story.

The stream's main thread owns a `Books`; what to decide is `sage.lib.policy`'s call, and this
module carries the decision out.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from sage.lib import policy
from sage.lib.events import Journal
from sage.lib.ledger import Ledger, Phase
from sage.lib.scheduler import Dispatcher
from sage.lib.tickets import TicketStore
from sage.lib.workers import Outcome, Resolve, WorkerResult

if TYPE_CHECKING:
    from sage.lib.lander import Landings
    from sage.lib.queue import QueueEntry, Rejected


class Clock(Protocol):
    def now(self) -> float: ...


@dataclass(slots=True, kw_only=True)
class Books:
    run_id: str
    ledger: Ledger
    dispatcher: Dispatcher
    store: TicketStore
    journal: Journal
    queue: Landings
    clock: Clock
    limits: policy.Limits
    workers: int  # as asked: the live limit never grows past it
    on_error: str = "skip"
    rng: random.Random | None = None
    stop_reason: str | None = None
    killing: bool = False
    head: str | None = None  # the target's head as of the last landing, if known
    unusable: str = ""  # why the worker cannot run at all, if that stopped the run
    on_conflict: str = "auto"  # resolve | redo | auto: resolve unless the ticket has a "command"
    live: int = 0  # workers allowed at once: rate limits shrink it (0: as many as asked)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.live = self.live or self.workers

    # ---- after a worker ------------------------------------------------------------------

    def exited(self, result: WorkerResult) -> None:
        """A worker attempt ended without work to land."""
        record = self.ledger[result.ticket_id]
        cause = "throttle" if result.outcome == Outcome.THROTTLED else "failure"
        record.wasted(result.seconds, cause)
        record.after = self._landing_overlap(result.ticket_id)
        exit = policy.Exit(outcome=result.outcome, detail=result.detail, failures=record.failures,
                           throttles=record.throttles, parked_seconds=record.parked_seconds,
                           retry_after=result.retry_after, log=str(result.log))  # fmt: skip
        self.decide(result.ticket_id, policy.after_exit(exit, self.limits, self.rng), worker=True)

    def _landing_overlap(self, tid: str) -> str:
        """A ticket landing now whose files overlap `tid`'s: a failure then may be that one's
        missing work, so the retry waits for it to land (or be deferred) instead of a backoff."""
        other = self.dispatcher.clashes_with(tid)
        return other if other and self.ledger.phase(other) == Phase.LANDING else ""

    def _after(self, tid: str) -> None:
        """`tid` landed or was deferred: retries that waited for it are due now."""
        for record in self.ledger.runs(Phase.DELAYED):
            if record.after == tid:
                record.due, record.after = self.clock.now(), ""

    def queued(self, entry: QueueEntry, result: WorkerResult) -> None:
        tid = entry.ticket_id
        self.counts["landings"] += 1
        self.ledger.move(tid, Phase.LANDING, last_seconds=result.seconds)
        self.live = policy.next_live_limit(self.live, self.workers, throttled=False)
        depth = self.ledger.count(Phase.LANDING)
        self.journal.emit("queued", tid, seq=entry.seq, head=result.head, depth=depth)

    # ---- after the queue -----------------------------------------------------------------

    def landed(self, tid: str, commit: str) -> bool:
        """Whether this is news: False when told twice (a pass and a reconciliation, or a
        landing told again with its warnings), or of a ticket not this run's. A ticket waiting
        to run again because its entry looked gone has landed after all: the retry is dropped."""
        if self.ledger.phase(tid) not in (Phase.LANDING, Phase.COLLECTING, Phase.DELAYED):
            return False
        self.ledger.move(tid, Phase.LANDED, held=False, held_for="")
        # Another entry of a stacked batch may still be landing on top of this commit.
        self.head = commit if not self.ledger.count(Phase.LANDING) else None
        freed = self.dispatcher.landed(tid)
        self._after(tid)
        depth = self.ledger.count(Phase.LANDING)
        self.journal.emit("landed", tid, commit=commit, unblocked=freed, depth=depth)
        return True

    def rejected(self, outcome: Rejected) -> None:
        entry, tid = outcome.entry, outcome.entry.ticket_id
        if self.ledger.phase(tid) != Phase.LANDING:
            return
        record = self.ledger[tid]
        rejection = policy.Rejection(kind=outcome.kind, attempts=entry.attempts,
                                     detail=outcome.detail, files=outcome.files,
                                     collided_with=outcome.collided_with)  # fmt: skip
        decision = policy.after_rejection(rejection, self.limits, self.rng)
        if isinstance(decision, policy.Hold):
            if not (record.held and record.held_for == outcome.detail):  # once, not each pass
                self.journal.emit("warning", tid, reason=outcome.detail)
            record.held, record.held_for = True, outcome.detail
            return self.stop(f"{tid} cannot land: {outcome.detail}")
        self.counts["conflicts"] += outcome.kind == "conflict"
        self.journal.emit("conflict" if outcome.kind == "conflict" else "verify-failed", tid,
                          files=list(outcome.files), collided_with=list(outcome.collided_with),
                          detail=outcome.detail, attempts=entry.attempts)  # fmt: skip
        record.land_attempts = entry.attempts
        for other in outcome.collided_with:
            self.dispatcher.learn(tid, other, outcome.files)
        resolving = not isinstance(decision, policy.Defer) and outcome.kind == "conflict"
        resolving = resolving and self._resolves(tid)
        cause = "conflict" if outcome.kind == "conflict" else "verify"
        if resolving:  # the resolve attempt carries this one's work on: not wasted (yet)
            record.carried_seconds += record.last_seconds
        else:
            record.wasted(record.last_seconds, cause)
        if isinstance(decision, policy.Defer):
            self.queue.defer(entry, decision.reason)
            return self.deferred(tid, decision.reason)
        if resolving:
            record.resolve = self._resolve(entry, outcome)
        self.queue.discard(entry)
        self.decide(tid, decision)

    def _resolves(self, tid: str) -> bool:
        """Whether a conflict's next attempt resolves (once) instead of redoing: scripted
        tickets redo by default, since re-running is their resolution."""
        if self.ledger[tid].resolved or self.on_conflict == "redo":
            return False
        return self.on_conflict == "resolve" or not self.dispatcher.tickets[tid].command

    def _resolve(self, entry: QueueEntry, outcome: Rejected) -> Resolve:
        self.queue.keep_previous(entry)
        landed = {t: self.queue.latest(t) for t in outcome.collided_with}
        collided = tuple(
            f"{t}@{e.landed_commit}" if e is not None and e.landed_commit else t
            for t, e in landed.items()
        )
        return Resolve(previous=entry.head, files=outcome.files, collided_with=collided)

    def reconcile(self, pending: frozenset[str]) -> None:
        """Entries landed, deferred or discarded by someone else (a `sage queue process` in
        another terminal): the run moves on instead of waiting for news that never comes."""
        for tid in self.ledger.ids(Phase.LANDING):
            if tid in pending:
                continue
            entry = self.queue.latest(tid)
            if entry is not None and entry.status in ("queued", "applying"):
                continue  # queued after the pass looked: still pending, not gone
            status = entry.status if entry else "missing"
            self.journal.emit("reconciled", tid, status=status)
            if entry is not None and status == "landed":
                self.landed(tid, str(entry.landed_commit))
            elif entry is not None and status == "deferred":
                self.deferred(tid, entry.reason or "deferred by another sage process")
            else:  # discarded or gone: the ticket runs again, as after a rejected landing
                self._again(tid, entry)

    def _again(self, tid: str, entry: QueueEntry | None) -> None:
        record = self.ledger[tid]
        record.land_attempts = entry.attempts if entry else record.land_attempts
        ticket = self.store.load().by_id().get(tid)  # UNPROCESSED if settled elsewhere
        record.claimed = ticket is not None and ticket.state == "IN_PROGRESS"
        why = (entry.reason if entry else None) or "its queue entry is gone"
        delay = policy.backoff(self.limits, max(1, record.land_attempts), self.rng)
        self.decide(tid, policy.Retry(delay=delay, reason=why))

    # ---- carrying out decisions ----------------------------------------------------------

    def decide(self, tid: str, decision: policy.Decision, *, worker: bool = False) -> None:
        record = self.ledger[tid]
        match decision:
            case policy.Retry(delay=delay, reason=reason):
                record.failures += worker
                self.counts["retries"] += 1
                self._delay(tid, Phase.DELAYED, delay, reason, counted=True)
            case policy.Park(delay=delay, reason=reason):
                record.throttles += 1
                record.parked_seconds += delay
                self.counts["throttled"] += 1
                self.live = policy.next_live_limit(self.live, self.workers, throttled=True)
                self._delay(tid, Phase.PARKED, delay, reason, counted=False)
            case policy.Defer(reason=reason):
                self.defer(tid, reason)
            case policy.StopRun(reason=reason) | policy.Hold(reason=reason):
                self.unusable = self.unusable or reason
                self.give_back(tid, f"not its fault: {reason}")
                self.stop(f"{tid}'s worker cannot run: {reason}")

    def _delay(self, tid: str, phase: Phase, delay: float, why: str, *, counted: bool) -> None:
        record = self.ledger[tid]
        self.journal.emit("retry", tid, attempt=record.attempt, delay=delay, reason=why,
                          counted=counted, throttled=phase == Phase.PARKED,
                          workers=self.live, after=record.after)  # fmt: skip
        if self.stop_reason:
            return self.give_back(tid, f"not retried: {self.stop_reason}")
        # Waiting to run again, it holds no files: two retrying tickets whose files overlap
        # would otherwise wait for each other forever. It holds them again when it starts.
        self.dispatcher.release(tid)
        record.after = record.after if phase == Phase.DELAYED else ""
        due = math.inf if record.after else self.clock.now() + delay  # see `_landing_overlap`
        self.ledger.move(tid, phase, due=due, held=False, held_for="")

    def release_due(self) -> None:
        """Retries whose time has come go back into the ready set; none once the run stops."""
        if self.stop_reason:
            for tid in self.ledger.ids(Phase.DELAYED, Phase.PARKED):
                self.give_back(tid, f"not retried: {self.stop_reason}")
            return
        for tid in self.ledger.due(self.clock.now()):
            self.ledger.move(tid, Phase.WAITING)
            self.dispatcher.requeue(tid)

    def defer(self, tid: str, reason: str) -> None:
        self.store.transition([(tid, "DEFERRED")], reason=reason, run_id=self.run_id,
                              fields={tid: {"deferred_reason": reason}})  # fmt: skip
        self.deferred(tid, reason)

    def deferred(self, tid: str, reason: str) -> None:
        """DEFERRED in the index already (by us or by the queue)."""
        self.ledger.move(tid, Phase.DEFERRED, reason=reason)
        self._after(tid)
        self.journal.emit("deferred", tid, reason=reason)
        self.block_dependents(tid)
        if self.on_error == "fail":
            self.stop(f"{tid} was deferred and --on-error is fail")

    def block_dependents(self, tid: str) -> None:
        for child in self.dispatcher.failed(tid):
            if self.ledger.phase(child) == Phase.WAITING:
                self.ledger.move(child, Phase.BLOCKED, blocked_by=tid)
                self.journal.emit("blocked", child, by=tid)

    def give_back(self, tid: str, reason: str) -> None:
        """Back to UNPROCESSED: the ticket did not land and is not at fault."""
        self.dispatcher.release(tid)
        record = self.ledger[tid]
        if record.claimed:
            self.store.transition([(tid, "UNPROCESSED")], reason=reason, run_id=self.run_id)
        self.ledger.move(tid, Phase.RETURNED, reason=reason, claimed=False)
        self.journal.emit("killed" if self.killing else "stopping", tid, reason=reason)

    def stop(self, reason: str, *, then: str = "") -> None:
        """Start nothing new, for `reason` (what the summary and the tickets given back say);
        `then`: what the person watching can do now, for the line that tells it."""
        if self.stop_reason is None:
            self.stop_reason = reason
            running = sorted(self.ledger.ids(Phase.RUNNING))
            extra = {"then": then} if then else {}
            self.journal.emit("stopping", reason=reason, running=running, **extra)

    def give_back_unsettled(self) -> None:
        """At the end: no ticket this run claimed stays IN_PROGRESS unless its work is queued."""
        unsettled = (Phase.WAITING, Phase.DELAYED, Phase.PARKED, Phase.RUNNING, Phase.COLLECTING)
        for record in self.ledger:
            if record.phase in unsettled and record.claimed:
                self.give_back(record.ticket_id, f"not landed: {self.stop_reason or 'ended'}")
