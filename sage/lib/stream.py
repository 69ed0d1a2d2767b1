"""`sage stream`: dispatch ready tickets to workers, land their work through the commit queue."""

from __future__ import annotations

import heapq
import queue as inbox_queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage.lib import executors, git, locks, worktrees
from sage.lib import queue as commit_queue
from sage.lib.errors import SageError
from sage.lib.events import EventKind, Journal, RunSummary
from sage.lib.project import Project
from sage.lib.scheduler import Dispatcher
from sage.lib.tickets import Ticket, TicketStore
from sage.lib.validation import require_no_errors, validate
from sage.lib.workers import WorkerJob, WorkerResult, argv_for, context_text

if TYPE_CHECKING:
    import networkx as nx

MAX_BACKOFF = 60.0
POLL = 0.25  # the longest the loop sleeps without news (it then looks at Ctrl+C presses)
Confirm = Callable[[Ticket], str]  # "yes" | "no" | "skip"


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


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def target_branch(project: Project, configured: str) -> str:
    """The configured branch, else the one checked out at the repository root."""
    if configured:
        name = configured.removeprefix("refs/heads/")
    else:
        name = git.git(project.root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        if not name:
            raise SageError(
                "HEAD is detached: no target branch to land on",
                hint="check out a branch or pass --target BRANCH",
            )
    if git.rev_parse(project.root, f"refs/heads/{name}") is None:
        raise SageError(
            f"target branch {name!r} does not exist (or has no commit yet)",
            hint="create it with a first commit, or pass --target BRANCH",
        )
    return name


def make_queue(
    project: Project, store: TicketStore, options: StreamOptions, run_id: str
) -> commit_queue.CommitQueue:
    return commit_queue.CommitQueue(
        project,
        store,
        target_branch=options.target_branch,
        verify=options.verify,
        verify_batch=options.verify_batch,
        lock_timeout=options.lock_timeout,
        verify_timeout=options.verify_timeout,
        run_id=run_id,
    )


class Stream:
    """One run. The main thread decides; worker threads run tickets; one lander thread lands."""

    def __init__(
        self,
        project: Project,
        options: StreamOptions,
        journal: Journal,
        *,
        run_id: str,
        executor: executors.Executor | None = None,
        confirm: Confirm | None = None,
    ) -> None:
        self.project, self.options, self.journal, self.run_id = project, options, journal, run_id
        self.confirm = confirm
        self.store = TicketStore(project.index_path, lock_timeout=options.lock_timeout)
        self.executor = executor or executors.LocalExecutor(
            project.root, project.worktrees_dir, self._pids_dir, options.workers
        )
        self.queue = make_queue(project, self.store, options, run_id)
        self.inbox: inbox_queue.Queue[tuple[str, Any]] = inbox_queue.Queue()
        self._wake_lander = threading.Event()
        self._lander_done = False
        self.running: dict[str, float] = {}
        self.landing: set[str] = set()
        self.collecting: set[str] = set()  # process exited, work being committed and queued
        self.delayed: list[tuple[float, str]] = []
        self.failures: Counter[str] = Counter()
        self.tempfails: Counter[str] = Counter()
        self.land_attempts: dict[str, int] = {}
        self.completed: dict[str, None] = {}  # landed this run, in order
        self.deferred: dict[str, str] = {}
        self.blocked: dict[str, str] = {}
        self.stop_reason: str | None = None
        self.killing = False
        self.interrupted = False
        self._interrupts = 0
        self.counts: Counter[str] = Counter()
        self.worker_seconds = 0.0
        self.head: str | None = None  # the target's head as of the last landing, if known

    @property
    def _pids_dir(self) -> Path:
        return self.project.locks_dir / "workers"

    # ---- the run -------------------------------------------------------------------------

    def run(self) -> RunSummary:
        hint = "wait for it to finish, or stop it with Ctrl+C; a dead one's lock frees itself"
        with locks.hold(
            self.project.locks_dir / "stream.lock",
            timeout=0,
            what="a sage stream in this repository",
            hint=hint,
        ):
            return self._run()

    def _run(self) -> RunSummary:
        started = time.monotonic()
        self._recover()
        if self.options.retry_deferred:
            self._revive_deferred()
        self.dispatcher = Dispatcher(*self._load())
        (self.project.runs_dir / self.run_id).mkdir(parents=True, exist_ok=True)
        self.journal.emit(
            "run-started",
            workers=self.options.workers,
            run_id=self.run_id,
            tickets=self.dispatcher.unfinished,
            target=self.options.target_branch,
        )
        lander = threading.Thread(target=self._lander, name="sage-lander", daemon=True)
        lander.start()
        if self.landing:
            self._wake_lander.set()
        try:
            self._loop()
        finally:
            self._finish(lander)
        return self._summary(time.monotonic() - started)

    def _load(self) -> tuple[list[Ticket], nx.DiGraph]:
        """The index as recovery left it, checked, with the graph the check built."""
        index = self.store.load()
        report = validate(index, analysis=False)
        require_no_errors(report)
        self.raw = {e["id"]: e for e in index.raw["tickets"]}
        self._sweep(index.tickets)
        return list(index.tickets), report.graph

    def _sweep(self, tickets: tuple[Ticket, ...]) -> None:
        """Worktrees and branches of tickets whose work is recorded as landed (a crash between
        landing and cleanup leaves them) go; anything else is kept."""
        landed = {t.id for t in tickets if t.state == "COMPLETED"} - self.landing
        refs = git.git(self.project.root, "for-each-ref", "--format=%(refname:short)",
                       "refs/heads/sage/")  # fmt: skip
        for branch in refs.splitlines():
            tid = branch.removeprefix("sage/")
            if tid in landed:
                worktrees.remove(self.project.root, self.project.worktrees_dir / tid)
                worktrees.delete_branch(self.project.root, branch)
        # The branch may be gone already (the queue deletes it before the worktree), and the
        # folder too (`git worktree remove` deletes it before the registration).
        trees = self.project.worktrees_dir
        found = set(trees.iterdir()) if trees.is_dir() else set()
        found.update(p for p in git.worktrees(self.project.root) if p.parent == trees)
        for path in sorted(found):
            if path.name in landed:
                worktrees.remove(self.project.root, path)

    def _revive_deferred(self) -> None:
        """--retry-deferred: DEFERRED tickets run again; a branch kept with unlanded work is
        renamed first, so the fresh run cannot overwrite it."""
        deferred = [t.id for t in self.store.load().tickets if t.state == "DEFERRED"]
        for tid in deferred:
            kept = worktrees.keep_unlanded(
                self.project.root,
                worktrees.branch_for(tid),
                self.options.target_branch,
                f"deferred-{self.run_id}",
            )
            self.journal.emit("recovered", tid, retried=True, kept_branch=kept)
        if deferred:
            reason = f"retried by run {self.run_id} (--retry-deferred)"
            self.store.transition(
                [(t, "UNPROCESSED") for t in deferred], run_id=self.run_id, reason=reason
            )

    def _recover(self) -> None:
        """After a crash: finish half-landed work, kill orphaned workers, reset stale tickets."""
        worktrees.repair(self.project.root)
        self.queue.recover()
        killed = executors.kill_stale(self._pids_dir)
        pending = self.queue.pending()
        self.landing = {e.ticket_id for e in pending}
        self.land_attempts.update({e.ticket_id: e.attempts for e in pending})
        stale = [
            t.id
            for t in self.store.load().tickets
            if t.state == "IN_PROGRESS" and t.id not in self.landing
        ]
        for tid in stale:
            worktrees.remove(self.project.root, self.project.worktrees_dir / tid)
            kept = worktrees.keep_unlanded(
                self.project.root,
                worktrees.branch_for(tid),
                self.options.target_branch,
                f"recovered-{self.run_id}",
            )
            self.journal.emit("recovered", tid, kept_branch=kept)
        if stale:
            self.store.transition(
                [(t, "UNPROCESSED") for t in stale],
                run_id=self.run_id,
                reason="recovered: the run that started it ended before it landed",
            )
        if killed or self.landing:
            self.journal.emit("recovered", killed_workers=killed, queued=sorted(self.landing))

    def _loop(self) -> None:
        while True:
            self._take_interrupts()
            self._release_due()
            if self.stop_reason is None:
                self._fill()
            if self._idle():
                return
            try:
                kind, payload = self.inbox.get(timeout=self._wait())
            except inbox_queue.Empty:
                continue
            self._handle(kind, payload)

    def _idle(self) -> bool:
        if self.running or self.collecting:
            return False
        if self.killing or (self.stop_reason and not self.landing):
            return True
        return not self.landing and not self.delayed and not len(self.dispatcher)

    def _wait(self) -> float:
        if self.delayed:
            return max(0.0, min(POLL, self.delayed[0][0] - time.monotonic()))
        return POLL

    # ---- starting work -------------------------------------------------------------------

    def _fill(self) -> None:
        if self.options.schedule == "batch" and (self.running or self.collecting or self.landing):
            return  # the seed's waves: the next batch starts when the whole wave has landed
        while len(self.running) < self.options.workers and self.stop_reason is None:
            ticket = self.dispatcher.pop()
            if ticket is None:
                return
            busy = any(ticket.id in s for s in (self.landing, self.running, self.collecting))
            # A ticket a dead run queued is in the ready set too: it may pop after it landed.
            if busy or ticket.id in self.completed:
                continue
            if self._ask(ticket):
                self._start(ticket)

    def _ask(self, ticket: Ticket) -> bool:
        if self.confirm is None or ticket.id in self.failures:
            return True
        answer = self.confirm(ticket)
        if answer == "no":
            self._stop("stopped at the prompt")
            self.dispatcher.requeue(ticket.id)
        elif answer == "skip":
            for child in self.dispatcher.failed(ticket.id):
                self.blocked[child] = ticket.id
        return answer == "yes"

    def _start(self, ticket: Ticket) -> None:
        if ticket.id not in self.failures and ticket.id not in self.land_attempts:
            self.store.transition(
                [(ticket.id, "IN_PROGRESS")],
                run_id=self.run_id,
                reason=f"started by run {self.run_id}",
            )
        attempt = 1 + self.failures[ticket.id] + self.land_attempts.get(ticket.id, 0)
        target = f"refs/heads/{self.options.target_branch}"
        base = self.head or git.git(self.project.root, "rev-parse", target)
        job = self._job(ticket, attempt, base)
        self.running[ticket.id] = time.monotonic()
        self.journal.emit(
            "started",
            ticket.id,
            attempt=attempt,
            base=base,
            log=str(job.log),
            worker=job.worker_name,
        )
        self.executor.submit(job, self._on_done, self._on_released)

    def _on_released(self, tid: str) -> None:
        self.inbox.put(("released", tid))

    def _on_done(self, result: WorkerResult) -> None:
        """In the worker's thread: queue good work right away, then tell the main loop."""
        entry = None
        if result.ok and not self.killing:
            try:
                entry = self.queue.enqueue(
                    ticket_id=result.ticket_id,
                    title=self.dispatcher.tickets[result.ticket_id].title,
                    branch=result.branch,
                    base=result.base,
                    worker=result.worker_name,
                    attempts=self.land_attempts.get(result.ticket_id, 0),
                    head=result.head or None,
                )
            except Exception as exc:  # a value for the main loop: a lost result hangs the run
                detail = f"could not queue its commits: {_message(exc)}"
                result = replace(result, outcome="error", detail=detail)
        self.inbox.put(("finished", (result, entry)))

    def _job(self, ticket: Ticket, attempt: int, base: str) -> WorkerJob:
        run_dir = self.project.runs_dir / self.run_id
        context = run_dir / f"{ticket.id}.context.md"
        notes_file = self.project.index_path.parent / f"{ticket.id}.md"
        notes = notes_file.read_text(encoding="utf-8") if notes_file.exists() else None
        context.write_text(context_text(ticket, self.raw[ticket.id], notes), encoding="utf-8")
        slot = f"worker-{len(self.running) + 1}"
        return WorkerJob(
            ticket=ticket,
            run_id=self.run_id,
            attempt=attempt,
            base=base,
            argv=argv_for(ticket, self.options.worker),
            timeout=self.options.timeout,
            log=run_dir / f"{ticket.id}.log",
            context_file=context,
            worker_name=slot,
        )

    # ---- results -------------------------------------------------------------------------

    def _handle(self, kind: str, payload: Any) -> None:
        handlers: dict[str, Callable[[Any], None]] = {
            "finished": self._finished,
            "released": self._released,
            "landed": self._landed,
            "rejected": self._rejected,
            "error": self._lander_error,
        }
        if kind in handlers:
            handlers[kind](payload)

    def _released(self, tid: str) -> None:
        """The worker's process is gone: its slot takes the next ticket while its work is
        collected and queued."""
        if self.running.pop(tid, None) is not None:
            self.collecting.add(tid)
            self.journal.emit("exited", tid)

    def _finished(self, done: tuple[WorkerResult, commit_queue.QueueEntry | None]) -> None:
        result, entry = done
        tid = result.ticket_id
        self.running.pop(tid, None)
        self.collecting.discard(tid)
        self.worker_seconds += result.seconds
        self.journal.emit(
            "finished",
            tid,
            outcome=result.outcome,
            seconds=round(result.seconds, 3),
            returncode=result.returncode,
            detail=result.detail,
        )
        if self.killing:
            return self._reset(tid, "killed by a second Ctrl+C")
        if entry is not None:
            return self._queued(entry, result.head)
        if result.outcome == "throttled":
            self.tempfails[tid] += 1
            return self._retry(tid, self.tempfails[tid], result.detail, counted=False)
        self.failures[tid] += 1
        if self.failures[tid] <= self.options.retries:
            return self._retry(tid, self.failures[tid], result.detail, counted=True)
        self._defer(tid, f"{result.detail} (log: {result.log})")

    def _queued(self, entry: commit_queue.QueueEntry, head: str) -> None:
        self.landing.add(entry.ticket_id)
        self.journal.emit(
            "queued", entry.ticket_id, seq=entry.seq, head=head, depth=len(self.landing)
        )
        self._wake_lander.set()

    def _retry(self, tid: str, number: int, why: str, *, counted: bool) -> None:
        delay = min(MAX_BACKOFF, self.options.backoff * 2 ** (number - 1))
        if counted:
            self.counts["retries"] += 1
        self.journal.emit(
            "retry", tid, attempt=number + 1, delay=delay, reason=why, counted=counted
        )
        if self.stop_reason:
            return self._reset(tid, f"not retried: {self.stop_reason}")
        heapq.heappush(self.delayed, (time.monotonic() + delay, tid))

    def _release_due(self) -> None:
        now = time.monotonic()
        while self.delayed and (self.delayed[0][0] <= now or self.stop_reason):
            _, tid = heapq.heappop(self.delayed)
            if self.stop_reason:
                self._reset(tid, f"not retried: {self.stop_reason}")
            else:
                self.dispatcher.requeue(tid)

    def _landed(self, outcome: commit_queue.Landed) -> None:
        tid = outcome.entry.ticket_id
        self.landing.discard(tid)
        self.completed[tid] = None
        self.head = outcome.commit if not self.landing else None  # a batch may still be landing
        freed = self.dispatcher.landed(tid)
        self.journal.emit(
            "landed", tid, commit=outcome.commit, unblocked=freed, depth=len(self.landing)
        )

    def _rejected(self, outcome: commit_queue.Rejected) -> None:
        entry, tid = outcome.entry, outcome.entry.ticket_id
        self.landing.discard(tid)
        if outcome.kind == "blocked":
            self.journal.emit("warning", tid, reason=outcome.detail)
            return self._stop(f"{tid} cannot land: {outcome.detail}")
        if outcome.kind == "conflict":
            self.counts["conflicts"] += 1
        kind: EventKind = "conflict" if outcome.kind == "conflict" else "verify-failed"
        self.journal.emit(
            kind,
            tid,
            files=list(outcome.files),
            collided_with=list(outcome.collided_with),
            detail=outcome.detail,
            attempts=entry.attempts,
        )
        if entry.attempts >= self.options.max_attempts:
            reason = _rejection_reason(outcome)
            self.queue.defer(entry, reason)
            return self._deferred(tid, reason)
        self.queue.discard(entry)
        self.land_attempts[tid] = entry.attempts
        self._retry(tid, entry.attempts, outcome.detail or kind, counted=True)

    def _lander_error(self, error: SageError) -> None:
        self.journal.emit("warning", reason=f"commit queue: {error.message}")
        self._stop(f"the commit queue failed: {error.message}")
        self.landing.clear()

    # ---- ending tickets and runs ---------------------------------------------------------

    def _defer(self, tid: str, reason: str) -> None:
        self.store.transition(
            [(tid, "DEFERRED")],
            reason=reason,
            run_id=self.run_id,
            fields={tid: {"deferred_reason": reason}},
        )
        self._deferred(tid, reason)

    def _deferred(self, tid: str, reason: str) -> None:
        self.deferred[tid] = reason
        self.journal.emit("deferred", tid, reason=reason)
        for child in self.dispatcher.failed(tid):
            self.blocked[child] = tid
            self.journal.emit("blocked", child, by=tid)
        if self.options.on_error == "fail":
            self._stop(f"{tid} was deferred and --on-error is fail")

    def _reset(self, tid: str, reason: str) -> None:
        self.store.transition([(tid, "UNPROCESSED")], reason=reason, run_id=self.run_id)
        self.journal.emit("killed" if self.killing else "stopping", tid, reason=reason)

    def _stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.journal.emit("stopping", reason=reason, running=sorted(self.running))

    def interrupt(self) -> None:
        """Ctrl+C, called from the signal handler: it only counts. The handler runs between
        two bytecodes of the main thread, maybe while that holds a lock, so taking one here
        could deadlock; the loop acts on the count within a quarter of a second."""
        self._interrupts += 1

    def _take_interrupts(self) -> None:
        """The first Ctrl+C stops gracefully, the second kills the workers."""
        if self._interrupts and not self.interrupted:
            self.interrupted = True
            self._stop("interrupted (Ctrl+C); press it again to kill the workers")
        if self._interrupts >= 2 and not self.killing:
            self.killing = True
            killed = self.executor.kill_all()
            self.journal.emit("killed", reason="second Ctrl+C", workers=killed)

    # ---- the lander ----------------------------------------------------------------------

    def _lander(self) -> None:
        while True:
            self._wake_lander.wait()
            self._wake_lander.clear()
            if self._lander_done:
                return
            try:
                self._land_queued()
            except Exception as exc:  # a dead lander would leave the run waiting forever
                error = exc if isinstance(exc, SageError) else SageError(_message(exc))
                self.inbox.put(("error", error))

    def _land_queued(self) -> None:
        """One pass of the queue; landings are reported the moment they are recorded."""
        told: set[int] = set()

        def notify(landed: commit_queue.Landed) -> None:
            told.add(landed.entry.seq)
            self.inbox.put(("landed", landed))

        for outcome in self.queue.process(notify=notify):
            if not isinstance(outcome, commit_queue.Landed):
                self.inbox.put(("rejected", outcome))
            elif outcome.entry.seq not in told:
                self.inbox.put(("landed", outcome))

    def _finish(self, lander: threading.Thread) -> None:
        self._lander_done = True
        self._wake_lander.set()
        lander.join()
        self.executor.shutdown()
        while not self.inbox.empty():  # outcomes that arrived while stopping still count
            kind, payload = self.inbox.get_nowait()
            if kind in ("landed", "finished"):
                self._handle(kind, payload)

    def _summary(self, wall: float) -> RunSummary:
        done = set(self.completed) | set(self.deferred) | set(self.blocked)
        left = sorted(
            t
            for t in self.dispatcher.tickets
            if t not in done and self.dispatcher.tickets[t].state != "COMPLETED"
        )
        summary = RunSummary(
            run_id=self.run_id,
            workers=self.options.workers,
            completed=tuple(self.completed),
            deferred=dict(self.deferred),
            blocked={**self.dispatcher.blocked, **self.blocked},  # from earlier runs too
            wall_seconds=wall,
            worker_seconds=self.worker_seconds,
            commits_landed=len(self.completed),
            conflicts=self.counts["conflicts"],
            retries=self.counts["retries"],
            stopped_early=self.stop_reason is not None and not self.interrupted,
            interrupted=self.interrupted,
            not_started=tuple(left),
        )
        self.journal.emit("run-finished", **summary.as_dict())
        return summary


def _message(exc: Exception) -> str:
    """What went wrong in a thread, for the journal: a write to a full disk, a clobbered path."""
    return exc.message if isinstance(exc, SageError) else f"{type(exc).__name__}: {exc}"


def _rejection_reason(outcome: commit_queue.Rejected) -> str:
    if outcome.kind == "conflict":
        files = ", ".join(outcome.files) or "unknown files"
        other = ", ".join(outcome.collided_with) or "earlier work on the target"
        return f"conflict in {files} with {other} after {outcome.entry.attempts} attempt(s)"
    return f"verify failed after {outcome.entry.attempts} attempt(s): {outcome.detail}"
