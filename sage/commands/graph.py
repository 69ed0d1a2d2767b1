"""`sage graph`: the DAG with states, as mermaid, dot or JSON."""

from __future__ import annotations

import json as jsonlib
from enum import StrEnum
from typing import Annotated

import typer

from sage.commands._common import IndexOpt, load_index
from sage.lib import graph as dag
from sage.lib.tickets import Ticket


class Format(StrEnum):
    mermaid = "mermaid"
    dot = "dot"
    json = "json"


COLOURS = {"UNPROCESSED": "#ffffff", "IN_PROGRESS": "#fff3b0", "COMPLETED": "#c7f0c2",
           "DEFERRED": "#f7c6c5"}  # fmt: skip


def command(
    format: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.mermaid,
    index: IndexOpt = None,
) -> int:
    """Print the ticket DAG with each ticket's state (edges point from dependency to dependent)."""
    _, idx = load_index(index)
    tickets = list(idx.tickets)
    edges = [(d, t.id) for t in tickets for d in t.dependencies]
    render = {Format.mermaid: mermaid, Format.dot: dot, Format.json: as_json}[format]
    typer.echo(render(tickets, edges))
    return 0


def _node(tid: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in tid)


def _label(t: Ticket) -> str:
    text = f"{t.id}: {t.title} ({t.state})"
    return text.replace('"', "'")


def mermaid(tickets: list[Ticket], edges: list[tuple[str, str]]) -> str:
    lines = ["graph TD"]
    lines += [f'  {_node(t.id)}["{_label(t)}"]:::{t.state.lower()}' for t in tickets]
    lines += [f"  {_node(a)} --> {_node(b)}" for a, b in edges]
    lines += [f"  classDef {s.lower()} fill:{c}" for s, c in COLOURS.items()]
    return "\n".join(lines)


def dot(tickets: list[Ticket], edges: list[tuple[str, str]]) -> str:
    lines = ["digraph sage {", "  rankdir=LR;", "  node [shape=box, style=filled];"]
    lines += [
        f'  "{t.id}" [label="{_label(t)}", fillcolor="{COLOURS.get(t.state, "#ffffff")}"];'
        for t in tickets
    ]
    lines += [f'  "{a}" -> "{b}";' for a, b in edges]
    return "\n".join([*lines, "}"])


def as_json(tickets: list[Ticket], edges: list[tuple[str, str]]) -> str:
    cycles = dag.find_cycles(dag.build(tickets))
    data = {
        "nodes": [
            {"id": t.id, "title": t.title, "state": t.state, "priority": t.priority}
            for t in tickets
        ],
        "edges": [{"from": a, "to": b} for a, b in edges],
        "cycles": cycles,
    }
    return jsonlib.dumps(data, indent=2, ensure_ascii=False)
