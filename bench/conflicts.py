"""Conflicts: wasted worker time and makespan on a conflict-heavy backlog (issue 13).

About 40 slow scripted "agent" tickets (seconds each; a fraction of a second with --quick); a
third of them append to a few shared files (a registry, a changelog, a docs index), which
conflicts whenever two of them start from the same base. The same backlog runs through the real
`sage stream --auto --parallel 4` once per variant, each on a fresh repository:

- `redo-nofiles`: no ticket declares `files`; a conflict re-runs the ticket from scratch.
- `redo-files`: the appenders declare the shared files they touch (and some others their own).
- `resolve-files`: as `redo-files`, with `[stream] on_conflict = "resolve"`: the ticket's next
  attempt gets its previous attempt merged in (`SAGE_MODE=resolve`), and the scripted worker keeps
  both sides' lines instead of doing its work again.

Choose variants with `python bench/run.py --only conflicts --conflict-variants redo-nofiles …`,
`SAGE_BENCH_CONFLICT_VARIANTS=a,b`, or `python -m bench.conflicts [--quick] [VARIANT …]`.
Figures per variant: the run's wall time, the summary's `wasted_seconds` (worker time of attempts
that never landed) and `worker_seconds`, attempts and conflicts, and how many starts came while a
ticket declaring an overlapping file was still in flight (started, not yet landed or deferred),
read from `events.jsonl`. The first variant is the floor of the others.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.run import Options, Row, row
from bench.stream import git
from sage.lib.project import state_dir

SECTION = "conflicts"
SHARED = ("REGISTRY.md", "CHANGELOG.md", "docs/index.md")
WORKERS = 4
ENV_VARIANTS = "SAGE_BENCH_CONFLICT_VARIANTS"


@dataclass(frozen=True, slots=True, kw_only=True)
class Variant:
    name: str
    declare_files: bool
    on_conflict: str = "redo"  # written to the config only when not today's default


VARIANTS = {
    "redo-nofiles": Variant(name="redo, no files", declare_files=False),
    "redo-files": Variant(name="redo, files", declare_files=True),
    "resolve-files": Variant(name="resolve, files", declare_files=True, on_conflict="resolve"),
    "resolve-nofiles": Variant(
        name="resolve, no files", declare_files=False, on_conflict="resolve"
    ),
}
DEFAULT_VARIANTS = ("redo-nofiles", "redo-files", "resolve-files")

# The scripted "agent": sleeps (its work), writes its own file, appends a line to each shared
# file it names. Told to resolve, it keeps both sides of every conflict and skips the work.
WORKER = r"""
import os, sys, time
from pathlib import Path

tid, seconds, *shared = sys.argv[1:]
root = Path(os.environ.get("SAGE_WORKTREE", "."))
if os.environ.get("SAGE_MODE") == "resolve":
    time.sleep(float(seconds) * 0.1)  # reading the conflict costs a little
    for name in shared:
        path = root / name
        lines = path.read_text().splitlines(keepends=True)
        markers = ("<<<<<<<", "=======", ">>>>>>>", "|||||||")
        path.write_text("".join(line for line in lines if not line.startswith(markers)))
    sys.exit(0)
time.sleep(float(seconds))
(root / "work").mkdir(exist_ok=True)
(root / "work" / f"{tid}.txt").write_text(f"{tid}\n")
for name in shared:
    with open(root / name, "a") as out:
        out.write(f"- {tid}\n")
"""


def backlog(
    count: int, seconds: float, worker: Path, *, declare: bool, seed: int = 13
) -> list[dict[str, Any]]:
    """`count` tickets, a third appending to one or two shared files; a few short chains."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        tid = f"C-{i:03d}"
        shared = sorted(rng.sample(SHARED, rng.choice((1, 1, 2)))) if i % 3 == 0 else []
        work = round(seconds * rng.uniform(0.6, 1.4), 3)
        entry: dict[str, Any] = {
            "id": tid,
            "title": f"Ticket {i}" + (f" (appends to {', '.join(shared)})" if shared else ""),
            "priority": rng.choice(("P1", "P2")),
            "dependencies": [f"C-{i - 5:03d}"] if i % 10 == 7 else [],
            "estimate_minutes": work,
            "command": [sys.executable, str(worker), tid, f"{work}", *shared],
        }
        if declare and (shared or i % 2):
            entry["files"] = [*shared, f"work/{tid}.txt"]
        out.append(entry)
    return out


def make_repo(path: Path, tickets: list[dict[str, Any]], variant: Variant, backoff: float) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitignore").write_text(".sage/\n")
    for name in SHARED:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(f"# {name}\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    index = path / ".sage" / "tickets" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"tickets": tickets}, indent=1))
    stream = f'on_conflict = "{variant.on_conflict}"\n' if variant.on_conflict != "redo" else ""
    config = f"[stream]\n{stream}\n[queue]\nmax_attempts = 12\nbackoff = {backoff}\n"
    (path / ".sage" / "config.toml").write_text(config)
    return path


def run_variant(options: Options, key: str, size: int, seconds: float) -> dict[str, Any]:
    variant = VARIANTS[key]
    worker = options.workdir / "conflict_worker.py"
    worker.write_text(WORKER)
    tickets = backlog(size, seconds, worker, declare=variant.declare_files)
    repo = make_repo(options.workdir / f"conflicts-{key}", tickets, variant, seconds / 4)
    started = time.perf_counter()
    done = subprocess.run(
        [options.python, "-m", "sage", "stream", "--auto", "--json", "--parallel", str(WORKERS)],
        cwd=repo, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    summary = _summary(done.stdout)
    if summary is None:
        raise RuntimeError(f"stream failed in {repo}: {done.stderr[-500:]}")
    events = _events(repo, summary["run_id"])
    declared = backlog(size, seconds, worker, declare=True)  # what overlaps, whether declared
    return {"variant": variant, "wall": wall, "summary": summary, "events": events,
            "crowded": crowded_starts(events, declared)}  # fmt: skip


def _summary(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "summary":
            return dict(event)
    return None


def _events(repo: Path, run_id: str) -> list[dict[str, Any]]:
    path = state_dir(repo, is_git=True) / "runs" / run_id / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def crowded_starts(events: list[dict[str, Any]], tickets: list[dict[str, Any]]) -> int:
    """Starts of a ticket while another ticket touching one of its files was in flight (started
    and not yet landed or deferred): what the soft mutex is there to prevent."""
    from sage.lib import touches

    sets = {t["id"]: touches.touch_set(t.get("files", [])) for t in tickets}
    flying: set[str] = set()
    crowded = 0
    for event in sorted(events, key=lambda e: _when(e["at"])):
        tid, kind = event.get("ticket"), event.get("event")
        if kind == "started" and tid:
            crowded += any(touches.overlaps(sets[tid], sets[o]) for o in flying if o != tid)
            flying.add(tid)
        elif kind in ("landed", "deferred", "stopping", "killed") and tid:
            flying.discard(tid)
    return crowded


def _when(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def chosen(options: Options) -> tuple[str, ...]:
    names = getattr(options, "conflict_variants", ()) or tuple(
        n for n in os.environ.get(ENV_VARIANTS, "").split(",") if n.strip()
    )
    names = names or DEFAULT_VARIANTS
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown conflict variant(s) {unknown}: use {', '.join(VARIANTS)}")
    return tuple(names)


def run(options: Options) -> list[Row]:
    size, seconds = (16, 0.3) if options.quick else (40, 3.0)
    case = f"{size} tickets, {WORKERS} workers"
    rows, base = [planned(size, seconds)], None
    for key in chosen(options):
        try:
            result = run_variant(options, key, size, seconds)
        except RuntimeError as exc:  # a variant today's code cannot run yet: the others still do
            rows.append(row(SECTION, f"{case}, {VARIANTS[key].name}", "error", 0.0, "",
                            note=str(exc)))  # fmt: skip
            continue
        base = base or result
        rows += rows_for(case, result, base)
    return rows


def rows_for(case: str, result: dict[str, Any], base: dict[str, Any]) -> list[Row]:
    s, b, name = result["summary"], base["summary"], result["variant"].name
    note = (f"{s['conflicts']} conflicts, {_attempts(result)} attempts, "
            f"{len(s['deferred'])} deferred, {result['crowded']} crowded starts, "
            f"worker time {s['worker_seconds']:.1f} s")  # fmt: skip
    first = result is base
    return [
        row(SECTION, f"{case}, {name}", "wasted worker time", s["wasted_seconds"],
            floor=None if first else b["wasted_seconds"] or None, goal=None if first else 1 / 3,
            note=note + ("" if first else f"; vs {base['variant'].name}")),
        row(SECTION, f"{case}, {name}", "makespan (wall)", s["wall_seconds"],
            floor=None if first else b["wall_seconds"], goal=None if first else 1.0,
            note="" if first else f"vs {base['variant'].name}"),
    ]  # fmt: skip


def _attempts(result: dict[str, Any]) -> int:
    return sum(1 for e in result["events"] if e.get("event") == "started")


def planned(size: int, seconds: float) -> Row:
    """What `sage plan` expects of the declared backlog: the makespan with the appenders kept
    apart, against running them at once (estimate units are the tickets' seconds)."""
    from sage.lib import graph as dag
    from sage.lib import scheduler, tickets

    entries = backlog(size, seconds, Path("worker.py"), declare=True)
    index = tickets.parse(json.dumps({"tickets": entries}), Path("bench.json"))
    plan = scheduler.plan(index.tickets, dag.build(index.tickets), WORKERS)
    groups = "; ".join(f"{len(g.tickets)} on {', '.join(g.files)}" for g in plan.apart)
    return row(SECTION, f"{size} tickets, {WORKERS} workers, `sage plan`",
               "simulated makespan kept apart / at once", plan.dynamic_makespan,
               floor=plan.together_makespan, note=f"kept apart: {groups}")  # fmt: skip


def main(argv: list[str]) -> int:
    import tempfile

    from bench.run import table

    quick = "--quick" in argv
    names = tuple(a for a in argv if not a.startswith("--"))
    with tempfile.TemporaryDirectory(prefix="sage-bench-") as tmp:
        options = Options(quick=quick, workdir=Path(tmp))
        os.environ[ENV_VARIANTS] = ",".join(names)
        rows = run(options)
    print(table(rows))
    for r in rows:
        print(f"{r['case']}, {r['metric']}: {r['note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
