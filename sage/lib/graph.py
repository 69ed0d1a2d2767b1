"""The ticket DAG (networkx): problems, cycles, ready set, dispatch order, critical path, levels."""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sage.lib import lazy
from sage.lib.tickets import Problem, Ticket, quiet_gc

if TYPE_CHECKING:
    import networkx as nx
else:
    nx = lazy.module("networkx")  # imported on first use

CYCLES_PER_COMPONENT = 5
HINTS = 20  # did-you-mean searches per run: each compares against every ID
OPEN_STATES = frozenset({"UNPROCESSED", "IN_PROGRESS"})


@dataclass(frozen=True, slots=True, kw_only=True)
class CriticalPath:
    tickets: tuple[str, ...]
    minutes: float  # by estimate_minutes, else 1 per ticket


def build(tickets: Sequence[Ticket]) -> nx.DiGraph:
    """Edges point from a dependency to its dependent; unknown dependencies are left out."""
    ids = {t.id: None for t in tickets}  # a dict keeps the index's order for the nodes
    graph = nx.DiGraph()
    with quiet_gc():
        graph.add_nodes_from(ids)
        graph.add_edges_from((d, t.id) for t in tickets for d in t.dependencies if d in ids)
    return graph


def find_cycles(graph: nx.DiGraph) -> list[list[str]]:
    """Cycles naming only their members: searched in non-trivial SCCs, after a fast DAG check."""
    if nx.is_directed_acyclic_graph(graph):
        return []
    found = [[n] for n in nx.nodes_with_selfloops(graph)]
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            sub = graph.subgraph(component)
            found += itertools.islice(nx.simple_cycles(sub), CYCLES_PER_COMPONENT)
    return [_rotate(c) for c in found]


def _rotate(cycle: list[str]) -> list[str]:
    """Start at the smallest ID and follow dependency order, so reports are stable."""
    start = cycle.index(min(cycle))
    return cycle[start:] + cycle[:start]


def format_cycle(cycle: Sequence[str]) -> str:
    return " → ".join([*cycle, cycle[0]])


def problems(tickets: Sequence[Ticket], graph: nx.DiGraph) -> list[Problem]:
    found: list[Problem] = []
    for t in tickets:
        for dep in t.dependencies:
            if dep == t.id:
                continue  # reported as a cycle A → A
            if dep not in graph:
                message = f"{t.id}: depends on unknown ticket {dep}"
                hint = _did_you_mean(dep, graph) if len(found) < HINTS else None
                found.append(Problem(level="error", code="unknown-dependency", ticket=t.id,
                                     message=message, hint=hint))  # fmt: skip
        if t.parent is not None and t.parent not in graph:
            found.append(Problem(level="error", code="unknown-parent", ticket=t.id,
                                 message=f"{t.id}: parent {t.parent} is not a ticket"))  # fmt: skip
    for cycle in find_cycles(graph):
        hint = f"drop one of these dependencies, e.g. {cycle[0]}'s on {cycle[-1]}"
        found.append(Problem(level="error", code="cycle", ticket=cycle[0],
                             message=f"cycle: {format_cycle(cycle)}", hint=hint))  # fmt: skip
    return found


def _did_you_mean(name: str, graph: nx.DiGraph) -> str:
    close = difflib.get_close_matches(name, [str(n) for n in graph], n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return "add that ticket to the index, or remove the dependency"


def open_subgraph(graph: nx.DiGraph, states: Mapping[str, str]) -> nx.DiGraph:
    """The tickets still to do (UNPROCESSED or IN_PROGRESS)."""
    keep = [n for n in graph if states.get(n) in OPEN_STATES]
    return graph if len(keep) == len(graph) else only(graph, keep)


def only(graph: nx.DiGraph, nodes: Collection[str]) -> nx.DiGraph:
    """The induced subgraph as a new plain DiGraph (without attributes): a subgraph *view* filters
    every lookup, and `subgraph().copy()` is several times slower than this."""
    if len(nodes) == len(graph):
        return graph
    keep = set(nodes)
    sub = nx.DiGraph()
    with quiet_gc():
        sub.add_nodes_from(nodes)
        sub.add_edges_from((u, v) for u, v in graph.edges if u in keep and v in keep)
    return sub


def remaining_path(
    graph: nx.DiGraph, weights: Mapping[str, float], *, order: Sequence[str] | None = None
) -> dict[str, float]:
    """For each ticket, the longest chain of work from it to the end (itself included).

    `order` is a topological order of `graph` when the caller already has one (from `levels`)."""
    succ = dict(graph.adjacency())  # plain dicts: this loop runs once per ticket
    longest: dict[str, float] = {}
    for node in reversed(order if order is not None else list(nx.topological_sort(graph))):
        tail = max(map(longest.__getitem__, succ[node]), default=0.0)
        longest[node] = weights.get(node, 1.0) + tail
    return longest


def critical_path(
    graph: nx.DiGraph, weights: Mapping[str, float], *, longest: Mapping[str, float] | None = None
) -> CriticalPath:
    """The longest chain of work; `longest` is `remaining_path(graph, weights)` if already known."""
    if not len(graph):
        return CriticalPath(tickets=(), minutes=0.0)
    if longest is None:
        longest = remaining_path(graph, weights)
    # Start at a source: with zero estimates a later ticket can tie with the chain's head.
    sources = (n for n, degree in graph.in_degree() if degree == 0)
    node = max(sources, key=lambda n: (longest[n], n))
    path = [node]
    while succ := list(graph.successors(path[-1])):
        path.append(max(succ, key=lambda s: (longest[s], s)))
    return CriticalPath(tickets=tuple(path), minutes=longest[node])


def levels(graph: nx.DiGraph) -> list[list[str]]:
    """Topological generations: the seed's waves when every ticket takes the same time."""
    return [sorted(level) for level in nx.topological_generations(graph)]


def dispatch_key(ticket: Ticket, longest: Mapping[str, float]) -> tuple[int, float, str]:
    """P0 first, then the longest remaining path, then the ID."""
    return (ticket.rank, -longest.get(ticket.id, ticket.weight), ticket.id)


def startable(tickets: Iterable[Ticket], state: Mapping[str, str]) -> list[Ticket]:
    """UNPROCESSED tickets whose dependencies are all COMPLETED, in index order."""
    done = {tid for tid, s in state.items() if s == "COMPLETED"}
    return [t for t in tickets if t.state == "UNPROCESSED" and done.issuperset(t.dependencies)]


def ready(tickets: Iterable[Ticket], graph: nx.DiGraph) -> list[Ticket]:
    """UNPROCESSED tickets whose dependencies are all COMPLETED, in dispatch order."""
    items = list(tickets)
    state = {t.id: t.state for t in items}
    found = startable(items, state)
    if not found:
        return []
    with quiet_gc():
        longest = remaining_path(open_subgraph(graph, state), {t.id: t.weight for t in items})
    return sorted(found, key=lambda t: dispatch_key(t, longest))
