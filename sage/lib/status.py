"""`sage status`: what runs where (from the newest run's events and the lock and pid files), the
commit queue, what is ready, waiting or blocked and why, and an ETA from the estimates.

Read-only: nothing here takes a lock a stream needs, so it is safe while a stream runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage.lib import graph as dag
from sage.lib import history, scheduler
from sage.lib.history import Asked, History, Holder, Running
from sage.lib.project import Project
from sage.lib.queue.entries import Entries, QueueEntry
from sage.lib.tickets import Index, Ticket

if TYPE_CHECKING:
    import networkx as nx


@dataclass(frozen=True, slots=True, kw_only=True)
class Eta:
    """About how long the open tickets take with `workers`, and what that rests on."""

    seconds: float
    workers: int
    basis: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    run: History | None
    holder: Holder | None  # the stream running now, if any
    running: tuple[Running, ...]
    pids: dict[str, int]
    queue: tuple[QueueEntry, ...]
    states: dict[str, int]  # tickets by index state
    ready: tuple[str, ...]
    waiting: dict[str, tuple[str, ...]]  # ticket: the dependencies it waits on
    blocked: dict[str, str]  # ticket: the ticket that will not land
    deferred: dict[str, str] = field(default_factory=dict)  # ticket: why
    eta: Eta | None = None
    asking: Asked | None = None  # the running stream waits for an answer at its prompt

    def as_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "run_id": run.run_id if run else None,
            "live": self.holder is not None,
            "stream_pid": self.holder.pid if self.holder else None,
            "summary": run.summary if run else None,
            "running": [_running_dict(r, self.pids) for r in self.running],
            "asking": _asked_dict(self.asking) if self.asking else None,
            "queue": [
                {
                    "seq": e.seq,
                    "ticket": e.ticket_id,
                    "status": str(e.status),
                    "queued_at": e.queued_at,
                    "attempts": e.attempts,
                }
                for e in self.queue
            ],
            "states": self.states,
            "ready": list(self.ready),
            "waiting": {t: list(d) for t, d in self.waiting.items()},
            "blocked": self.blocked,
            "deferred": self.deferred,
            "eta": None
            if self.eta is None
            else {
                "seconds": round(self.eta.seconds),
                "workers": self.eta.workers,
                "basis": self.eta.basis,
            },
        }


def _running_dict(r: Running, pids: dict[str, int]) -> dict[str, Any]:
    return {"ticket": r.ticket, "slot": r.slot, "attempt": r.attempt, "title": r.title,
            "since": r.since.isoformat(), "pid": pids.get(r.ticket), "log": r.log}  # fmt: skip


def _asked_dict(q: Asked) -> dict[str, Any]:
    return {"ticket": q.ticket, "title": q.title, "since": q.since.isoformat()}


def read(project: Project, index: Index, graph: nx.DiGraph) -> Status:
    tickets = index.tickets
    raw = {e.get("id"): e for e in index.raw.get("tickets", [])}
    dirs = history.run_dirs(project)
    holder = history.stream_holder(project)
    run = history.load(dirs[0], live=holder is not None) if dirs else None
    by_id = {t.id: t for t in tickets}
    blocked = scheduler.blocked_at_start(by_id, graph)
    ready = tuple(t.id for t in dag.ready(tickets, graph))
    return Status(
        run=run, holder=holder, running=run.running if run and holder else (),
        asking=run.asking if run and holder else None,
        pids=history.worker_pids(project) if holder else {},
        queue=tuple(Entries(project.queue_dir, project.locks_dir, 0).active()),
        states=dict(Counter(t.state for t in tickets)), ready=ready,
        waiting=_waiting(tickets, by_id, blocked, set(ready)), blocked=blocked,
        deferred={t.id: str(raw.get(t.id, {}).get("deferred_reason") or "deferred")
                  for t in tickets if t.state == "DEFERRED"},
        eta=eta(tickets, graph, _workers(project, run), lambda: _mean_attempt(run, dirs[1:]),
                blocked),
    )  # fmt: skip


TIMED_RUNS = 5  # how many runs back an ETA looks for attempts to time tickets by


def _mean_attempt(run: History | None, older: list[Path]) -> tuple[float, str] | None:
    """The mean finished attempt of the newest run that has one (a run that has just started
    has timed none), in seconds, and that run's id."""
    for each in _newest_first(run, older[: TIMED_RUNS - 1]):
        ran = [s.end - s.start for s in each.spans if s.kind == "running" and not s.open]
        if ran:
            return sum(ran) / len(ran), each.run_id
    return None


def _newest_first(run: History | None, older: list[Path]) -> Iterator[History]:
    """`run`, then the runs in `older`, each read only when asked for."""
    if run is not None:
        yield run
    for folder in older:
        try:
            yield history.load(folder)
        except (OSError, ValueError):  # an old run's events damaged by hand: not worth an error
            continue


def _waiting(
    tickets: tuple[Ticket, ...], by_id: dict[str, Ticket], blocked: dict[str, str], ready: set[str]
) -> dict[str, tuple[str, ...]]:
    """Open tickets, neither ready nor blocked, and the dependencies they still wait on."""
    found = {}
    for t in tickets:
        if t.state == "UNPROCESSED" and t.id not in blocked and t.id not in ready:
            found[t.id] = tuple(d for d in t.dependencies if by_id[d].state != "COMPLETED")
    return found


def _workers(project: Project, run: History | None) -> int:
    if run is not None and run.workers:
        return run.workers
    text = project.config.workers
    return scheduler.resolve_workers(text, 8).workers if text else 1


def eta(
    tickets: tuple[Ticket, ...], graph: nx.DiGraph, workers: int,
    timing: Callable[[], tuple[float, str] | None], blocked: dict[str, str],
) -> Eta | None:  # fmt: skip
    """The simulated makespan of the open tickets that can run: in estimate minutes where
    tickets have estimates, else in tickets times the mean attempt `timing` gives, with the
    run it comes from (asked only then: it may read earlier runs)."""
    open_ = [t for t in tickets if t.state in dag.OPEN_STATES and t.id not in blocked]
    if not open_:
        return None
    span = scheduler.simulate(tickets, graph, workers)
    if any(t.estimate_minutes is not None for t in open_):
        return Eta(seconds=span * 60, workers=workers, basis="from the estimates")
    timed = timing()
    if timed is None:
        return None
    mean, run_id = timed
    return Eta(seconds=span * mean, workers=workers,
               basis=f"{mean:.2g} s per ticket in run {run_id}")  # fmt: skip
