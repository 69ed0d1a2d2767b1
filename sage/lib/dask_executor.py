"""Workers on a Dask cluster: the base commit travels as a git bundle, the ticket's commits come
back as one, and the coordinator fetches them into `sage/<ID>` for the same queue as local runs.

`run_remote` is what a Dask worker executes; it only needs sage, git and the worker's own tools
installed there, never a shared filesystem.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.utils
import distributed

from sage.lib import git, proc, workers, worktrees
from sage.lib.errors import SageError
from sage.lib.executors import Done, Released
from sage.lib.outcomes import Usage
from sage.lib.project import Project
from sage.lib.tickets import Ticket
from sage.lib.workers import WorkerJob, WorkerResult

if TYPE_CHECKING:
    from sage.lib.stream import StreamOptions

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler before giving up with a hint
CANCEL_POLL = 0.25  # how often a running task checks whether it was cancelled
BASE_REFS = "refs/sage/base/"
# Without a dashboard the scheduler still serves its health routes, on :8787 unless told otherwise
NO_FIXED_PORT = {"dashboard_address": ":0"}

Reply = dict[str, Any]


def make(project: Project, options: StreamOptions) -> DaskExecutor:
    """`--scheduler local` (or none): a LocalCluster for this run; otherwise connect to ADDRESS."""
    client, cluster = connect(project.config.scheduler, workers=options.workers)
    return DaskExecutor(project.root, client, slots=options.workers, cluster=cluster)


def connect(
    address: str, *, workers: int, timeout: float | None = None
) -> tuple[distributed.Client, distributed.LocalCluster | None]:
    address = address.strip()
    if address in ("", "local"):
        cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
            scheduler_kwargs=NO_FIXED_PORT, silence_logs=logging.ERROR,  # cancelled tasks warn
        )  # fmt: skip
        client = distributed.Client(cluster)  # type: ignore[no-untyped-call]
        client.register_plugin(IgnoreSigint())
        return client, cluster
    timeout = timeout or min(CONNECT_TIMEOUT, _dask_connect_timeout())
    try:
        return distributed.Client(address, timeout=timeout), None  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as exc:  # distributed's TimeoutError is an OSError
        raise SageError(
            f"cannot reach the Dask scheduler at {address}: {exc}",
            hint="start one with `dask scheduler` and workers with `dask worker ADDRESS`, "
            "or pass --scheduler local",
        ) from None


def _dask_connect_timeout() -> float:
    """Dask's own knob (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT) can only shorten the wait."""
    value = dask.config.get("distributed.comm.timeouts.connect", default=CONNECT_TIMEOUT)
    return float(dask.utils.parse_timedelta(value, default="seconds"))


class IgnoreSigint(distributed.WorkerPlugin):
    """Ctrl+C reaches the whole terminal process group, LocalCluster workers included: the
    stream decides what it means (finish, or kill via cancellation), so the workers must not die."""

    name = "sage-ignore-sigint"

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class DaskExecutor:
    """One coordinator thread per slot ships a job, waits for its future and fetches the result."""

    def __init__(
        self,
        repo: Path,
        client: distributed.Client,
        *,
        slots: int,
        cluster: distributed.LocalCluster | None = None,
    ) -> None:
        self.repo = repo
        self.client = client
        self.cluster = cluster
        self.identity = author_identity(repo)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="sage-dask")
        self._futures: dict[str, distributed.Future[Reply]] = {}
        self._lock = threading.Lock()
        self._killed = False
        self._bundle_cache: tuple[str, bytes] | None = None

    def submit(self, job: WorkerJob, done: Done, released: Released | None = None) -> None:
        """`released` is not used: a remote worker holds its slot until its bundle is back."""
        self._pool.submit(self._run, job, done)

    def _run(self, job: WorkerJob, done: Done) -> None:
        try:
            result = self._execute(job)
        except Exception as exc:  # a value for the stream, never a dead thread
            result = _result(job, "error", f"{type(exc).__name__}: {exc}")
        done(result)

    def _execute(self, job: WorkerJob) -> WorkerResult:
        tid = job.ticket.id
        key = f"sage-{tid}-{job.attempt}-{uuid.uuid4().hex[:8]}"
        future = self.client.submit(
            run_remote, self._base_bundle(job.base), job_spec(job, self.identity, key),
            key=key, pure=False,
        )  # fmt: skip
        with self._lock:
            self._futures[tid] = future
            if self._killed:  # kill_all ran while this job was being shipped
                future.cancel()  # type: ignore[no-untyped-call]
        try:
            reply = future.result()
        except CancelledError as exc:  # by kill_all, or because the scheduler went away
            if self._killed:
                return _result(job, "killed", "cancelled: the run was stopped")
            return _result(job, "error", f"the Dask task was cancelled: {exc}")
        except distributed.KilledWorker as exc:  # the scheduler gave up rescheduling it
            return _result(job, "error", f"Dask workers kept dying while running it: {exc}")
        finally:
            with self._lock:
                self._futures.pop(tid, None)
        return self._land(job, reply)

    def _base_bundle(self, base: str) -> bytes:
        """Tickets started between two landings share a base: bundle it once."""
        cached = self._bundle_cache
        if cached is None or cached[0] != base:
            cached = (base, base_bundle(self.repo, base))
            self._bundle_cache = cached
        return cached[1]

    def _land(self, job: WorkerJob, reply: Reply) -> WorkerResult:
        """Append the remote log to the ticket's log; fetch an ok run's branch into the repo."""
        with open(job.log, "a", encoding="utf-8") as handle:
            handle.write(f"=== sage: ran on Dask worker {reply.get('host', '?')}\n{reply['log']}")
        branch = worktrees.branch_for(job.ticket.id)
        if reply["outcome"] == "ok":
            fetch_branch(self.repo, reply["bundle"], branch)
        usage = reply.get("usage")
        return replace(
            _result(job, reply["outcome"], reply["detail"], returncode=reply["returncode"],
                    seconds=reply["seconds"], head=reply["head"]),
            retry_after=reply.get("retry_after"), usage=Usage(**usage) if usage else None,
        )  # fmt: skip

    def kill_all(self) -> int:
        """Cancel every running future; each task then kills its worker's process group."""
        with self._lock:
            self._killed = True
            futures = list(self._futures.values())
        if futures:
            self.client.cancel(futures, force=True)  # type: ignore[no-untyped-call]
        return len(futures)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()  # type: ignore[no-untyped-call]
        if self.cluster is not None:
            self.cluster.close()


def _result(
    job: WorkerJob, outcome: str, detail: str, *, returncode: int = -1, seconds: float = 0.0,
    head: str = "",
) -> WorkerResult:  # fmt: skip
    return WorkerResult(
        ticket_id=job.ticket.id, outcome=outcome, returncode=returncode, seconds=seconds,
        log=job.log, detail=detail, branch=worktrees.branch_for(job.ticket.id), base=job.base,
        head=head, worker_name=job.worker_name,
    )  # fmt: skip


# ---- the coordinator's side of the bundles ----------------------------------------------------


def author_identity(repo: Path) -> tuple[str, str] | None:
    """Who sage commits as here (config or GIT_AUTHOR_*), so remote commits carry the same name."""
    done = git.run(repo, "var", "GIT_AUTHOR_IDENT")
    name, sep, rest = done.stdout.partition(" <")
    if done.returncode != 0 or not sep:
        return None
    return name.strip(), rest.partition(">")[0]


def job_spec(job: WorkerJob, identity: tuple[str, str] | None, key: str = "") -> dict[str, Any]:
    """The job as plain values: paths mean nothing on another machine, so the context travels."""
    return {
        "ticket_id": job.ticket.id, "title": job.ticket.title, "run_id": job.run_id,
        "attempt": job.attempt, "base": job.base, "argv": list(job.argv), "timeout": job.timeout,
        "context": job.context_file.read_text(encoding="utf-8"), "worker_name": job.worker_name,
        "identity": list(identity) if identity else None, "key": key, "env": dict(job.env),
    }  # fmt: skip


def base_bundle(repo: Path, base: str) -> bytes:
    """A bundle holding `base` and its history, under a temporary ref (bundles need a ref)."""
    ref = f"{BASE_REFS}{uuid.uuid4().hex[:12]}"
    git.git(repo, "update-ref", ref, base)
    try:
        with tempfile.TemporaryDirectory(prefix="sage-bundle-") as tmp:
            path = Path(tmp) / "base.bundle"
            git.git(repo, "bundle", "create", "--quiet", str(path), ref)
            return path.read_bytes()
    finally:
        git.run(repo, "update-ref", "-d", ref)


def fetch_branch(repo: Path, bundle: bytes, branch: str) -> None:
    """Force-update `refs/heads/<branch>` from a bundle (its prerequisite, the base, is here)."""
    with tempfile.TemporaryDirectory(prefix="sage-bundle-") as tmp:
        path = Path(tmp) / "result.bundle"
        path.write_bytes(bundle)
        refspec = f"+refs/heads/{branch}:refs/heads/{branch}"
        git.git(repo, "fetch", "--quiet", "--no-tags", str(path), refspec)


# ---- the Dask worker's side --------------------------------------------------------------------


def run_remote(bundle: bytes, spec: dict[str, Any]) -> Reply:
    """Run one ticket in a throwaway clone made from `bundle`; return its commits as a bundle."""
    scratch = tempfile.TemporaryDirectory(
        prefix=f"sage-{spec['ticket_id']}-", ignore_cleanup_errors=True
    )
    with scratch as tmp:
        root = Path(tmp)
        job = _remote_job(root, spec)
        job.log.touch()
        try:
            repo = _unbundle(root, bundle, spec)
            with _killed_when_cancelled(spec["key"]) as on_start:
                result = workers.run(repo, root / "checkout", job, on_start=on_start)
            reply = _reply(result, _branch_bundle(repo, result) if result.ok else b"")
        except Exception as exc:  # e.g. git missing on this worker: a value, so the stream retries
            reply = _reply(_failure(job, exc), b"")
        reply["log"] = job.log.read_text(encoding="utf-8", errors="replace")
        return reply


def _remote_job(root: Path, spec: dict[str, Any]) -> WorkerJob:
    context = root / "context.md"  # beside the checkout, never inside it (it must not be committed)
    context.write_text(spec["context"], encoding="utf-8")
    return WorkerJob(
        ticket=Ticket(id=spec["ticket_id"], title=spec["title"]), run_id=spec["run_id"],
        attempt=spec["attempt"], base=spec["base"], argv=tuple(spec["argv"]),
        timeout=spec["timeout"], log=root / "worker.log", context_file=context,
        worker_name=spec["worker_name"], env=spec.get("env") or {},
    )  # fmt: skip


def _unbundle(root: Path, bundle: bytes, spec: dict[str, Any]) -> Path:
    """A bare repository holding the base; `workers.run` adds the ticket's worktree to it."""
    repo, path = root / "repo.git", root / "base.bundle"
    path.write_bytes(bundle)
    git.git(root, "init", "--quiet", "--bare", str(repo))
    git.git(repo, "fetch", "--quiet", "--no-tags", str(path), f"+{BASE_REFS}*:{BASE_REFS}*")
    if spec["identity"]:  # the coordinator's identity, for the worker's and sage's own commits
        git.git(repo, "config", "user.name", spec["identity"][0])
        git.git(repo, "config", "user.email", spec["identity"][1])
    return repo


def _branch_bundle(repo: Path, result: WorkerResult) -> bytes:
    path = repo / "result.bundle"
    git.git(repo, "bundle", "create", "--quiet", str(path), f"refs/heads/{result.branch}",
            f"^{result.base}")  # fmt: skip
    return path.read_bytes()


def _reply(result: WorkerResult, bundle: bytes) -> Reply:
    return {
        "outcome": result.outcome, "returncode": result.returncode, "seconds": result.seconds,
        "detail": result.detail, "head": result.head, "bundle": bundle, "host": _host(),
        "retry_after": result.retry_after, "usage": asdict(result.usage) if result.usage else None,
    }  # fmt: skip


def _failure(job: WorkerJob, exc: Exception) -> WorkerResult:
    detail = exc.message if isinstance(exc, SageError) else f"{type(exc).__name__}: {exc}"
    return WorkerResult(
        ticket_id=job.ticket.id, outcome="error", returncode=-1, seconds=0.0, log=job.log,
        detail=f"on the Dask worker: {detail}", base=job.base,
    )  # fmt: skip


def _host() -> str:
    with contextlib.suppress(ValueError):
        return str(distributed.get_worker().address)
    return "(not in a Dask worker)"


@contextlib.contextmanager
def _killed_when_cancelled(key: str) -> Iterator[Callable[[int], None]]:
    """Dask cannot interrupt a running task: a watcher kills the process group once the task is
    cancelled (kill_all, or the coordinator went away). Yields the `on_start` hook."""
    cancelled = _cancel_probe(key)
    groups: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(CANCEL_POLL):
            if groups and cancelled():
                proc.kill_group(groups[0])
                return

    watcher = threading.Thread(target=watch, name="sage-cancel-watch", daemon=True)
    watcher.start()
    try:
        yield groups.append
    finally:
        stop.set()


def _cancel_probe(key: str) -> Callable[[], bool]:
    try:
        worker = distributed.get_worker()
    except ValueError:  # called directly, not as a Dask task
        worker = None
    if worker is None or not key:
        return lambda: False

    def cancelled() -> bool:
        task = worker.state.tasks.get(key)
        return task is None or task.state in ("cancelled", "released", "forgotten")

    return cancelled
