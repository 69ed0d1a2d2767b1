"""`sage stream --executor dask` end to end: the real CLI, a real LocalCluster, the real queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

from tests import conftest as shared  # noqa: E402
from tests.conftest import git, state_dir, ticket, wait_for, wait_for_file  # noqa: E402
from tests.stream.conftest import events, py, states, trailers, writer  # noqa: E402

pytestmark = pytest.mark.dask
AUTO = ("stream", "--auto", "--backoff", "0.05", "--executor", "dask")


@pytest.mark.slow
def test_a_chain_lands_once_each_in_dependency_order_on_a_local_cluster(repo, sage, tickets_repo):
    tickets_repo([
        ticket("C-1", command=writer("c1.txt")),
        ticket("C-2", "C-1", command=writer("c2.txt", need="c1.txt")),
        ticket("C-3", "C-2", command=writer("c3.txt", need="c2.txt")),
        ticket("I-1", command=writer("i1.txt")),
    ])  # fmt: skip
    done = sage(*AUTO, "--parallel", "2", "--scheduler", "local", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PARALLEL EXECUTION: 2 workers" in done.stdout
    assert set(states(repo).values()) == {"COMPLETED"}
    landed = trailers(repo)[::-1]  # oldest first
    assert sorted(landed) == ["C-1", "C-2", "C-3", "I-1"], "every ticket exactly once"
    assert [t for t in landed if t.startswith("C-")] == ["C-1", "C-2", "C-3"]
    assert all((repo / name).exists() for name in ("c1.txt", "c2.txt", "c3.txt", "i1.txt"))
    logs = sorted((state_dir(repo) / "runs").glob("*/C-*.log"))
    assert all("ran on Dask worker tcp://" in log.read_text() for log in logs)
    assert git(repo, "for-each-ref", "refs/sage/") == ""


@pytest.mark.slow
def test_a_ticket_whose_dask_worker_is_killed_mid_run_still_lands(
    repo, tickets_repo, cluster, tmp_path
):
    mark = tmp_path / "dask-worker-pid"
    code = f"""
import os, pathlib, time
mark = pathlib.Path({str(mark)!r})
if not mark.exists():
    parent = os.getppid()
    mark.write_text(str(parent))
    while os.getppid() == parent:  # until the test kills our Dask worker
        time.sleep(0.05)
    raise SystemExit(9)
pathlib.Path('k.txt').write_text('second run')
"""
    tickets_repo([ticket("K-1", command=py(code)), ticket("K-2", "K-1", command=writer("k2.txt"))])
    argv = [*AUTO, "--parallel", "2", "--scheduler", cluster.scheduler_address, "--json"]
    cli = subprocess.Popen([sys.executable, "-m", "sage", *argv], cwd=repo, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        victim = int(wait_for_file(mark))
        with distributed.Client(cluster) as client:
            addresses = {pid: address for address, pid in client.run(os.getpid).items()}
        assert victim in addresses, "the ticket ran inside a Dask worker"
        os.kill(victim, signal.SIGKILL)
        out, err = cli.communicate(timeout=90)
    finally:
        cli.kill()
    assert cli.returncode == 0, out + err
    assert states(repo) == {"K-1": "COMPLETED", "K-2": "COMPLETED"}
    assert trailers(repo)[::-1] == ["K-1", "K-2"]
    assert (repo / "k.txt").read_text() == "second run"
    log = next((state_dir(repo) / "runs").glob("*/K-1.log")).read_text()
    assert "ran on Dask worker tcp://" in log and addresses[victim] not in log
    summary = json.loads(out.splitlines()[-1])
    assert summary["retries"] == 0, "Dask rescheduled it: the stream never saw a failure"


def test_an_unreachable_scheduler_is_refused_without_a_traceback(repo, sage, tickets_repo):
    tickets_repo([ticket("U-1", command=writer("u.txt"))])
    env = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    done = sage(*AUTO, "--scheduler", "tcp://127.0.0.1:9", cwd=repo, env=env)
    assert done.returncode == 1
    assert "error: cannot reach the Dask scheduler at tcp://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr
    assert states(repo) == {"U-1": "UNPROCESSED"}


# ---- losing the scheduler: a real `dask scheduler` and `dask worker`, each its own process ------


@pytest.mark.slow
def test_losing_the_scheduler_stops_the_run_and_returns_its_tickets(
    repo, sage, tickets_repo, tmp_path
):
    marks = {tid: tmp_path / f"{tid}.started" for tid in ("S-1", "Q-1")}
    tickets_repo([
        ticket("L-1", command=writer("l.txt"), priority="P0"),
        ticket("S-1", command=shared.sleeper(marks["S-1"], "s.txt"), priority="P1"),
        ticket("Q-1", command=shared.sleeper(marks["Q-1"], "q.txt"), priority="P2"),
        ticket("D-1", "S-1", command=writer("d.txt", need="s.txt")),
    ])  # fmt: skip
    with (
        shared.scheduler(tmp_path, "first") as (victim, address),
        shared.dask_worker(tmp_path, address, "w1"),
    ):
        argv = [*AUTO, "--parallel", "2", "--scheduler", address]
        cli = subprocess.Popen([sys.executable, "-m", "sage", *argv], cwd=repo, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        try:
            for mark in marks.values():
                wait_for_file(mark)  # Q-1 took L-1's slot: L-1 is landed or landing
            wait_for(lambda: states(repo)["L-1"] == "COMPLETED")
            victim.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            out, err = cli.communicate(timeout=60)
            took = time.monotonic() - killed
            sleepers = [int(mark.read_text()) for mark in marks.values()]
            wait_for(lambda: not any(map(running, sleepers)), 15)  # killed by their Dask worker
        finally:
            cli.kill()
    assert cli.returncode not in (0, None), out + err
    assert took < 30, f"the run took {took:.1f}s to stop"
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert f"the Dask scheduler at {address} is gone" in errors[0]
    assert "Traceback" not in err + out, err
    assert states(repo) == {"L-1": "COMPLETED", "S-1": "UNPROCESSED", "Q-1": "UNPROCESSED",
                            "D-1": "UNPROCESSED"}  # fmt: skip
    assert not [e for e in events(repo) if e.get("event") == "retry"], "no attempt was used"

    with (
        shared.scheduler(tmp_path, "second") as (_, fresh),
        shared.dask_worker(tmp_path, fresh, "w2"),
    ):
        again = sage(*AUTO, "--parallel", "2", "--scheduler", fresh, cwd=repo, timeout=90)
    assert again.returncode == 0, again.stdout + again.stderr
    assert set(states(repo).values()) == {"COMPLETED"}
    assert sorted(trailers(repo)) == ["D-1", "L-1", "Q-1", "S-1"], "each ticket landed once"
    assert (repo / "s.txt").read_text() == "second run"


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@pytest.mark.slow
def test_a_scheduler_without_workers_is_refused_within_the_bound(
    repo, sage, tickets_repo, tmp_path
):
    tickets_repo([ticket("N-1", command=writer("n.txt"))])
    with shared.scheduler(tmp_path, "empty") as (_, address):
        started = time.monotonic()
        done = sage(*AUTO, "--scheduler", address, cwd=repo, env={"SAGE_DASK_WORKER_WAIT": "1"},
                    timeout=60)  # fmt: skip
        took = time.monotonic() - started
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"error: the Dask scheduler at {address} has no workers (none for 1s)" in done.stderr
    assert f"dask worker {address}" in done.stderr and "Traceback" not in done.stderr
    assert states(repo) == {"N-1": "UNPROCESSED"}
    assert took < 30


__all__ = ["events"]
