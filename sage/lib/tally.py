"""A run's events folded into what the live view shows: each slot's attempt, how many tickets
are ready, waiting on dependencies, queued to land or blocked, and an ETA.

Fed by the journal's reporter (any thread, one event at a time); it only reads the tickets the
run was prepared with, so it never touches the index or git.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sage.lib import graph as dag
from sage.lib import scheduler
from sage.lib.events import Event
from sage.lib.tickets import Ticket

if TYPE_CHECKING:
    import networkx as nx

SETTLED = ("landed", "deferred", "blocked", "skipped")


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    ticket: str
    title: str
    attempt: int
    since: float  # time.monotonic()


@dataclass(frozen=True, slots=True, kw_only=True)
class Counts:
    ready: int
    waiting: int  # on dependencies
    landing: int  # queued to land
    retrying: int  # waiting out a retry's delay
    blocked: int
    landed: int
    deferred: int
    total: int


class Tally:
    def __init__(
        self, tickets: Sequence[Ticket], graph: nx.DiGraph, workers: int, *, eta_every: float = 1.0
    ) -> None:
        self.tickets = {t.id: t for t in tickets}
        self.graph, self.workers = graph, workers
        self.open = {t.id for t in tickets if t.state in dag.OPEN_STATES}
        self.done = {t.id for t in tickets if t.state == "COMPLETED"}
        # of open tickets: running, landing, or SETTLED; those behind what an earlier run
        # deferred are blocked from the start, as the run says
        self.phase: dict[str, str] = dict.fromkeys(scheduler.blocked_at_start(self.tickets, graph),
                                                   "blocked")  # fmt: skip
        self.slots: dict[str, tuple[int, Attempt]] = {}  # ticket: (slot, attempt)
        self.seconds: list[tuple[float, float]] = []  # finished attempts: (seconds, weight)
        self.eta: float | None = None
        self.eta_guessed = False  # `eta` takes the estimates' minutes as minutes: nothing timed yet
        self.stopping = False  # the run starts nothing new: what is left is the running work
        self.eta_every, self._eta_at = eta_every, -math.inf  # a big index: not every landing
        self._refresh_eta()

    def take(self, event: Event) -> None:
        kind, tid, data = event.kind, event.ticket or "", event.data
        if kind == "started":
            title = str(data.get("title") or self.tickets.get(tid, Ticket(id=tid, title="")).title)
            attempt = Attempt(ticket=tid, title=title, attempt=int(data.get("attempt", 1)),
                              since=time.monotonic())  # fmt: skip
            self.slots[tid] = (int(data.get("slot", 0)), attempt)
            self.phase[tid] = "running"
        elif kind in ("exited", "finished"):
            self._exited(tid, kind, data)
        elif kind == "queued":
            self.phase[tid] = "landing"
        elif kind == "retry" and tid:
            self.phase[tid] = "retrying"
        elif kind in SETTLED or kind in ("stopping", "killed"):
            self.stopping = self.stopping or (kind == "stopping" and not tid)
            self._settled(kind, tid)

    def _exited(self, tid: str, kind: str, data: dict[str, object]) -> None:
        self.slots.pop(tid, None)
        seconds, ticket = data.get("seconds"), self.tickets.get(tid)
        if kind == "finished" and isinstance(seconds, int | float) and ticket is not None:
            self.seconds.append((float(seconds), ticket.weight))
            if len(self.seconds) == 1:  # the first timing replaces the guess from estimates now
                self._refresh_eta()
        if self.phase.get(tid) == "running":
            self.phase[tid] = "collecting"

    def _settled(self, kind: str, tid: str) -> None:
        if not tid:
            return
        if kind in SETTLED:
            self.phase[tid] = kind
            self.done.update([tid] if kind == "landed" else [])
            if time.monotonic() - self._eta_at >= self.eta_every:
                self._refresh_eta()
        else:  # put back: not this run's any more
            self.phase[tid] = "returned"

    def counts(self) -> Counts:
        ready = waiting = 0
        for tid in self.open:
            if tid in self.phase:
                continue
            deps_done = self.done.issuperset(self.tickets[tid].dependencies)
            ready += deps_done
            waiting += not deps_done
        phases = list(self.phase.values())
        return Counts(ready=ready, waiting=waiting, landing=phases.count("landing"),
                      retrying=phases.count("retrying"),
                      blocked=phases.count("blocked"), landed=phases.count("landed"),
                      deferred=phases.count("deferred"), total=len(self.open))  # fmt: skip

    def running(self) -> list[tuple[int, Attempt]]:
        return sorted(self.slots.values(), key=lambda pair: (pair[0], pair[1].ticket))

    def _refresh_eta(self) -> None:
        """Seconds of work left: the simulated makespan of what is still open, in estimate
        units (minutes, or tickets), times the seconds this run's attempts took per unit so
        far; before any attempt has finished, an estimated minute is a minute."""
        self._eta_at = time.monotonic()
        state = {tid: "COMPLETED" for tid in self.done}
        state.update({t: "DEFERRED" for t, p in self.phase.items() if p in SETTLED[1:]})
        left = [replace(t, state=state.get(t.id, t.state)) for t in self.tickets.values()]
        if not any(t.state in dag.OPEN_STATES for t in left):
            self.eta = 0.0
            return
        span = scheduler.simulate(left, self.graph, self.workers)
        units = sum(w for _, w in self.seconds)
        guessed = not units and any(t.estimate_minutes is not None for t in left)
        if units:
            self.eta = span * sum(s for s, _ in self.seconds) / units
        else:
            self.eta = span * 60 if guessed else None
        self.eta_guessed = guessed
