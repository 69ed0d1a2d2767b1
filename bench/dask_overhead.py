"""Per-ticket overhead of the Dask executor against the local one.

N tiny tickets (`true`) go one at a time through each executor on the same repository, so the
time per ticket is what the executor adds around the worker: a worktree locally; a bundle of the
base, a task on a LocalCluster, a clone, a result bundle and a fetch with Dask. Cluster start-up
is reported on its own row. Run alone: `python bench/dask_overhead.py [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import queue
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sage.lib import executors, git
from sage.lib.tickets import Ticket
from sage.lib.workers import WorkerJob, WorkerResult

SECTION = "dask_overhead"


def run(quick: bool) -> list[dict[str, Any]]:
    """Rows: local ms/ticket, Dask ms/ticket, the difference, and LocalCluster start-up."""
    count = 5 if quick else 20
    with tempfile.TemporaryDirectory(prefix="sage-bench-dask-") as tmp:
        repo = _repo(Path(tmp))
        local = executors.LocalExecutor(repo, repo / ".sage/worktrees", repo / ".sage/locks", 1)
        local_ms = _per_ticket(local, repo, count, "L")
        try:
            from sage.lib import dask_executor
        except ImportError:
            return [_row("local executor", local_ms, count)]
        started = time.perf_counter()
        client, cluster = dask_executor.connect("local", workers=1)
        startup_ms = (time.perf_counter() - started) * 1000
        dask = dask_executor.DaskExecutor(repo, client, slots=1, cluster=cluster)
        dask_ms = _per_ticket(dask, repo, count, "D")
    return [
        _row("local executor", local_ms, count),
        _row("dask executor (LocalCluster, 1 worker)", dask_ms, count),
        _row("dask overhead per ticket", dask_ms - local_ms, count),
        {"section": SECTION, "name": "LocalCluster start-up", "ms": round(startup_ms, 1)},
    ]


def _row(name: str, ms: float, count: int) -> dict[str, Any]:
    return {"section": SECTION, "name": name, "tickets": count, "ms_per_ticket": round(ms, 1)}


def _per_ticket(executor: Any, repo: Path, count: int, prefix: str) -> float:
    """Milliseconds per ticket, one ticket at a time, after one warm-up run."""
    try:
        _one(executor, repo, f"{prefix}-0")
        started = time.perf_counter()
        for number in range(1, count + 1):
            _one(executor, repo, f"{prefix}-{number}")
        return (time.perf_counter() - started) * 1000 / count
    finally:
        executor.shutdown()


def _one(executor: Any, repo: Path, tid: str) -> None:
    results: queue.Queue[WorkerResult] = queue.Queue()
    submit: Callable[[WorkerJob, Callable[[WorkerResult], None]], None] = executor.submit
    submit(_job(repo, tid), results.put)
    result = results.get(timeout=120)
    if not result.ok:
        raise RuntimeError(f"bench ticket {tid} failed: {result.detail}")


def _job(repo: Path, tid: str) -> WorkerJob:
    run_dir = repo / ".sage/runs/bench"
    context = run_dir / f"{tid}.context.md"
    context.write_text(f"# {tid}\n", encoding="utf-8")
    base = git.git(repo, "rev-parse", "HEAD")
    return WorkerJob(
        ticket=Ticket(id=tid, title=f"bench {tid}"), run_id="bench", attempt=1, base=base,
        argv=("true",), timeout=60.0, log=run_dir / f"{tid}.log", context_file=context,
    )  # fmt: skip


def _repo(root: Path) -> Path:
    repo = root / "repo"
    (repo / ".sage/runs/bench").mkdir(parents=True)
    (repo / ".gitignore").write_text(".sage/\n", encoding="utf-8")
    git.git(repo, "init", "-q", "-b", "main")
    git.git(repo, "config", "user.name", "bench")
    git.git(repo, "config", "user.email", "bench@localhost")
    git.git(repo, "add", "-A")
    git.git(repo, "commit", "-q", "-m", "initial")
    return repo


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    for row in run(parser.parse_args().quick):
        print(json.dumps(row))
