"""The local executor's pid files: one per slot, written over, read by `sage status` and by the
next run, which kills what a dead run's workers left running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from sage.lib import executors, files, proc
from tests.conftest import wait_for


def test_a_dead_runs_worker_named_in_its_slot_file_is_killed_by_the_next_run(
    tmp_path: Path,
) -> None:
    pids = tmp_path / "workers"
    pids.mkdir()
    orphan = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
        env={**os.environ, "SAGE_TICKET_ID": "T-1"},
    )  # fmt: skip
    try:
        # Until its exec the child's environment is still ours, with no SAGE_TICKET_ID in it
        environ = Path(f"/proc/{orphan.pid}/environ")
        wait_for(lambda: b"SAGE_TICKET_ID=T-1" in environ.read_bytes())
        files.write_over(executors.pid_file(pids, 0), f"T-1 {orphan.pid}\n")
        files.write_over(executors.pid_file(pids, 1), "")  # emptied: its worker ended
        (pids / "T-9.pid").write_text("4194000\n")  # an older sage's file; no such process
        assert proc.pid_entry(executors.pid_file(pids, 0)) == ("T-1", orphan.pid)
        assert proc.pid_entry(pids / "T-9.pid") == ("T-9", 4194000)
        assert proc.pid_entry(executors.pid_file(pids, 1)) is None
        assert executors.kill_stale(pids) == ["T-1"]
        deadline = time.monotonic() + 5
        while orphan.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert orphan.returncode is not None
        assert not list(pids.iterdir())
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()


def test_a_slot_file_written_over_keeps_no_rest_of_a_longer_line(tmp_path: Path) -> None:
    path = executors.pid_file(tmp_path, 3)
    files.write_over(path, "LONG-TICKET-ID 123456\n")
    inode = path.stat().st_ino
    files.write_over(path, "T-2 7\n")
    assert path.read_text() == "T-2 7\n" and path.stat().st_ino == inode
    assert proc.pid_entry(path) == ("T-2", 7)
    path.write_text("T-2 ")  # cut short by a kill
    assert proc.pid_entry(path) is None
