"""The commit queue: milliseconds per landed entry against a plain `git cherry-pick` loop over the
same branches, with and without --verify, and what batched verification saves."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

from bench.run import Options, Row, row
from sage.lib import project as projects
from sage.lib.queue import CommitQueue, Landed
from sage.lib.tickets import TicketStore

SECTION = "queue"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def build(path: Path, count: int) -> tuple[Path, str]:
    """A repository whose `sage/Q-i` branches each add one file on top of the same base."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / ".gitignore").write_text(".sage/\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    base = git(path, "rev-parse", "HEAD")
    for i in range(count):
        git(path, "checkout", "-q", "-b", f"sage/Q-{i}", base)
        (path / f"q{i}.txt").write_text(f"{i}\n")
        git(path, "add", "-A")
        git(path, "commit", "-q", "-m", f"Q-{i}: change {i}")
    git(path, "checkout", "-q", "main")
    tickets = [
        {"id": f"Q-{i}", "title": f"change {i}", "state": "IN_PROGRESS"} for i in range(count)
    ]
    index = path / ".sage" / "tickets" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"tickets": tickets}))
    return path, base


def cherry_pick_floor(repo: Path, count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        git(repo, "cherry-pick", f"sage/Q-{i}")
    return time.perf_counter() - start


def land(
    repo: Path, base: str, count: int, *, verify: tuple[str, ...], batch: bool
) -> tuple[float, int]:
    project = projects.open_project(repo)
    queue = CommitQueue(
        project,
        TicketStore(project.index_path),
        target_branch="main",
        verify=verify,
        verify_batch=True,
        run_id="bench",
    )
    start = time.perf_counter()
    landed = 0
    for i in range(count):
        queue.enqueue(ticket_id=f"Q-{i}", title=f"change {i}", branch=f"sage/Q-{i}", base=base)
        if not batch:
            landed += sum(isinstance(o, Landed) for o in queue.process())
    if batch:
        landed += sum(isinstance(o, Landed) for o in queue.process())
    if landed != count:
        raise RuntimeError(f"landed {landed} of {count}")
    return time.perf_counter() - start, queue.verify_runs


def run(options: Options) -> list[Row]:
    count = 20 if options.quick else 60
    template, base = build(options.workdir / "queue-template", count)

    def fresh(name: str) -> Path:
        copy = options.workdir / name
        shutil.copytree(template, copy, symlinks=True)
        return copy

    floor = cherry_pick_floor(fresh("cherry"), count)
    rows = []
    for label, verify, batch in (
        ("one at a time", (), False),
        ("one at a time, --verify true", ("true",), False),
        ("all queued, --verify true (batched)", ("true",), True),
    ):
        seconds, runs = land(fresh(f"q-{len(rows)}"), base, count, verify=verify, batch=batch)
        rows.append(
            row(
                SECTION,
                f"{count} entries, {label}",
                "ms per landing / cherry-pick",
                seconds / count * 1000,
                unit="ms",
                floor=floor / count * 1000,
                goal=3.0,
                note=f"{runs} verify run(s)",
            )
        )
    return [*rows, saving(rows, count)]


def saving(rows: list[Row], count: int) -> Row:
    runs = int(rows[-1]["note"].split()[0])
    return row(
        SECTION,
        f"{count} entries, batched verify",
        "verify runs: batched / one by one",
        runs,
        unit="runs",
        floor=count,
        note="bisection only runs more when a test fails",
    )
