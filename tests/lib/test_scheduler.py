"""The dispatcher and the simulator, by property: random backlogs, random landing orders."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sage.lib import graph as dag
from sage.lib import scheduler, tickets, touches
from sage.lib.errors import UsageError
from sage.lib.tickets import Ticket
from tests.conftest import FIXTURE
from tests.lib.test_graph import backlogs

FAST = settings(max_examples=60, deadline=None)
EPS = 1e-9


def drain(
    dispatcher: scheduler.Dispatcher, rng: random.Random, fail: frozenset[str] = frozenset()
) -> tuple[list[str], set[str]]:
    """Run a backlog to the end, landing running tickets in a random order; tickets in `fail`
    fail instead. Checks on the way that nothing starts before its dependencies have landed."""
    started: list[str] = []
    landed: set[str] = set()
    running: list[str] = []
    while len(dispatcher) or running:
        for _ in range(rng.randint(0, len(dispatcher))):  # take some of the ready tickets
            ticket = dispatcher.pop()
            assert ticket is not None
            open_deps = [
                d for d in ticket.dependencies if dispatcher.tickets[d].state != "COMPLETED"
            ]
            assert set(open_deps) <= landed, f"{ticket.id} started before {open_deps}"
            started.append(ticket.id)
            running.append(ticket.id)
        if not running:
            continue
        done = running.pop(rng.randrange(len(running)))
        if done in fail:
            dispatcher.failed(done)
        else:
            landed.add(done)
            dispatcher.landed(done)
    return started, landed


@FAST
@given(backlogs(max_tickets=30), st.randoms(use_true_random=False))
def test_every_ticket_is_dispatched_once_after_its_dependencies(
    items: list[Ticket], rng: random.Random
) -> None:
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    started, landed = drain(dispatcher, rng)
    assert sorted(started) == sorted(t.id for t in items)  # each exactly once
    assert landed == {t.id for t in items}
    assert dispatcher.unfinished == 0 and dispatcher.blocked == {}


@FAST
@given(backlogs(max_tickets=30, states=True), st.randoms(use_true_random=False))
def test_states_completed_count_as_landed_and_deferred_blocks_descendants(
    items: list[Ticket], rng: random.Random
) -> None:
    graph = dag.build(items)
    dispatcher = scheduler.Dispatcher(items, graph)
    state = {t.id: t.state for t in items}
    # blocked: a DEFERRED ticket upstream, through open tickets only (COMPLETED ones have landed)
    live = graph.subgraph(n for n in graph if state[n] != "COMPLETED")
    stuck = {
        t.id
        for t in items
        if t.state in dag.OPEN_STATES
        and any(state[a] == "DEFERRED" for a in nx.ancestors(live, t.id))
    }
    assert set(dispatcher.blocked) == stuck
    assert all(state[cause] == "DEFERRED" for cause in dispatcher.blocked.values())
    started, _ = drain(dispatcher, rng)
    assert sorted(started) == sorted(
        t.id for t in items if t.state in dag.OPEN_STATES and t.id not in stuck
    )


@FAST
@given(backlogs(max_tickets=30), st.randoms(use_true_random=False), st.data())
def test_a_failed_ticket_blocks_exactly_its_descendants(
    items: list[Ticket], rng: random.Random, data: st.DataObject
) -> None:
    graph = dag.build(items)
    failing = frozenset(data.draw(st.sets(st.sampled_from([t.id for t in items]), max_size=3))
                        if items else set())  # fmt: skip
    dispatcher = scheduler.Dispatcher(items, graph)
    started, landed = drain(dispatcher, rng, failing)
    lost = {d for f in failing for d in nx.descendants(graph, f)}
    assert landed == {t.id for t in items} - failing - lost
    assert set(started) == {t.id for t in items} - lost
    assert set(dispatcher.blocked) == lost


@FAST
@given(backlogs(max_tickets=30), st.integers(1, 6))
def test_simulated_schedules_respect_dependencies_and_workers(
    items: list[Ticket], workers: int
) -> None:
    graph = dag.build(items)
    by_id = {t.id: t for t in items}
    w = {t.id: t.weight for t in items}
    total = sum(w.values())
    bound = max(dag.critical_path(graph, w).minutes, total / workers)
    for kind in scheduler.SCHEDULES:
        slots = scheduler.timeline(items, graph, workers, kind)
        when = {s.ticket: s for s in slots}
        assert sorted(when) == sorted(by_id)
        for slot in slots:
            assert slot.finish - slot.start == pytest.approx(w[slot.ticket])
            for dep in by_id[slot.ticket].dependencies:
                assert when[dep].finish <= slot.start + EPS
            busy = [s for s in slots if s.start <= slot.start < s.finish]
            assert len(busy) <= workers
        makespan = scheduler.simulate(items, graph, workers, kind)
        assert makespan == max((s.finish for s in slots), default=0.0)
        assert makespan >= bound - EPS
    assert scheduler.simulate(items, graph, 1) == pytest.approx(total)


@FAST
@given(st.lists(st.tuples(st.sampled_from(tickets.PRIORITIES), st.integers(0, 5)), max_size=12))
def test_independent_tickets_dispatch_p0_first_then_longest_then_id(
    specs: list[tuple[str, int]],
) -> None:
    items = [Ticket(id=f"T-{i:02d}", title="t", priority=p, estimate_minutes=float(m))
             for i, (p, m) in enumerate(specs)]  # fmt: skip
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    order = [t.id for t in iter(dispatcher.pop, None)]
    assert order == [t.id for t in sorted(items, key=lambda t: (t.rank, -t.weight, t.id))]


def test_dispatch_prefers_the_longer_remaining_path_within_a_priority() -> None:
    items = [
        Ticket(id="A", title="a", estimate_minutes=5),
        Ticket(id="B", title="b", estimate_minutes=10),
        Ticket(id="C", title="c", estimate_minutes=30, dependencies=("A",)),
        Ticket(id="Z", title="z", estimate_minutes=1, priority="P0"),
    ]
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    assert [t.id for t in iter(dispatcher.pop, None)] == ["Z", "A", "B"]  # A leads to 35 minutes
    assert dispatcher.landed("A") == ["C"]
    assert dispatcher.peek() is not None and dispatcher.peek().id == "C"  # type: ignore[union-attr]


def test_requeue_and_copy_are_independent() -> None:
    items = [Ticket(id="A", title="a"), Ticket(id="B", title="b", dependencies=("A",))]
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    clone = dispatcher.copy()
    assert dispatcher.pop().id == "A"  # type: ignore[union-attr]
    dispatcher.requeue("A")
    assert len(dispatcher) == 1 and len(clone) == 1
    assert dispatcher.landed("A") == ["B"] and clone.unfinished == 2


# ---- worker counts and batches --------------------------------------------------------------


def test_batch_stats_follow_the_seed() -> None:
    stats = scheduler.batch_stats(10, 3)
    assert (stats.batches, stats.per_batch, stats.last_batch) == (4, 3, 1)
    assert scheduler.batch_stats(0, 4).batches == 0
    assert scheduler.batch_stats(8, 4).last_batch == 4
    assert scheduler.batch_stats(2, 4).per_batch == 2


@given(st.integers(0, 500), st.integers(1, 16))
def test_batch_stats_cover_every_ticket(count: int, workers: int) -> None:
    s = scheduler.batch_stats(count, workers)
    assert s.batches * workers >= count > (s.batches - 1) * workers or count == 0
    assert (s.batches - 1) * s.per_batch + s.last_batch == count or count == 0


@pytest.mark.parametrize(
    ("cpus", "ready", "workers"),
    [(1, 10, 1), (2, 10, 1), (3, 10, 1), (8, 10, 4), (16, 10, 8), (64, 10, 8), (16, 3, 3),
     (16, 0, 1), (8, 1, 1)],
)  # fmt: skip
def test_auto_is_half_the_cores_within_1_to_8_and_the_ready_count(
    cpus: int, ready: int, workers: int
) -> None:
    result = scheduler.resolve_workers("auto", ready, cpus=cpus)
    assert (result.workers, result.requested, result.warning) == (workers, "auto", None)
    assert scheduler.resolve_workers(" AUTO ", ready, cpus=cpus).workers == workers


def test_an_explicit_count_is_kept_and_warns_above_8() -> None:
    assert scheduler.resolve_workers(4, 1).workers == 4  # not capped by the ready count
    assert scheduler.resolve_workers("8", 100).warning is None
    big = scheduler.resolve_workers("12", 100)
    assert big.workers == 12 and big.warning and "above" in big.warning


@pytest.mark.parametrize("bad", ["0", "-2", "abc", "", "2.5", "many", 0])
def test_zero_or_garbage_is_a_usage_error(bad: str | int) -> None:
    with pytest.raises(UsageError) as caught:
        scheduler.resolve_workers(bad, 5)
    assert caught.value.exit_code == 2


def test_an_unknown_schedule_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown schedule"):
        scheduler.simulate([], dag.build([]), 2, "random")


# ---- the plan -------------------------------------------------------------------------------


def test_the_example_plan() -> None:
    index = tickets.load(FIXTURE)
    plan = scheduler.plan(index.tickets, dag.build(index.tickets), 4)
    assert plan.critical_path.minutes == 220 and plan.lower_bound == 220
    assert plan.total == 785 and plan.unit == "minutes"
    assert plan.lower_bound <= plan.dynamic_makespan
    assert [len(w) for w in plan.waves] == [9, 8, 5, 4, 1, 2]
    assert (plan.stats.tickets, plan.stats.batches) == (29, 8)
    data = plan.as_dict()
    assert data["critical_path_minutes"] == 220 and data["lower_bound_minutes"] == 220
    assert scheduler.plan(index.tickets, dag.build(index.tickets), 1).lower_bound == 785


def test_a_plan_leaves_out_what_cannot_run() -> None:
    items = [
        Ticket(id="A", title="a", state="COMPLETED", estimate_minutes=50),
        Ticket(id="B", title="b", dependencies=("A",), estimate_minutes=10),
        Ticket(id="X", title="x", state="DEFERRED", estimate_minutes=5),
        Ticket(id="Y", title="y", dependencies=("X",), estimate_minutes=100),
        Ticket(id="Z", title="z", dependencies=("Y",), estimate_minutes=100),
    ]
    plan = scheduler.plan(items, dag.build(items), 2)
    assert plan.blocked == {"Y": "X", "Z": "X"}  # Z waits on Y, which waits on X
    assert plan.total == 10 and plan.critical_path.tickets == ("B",)
    assert plan.waves == (("B",),) and plan.stats.tickets == 1
    assert plan.dynamic_makespan == plan.batch_makespan == 10


def test_without_estimates_the_unit_is_tickets() -> None:
    items = [Ticket(id="A", title="a"), Ticket(id="B", title="b", dependencies=("A",))]
    plan = scheduler.plan(items, dag.build(items), "auto")
    assert plan.unit == "tickets" and plan.critical_path.minutes == 2 and plan.workers.workers == 1


# ---- touch sets: the soft mutex --------------------------------------------------------------


def _touching(*specs: tuple[str, str, tuple[str, ...]]) -> list[Ticket]:
    return [Ticket(id=tid, title=tid, priority=p, files=f) for tid, p, f in specs]


def test_overlapping_tickets_are_never_popped_while_one_is_held() -> None:
    items = _touching(
        ("A", "P0", ("registry.json",)),
        ("B", "P1", ("registry.json", "b.py")),
        ("C", "P2", ("c.py",)),
        ("D", "P3", ("*.json",)),
    )
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    assert dispatcher.pop().id == "A"  # type: ignore[union-attr]
    dispatcher.hold("A")
    assert dispatcher.pop().id == "C"  # type: ignore[union-attr]  # B and D kept aside
    assert dispatcher.pop() is None
    assert len(dispatcher) == 2 and dispatcher.kept_apart() == {"B": "A", "D": "A"}
    dispatcher.release("A")
    assert [t.id for t in iter(dispatcher.pop, None)] == ["B", "D"]  # in priority order


def test_a_held_ticket_that_lands_or_fails_is_released() -> None:
    items = _touching(("A", "P0", ("x",)), ("B", "P1", ("x",)), ("C", "P2", ("x",)))
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    for tid, settle in (("A", dispatcher.landed), ("B", dispatcher.failed)):
        assert dispatcher.pop().id == tid  # type: ignore[union-attr]
        dispatcher.hold(tid)
        assert dispatcher.pop() is None
        settle(tid)
    assert dispatcher.pop().id == "C" and not dispatcher.held  # type: ignore[union-attr]


def test_without_holds_or_files_the_order_is_unchanged() -> None:
    items = _touching(("A", "P1", ("x",)), ("B", "P0", ()), ("C", "P1", ("x",)))
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    dispatcher.hold("B")  # touches nothing: keeps nothing apart
    assert [t.id for t in iter(dispatcher.pop, None)] == ["B", "A", "C"]


def test_a_requeued_held_ticket_is_not_kept_apart_from_itself() -> None:
    items = _touching(("A", "P0", ("x",)), ("B", "P1", ("x",)))
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    dispatcher.hold(dispatcher.pop().id)  # type: ignore[union-attr]
    dispatcher.requeue("A")  # a retry: still holding its files
    assert dispatcher.pop().id == "A"  # type: ignore[union-attr]
    assert dispatcher.pop() is None and dispatcher.kept_apart() == {"B": "A"}


def test_learn_joins_the_conflicting_files_to_both_sets() -> None:
    items = _touching(("A", "P0", ()), ("B", "P1", ("b.py",)), ("C", "P2", ()))
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    dispatcher.learn("A", "B", ["CHANGELOG.md"])
    assert dispatcher.touch_set("A") == ("CHANGELOG.md",)
    assert dispatcher.touch_set("B") == ("b.py", "CHANGELOG.md")
    dispatcher.hold(dispatcher.pop().id)  # type: ignore[union-attr]
    assert dispatcher.pop().id == "C"  # type: ignore[union-attr]
    dispatcher.hold("C")
    dispatcher.learn("C", "Z", ["b.py"])  # a held ticket learns: from now on B waits for it too
    dispatcher.release("A")
    assert dispatcher.pop() is None and dispatcher.kept_apart() == {"B": "C"}
    clone = dispatcher.copy()
    clone.release("C")
    assert clone.pop().id == "B" and dispatcher.pop() is None  # type: ignore[union-attr]


FILES = st.lists(st.sampled_from(["a", "b", "c/*", "c/x", "d/**", "*.md", "R.md"]), max_size=2)


@FAST
@given(
    st.lists(st.tuples(st.sampled_from(tickets.PRIORITIES), FILES), max_size=12),
    st.randoms(use_true_random=False),
)
def test_no_two_held_tickets_overlap_and_none_is_lost(
    specs: list[tuple[str, list[str]]], rng: random.Random
) -> None:
    items = [Ticket(id=f"T-{i:02d}", title="t", priority=p, files=tuple(f))
             for i, (p, f) in enumerate(specs)]  # fmt: skip
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    held: list[Ticket] = []
    done: list[str] = []
    while len(dispatcher) or held:
        ready = sorted(
            (t for t in items if t.id not in done and t not in held),
            key=lambda t: (t.rank, t.id),
        )
        popped = dispatcher.pop() if rng.random() < 0.7 else None
        if popped is not None:
            free = [t for t in ready if not any(_meet(t, h) for h in held)]
            assert popped == free[0]  # the first by priority that overlaps nothing held
            dispatcher.hold(popped.id)
            held.append(popped)
        elif held:
            gone = held.pop(rng.randrange(len(held)))
            (dispatcher.release if rng.random() < 0.5 else dispatcher.landed)(gone.id)
            done.append(gone.id)
        for a, b in itertools.combinations(held, 2):
            assert not _meet(a, b), (a, b)
    assert sorted(done) == sorted(t.id for t in items)


def _meet(a: Ticket, b: Ticket) -> bool:
    return touches.overlaps(touches.touch_set(a.files), touches.touch_set(b.files))


@FAST
@given(
    st.lists(st.tuples(st.sampled_from(tickets.PRIORITIES), FILES), min_size=1, max_size=10),
    st.randoms(use_true_random=False),
)
def test_with_learned_files_a_popped_ticket_overlaps_nothing_held(
    specs: list[tuple[str, list[str]]], rng: random.Random
) -> None:
    items = [Ticket(id=f"T-{i:02d}", title="t", priority=p, files=tuple(f))
             for i, (p, f) in enumerate(specs)]  # fmt: skip
    ids = [t.id for t in items]
    dispatcher = scheduler.Dispatcher(items, dag.build(items))
    sets = {t.id: touches.touch_set(t.files) for t in items}  # the model
    held: list[str] = []
    done: list[str] = []
    while len(dispatcher) or held:
        if rng.random() < 0.15:  # two tickets conflicted at landing on some files
            a, b = rng.choice(ids), rng.choice(ids)
            learned = rng.sample(["a", "c/x", "e", "R.md"], rng.randint(1, 2))
            dispatcher.learn(a, b, learned)
            for tid in {a, b}:
                sets[tid] = tuple(dict.fromkeys((*sets[tid], *learned)))
        popped = dispatcher.pop() if rng.random() < 0.6 else None
        if popped is not None:
            assert not any(touches.overlaps(sets[popped.id], sets[h]) for h in held)
            assert dispatcher.touch_set(popped.id) == sets[popped.id]
            dispatcher.hold(popped.id)
            held.append(popped.id)
        elif held:
            gone = held.pop(rng.randrange(len(held)))
            dispatcher.release(gone)
            done.append(gone)
    assert sorted(done) == sorted(ids)


def test_the_simulator_keeps_overlapping_tickets_apart() -> None:
    items = [
        Ticket(id="A", title="a", estimate_minutes=10, files=("CHANGELOG.md",)),
        Ticket(id="B", title="b", estimate_minutes=10, files=("./CHANGELOG.md",)),
        Ticket(id="C", title="c", estimate_minutes=10, files=("src/c.py",)),
    ]
    graph = dag.build(items)
    slots = {s.ticket: s for s in scheduler.timeline(items, graph, 3)}
    a, b = slots["A"], slots["B"]
    assert a.finish <= b.start or b.finish <= a.start
    assert scheduler.simulate(items, graph, 3) == 20
    assert scheduler.simulate(items, graph, 3, apart=False) == 10
    assert scheduler.simulate(items, graph, 3, "batch") == 20


@FAST
@given(
    backlogs(max_tickets=20),
    st.lists(FILES, min_size=20, max_size=20),
    st.integers(1, 4),
)
def test_simulated_overlapping_tickets_never_run_at_once(
    items: list[Ticket], sets: list[list[str]], workers: int
) -> None:
    items = [replace(t, files=tuple(f)) for t, f in zip(items, sets, strict=False)]
    graph = dag.build(items)
    for kind in scheduler.SCHEDULES:
        slots = scheduler.timeline(items, graph, workers, kind)
        assert sorted(s.ticket for s in slots) == sorted(t.id for t in items)
        by_id = {t.id: t for t in items}
        for x, y in itertools.combinations(slots, 2):
            if x.start < y.finish - EPS and y.start < x.finish - EPS:
                assert not _meet(by_id[x.ticket], by_id[y.ticket])


def test_the_plan_names_the_tickets_kept_apart_and_the_cost() -> None:
    items = [
        Ticket(id="A", title="a", estimate_minutes=10, files=("registry.json",)),
        Ticket(id="B", title="b", estimate_minutes=10, files=("registry.json", "docs/")),
        Ticket(id="C", title="c", estimate_minutes=10, files=("docs/c.md",)),
        Ticket(id="D", title="d", estimate_minutes=10, files=("registry.json",),
               dependencies=("A",)),
        Ticket(id="E", title="e", estimate_minutes=10, files=("e.py",)),
    ]  # fmt: skip
    plan = scheduler.plan(items, dag.build(items), 4)
    (group,) = plan.apart
    assert group.tickets == ("A", "B", "C", "D")
    assert group.files == ("docs", "docs/c.md", "registry.json")
    assert group.pairs == (
        ("A", "B", ("registry.json",)),  # A and D: D waits for A anyway
        ("B", "C", ("docs", "docs/c.md")),
        ("B", "D", ("registry.json",)),
    )
    assert plan.together_makespan == 20 and plan.dynamic_makespan == 30
    data = plan.as_dict()
    assert data["kept_apart"][0]["pairs"][0] == {"tickets": ["A", "B"], "files": ["registry.json"]}
    assert data["makespan_dynamic_together_minutes"] == 20


def test_a_plan_without_files_keeps_nothing_apart() -> None:
    index = tickets.load(FIXTURE)
    plan = scheduler.plan(index.tickets, dag.build(index.tickets), 4)
    assert plan.apart == () and plan.together_makespan == plan.dynamic_makespan


@FAST
@given(backlogs(max_tickets=16), st.lists(FILES, min_size=16, max_size=16))
def test_the_plan_lists_only_overlapping_independent_pairs(
    items: list[Ticket], sets: list[list[str]]
) -> None:
    items = [replace(t, files=tuple(f)) for t, f in zip(items, sets, strict=False)]
    by_id, graph = {t.id: t for t in items}, dag.build(items)
    plan = scheduler.plan(items, graph, 2)
    for group in plan.apart:
        for a, b, files in group.pairs:
            assert _meet(by_id[a], by_id[b]) and files
            assert not nx.has_path(graph, a, b) and not nx.has_path(graph, b, a)
    # list scheduling is not monotone: kept apart may even finish sooner, but only if listed
    assert plan.apart or plan.together_makespan == plan.dynamic_makespan
    if len(items) >= 2 and not any(t.dependencies for t in items):
        first, second = sorted(items, key=lambda t: (t.rank, -t.weight, t.id))[:2]
        if _meet(first, second):  # they would start together: the second waits
            assert any({first.id, second.id} <= set(g.tickets) for g in plan.apart)
