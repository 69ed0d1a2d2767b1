"""Which ticket runs next: worker counts, the incremental dispatcher, and a makespan simulator."""

from __future__ import annotations

import copy
import heapq
import math
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sage.lib import graph as dag
from sage.lib import lazy
from sage.lib.errors import UsageError
from sage.lib.tickets import Ticket, quiet_gc

if TYPE_CHECKING:
    import networkx as nx
else:
    nx = lazy.module("networkx")  # imported on first use

MAX_WORKERS = 8
SCHEDULES = ("dynamic", "batch")


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerCount:
    workers: int
    requested: str
    warning: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchStats:
    tickets: int
    workers: int
    batches: int
    per_batch: int
    last_batch: int


def resolve_workers(requested: str | int, ready: int, cpus: int | None = None) -> WorkerCount:
    """`auto` = half the cores, 1..8, never more than the ready tickets; N above 8 warns."""
    text = str(requested).strip().lower()
    if text == "auto":
        half = (cpus if cpus is not None else os.cpu_count() or 2) // 2
        return WorkerCount(workers=max(1, min(MAX_WORKERS, half, max(ready, 1))), requested="auto")
    try:
        count = int(text)
    except ValueError:
        raise UsageError(f"--parallel takes a number or 'auto', not {requested!r}") from None
    if count < 1:
        raise UsageError(f"--parallel must be at least 1, not {count}")
    warning = None
    if count > MAX_WORKERS:
        warning = f"{count} workers is above the recommended maximum of {MAX_WORKERS}"
    return WorkerCount(workers=count, requested=text, warning=warning)


def batch_stats(tickets: int, workers: int) -> BatchStats:
    """The seed's arithmetic: 10 tickets, 3 workers → 4 batches (3, 3, 3, 1)."""
    batches = math.ceil(tickets / workers) if tickets else 0
    last = tickets - (batches - 1) * workers if batches else 0
    return BatchStats(
        tickets=tickets,
        workers=workers,
        batches=batches,
        per_batch=min(workers, tickets),
        last_batch=last,
    )


class Dispatcher:
    """The ready set, kept up to date one landing at a time (cost grows with out-degree only).

    Open tickets (UNPROCESSED / IN_PROGRESS) are scheduled; COMPLETED dependencies count as landed.
    A dependency in any other state (DEFERRED, unknown) blocks the dependent for this run, and
    with it everything that depends on it: `blocked` maps each such ticket to that cause.
    """

    def __init__(self, tickets: Sequence[Ticket], graph: nx.DiGraph) -> None:
        with quiet_gc():
            self._setup(tickets, graph)

    def _setup(self, tickets: Sequence[Ticket], graph: nx.DiGraph) -> None:
        self.tickets = {t.id: t for t in tickets}
        self._graph = graph
        self._dependents = dict(graph.adjacency())  # plain dicts for the per-landing loop
        self.blocked: dict[str, str] = blocked_at_start(self.tickets, graph)
        todo = [tid for tid, t in self.tickets.items()
                if t.state in dag.OPEN_STATES and tid not in self.blocked]  # fmt: skip
        self.runnable: nx.DiGraph = dag.only(graph, todo)  # what this run can do
        self.generations = list(nx.topological_generations(self.runnable))
        order = [tid for level in self.generations for tid in level]
        weights = {tid: self.tickets[tid].weight for tid in todo}
        self.longest = dag.remaining_path(self.runnable, weights, order=order)
        self._waiting: dict[str, int] = {}
        self._heap: list[tuple[tuple[int, float, str], str]] = []
        self._keys = {tid: dag.dispatch_key(self.tickets[tid], self.longest) for tid in todo}
        for tid in todo:
            self._admit(self.tickets[tid])

    def _admit(self, ticket: Ticket) -> None:
        pending = sum(1 for d in set(ticket.dependencies) if self.tickets[d].state != "COMPLETED")
        self._waiting[ticket.id] = pending
        if not pending:
            self._push(ticket.id)

    def _push(self, tid: str) -> None:
        key = self._keys.get(tid)
        if key is None:  # a ticket the constructor did not schedule
            key = self._keys[tid] = dag.dispatch_key(self.tickets[tid], self.longest)
        heapq.heappush(self._heap, (key, tid))

    def copy(self) -> Dispatcher:
        """An independent ready set over the same tickets, for what-if simulations."""
        clone = copy.copy(self)
        clone.blocked, clone._waiting, clone._heap = (
            dict(self.blocked),
            dict(self._waiting),
            list(self._heap),
        )
        return clone

    def __len__(self) -> int:
        return len(self._heap)

    def peek(self) -> Ticket | None:
        return self.tickets[self._heap[0][1]] if self._heap else None

    def pop(self) -> Ticket | None:
        return self.tickets[heapq.heappop(self._heap)[1]] if self._heap else None

    def requeue(self, tid: str) -> None:
        """A ticket that will run again (retry, conflict) goes back into the ready set."""
        self._push(tid)

    def landed(self, tid: str) -> list[str]:
        """Mark a ticket landed; return the dependents it made ready."""
        waiting = self._waiting  # blocked tickets are never in it
        waiting.pop(tid, None)
        freed = []
        for child in self._dependents[tid]:
            left = waiting.get(child)
            if left is not None:
                waiting[child] = left - 1
                if left == 1:
                    self._push(child)
                    freed.append(child)
        return freed

    def failed(self, tid: str) -> list[str]:
        """A ticket that will not land this run: every open descendant is blocked by it."""
        self._waiting.pop(tid, None)
        lost = [d for d in nx.descendants(self._graph, tid) if d in self._waiting]
        for d in lost:
            self.blocked[d] = tid
            del self._waiting[d]
        self._heap = [(k, t) for k, t in self._heap if t not in self.blocked]
        heapq.heapify(self._heap)
        return sorted(lost)

    @property
    def unfinished(self) -> int:
        return len(self._waiting)


def blocked_at_start(tickets: Mapping[str, Ticket], graph: nx.DiGraph) -> dict[str, str]:
    """Open tickets that cannot run: a dependency neither open nor COMPLETED (DEFERRED, unknown),
    or a dependency that is itself blocked. Each maps to the ticket that will not land."""
    usable = (*dag.OPEN_STATES, "COMPLETED")
    blocked: dict[str, str] = {}
    for tid, t in tickets.items():
        if t.state in dag.OPEN_STATES:
            cause = next((d for d in t.dependencies if _state(tickets, d) not in usable), None)
            if cause is not None:
                blocked[tid] = cause
    queue = deque(blocked)
    while queue:
        node = queue.popleft()
        for child in graph.successors(node):
            if child not in blocked and tickets[child].state in dag.OPEN_STATES:
                blocked[child] = blocked[node]
                queue.append(child)
    return blocked


def _state(tickets: Mapping[str, Ticket], tid: str) -> str | None:
    ticket = tickets.get(tid)
    return ticket.state if ticket else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """One ticket in a simulated schedule, in estimate units from the start of the run."""

    ticket: str
    start: float
    finish: float


def simulate(
    tickets: Sequence[Ticket], graph: nx.DiGraph, workers: int, schedule: str = "dynamic"
) -> float:
    """Makespan (in estimate units) of list scheduling with `workers`, dynamic or in waves."""
    return _makespan(_schedule(Dispatcher(tickets, graph), workers, schedule))


def timeline(
    tickets: Sequence[Ticket], graph: nx.DiGraph, workers: int, schedule: str = "dynamic"
) -> list[Slot]:
    """The simulated schedule behind `simulate`: when each ticket would start and finish."""
    slots = _schedule(Dispatcher(tickets, graph), workers, schedule)
    return [Slot(ticket=tid, start=start, finish=finish) for start, finish, tid in slots]


def workers_of(slots: Sequence[Slot]) -> dict[str, int]:
    """Which simulated worker (0 …) runs each ticket: the first one free when it starts."""
    free_at: list[float] = []
    found = {}
    for slot in sorted(slots, key=lambda s: s.start):  # stable: dispatch order at a tie
        worker = next((n for n, t in enumerate(free_at) if t <= slot.start), len(free_at))
        if worker == len(free_at):
            free_at.append(0.0)
        free_at[worker] = slot.finish
        found[slot.ticket] = worker
    return found


_Run = list[tuple[float, float, str]]  # (start, finish, ticket) in dispatch order


def _makespan(slots: _Run) -> float:
    return max((finish for _, finish, _ in slots), default=0.0)


def _schedule(plan: Dispatcher, workers: int, schedule: str) -> _Run:
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    return _batches(plan, workers) if schedule == "batch" else _dynamic(plan, workers)


def _dynamic(plan: Dispatcher, workers: int) -> _Run:
    """A free worker takes the next ready ticket the moment it is free."""
    slots: _Run = []
    clock, running = 0.0, list[tuple[float, str]]()  # running: heap of (finish time, id)
    while len(plan) or running:
        while len(running) < workers and (ticket := plan.pop()) is not None:
            finish = clock + ticket.weight
            heapq.heappush(running, (finish, ticket.id))
            slots.append((clock, finish, ticket.id))
        clock, done = heapq.heappop(running)
        plan.landed(done)
    return slots


def _batches(plan: Dispatcher, workers: int) -> _Run:
    """The seed's waves: up to `workers` ready tickets start together; the next batch starts when
    the slowest of them has finished."""
    slots: _Run = []
    clock = 0.0
    while len(plan):
        batch = [(t.id, t.weight) for _ in range(min(workers, len(plan))) if (t := plan.pop())]
        slots += [(clock, clock + weight, tid) for tid, weight in batch]
        clock += max(weight for _, weight in batch)
        for tid, _ in batch:
            plan.landed(tid)
    return slots


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """`sage plan`: what a run with `workers` would do, in estimate units (minutes or tickets)."""

    workers: WorkerCount
    unit: str
    waves: tuple[tuple[str, ...], ...]
    critical_path: dag.CriticalPath
    total: float
    lower_bound: float
    dynamic_makespan: float
    batch_makespan: float
    stats: BatchStats
    blocked: dict[str, str]

    def as_dict(self) -> dict[str, object]:
        return {
            "workers": self.workers.workers,
            "unit": self.unit,
            "tickets": self.stats.tickets,
            "waves": [list(w) for w in self.waves],
            "critical_path": list(self.critical_path.tickets),
            "critical_path_minutes": self.critical_path.minutes,
            "total_minutes": self.total,
            "lower_bound_minutes": self.lower_bound,
            "makespan_dynamic_minutes": self.dynamic_makespan,
            "makespan_batch_minutes": self.batch_makespan,
            "batch_stats": {
                "batches": self.stats.batches,
                "per_batch": self.stats.per_batch,
                "last_batch": self.stats.last_batch,
            },
            "blocked": self.blocked,
            "warning": self.workers.warning,
        }


def plan(tickets: Sequence[Ticket], graph: nx.DiGraph, requested: str | int) -> Plan:
    with quiet_gc():
        return _plan(Dispatcher(tickets, graph), requested)


def _plan(dispatcher: Dispatcher, requested: str | int) -> Plan:
    tickets = dispatcher.tickets.values()
    count = resolve_workers(requested, max(len(dispatcher), 1))
    todo = dispatcher.runnable
    weights = {tid: dispatcher.tickets[tid].weight for tid in todo}
    path = dag.critical_path(todo, weights, longest=dispatcher.longest)
    total = sum(weights.values())
    n = count.workers
    return Plan(
        workers=count,
        unit="minutes" if any(t.estimate_minutes is not None for t in tickets) else "tickets",
        waves=tuple(tuple(sorted(level)) for level in dispatcher.generations),
        critical_path=path,
        total=total,
        lower_bound=max(path.minutes, total / n),
        dynamic_makespan=_makespan(_dynamic(dispatcher.copy(), n)),
        batch_makespan=_makespan(_batches(dispatcher.copy(), n)),
        stats=batch_stats(len(todo), n),
        blocked=dict(dispatcher.blocked),
    )
