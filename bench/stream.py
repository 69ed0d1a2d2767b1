"""Stream: parallel speed-up, makespan against the lower bound, and pipeline overhead.

Every stream runs through the real CLI (`python -m sage stream --auto …`) on a real repository.
Floors, measured in the same run: `--parallel 1` for the speed-up, the lower bound
max(critical path, work / N) and `--schedule batch` for the makespan, and landing the same
tickets by hand with plain git (worktree add, run, commit, cherry-pick, remove) for the overhead.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.run import Options, Row, row

SECTION = "stream"
MS_PER_MINUTE = 0.020  # each estimated minute of a ticket sleeps 20 ms
FIXTURE = Path(__file__).resolve().parent.parent / "examples" / "par-001.json"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def make_repo(path: Path, tickets: list[dict[str, Any]]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitignore").write_text(".sage/\n")
    (path / "README.md").write_text("bench\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    index = path / ".sage" / "tickets" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"tickets": tickets}))
    return path


def stream(options: Options, repo: Path, *args: str) -> float:
    """Wall time of one real `sage stream --auto` run; it must land everything."""
    start = time.perf_counter()
    done = subprocess.run(
        [options.python, "-m", "sage", "stream", "--auto", "--json", *args],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"stream failed in {repo}: {done.stderr[-500:]}")
    return wall


def sleeper(tid: str, seconds: float, deps: list[str], estimate: float) -> dict[str, Any]:
    return {
        "id": tid,
        "title": f"Sleep {seconds:.2f}s",
        "priority": "P1",
        "dependencies": deps,
        "estimate_minutes": estimate,
        "command": ["sleep", f"{seconds:.3f}"],
        "allow_empty": True,  # a sleep lands an empty commit: what is measured is the run
    }


def speedup(options: Options) -> list[Row]:
    tickets = [sleeper(f"T-{i}", 1.0, [], 1) for i in range(1, 9)]
    walls = {
        n: stream(options, make_repo(options.workdir / f"eight-{n}", tickets), "--parallel", str(n))
        for n in (1, 4)
    }
    return [
        row(
            SECTION,
            "8 one-second tickets",
            "wall --parallel 4 / --parallel 1",
            walls[4],
            floor=walls[1],
            goal=0.3,
            limit=1 / 2.5,
            note="issue 3: at least 2.5x faster",
        ),
    ]


def fixture_tickets() -> list[dict[str, Any]]:
    raw = json.loads(FIXTURE.read_text())["tickets"]
    for t in raw:
        t["command"] = ["sleep", f"{t['estimate_minutes'] * MS_PER_MINUTE:.3f}"]
        t["allow_empty"] = True
    return raw


def random_dag(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        deps = sorted({f"R-{rng.randrange(i)}" for _ in range(rng.randint(0, 2))}) if i else []
        minutes = rng.choice((5, 10, 15, 20, 30))
        out.append(sleeper(f"R-{i}", minutes * MS_PER_MINUTE, deps, minutes))
    return out


def lower_bound(tickets: list[dict[str, Any]], workers: int) -> float:
    from sage.lib import graph as dag
    from sage.lib import tickets as model

    index = model.parse(json.dumps({"tickets": tickets}), Path("bench.json"))
    weights = {t.id: t.weight for t in index.tickets}
    path = dag.critical_path(dag.build(index.tickets), weights)
    return max(path.minutes, sum(weights.values()) / workers) * MS_PER_MINUTE


def makespan(options: Options) -> list[Row]:
    rows = []
    cases = [("par-001", fixture_tickets())]
    size = 24 if options.quick else 40
    cases.append((f"random {size}", random_dag(size, seed=7)))
    for name, tickets in cases:
        for n in (2, 4, 8):
            rows += makespan_case(options, name, tickets, n)
    return rows


def makespan_case(options: Options, name: str, tickets: list[dict[str, Any]], n: int) -> list[Row]:
    slug = f"{name.replace(' ', '-')}-{n}"
    dynamic = stream(
        options, make_repo(options.workdir / f"dyn-{slug}", tickets), "--parallel", str(n)
    )
    batch = stream(
        options,
        make_repo(options.workdir / f"bat-{slug}", tickets),
        "--parallel",
        str(n),
        "--schedule",
        "batch",
    )
    bound = lower_bound(tickets, n)
    strict = name == "par-001" and n == 4
    return [
        row(
            SECTION,
            f"{name}, {n} workers",
            "dynamic wall / lower bound",
            dynamic,
            floor=bound,
            goal=1.2,
            limit=1.35 if strict else None,
            note="issue 3: within 1.35x at N=4",
        ),
        row(
            SECTION,
            f"{name}, {n} workers",
            "dynamic wall / batch wall",
            dynamic,
            floor=batch,
            goal=0.85,
            limit=0.9 if strict else None,
            note="issue 3: at most 0.9x at N=4",
        ),
    ]


def by_hand(repo: Path, count: int) -> float:
    """The floor: land `count` tiny tickets with plain git, one after another."""
    start = time.perf_counter()
    for i in range(count):
        wt = repo.parent / f"{repo.name}-wt-{i}"
        git(repo, "worktree", "add", "-q", "-b", f"hand/{i}", str(wt), "main")
        (wt / f"file-{i}.txt").write_text(f"{i}\n")
        git(wt, "add", "-A")
        git(wt, "commit", "-q", "-m", f"H-{i}: tiny\n\nSage-Ticket: H-{i}")
        git(repo, "cherry-pick", "--allow-empty", f"hand/{i}")
        git(repo, "worktree", "remove", "--force", str(wt))
    return time.perf_counter() - start


def overhead(options: Options) -> list[Row]:
    count = 30 if options.quick else 60
    tiny = [
        {"id": f"O-{i}", "title": "tiny", "dependencies": [], "command": ["touch", f"file-{i}.txt"]}
        for i in range(count)
    ]
    floor = by_hand(make_repo(options.workdir / "by-hand", []), count)
    rows = []
    for n in (1, 4):
        wall = stream(options, make_repo(options.workdir / f"tiny-{n}", tiny), "--parallel", str(n))
        rows.append(
            row(
                SECTION,
                f"{count} tiny tickets, {n} worker(s)",
                "sage wall / plain git by hand",
                wall,
                floor=floor,
                goal=1.0 if n == 4 else None,
                limit=1.5 if n == 4 else None,
                note=f"{wall / count:.3f} s per ticket; by hand {floor / count:.3f} s",
            )
        )
    return rows


def run(options: Options) -> list[Row]:
    return speedup(options) + makespan(options) + overhead(options)
