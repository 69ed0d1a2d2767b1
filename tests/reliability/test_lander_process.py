"""The stream's helper processes killed while it runs (out of memory, a stray kill). The lander's:
the stream hears of it, stops starting work, keeps what its workers produced queued, and exits 3.
The workers' process: the stream stops starting work, gives back what it was running (no
attempt used) after killing its workers, lands what was queued, and exits 3. Either way the
next run lands everything exactly once."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import git, ticket
from tests.reliability.conftest import (
    STREAM,
    finish,
    fsck_clean,
    landed_exactly_once,
    new_repo,
    no_lost_work,
    start,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the lander forks on Linux only")


def writer(name: str) -> list[str]:
    return [sys.executable, "-c", f"import time, pathlib; time.sleep(0.3); "
            f"pathlib.Path({name!r}).write_text({name!r})"]  # fmt: skip


def child_named(pid: int, name: str) -> int | None:
    """The stream's child that named itself `name` (its lander, "sage-lander", or its workers'
    process, "sage-workers": see sage.lib.forked.become)."""
    return next((kid for kid in children(pid) if _comm(kid) == name), None)


def children(pid: int) -> list[int]:
    try:
        return [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def at_first_landing(proc: subprocess.Popen[str], repo: Path, name: str) -> int:
    """The stream's child named `name` once the first ticket has landed (the next ones run)."""
    deadline, child = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        child = child_named(proc.pid, name)
        if child and "Sage-Ticket" in git(repo, "log", "-1", "--format=%B", "main"):
            break
        time.sleep(0.02)
    assert child is not None, f"the stream has no {name} process"
    return child


def test_a_killed_lander_process_stops_the_stream_and_the_next_run_lands_everything(
    tmp_path: Path,
) -> None:
    ids = [f"T-{n}" for n in range(1, 9)]
    repo = new_repo(tmp_path / "repo", [ticket(t, command=writer(f"{t}.txt")) for t in ids])
    proc = start(repo, *STREAM)
    lander = at_first_landing(proc, repo, "sage-lander")
    os.kill(lander, signal.SIGKILL)
    code, out, err = finish(proc)
    assert code == 3, out + err
    assert "the lander's process was killed by SIGKILL" in out + err
    assert proc.pid != lander
    code, out, err = finish(start(repo, *STREAM))
    assert code == 0, out + err
    landed_exactly_once(repo, ids)
    no_lost_work(repo)
    fsck_clean(repo)


def test_a_killed_workers_process_stops_the_stream_and_the_next_run_lands_everything(
    tmp_path: Path,
) -> None:
    ids = [f"T-{n}" for n in range(1, 9)]
    repo = new_repo(tmp_path / "repo", [ticket(t, command=writer(f"{t}.txt")) for t in ids])
    proc = start(repo, *STREAM)
    workers = at_first_landing(proc, repo, "sage-workers")
    running = children(workers)  # its workers: each in a session of its own, still its children
    os.kill(workers, signal.SIGKILL)
    code, out, err = finish(proc)
    assert code == 3, out + err
    assert "the workers' process was killed by SIGKILL" in out + err
    assert "0 deferred" in out and "retry " not in out, out  # given back, not their fault
    assert out.count("finished  ") == len(set(re.findall(r"finished  (T-\d+)", out))), out
    for pid in running:  # its workers were killed too, though they ran in sessions of their own
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} ran on after its process died"
    code, out, err = finish(start(repo, *STREAM))
    assert code == 0, out + err
    landed_exactly_once(repo, ids)
    no_lost_work(repo)
    fsck_clean(repo)
