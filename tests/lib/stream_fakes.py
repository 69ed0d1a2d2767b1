"""A stream driven in-process: a scripted executor, a scripted commit queue and a fake clock.

The clock is a discrete-event simulation: when the loop would wait and nothing is in its inbox,
time jumps to the next scripted worker exit (or by the loop's timeout), so a test of retries
with minutes of backoff runs in milliseconds. Git is not involved at all: what is tested here
is the control loop's bookkeeping; the subprocess tests in tests/stream run the real thing.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sage.lib import graph as dag
from sage.lib.events import Journal, RunSummary
from sage.lib.inbox import Inbox, Message
from sage.lib.queue import Landed, QueueEntry, Rejected
from sage.lib.runs import RunPlan, seed_ledger
from sage.lib.scheduler import Dispatcher
from sage.lib.stream import Interrupts, Stream, StreamOptions
from sage.lib.tickets import IndexWrite, TicketStore
from sage.lib.workers import Outcome, Usage, WorkerJob, WorkerResult


@dataclass(frozen=True)
class Attempt:
    """One scripted worker attempt: how it ends and how long it takes (fake seconds)."""

    outcome: str = Outcome.OK
    seconds: float = 1.0
    retry_after: float | None = None
    detail: str = ""
    usage: Usage | None = None


OK = Attempt()


class FakeClock:
    def __init__(self, executor: FakeExecutor) -> None:
        self.t = 0.0
        self.executor = executor
        self.at: list[tuple[float, Callable[[], None]]] = []  # scripted moments

    def now(self) -> float:
        return self.t

    def wait(self, inbox: Inbox, timeout: float) -> Message | None:
        message = inbox.get(0.0) or inbox.get(0.002)  # the lander thread may be mid-pass
        if message is not None:
            return message
        target = self.t + min(timeout, 3600.0)
        nxt = self.executor.next_exit()
        if nxt is not None:
            target = min(target, nxt)
        for when, action in sorted(self.at, key=lambda pair: pair[0]):
            if when <= target:
                target = max(self.t, when)
                self.at.remove((when, action))
                self.t = target
                action()
                return None
        self.t = target
        self.executor.deliver(self.t)
        return inbox.get(0.0)


class FakeExecutor:
    """Jobs finish at `start + seconds` of fake time, with the scripted outcome of that attempt."""

    def __init__(self, script: dict[str, list[Attempt]]) -> None:
        self.script = script
        self.clock: FakeClock | None = None
        self.running: list[tuple[float, WorkerJob, Attempt, Any, Any]] = []
        self.submitted: dict[str, int] = {}
        self.jobs: list[WorkerJob] = []
        self.starts: list[tuple[float, str, int]] = []  # (time, ticket, slot)
        self.kills = 0

    def submit(self, job: WorkerJob, done: Any, released: Any = None) -> None:
        assert self.clock is not None
        attempt = self._attempt(job)
        self.jobs.append(job)
        self.starts.append((self.clock.t, job.ticket.id, job.slot))
        self.running.append((self.clock.t + attempt.seconds, job, attempt, done, released))

    def _attempt(self, job: WorkerJob) -> Attempt:
        """The ticket's next scripted attempt (the last one repeats); throttled attempts count
        here although the stream does not count them."""
        tries = self.script.get(job.ticket.id, [OK])
        n = self.submitted.get(job.ticket.id, 0)
        self.submitted[job.ticket.id] = n + 1
        return tries[min(n, len(tries) - 1)]

    def next_exit(self) -> float | None:
        return min((r[0] for r in self.running), default=None)

    def deliver(self, now: float) -> None:
        due = sorted((r for r in self.running if r[0] <= now), key=lambda r: r[0])
        for run in due:
            self.running.remove(run)
            self._finish(*run)

    def _finish(
        self, at: float, job: WorkerJob, attempt: Attempt, done: Any, released: Any
    ) -> None:
        if attempt.outcome == Outcome.OK and released:
            released(job.ticket.id)
        done(_result(job, attempt))

    def kill_all(self) -> int:
        killed = len(self.running)
        for _, job, _attempt, done, _released in list(self.running):
            done(_result(job, Attempt(outcome=Outcome.KILLED, detail="killed")))
        self.running.clear()
        self.kills += killed
        return killed

    def shutdown(self) -> None:
        assert not self.running, "the stream stopped with workers still running"


def _result(job: WorkerJob, attempt: Attempt) -> WorkerResult:
    return WorkerResult(
        ticket_id=job.ticket.id,
        outcome=attempt.outcome,
        returncode=0,
        seconds=attempt.seconds,
        log=job.log,
        detail=attempt.detail or str(attempt.outcome),
        branch=f"sage/{job.ticket.id}",
        base=job.base,
        head=f"head-{job.ticket.id}-{job.attempt}",
        worker_name=job.worker_name,
        retry_after=attempt.retry_after,
        usage=attempt.usage,
    )


class FakeQueue:
    """Lands every queued entry, or rejects a ticket's landing attempts as scripted
    ("conflict", "verify", "blocked"); writes ticket states through the store, as the real one."""

    def __init__(self, store: TicketStore, rejects: dict[str, list[str]] | None = None) -> None:
        self.store = store
        self.rejects = rejects or {}
        self.entries: dict[int, QueueEntry] = {}
        self.lock = threading.Lock()
        self.landings = 0
        self.passes = 0
        self.hold_passes = False  # a test lands entries "from another process" instead
        self.previous: dict[str, str] = {}

    def head(self) -> str:
        return f"commit-{self.landings}"

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
        with self.lock:
            seq = len(self.entries) + 1
            entry = QueueEntry(
                seq=seq,
                ticket_id=ticket_id,
                title=title,
                branch=branch,
                base=base,
                head=head or "",
                attempts=attempts,
            )
            self.entries[seq] = entry
            return entry

    def process(self, notify: Callable[[Landed], None] | None = None) -> list[Landed | Rejected]:
        with self.lock:
            self.passes += 1
            if self.hold_passes:
                return []
            queued = [e for e in self.entries.values() if e.status == "queued"]
            return [self._apply(e, notify) for e in queued]

    def _apply(self, entry: QueueEntry, notify: Callable[[Landed], None] | None) -> Any:
        kinds = self.rejects.get(entry.ticket_id, [])
        kind = kinds[entry.attempts] if entry.attempts < len(kinds) else None
        if kind == "blocked":
            return Rejected(entry=entry, kind="blocked", detail="your checkout is in the way")
        if kind is not None:  # "conflict" or "conflict:B" (collided with ticket B)
            kind, _, other = kind.partition(":")
            done = replace(entry, status="conflict", attempts=entry.attempts + 1)
            self.entries[entry.seq] = done
            return Rejected(entry=done, kind=kind, files=("shared.txt",), detail=f"{kind}!",
                            collided_with=(other,) if other else ())  # fmt: skip
        landed = self.land(entry)
        if notify:
            notify(landed)
        return landed

    def land(self, entry: QueueEntry) -> Landed:
        """Land one entry (the stream's lander, or a test acting as another process)."""
        self.landings += 1
        commit = f"commit-{self.landings}"
        self.entries[entry.seq] = replace(entry, status="landed", landed_commit=commit)
        self.store.transition([(entry.ticket_id, "COMPLETED")], reason="landed")
        return Landed(entry=self.entries[entry.seq], commit=commit)

    def pending(self) -> list[QueueEntry]:
        with self.lock:
            return [e for e in self.entries.values() if e.status in ("queued", "conflict")]

    def latest(self, ticket_id: str) -> QueueEntry | None:
        mine = [e for e in self.entries.values() if e.ticket_id == ticket_id]
        return mine[-1] if mine else None

    def defer(self, entry: QueueEntry, reason: str) -> QueueEntry:
        with self.lock:
            self.entries[entry.seq] = replace(entry, status="deferred", reason=reason)
        self.store.transition([(entry.ticket_id, "DEFERRED")], reason=reason)
        return self.entries[entry.seq]

    def keep_previous(self, entry: QueueEntry) -> None:
        self.previous[entry.ticket_id] = entry.head

    def warm(self) -> None:
        pass

    def tidy(self, landed: Iterable[QueueEntry] = ()) -> None:
        self.tidied = getattr(self, "tidied", 0) + 1

    def tell_index_writes(self, tell: Callable[[IndexWrite], None]) -> None:
        pass  # it writes no index

    def discard(self, entry: QueueEntry, reason: str | None = None) -> QueueEntry:
        with self.lock:
            self.entries[entry.seq] = replace(entry, status="discarded", reason=reason)
        return self.entries[entry.seq]


@dataclass
class Harness:
    stream: Stream
    executor: FakeExecutor
    queue: FakeQueue
    clock: FakeClock
    interrupts: Interrupts
    store: TicketStore
    events_path: Path
    summary: RunSummary | None = None
    answers: list[str] = field(default_factory=list)

    def run(self) -> RunSummary:
        self.summary = self.stream.run()
        self.stream.journal.close()
        return self.summary

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = [json.loads(line) for line in self.events_path.read_text().splitlines()]
        return [r for r in rows if kind is None or r["event"] == kind]

    def states(self) -> dict[str, str]:
        return {t.id: t.state for t in self.store.load().tickets}


def harness(
    tmp_path: Path,
    tickets: list[dict[str, Any]],
    script: dict[str, list[Attempt]] | None = None,
    *,
    rejects: dict[str, list[str]] | None = None,
    confirm: Callable[[Any], str] | None = None,
    pending: dict[str, QueueEntry] | None = None,
    **options: Any,
) -> Harness:
    for t in tickets:
        t.setdefault("command", ["true"])
    tmp_path.mkdir(parents=True, exist_ok=True)
    index_path = tmp_path / "index.json"
    index_path.write_text(json.dumps({"tickets": tickets}))
    store = TicketStore(index_path)
    index = store.load()
    graph = dag.build(index.tickets)
    dispatcher = Dispatcher(list(index.tickets), graph)
    raw = {e["id"]: e for e in index.raw["tickets"]}
    ledger = seed_ledger(list(index.tickets), dispatcher, pending or {}, raw)
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    defaults: dict[str, Any] = {"workers": 2, "target_branch": "main", "backoff": 1.0}
    opts = StreamOptions(**(defaults | options))
    plan = RunPlan(
        run_id="test-run",
        run_dir=run_dir,
        index_path=index_path,
        tickets=dispatcher.tickets,
        raw=raw,
        dispatcher=dispatcher,
        ledger=ledger,
        worker=opts.worker,
    )
    executor = FakeExecutor(script or {})
    clock = FakeClock(executor)
    executor.clock = clock
    queue = FakeQueue(store, rejects)
    for entry in (pending or {}).values():
        queue.entries[entry.seq] = entry
    journal = Journal(run_dir / "events.jsonl")
    interrupts = Interrupts()
    stream = Stream(
        plan,
        opts,
        journal,
        queue=queue,
        executor=executor,
        store=store,
        confirm=confirm,
        clock=clock,
        interrupts=interrupts,
    )
    import random

    stream.rng = random.Random(7)
    return Harness(
        stream=stream,
        executor=executor,
        queue=queue,
        clock=clock,
        interrupts=interrupts,
        store=store,
        events_path=run_dir / "events.jsonl",
    )
