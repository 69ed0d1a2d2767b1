"""The Dask executor: bundles both ways, run_remote in-process, and a real LocalCluster."""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import pytest

distributed = pytest.importorskip("distributed")
from distributed.comm.core import CommClosedError  # noqa: E402

from sage.lib import dask_executor  # noqa: E402
from sage.lib.errors import SageError  # noqa: E402
from sage.lib.tickets import Ticket  # noqa: E402
from sage.lib.workers import WorkerJob, WorkerResult  # noqa: E402
from tests import conftest as shared  # noqa: E402
from tests.conftest import (  # noqa: E402
    dask_worker,
    git,
    scheduler,
    sleeper,
    state_dir,
    wait_for_file,
)

pytestmark = pytest.mark.dask


def make_job(repo: Path, tid: str, code: str, *, timeout: float = 0.0) -> WorkerJob:
    run_dir = state_dir(repo) / "runs" / "r1"
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


# ---- losing the cluster: not the ticket's fault, and no wait is unbounded -----------------------

ADDRESS = "tcp://10.0.0.5:8786"
Cancelled = distributed.client.FutureCancelledError


@pytest.mark.parametrize(
    ("exc", "status", "why"),
    [
        (Cancelled("k", "scheduler-connection-lost"), "running", "lost the connection to it"),
        (Cancelled("k", "unknown"), "connecting", "lost the connection to it"),
        (CancelledError(), "closed", "lost the connection to it"),
        (distributed.client.ClosedClientError("Client is closed"), "closed", "client is closed"),
        (CommClosedError("in <TCP>: Stream is closed"), "running", "connection closed: in <TCP>"),
        (ConnectionRefusedError(111, "Connection refused"), "running", "ConnectionRefusedError"),
        (TimeoutError("Timed out after 10 s"), "running", "no answer in time: Timed out"),
    ],
)
def test_losing_the_cluster_is_told_apart(exc: BaseException, status: str, why: str) -> None:
    found = dask_executor.loss(exc, status)
    assert found is not None and why in found


@pytest.mark.parametrize(
    "exc",
    [
        Cancelled("k", "unknown"),
        CancelledError(),
        ValueError("bad"),
        SageError("git failed"),
        distributed.KilledWorker("k", "w", 3),
    ],
)
def test_what_concerns_only_the_task_is_not_a_lost_cluster(exc: BaseException) -> None:
    assert dask_executor.loss(exc, "running") is None


class FakeClient:
    """Just what `Health` asks a client: its status and the scheduler's workers."""

    def __init__(self, workers: int = 1) -> None:
        self.status, self.workers, self.asked = "running", workers, 0
        self.error: Exception | None = None

    def nthreads(self, callback_timeout: float) -> dict[str, int]:
        self.asked += 1
        if self.error is not None:
            raise self.error
        return {f"tcp://w{n}": 1 for n in range(self.workers)}


def health(client: FakeClient, now: list[float]) -> dask_executor.Health:
    made = dask_executor.Health(client, ADDRESS, worker_wait=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    assert made.verdict() is None
    return made


def test_no_workers_for_the_whole_wait_ends_the_run_with_one_clear_reason() -> None:
    client, now = FakeClient(workers=0), [100.0]
    made = health(client, now)
    now[0] += 4.0
    assert made.verdict() is None, "a worker may still be starting"
    now[0] += 2.0
    assert made.verdict() == f"the Dask scheduler at {ADDRESS} has no workers (none for 5s)"


def test_a_worker_coming_back_resets_the_wait_and_questions_are_spaced() -> None:
    client, now = FakeClient(workers=0), [100.0]
    made = health(client, now)
    now[0] += 4.0
    made.verdict()
    client.workers = 1
    now[0] += 2.0
    assert made.verdict() is None
    client.workers, asked = 0, client.asked
    now[0] += 4.0
    assert made.verdict() is None and made.verdict() is None
    assert client.asked == asked + 1, "at most one question per CHECK_EVERY"


def test_a_scheduler_that_does_not_answer_or_a_client_that_lost_it_is_gone() -> None:
    client, now = FakeClient(), [100.0]
    made = health(client, now)
    client.error = ConnectionRefusedError(111, "Connection refused")
    now[0] += dask_executor.CHECK_EVERY
    assert (made.verdict() or "").startswith(f"the Dask scheduler at {ADDRESS} is gone (")
    client = FakeClient()
    made = health(client, [0.0])
    client.status = "connecting"
    assert made.verdict() == f"the Dask scheduler at {ADDRESS} is gone (the client is connecting)"


def empty_cluster() -> Any:
    """A scheduler of our own, without workers, listening on ports the OS picks."""
    return distributed.LocalCluster(
        n_workers=0, dashboard_address=None, scheduler_kwargs=dask_executor.NO_FIXED_PORT
    )


def test_a_scheduler_without_workers_is_refused_before_any_ticket_starts() -> None:
    empty = empty_cluster()
    try:
        started = time.monotonic()
        with pytest.raises(SageError) as info:
            dask_executor.connect(empty.scheduler_address, workers=1, worker_wait=0.5)
        assert info.value.message == (
            f"the Dask scheduler at {empty.scheduler_address} has no workers (none for 0.5s)"
        )
        assert f"dask worker {empty.scheduler_address}" in (info.value.hint or "")
        assert time.monotonic() - started < 10
    finally:
        empty.close()


def test_the_worker_wait_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dask_executor.configured_worker_wait() == dask_executor.WORKER_WAIT
    monkeypatch.setenv(dask_executor.WORKER_WAIT_ENV, "2.5")
    assert dask_executor.configured_worker_wait() == 2.5
    monkeypatch.setenv(dask_executor.WORKER_WAIT_ENV, "soon")
    with pytest.raises(SageError, match="SAGE_DASK_WORKER_WAIT must be a number"):
        dask_executor.configured_worker_wait()


def sleeping(repo: Path, tid: str, mark: Path) -> WorkerJob:
    """A job that says it started in `mark`, then waits for its Dask worker to die."""
    return make_job(repo, tid, sleeper(mark, f"{tid}.txt")[2])


@pytest.mark.slow
def test_losing_every_worker_ends_the_wait_with_one_clear_reason(
    repo: Path, tmp_path: Path
) -> None:
    local = empty_cluster()
    address = local.scheduler_address
    made = dask_executor.DaskExecutor(repo, distributed.Client(address), slots=2, worker_wait=0.5)
    results: queue.Queue[WorkerResult] = queue.Queue()
    try:
        with dask_worker(tmp_path, address, "only") as worker:
            made.submit(sleeping(repo, "W-1", tmp_path / "w1"), results.put)
            wait_for_file(tmp_path / "w1")
            worker.kill()  # the scheduler reschedules W-1, but no worker is left to take it
            lost = results.get(timeout=20)
        assert (lost.ticket_id, lost.outcome) == ("W-1", "unusable")
        assert lost.detail == f"the Dask scheduler at {address} has no workers (none for 0.5s)"
        made.submit(make_job(repo, "W-2", "pass"), results.put)
        again = results.get(timeout=5)
        assert (again.outcome, again.detail) == ("unusable", lost.detail), "nothing is shipped"
    finally:
        made.shutdown()
        local.close()


@pytest.mark.slow
def test_a_scheduler_killed_under_running_tasks_brings_every_result_back(
    repo: Path, tmp_path: Path
) -> None:
    with scheduler(tmp_path, "victim") as (victim, address), dask_worker(tmp_path, address, "w"):
        made = dask_executor.DaskExecutor(repo, distributed.Client(address), slots=3)
        results: queue.Queue[WorkerResult] = queue.Queue()
        marks = [tmp_path / tid for tid in ("G-1", "G-2", "G-3")]
        for mark in marks:
            made.submit(sleeping(repo, mark.name, mark), results.put)
        shared.wait_for(lambda: sum(m.exists() for m in marks) == 2)  # the third waits for a thread
        victim.kill()
        got = {r.ticket_id: r for r in (results.get(timeout=20) for _ in range(3))}
        started = time.monotonic()
        assert made.kill_all() == 0
        made.shutdown()
        assert time.monotonic() - started < dask_executor.CLOSE_TIMEOUT + 2
    assert {r.outcome for r in got.values()} == {"unusable"}
    assert all(
        r.detail.startswith(f"the Dask scheduler at {address} is gone (") for r in got.values()
    )


@pytest.mark.slow
def test_kill_all_returns_at_once_when_the_scheduler_is_gone(repo: Path, tmp_path: Path) -> None:
    with scheduler(tmp_path, "victim") as (victim, address), dask_worker(tmp_path, address, "w"):
        made = dask_executor.DaskExecutor(repo, distributed.Client(address), slots=1)
        results: queue.Queue[WorkerResult] = queue.Queue()
        made.submit(sleeping(repo, "H-1", tmp_path / "H-1"), results.put)
        wait_for_file(tmp_path / "H-1")
        victim.kill()
        started = time.monotonic()
        made.kill_all()
        outcome = results.get(timeout=10).outcome
        made.shutdown()
        assert time.monotonic() - started < dask_executor.CLOSE_TIMEOUT + 2
    assert outcome in ("killed", "unusable")


@pytest.mark.slow
def test_a_scheduler_that_stops_answering_is_gone_within_the_check_timeout(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGSTOP: the connection stays open and nothing tells the client; only asking does."""
    monkeypatch.setattr(dask_executor, "CHECK_TIMEOUT", 1.0)
    with scheduler(tmp_path, "frozen") as (frozen, address), dask_worker(tmp_path, address, "w"):
        made = dask_executor.DaskExecutor(repo, distributed.Client(address), slots=1)
        results: queue.Queue[WorkerResult] = queue.Queue()
        made.submit(sleeping(repo, "F-1", tmp_path / "F-1"), results.put)
        wait_for_file(tmp_path / "F-1")
        frozen.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        got = results.get(timeout=20)
        noticed = time.monotonic() - started
        made.shutdown()
        closed = time.monotonic() - started - noticed
    assert got.outcome == "unusable"
    assert got.detail.startswith(f"the Dask scheduler at {address} is gone ("), got.detail
    assert noticed < dask_executor.CHECK_EVERY + 1.0 + 2, noticed
    assert closed < dask_executor.CLOSE_TIMEOUT + 2, closed
