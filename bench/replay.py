"""Replay: a real project's history as tickets, sage against a plain `git apply && git commit` loop.

A clone of a real repository (`SAGE_BENCH_BUNDLE`, default: the cachetools bundle) gives N
consecutive non-merge commits from its longest linear stretch of first-parent history. Each one
becomes a ticket whose worker is `git apply --index <its patch>`; a ticket depends on the latest
earlier ticket touching each of its files. `sage stream --auto --parallel 1/2/4` lands them, and
the floor, measured in the same run, applies the same patches in one checkout, one commit each.
Both must end on the real last commit's tree. Wall and CPU (children's rusage: sage, its git
processes and the workers) are ratios against the loop; with 4 workers they are judged against
issue 15's limits (1.5x the loop's wall time, 3x its CPU). Two more figures of the 4-worker run
say what the wall time could be here: its start (to the `run-started` event), and a bound, its
start and end as they were plus the rest of its CPU spread over every core. The last is what a
long-lived project's index costs: the same run with 20,000 COMPLETED tickets before the
replayed ones (2,000 with `--quick`), against the run without them.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.run import ROOT, Options, Row, row
from sage.lib.files import json_text
from sage.lib.history import parse_time

SECTION = "replay"
BUNDLE = Path(os.environ.get("SAGE_BENCH_BUNDLE", "/work/shared/data/cachetools.bundle"))
IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
WORKERS = (1, 2, 4)
LIMIT_WALL, LIMIT_CPU = 1.5, 3.0  # issue 15: what sage / the loop must stay within, 4 workers


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One real commit as a ticket."""

    id: str
    subject: str
    patch: Path
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    source: Path
    base: str  # the parent of the first replayed commit
    tree: str  # the last replayed commit's tree: where every replay must end
    changes: tuple[Change, ...]


def env() -> dict[str, str]:
    """No GIT_ or SAGE_ variable from outside; this checkout's sage first on the path (else
    `python -m sage`, run in the replay's repository, imports whichever sage is installed)."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SAGE_"))}
    path = os.pathsep.join(p for p in (str(ROOT), keep.get("PYTHONPATH")) if p)
    return {**keep, **IDENTITY, "PYTHONPATH": path}


def git(repo: Path, *args: str, raw: bool = False) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env()
    )
    return done.stdout if raw else done.stdout.strip()


def linear_stretch(repo: Path) -> list[str]:
    """The longest run of single-parent commits on the first-parent line, oldest first."""
    best: list[str] = []
    run: list[str] = []
    for line in git(repo, "rev-list", "--first-parent", "--parents", "HEAD").splitlines():
        sha, *parents = line.split()
        run = [*run, sha] if len(parents) == 1 else []
        best = run if len(run) > len(best) else best
    return best[::-1]


def history(options: Options, count: int) -> History:
    source = options.workdir / "replay-source"
    subprocess.run(["git", "clone", "-q", str(BUNDLE), str(source)], check=True, env=env())
    shas = [s for s in linear_stretch(source) if git(source, "diff", f"{s}^", s, "--stat")]
    if len(shas) < count:
        raise RuntimeError(f"only {len(shas)} linear non-empty commits in {BUNDLE}")
    chosen = shas[-count:]
    patches = options.workdir / "replay-patches"
    patches.mkdir()
    changes = tuple(change(source, patches, i, sha) for i, sha in enumerate(chosen, 1))
    base = git(source, "rev-parse", f"{chosen[0]}^")
    tree = git(source, "rev-parse", f"{chosen[-1]}^{{tree}}")
    git(source, "branch", "-f", BASE_BRANCH, base)
    return History(source=source, base=base, tree=tree, changes=changes)


BASE_BRANCH = "replay-base"  # what a replay's checkout is cloned from: history up to the base


def change(source: Path, patches: Path, number: int, sha: str) -> Change:
    tid = f"R-{number:03d}"
    patch = patches / f"{tid}.patch"
    patch.write_text(git(source, "diff", "--binary", "--no-renames", f"{sha}^", sha, raw=True))
    files = git(source, "diff", "--name-only", "--no-renames", f"{sha}^", sha).splitlines()
    subject = git(source, "log", "-1", "--format=%s", sha)[:200] or tid
    return Change(id=tid, subject=subject, patch=patch, files=tuple(files))


def tickets(changes: tuple[Change, ...]) -> list[dict[str, object]]:
    """Each ticket depends on the latest earlier one touching each of its files."""
    last: dict[str, str] = {}
    out = []
    for c in changes:
        deps = sorted({last[f] for f in c.files if f in last})
        out.append({"id": c.id, "title": c.subject, "priority": "P1", "dependencies": deps,
                    "command": ["git", "apply", "--index", str(c.patch)]})  # fmt: skip
        last.update(dict.fromkeys(c.files, c.id))
    return out


def checkout(hist: History, path: Path, index: list[dict[str, object]] | None = None) -> Path:
    """A clone on branch main at the base, of the history up to it only: the replayed commits'
    objects are not there already, so each patch writes its files' objects as new work does
    (a clone of everything would have them packed: no blob or tree for the loop to write, and
    each for sage to read from a pack). sage's files are ignored outside the tree."""
    clone = ("clone", "-q", "--no-checkout", "--no-local", "--single-branch", "--no-tags")
    subprocess.run(["git", *clone, "--branch", BASE_BRANCH, str(hist.source), str(path)],
                   check=True, env=env())  # fmt: skip
    git(path, "checkout", "-q", "-b", "main", hist.base)
    with open(path / ".git" / "info" / "exclude", "a", encoding="utf-8") as handle:
        handle.write(".sage/\n")
    if index is not None:
        target = path / ".sage" / "tickets" / "index.json"
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps({"tickets": index}), encoding="utf-8")
    return path


def measured(argv_runs: list[tuple[list[str], Path]]) -> tuple[float, float]:
    """Wall and children's CPU seconds of running each (argv, cwd) in turn."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for argv, cwd in argv_runs:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env())
        if done.returncode != 0:
            raise RuntimeError(f"{argv[:4]} failed in {cwd}: {done.stderr[-500:]}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def loop(hist: History, path: Path) -> Figures:
    repo = checkout(hist, path)
    steps: list[tuple[list[str], Path]] = []
    for c in hist.changes:
        steps.append((["git", "apply", "--index", str(c.patch)], repo))
        steps.append((["git", "commit", "-q", "--no-verify", "-m", f"{c.id}: {c.subject}"], repo))
    wall, cpu = measured(steps)
    ended(hist, repo, "the plain loop")
    return wall, cpu, 0.0, 0.0


Figures = tuple[float, float, float, float]  # wall, CPU, and of the wall: start, end (seconds)


def sage(
    options: Options, hist: History, path: Path, workers: int, *, done_before: int = 0
) -> Figures:
    """Wall and CPU, and of the wall the start (the process started, to `run-started`) and
    the end (the last landing, to the process's exit), from the run's events. `done_before`:
    that many COMPLETED tickets come first in the index, as sage wrote it (a project's history)."""
    repo = checkout(hist, path, [*completed(done_before), *tickets(hist.changes)])
    if done_before:  # laid out as sage writes it, as after any landing
        index = repo / ".sage" / "tickets" / "index.json"
        index.write_text(json_text(json.loads(index.read_text(encoding="utf-8"))), "utf-8")
    argv = [options.python, "-m", "sage", "stream", "--auto", "--json", "--parallel", str(workers)]
    began = time.time()
    wall, cpu = measured([(argv, repo)])
    ended(hist, repo, f"sage --parallel {workers}")
    (log,) = (repo / ".git" / "sage" / "runs").glob("*/events.jsonl")
    events = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    warned = [e for e in events if e["event"] == "may-conflict"]
    if warned:  # tickets that touch the same file never run at once: each depends on the other
        raise RuntimeError(f"sage --parallel {workers} warned of a conflict: {warned[0]}")
    started = next(parse_time(e["at"]) for e in events if e["event"] == "run-started")
    landed = max(parse_time(e["at"]) for e in events if e["event"] == "landed")
    return wall, cpu, started.timestamp() - began, began + wall - landed.timestamp()


def completed(count: int) -> list[dict[str, object]]:
    """Tickets landed long ago, as a project's index keeps them."""
    when = [{"from": "IN_PROGRESS", "to": "COMPLETED", "at": "2026-01-01T00:00:00Z"}]
    return [{"id": f"OLD-{n}", "title": f"Landed ticket {n}", "state": "COMPLETED",
             "priority": "P2", "dependencies": [], "state_history": when}
            for n in range(1, count + 1)]  # fmt: skip


def ended(hist: History, repo: Path, who: str) -> None:
    tree = git(repo, "rev-parse", "main^{tree}")
    if tree != hist.tree:
        raise RuntimeError(f"{who} ended on tree {tree[:12]}, the real history on {hist.tree[:12]}")


def run(options: Options) -> list[Row]:
    if not BUNDLE.exists():
        return [row(SECTION, "-", "skipped", 0.0, "", note=f"no bundle at {BUNDLE}")]
    count, repeat = (20, 1) if options.quick else (60, 5)
    hist = history(options, count)
    best: dict[str, Figures] = {}
    for attempt in range(repeat):  # interleaved, the fastest of each kept: this machine's speed
        # moves by 2x within minutes, and what is measured is the cost without that noise
        runs = {"loop": loop(hist, options.workdir / f"replay-loop-{attempt}")}
        for n in WORKERS:
            runs[str(n)] = sage(options, hist, options.workdir / f"replay-{n}-{attempt}", n)
        best = {k: min(best.get(k, v), v) for k, v in runs.items()}
    out = rows(count, best, shape(tickets(hist.changes)))
    done = 2_000 if options.quick else HISTORY
    with_history = min(sage(options, hist, options.workdir / f"replay-history-{attempt}", 4,
                            done_before=done) for attempt in range(2))  # fmt: skip
    kept = row(SECTION, f"{count} real commits, --parallel 4",
               f"wall: with {done:,} COMPLETED tickets in the index / without",
               with_history[0], floor=best["4"][0], limit=HISTORY_LIMIT,
               note="the index a long-lived project keeps; best of 2")  # fmt: skip
    return [*out, kept]


HISTORY, HISTORY_LIMIT = 20_000, 3.0  # tickets landed before; what they may cost a run


def shape(index: list[dict[str, object]]) -> str:
    """How much of the replay could run at once: dependent tickets and the longest chain."""
    depth: dict[object, int] = {}
    for t in index:  # in history order, so every dependency is already measured
        deps = t["dependencies"]
        assert isinstance(deps, list)
        depth[t["id"]] = 1 + max((depth[d] for d in deps), default=0)
    chained = sum(bool(t["dependencies"]) for t in index)
    longest = max(depth.values())
    return f"{chained} of {len(index)} depend on an earlier one; longest chain {longest}"


def rows(count: int, best: dict[str, Figures], dag: str) -> list[Row]:
    wall, cpu, _, _ = best["loop"]
    out = []
    for n in WORKERS:
        case = f"{count} real commits, --parallel {n}"
        sage_wall, sage_cpu, _, _ = best[str(n)]
        per = (sage_wall - wall) / count * 1000
        limits = (LIMIT_WALL, LIMIT_CPU) if n == 4 else (None, None)
        out.append(row(SECTION, case, "wall: sage / git apply+commit loop", sage_wall, floor=wall,
                       limit=limits[0], note=f"{per:.0f} ms per ticket over the loop"))  # fmt: skip
        out.append(row(SECTION, case, "CPU: sage / loop (children's rusage)", sage_cpu, floor=cpu,
                       limit=limits[1], note=f"{sage_cpu / count * 1000:.0f} ms CPU per ticket; "
                       f"loop {cpu / count * 1000:.1f}"))  # fmt: skip
    out.append(row(SECTION, f"{count} real commits", "wall: --parallel 4 / --parallel 1",
                   best["4"][0], floor=best["1"][0],
                   note=dag))  # fmt: skip
    return out + bound(count, best["4"], wall)


def bound(count: int, run: Figures, loop_wall: float) -> list[Row]:
    """The 4-worker run's start and end, and the least wall time its CPU allows here: the start
    (one core) and the end as they were, the rest of the CPU spread over every core. The run
    can only come near the bound as far as its dependency chain keeps the cores busy."""
    wall, cpu, start, end = run
    cores = os.cpu_count() or 1
    least = start + end + max(0.0, cpu - start) / cores
    case = f"{count} real commits, --parallel 4"
    return [
        row(SECTION, case, "start: process to run-started", start, floor=loop_wall,
            note=f"the end, last landing to exit: {end * 1000:.0f} ms"),
        row(SECTION, case, f"bound: start + end + other CPU / {cores} cores", least,
            floor=loop_wall, note=f"the run took {wall / least:.2f}x its bound"),
    ]  # fmt: skip
