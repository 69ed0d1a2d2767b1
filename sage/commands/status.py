"""`sage status`: what runs where, the queue, what is ready or blocked and why, an ETA."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from sage.commands._common import IndexOpt, JsonOpt, checked, emit_json, open_state
from sage.lib import lazy
from sage.lib.history import History, parse_time
from sage.lib.words import counted, ending

if TYPE_CHECKING:
    from sage.lib import status as statuses
else:  # imported on first use: every command (and git hook) starts faster
    statuses = lazy.module("sage.lib.status")


def command(json: JsonOpt = False, index: IndexOpt = None) -> int:
    """Show the newest run (live or finished), what each worker slot runs and since when, the
    commit queue, the tickets ready, waiting on dependencies or blocked (and by what), and about
    how long the open tickets take.

    Read-only: safe to run from another terminal while a stream runs. (Only the first command
    after upgrading from a sage that kept its run state in .sage/ moves that state.)
    """
    project = open_state(index)
    idx, graph = checked(project)
    found = statuses.read(project, idx, graph)
    if json:
        emit_json(found.as_dict())
        return 0
    for line in lines(found):
        typer.echo(line)
    return 0


def lines(s: statuses.Status) -> list[str]:
    out = [_run_line(s)]
    out += _running_lines(s)
    queue = ", ".join(f"#{e.seq} {e.ticket_id} ({e.status}{_since(e.queued_at)})" for e in s.queue)
    out.append(f"queue: {len(s.queue)} waiting to land: {queue}" if s.queue else "queue: empty")
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(s.states.items()))
    out.append(f"tickets: {counts or 'none'}")
    out += _open_lines(s)
    out.append(_eta_line(s))
    return out


def _run_line(s: statuses.Status) -> str:
    run = s.run
    if run is None:
        return "run: none yet (sage stream starts one)"
    if s.holder is not None:
        return f"run {run.run_id}: running (PID {s.holder.pid}, {_ago(run)})"
    if run.summary is None:
        return f"run {run.run_id}: ended without a summary (killed?); rerun to recover"
    sm = run.summary
    ended = ending(
        interrupted=bool(sm.get("interrupted")), stopped_early=bool(sm.get("stopped_early"))
    )
    why = sm.get("stop_reason") if ended == "stopped early" else None
    return (
        f"run {run.run_id}: {ended}, {len(sm.get('completed', []))} completed, "
        f"{len(sm.get('deferred', {}))} deferred, {len(sm.get('blocked', {}))} blocked "
        f"(exit {sm.get('exit_code')})" + (f": {why}" if why else "")
    )


def _ago(run: History) -> str:
    if run.started is None:
        return "just started"
    return f"started {run.started:%H:%M:%S} UTC, {_elapsed(run.started)} ago"


def _elapsed(since: datetime) -> str:
    seconds = int((datetime.now(UTC) - since).total_seconds())
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _since(stamp: str) -> str:
    try:
        return f" since {parse_time(stamp):%H:%M:%S}"
    except ValueError:
        return ""


def _running_lines(s: statuses.Status) -> list[str]:
    if s.holder is None:
        return []
    if not s.running and s.asking is not None:
        q = s.asking
        return [f"  waiting for an answer at the prompt since {q.since:%H:%M:%S} UTC: "
                f"run {q.ticket} {q.title!r}?"]  # fmt: skip
    if not s.running:
        return ["  no worker running now (between tickets, landing, or waiting for a retry)"]
    return [
        f"  slot {r.slot + 1}: {r.ticket} {r.title!r} attempt {r.attempt}, since "
        f"{r.since:%H:%M:%S} ({_elapsed(r.since)})"
        + (f", PID {s.pids[r.ticket]}" if r.ticket in s.pids else "")
        for r in sorted(s.running, key=lambda r: r.slot)
    ]


def _open_lines(s: statuses.Status) -> list[str]:
    out = [f"ready: {' '.join(s.ready)}"] if s.ready else []
    out += [f"waiting: {tid} (on {', '.join(deps)})" for tid, deps in s.waiting.items()]
    out += [f"blocked: {tid} (by {cause})" for tid, cause in sorted(s.blocked.items())]
    out += [f"deferred: {tid}: {why}" for tid, why in sorted(s.deferred.items())]
    return out


def _eta_line(s: statuses.Status) -> str:
    if s.eta is None:
        open_ = s.states.get("UNPROCESSED", 0) + s.states.get("IN_PROGRESS", 0) - len(s.blocked)
        if open_ <= 0:
            blocked = " that can run (the rest is blocked)" if s.blocked else " to run"
            return f"eta: nothing left{blocked}"
        return "eta: unknown (no estimates, and no run to time tickets by)"
    minutes = s.eta.seconds / 60
    size = f"{minutes:.0f} min" if minutes >= 1 else f"{max(1, round(s.eta.seconds))} s"
    return f"eta: about {size} with {counted(s.eta.workers, 'worker')}, {s.eta.basis}"


def register(app: typer.Typer) -> None:
    app.command("status")(command)
