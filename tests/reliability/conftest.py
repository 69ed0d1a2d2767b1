"""Helpers for the reliability suite: throwaway repositories, the real CLI as a process, and the
invariants every crash, race and bad input must leave intact."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from sage.lib.project import open_project
from tests.conftest import git, state_dir, write_index
from tests.stream.conftest import trailers
from tests.support.git_wrapper import git_wrapper

__all__ = ["git_wrapper"]  # a fixture: `git` on PATH failing or killing at a chosen step

SAGE = (sys.executable, "-m", "sage")
STREAM = ("stream", "--auto", "--parallel", "2", "--backoff", "0.05")
GITIGNORE = "*.lock\n"

# Runs the real CLI with the commit queue's crash hook armed: SIGKILL (no cleanup at all) the
# CRASH_NTH time the queue reaches step CRASH_STEP. The stream's lander may be a child process:
# the count is its own, and sage is killed there as a whole (the stream, which takes the child
# with it), as a kill -9 of `sage stream` would.
CRASHING_CLI = """
import os, signal, sys
from sage.lib import queue
from sage.cli import main

step, nth, seen, sage = os.environ["CRASH_STEP"], int(os.environ["CRASH_NTH"]), [], os.getpid()

def hook(name):
    if name == step:
        seen.append(name)
        if len(seen) == nth:
            os.kill(sage, signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

queue.step_hook = hook
sys.exit(main(sys.argv[1:]))
"""


def new_repo(path: Path, tickets: list[dict[str, Any]]) -> Path:
    """A repository on main whose first commit holds README.md and the ticket index."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("hello\n")
    (path / ".gitignore").write_text(GITIGNORE)
    write_index(path, tickets)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "tickets")
    return path


def start(repo: Path, *args: str, crash: tuple[str, int] | None = None) -> subprocess.Popen[str]:
    """`sage ARGS` in `repo` as a process of its own; `crash` arms the queue's crash hook."""
    env = dict(os.environ)
    argv: list[str] = [*SAGE, *args]
    if crash:
        env.update(CRASH_STEP=crash[0], CRASH_NTH=str(crash[1]))
        argv = [sys.executable, "-c", CRASHING_CLI, *args]
    return subprocess.Popen(
        argv,
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def index_data(repo: Path) -> dict[str, Any]:
    """The index as sage sees it (the run's ticket states laid over it); the file itself must
    always be valid JSON."""
    json.loads((repo / ".sage/tickets/index.json").read_text())
    return open_project(repo).ticket_store().load().raw


def committed_state(repo: Path, commit: str, tid: str) -> str | None:
    """A ticket's state in the index as committed in `commit`."""
    data = json.loads(git(repo, "show", f"{commit}:.sage/tickets/index.json"))
    return next((t.get("state") for t in data["tickets"] if t["id"] == tid), None)


def worktree_paths(repo: Path) -> list[Path]:
    """The repository's worktrees but sage's worker slots (kept for the next ticket and run)."""
    out = git(repo, "worktree", "list", "--porcelain")
    paths = [Path(line[9:]) for line in out.splitlines() if line.startswith("worktree ")]
    return [p for p in paths if p.parent.name != "_slots"]


def branches(repo: Path, prefix: str = "refs/heads/sage/") -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split() for line in out.splitlines())


def is_ancestor(repo: Path, commit: str, of: str = "main") -> bool:
    done = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, of])
    return done.returncode == 0


def fsck_clean(repo: Path) -> None:
    done = subprocess.run(
        ["git", "-C", str(repo), "fsck", "--no-dangling", "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def no_lost_work(repo: Path) -> None:
    """Every ticket branch left over is landed (an ancestor of main) or kept aside by name."""
    for ref, tip in branches(repo).items():
        assert "-recovered-" in ref or is_ancestor(repo, tip), f"{ref} holds unlanded work"


def landed_exactly_once(repo: Path, ids: list[str], *, scratch_ok: bool = False) -> None:
    """The end state after any crash and a clean resume: each ticket once on main, COMPLETED
    with that commit, nothing queued, only the user's worktree, no lost branch, git intact."""
    counts = Counter(trailers(repo))
    assert counts == Counter(ids), f"landed: {counts}"
    for raw in index_data(repo)["tickets"]:
        assert raw["state"] == "COMPLETED", (raw["id"], raw["state_history"][-3:])
        grep = f"--grep=^Sage-Ticket: {raw['id']}$"
        commit = git(repo, "log", "-1", "--format=%H", grep, "main")
        assert committed_state(repo, commit, raw["id"]) == "COMPLETED"  # with its landing
        assert committed_state(repo, f"{commit}^", raw["id"]) != "COMPLETED"
    assert not list((state_dir(repo) / "queue").glob("*.json")), "entries left in the queue"
    extra = [p for p in worktree_paths(repo)[1:] if not (scratch_ok and p.name == "_verify")]
    assert extra == [], f"worktrees left: {extra}"
    assert git(repo, "rev-list", "--merges", "main") == "", "main is not linear"
    no_lost_work(repo)
    fsck_clean(repo)


def reflog(repo: Path, ref: str = "refs/heads/main") -> list[tuple[str, str, str]]:
    """(old, new, message) of every move of `ref`, oldest first, from git's own reflog."""
    path = Path(git(repo, "rev-parse", "--git-path", f"logs/{ref}"))
    log = path if path.is_absolute() else repo / path
    moves = []
    for line in log.read_text().splitlines():
        head, _, message = line.partition("\t")
        old, new = head.split()[:2]
        moves.append((old, new, message))
    return moves


def moves_chain(repo: Path, since: int = 0) -> list[tuple[str, str, str]]:
    """The reflog from move `since` on, checked to be one unbroken chain of fast-forwards:
    each move starts where the previous one ended and nothing it added was dropped later."""
    moves = reflog(repo)[since:]
    for (_, before, _), (old, _, message) in itertools.pairwise(moves):
        assert old == before, f"{message!r} moved main from {old}, not from {before}"
    for old, new, message in moves:
        assert is_ancestor(repo, old, new), f"{message!r} was not a fast-forward"
        assert is_ancestor(repo, new), f"{message!r} added {new}, which main lost since"
    return moves
