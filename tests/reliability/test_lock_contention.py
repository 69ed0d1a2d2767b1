"""Several real processes landing on one repository at once: every ticket lands exactly once, and
main only ever moves by compare-and-swap, which git's own reflog of main proves move by move."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sage.lib import git as sgit
from sage.lib import worktrees
from sage.lib.project import open_project
from sage.lib.queue import CommitQueue
from tests.conftest import CliResult, git, worktrees_dir
from tests.lib.test_queue import landed_ids, setup, states, user_changes, work
from tests.reliability.conftest import SAGE, moves_chain, reflog

# Waits for the starting gun, then enqueues its tickets one by one, processing after each.
LANDER = """
import pathlib, sys, time
from sage.lib import git as sgit
from sage.lib import worktrees
from sage.lib.project import open_project
from sage.lib.queue import CommitQueue

repo, gun = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
project = open_project(repo)
q = CommitQueue(project, project.ticket_store(), target_branch="main", lock_timeout=60)
while not gun.exists():
    time.sleep(0.002)
for job in sys.argv[3:]:
    tid, base = job.split("=")
    q.enqueue(ticket_id=tid, title=tid, branch=f"sage/{tid}", base=base)
    for outcome in q.process():
        print(type(outcome).__name__, outcome.entry.ticket_id, flush=True)
"""

# `sage queue process` with a pause between recording the landing and its compare-and-swap.
PAUSING_CLI = """
import pathlib, sys, time
from sage.lib import queue
from sage.cli import main

paused, resume = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])

def hook(step):
    if step == "recorded" and not paused.exists():
        paused.write_text("")
        while not resume.exists():
            time.sleep(0.005)

queue.step_hook = hook
sys.exit(main(["queue", "process", "--json"]))
"""


def queue_of(repo: Path) -> CommitQueue:
    project = open_project(repo)
    return CommitQueue(project, project.ticket_store(), target_branch="main")


def landings_match_the_reflog(repo: Path, moves: list[tuple[str, str, str]]) -> None:
    """Each landed entry's recorded compare-and-swap (from its old head, to a stack holding its
    commit) is one of the moves in main's reflog."""
    for entry in queue_of(repo).archived():
        if entry.status != "landed":
            continue
        assert any(
            old == entry.old_target and _contains(repo, new, str(entry.new_target))
            for old, new, _ in moves
        ), f"{entry.ticket_id} landed by a move the reflog does not have"


def _contains(repo: Path, top: str, commit: str) -> bool:
    return commit == top or _ancestor(repo, commit, top)


def _ancestor(repo: Path, commit: str, of: str) -> bool:
    done = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", commit, of])
    return done.returncode == 0


def added(repo: Path, moves: list[tuple[str, str, str]]) -> int:
    return sum(int(git(repo, "rev-list", "--count", f"{old}..{new}")) for old, new, _ in moves)


def test_four_processes_enqueuing_and_landing_at_once_land_each_ticket_once(repo: Path) -> None:
    ids = [f"T-{n}" for n in range(12)]
    project, store = setup(repo, *ids)
    bases = {tid: work(project, tid, {f"{tid}.txt": f"{tid}\n"}) for tid in ids}
    before = len(reflog(repo))
    gun = repo.parent / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LANDER, str(repo), str(gun)]
            + [f"{tid}={bases[tid]}" for tid in ids[n::4]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    time.sleep(0.5)  # every interpreter up and waiting
    gun.write_text("")
    results = [p.communicate(timeout=90) for p in procs]

    assert [p.returncode for p in procs] == [0] * 4, results
    assert sorted(landed_ids(repo)) == sorted(ids)  # each exactly once
    reported = [line.split() for out, _ in results for line in out.splitlines()]
    assert sorted(tid for kind, tid in reported if kind == "Landed") == sorted(ids)
    assert set(states(store).values()) == {"COMPLETED"}
    moves = moves_chain(repo, since=before)
    assert added(repo, moves) == len(ids), "a commit added twice, or one lost"
    assert git(repo, "rev-list", "--merges", "main") == ""
    landings_match_the_reflog(repo, moves)
    assert user_changes(repo) == []


def test_three_sage_queue_process_commands_at_once_land_each_entry_once(repo: Path) -> None:
    ids = [f"Q-{n}" for n in range(9)]
    project, store = setup(repo, *ids)
    q = queue_of(repo)
    for tid in ids:
        base = work(project, tid, {f"{tid}.txt": f"{tid}\n"})
        q.enqueue(ticket_id=tid, title=tid, branch=f"sage/{tid}", base=base)
    before = len(reflog(repo))
    procs = [
        subprocess.Popen(
            [*SAGE, "queue", "process", "--json"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=90) for p in procs]

    assert [p.returncode for p in procs] == [0] * 3, results
    rows = [row for out, _ in results for row in json.loads(out)["outcomes"]]
    assert sorted(r["ticket"] for r in rows if r["outcome"] == "landed") == ids
    assert sorted(landed_ids(repo)) == ids
    assert set(states(store).values()) == {"COMPLETED"}
    moves = moves_chain(repo, since=before)
    assert added(repo, moves) == len(ids)
    landings_match_the_reflog(repo, moves)
    assert q.pending() == [] and user_changes(repo) == []


def test_a_user_commit_between_computing_and_the_swap_is_kept_and_landed_upon(repo: Path) -> None:
    project, store = setup(repo, "U-1")
    q = queue_of(repo)
    q.enqueue(ticket_id="U-1", title="U-1", branch="sage/U-1",
              base=work(project, "U-1", {"u.txt": "sage\n"}))  # fmt: skip
    before, computed_on = len(reflog(repo)), git(repo, "rev-parse", "main")
    paused, resume = repo.parent / "paused", repo.parent / "resume"
    lander = subprocess.Popen(
        [sys.executable, "-c", PAUSING_CLI, str(paused), str(resume)],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not paused.exists() and lander.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    (repo / "mine.txt").write_text("the user's work\n")  # a foreign process moves main
    git(repo, "add", "mine.txt")
    git(repo, "commit", "-q", "-m", "user work")
    user = git(repo, "rev-parse", "main")
    resume.write_text("")
    out, err = lander.communicate(timeout=60)

    assert lander.returncode == 0, out + err
    assert [r["outcome"] for r in json.loads(out)["outcomes"]] == ["landed"]
    assert landed_ids(repo) == ["U-1"]
    assert git(repo, "rev-parse", "main^") == user, "landed on the user's commit"
    moves = moves_chain(repo, since=before)
    assert [(old, new) for old, new, _ in moves][:1] == [(computed_on, user)]
    assert len(moves) == 2 and moves[1][0] == user, "the swap from the stale head failed"
    assert (repo / "mine.txt").exists() and (repo / "u.txt").exists()
    assert states(store) == {"U-1": "COMPLETED"} and user_changes(repo) == []


def test_a_lock_a_killed_git_left_on_main_is_named_not_taken_for_a_race(
    repo: Path, sage: Callable[..., CliResult]
) -> None:
    """Found by the kill test: git killed inside `update-ref` leaves `refs/heads/main.lock`; the
    queue read every failed swap as "main moved", retried, and said main "kept moving"."""
    project, store = setup(repo, "K-1")
    q = queue_of(repo)
    q.enqueue(ticket_id="K-1", title="K-1", branch="sage/K-1",
              base=work(project, "K-1", {"k.txt": "k\n"}))  # fmt: skip
    head = git(repo, "rev-parse", "main")
    stale = repo / ".git/refs/heads/main.lock"
    stale.write_text("")

    done = sage("queue", "process", cwd=repo)

    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert str(stale) in done.stderr.splitlines()[0]
    assert "kept moving" not in done.stdout + done.stderr
    assert git(repo, "rev-parse", "main") == head and states(store) == {"K-1": "IN_PROGRESS"}
    stale.unlink()  # what git's own message tells the user to do
    assert sage("queue", "process", cwd=repo).returncode == 0
    assert landed_ids(repo) == ["K-1"] and states(store) == {"K-1": "COMPLETED"}


def test_worker_threads_making_and_removing_worktrees_at_once_never_trip_on_each_other(
    repo: Path,
) -> None:
    """Found by the corpus: `git worktree add` writes its admin files one by one, and a
    concurrent `git worktree` command reading them fails ("failed to read …/commondir"), so
    parallel workers were deferred for nothing. Sage's own worktree commands take turns."""
    base, trees = git(repo, "rev-parse", "main"), worktrees_dir(repo)

    def churn(slot: int) -> None:
        for n in range(12):
            tid = f"T-{slot}-{n}"
            worktrees.create(repo, trees / tid, f"sage/{tid}", base)
            assert trees / tid in sgit.worktrees(repo)
            worktrees.remove(repo, trees / tid)
            worktrees.delete_branch(repo, f"sage/{tid}")

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(churn, range(4)))  # re-raises the first failure
    assert list(sgit.worktrees(repo)) == [repo]


def test_a_stale_index_lock_in_the_users_checkout_is_named_not_called_changes(
    repo: Path, sage: Callable[..., CliResult]
) -> None:
    project, _ = setup(repo, "I-1")
    q = queue_of(repo)
    q.enqueue(ticket_id="I-1", title="I-1", branch="sage/I-1",
              base=work(project, "I-1", {"i.txt": "i\n"}))  # fmt: skip
    head = git(repo, "rev-parse", "main")
    (repo / ".git/index.lock").write_text("")  # a git killed in the user's checkout

    done = sage("queue", "process", cwd=repo)

    said = done.stdout + done.stderr
    assert done.returncode == 1 and git(repo, "rev-parse", "main") == head
    assert [e.ticket_id for e in q.pending()] == ["I-1"]  # nothing lost: it waits
    assert ".git/index.lock" in said and "uncommitted changes" not in said
