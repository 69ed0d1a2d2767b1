"""The lander in a process of its own, driven by a fresh interpreter (it forks only while no
other thread runs, which a test process cannot promise): it lands with a real commit queue and
says so as a thread would, a kill of it is a failure of the queue the stream hears of, and it
dies with the process that forked it."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, git, ticket, write_index
from tests.stream.conftest import writer

ROOT = Path(__file__).resolve().parents[2]

DRIVER = """
import json, os, sys, threading, time
from pathlib import Path
from sage.lib.inbox import Inbox, LandedMsg, LanderFailed, PassDone
from sage.lib.lander import Lander
from tests.lib.test_queue import enqueue, make_queue, setup, work

repo, mode = Path(sys.argv[1]), sys.argv[2]
project, store = setup(repo, "A-1", "A-2")
followed = []
if mode == "untracked":  # COMPLETED goes into the index, not into the landing commits
    import subprocess
    index = ".sage/tickets/index.json"
    subprocess.run(["git", "rm", "-q", "--cached", index], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "untracked"], cwd=repo, check=True)
    with open(repo / ".git" / "info" / "exclude", "a") as exclude:
        exclude.write(".sage/\\n")
hang = f"echo $PPID $$ > {repo.parent}/verifying; exec sleep 60"
verify = ("sh", "-c", hang) if mode == "hang" else ()
if mode == "thread":  # another thread: no fork
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
inbox = Inbox()
own = lambda: make_queue(project, project.ticket_store(), verify=verify)
if mode == "broken":  # its queue cannot be made in the child
    own = lambda: make_queue(project, store, no_such_option=True)
def follow(write):
    followed.append(sorted(write.tickets))
    store.follow(write)
lander = Lander(make_queue(project, store), inbox, own_queue=own, follow=follow)
lander.start()
print(json.dumps({"pid": lander.pid}), flush=True)
queue = make_queue(project, store)
for tid in ("A-1", "A-2"):
    enqueue(queue, tid, work(project, tid, {f"{tid}.txt": tid + "\\n"}))
if mode == "kill":
    os.kill(lander.pid, 9)
lander.wake()
said = []
while not any(isinstance(m, PassDone | LanderFailed) for m in said):
    message = inbox.get(30)
    assert message is not None, said
    said.append(message)
deadline = time.monotonic() + 10
while lander.busy and time.monotonic() < deadline:
    time.sleep(0.01)
busy = lander.busy
lander.close()
said += inbox.drain()
print(json.dumps({
    "landed": [m.outcome.entry.ticket_id for m in said if isinstance(m, LandedMsg)],
    "failed": [m.error.message for m in said if isinstance(m, LanderFailed)],
    "passes": sum(isinstance(m, PassDone) for m in said), "busy": busy,
    "followed": followed, "states": {t.id: t.state for t in store.load().tickets},
}))
"""


def drive(repo: Path, mode: str) -> tuple[subprocess.Popen[str], int | None]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(repo), mode], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["pid"]


def ended(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def test_a_lander_in_its_own_process_lands_and_says_so_as_a_thread_does(repo: Path) -> None:
    proc, pid = drive(repo, "fork")
    assert pid is not None and pid != proc.pid
    said = finish(proc)
    assert said == {
        "landed": ["A-1", "A-2"],
        "failed": [],
        "passes": 1,
        "busy": False,
        "followed": [],
        "states": {"A-1": "COMPLETED", "A-2": "COMPLETED"},
    }
    assert git(repo, "log", "-1", "--format=%s", "main").startswith("A-2")
    assert ended(pid, within=0), "the lander's process outlived its close"


def test_the_stream_s_store_follows_what_the_lander_s_process_writes_into_the_index(
    repo: Path,
) -> None:
    """An index git does not track takes COMPLETED from the lander's process: it tells the
    stream of each write, and the stream's store reads the index as written."""
    proc, _ = drive(repo, "untracked")
    said = finish(proc)
    assert said["landed"] == ["A-1", "A-2"] and said["followed"] == [["A-1", "A-2"]]  # one pass
    assert said["states"] == {"A-1": "COMPLETED", "A-2": "COMPLETED"}


def test_with_another_thread_running_the_lander_is_a_thread_and_lands_the_same(
    repo: Path,
) -> None:
    proc, pid = drive(repo, "thread")
    assert pid is None
    said = finish(proc)
    assert said["landed"] == ["A-1", "A-2"] and not said["failed"] and not said["busy"]


def test_a_lander_process_that_cannot_make_its_queue_says_why_once(repo: Path) -> None:
    proc, _ = drive(repo, "broken")
    said = finish(proc)
    assert said["landed"] == [] and said["busy"] is False
    [failed] = said["failed"]
    assert failed.startswith("the lander's queue: TypeError") and "no_such_option" in failed


def test_a_killed_lander_process_is_a_failure_of_the_queue_the_stream_hears_of(
    repo: Path,
) -> None:
    proc, _ = drive(repo, "kill")
    said = finish(proc)
    assert said["landed"] == [] and said["busy"] is False
    assert said["failed"] == ["the lander's process was killed by SIGKILL"]


def test_the_lander_process_dies_with_the_process_that_forked_it(repo: Path) -> None:
    """kill -9 of the stream mid-landing (its verify running) takes the lander with it, as it
    took a thread: the landing stops at the same step, for the next run's recovery."""
    proc, pid = drive(repo, "hang")
    assert pid is not None
    verifying = repo.parent / "verifying"
    deadline = time.monotonic() + 30
    while len(verifying.read_text().split() if verifying.exists() else ()) < 2:
        assert time.monotonic() < deadline, "the lander never started verifying"
        time.sleep(0.02)
    lander, verify = map(int, verifying.read_text().split())
    assert lander == pid
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    try:
        assert ended(pid), "the lander's process outlived the stream"
    finally:
        os.kill(verify, signal.SIGKILL)  # the verify command is left running, as by any kill -9
    assert git(repo, "log", "-1", "--format=%s", "main") == "tickets"


@pytest.mark.skipif(sys.platform != "linux", reason="the lander forks on Linux only")
def test_sage_stream_lands_from_a_process_of_its_own(
    repo: Path, sage: Callable[..., CliResult]
) -> None:
    """`sage stream` itself: the verify command's parent is the lander's process, whose own
    parent is the stream."""
    write_index(
        repo, [ticket("A-1", command=writer("a.txt")), ticket("B-1", command=writer("b.txt"))]
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tickets")
    seen = repo.parent / "verify-parents"
    probe = (f"p=$PPID; g=$(cut -d' ' -f4 /proc/$p/stat); "
             f"echo \"$p $g $(tr '\\0' ' ' < /proc/$g/cmdline)\" >> {seen}")  # fmt: skip
    done = sage("stream", "--auto", "--verify", f"sh -c {shlex.quote(probe)}", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = seen.read_text().splitlines()
    assert lines
    for line in lines:
        lander, stream, cmdline = line.split(" ", 2)
        assert lander != stream and "sage stream --auto" in cmdline, line
