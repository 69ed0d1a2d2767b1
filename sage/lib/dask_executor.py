"""Workers on a Dask cluster: the base commit travels as a git bundle, the ticket's commits come
back as one, and the coordinator fetches them into `sage/<ID>` for the same queue as local runs.

`run_remote` is what a Dask worker executes; it only needs sage, git and the worker's own tools
installed there, never a shared filesystem.

Losing the cluster (the scheduler gone, the connection closed, no workers left) is not a ticket's
fault: such an attempt ends `Outcome.UNUSABLE`, which stops the run and returns the ticket. Every
call that talks to the cluster has a timeout, and a running task is waited for in short slices
between which Ctrl+C and the cluster's health are checked, so every in-flight ticket's result
comes back and the process can exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.utils
import distributed
from distributed.comm.core import CommClosedError

from sage.lib import git, proc, workers, worktrees
from sage.lib.errors import SageError
from sage.lib.executors import Done, Released
from sage.lib.outcomes import Outcome, Usage
from sage.lib.project import Project
from sage.lib.tickets import DEFAULT_INDEX, Ticket
from sage.lib.workers import WorkerJob, WorkerResult

if TYPE_CHECKING:
    from sage.lib.stream import StreamOptions

CONNECT_TIMEOUT = 10.0  # seconds to reach a scheduler before giving up with a hint
CANCEL_POLL = 0.25  # how often a running task checks whether it was cancelled
POLL = 0.25  # how often a coordinator thread looks up from a running task (Ctrl+C, a lost cluster)
CHECK_EVERY = 2.0  # seconds between two questions to the scheduler: are you there, with workers?
CHECK_TIMEOUT = 10.0  # seconds the scheduler has to answer one of them
RESULT_TIMEOUT = 300.0  # seconds to fetch a finished task's result (its log and bundle)
CLOSE_TIMEOUT = 5.0  # seconds for closing the client, and for closing a LocalCluster
KILL_WAIT = 1.0  # seconds a cancellation may take: a live scheduler answers in milliseconds
WORKER_WAIT = 30.0  # seconds a scheduler may have no workers before the run stops
WORKER_WAIT_ENV = "SAGE_DASK_WORKER_WAIT"  # overrides WORKER_WAIT (seconds)
BASE_REFS = "refs/sage/base/"
# Without a dashboard the scheduler still serves its health routes, on :8787 unless told otherwise
NO_FIXED_PORT = {"dashboard_address": ":0"}
WORKER_GOING = ("closing", "closed", "failed")  # a Dask worker's status once it is shutting down

Reply = dict[str, Any]


def make(project: Project, options: StreamOptions) -> DaskExecutor:
    """`--scheduler local` (or none): a LocalCluster for this run; otherwise connect to ADDRESS."""
    wait = configured_worker_wait()
    client, cluster = connect(project.config.scheduler, workers=options.workers, worker_wait=wait)
    return DaskExecutor(
        project.root, client, slots=options.workers, cluster=cluster, worker_wait=wait
    )


def connect(
    address: str, *, workers: int, timeout: float | None = None, worker_wait: float = WORKER_WAIT
) -> tuple[distributed.Client, distributed.LocalCluster | None]:
    """A client for ADDRESS once its scheduler has a worker; `local`: a LocalCluster of our own."""
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
        client = distributed.Client(address, timeout=timeout)  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as exc:  # distributed's TimeoutError is an OSError
        raise SageError(
            f"cannot reach the Dask scheduler at {address}: {exc}",
            hint="start one with `dask scheduler` and workers with `dask worker ADDRESS`, "
            "or pass --scheduler local",
        ) from None
    _require_workers(client, address, worker_wait)
    return client, None


def _dask_connect_timeout() -> float:
    """Dask's own knob (DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT) can only shorten the wait."""
    value = dask.config.get("distributed.comm.timeouts.connect", default=CONNECT_TIMEOUT)
    return float(dask.utils.parse_timedelta(value, default="seconds"))


def configured_worker_wait() -> float:
    """How long a scheduler may have no workers: WORKER_WAIT, or SAGE_DASK_WORKER_WAIT seconds."""
    raw = os.environ.get(WORKER_WAIT_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else WORKER_WAIT
    except ValueError:
        raise SageError(f"{WORKER_WAIT_ENV} must be a number of seconds, not {raw!r}") from None


def _require_workers(client: distributed.Client, address: str, wait: float) -> None:
    """Before any ticket starts: a scheduler without workers would hold every task forever."""
    deadline = time.monotonic() + wait
    while True:
        try:
            if worker_count(client):
                return
        except Exception as exc:  # the scheduler went away while we asked
            silence_dask_logs()
            _close_quietly(client)
            raise SageError(gone(address, loss(exc, client.status) or repr(exc))) from None
        if time.monotonic() >= deadline:
            _close_quietly(client)
            raise SageError(
                no_workers(address, wait), hint=f"start workers with `dask worker {address}`"
            )
        time.sleep(min(POLL, wait))


def worker_count(client: distributed.Client, timeout: float = CHECK_TIMEOUT) -> int:
    """Workers the scheduler knows now; raises (an OSError, …) if it does not answer in time."""
    return len(client.nthreads(callback_timeout=timeout))  # type: ignore[no-untyped-call]


def gone(address: str, why: str) -> str:
    return f"the Dask scheduler at {address} is gone ({why})"


def no_workers(address: str, seconds: float) -> str:
    return f"the Dask scheduler at {address} has no workers (none for {seconds:g}s)"


def loss(exc: BaseException, status: str = "running") -> str | None:
    """Why `exc` means the cluster itself is lost, or None when it concerns only the task.
    `status` is the client's: a task cancelled while the client is not running went with it."""
    if isinstance(exc, distributed.client.ClosedClientError):
        return f"the client is closed: {exc}" if str(exc) else "the client is closed"
    if isinstance(exc, CancelledError):
        lost = getattr(exc, "reason", "") == "scheduler-connection-lost" or status != "running"
        return "lost the connection to it; its tasks were cancelled" if lost else None
    if isinstance(exc, CommClosedError):
        return f"connection closed: {exc}" if str(exc) else "connection closed"
    if isinstance(exc, TimeoutError):
        return f"no answer in time: {exc}" if str(exc) else "no answer in time"
    if isinstance(exc, OSError):  # connection refused or reset, host unreachable, …
        return f"{type(exc).__name__}: {exc}"
    return None


def silence_dask_logs() -> None:
    """Once sage has said the cluster is lost, the client's own complaints (its reconnect loop
    failing, or logging its cancellation with a traceback when closed) would only repeat it."""
    names = [n for n in logging.root.manager.loggerDict if n.startswith("distributed.")]
    for name in ("distributed", *names):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _close_quietly(client: distributed.Client) -> None:
    with contextlib.suppress(Exception):
        client.close(timeout=CLOSE_TIMEOUT)  # type: ignore[no-untyped-call]


def _bounded(call: Callable[[], object], timeout: float) -> None:
    """Run `call` but never wait for it longer than `timeout`: a dead scheduler may not answer."""
    thread = threading.Thread(target=_quietly, args=(call,), name="sage-dask-call", daemon=True)
    thread.start()
    thread.join(timeout)


def _quietly(call: Callable[[], object]) -> None:
    with contextlib.suppress(Exception):
        call()


class IgnoreSigint(distributed.WorkerPlugin):
    """Ctrl+C reaches the whole terminal process group, LocalCluster workers included: the
    stream decides what it means (finish, or kill via cancellation), so the workers must not die."""

    name = "sage-ignore-sigint"

    def setup(self, worker: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)


class Health:
    """Is the cluster still usable? Every waiting thread asks; the scheduler itself is asked at
    most every CHECK_EVERY seconds, by one thread at a time, and a verdict of loss is final."""

    def __init__(
        self, client: distributed.Client, address: str, *, worker_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.client, self.address, self.clock = client, address, clock
        self.worker_wait = worker_wait
        self.lost: str | None = None
        self._asked = -CHECK_EVERY
        self._empty_since: float | None = None
        self._lock = threading.Lock()

    def verdict(self) -> str | None:
        """Why the cluster is lost, or None while it looks usable."""
        if self.lost is None and self.client.status != "running":
            self.give_up(f"the client is {self.client.status}")
        due = self.lost is None and self.clock() - self._asked >= CHECK_EVERY
        if due and self._lock.acquire(blocking=False):  # a thread asking now answers for all
            try:
                self._ask()
            finally:
                self._lock.release()
        return self.lost

    def _ask(self) -> None:
        try:
            count = worker_count(self.client, CHECK_TIMEOUT)
        except Exception as exc:  # it did not answer: treat as gone, whatever the error
            return self.give_up(loss(exc, self.client.status) or f"{type(exc).__name__}: {exc}")
        now = self._asked = self.clock()
        if count:
            self._empty_since = None
        elif self._empty_since is None:
            self._empty_since = now
        elif now - self._empty_since >= self.worker_wait:
            self._declare(no_workers(self.address, self.worker_wait))

    def give_up(self, why: str) -> None:
        """The scheduler is gone, for `why`."""
        self._declare(gone(self.address, why))

    def _declare(self, lost: str) -> None:
        if self.lost is None:
            self.lost = lost
            silence_dask_logs()


class DaskExecutor:
    """One coordinator thread per slot ships a job, waits for its future and fetches the result.
    Every wait is bounded: each thread looks up every POLL seconds for Ctrl+C and a lost cluster."""

    def __init__(
        self,
        repo: Path,
        client: distributed.Client,
        *,
        slots: int,
        cluster: distributed.LocalCluster | None = None,
        worker_wait: float = WORKER_WAIT,
    ) -> None:
        self.repo = repo
        self.client = client
        self.cluster = cluster
        self.identity = author_identity(repo)
        self.health = Health(client, _address(client), worker_wait=worker_wait)
        self._pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="sage-dask")
        self._futures: dict[str, distributed.Future[Reply]] = {}
        self._lock = threading.Lock()
        self._killed = threading.Event()
        self._bundle_cache: tuple[str, bytes] | None = None

    def submit(self, job: WorkerJob, done: Done, released: Released | None = None) -> None:
        """`released` is not used: a remote worker holds its slot until its bundle is back."""
        self._pool.submit(self._run, job, done)

    def _run(self, job: WorkerJob, done: Done) -> None:
        try:
            result = self._execute(job)
        except Exception as exc:  # a value for the stream, never a dead thread
            result = _result(job, Outcome.ERROR, f"{type(exc).__name__}: {exc}")
        done(result)

    def _execute(self, job: WorkerJob) -> WorkerResult:
        lost = self.health.lost
        if lost is not None:  # no point shipping it: the run is stopping
            return _result(job, Outcome.UNUSABLE, lost)
        bundle = self._base_bundle(job.base)  # local git: its errors are the ticket's (`_run`)
        try:  # only what talks to the cluster: an OSError here means the cluster, not the disk
            future = self._ship(job, bundle)
            reply = self._await(job, future)
        except Exception as exc:
            return self._failed(job, exc)
        finally:
            with self._lock:
                self._futures.pop(job.ticket.id, None)
        return reply if isinstance(reply, WorkerResult) else self._land(job, reply)

    def _ship(self, job: WorkerJob, bundle: bytes) -> distributed.Future[Reply]:
        key = f"sage-{job.ticket.id}-{job.attempt}-{uuid.uuid4().hex[:8]}"
        future = self.client.submit(
            run_remote, bundle, job_spec(job, self.identity, key), key=key, pure=False
        )
        with self._lock:
            self._futures[job.ticket.id] = future
        return future

    def _await(self, job: WorkerJob, future: distributed.Future[Reply]) -> Reply | WorkerResult:
        """The reply once the task is done, or a result saying why the wait ended early."""
        while True:
            stopped = self._until_done(job, future)
            if stopped is not None:
                return stopped
            try:
                return future.result(timeout=RESULT_TIMEOUT)
            except TimeoutError:
                if future.done():  # type: ignore[no-untyped-call]
                    raise  # done, yet its result never came: the cluster is not answering
                # its result was lost with a worker before we fetched it: Dask runs it again

    def _until_done(self, job: WorkerJob, future: distributed.Future[Reply]) -> WorkerResult | None:
        """Wait in POLL slices for the task to finish (as long as it runs: the ticket's timeout
        bounds it); between slices, a Ctrl+C or a lost cluster ends the wait with a result."""
        while not future.done():  # type: ignore[no-untyped-call]
            if self._killed.is_set():  # kill_all ran (maybe while this job was being shipped)
                _bounded(future.cancel, KILL_WAIT)
                return _result(job, Outcome.KILLED, "cancelled: the run was stopped")
            lost = self.health.verdict()
            if lost is not None:
                return _result(job, Outcome.UNUSABLE, lost)
            _settled_within(future, POLL)  # returns the moment the task is done
        return None

    def _failed(self, job: WorkerJob, exc: Exception) -> WorkerResult:
        """Shipping or waiting raised: the run was stopped, the cluster is lost, or the task."""
        if isinstance(exc, CancelledError) and self._killed.is_set():
            return _result(job, Outcome.KILLED, "cancelled: the run was stopped")
        why = loss(exc, self.client.status)
        if why is not None:
            self.health.give_up(why)
            return _result(job, Outcome.UNUSABLE, self.health.lost or why)
        if isinstance(exc, distributed.KilledWorker):  # the scheduler gave up rescheduling it
            return _result(job, Outcome.ERROR, f"Dask workers kept dying while running it: {exc}")
        if isinstance(exc, CancelledError):  # by someone else's client, say
            return _result(job, Outcome.ERROR, f"the Dask task was cancelled: {exc}")
        return _result(job, Outcome.ERROR, f"{type(exc).__name__}: {exc}")

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
        """Cancel every running future; each task then kills its worker's process group. Returns
        at once: the waiting threads stop waiting whether or not the scheduler still answers."""
        with self._lock:
            self._killed.set()
            futures = list(self._futures.values())
        if futures and self.health.lost is None:
            cancel = self.client.cancel
            _bounded(lambda: cancel(futures, force=True), KILL_WAIT)  # type: ignore[no-untyped-call]
        return len(futures)

    def shutdown(self) -> None:
        """Bounded too: work still in flight (the stream normally waits for it) is cancelled,
        every thread's wait is bounded, and a gone scheduler is not waited for."""
        if self._futures:
            self.kill_all()
        self._pool.shutdown(wait=True)
        _close_quietly(self.client)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=CLOSE_TIMEOUT)


def _address(client: distributed.Client) -> str:
    with contextlib.suppress(Exception):
        return str(client.scheduler.address)  # type: ignore[union-attr]
    return "(unknown address)"


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
        "allow_empty": job.ticket.allow_empty, "slot": job.slot, "index_path": job.index_path,
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
        ticket=Ticket(id=spec["ticket_id"], title=spec["title"],
                      allow_empty=bool(spec.get("allow_empty"))), run_id=spec["run_id"],
        attempt=spec["attempt"], base=spec["base"], argv=tuple(spec["argv"]),
        timeout=spec["timeout"], log=root / "worker.log", context_file=context,
        worker_name=spec["worker_name"], env=spec.get("env") or {}, slot=spec.get("slot", 0),
        index_path=spec.get("index_path") or DEFAULT_INDEX.as_posix(),
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
    cancelled (kill_all, or the coordinator went away) or its Dask worker is shutting down (its
    scheduler is gone, say). Yields the `on_start` hook."""
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
        if worker.status.name in WORKER_GOING:  # e.g. it lost its scheduler: nobody will collect
            return True
        task = worker.state.tasks.get(key)
        return task is None or task.state in ("cancelled", "released", "forgotten")

    return cancelled


def _settled_within(future: distributed.Future[Reply], seconds: float) -> None:
    """Wait up to `seconds` for `future`, returning as soon as it is done (or the wait fails:
    the caller looks at the cluster's health next)."""
    with contextlib.suppress(Exception):
        distributed.wait([future], timeout=seconds)  # type: ignore[no-untyped-call]
