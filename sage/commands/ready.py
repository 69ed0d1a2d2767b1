"""`sage ready`: the tickets that can start now, in dispatch order."""

from __future__ import annotations

from sage.commands._common import IndexOpt, JsonOpt, emit_json, load_valid_graph
from sage.lib import graph, tickets


def command(json: JsonOpt = False, index: IndexOpt = None) -> int:
    """List ready tickets (UNPROCESSED, dependencies COMPLETED): P0 first, then longest path."""
    _, idx, dag = load_valid_graph(index)
    found = graph.ready(idx.tickets, dag)
    if json:
        emit_json([_row(t) for t in found])
        return 0
    import typer

    for t in found:
        typer.echo(f"{t.id}\t{t.priority}\t{t.title}")
    if not found:
        typer.echo("no ticket is ready", err=True)
    return 0


def _row(t: tickets.Ticket) -> dict[str, object]:
    return {
        "id": t.id,
        "title": t.title,
        "priority": t.priority,
        "type": t.type,
        "dependencies": list(t.dependencies),
        "estimate_minutes": t.estimate_minutes,
    }
