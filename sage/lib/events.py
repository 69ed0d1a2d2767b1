"""What a run reports: event values, the append-only journal, and the summary."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sage.lib.tickets import now

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

    @property
    def saved_seconds(self) -> float:
        """Against running the same work one ticket at a time."""
        return self.worker_seconds - self.wall_seconds

    @property
    def efficiency(self) -> float:
        """Busy time / (workers × wall time)."""
        capacity = self.workers * self.wall_seconds
        return self.worker_seconds / capacity if capacity else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.stopped_early:
            return 3
        return 1 if self.deferred or self.blocked else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "event": "summary",
            "run_id": self.run_id,
            "workers": self.workers,
            "completed": list(self.completed),
            "deferred": self.deferred,
            "blocked": self.blocked,
            "not_started": list(self.not_started),
            "wall_seconds": round(self.wall_seconds, 3),
            "worker_seconds": round(self.worker_seconds, 3),
            "saved_seconds": round(self.saved_seconds, 3),
            "efficiency": round(self.efficiency, 3),
            "commits_landed": self.commits_landed,
            "conflicts": self.conflicts,
            "retries": self.retries,
            "stopped_early": self.stopped_early,
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
        }
