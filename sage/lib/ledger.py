"""The run ledger: each ticket's phase during one run, with its counters and reason.

One place owns a ticket's run state. The stream's main thread is its only writer: worker
threads and the lander (a thread, or a process of its own) send messages (`sage.lib.inbox`).
Every change of phase goes through `Ledger.move`, which refuses a transition the table below
does not allow, so the summary, the live view, the events and the exit code are all read from
the same records and cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum


class Phase(StrEnum):
    WAITING = "waiting"  # open: waiting on dependencies, ready, or put back for a retry
    RUNNING = "running"  # its worker process runs in a slot
    COLLECTING = "collecting"  # the process exited; its work is being committed and queued
    DELAYED = "delayed"  # a retry is due at `due`
    PARKED = "parked"  # throttled: waits for the agent's limit; no attempt used
    LANDING = "landing"  # queued in the commit queue
    LANDED = "landed"
    DEFERRED = "deferred"
    BLOCKED = "blocked"  # a dependency will not land
    SKIPPED = "skipped"  # the user answered "skip"
    RETURNED = "returned"  # put back to UNPROCESSED before it could land (stop, Ctrl+C)


W, R, C, D, P, L = (Phase.WAITING, Phase.RUNNING, Phase.COLLECTING, Phase.DELAYED,
                    Phase.PARKED, Phase.LANDING)  # fmt: skip
LANDED, DEFERRED, BLOCKED, SKIPPED, RETURNED = (Phase.LANDED, Phase.DEFERRED, Phase.BLOCKED,
                                                Phase.SKIPPED, Phase.RETURNED)  # fmt: skip

# A landing reported by the queue may overtake the worker thread's own "finished" message (the
# lander read the entry from disk first), so COLLECTING may go straight to LANDED; and anyone
# (a `sage queue process` in another terminal) may land, defer or discard a queued entry. A
# ticket waiting to run again because its entry looked gone may hear that it landed after all.
ALLOWED: dict[Phase, frozenset[Phase]] = {
    W: frozenset({R, L, LANDED, DEFERRED, BLOCKED, SKIPPED, RETURNED}),
    R: frozenset({C, D, P, L, DEFERRED, RETURNED}),
    C: frozenset({L, LANDED, D, P, DEFERRED, RETURNED}),
    D: frozenset({W, LANDED, RETURNED}),
    P: frozenset({W, DEFERRED, RETURNED}),
    L: frozenset({LANDED, D, W, DEFERRED, RETURNED}),
    LANDED: frozenset(),
    DEFERRED: frozenset({BLOCKED}),  # never: listed so a bad move names both phases
    BLOCKED: frozenset({W}),  # a retried dependency (reconciliation) frees it again
    SKIPPED: frozenset(),
    RETURNED: frozenset(),
}
ACTIVE = frozenset({R, C})  # holding (or about to release) a worker or its collection
FINAL = frozenset({LANDED, DEFERRED, BLOCKED, SKIPPED, RETURNED})


class TransitionError(RuntimeError):
    """A move the ledger does not allow: a bug in sage, never the user's doing."""


@dataclass(slots=True, kw_only=True)
class TicketRun:
    """One ticket's record for this run. Mutable, and owned by the ledger alone."""

    ticket_id: str
    phase: Phase = Phase.WAITING
    failures: int = 0  # worker attempts that used up a retry
    land_attempts: int = 0  # landings rejected (conflict, verify)
    throttles: int = 0  # attempts parked by a rate limit (no attempt used)
    parked_seconds: float = 0.0
    slot: int | None = None
    base: str = ""  # the target's head its running attempt started from
    due: float = 0.0  # DELAYED / PARKED: when it may run again (the stream's clock)
    after: str = ""  # DELAYED until this ticket (landing when it failed) lands or is deferred
    started_at: float = 0.0
    reason: str = ""
    blocked_by: str = ""
    earlier: bool = False  # its phase was set by an earlier run (deferred, blocked, queued)
    claimed: bool = False  # this run marked it IN_PROGRESS in the index
    held: bool = False  # LANDING, but the queue cannot land it now (the checkout is in the way)
    held_for: str = ""  # why, as last said (a pass that holds it again for it says nothing)
    last_seconds: float = 0.0  # worker time of the attempt now landing
    worker_seconds: float = 0.0
    setup_seconds: float = 0.0  # preparing its slot's worktree ([worktree] setup), not work
    wasted_seconds: float = 0.0  # worker time of attempts that never landed
    wasted_by: dict[str, float] = field(default_factory=dict)  # that time, by cause
    carried_seconds: float = 0.0  # a conflicting attempt's time its resolve attempt carries on
    tokens: int = 0  # what its attempts cost, where the agent reports it
    cost_usd: float = 0.0
    wasted_tokens: int = 0  # of that, attempts that never landed
    wasted_cost_usd: float = 0.0
    resolve: object = None  # a `workers.Resolve` for its next attempt, after a conflict
    resolved: bool = False  # it had its resolve attempt: a further conflict is a full redo
    last_tokens: int = 0  # the attempt now landing
    last_cost_usd: float = 0.0

    def spent(self, tokens: int, cost: float) -> None:
        self.tokens += tokens
        self.cost_usd += cost
        self.last_tokens, self.last_cost_usd = tokens, cost

    def wasted(self, seconds: float, cause: str = "failure") -> None:
        """The attempt just finished (or now rejected) will never land, because of `cause`
        (failure, throttle, conflict, verify); with it, any earlier attempt it carried on."""
        seconds += self.carried_seconds
        self.carried_seconds = 0.0
        self.wasted_seconds += seconds
        self.wasted_by[cause] = self.wasted_by.get(cause, 0.0) + seconds
        self.wasted_tokens += self.last_tokens
        self.wasted_cost_usd += self.last_cost_usd

    @property
    def attempt(self) -> int:
        """The number of the attempt that runs next (or now)."""
        return 1 + self.failures + self.land_attempts


class Ledger:
    """Every ticket the run may touch, by id, in the order they were added."""

    def __init__(self, ticket_ids: Iterable[str] = ()) -> None:
        self._runs: dict[str, TicketRun] = {}
        # Each phase's tickets, in the order they entered it: the loop asks for counts and
        # members many times a second, so neither may cost a pass over every ticket.
        self._in: dict[Phase, dict[str, None]] = {phase: {} for phase in Phase}
        for tid in ticket_ids:
            self.add(tid)

    def add(self, tid: str, phase: Phase = Phase.WAITING, **fields: object) -> TicketRun:
        run = TicketRun(ticket_id=tid, phase=phase)
        for key, value in fields.items():
            setattr(run, key, value)
        self._runs[tid] = run
        self._in[phase][tid] = None
        return run

    def __contains__(self, tid: object) -> bool:
        return tid in self._runs

    def __getitem__(self, tid: str) -> TicketRun:
        return self._runs[tid]

    def __iter__(self) -> Iterator[TicketRun]:
        return iter(self._runs.values())

    def __len__(self) -> int:
        return len(self._runs)

    def move(self, tid: str, phase: Phase, **fields: object) -> TicketRun:
        """Change a ticket's phase (checked) and any of its fields."""
        run = self._runs[tid]
        if phase != run.phase and phase not in ALLOWED[run.phase]:
            raise TransitionError(f"{tid}: {run.phase} → {phase} is not a move a run makes")
        if phase != run.phase:
            del self._in[run.phase][tid]
            self._in[phase][tid] = None
        run.phase = phase
        for key, value in fields.items():
            setattr(run, key, value)
        return run

    def ids(self, *phases: Phase) -> list[str]:
        """Tickets in these phases, each phase's in the order they entered it."""
        return [tid for phase in phases for tid in self._in[phase]]

    def runs(self, *phases: Phase) -> list[TicketRun]:
        return [self._runs[tid] for tid in self.ids(*phases)]

    def count(self, *phases: Phase) -> int:
        return sum(len(self._in[phase]) for phase in phases)

    def phase(self, tid: str) -> Phase | None:
        run = self._runs.get(tid)
        return run.phase if run else None

    def due(self, now: float) -> list[str]:
        """DELAYED and PARKED tickets whose time has come, soonest first."""
        waiting = [r for r in self.runs(D, P) if r.due <= now]
        return [r.ticket_id for r in sorted(waiting, key=lambda r: r.due)]

    def next_due(self) -> float | None:
        return min((r.due for r in self.runs(D, P)), default=None)

    def wasted_by(self) -> dict[str, float]:
        """Worker time of attempts that never landed, by cause."""
        found: dict[str, float] = {}
        for run in self._runs.values():
            for cause, seconds in run.wasted_by.items():
                found[cause] = found.get(cause, 0.0) + seconds
        return {cause: round(found[cause], 3) for cause in sorted(found)}

    def totals(self) -> dict[str, float]:
        runs = self._runs.values()
        return {
            "tokens": sum(r.tokens for r in runs),
            "cost_usd": sum(r.cost_usd for r in runs),
            "wasted_tokens": sum(r.wasted_tokens for r in runs),
            "wasted_cost_usd": sum(r.wasted_cost_usd for r in runs),
            "worker_seconds": sum(r.worker_seconds for r in runs),
            "wasted_seconds": sum(r.wasted_seconds for r in runs),
            "setup_seconds": sum(r.setup_seconds for r in runs),
        }


class Slots:
    """Worker slots 0 … n-1: a slot is a stable identity for the life of the run.

    A slot keeps the files of the last ticket it ran. The next ticket takes the free slot whose
    ticket landed last: its files are nearest the target's, so its switch rewrites the fewest
    (in a chain, none: the dependent takes the slot whose work just landed). Else the lowest,
    which a run made or reused before a higher one."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._free = list(range(count))
        self._ran: dict[int, str] = {}  # slot -> the ticket it ran last
        self._landed: dict[int, int] = {}  # slot -> when (a count) that ticket landed
        self._landings = 0

    def next(self) -> int:
        """The slot `take` would give now (there is a free one)."""
        return max(self._free, key=lambda s: (self._landed.get(s, -1), -s))

    def take(self, ticket_id: str = "") -> int:
        slot = self.next()
        self._free.remove(slot)
        self._ran[slot] = ticket_id
        self._landed.pop(slot, None)
        return slot

    def give_back(self, slot: int | None) -> None:
        if slot is not None and slot not in self._free:
            self._free.append(slot)

    def landed(self, ticket_id: str, slot: int | None) -> None:
        """`ticket_id`, which ran in `slot`, landed: that slot's files are the freshest, unless
        it has taken another ticket since."""
        if slot is not None and self._ran.get(slot) == ticket_id:
            self._landings += 1
            self._landed[slot] = self._landings

    @property
    def free(self) -> int:
        return len(self._free)
