"""`sage plan`: the dry run — waves, critical path, lower bound, simulated makespans."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated

import typer

from sage.commands._common import IndexOpt, JsonOpt, emit_json, load_valid_graph, minutes
from sage.lib import scheduler
from sage.lib.tickets import Ticket
from sage.lib.words import counted


class Format(StrEnum):
    text = "text"
    gantt = "gantt"


def command(
    parallel: Annotated[
        str, typer.Option("--parallel", metavar="N|auto", help="Workers to plan for.")
    ] = "auto",
    format: Annotated[
        Format, typer.Option("--format", help="text, or gantt: the simulated schedule as mermaid.")
    ] = Format.text,
    json: JsonOpt = False,
    index: IndexOpt = None,
) -> int:
    """Plan a run without running anything: waves, critical path and makespan for N workers.

    The lower bound is max(critical path, total work / N); makespans are simulated for dynamic
    dispatch and for the seed's batch waves. Tickets whose `files` overlap run one at a time:
    the plan lists those its simulated run keeps apart, and what that costs in makespan.
    --json adds each ticket's simulated start, finish and worker; --format gantt draws that
    schedule as a mermaid gantt chart.
    """
    _, idx, dag = load_valid_graph(index)
    result = scheduler.plan(idx.tickets, dag, parallel)
    slots = list(result.slots())  # the plan's own simulation: no second one
    if json:
        emit_json(result.as_dict() | {"timeline": timeline(slots)})
        return 0
    if format == Format.gantt:
        typer.echo(gantt(result, slots, {t.id: t for t in idx.tickets}))
        return 0
    if result.workers.warning:
        typer.echo(f"warning: {result.workers.warning}", err=True)
    if not result.stats.tickets:
        typer.echo(nothing_to_run(idx.tickets))
        return 0
    render(result)
    return 0


def nothing_to_run(tickets: Sequence[Ticket]) -> str:
    """What the index holds when no ticket is left to plan, and how a deferred one runs again.
    An UNPROCESSED ticket the plan left out waits on one that is not done (deferred, or in
    another run's hands): blocked by it, as a run would say."""
    states = Counter(t.state.lower().replace("_", " ") for t in tickets)
    behind = states.pop("unprocessed", 0)
    held = [f"{n} {state}" for state, n in sorted(states.items())]
    held += [f"{behind} blocked by them"] if behind else []
    held_text = ", ".join(held) or "no tickets"
    again = "`sage stream --auto --retry-deferred` runs the deferred again"
    return f"plan: nothing to run ({held_text})" + (f"; {again}" if states["deferred"] else "")


def render(p: scheduler.Plan) -> None:
    def fmt(v: float) -> str:
        return minutes(v, p.unit)

    typer.echo(
        f"plan for {counted(p.workers.workers, 'worker')}, {counted(p.stats.tickets, 'ticket')} to run"
    )
    for number, wave in enumerate(p.waves, 1):
        typer.echo(f"  wave {number} ({len(wave)}): {' '.join(wave)}")
    typer.echo(
        f"critical path: {fmt(p.critical_path.minutes)}: {' → '.join(p.critical_path.tickets)}"
    )
    typer.echo(f"total work: {fmt(p.total)}")
    typer.echo(
        f"lower bound: {fmt(p.lower_bound)} = max(critical path, work / {p.workers.workers})"
    )
    typer.echo(f"makespan, dynamic dispatch: {fmt(p.dynamic_makespan)}")
    if p.apart:
        _apart_cost(p, fmt)
    typer.echo(f"makespan, batch waves: {fmt(p.batch_makespan)}")
    s = p.stats
    typer.echo(
        f"batches: {counted(s.tickets, 'ticket')}, {counted(s.workers, 'worker')} → "
        f"{counted(s.batches, 'batch', 'batches')} "
        f"of up to {s.per_batch} (last {s.last_batch})"
    )
    for group in p.apart:  # after the figures: the list may be long
        typer.echo(f"kept apart: {', '.join(group.tickets)} (files: {', '.join(group.files)})")
    for tid, cause in sorted(p.blocked.items()):
        typer.echo(f"blocked: {tid} (waits on {cause})")


def _apart_cost(p: scheduler.Plan, fmt: Callable[[float], str]) -> None:
    cost = p.dynamic_makespan - p.together_makespan
    costs = f"costs {fmt(cost)}" if cost > 0 else "costs nothing"  # list scheduling: it may not
    typer.echo(
        f"  ({fmt(p.together_makespan)} if the tickets kept apart ran at once: "
        f"keeping them apart {costs})"
    )


def timeline(slots: list[scheduler.Slot]) -> list[dict[str, object]]:
    workers = scheduler.workers_of(slots)
    return [
        {"ticket": s.ticket, "start": s.start, "finish": s.finish, "worker": workers[s.ticket] + 1}
        for s in slots
    ]


def gantt(p: scheduler.Plan, slots: list[scheduler.Slot], tickets: dict[str, Ticket]) -> str:
    """Mermaid: one section per simulated worker; the critical path marked `crit`. Times are
    seconds from 0 (`dateFormat X`), one second per estimated minute (or per ticket)."""
    workers, critical = scheduler.workers_of(slots), set(p.critical_path.tickets)
    unit = "min" if p.unit == "minutes" else "tickets"
    lines = ["gantt", f"    title sage plan: {counted(p.workers.workers, 'worker')}, dynamic dispatch, "
             f"makespan {p.dynamic_makespan:g} {unit}", "    dateFormat X", "    axisFormat %s"]  # fmt: skip
    for worker in sorted(set(workers.values())):
        lines.append(f"    section worker {worker + 1}")
        for s in (s for s in slots if workers[s.ticket] == worker):
            tag = "crit, " if s.ticket in critical else ""
            name = _gantt_text(f"{s.ticket} {tickets[s.ticket].title}")
            lines.append(f"    {name} :{tag}{s.ticket}, {s.start:g}, {s.finish:g}")
    return "\n".join(lines)


def _gantt_text(text: str) -> str:
    """Mermaid ends a task name at ':' and a statement at ';' or '#'."""
    return " ".join(text.replace(":", " -").replace(";", ",").replace("#", "no.").split())
