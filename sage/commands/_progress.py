"""How a stream looks: a live view on a terminal, plain lines otherwise, JSON lines with --json."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

from sage.lib.events import Event, RunSummary

PLAIN = {
    "started": "started   {ticket} (attempt {attempt}, {worker})",
    "finished": "finished  {ticket}: {outcome} in {seconds}s {detail}",
    "queued": "queued    {ticket} for landing (queue depth {depth})",
    "landed": "landed    {ticket} as {short}",
    "conflict": "conflict  {ticket}: {files_text} (with {collided_text})",
    "verify-failed": "verify    {ticket} failed: {detail}",
    "retry": "retry     {ticket} in {delay}s: {reason}",
    "deferred": "deferred  {ticket}: {reason}",
    "blocked": "blocked   {ticket} (by {by})",
    "recovered": "recovered {ticket_text}{details}",
    "stopping": "stopping  {ticket_text}{reason}",
    "killed": "killed    {ticket_text}{reason}",
    "warning": "warning   {ticket_text}{reason}",
}


class Reporter:
    """Plain lines, one per event (what a log file or CI wants)."""

    def __enter__(self) -> Reporter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """What a reporter sets up around a run (the live view starts here)."""

    def close(self) -> None:
        """And tears down."""

    def event(self, event: Event) -> None:
        line = self.line(event)
        if line:
            typer.echo(line)

    @staticmethod
    def line(event: Event) -> str | None:
        template = PLAIN.get(event.kind)
        if template is None:
            return None
        data: dict[str, Any] = {"ticket": event.ticket or "", **event.data}
        data["short"] = str(data.get("commit", ""))[:10]
        data["files_text"] = ", ".join(data.get("files", [])) or "?"
        data["collided_text"] = ", ".join(data.get("collided_with", [])) or "the target"
        data["ticket_text"] = f"{event.ticket}: " if event.ticket else ""
        data["details"] = ", ".join(f"{k}={v}" for k, v in event.data.items() if v)
        data.setdefault("reason", "")
        data.setdefault("detail", "")
        stamp = time.strftime("%H:%M:%S")
        try:
            return f"[{stamp}] " + template.format(**data)
        except (KeyError, IndexError):
            return f"[{stamp}] {event.kind} {event.ticket or ''} {event.data}"

    def summary(self, summary: RunSummary, run_dir: Path) -> None:
        for line in summary_lines(summary, run_dir):
            typer.echo(line)


class JsonReporter(Reporter):
    def event(self, event: Event) -> None:
        sys.stdout.write(json.dumps(event.as_dict(), default=str) + "\n")
        sys.stdout.flush()

    def summary(self, summary: RunSummary, run_dir: Path) -> None:
        data = summary.as_dict() | {"run_dir": str(run_dir)}
        sys.stdout.write(json.dumps(data) + "\n")


class LiveReporter(Reporter):
    """A rich Live view: each worker's ticket and elapsed time, done / total, queue depth."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.running: dict[str, float] = {}
        self.done = self.total = self.depth = 0
        self.deferred = 0
        self._lock = threading.Lock()
        self.live = Live(console=self.console, refresh_per_second=4, get_renderable=self._render)

    def open(self) -> None:
        self.live.start()

    def close(self) -> None:
        self.live.stop()

    def event(self, event: Event) -> None:
        with self._lock:
            self._update(event)
        line = Reporter.line(event)
        if line and event.kind not in ("started", "queued", "finished"):
            self.console.print(line, highlight=False, markup=False)

    def _update(self, event: Event) -> None:
        kind, tid = event.kind, event.ticket or ""
        if kind == "run-started":
            self.total = int(event.data.get("tickets", 0))
        elif kind == "started":
            self.running[tid] = time.monotonic()
        elif kind in ("exited", "finished"):
            self.running.pop(tid, None)
        elif kind in ("queued", "landed"):
            self.depth = int(event.data.get("depth", self.depth))
            self.done += kind == "landed"
        elif kind == "deferred":
            self.deferred += 1

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(box=None, show_header=False, pad_edge=False)
        with self._lock:
            for slot, (tid, since) in enumerate(sorted(self.running.items()), 1):
                table.add_row(f"[{slot}]", tid, f"{time.monotonic() - since:5.1f}s")
            table.add_row(
                "",
                f"landed {self.done}/{self.total}, deferred {self.deferred}",
                f"queue {self.depth}",
            )
        return table


def make(*, json: bool) -> Reporter:
    if json:
        return JsonReporter()
    if sys.stdout.isatty():
        return LiveReporter()
    return Reporter()


def summary_lines(s: RunSummary, run_dir: Path) -> list[str]:
    state = "interrupted" if s.interrupted else "stopped early" if s.stopped_early else "finished"
    lines = [
        "",
        f"SUMMARY ({state}): {len(s.completed)} completed, {len(s.deferred)} deferred, "
        f"{len(s.blocked)} blocked, {len(s.not_started)} not started",
        f"  wall {s.wall_seconds:.1f}s, worker time {s.worker_seconds:.1f}s, saved "
        f"{max(0.0, s.saved_seconds):.1f}s against sequential, efficiency {s.efficiency:.0%} "
        f"({s.workers} worker{'s' if s.workers != 1 else ''})",
        f"  commits landed {s.commits_landed}, conflicts {s.conflicts}, retries {s.retries}",
    ]
    lines += [f"  deferred {tid}: {why}" for tid, why in sorted(s.deferred.items())]
    lines += [f"  blocked {tid} (by {by})" for tid, by in sorted(s.blocked.items())]
    if s.deferred or s.blocked:
        lines.append(
            "  deferred tickets stay deferred: `sage stream --auto --retry-deferred` runs them again"
        )
    lines.append(f"  logs and events: {run_dir}")
    return lines
