"""`sage stream --executor dask` end to end: the real CLI, a real LocalCluster, the real queue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

distributed = pytest.importorskip("distributed")

from tests.conftest import git, ticket, wait_for_file  # noqa: E402
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
    logs = sorted((repo / ".sage/runs").glob("*/C-*.log"))
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
    log = next((repo / ".sage/runs").glob("*/K-1.log")).read_text()
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


__all__ = ["events"]
