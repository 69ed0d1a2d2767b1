"""How many git processes a stream starts per ticket: a `git` on PATH that logs every call.

The wrapper sees the calls sage makes; git's own child processes (`worktree add` runs
`update-ref` and `reset --hard`) do not go through PATH, so git's trace2 event log counts every
git process as well.

Each ticket in a chain waits for the one before it to land, so the count is the same every run.
Two runs of different length give the cost per ticket (their difference) apart from the run's
fixed cost. The bounds are today's counts: they can only go down.

Issue 15 brought it from 14 calls (15 processes) to 2: a worker slot reuses its worktree
(`worktrees.prepare_slot`: a slot its last ticket left tidy is switched in process, moving the
files that differ and the index as `git read-tree -m -u` would, `index_file.fast_forward`;
else one checkout; the index flags read from the index file, no `git clean` after a collect
that left nothing untracked or ignored); one status decides whether the leftovers need `add`
and what lands (no `diff`); sage's commit is written in process (the tree from the index
file: no `git commit`, so no `git maintenance` either); the user's branches are not listed
when the worker made no commit; the queue reads the worker's one commit from its object file
(no `log`). The landing writes its commit, and the merge when the two sides changed different
paths, as loose objects, moves the target as git's files backend does (`objects.commit`,
`objects.merged_tree`, `git.update_ref`), and brings the user's clean checkout along the same
way as a slot's. Everything falls back to git where the files cannot tell for sure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.reliability.conftest import SAGE, landed_exactly_once, new_repo

SHORT, LONG = 3, 8
# Counts as of 2026-12-01, from the breakdown this test prints; they may only go down. Before
# issue 15: 14 calls and 15 processes per ticket (ls-files -v, checkout, clean, status, add,
# diff, commit, and git's own `maintenance` after it; for-each-ref, log, commit-tree, read-tree
# ×2, update-ref ×2).
MAX_PER_TICKET = 2
# in the slot: status, add (the touched file is untracked; a worker that stages all it does,
# as `git apply --index`, needs neither: `index_file.status`). The switch of a slot its last
# ticket left tidy moves the files that differ and the index in process
# (`index_file.fast_forward`); the commit is written in process from what the index file then
# holds (`workers._commit_here`)
MAX_WORKER_SIDE = 2
# in the user's checkout: nothing. Its dry run is answered from the index file and the files
# when they show the checkout clean for the paths the landing changes, and the update itself is
# done in process when it is plain (`index_file.clean`, `index_file.fast_forward`; else git
# does both). The landing commit (with the ticket's COMPLETED in its tree) is written as loose
# objects and the compare-and-swap is done on the ref's file; the landed branches are deleted
# in one call at the end.
MAX_LANDING_SIDE = 0
MAX_ALL_PROCESSES = 2  # every git process, git's own children included (trace2)
# once a run, whatever its length: the repository's top (rev-parse), the branches and
# worktrees (for-each-ref ×2, worktree list, ls-files), git's settings for the repository and
# the slot (var ×2) and its identity (var), the one slot made (worktree add), the landed
# branches deleted (update-ref), git's housekeeping (maintenance). 7 `rev-parse
# --git-common-dir` went in session 6 (the common dir is read from the files); a second
# `rev-parse --show-toplevel` and the checked-out branch (`symbolic-ref`, now read from HEAD)
# in session 10.
MAX_PER_RUN = 11

WRAPPER = """#!/bin/sh
line="$PWD"
for arg in "$@"; do line="$line	$arg"; done
printf '%s\\n' "$line" >> {log}
exec {git} "$@"
"""


def logging_git(folder: Path) -> tuple[Path, Path]:
    """A bin folder whose `git` appends `cwd<TAB>argv…` to a log, then runs the real git."""
    real = shutil.which("git")
    assert real, "git is not installed"
    folder.mkdir()
    log = folder / "git-calls.log"
    script = folder / "git"
    script.write_text(WRAPPER.format(log=log, git=real))
    script.chmod(0o755)
    return folder, log


def chain(count: int) -> list[dict[str, object]]:
    return [
        {"id": f"T-{i}", "title": f"step {i}", "dependencies": [f"T-{i - 1}"] if i else [],
         "command": ["touch", f"file-{i}.txt"]}
        for i in range(count)
    ]  # fmt: skip


def calls(tmp_path: Path, name: str, count: int) -> tuple[list[tuple[str, str]], int]:
    """(side, subcommand) of every git call sage made in one `sage stream` of a `count`-ticket
    chain, and how many git processes ran in all."""
    repo = new_repo(tmp_path / name, chain(count))
    bin_dir, log = logging_git(tmp_path / f"{name}-bin")
    trace = tmp_path / f"{name}-trace2.json"
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "GIT_TRACE2_EVENT": str(trace)}
    done = subprocess.run([*SAGE, "stream", "--auto", "--parallel", "1"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    processes = trace.read_text().count('"event":"start"')
    made = [classify(line) for line in log.read_text().splitlines()]
    landed_exactly_once(repo, [f"T-{i}" for i in range(count)])
    return made, processes


def classify(line: str) -> tuple[str, str]:
    cwd, *argv = line.split("\t")
    where = argv[argv.index("-C") + 1] if "-C" in argv else cwd
    args = argv[argv.index("-C") + 2 :] if "-C" in argv else argv
    while args and args[0].startswith("-"):  # `git -c key=value --no-optional-locks sub…`
        args = args[2:] if args[0] == "-c" else args[1:]
    sub = args[0] if args else "?"
    if sub == "worktree" and len(args) > 1:
        sub = f"worktree {args[1]}"
    in_worktree = "/sage/worktrees/" in where or sub.startswith("worktree")
    return ("worker" if in_worktree else "landing", sub)


def breakdown(short: Counter[tuple[str, str]], long: Counter[tuple[str, str]]) -> str:
    extra = LONG - SHORT
    lines = [f"git calls per ticket ({LONG} - {SHORT} tickets) and per run:"]
    for key in sorted(set(short) | set(long)):
        per = (long[key] - short[key]) / extra
        fixed = short[key] - per * SHORT
        lines.append(f"  {key[0]:8} {key[1]:22} {per:5.2f} per ticket {fixed:5.1f} per run")
    return "\n".join(lines)


@pytest.mark.timeout(300)
def test_git_processes_per_ticket_only_go_down(tmp_path: Path) -> None:
    short_calls, short_all = calls(tmp_path, "short", SHORT)
    long_calls, long_all = calls(tmp_path, "long", LONG)
    short, long = Counter(short_calls), Counter(long_calls)
    print(breakdown(short, long), file=sys.stderr)
    every = (long_all - short_all) / (LONG - SHORT)

    def per_ticket(side: str | None = None) -> float:
        keys = [k for k in long.keys() | short.keys() if side in (None, k[0])]
        return sum(long[k] - short[k] for k in keys) / (LONG - SHORT)

    # one landing per ticket: in a chain each lands alone
    print(f"git calls per ticket: {per_ticket():.2f} (worker side {per_ticket('worker'):.2f}, "
          f"per landing {per_ticket('landing'):.2f}); every git process: {every:.2f}",
          file=sys.stderr)  # fmt: skip
    per_run = sum(short.values()) - per_ticket() * SHORT
    assert per_run <= MAX_PER_RUN, breakdown(short, long)
    assert per_ticket("worker") <= MAX_WORKER_SIDE
    assert per_ticket("landing") <= MAX_LANDING_SIDE
    assert per_ticket() <= MAX_PER_TICKET
    assert every <= MAX_ALL_PROCESSES
