"""A run read back from its `events.jsonl`: each attempt's spans, each ticket's last phase, the
summary. `sage status`, `sage log` and `sage report` read runs through this module only.

Runs live in `<git common dir>/sage/runs/<run-id>/` (`Project.runs_dir`); run ids start with the
time they began, so sorting by name is sorting by age.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sage.lib import locks, proc
from sage.lib.errors import SageError
from sage.lib.project import Project

# The span kinds a timeline draws, in legend order.
KINDS = ("running", "failed", "waiting", "landed", "conflict", "verify-failed", "retry", "asked")
LANDING_END = {"landed": "landed", "conflict": "conflict", "verify-failed": "verify-failed"}
FINAL = {"landed": "landed", "deferred": "deferred", "blocked": "blocked"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    """A stretch of one ticket's attempt, in seconds from the start of the run."""

    ticket: str
    lane: str  # "slot 0" …, "queue", "retries", "prompt"
    kind: str  # one of KINDS
    start: float
    end: float
    attempt: int = 1
    note: str = ""
    open: bool = False  # still going when the events were read (drawn up to then)


@dataclass(frozen=True, slots=True, kw_only=True)
class Running:
    """An attempt whose worker has not finished (as far as the events say)."""

    ticket: str
    slot: int
    attempt: int
    title: str
    since: datetime
    log: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Asked:
    """The question an interactive run has on screen, not answered yet."""

    ticket: str
    title: str
    since: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    run_id: str
    folder: Path
    started: datetime | None
    workers: int
    spans: tuple[Span, ...]
    phases: dict[str, str]  # ticket: landed | deferred | blocked | skipped | returned | …
    running: tuple[Running, ...]
    summary: dict[str, Any] | None
    events: tuple[dict[str, Any], ...] = field(repr=False)
    live: bool = False  # read while its stream runs
    asking: Asked | None = None  # an interactive run waits for the person at its prompt

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @property
    def seconds(self) -> float:
        return max((s.end for s in self.spans), default=0.0)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_dirs(project: Project) -> list[Path]:
    """Run folders with an events file, newest first."""
    runs = project.runs_dir
    found = [p for p in runs.iterdir() if (p / "events.jsonl").is_file()] if runs.is_dir() else []
    return sorted(found, key=age, reverse=True)


def age(folder: Path) -> tuple[str, str]:
    """Sorts run folders oldest first: by the second in their id, then (two runs in the same
    second) by the time of their first event."""
    try:
        with open(folder / "events.jsonl", encoding="utf-8") as handle:
            first = str(json.loads(handle.readline()).get("at", ""))
    except (OSError, ValueError, AttributeError):
        first = ""
    return (folder.name[:15], first)


def find_run(project: Project, run: str | None = None) -> Path:
    """The newest run, or the one whose id is (or starts with) `run`."""
    dirs = run_dirs(project)
    if not dirs:
        raise SageError(
            f"no run yet: nothing in {project.shown(project.runs_dir)}",
            hint="start one: sage stream --auto",
        )
    if run is None:
        return dirs[0]
    matches = [p for p in dirs if p.name == run] or [p for p in dirs if p.name.startswith(run)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        names = ", ".join(p.name for p in dirs[:3])
        raise SageError(f"{what} matching {run!r}", hint=f"the newest runs are: {names}")
    return matches[0]


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every complete line; a line being written (a live run) or damaged is skipped."""
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("at"), str):
            events.append(data)
    return events


def load(folder: Path, *, live: bool = False) -> History:
    """The run in `folder`; `live`: its stream still runs, so what is open lasts until now."""
    events = read_events(folder / "events.jsonl")
    builder = _Builder(parse_time(events[0]["at"]) if events else None)
    for event in events:
        builder.take(event)
    now = datetime.now(UTC) if live and builder.start else None
    return builder.history(folder, events, now=now)


class _Builder:
    """Folds events, in order, into spans and phases."""

    def __init__(self, start: datetime | None) -> None:
        self.start = start
        self.workers = 0
        self.spans: list[Span] = []
        self.phases: dict[str, str] = {}
        self.running: dict[str, tuple[dict[str, Any], float]] = {}  # ticket: (started, at)
        self.queued: dict[str, float] = {}
        self.attempts: dict[str, int] = {}  # ticket: its newest attempt's number
        self.summary: dict[str, Any] | None = None
        self.asked: dict[str, Any] | None = None  # the question without an answer yet

    def at(self, event: dict[str, Any]) -> float:
        return (parse_time(event["at"]) - self.start).total_seconds() if self.start else 0.0

    def take(self, event: dict[str, Any]) -> None:
        kind, tid, t = event.get("event"), event.get("ticket") or "", self.at(event)
        if kind == "run-started":
            self.workers = int(event.get("workers", 0))
        elif kind == "started":
            self.running[tid] = (event, t)
            self.attempts[tid] = int(event.get("attempt", 1))
            self.phases[tid] = "running"
        elif kind in ("exited", "finished"):
            self._ran(tid, event, t)
        elif kind == "queued":
            self.queued[tid] = t
            self.phases[tid] = "landing"
        elif kind in LANDING_END:
            self._landing(tid, kind, t, event)
        elif kind == "retry":
            self._retry(tid, event, t)
        elif kind in ("asked", "answered"):
            self._prompt(tid, kind, event, t)
        else:
            self._other(str(kind), tid, event)

    def _ran(self, tid: str, event: dict[str, Any], t: float) -> None:
        failed = event.get("event") == "finished" and event.get("outcome") != "ok"
        opened = self.running.pop(tid, None)
        if opened is None:  # "finished" after "exited": the span is drawn already
            if failed:
                self._mark_failed(tid, event)
            return
        started, since = opened
        note = str(event.get("detail") or event.get("outcome") or "exited")
        self.spans.append(Span(ticket=tid, lane=f"slot {started.get('slot', 0)}",
                               kind="failed" if failed else "running", start=since, end=t,
                               attempt=int(started.get("attempt", 1)), note=note))  # fmt: skip
        self.phases[tid] = "failed" if failed else "collecting"

    def _mark_failed(self, tid: str, event: dict[str, Any]) -> None:
        """The process exited, but its work could not be collected (or queued)."""
        for n in range(len(self.spans) - 1, -1, -1):
            if self.spans[n].ticket == tid and self.spans[n].lane.startswith("slot"):
                note = str(event.get("detail") or event.get("outcome"))
                self.spans[n] = replace(self.spans[n], kind="failed", note=note)
                self.phases[tid] = "failed"
                return

    def _landing(self, tid: str, kind: str, t: float, event: dict[str, Any]) -> None:
        since = self.queued.pop(tid, t)
        note = str(event.get("detail") or event.get("commit", ""))[:80]
        self.spans.append(Span(ticket=tid, lane="queue", kind=LANDING_END[kind], start=since,
                               end=t, attempt=self.attempts.get(tid, 1), note=note))  # fmt: skip
        self.phases[tid] = "landed" if kind == "landed" else "rejected"

    def _retry(self, tid: str, event: dict[str, Any], t: float) -> None:
        delay = float(event.get("delay", 0.0))
        self.spans.append(Span(ticket=tid, lane="retries", kind="retry", start=t, end=t + delay,
                               attempt=int(event.get("attempt", 2)),
                               note=str(event.get("reason", ""))))  # fmt: skip
        self.phases[tid] = "retrying"

    def _prompt(self, tid: str, kind: str, event: dict[str, Any], t: float) -> None:
        """An interactive run's question: open until answered (its span, on the prompt's lane,
        shows the time the run waited for the person)."""
        asked, self.asked = self.asked, event if kind == "asked" else None
        if kind == "answered" and asked is not None:
            self.spans.append(Span(ticket=tid, lane="prompt", kind="asked", start=self.at(asked),
                                   end=t, note=f"answered {event.get('answer', '?')}"))  # fmt: skip

    def _other(self, kind: str, tid: str, event: dict[str, Any]) -> None:
        if kind in FINAL and tid:
            self.phases[tid] = FINAL[kind]
        elif kind in ("stopping", "killed") and tid:
            self.phases[tid] = "returned"
        elif kind in ("summary", "run-finished"):
            self.summary = event
            for tid in event.get("skipped", []):
                self.phases[tid] = "skipped"

    def open_spans(self, end: float) -> list[Span]:
        """What the events leave open (a live run, or work waiting to land) runs to `end`."""
        spans = [Span(ticket=tid, lane=f"slot {e.get('slot', 0)}", kind="running", start=t,
                      end=end, attempt=int(e.get("attempt", 1)), note="running", open=True)
                 for tid, (e, t) in self.running.items()]  # fmt: skip
        spans += [Span(ticket=tid, lane="queue", kind="waiting", start=t, end=end,
                       attempt=self.attempts.get(tid, 1), note="waiting to land", open=True)
                  for tid, t in self.queued.items()]  # fmt: skip
        if self.asked is not None and self.summary is None:
            spans.append(Span(ticket=str(self.asked.get("ticket") or ""), lane="prompt",
                              kind="asked", start=self.at(self.asked), end=end,
                              note="waiting for an answer", open=True))  # fmt: skip
        return spans

    def history(
        self, folder: Path, events: list[dict[str, Any]], *, now: datetime | None
    ) -> History:
        end = self.at(events[-1]) if events else 0.0
        if now is not None and self.start is not None:
            end = max(end, (now - self.start).total_seconds())
        spans = self.spans + self.open_spans(end)
        running = tuple(
            Running(ticket=tid, slot=int(e.get("slot", 0)), attempt=int(e.get("attempt", 1)),
                    title=str(e.get("title", "")), since=parse_time(e["at"]),
                    log=str(e.get("log", "")))
            for tid, (e, _) in self.running.items()
        )  # fmt: skip
        return History(
            run_id=folder.name, folder=folder, started=self.start, workers=self.workers,
            spans=tuple(spans), phases=dict(self.phases),
            running=running if self.summary is None else (), summary=self.summary,
            events=tuple(events), live=now is not None,
            asking=self._asking() if self.summary is None else None,
        )  # fmt: skip

    def _asking(self) -> Asked | None:
        e = self.asked
        if e is None:
            return None
        return Asked(ticket=str(e.get("ticket") or ""), title=str(e.get("title", "")),
                     since=parse_time(e["at"]))  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Holder:
    """The process that holds the repository's stream lock, if any."""

    pid: int
    since: str


def stream_holder(project: Project) -> Holder | None:
    """Read-only: the owner file next to the stream lock, if its process is alive."""
    info = locks.owner(project.locks_dir / "stream.lock")
    pid = info.get("pid") if info else None
    if not isinstance(pid, int) or info is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return Holder(pid=pid, since=str(info.get("since", "")))


def worker_pids(project: Project) -> dict[str, int]:
    """Live workers' process groups by ticket (the pid files the executor keeps)."""
    folder = project.locks_dir / "workers"
    found = {}
    for path in sorted(folder.glob("*.pid")) if folder.is_dir() else []:
        named = proc.pid_entry(path)
        if named:
            found[named[0]] = named[1]
    return found
