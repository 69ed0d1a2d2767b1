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
from sage.lib import lazy, touches
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

    Touch sets are a soft mutex: while a ticket is held (`hold` when it starts, `release` when
    it has landed, was deferred or was given back; `landed` and `failed` release too), `pop`
    keeps ready tickets whose files overlap it aside, in priority order, until it is released.
    `learn` adds files two tickets conflicted on to both sets.
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
        self._keys = {tid: dag.dispatch_key(self.tickets[tid], self.longest) for tid in todo}
        # each open ticket waits for its dependencies not COMPLETED (a blocked one is not here)
        done = {tid for tid, t in self.tickets.items() if t.state == "COMPLETED"}
        self._waiting: dict[str, int] = {
            tid: len(set(self.tickets[tid].dependencies).difference(done)) for tid in todo
        }
        self._heap: list[tuple[tuple[int, float, str], str]] = [
            (self._keys[tid], tid) for tid, pending in self._waiting.items() if not pending
        ]
        heapq.heapify(self._heap)
        self._sets: dict[str, touches.TouchSet] = {}  # touch sets, declared or learned, lazily
        self._held: set[str] = set()
        self._touching: dict[str, touches.TouchSet] = {}  # the held tickets that touch files
        self._apart: list[tuple[tuple[int, float, str], str]] = []  # ready, kept aside
        self._any_files: bool | None = None  # whether any ticket touches a file (lazily)
        self._waits: dict[tuple[str, str], None] = {}  # (kept aside, for whom), in order

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
        clone._sets, clone._held, clone._touching, clone._apart, clone._waits = (
            dict(self._sets),
            set(self._held),
            dict(self._touching),
            list(self._apart),
            dict(self._waits),
        )
        return clone

    def __len__(self) -> int:
        """Ready tickets, those kept apart from a held one included."""
        return len(self._heap) + len(self._apart)

    def peek(self) -> Ticket | None:
        """The first ready ticket by priority, kept apart or not."""
        first = min(self._heap[:1] + self._apart, default=None)
        return self.tickets[first[1]] if first else None

    def pop(self) -> Ticket | None:
        """The first ready ticket by priority whose files overlap no held ticket's."""
        if not self._touching:  # nothing held touches a file: the plain heap
            return self.tickets[heapq.heappop(self._heap)[1]] if self._heap else None
        heap = self._heap
        while heap:
            item = heapq.heappop(heap)
            holder = self.clashes_with(item[1])
            if holder is None:
                return self.tickets[item[1]]
            self._apart.append(item)
            self._waits[(item[1], holder)] = None
        return None

    # ---- touch sets ----------------------------------------------------------------------

    def touch_set(self, tid: str) -> touches.TouchSet:
        """The files a ticket touches: its `files`, and those it conflicted on this run."""
        found = self._sets.get(tid)
        if found is None:
            ticket = self.tickets.get(tid)
            found = self._sets[tid] = touches.touch_set(ticket.files if ticket else ())
        return found

    def clashes_with(self, tid: str) -> str | None:
        """A held ticket (other than `tid`) whose files overlap `tid`'s, if any."""
        mine = self.touch_set(tid)
        if not mine:
            return None
        held = self._touching.items()
        return next((h for h, theirs in held if h != tid and touches.overlaps(mine, theirs)), None)

    def hold(self, tid: str) -> None:
        """`tid` started: until it is released, tickets overlapping it are kept apart."""
        self._held.add(tid)
        if mine := self.touch_set(tid):
            self._touching[tid] = mine

    def release(self, tid: str) -> None:
        """`tid` landed, was deferred or given back: what it kept apart is ready again."""
        self._held.discard(tid)
        if self._touching.pop(tid, None) is not None and self._apart:
            for item in self._apart:
                heapq.heappush(self._heap, item)
            self._apart.clear()

    def learn(self, tid_a: str, tid_b: str, files: Sequence[str]) -> None:
        """Two tickets conflicted on `files`: both sets include them for the rest of the run."""
        new = touches.touch_set(files)
        for tid in dict.fromkeys((tid_a, tid_b)):
            joined = self._sets[tid] = tuple(dict.fromkeys((*self.touch_set(tid), *new)))
            if tid in self._held and joined:
                self._touching[tid] = joined

    @property
    def touches_files(self) -> bool:
        """Whether any ticket declares or learned files: else holds change nothing."""
        if self._any_files is None:
            self._any_files = any(t.files for t in self.tickets.values())
        return self._any_files or any(self._sets.values())

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def kept_apart(self) -> dict[str, str]:
        """Ready tickets kept aside now, each with a held ticket it overlaps."""
        return {tid: self.clashes_with(tid) or "" for _, tid in sorted(self._apart)}

    @property
    def waits(self) -> list[tuple[str, str]]:
        """Every (ticket, held ticket) pair `pop` has kept apart so far, in order."""
        return list(self._waits)

    def requeue(self, tid: str) -> None:
        """A ticket that will run again (retry, conflict) goes back into the ready set."""
        self._push(tid)

    def landed(self, tid: str) -> list[str]:
        """Mark a ticket landed (and released); return the dependents it made ready."""
        if self._held:
            self.release(tid)
        waiting = self._waiting  # blocked tickets are never in it
        waiting.pop(tid, None)
        freed = []
        for child in self._dependents[tid]:
            left = waiting.get(child)
            if left is not None:
                waiting[child] = left - 1
                if left == 1:
                    freed.append(child)
        for child in freed:
            self._push(child)
        return freed

    def failed(self, tid: str) -> list[str]:
        """A ticket that will not land this run (released): every open descendant is blocked."""
        self.release(tid)
        self._waiting.pop(tid, None)
        lost = [d for d in nx.descendants(self._graph, tid) if d in self._waiting]
        for d in lost:
            self.blocked[d] = tid
            del self._waiting[d]
        self._heap = [(k, t) for k, t in self._heap if t not in self.blocked]
        heapq.heapify(self._heap)
        self._apart = [(k, t) for k, t in self._apart if t not in self.blocked]
        return sorted(lost)

    @property
    def unfinished(self) -> int:
        return len(self._waiting)


def blocked_at_start(tickets: Mapping[str, Ticket], graph: nx.DiGraph) -> dict[str, str]:
    """Open tickets that cannot run: a dependency neither open nor COMPLETED (DEFERRED, unknown),
    or a dependency that is itself blocked. Each maps to the ticket that will not land."""
    usable = {tid for tid, t in tickets.items() if t.state in (*dag.OPEN_STATES, "COMPLETED")}
    blocked: dict[str, str] = {}
    for tid, t in tickets.items():
        if t.state in dag.OPEN_STATES and not usable.issuperset(t.dependencies):
            blocked[tid] = next(d for d in t.dependencies if d not in usable)
    queue = deque(blocked)
    while queue:
        node = queue.popleft()
        for child in graph.successors(node):
            if child not in blocked and tickets[child].state in dag.OPEN_STATES:
                blocked[child] = blocked[node]
                queue.append(child)
    return blocked


@dataclass(frozen=True, slots=True, kw_only=True)
class Slot:
    """One ticket in a simulated schedule, in estimate units from the start of the run."""

    ticket: str
    start: float
    finish: float


def simulate(
    tickets: Sequence[Ticket],
    graph: nx.DiGraph,
    workers: int,
    schedule: str = "dynamic",
    *,
    apart: bool = True,
) -> float:
    """Makespan (in estimate units) of list scheduling with `workers`, dynamic or in waves;
    with `apart`, tickets whose files overlap wait for each other (the soft mutex)."""
    return _makespan(_schedule(Dispatcher(tickets, graph), workers, schedule, apart=apart))


def timeline(
    tickets: Sequence[Ticket],
    graph: nx.DiGraph,
    workers: int,
    schedule: str = "dynamic",
    *,
    apart: bool = True,
) -> list[Slot]:
    """The simulated schedule behind `simulate`: when each ticket would start and finish."""
    slots = _schedule(Dispatcher(tickets, graph), workers, schedule, apart=apart)
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


def _schedule(plan: Dispatcher, workers: int, schedule: str, *, apart: bool = True) -> _Run:
    if schedule not in SCHEDULES:
        raise UsageError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")
    run = _batches if schedule == "batch" else _dynamic
    return run(plan, workers, apart=apart)


def _dynamic(plan: Dispatcher, workers: int, *, apart: bool = True) -> _Run:
    """A free worker takes the next ready ticket the moment it is free; a ticket is held from
    its start to its landing (its finish, here)."""
    slots: _Run = []
    clock, running = 0.0, list[tuple[float, str]]()  # running: heap of (finish time, id)
    apart = apart and plan.touches_files
    while len(plan) or running:
        while len(running) < workers and (ticket := plan.pop()) is not None:
            if apart:
                plan.hold(ticket.id)
            finish = clock + ticket.weight
            heapq.heappush(running, (finish, ticket.id))
            slots.append((clock, finish, ticket.id))
        clock, done = heapq.heappop(running)
        plan.landed(done)
    return slots


def _batches(plan: Dispatcher, workers: int, *, apart: bool = True) -> _Run:
    """The seed's waves: up to `workers` ready tickets start together; the next batch starts when
    the slowest of them has finished."""
    slots: _Run = []
    clock = 0.0
    apart = apart and plan.touches_files
    while len(plan):
        batch: list[Ticket] = []
        while len(batch) < workers and (ticket := plan.pop()) is not None:
            if apart:
                plan.hold(ticket.id)
            batch.append(ticket)
        slots += [(clock, clock + t.weight, t.id) for t in batch]
        clock += max(t.weight for t in batch)
        for t in batch:
            plan.landed(t.id)
    return slots


@dataclass(frozen=True, slots=True, kw_only=True)
class Apart:
    """Tickets that could run at the same time but touch the same files, so run one at a time:
    a group linked by `pairs` (two tickets and the patterns of theirs that meet)."""

    tickets: tuple[str, ...]
    files: tuple[str, ...]
    pairs: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def as_dict(self) -> dict[str, object]:
        pairs = [{"tickets": [a, b], "files": list(f)} for a, b, f in self.pairs]
        return {"tickets": list(self.tickets), "files": list(self.files), "pairs": pairs}


def kept_apart(dispatcher: Dispatcher) -> tuple[Apart, ...]:
    """Groups of tickets a simulated run kept apart: who waited for whom, joined by the files
    they waited on (every ticket kept apart over one file is in one group)."""
    pairs: dict[tuple[str, str], tuple[str, ...]] = {}
    for waiting, holder in dispatcher.waits:
        a, b = sorted((waiting, holder))
        pairs[(a, b)] = tuple(touches.shared(dispatcher.touch_set(a), dispatcher.touch_set(b)))
    joined = nx.Graph()
    for (a, b), files in pairs.items():
        joined.add_edge(a, b)
        joined.add_edges_from((a, ("file", f)) for f in files)  # a file node: not a ticket ID
    groups = (
        {n for n in members if isinstance(n, str)} for members in nx.connected_components(joined)
    )
    return tuple(sorted((_group(pairs, m) for m in groups), key=lambda g: g.tickets))


def _group(pairs: Mapping[tuple[str, str], tuple[str, ...]], members: set[str]) -> Apart:
    inside = sorted((a, b, files) for (a, b), files in pairs.items() if a in members)
    files = sorted({f for _, _, shared in inside for f in shared})
    return Apart(tickets=tuple(sorted(members)), files=tuple(files), pairs=tuple(inside))


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """`sage plan`: what a run with `workers` would do, in estimate units (minutes or tickets)."""

    workers: WorkerCount
    unit: str
    waves: tuple[tuple[str, ...], ...]
    critical_path: dag.CriticalPath
    total: float
    lower_bound: float
    dynamic_makespan: float  # tickets that touch the same files kept apart, as a run does
    batch_makespan: float
    stats: BatchStats
    blocked: dict[str, str]
    apart: tuple[Apart, ...]
    together_makespan: float  # dynamic, if nothing were kept apart
    schedule: tuple[tuple[float, float, str], ...] = ()  # the dynamic simulation's, in order

    def slots(self) -> tuple[Slot, ...]:
        """The dynamic simulation's schedule, ticket by ticket in dispatch order (made when
        asked: `--json` and `--format gantt` show it, the plan's text does not)."""
        return tuple(Slot(ticket=tid, start=start, finish=finish)
                     for start, finish, tid in self.schedule)  # fmt: skip

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
            "makespan_dynamic_together_minutes": self.together_makespan,
            "kept_apart": [group.as_dict() for group in self.apart],
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
    simulated = dispatcher.copy()
    schedule = _dynamic(simulated, n)
    dynamic = _makespan(schedule)
    apart = kept_apart(simulated)
    together = _makespan(_dynamic(dispatcher.copy(), n, apart=False)) if apart else dynamic
    return Plan(
        workers=count,
        unit="minutes" if any(t.estimate_minutes is not None for t in tickets) else "tickets",
        waves=tuple(tuple(sorted(level)) for level in dispatcher.generations),
        critical_path=path,
        total=total,
        lower_bound=max(path.minutes, total / n),
        dynamic_makespan=dynamic,
        batch_makespan=_makespan(_batches(dispatcher.copy(), n)),
        stats=batch_stats(len(todo), n),
        blocked=dict(dispatcher.blocked),
        apart=apart,
        together_makespan=together,
        schedule=tuple(schedule),
    )
