"""`sage stream`'s control loop: dispatch ready tickets to worker slots, act on what comes back.

The main thread decides; worker threads run tickets; one lander lands (`sage.lib.lander`: a
process of its own where it can, else a thread).
Each ticket's phase lives in the run's `Ledger`, written by this loop alone; the others reach it
through the `Inbox`. What happens after an exit or a rejected landing is `sage.lib.policy`'s call.
Preparing a run (the index read once, recovery, the ledger seeded) is `sage.lib.runs`.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

from sage.lib import collisions, policy, worktrees
from sage.lib.books import Books
from sage.lib.errors import SageError, message_of
from sage.lib.events import Journal, RunSummary, summarize
from sage.lib.inbox import (
    Finished,
    Inbox,
    LandedMsg,
    LanderBusy,
    LanderFailed,
    Message,
    PassDone,
    RejectedMsg,
    Released,
)
from sage.lib.lander import Lander, Landings
from sage.lib.ledger import Phase, Slots
from sage.lib.tickets import Ticket, TicketStore
from sage.lib.workers import Outcome, Resolve, WorkerResult

if TYPE_CHECKING:
    from pathlib import Path

    from sage.lib.executors import Executor
    from sage.lib.queue import QueueEntry
    from sage.lib.runs import RunPlan

POLL = 0.25  # the longest the loop sleeps without news (it then looks at Ctrl+C presses)
RECONCILE = 1.0  # while tickets wait to land and the lander is idle, look at the queue this often
Confirm = Callable[[Ticket], str]  # "yes" | "no" | "skip"
ACTIVE = (Phase.RUNNING, Phase.COLLECTING)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamOptions:
    workers: int
    target_branch: str
    worker: tuple[str, ...] = ()
    timeout: float = 0.0
    retries: int = 2
    on_error: str = "skip"
    schedule: str = "dynamic"
    verify: tuple[str, ...] = ()
    verify_batch: bool = True
    backoff: float = 1.0
    max_attempts: int = 3
    lock_timeout: float = 60.0
    verify_timeout: float = 0.0
    retry_deferred: bool = False
    slow_start: bool = False  # one worker until an attempt succeeds, then one more per success
    max_cost: float = 0.0  # USD the agents may report spending before nothing new starts; 0: none
    on_conflict: str = "auto"  # resolve | redo | auto (resolve for agents, redo for a "command")

    @property
    def limits(self) -> policy.Limits:
        return policy.Limits(
            retries=self.retries, max_attempts=self.max_attempts, backoff=self.backoff
        )


class Clock(Protocol):
    def now(self) -> float: ...
    def wait(self, inbox: Inbox, timeout: float) -> Message | None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def wait(self, inbox: Inbox, timeout: float) -> Message | None:
        return inbox.get(min(timeout, POLL))


class Interrupts:
    """Ctrl+C presses, counted by the signal handler. The handler runs between two bytecodes of
    the main thread, maybe while that holds a lock, so it must not take one: the loop acts on
    the count within a quarter of a second."""

    def __init__(self) -> None:
        self.presses = 0

    def press(self) -> None:
        self.presses += 1


class Stream:
    """One run over a prepared plan; `run()` returns its summary."""

    def __init__(
        self, plan: RunPlan, options: StreamOptions, journal: Journal, *, queue: Landings,
        executor: Executor, store: TicketStore, confirm: Confirm | None = None,
        clock: Clock | None = None, rng: random.Random | None = None,
        interrupts: Interrupts | None = None, own_queue: Callable[[], Landings] | None = None,
    ) -> None:  # fmt: skip
        """`own_queue`: the lander may land in a process of its own, with the queue this
        makes there (see `sage.lib.lander`)."""
        self.plan, self.options, self.journal = plan, options, journal
        self.ledger, self.dispatcher = plan.ledger, plan.dispatcher
        self.queue, self.executor, self.store, self.confirm = queue, executor, store, confirm
        self.clock, self.rng = clock or RealClock(), rng or random.Random()
        self.interrupts = interrupts or Interrupts()
        self.inbox = Inbox()
        self.lander = Lander(queue, self.inbox, own_queue=own_queue, follow=store.follow)
        # A slot's worktree is busy until its work is collected, though its process is gone and
        # the next ticket may start: a few spare slots, the lowest free first (made only while
        # no slot is about to be free, see `_room`).
        self.slots = Slots(options.workers + max(1, options.workers // 2))
        self.books = Books(
            run_id=plan.run_id, ledger=plan.ledger, dispatcher=plan.dispatcher, store=store,
            journal=journal, queue=queue, clock=self.clock, limits=options.limits,
            workers=options.workers, on_error=options.on_error, rng=self.rng,
            live=1 if options.slow_start else 0, on_conflict=options.on_conflict,
        )  # fmt: skip
        self.interrupted = self.lander_failed = False
        self._told_apart = 0
        # Landings the tickets running then are still to hear of: (ticket, commit, running).
        self._to_warn: list[tuple[str, str, set[str]]] = []
        self._heard: set[str] = set()  # the target's heads so far: landings heard, first base
        self._spent_usd = 0.0
        self._landed: list[QueueEntry] = []  # for the tidy at the end
        self._last_pass = 0.0
        self._asked_seconds = 0.0  # waiting for answers at the prompt: not the run's time

    @property
    def run_id(self) -> str:
        return self.plan.run_id

    def run(self) -> RunSummary:
        started = self.clock.now()
        options = self.options
        self.lander.start()  # first: it may fork, and forks only while no other thread runs
        self.journal.emit("run-started", workers=options.workers, run_id=self.run_id,
                          tickets=self.dispatcher.unfinished,
                          target=options.target_branch)  # fmt: skip
        if self.ledger.count(Phase.LANDING):
            self.lander.wake()
        try:
            self._loop()
        finally:
            self._finish()
        summary = summarize(self.ledger, run_id=self.run_id, workers=self.options.workers,
                            wall=self.clock.now() - started, counts=self.books.counts,
                            stop_reason=self.books.stop_reason, unusable=self.books.unusable,
                            interrupted=self.interrupted,
                            prompt=self._asked_seconds)  # fmt: skip
        self.journal.emit("run-finished", **summary.as_dict())
        return summary

    def _loop(self) -> None:
        while True:
            self._take_interrupts()
            self.books.release_due()
            if self.books.stop_reason is None:
                self._fill()  # what a landing unblocked starts before the running are warned
            self._warn_running()
            self._reconcile_soon()
            if self._idle():
                return
            message = self.clock.wait(self.inbox, self._wait())
            if message is not None:
                self._handle(message)

    def _idle(self) -> bool:
        if self.ledger.count(*ACTIVE):
            return False
        landing = [r for r in self.ledger.runs(Phase.LANDING) if not r.held]
        books = self.books
        if books.killing or self.lander_failed or (books.stop_reason and not landing):
            return True
        waiting = self.ledger.count(Phase.DELAYED, Phase.PARKED)
        return not landing and not waiting and not len(self.dispatcher)

    def _wait(self) -> float:
        """Seconds until something is due (a retry, a reconciliation); the clock polls sooner."""
        due = self.ledger.next_due()
        if self._may_reconcile():
            due = min(due or math.inf, self._last_pass + RECONCILE)
        return math.inf if due is None else max(0.0, due - self.clock.now())

    # ---- starting work -------------------------------------------------------------------

    def _fill(self) -> None:
        busy = self.ledger.count(*ACTIVE, Phase.LANDING)
        if busy and (self.options.schedule == "batch" or self.confirm is not None):
            # The seed's waves: the next batch starts when the whole wave has landed. Asking:
            # the next question comes once the last ticket's outcome has been shown.
            return
        while self._room() and self.books.stop_reason is None:
            ticket = self.dispatcher.pop()
            self._kept_apart()
            if ticket is None:
                return
            # A ticket queued by a dead run is in the ready set too: it may pop while landing.
            if self.ledger.phase(ticket.id) == Phase.WAITING and self._ask(ticket):
                self._start(ticket)

    def _kept_apart(self) -> None:
        """Say once which ticket waits for which, because their `files` overlap."""
        waits = self.dispatcher.waits
        for tid, held in waits[self._told_apart :]:
            self.journal.emit("kept-apart", tid, by=held)
        self._told_apart = len(waits)

    def _room(self) -> bool:
        collecting = self.ledger.count(Phase.COLLECTING)
        if self.options.max_cost and collecting:
            return False  # what the attempt just ended cost is not known yet
        if not self.slots.free or self.ledger.count(Phase.RUNNING) >= self.books.live:
            return False
        return not (collecting and self._slot_to_make())

    def _slot_to_make(self) -> bool:
        """The free slot a ticket would take has no worktree yet. While one is collecting, its
        slot is free in a moment: sooner than a checkout of the repository and its setup (an
        `npm ci`) for a spare slot, which a first run would make for nothing."""
        where = self._slot_worktree
        return where is not None and not where(self.slots.next()).exists()

    @property
    def _slot_worktree(self) -> Callable[[int], Path] | None:
        """Where a slot's worktree is: the local executor's; None for one with no slots."""
        return getattr(self.executor, "worktree", None)

    def _ask(self, ticket: Ticket) -> bool:
        record = self.ledger[ticket.id]
        if self.confirm is None or record.attempt > 1:
            return True
        self.journal.emit("asked", ticket.id, title=ticket.title, priority=ticket.priority)
        asked = self.clock.now()
        answer = self.confirm(ticket)
        seconds = self.clock.now() - asked
        self._asked_seconds += seconds
        self.journal.emit("answered", ticket.id, answer=answer, seconds=round(seconds, 3))
        if answer == "no":
            self.books.stop("stopped at the prompt")
            self.dispatcher.requeue(ticket.id)
        elif answer == "skip":
            self.ledger.move(ticket.id, Phase.SKIPPED, reason="skipped at the prompt")
            self.books.block_dependents(ticket.id)
        return answer == "yes"

    def _start(self, ticket: Ticket) -> None:
        record = self.ledger[ticket.id]
        if not record.claimed:
            self.store.transition([(ticket.id, "IN_PROGRESS")], run_id=self.run_id,
                                  reason=f"started by run {self.run_id}")  # fmt: skip
        base = self.books.head or self.queue.head()
        if not self._heard:
            self._heard.add(base)  # where the first tickets start: before every landing
        slot = self.slots.take(ticket.id)
        self.dispatcher.hold(ticket.id)  # overlapping `files` wait until it lands or is deferred
        resolve = record.resolve if isinstance(record.resolve, Resolve) else None
        job = self.plan.job(ticket, attempt=record.attempt, base=base, slot=slot, resolve=resolve)
        record.resolve, record.resolved = None, record.resolved or resolve is not None
        self.ledger.move(ticket.id, Phase.RUNNING, slot=slot, claimed=True, base=base,
                         started_at=self.clock.now())  # fmt: skip
        self.journal.emit("started", ticket.id, attempt=record.attempt, base=base,
                          log=str(job.log), worker=job.worker_name, slot=slot,
                          title=ticket.title, mode="resolve" if resolve else "run")  # fmt: skip
        land_attempts, title = record.land_attempts, ticket.title

        def done(result: WorkerResult) -> None:
            self._on_done(result, title=title, land_attempts=land_attempts)

        self.executor.submit(job, done, lambda tid: self.inbox.put(Released(ticket_id=tid)))

    def _on_done(self, result: WorkerResult, *, title: str, land_attempts: int) -> None:
        """In the worker's thread: queue good work right away, then tell the main loop."""
        entry = None
        if result.ok and not self.inbox.killing.is_set():
            try:
                entry = self.queue.enqueue(
                    ticket_id=result.ticket_id, title=title, branch=result.branch,
                    base=result.base, worker=result.worker_name, attempts=land_attempts,
                    head=result.head or None,
                )  # fmt: skip
            except Exception as exc:  # a value for the main loop: a lost result hangs the run
                detail = f"could not queue its commits: {message_of(exc)}"
                result = replace(result, outcome=Outcome.ERROR, detail=detail)
        self.inbox.put(Finished(result=result, entry=entry))

    # ---- what comes back -----------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        books = self.books
        match message:
            case Released(ticket_id=tid):
                self._released(tid)
            case Finished(result=result, entry=entry):
                self._finished(result, entry)
            case LandedMsg(outcome=landed):
                tid = landed.entry.ticket_id
                if books.landed(tid, landed.commit):
                    self._landed.append(landed.entry)
                    self.slots.landed(tid, self.ledger[tid].slot)
                    running = set(self.ledger.ids(Phase.RUNNING))  # the tickets it may surprise
                    self._to_warn.append((tid, landed.commit, running))
                for warning in landed.warnings:  # the user's edits carried over the update
                    self.journal.emit("warning", tid, reason=warning)
            case RejectedMsg(outcome=rejected):
                books.rejected(rejected)
            case LanderFailed(error=error):
                self.journal.emit("warning", reason=f"commit queue: {error.message}")
                self.lander_failed = True
                books.stop(f"the commit queue failed: {error.message}")
            case LanderBusy(error=error):
                self._last_pass = self.clock.now()
                self.journal.emit("warning", reason=f"{error.message}; trying again")
            case PassDone(pending=pending):
                self._last_pass = self.clock.now()
                books.reconcile(pending)

    def _released(self, tid: str) -> None:
        """The worker's process is gone: its slot takes the next ticket while its work is
        collected and queued."""
        record = self.ledger[tid]
        if record.phase == Phase.RUNNING:
            self.ledger.move(tid, Phase.COLLECTING)
            self.journal.emit("exited", tid, slot=record.slot)

    def _finished(self, result: WorkerResult, entry: QueueEntry | None) -> None:
        tid, record = result.ticket_id, self.ledger[result.ticket_id]
        self.slots.give_back(record.slot)  # held until its work was collected (see `_released`)
        record.worker_seconds += result.seconds
        record.setup_seconds += result.setup_seconds
        usage = result.usage
        if usage is not None:
            record.spent(usage.input_tokens + usage.output_tokens, usage.cost_usd or 0.0)
            self._check_cost(usage.cost_usd or 0.0)
        self.journal.emit("finished", tid, outcome=str(result.outcome), slot=record.slot,
                          seconds=round(result.seconds, 3), returncode=result.returncode,
                          detail=result.detail, setup_seconds=round(result.setup_seconds, 3),
                          **_usage(result))  # fmt: skip
        if record.phase == Phase.LANDED:
            return  # the lander read the entry from disk and landed it before this message
        if self.books.killing:
            if entry is not None:
                self.queue.discard(entry, "killed by a second Ctrl+C")
            return self.books.give_back(tid, "killed by a second Ctrl+C")
        if entry is None:
            return self.books.exited(result)
        self.books.queued(entry, result)
        self.lander.wake()

    def _warn_running(self) -> None:
        """Tell running tickets whose work so far touches what just landed (see collisions)."""
        for landed, commit, then in self._to_warn:
            self._warn_of(landed, commit, then)
            self._heard.add(commit)
        self._to_warn.clear()

    def _warn_of(self, landed: str, commit: str, then: set[str]) -> None:
        """Those of `then` (running when it landed, not started on it since) still running."""
        where, repo = self._slot_worktree, self.plan.repo
        if where is None or repo is None:
            return
        older = self._heard
        running = [
            (r, slot) for r in self.ledger.runs(Phase.RUNNING)
            if r.ticket_id in then and (slot := r.slot) is not None
            and not collisions.based_on(repo, r.base, commit, older)  # started on it: no news
        ]  # fmt: skip
        if not running:
            return
        files = collisions.landed_files(repo, commit)
        for record, slot in running:
            worktree, branch = where(slot), worktrees.branch_for(record.ticket_id)
            shared = collisions.work_so_far(worktree, record.base, files, branch=branch)
            if shared:
                collisions.warn(worktree, landed=landed, commit=commit, files=shared)
                self.journal.emit("may-conflict", record.ticket_id, landed=landed,
                                  files=sorted(shared))  # fmt: skip

    def _check_cost(self, cost: float) -> None:
        """`--max-cost`: once the agents' reported cost reaches it, nothing new starts."""
        self._spent_usd += cost  # kept as it goes: not a pass over every ticket per attempt
        limit, spent = self.options.max_cost, self._spent_usd
        if limit and spent >= limit:
            self.books.stop(f"the cost limit is reached: ${spent:.2f} spent of ${limit:.2f}")

    def _reconcile_soon(self) -> None:
        """While tickets wait to land and the lander is idle, look at the queue now and then:
        someone else may have landed (or settled) their entries."""
        if self._may_reconcile() and self.clock.now() - self._last_pass >= RECONCILE:
            self._last_pass = self.clock.now()
            self.lander.wake()

    def _may_reconcile(self) -> bool:
        """Whether a reconciliation is due now and then: a ticket waits to land and is not held
        (a held one waits for the next pass someone else's landing makes), and the lander is
        idle (busy, its news wakes the loop) and alive. The wait (`_wait`) asks the same: a
        reconciliation it waited for that `_reconcile_soon` then refused made the main loop
        spin, a core busy until the running workers ended."""
        landing = self.ledger.runs(Phase.LANDING)
        if not landing or all(r.held for r in landing):
            return False
        return not self.lander.busy and not self.lander_failed

    def _take_interrupts(self) -> None:
        """The first Ctrl+C stops gracefully, the second kills the workers."""
        presses = self.interrupts.presses
        if presses and not self.interrupted:
            self.interrupted = True
            self.books.stop("interrupted (Ctrl+C)", then="press it again to kill the workers")
        if presses >= 2 and not self.books.killing:
            self.books.killing = True
            self.inbox.killing.set()
            killed = self.executor.kill_all()
            self.journal.emit("killed", reason="second Ctrl+C", workers=killed)

    def _finish(self) -> None:
        """Outcomes that arrived while stopping still count (a landing is told when its target
        moves: the pass may fail after that, recording it); then no ticket this run claimed is
        left IN_PROGRESS unless its work waits in the queue."""
        self.lander.closing()  # it ends its pass while the workers' threads end
        self.executor.shutdown()
        self.lander.close()
        for message in self.inbox.drain():
            if isinstance(message, LandedMsg | Finished | Released | LanderFailed):
                self._handle(message)
        self.books.give_back_unsettled()
        try:
            self.queue.tidy(self._landed)  # the landed tickets' branches, at once
        except SageError as exc:  # the next run's sweep removes them
            self.journal.emit("warning", reason=f"landed branches kept: {exc.message}")


def _usage(result: WorkerResult) -> dict[str, object]:
    usage = result.usage
    if usage is None:
        return {}
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cost_usd": usage.cost_usd}  # fmt: skip
