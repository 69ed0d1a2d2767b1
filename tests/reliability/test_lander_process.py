"""The lander's own process killed while the stream runs (out of memory, a stray kill): the
stream hears of it, stops starting work, keeps what its workers produced queued, and exits 3;
the next run lands everything exactly once."""

from __future__ import annotations

import os
import signal
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


def lander_of(pid: int) -> int | None:
    """The stream's child that is a copy of it (the same command line): its lander, forked
    before any worker. The lowest such number, seen twice 50 ms apart: a child that has not yet
    run its program shows the stream's command line too, for a moment."""
    seen = []
    for _ in range(2):
        try:
            mine = Path(f"/proc/{pid}/cmdline").read_bytes()
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        copies = [int(k) for k in kids if _cmdline(int(k)) == mine]
        seen.append(min(copies, default=None))
        time.sleep(0.05)
    return seen[0] if seen[0] == seen[1] else None


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_a_killed_lander_process_stops_the_stream_and_the_next_run_lands_everything(
    tmp_path: Path,
) -> None:
    ids = [f"T-{n}" for n in range(1, 9)]
    repo = new_repo(tmp_path / "repo", [ticket(t, command=writer(f"{t}.txt")) for t in ids])
    proc = start(repo, *STREAM)
    deadline, lander = time.monotonic() + 60, None
    while time.monotonic() < deadline:  # the first landing, then kill its lander
        lander = lander_of(proc.pid)
        if lander and "Sage-Ticket" in git(repo, "log", "-1", "--format=%B", "main"):
            break
        time.sleep(0.02)
    assert lander is not None, "the stream has no lander process"
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
