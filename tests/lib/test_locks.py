"""A named lock says who holds it: in the lock file, written while held, emptied on release."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sage.lib import locks
from sage.lib.errors import LockHeld

HOLDER = """
import sys, time
from pathlib import Path
from sage.lib import locks
with locks.hold(Path(sys.argv[1]), timeout=5, what="test"):
    print("held", flush=True)
    time.sleep(30)
"""


def test_the_holder_is_named_while_it_holds_and_no_file_is_made_beside(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "queue.lock"
    with locks.hold(path, timeout=1, what="the commit queue"):
        info = locks.owner(path)
        assert info is not None and info["pid"] == os.getpid()
        assert locks.describe(path).startswith(f"PID {os.getpid()} on ")
    assert locks.owner(path) is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["queue.lock"]


def test_another_process_holding_it_is_named_in_the_refusal(tmp_path: Path) -> None:
    path = tmp_path / "queue.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE,
                              text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        refused = pytest.raises(LockHeld, match=f"the commit queue is held by PID {holder.pid} ")
        with refused, locks.hold(path, timeout=0, what="the commit queue"):
            pass
    finally:
        holder.kill()
        holder.communicate()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # a killed holder's flock goes with its process
        try:
            with locks.hold(path, timeout=0, what="the commit queue"):
                assert (
                    locks.owner(path) == locks.owner(path)
                    and locks.owner(path)["pid"] == os.getpid()
                )
            break
        except LockHeld:
            time.sleep(0.05)
    else:
        pytest.fail("the lock stayed held after its holder was killed")
