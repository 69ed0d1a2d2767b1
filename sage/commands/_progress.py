"""How a stream looks: a live view on a terminal, plain lines otherwise, JSON lines with --json."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from sage.lib.events import Event, RunSummary
from sage.lib.tally import Attempt, Counts, Tally
from sage.lib.words import counted

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
    "kept-apart": "waiting   {ticket}: its files overlap {by}'s, which has not landed yet",
    "may-conflict": "warning   {ticket}: {landed} just landed changes to {files_text}, which it changed too",
    "recovered": "recovered {ticket_text}{details}",
    "stopping": "stopping  the run: {reason}{then_text}",
    "returned": "returned  {ticket} to UNPROCESSED: {reason}",  # a "stopping" for one ticket
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

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """While the user is asked something: plain lines need no pause."""
        yield

    def event(self, event: Event) -> None:
        line = self.line(event)
        if line:
            typer.echo(line)

    @staticmethod
    def line(event: Event) -> str | None:
        given_back = event.kind == "stopping" and event.ticket  # back in the backlog, unharmed
        template = PLAIN.get("returned" if given_back else event.kind)
        if template is None:
            return None
        data: dict[str, Any] = {"ticket": event.ticket or "", **event.data}
        data["short"] = str(data.get("commit", ""))[:10]
        data["files_text"] = ", ".join(data.get("files", [])) or "?"
        data["collided_text"] = ", ".join(data.get("collided_with", [])) or "the target"
        data["ticket_text"] = f"{event.ticket}: " if event.ticket else ""
        data["details"] = ", ".join(f"{k}={v}" for k, v in event.data.items() if v)
        data["then_text"] = f"; {data['then']}" if data.get("then") else ""
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
        if event.kind == "run-finished":
            return  # the summary line below says the same, with the run's folder
        sys.stdout.write(json.dumps(event.as_dict(), default=str) + "\n")
        sys.stdout.flush()

    def summary(self, summary: RunSummary, run_dir: Path) -> None:
        data = summary.as_dict() | {"run_dir": str(run_dir)}
        sys.stdout.write(json.dumps(data) + "\n")


class LiveReporter(Reporter):
    """A rich Live view: a line per worker slot (ticket, title, attempt, elapsed), how many
    tickets are ready, waiting on dependencies, queued to land and blocked, and an ETA.

    Every write to the screen (an event's line, a redraw, the view going and coming back) is
    under one lock: rich moves the cursor up over the view's last height before it writes, so
    a redraw from another thread between that move and a line's text can wipe lines above the
    view. A view that comes back after a prompt is a new one: the old one's height wiped the
    question just answered and the lines above it."""

    def __init__(self, tally: Tally | None = None) -> None:
        from rich.console import Console

        self.console = Console()
        self.tally = tally
        self._lock = threading.Lock()  # the tally: events and redraws come from threads
        self._screen = threading.Lock()  # taken before `_lock`, never after
        self._live: Any = None  # the rich Live while shown
        self._closed = threading.Event()
        self._ticker: threading.Thread | None = None  # from the run's start: the view is up

    def open(self) -> None:
        """The view itself appears when the run starts: its redraws are a thread, and the
        stream forks its lander before any thread runs (recovery's lines print as lines)."""

    def close(self) -> None:
        self._closed.set()
        with self._screen:
            self._hide()
        if self._ticker is not None:
            self._ticker.join()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The live view redraws over the terminal's last lines: take it away while a prompt
        is up."""
        with self._screen:
            self._hide()
        try:
            yield
        finally:
            with self._screen:
                if self._ticker is not None:  # the run had started: the view comes back
                    self._show()

    def event(self, event: Event) -> None:
        if event.kind == "run-started" and self._ticker is None:
            with self._screen:
                self._show()
            self._ticker = threading.Thread(target=self._tick, name="sage-live", daemon=True)
            self._ticker.start()
        if self.tally is not None:
            with self._lock:
                self.tally.take(event)
        line = Reporter.line(event)
        if line and event.kind not in ("started", "queued", "finished"):
            with self._screen:
                self.console.print(line, highlight=False, markup=False)

    def _show(self) -> None:
        from rich.live import Live

        self._live = Live(console=self.console, auto_refresh=False, transient=True,
                          get_renderable=self._render)  # fmt: skip
        self._live.start(refresh=True)

    def _hide(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _tick(self) -> None:
        """Redraw four times a second (the elapsed times move), never beside another write."""
        while not self._closed.wait(0.25):
            with self._screen:
                if self._live is not None:
                    self._live.refresh()

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, show_header=False, pad_edge=False)
        if self.tally is None:
            return table
        with self._lock:
            rows, counts, eta = slot_rows(self.tally), self.tally.counts(), self.tally.eta
            guessed, stopping = self.tally.eta_guessed, self.tally.stopping
        for row in rows:
            table.add_row(*row)
        return Group(table, Text(counts_line(counts, eta, guessed=guessed, stopping=stopping)))


def slot_rows(tally: Tally) -> list[tuple[str, str, str, str, str]]:
    """One row per worker slot: slot, ticket, title, attempt, elapsed; idle slots too."""
    running = tally.running()
    count = max([tally.workers, *(slot + 1 for slot, _ in running)])
    rows = []
    for slot in range(count):
        mine = [a for s, a in running if s == slot]
        rows += [_slot_row(slot, a) for a in mine] or [(f"slot {slot + 1}", "idle", "", "", "")]
    return rows


def _slot_row(slot: int, a: Attempt) -> tuple[str, str, str, str, str]:
    title = a.title if len(a.title) <= 40 else a.title[:39] + "…"
    elapsed = f"{time.monotonic() - a.since:5.1f}s"
    return (f"slot {slot + 1}", a.ticket, title, f"attempt {a.attempt}", elapsed)


def counts_line(
    c: Counts, eta: float | None, *, guessed: bool = False, stopping: bool = False
) -> str:
    """`guessed`: the ETA takes the estimates' minutes as minutes (nothing timed yet).
    `stopping`: nothing new starts, so no ETA of the backlog; the run ends with its running
    work, whose end nobody can tell."""
    parts = [f"ready {c.ready}", f"waiting on dependencies {c.waiting}",
             f"queued to land {c.landing}", f"blocked {c.blocked}",
             f"landed {c.landed}/{c.total}"]  # fmt: skip
    parts += [f"deferred {c.deferred}"] if c.deferred else []
    parts += [f"retrying {c.retrying}"] if c.retrying else []
    if stopping:
        parts.append("stopping: nothing new starts")
    elif eta is not None:
        size = f"~{eta / 60:.0f} min" if eta >= 90 else f"~{eta:.0f}s"
        parts.append(f"eta {size}" + (" from the estimates" if guessed else ""))
    return " · ".join(parts)


def make(*, json: bool, tally: Callable[[], Tally] | None = None) -> Reporter:
    """`tally` makes what the live view counts: only a terminal needs it."""
    if json:
        return JsonReporter()
    if sys.stdout.isatty():
        return LiveReporter(tally() if tally else None)
    return Reporter()


def summary_lines(s: RunSummary, run_dir: Path) -> list[str]:
    """Every ticket the run could take on, counted once: completed, waiting to land, deferred,
    blocked, skipped or not started."""
    extra = "".join(
        f", {n} {what}"
        for n, what in ((len(s.waiting_to_land), "waiting to land"), (len(s.skipped), "skipped"))
        if n
    )
    lines = [
        "",
        f"SUMMARY ({s.ended}): {len(s.completed)} completed, {len(s.deferred)} deferred, "
        f"{len(s.blocked)} blocked, {len(s.not_started)} not started{extra}",
        f"  wall {s.wall_seconds:.1f}s{_at_prompt(s)}, worker time {s.worker_seconds:.1f}s, "
        + (f"saved {s.saved_seconds:.1f}s against sequential, " if s.workers > 1 else "")
        + f"efficiency {s.efficiency:.0%} ({counted(s.workers, 'worker')})",
        f"  commits landed {s.commits_landed}, conflicts {s.conflicts}, retries {s.retries}"
        + (f", throttled {s.throttled}" if s.throttled else "")
        + (
            f", worker time not landed {s.wasted_seconds:.1f}s ({_by(s.wasted_by)})"
            if _shown(s.wasted_seconds)  # a few quick failures are told by the retries
            else ""
        )
        + (f", slot setup {s.setup_seconds:.1f}s" if s.setup_seconds else ""),
    ]
    if s.tokens or s.cost_usd:
        wasted = s.wasted_tokens or s.wasted_cost_usd
        lost = f"; not landed: {s.wasted_tokens} tokens, ${s.wasted_cost_usd:.2f}" if wasted else ""
        lines.append(f"  agents: {s.tokens} tokens, ${s.cost_usd:.2f} spent{lost}")
    if s.stop_reason and not s.interrupted:
        lines.append(f"  stopped: {s.stop_reason}")
    lines += _ticket_lines(s)
    if s.deferred:
        lines.append(
            "  deferred tickets stay deferred: `sage stream --auto --retry-deferred` runs them again"
        )
    if s.waiting_to_land:
        lines.append(
            "  waiting tickets land with `sage queue process` (or the next `sage stream`) once "
            "nothing is in the way"
        )
    lines.append(f"  logs and events: {run_dir} (a timeline and the graph: `sage report`)")
    return lines


def _at_prompt(s: RunSummary) -> str:
    """How much of the wall time was spent waiting for answers (left out of the efficiency)."""
    return f" ({s.prompt_seconds:.1f}s of it at the prompt)" if _shown(s.prompt_seconds) else ""


def _shown(seconds: float) -> bool:
    """Whether a time is worth a part of the summary: it does not read "0.0s"."""
    return seconds >= 0.05


def _by(causes: dict[str, float]) -> str:
    return ", ".join(f"{cause} {seconds:.1f}s" for cause, seconds in causes.items())


def _ticket_lines(s: RunSummary) -> list[str]:
    earlier = set(s.deferred_earlier)
    lines = [f"  waiting to land {tid}" for tid in s.waiting_to_land]
    lines += [
        f"  deferred {tid}{' (by an earlier run)' if tid in earlier else ''}: {why}"
        for tid, why in sorted(s.deferred.items())
    ]
    lines += [f"  blocked {tid} (by {by})" for tid, by in sorted(s.blocked.items())]
    lines += [f"  skipped {tid}" for tid in s.skipped]
    return lines
