"""Dask overhead: what the Dask executor adds per ticket over the local one.

Tiny tickets (`true`) go one at a time through each executor on the same repository, alternating,
and the fastest run of each is kept (`best_of`). The floor is the local executor: a worktree, the
process, the commit. The Dask executor adds a bundle of the base, a task round trip to a
LocalCluster worker, a clone there, a result bundle and a fetch. Cluster start-up is its own row.
`python bench/run.py --only dask_overhead`.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.run import Options, Row, best_of, row
from sage.lib import dask_executor, executors, git
from sage.lib import project as projects
from sage.lib.tickets import Ticket
from sage.lib.workers import WorkerJob, WorkerResult

SECTION = "dask_overhead"
RATIO_GOAL, RATIO_LIMIT = 3.0, 6.0  # Dask per ticket over local per ticket
OVERHEAD_GOAL, OVERHEAD_LIMIT = 0.25, 1.0  # seconds Dask adds per ticket
STARTUP_LIMIT = 10.0  # seconds for a 1-worker LocalCluster


def run(options: Options) -> list[Row]:
    repeat = 5 if options.quick else 20
    repo = _repo(options.workdir / "dask-overhead")
    where = projects.open_project(repo)
    local = executors.LocalExecutor(repo, where.worktrees_dir, where.locks_dir / "workers", 1)
    started = time.perf_counter()
    client, cluster = dask_executor.connect("local", workers=1)
    startup = time.perf_counter() - started
    dask = dask_executor.DaskExecutor(repo, client, slots=1, cluster=cluster)
    try:
        runs = {"local": _ticket(local, where, "L"), "dask": _ticket(dask, where, "D")}
        best = best_of(runs, repeat)
    finally:
        local.shutdown()
        dask.shutdown()
    note = f"fastest of {repeat} one-ticket runs"
    return [
        row(SECTION, "per ticket", "local executor", best["local"], note=note),
        row(SECTION, "per ticket", "dask executor", best["dask"], floor=best["local"],
            goal=RATIO_GOAL, limit=RATIO_LIMIT, note=f"{note}; floor: the local executor"),
        row(SECTION, "per ticket", "dask overhead", best["dask"] - best["local"],
            goal=OVERHEAD_GOAL, limit=OVERHEAD_LIMIT, note="dask minus local"),
        row(SECTION, "LocalCluster", "start-up", startup, limit=STARTUP_LIMIT, note="1 worker"),
    ]  # fmt: skip


def _ticket(executor: Any, where: projects.Project, prefix: str) -> Callable[[], None]:
    """One fresh ticket through `executor`, waited for; a new ID per call."""
    numbers = itertools.count(1)
    submit: Callable[[WorkerJob, Callable[[WorkerResult], None]], None] = executor.submit

    def one() -> None:
        results: queue.Queue[WorkerResult] = queue.Queue()
        submit(_job(where, f"{prefix}-{next(numbers)}"), results.put)
        result = results.get(timeout=120)
        if not result.ok:
            raise RuntimeError(f"bench ticket {result.ticket_id} failed: {result.detail}")

    return one


def _job(where: projects.Project, tid: str) -> WorkerJob:
    run_dir = where.runs_dir / "bench"
    run_dir.mkdir(parents=True, exist_ok=True)
    context = run_dir / f"{tid}.context.md"
    context.write_text(f"# {tid}\n", encoding="utf-8")
    return WorkerJob(
        ticket=Ticket(id=tid, title=f"bench {tid}", allow_empty=True), run_id="bench", attempt=1,
        base=git.git(where.root, "rev-parse", "HEAD"), argv=("true",), timeout=60.0,
        log=run_dir / f"{tid}.log", context_file=context,
    )  # fmt: skip


def _repo(repo: Path) -> Path:
    repo.mkdir(parents=True)
    (repo / ".gitignore").write_text(".sage/\n", encoding="utf-8")
    git.git(repo, "init", "-q", "-b", "main")
    git.git(repo, "config", "user.name", "bench")
    git.git(repo, "config", "user.email", "bench@localhost")
    git.git(repo, "add", "-A")
    git.git(repo, "commit", "-q", "-m", "initial")
    return repo
