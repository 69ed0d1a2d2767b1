"""The Dask executor: bundles both ways, run_remote in-process, and a real LocalCluster."""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")

from sage.lib import dask_executor  # noqa: E402
from sage.lib.errors import SageError  # noqa: E402
from sage.lib.tickets import Ticket  # noqa: E402
from sage.lib.workers import WorkerJob, WorkerResult  # noqa: E402
from tests.conftest import git, wait_for_file  # noqa: E402

pytestmark = pytest.mark.dask


def make_job(repo: Path, tid: str, code: str, *, timeout: float = 0.0) -> WorkerJob:
    run_dir = repo / ".sage" / "runs" / "r1"
    run_dir.mkdir(parents=True, exist_ok=True)
    context = run_dir / f"{tid}.context.md"
    context.write_text(f"# {tid}: do it\n")
    return WorkerJob(
        ticket=Ticket(id=tid, title=f"Ticket {tid}"), run_id="r1", attempt=1,
        base=git(repo, "rev-parse", "HEAD"), argv=(sys.executable, "-c", code), timeout=timeout,
        log=run_dir / f"{tid}.log", context_file=context,
    )  # fmt: skip


def remote(repo: Path, job: WorkerJob) -> dict[str, Any]:
    bundle = dask_executor.base_bundle(repo, job.base)
    return dask_executor.run_remote(bundle, dask_executor.job_spec(job, None))


# ---- run_remote, called directly: the same function a Dask worker runs --------------------------


def test_run_remote_round_trip_lands_the_commits_in_the_local_branch(repo: Path) -> None:
    code = "import os,pathlib; pathlib.Path('a.txt').write_text(os.environ['SAGE_TICKET_ID'])"
    job = make_job(repo, "T-1", code)
    reply = remote(repo, job)
    assert reply["outcome"] == "ok", reply
    dask_executor.fetch_branch(repo, reply["bundle"], "sage/T-1")
    assert git(repo, "rev-parse", "sage/T-1") == reply["head"]
    assert git(repo, "show", "sage/T-1:a.txt") == "T-1"
    message = git(repo, "log", "-1", "--format=%B", "sage/T-1")
    assert message.startswith("T-1: Ticket T-1") and "Sage-Ticket: T-1" in message
    assert git(repo, "ls-tree", "-r", "--name-only", "sage/T-1").split() == [
        ".gitignore", "README.md", "a.txt"]  # fmt: skip
    assert git(repo, "for-each-ref", "refs/sage/") == "", "temporary base refs are removed"
    assert "=== sage: T-1 attempt 1" in reply["log"]


def test_the_workers_own_commits_and_the_coordinators_identity_travel(repo: Path) -> None:
    code = ("import subprocess,pathlib; pathlib.Path('b.txt').write_text('b'); "
            "subprocess.run(['git','add','b.txt']); "
            "subprocess.run(['git','commit','-qm','T-2: mine'], check=True)")  # fmt: skip
    job = make_job(repo, "T-2", code)
    identity = dask_executor.author_identity(repo)
    assert identity == ("Test Author", "author@example.invalid")
    bundle = dask_executor.base_bundle(repo, job.base)
    reply = dask_executor.run_remote(bundle, dask_executor.job_spec(job, identity))
    dask_executor.fetch_branch(repo, reply["bundle"], "sage/T-2")
    assert git(repo, "log", "-1", "--format=%s", "sage/T-2") == "T-2: mine"


@pytest.mark.parametrize(
    ("code", "outcome", "detail"),
    [
        ("import sys; print('boom'); sys.exit(3)", "failed", "worker exited 3: boom"),
        ("import sys; sys.exit(75)", "throttled", "exit 75"),
        ("import time; time.sleep(30)", "timeout", "timed out after 0.5s"),
    ],
)
def test_outcomes_map_like_local_runs(repo: Path, code: str, outcome: str, detail: str) -> None:
    reply = remote(repo, make_job(repo, "T-3", code, timeout=0.5))
    assert (reply["outcome"], reply["bundle"]) == (outcome, b"")
    assert detail in reply["detail"]


def test_a_broken_bundle_is_an_error_value_not_an_exception(repo: Path) -> None:
    job = make_job(repo, "T-4", "pass")
    reply = dask_executor.run_remote(b"not a bundle", dask_executor.job_spec(job, None))
    assert reply["outcome"] == "error" and "on the Dask worker" in reply["detail"]


def test_an_unreachable_scheduler_is_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(SageError) as info:
        dask_executor.connect("tcp://127.0.0.1:9", workers=1, timeout=0.5)
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in info.value.message
    assert "dask scheduler" in (info.value.hint or "")
    assert time.monotonic() - started < 10


# ---- a real LocalCluster -----------------------------------------------------------------------


@pytest.fixture
def executor(cluster: Any, repo: Path) -> Iterator[dask_executor.DaskExecutor]:
    made = dask_executor.DaskExecutor(repo, distributed.Client(cluster), slots=2)
    yield made
    made.shutdown()


def wait_for(results: queue.Queue[WorkerResult], count: int) -> dict[str, WorkerResult]:
    found = [results.get(timeout=60) for _ in range(count)]
    return {r.ticket_id: r for r in found}


def test_jobs_run_on_the_cluster_and_come_back_as_local_branches(
    repo: Path, executor: dask_executor.DaskExecutor
) -> None:
    results: queue.Queue[WorkerResult] = queue.Queue()
    for tid in ("D-1", "D-2"):
        code = f"import pathlib; pathlib.Path('{tid}.txt').write_text('x')"
        executor.submit(make_job(repo, tid, code), results.put)
    executor.submit(make_job(repo, "D-3", "import sys; sys.exit(4)"), results.put)
    got = wait_for(results, 3)
    assert [got[t].outcome for t in ("D-1", "D-2", "D-3")] == ["ok", "ok", "failed"]
    for tid in ("D-1", "D-2"):
        assert git(repo, "rev-parse", f"sage/{tid}") == got[tid].head
        assert got[tid].branch == f"sage/{tid}" and got[tid].base == git(repo, "rev-parse", "HEAD")
        assert "=== sage: ran on Dask worker tcp://" in got[tid].log.read_text()
    assert "sage/D-3" not in git(repo, "branch", "--list", "sage/*")


def test_kill_all_cancels_the_task_and_kills_its_process_group(
    repo: Path, tmp_path: Path, executor: dask_executor.DaskExecutor
) -> None:
    pid_file = tmp_path / "pid"
    code = f"import os,time,pathlib; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))"
    code += "; time.sleep(60)"
    results: queue.Queue[WorkerResult] = queue.Queue()
    executor.submit(make_job(repo, "K-1", code), results.put)
    pid = int(wait_for_file(pid_file))
    assert executor.kill_all() == 1
    assert results.get(timeout=30).outcome == "killed"
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the remote worker's process group was killed"


def test_local_cluster_workers_survive_ctrl_c(cluster: Any) -> None:
    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        for pid in pids.values():
            os.kill(pid, signal.SIGINT)
        time.sleep(0.3)
        assert client.run(os.getpid) == pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"
