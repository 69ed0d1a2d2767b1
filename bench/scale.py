"""Scale: sage's load / validate / plan / ready against the networkx floor, memory, dispatch.

The floor is what networkx alone needs for the same graph: json.load, build the DiGraph, check it
is acyclic, list its topological generations and find the longest path. Each sage figure is the
same whole job from the file (load + build + the operation), so the two are comparable.
"""

from __future__ import annotations

import inspect
import json
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import networkx as nx

from bench.run import Options, Row, best_of, row
from sage.lib import graph as dag
from sage.lib import scheduler, tickets, validation

SECTION = "scale"
GOAL, LIMIT = 1.2, 2.5
DISPATCH_LIMIT = 2.0  # cost per landing at 50k over its cost at 1k
PRIORITIES = ("P0", "P1", "P1", "P2", "P2", "P2", "P3")


def generate(n: int, seed: int = 7) -> dict[str, object]:
    """A layered backlog: layers of 20-200 tickets, each with 0-3 dependencies on the three layers
    before it; the first 5% are COMPLETED, as in a project under way."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    layers: list[list[str]] = []
    while len(rows) < n:
        pool = [tid for layer in layers[-3:] for tid in layer]
        layer = []
        for _ in range(min(rng.randint(20, 200), n - len(rows))):
            number = len(rows) + 1
            tid = f"TASK-{number}"
            deps = rng.sample(pool, min(len(pool), rng.randint(0, 3)))
            rows.append({
                "id": tid, "title": f"Ticket {number}",
                "state": "COMPLETED" if number <= n // 20 else "UNPROCESSED",
                "priority": rng.choice(PRIORITIES), "type": "implementation",
                "dependencies": deps, "estimate_minutes": rng.randint(5, 120),
                "docs": {"spec": f"docs/{number}.md"},
            })  # fmt: skip
            layer.append(tid)
        layers.append(layer)
    return {"tickets": rows}


def floor(path: Path) -> None:
    with path.open(encoding="utf-8") as handle:
        raw = json.load(handle)
    graph = nx.DiGraph()
    graph.add_nodes_from(t["id"] for t in raw["tickets"])
    graph.add_edges_from((d, t["id"]) for t in raw["tickets"] for d in t["dependencies"])
    assert nx.is_directed_acyclic_graph(graph)
    list(nx.topological_generations(graph))
    nx.dag_longest_path(graph)


# The same floor as a script, for the CLI rows (a subprocess against a subprocess).
FLOOR_CODE = (
    "import json, sys\nfrom pathlib import Path\nimport networkx as nx\n\n"
    + inspect.getsource(floor)
    + "\nfloor(Path(sys.argv[1]))\n"
)


def sage_jobs(path: Path) -> dict[str, Callable[[], object]]:
    def validate() -> None:
        report = validation.validate(tickets.load(path))
        assert not report.errors and report.analysis

    def plan() -> None:
        index = tickets.load(path)
        scheduler.plan(index.tickets, dag.build(index.tickets), 4)

    def ready() -> None:
        index = tickets.load(path)
        dag.ready(index.tickets, dag.build(index.tickets))

    return {"load": lambda: tickets.load(path), "validate": validate, "plan": plan, "ready": ready}


def repeats(n: int, quick: bool) -> int:
    if n <= 1_000:
        return 7
    if n <= 10_000:
        return 3
    return 2 if quick or n > 50_000 else 3


def in_process(n: int, path: Path, quick: bool) -> list[Row]:
    best = best_of({"floor": lambda: floor(path), **sage_jobs(path)}, repeats(n, quick))
    case = f"{n // 1000}k"
    return [
        row(SECTION, case, job, best[job], floor=best["floor"], goal=GOAL, limit=LIMIT)
        for job in ("load", "validate", "plan", "ready")
    ]


def cli(n: int, path: Path, options: Options) -> list[Row]:
    """The real commands in a subprocess, against the floor script in a subprocess."""
    sage = [options.python, "-m", "sage"]
    argv = {
        "floor": [options.python, "-c", FLOOR_CODE, str(path)],
        "sage validate": [*sage, "validate", "--index", str(path)],
        "sage plan": [*sage, "plan", "--parallel", "4", "--json", "--index", str(path)],
    }
    jobs = {name: _subprocess(cmd, options.workdir) for name, cmd in argv.items()}
    best = best_of(jobs, 3 if n <= 10_000 else 1 if options.quick else 2)
    judged = n >= 50_000  # below that, interpreter start-up and imports dominate both
    return [
        row(SECTION, f"{n // 1000}k", name, best[name], floor=best["floor"],
            goal=GOAL if judged else None, limit=LIMIT if judged else None,
            note="CLI subprocess vs the floor as a script" + ("" if judged else "; start-up bound"))
        for name in ("sage validate", "sage plan")
    ]  # fmt: skip


def _subprocess(argv: list[str], cwd: Path) -> Callable[[], None]:
    def go() -> None:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{argv[2:4]} exited {done.returncode}: {done.stderr.strip()[-300:]}"
            )

    return go


def peak_memory(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def memory(n: int, path: Path) -> list[Row]:
    """Peak bytes per ticket of a whole `validate` (index, tickets, graph, analysis)."""
    jobs = sage_jobs(path)
    base = peak_memory(lambda: floor(path)) / n
    used = peak_memory(jobs["validate"]) / n
    note = "tracemalloc; floor = the networkx floor's peak"
    metric = "peak memory / ticket (validate)"
    return [row(SECTION, f"{n // 1000}k", metric, used / 1024, "KiB", floor=base / 1024, note=note)]


_JUNK = bytearray(32 * 1024 * 1024)  # larger than the CPU caches


def _flush_caches() -> None:
    _JUNK[::64] = bytes(len(_JUNK) // 64)  # one write per cache line


def landing_cost(index: tickets.Index, count: int | None = None, *, cold: bool = False) -> float:
    """Seconds per Dispatcher.landed(), landing wave by wave in dispatch order (the first `count`
    tickets, or all). `cold`: flush the CPU caches before each landing, as the git and worker
    processes between two landings of a real stream do."""
    dispatcher = scheduler.Dispatcher(index.tickets, dag.build(index.tickets))
    spent, landed = 0.0, 0
    while len(dispatcher) and (count is None or landed < count):
        wave = [t.id for t in iter(dispatcher.pop, None)][
            : None if count is None else count - landed
        ]
        for tid in wave:
            if cold:
                _flush_caches()
            started = time.perf_counter()
            dispatcher.landed(tid)
            spent += time.perf_counter() - started
        landed += len(wave)
    return spent / landed


def dispatch(indexes: dict[int, tickets.Index], quick: bool) -> list[Row]:
    """Per-landing cost at 50k against 1k. Judged with cold caches (as in a stream); the hot loop
    over every ticket is shown too: there 1k tickets fit in the CPU caches and 50k do not."""
    small, large = min(indexes), max(indexes)
    cold: dict[int, float] = dict.fromkeys(indexes, float("inf"))
    hot = dict(cold)
    for _ in range(3 if quick else 5):
        for n, index in indexes.items():
            cold[n] = min(cold[n], landing_cost(index, 100, cold=True))
            hot[n] = min(hot[n], landing_cost(index))
    case = f"{large // 1000}k vs {small // 1000}k"
    return [
        row(SECTION, case, "per landing (cold caches)", cold[large], floor=cold[small],
            goal=1.2, limit=DISPATCH_LIMIT, note="Dispatcher.landed(), 100 landings"),
        row(SECTION, case, "per landing (hot loop, all)", hot[large], floor=hot[small],
            note="memory-bound: 1k tickets fit in the CPU caches, 50k do not"),
    ]  # fmt: skip


def run(options: Options) -> list[Row]:
    sizes = [1_000, 10_000, 50_000] + ([] if options.quick else [100_000])
    paths = {}
    for n in sizes:
        paths[n] = options.workdir / f"scale-{n}.json"
        paths[n].write_text(json.dumps(generate(n)), encoding="utf-8")
    rows: list[Row] = []
    for n in sizes:
        print(f"[scale] {n} tickets", file=sys.stderr)
        rows += in_process(n, paths[n], options.quick)
        rows += cli(n, paths[n], options) if n in (1_000, 50_000) else []
    rows += memory(10_000 if options.quick else 50_000, paths[10_000 if options.quick else 50_000])
    rows += dispatch({n: tickets.load(paths[n]) for n in (1_000, 50_000)}, options.quick)
    return rows
