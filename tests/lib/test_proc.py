"""The one place sage runs processes: a worker's processes never outlive its run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sage.lib import proc


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it is gone for our purposes)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def run_worker(tmp_path: Path, code: str, **kwargs: float) -> proc.Finished:
    env = proc.clean_env({"SAGE_TICKET_ID": "P-1"})
    return proc.run_logged(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, log=tmp_path / "w.log", **kwargs
    )


CHILD = (
    "import subprocess, sys, pathlib\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time, pathlib; time.sleep(1.5); "
    'pathlib.Path("late.txt").write_text("written after the run")\'], {how})\n'
    "pathlib.Path('child.pid').write_text(str(child.pid))\n"
)


@pytest.mark.parametrize(
    "how", ["start_new_session=False", "start_new_session=True"], ids=["group", "setsid"]
)
def test_what_a_worker_leaves_running_is_killed_and_reported(tmp_path: Path, how: str) -> None:
    """Found here: a background child (in the worker's group, or in a session of its own) lived
    on after the run and wrote into the checkout after its work had landed."""
    done = run_worker(tmp_path, CHILD.format(how=how))
    child = int((tmp_path / "child.pid").read_text())

    assert done.returncode == 0 and not alive(child)
    assert [line.split(" ", 1)[0] for line in done.left_running] == [str(child)]
    assert "left running" in (tmp_path / "w.log").read_text()
    time.sleep(2)
    assert not (tmp_path / "late.txt").exists()


def test_a_timeout_kills_escaped_processes_too(tmp_path: Path) -> None:
    code = CHILD.format(how="start_new_session=True") + "import time; time.sleep(60)\n"
    done = run_worker(tmp_path, code, timeout=1)
    child = int((tmp_path / "child.pid").read_text())
    assert done.timed_out and not alive(child)
    assert len(done.left_running) == 1


def test_a_watch_that_says_stop_kills_the_run_and_its_escaped_processes(tmp_path: Path) -> None:
    code = CHILD.format(how="start_new_session=True") + "import time; time.sleep(60)\n"

    def watch() -> bool:
        return (tmp_path / "child.pid").exists()

    done = proc.run_logged([sys.executable, "-c", code], cwd=tmp_path, env=proc.clean_env(),
                           log=tmp_path / "w.log", watch=watch)  # fmt: skip
    child = int((tmp_path / "child.pid").read_text())
    assert done.stopped and not done.timed_out and done.returncode == -9
    assert done.seconds < 30 and not alive(child) and len(done.left_running) == 1


def test_a_watch_that_never_says_stop_changes_nothing(tmp_path: Path) -> None:
    asked: list[bool] = []

    def watch() -> bool:
        asked.append(True)
        return False

    code = "import time; time.sleep(1.3); print('done')"
    done = proc.run_logged([sys.executable, "-c", code], cwd=tmp_path, env=proc.clean_env(),
                           log=tmp_path / "w.log", watch=watch)  # fmt: skip
    assert done.returncode == 0 and not done.stopped
    assert asked, "not asked while the run lasted"
    seen = len(asked)
    time.sleep(proc.WATCH_EVERY * 2)
    assert len(asked) == seen, "asked again after the run ended"
    assert (tmp_path / "w.log").read_text() == "done\n"


def test_a_clean_worker_leaves_nothing_to_report(tmp_path: Path) -> None:
    done = run_worker(tmp_path, "print('hi')")
    assert done.returncode == 0 and done.left_running == ()


def test_processes_of_other_runs_are_left_alone(tmp_path: Path) -> None:
    """Only this run's processes are killed: not another worker's with the same ticket."""
    import subprocess

    env = dict(os.environ, SAGE_TICKET_ID="P-1")
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], env=env)
    try:
        run_worker(tmp_path, "pass")
        assert alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_only_processes_started_since_are_looked_at_unless_numbers_may_have_wrapped() -> None:
    forks = proc._forks()
    assert forks is not None and proc._pid_max() > 300
    assert proc._lowest_pid(300, forks) == 300  # nothing numbered below 300 started since
    assert proc._lowest_pid(proc._pid_max() - 5, forks) == 0  # near the end: may wrap
    assert proc._lowest_pid(300, None) == 0  # cannot tell: every process


CTRL_C_DURING = """
import signal, sys
from sage.lib import proc
presses = []
signal.signal(signal.SIGINT, lambda *_: presses.append(1))  # as the stream counts presses
touch = f"pathlib.Path({sys.argv[2]!r}).touch()"
code = f"import pathlib, time; {touch}; time.sleep(0.6); print('done')"
done = proc.run([sys.executable, "-c", code], check=False, interruptible=sys.argv[1] == "yes")
print(done.returncode, done.stdout.strip(), len(presses))
"""


@pytest.mark.parametrize("interruptible", ["no", "yes"])
def test_a_terminal_ctrl_c_does_not_kill_sages_own_commands(
    tmp_path: Path, interruptible: str
) -> None:
    """A terminal sends Ctrl+C to its whole foreground process group. sage's own commands (git)
    start with it blocked, so that a graceful stop does not fail a git call under way; a
    user's command (a slot's setup) is `interruptible`. sage itself still hears the press.
    (The command here is Python: a shell such as dash clears the mask it was given.)"""
    started = tmp_path / "started"
    child = subprocess.Popen([sys.executable, "-c", CTRL_C_DURING, interruptible, str(started)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 30
    while not started.exists() and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    if started.exists():
        os.killpg(child.pid, signal.SIGINT)
    out, err = child.communicate(timeout=30)
    assert started.exists(), err
    code, *said = out.split()
    if interruptible == "yes":
        assert int(code) == -signal.SIGINT, out + err
    else:
        assert (int(code), said) == (0, ["done", "1"]), out + err
