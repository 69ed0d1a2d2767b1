"""Isolation: what giving each ticket a clean checkout costs, per ticket, at 1k and 50k files.

Every case does the same ticket, one new file committed on the ticket's branch from the same base;
only the isolation differs:
- a fresh worktree per ticket (`worktrees.create`, then `worktrees.remove`), as sage did before
  worker slots;
- worker slots, as the stream uses them: `worktrees.prepare_slot` reusing one worktree; the
  ticket leaves nothing untracked or ignored, so (as the stream's collect notes) its slot's next
  switch needs no `git clean`;
- the floor, measured in the same run: a plain git loop in one reused worktree (switch to the
  base, apply, commit).
The repositories are made with `git fast-import`, so only the isolation writes a checkout.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.run import Options, Row, row
from sage.lib import project, worktrees

SECTION = "isolation"
IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    env = {**os.environ, **IDENTITY}  # commits in a scratch repository, whatever git has set
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, input=input,
                          check=True, env=env)  # fmt: skip
    return done.stdout.decode().strip()


def fast_import(files: int) -> bytes:
    """One commit of `files` small files, 100 to a folder."""
    out = [b"commit refs/heads/main\ncommitter bench <bench@example.invalid> 0 +0000\n"
           b"data 7\ninitial\n"]  # fmt: skip
    for i in range(files):
        body = f"file {i}\n".encode()
        out.append(
            b"M 100644 inline d%03d/f%05d.txt\ndata %d\n%s\n" % (i // 100, i, len(body), body)
        )
    return b"".join(out)


def make_repo(path: Path, files: int) -> str:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "fast-import", "--quiet", input=fast_import(files))
    return git(path, "rev-parse", "main")


def commit(worktree: Path, i: int) -> None:
    """The ticket itself: one new file, committed."""
    (worktree / f"ticket-{i}.txt").write_text(f"{i}\n")
    git(worktree, "add", "--", f"ticket-{i}.txt")
    git(worktree, "commit", "-q", "--no-verify", "-m", f"T-{i}")


Ticket = Callable[[int], None]


def fresh_worktrees(repo: Path, base: str) -> Ticket:
    def ticket(i: int) -> None:
        path = project.open_project(repo).worktrees_dir / f"T-{i}"
        worktrees.create(repo, path, f"sage/T-{i}", base)
        commit(path, i)
        worktrees.remove(repo, path)

    return ticket


def slots(repo: Path, base: str) -> Ticket:
    folder = project.open_project(repo).worktrees_dir / "_slots"
    worktrees.prepare_slot(repo, folder, 0, "warm", base)  # created once

    def ticket(i: int) -> None:
        slot = worktrees.prepare_slot(repo, folder, 0, f"S-{i}", base)
        commit(slot.path, i)
        worktrees.note_tidy(slot.path, tidy=True)  # what workers.collect notes after this one

    return ticket


def plain_loop(repo: Path, base: str) -> Ticket:
    path = repo.parent / f"{repo.name}-plain"
    git(repo, "worktree", "add", "-q", "--detach", str(path), base)  # created once

    def ticket(i: int) -> None:
        git(path, "checkout", "-q", "-f", "-B", f"plain/T-{i}", base)
        commit(path, i)

    return ticket


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def per_ticket(tickets: dict[str, Ticket], count: int) -> dict[str, float]:
    """Seconds per ticket of each strategy, tickets interleaved so load hits all alike."""
    spent = dict.fromkeys(tickets, 0.0)
    for i in range(count):
        for name, ticket in tickets.items():
            spent[name] += timed(lambda: ticket(i))  # noqa: B023 (called at once)
    return {name: seconds / count for name, seconds in spent.items()}


def case(options: Options, files: int, count: int) -> list[Row]:
    repo = options.workdir / f"isolation-{files}"
    base = make_repo(repo, files)
    made: dict[str, Ticket] = {}
    created = timed(lambda: made.update(slot=slots(repo, base)))
    made.update(plain=plain_loop(repo, base), today=fresh_worktrees(repo, base))
    cost = per_ticket(made, count)
    name = f"{files // 1000}k files, {count} tickets"
    return [
        row(SECTION, name, "fresh worktree per ticket / reused worktree", cost["today"],
            floor=cost["plain"], note="before slots; floor: checkout -f -B base, apply, commit"),
        row(SECTION, name, "worker slot (prepare_slot) / reused worktree", cost["slot"],
            floor=cost["plain"], goal=1.5, note="as the stream runs tickets"),
        row(SECTION, name, "creating a slot (once per slot)", created,
            note="git worktree add: O(files), paid once per worker instead of per ticket"),
    ]  # fmt: skip


def run(options: Options) -> list[Row]:
    # `git worktree add` of 50k files takes 10-25 s on the bench machine: --quick stops at 5k
    sizes = ((1000, 5), (5000, 1)) if options.quick else ((1000, 30), (50_000, 3))
    return [r for files, count in sizes for r in case(options, files, count)]
