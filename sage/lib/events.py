"""What a run reports: event values, the append-only journal, and the summary."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sage.lib.ledger import Ledger, Phase
from sage.lib.tickets import now
from sage.lib.words import ending

EventKind = Literal[
    "run-started",
    "recovered",
    "started",
    "exited",
    "finished",
    "queued",
    "landed",
    "conflict",
    "verify-failed",
    "retry",
    "deferred",
    "blocked",
    "stopping",
    "killed",
    "warning",
    "reconciled",
    "kept-apart",
    "may-conflict",
    "asked",  # interactive: the question about a ticket is on screen
    "answered",
    "run-finished",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    kind: EventKind
    ticket: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=now)

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "ticket": self.ticket, "at": self.at, **self.data}


Reporter = Callable[[Event], None]


class Journal:
    """Appends every event to events.jsonl (flushed per line) and hands it to the reporter."""

    def __init__(self, path: Path, reporter: Reporter | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._reporter = reporter
        self._lock = threading.Lock()

    def emit(self, kind: EventKind, ticket: str | None = None, **data: Any) -> Event:
        event = Event(kind=kind, ticket=ticket, data=data)
        with self._lock:
            self._file.write(json.dumps(event.as_dict(), ensure_ascii=False, default=str) + "\n")
            self._file.flush()
            if self._reporter:
                try:
                    self._reporter(event)
                except OSError:  # a closed terminal or pipe must not stop the run
                    self._reporter = None
        return event

    def close(self) -> None:
        with self._lock:
            self._file.close()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    """Every ticket the run could take on, each in exactly one of: completed (landed this run),
    waiting to land, deferred (this run or an earlier one), blocked, skipped, not started."""

    run_id: str
    workers: int
    completed: tuple[str, ...]
    deferred: dict[str, str]
    blocked: dict[str, str]
    wall_seconds: float
    worker_seconds: float
    commits_landed: int
    conflicts: int
    retries: int
    stopped_early: bool = False
    interrupted: bool = False
    not_started: tuple[str, ...] = ()
    waiting_to_land: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()
    deferred_earlier: tuple[str, ...] = ()  # of `deferred`, those an earlier run deferred
    throttled: int = 0
    wasted_seconds: float = 0.0
    setup_seconds: float = 0.0  # worker slots' setup ([worktree] setup), apart from work
    unusable: str = ""  # the worker cannot run at all (not logged in, a bad flag): why
    wasted_by: dict[str, float] = field(default_factory=dict)  # by cause: failure, conflict, …
    landing_attempts: int = 0  # landings tried (the conflict rate is conflicts / this)
    tokens: int = 0  # as the agents report them: spent, and of that wasted (never landed)
    cost_usd: float = 0.0
    wasted_tokens: int = 0
    wasted_cost_usd: float = 0.0
    stop_reason: str | None = None
    prompt_seconds: float = 0.0  # of the wall time, waiting for answers at the prompt

    @property
    def ended(self) -> str:
        return ending(interrupted=self.interrupted, stopped_early=self.stopped_early)

    @property
    def saved_seconds(self) -> float:
        """Against running the same work one ticket at a time (the time at the prompt left
        out); never below zero."""
        return max(0.0, self.worker_seconds - self._working_seconds)

    @property
    def _working_seconds(self) -> float:
        """The wall time but for what the person at the prompt took to answer."""
        return max(0.0, self.wall_seconds - self.prompt_seconds)

    @property
    def conflict_rate(self) -> float:
        """Conflicts per landing tried."""
        return self.conflicts / self.landing_attempts if self.landing_attempts else 0.0

    @property
    def efficiency(self) -> float:
        """Busy time / (workers × wall time but for the time at the prompt)."""
        capacity = self.workers * self._working_seconds
        return self.worker_seconds / capacity if capacity else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.stopped_early:
            return 3
        return 1 if self.deferred or self.blocked or self.waiting_to_land else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": "summary",
            "run_id": self.run_id,
            "workers": self.workers,
            "completed": list(self.completed),
            "waiting_to_land": list(self.waiting_to_land),
            "deferred": self.deferred,
            "deferred_earlier": list(self.deferred_earlier),
            "blocked": self.blocked,
            "skipped": list(self.skipped),
            "not_started": list(self.not_started),
            "wall_seconds": round(self.wall_seconds, 3),
            "prompt_seconds": round(self.prompt_seconds, 3),
            "worker_seconds": round(self.worker_seconds, 3),
            "wasted_seconds": round(self.wasted_seconds, 3),
            "wasted_by": self.wasted_by,
            "conflict_rate": round(self.conflict_rate, 3),
            "setup_seconds": round(self.setup_seconds, 3),
            "saved_seconds": round(self.saved_seconds, 3),
            "efficiency": round(self.efficiency, 3),
            "commits_landed": self.commits_landed,
            "conflicts": self.conflicts,
            "retries": self.retries,
            "throttled": self.throttled,
            "stopped_early": self.stopped_early,
            "stop_reason": self.stop_reason,
            "unusable": self.unusable,
            "tokens": self.tokens,
            "cost_usd": round(self.cost_usd, 4),
            "wasted_tokens": self.wasted_tokens,
            "wasted_cost_usd": round(self.wasted_cost_usd, 4),
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
        }


NOT_STARTED = (Phase.WAITING, Phase.RETURNED, Phase.DELAYED, Phase.PARKED,
               Phase.RUNNING, Phase.COLLECTING)  # fmt: skip


def summarize(
    ledger: Ledger,
    *,
    run_id: str,
    workers: int,
    wall: float,
    counts: Mapping[str, int],
    stop_reason: str | None,
    interrupted: bool,
    unusable: str = "",
    prompt: float = 0.0,
) -> RunSummary:
    """The summary, read from the ledger alone: each ticket is counted once, by its phase."""
    landed = tuple(ledger.ids(Phase.LANDED))
    deferred = {r.ticket_id: r.reason for r in ledger.runs(Phase.DEFERRED)}
    return RunSummary(
        run_id=run_id, workers=workers, completed=landed, deferred=deferred,
        deferred_earlier=tuple(t for t in deferred if ledger[t].earlier),
        blocked={r.ticket_id: r.blocked_by for r in ledger.runs(Phase.BLOCKED)},
        waiting_to_land=tuple(sorted(ledger.ids(Phase.LANDING))),
        skipped=tuple(ledger.ids(Phase.SKIPPED)),
        not_started=tuple(sorted(ledger.ids(*NOT_STARTED))),
        wall_seconds=wall, commits_landed=len(landed),
        landing_attempts=counts.get("landings", 0), conflicts=counts.get("conflicts", 0),
        retries=counts.get("retries", 0), throttled=counts.get("throttled", 0),
        stopped_early=stop_reason is not None and not interrupted, stop_reason=stop_reason,
        unusable=unusable, interrupted=interrupted, prompt_seconds=prompt, **_spent(ledger),
    )  # fmt: skip


def _spent(ledger: Ledger) -> dict[str, Any]:
    """Worker time and the agents' tokens and cost: spent, and not landed."""
    totals = ledger.totals()
    return {
        "worker_seconds": totals["worker_seconds"],
        "wasted_seconds": totals["wasted_seconds"],
        "wasted_by": ledger.wasted_by(),
        "setup_seconds": totals["setup_seconds"],
        "tokens": int(totals["tokens"]),
        "cost_usd": totals["cost_usd"],
        "wasted_tokens": int(totals["wasted_tokens"]),
        "wasted_cost_usd": totals["wasted_cost_usd"],
    }
