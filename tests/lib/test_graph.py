"""The ticket DAG: cycles (only their members), ready set, dispatch order, critical path, levels."""

from __future__ import annotations

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.lib import graph as dag
from sage.lib import tickets
from sage.lib.tickets import Ticket
from tests.conftest import FIXTURE

STATES = ("UNPROCESSED", "UNPROCESSED", "IN_PROGRESS", "COMPLETED", "DEFERRED")
FAST = settings(max_examples=60, deadline=None)


@st.composite
def backlogs(draw: st.DrawFn, max_tickets: int = 24, states: bool = False) -> list[Ticket]:
    """Random acyclic backlogs: ticket k depends on up to 3 of the tickets before it, and IDs are
    shuffled so that dependency order and ID order are unrelated."""
    n = draw(st.integers(0, max_tickets))
    names = draw(st.permutations([f"T-{i}" for i in range(n)]))
    out = []
    for k, tid in enumerate(names):
        deps = draw(st.sets(st.sampled_from(names[:k]), max_size=3)) if k else set()
        out.append(Ticket(
            id=tid, title=tid, dependencies=tuple(sorted(deps)),
            state=draw(st.sampled_from(STATES)) if states else "UNPROCESSED",
            priority=draw(st.sampled_from(tickets.PRIORITIES)),
            estimate_minutes=draw(st.none() | st.integers(0, 100).map(float)),
        ))  # fmt: skip
    return out


@st.composite
def cyclic_backlogs(draw: st.DrawFn) -> tuple[list[Ticket], list[str]]:
    """A random backlog plus one cycle of 1..5 of its tickets (1 = a self-dependency), and more
    random dependencies that may close further cycles."""
    base = draw(backlogs(max_tickets=20).filter(lambda b: len(b) >= 1))
    ids = [t.id for t in base]
    ring = draw(st.lists(st.sampled_from(ids), min_size=1, max_size=5, unique=True))
    extra = draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from(ids)), max_size=4))
    # (dependency, dependent) pairs
    added = {(ring[i - 1], ring[i]) for i in range(len(ring))} | set(extra)
    deps = {t.id: set(t.dependencies) for t in base}
    for dependency, dependent in added:
        deps[dependent].add(dependency)
    return [Ticket(id=t.id, title=t.id, dependencies=tuple(sorted(deps[t.id]))) for t in base], ring


def weights(items: list[Ticket]) -> dict[str, float]:
    return {t.id: t.weight for t in items}


# ---- cycles ---------------------------------------------------------------------------------


@FAST
@given(backlogs())
def test_acyclic_backlogs_have_no_cycles(items: list[Ticket]) -> None:
    graph = dag.build(items)
    assert dag.find_cycles(graph) == []
    assert [p for p in dag.problems(items, graph) if p.code == "cycle"] == []


@FAST
@given(cyclic_backlogs())
def test_every_cycle_is_found_and_names_only_its_members(
    case: tuple[list[Ticket], list[str]],
) -> None:
    items, ring = case
    graph = dag.build(items)
    cycles = dag.find_cycles(graph)
    on_a_cycle = {n for c in nx.strongly_connected_components(graph) if len(c) > 1 for n in c}
    on_a_cycle |= set(nx.nodes_with_selfloops(graph))
    assert cycles, "a cycle was added but none was reported"
    for cycle in cycles:
        assert len(set(cycle)) == len(cycle)  # simple
        assert cycle[0] == min(cycle)  # stable rotation
        for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            assert graph.has_edge(a, b), f"{a} → {b} is not a dependency edge"
        assert set(cycle) <= on_a_cycle
    # every strongly connected knot is reported with at least one of its cycles
    knots = [c for c in nx.strongly_connected_components(graph) if len(c) > 1]
    knots += [{n} for n in nx.nodes_with_selfloops(graph)]
    for knot in knots:
        assert any(set(c) <= knot for c in cycles)
    ring_knot = next(k for k in knots if set(ring) <= k)  # the added cycle is in one of them
    assert any(set(c) <= ring_knot for c in cycles)


def test_a_three_ticket_cycle_is_one_line_naming_only_its_members() -> None:
    items = [
        Ticket(id="A", title="a", dependencies=("C",)),
        Ticket(id="B", title="b", dependencies=("A",)),
        Ticket(id="C", title="c", dependencies=("B",)),
        Ticket(id="D", title="d", dependencies=("A",)),  # reaches the cycle, is not on it
        Ticket(id="E", title="e", dependencies=("D", "GHOST")),
        Ticket(id="S", title="s", dependencies=("S",)),
        Ticket(id="F", title="f", parent="NOBODY"),
    ]
    found = dag.problems(items, dag.build(items))
    messages = sorted(p.message for p in found)
    assert messages == [
        "E: depends on unknown ticket GHOST",
        "F: parent NOBODY is not a ticket",
        "cycle: A → B → C → A",
        "cycle: S → S",
    ]
    assert {p.ticket for p in found if p.code == "cycle"} == {"A", "S"}


def test_format_cycle() -> None:
    assert dag.format_cycle(["A", "B", "C"]) == "A → B → C → A"
    assert dag.format_cycle(["A"]) == "A → A"


# ---- ready set and dispatch order -----------------------------------------------------------


@FAST
@given(backlogs(states=True))
def test_ready_is_unprocessed_with_every_dependency_completed(items: list[Ticket]) -> None:
    state = {t.id: t.state for t in items}
    found = dag.ready(items, dag.build(items))
    expected = {
        t.id
        for t in items
        if t.state == "UNPROCESSED" and all(state[d] == "COMPLETED" for d in t.dependencies)
    }
    assert sorted(t.id for t in found) == sorted(expected)


@FAST
@given(backlogs(states=True))
def test_ready_order_is_priority_then_longest_remaining_path_then_id(items: list[Ticket]) -> None:
    graph = dag.build(items)
    state = {t.id: t.state for t in items}
    longest = dag.remaining_path(dag.open_subgraph(graph, state), weights(items))
    keys = [(t.rank, -longest[t.id], t.id) for t in dag.ready(items, graph)]
    assert keys == sorted(keys)


def test_ready_on_the_example() -> None:
    index = tickets.load(FIXTURE)
    found = dag.ready(index.tickets, dag.build(index.tickets))
    assert len(found) == 9
    assert found[0].id == "TASK-001"  # P0 and the head of the critical path
    assert [t.rank for t in found] == sorted(t.rank for t in found)


def test_ready_waits_for_unknown_and_deferred_dependencies() -> None:
    items = [
        Ticket(id="A", title="a", state="DEFERRED"),
        Ticket(id="B", title="b", dependencies=("A",)),
        Ticket(id="C", title="c", dependencies=("GHOST",)),
        Ticket(id="D", title="d", state="COMPLETED"),
        Ticket(id="E", title="e", dependencies=("D",)),
    ]
    assert [t.id for t in dag.ready(items, dag.build(items))] == ["E"]
    assert dag.ready([], dag.build([])) == []


# ---- critical path, remaining path, levels --------------------------------------------------


def longest_by_networkx(graph: nx.DiGraph, w: dict[str, float]) -> float:
    """Node weights as edge weights from a virtual source: networkx's own longest path."""
    h = nx.DiGraph()
    h.add_weighted_edges_from(("<src>", n, w[n]) for n in graph)
    h.add_weighted_edges_from((a, b, w[b]) for a, b in graph.edges)
    return float(nx.dag_longest_path_length(h)) if len(graph) else 0.0


@FAST
@given(backlogs())
def test_critical_path_is_the_longest_real_path(items: list[Ticket]) -> None:
    graph = dag.build(items)
    w = weights(items)
    path = dag.critical_path(graph, w)
    assert path.minutes == longest_by_networkx(graph, w)
    assert sum(w[n] for n in path.tickets) == path.minutes
    assert all(graph.has_edge(a, b) for a, b in zip(path.tickets, path.tickets[1:], strict=False))
    if path.tickets:  # it starts at a ticket with no open dependency and runs to the end
        assert graph.in_degree(path.tickets[0]) == 0 and graph.out_degree(path.tickets[-1]) == 0


@FAST
@given(backlogs())
def test_remaining_path_with_a_given_order_is_the_same(items: list[Ticket]) -> None:
    graph = dag.build(items)
    order = [n for level in dag.levels(graph) for n in level]
    w = weights(items)
    assert dag.remaining_path(graph, w, order=order) == dag.remaining_path(graph, w)
    longest = dag.remaining_path(graph, w)
    assert dag.critical_path(graph, w, longest=longest) == dag.critical_path(graph, w)


@FAST
@given(backlogs())
def test_levels_put_every_dependency_in_an_earlier_level(items: list[Ticket]) -> None:
    graph = dag.build(items)
    levels = dag.levels(graph)
    where = {n: i for i, level in enumerate(levels) for n in level}
    assert sorted(where) == sorted(graph)
    assert all(where[a] < where[b] for a, b in graph.edges)
    assert all(level == sorted(level) for level in levels)
    assert set(levels[0] if levels else []) == {n for n in graph if graph.in_degree(n) == 0}


@FAST
@given(backlogs(states=True))
def test_open_subgraph_is_the_induced_graph_of_open_tickets(items: list[Ticket]) -> None:
    graph = dag.build(items)
    state = {t.id: t.state for t in items}
    sub = dag.open_subgraph(graph, state)
    expected = graph.subgraph(n for n in graph if state[n] in dag.OPEN_STATES)
    assert set(sub.nodes) == set(expected.nodes) and set(sub.edges) == set(expected.edges)


def test_the_example_critical_path_is_220_minutes_of_785() -> None:
    index = tickets.load(FIXTURE)
    graph = dag.build(index.tickets)
    path = dag.critical_path(graph, weights(list(index.tickets)))
    assert path.minutes == 220
    assert path.tickets[0] == "TASK-001" and len(path.tickets) == 6
    assert [len(level) for level in dag.levels(graph)] == [9, 8, 5, 4, 1, 2]


def test_build_leaves_out_unknown_dependencies() -> None:
    graph = dag.build([Ticket(id="A", title="a", dependencies=("B", "GHOST")),
                       Ticket(id="B", title="b")])  # fmt: skip
    assert list(graph.nodes) == ["A", "B"] and list(graph.edges) == [("B", "A")]
