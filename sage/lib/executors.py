"""Where worker runs happen. Local: a thread per slot, each driving a process group; Forked:
the same in a process of its own; Dask (`sage.lib.dask_executor`): on a cluster."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Protocol

from sage.lib import files, forked, git, proc, workers, worktrees
from sage.lib.outcomes import Outcome
from sage.lib.queue.landing import SLOTS_DIR  # ticket IDs cannot start with "_": no clash
from sage.lib.workers import WorkerJob, WorkerResult

if TYPE_CHECKING:
    from sage.lib.lander import Landings

Done = Callable[[WorkerResult], None]
Released = Callable[[str], None]


class Executor(Protocol):
    """Runs jobs; `done` gets each result, `released` (if given) the moment a worker's slot is
    free again (its process exited; collecting its work need not hold the slot)."""

    def submit(self, job: WorkerJob, done: Done, released: Released | None = None) -> None: ...
    def kill_all(self) -> int: ...
    def shutdown(self) -> None: ...


class LocalExecutor:
    """Runs each job in its worker slot's worktree (`<worktrees dir>/_slots/slot-<k>`, kept and
    reused across tickets and runs) on this machine; remembers process groups to kill."""

    def __init__(
        self,
        repo: Path,
        worktrees_dir: Path,
        pids_dir: Path,
        slots: int,
        *,
        setup: worktrees.SlotSetup | None = None,
        on_group: Callable[[str, int], None] | None = None,
    ) -> None:
        """`on_group` hears each ticket's process group as it starts (besides its pid file)."""
        self.repo = repo
        self.worktrees_dir = worktrees_dir
        self.slots = (worktrees_dir / SLOTS_DIR, setup or worktrees.SlotSetup())
        self.pids_dir = pids_dir
        # twice the slots: a thread may still be collecting work after its slot was released
        self._pool = ThreadPoolExecutor(max_workers=2 * slots, thread_name_prefix="sage-worker")
        self._groups: dict[str, int] = {}
        self._lock = threading.Lock()
        self._files_lock = threading.Lock()  # the pid files, written and emptied by workers
        self._pid_files: dict[str, tuple[int, int]] = {}  # ticket -> (slot, thread that wrote)
        self._ran = False
        self._on_group = on_group

    def submit(self, job: WorkerJob, done: Done, released: Released | None = None) -> None:
        self._pool.submit(self._run, job, done, released)

    def worktree(self, slot: int) -> Path:
        """Where slot `slot` runs its tickets."""
        return worktrees.slot_path(self.slots[0], slot)

    def _run(self, job: WorkerJob, done: Done, released: Released | None) -> None:
        tid = job.ticket.id
        self._ran = True
        worktree = self.worktrees_dir / tid

        def on_exit() -> None:
            if released:
                released(tid)

        try:
            result = workers.run(
                self.repo,
                worktree,
                job,
                on_start=lambda pid: self._track(tid, job.slot, pid),
                on_exit=on_exit,
                slots=self.slots,
            )
        except Exception as exc:  # a value for the stream, never a dead thread
            result = WorkerResult(
                ticket_id=tid,
                outcome="error",
                returncode=-1,
                seconds=0.0,
                log=job.log,
                detail=f"{type(exc).__name__}: {exc}",
                base=job.base,
                worker_name=job.worker_name,
            )
        finally:
            with self._lock:
                self._groups.pop(tid, None)
        try:
            done(result)  # a slot is cleaned when it takes its next ticket, not now
        finally:
            self._forget_pid_file(tid)

    def _track(self, tid: str, slot: int, pgid: int) -> None:
        """The slot's pid file names the ticket and its process group (`pid_file`): one file
        per slot, written over, not a file made and removed per ticket."""
        with self._lock:
            self._groups[tid] = pgid
        if self._on_group is not None:
            self._on_group(tid, pgid)
        with self._files_lock:
            where, text = pid_file(self.pids_dir, slot), f"{tid} {pgid}\n"
            files.in_folder(self.pids_dir, lambda: files.write_over(where, text))
            self._pid_files[tid] = (slot, id(threading.current_thread()))

    def _forget_pid_file(self, tid: str) -> None:
        """The attempt's processes are gone (see proc.run_logged); its slot's pid file is
        emptied after its result is out, unless the ticket's next attempt, or the slot's next
        ticket, has written its own since."""
        with self._files_lock:
            slot, thread = self._pid_files.get(tid, (0, 0))
            if thread != id(threading.current_thread()):
                return
            del self._pid_files[tid]
            if all(other != slot for other, _ in self._pid_files.values()):  # not written since
                files.write_over(pid_file(self.pids_dir, slot), "")

    def kill_all(self) -> int:
        with self._lock:
            groups = list(self._groups.values())
        return sum(proc.kill_group(g) for g in groups)

    def shutdown(self) -> None:
        """Wait for the workers; then git's housekeeping, once for the run's commits (sage's
        own commits skip the `git maintenance run --auto` each `git commit` would start)."""
        self._pool.shutdown(wait=True)
        for path in self.pids_dir.glob("slot-*.pid") if self.pids_dir.is_dir() else ():
            if proc.pid_entry(path) is None:  # emptied: no worker of this run is left
                path.unlink(missing_ok=True)
        if self._ran:
            self._ran = False
            git.run(self.repo, "maintenance", "run", "--auto", "--quiet")


class ForkedExecutor:
    """A `LocalExecutor` in a process of its own: slot switches, the workers' spawns and waits
    and the collecting of their work run on the second core, not under the stream's
    interpreter lock (see `sage.lib.forked`). Forked when made, so to be made while the stream
    has no thread; where it cannot fork, the `LocalExecutor` runs in this process instead.

    The child leaves the terminal's foreground process group: a Ctrl+C reaches the stream
    alone, which decides (a second one kills the workers through `kill_all`), and no worker
    can be caught by it between its fork and its own session. Results come back in the order
    the workers end, each to the `done` given with its job, called in the relay thread."""

    def __init__(
        self,
        repo: Path,
        worktrees_dir: Path,
        pids_dir: Path,
        slots: int,
        *,
        setup: worktrees.SlotSetup | None = None,
        queue_with: Callable[[], Landings] | None = None,
    ) -> None:
        """`queue_with` makes the queue the child puts good work in as it collects it (see
        `workers.queued`), ringing `doorbell` for the lander each time; without it, the
        stream's `done` queues it."""
        self._args = (repo, worktrees_dir, pids_dir, slots, setup)
        self._queue_with = queue_with
        # The lander, forked after, waits on it: a landing starts without the stream's hop.
        self.doorbell = forked.Doorbell() if queue_with is not None else None
        self._slots_dir = worktrees_dir / SLOTS_DIR
        self._local: LocalExecutor | None = None
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[Done, Released | None, WorkerJob]] = {}
        self._groups: dict[str, int] = {}
        self._relay: threading.Thread | None = None
        self.pid = 0
        if not forked.may_fork() or not self._fork():
            self._local = LocalExecutor(repo, worktrees_dir, pids_dir, slots, setup=setup)

    def worktree(self, slot: int) -> Path:
        return worktrees.slot_path(self._slots_dir, slot)

    def _fork(self) -> bool:
        child = forked.fork(functools.partial(_serve, self._args, self._queue_with, self.doorbell))
        if child is None:
            if self.doorbell is not None:
                self.doorbell.close()
                self.doorbell = None
            return False
        pid, commands_w, results_r = child
        self.pid, self._results = pid, results_r
        self._commands = forked.Pipe(commands_w)
        return True

    def submit(self, job: WorkerJob, done: Done, released: Released | None = None) -> None:
        if self._local is not None:
            return self._local.submit(job, done, released)
        if self._relay is None:  # started at the first job: the lander forks before
            self._relay = threading.Thread(target=self._read, name="sage-workers-relay",
                                           daemon=True)  # fmt: skip
            self._relay.start()
        with self._lock:
            self._waiting[job.ticket.id] = (done, released, job)
        try:
            self._commands.put(("job", job))
        except OSError as exc:  # it has ended: its relay tells the rest
            with self._lock:
                mine = self._waiting.pop(job.ticket.id, None) is not None  # else told already
            if mine:
                done(_lost(job, f"the workers' process is gone ({exc.strerror})"))

    def _read(self) -> None:
        for message in forked.messages(self._results):
            match message:
                case ("group", str(tid), int(pgid)):
                    with self._lock:
                        self._groups[tid] = pgid
                case ("released", str(tid)):
                    with self._lock:
                        released = self._waiting.get(tid, (None, None, None))[1]
                    if released is not None:
                        released(tid)
                case ("done", WorkerResult() as result):
                    with self._lock:
                        self._groups.pop(result.ticket_id, None)
                        waiting = self._waiting.pop(result.ticket_id, None)
                    if waiting is not None:
                        waiting[0](result)
        _, status = os.waitpid(self.pid, 0)
        with self._lock:
            left, self._waiting = list(self._waiting.values()), {}
            groups, self._groups = list(self._groups.values()), {}
        for group in groups:  # its workers, in sessions of their own, write no more
            proc.kill_group(group)
        for done, _, job in left:  # a result for each, or the stream waits for ever
            done(_lost(job, f"the workers' process {forked.ended(status)}"))

    def kill_all(self) -> int:
        if self._local is not None:
            return self._local.kill_all()
        with contextlib.suppress(OSError):
            self._commands.put(("kill",))  # what starts meanwhile: the child kills it too
        with self._lock:
            groups = list(self._groups.values())
        return sum(proc.kill_group(g) for g in groups)

    def shutdown(self) -> None:
        """Wait for the workers and git's housekeeping (in the child), then for its end."""
        if self._local is not None:
            return self._local.shutdown()
        if self.doorbell is not None:  # the lander has its own copy
            self.doorbell.close()
        with contextlib.suppress(OSError):
            self._commands.put(("close",))
        with contextlib.suppress(OSError):
            os.close(self._commands.fd)
        if self._relay is not None:
            self._relay.join()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            os.close(self._results)


def _lost(job: WorkerJob, detail: str, outcome: str = Outcome.LOST) -> WorkerResult:
    return WorkerResult(ticket_id=job.ticket.id, outcome=outcome, returncode=-1, seconds=0.0,
                        log=job.log, detail=detail, base=job.base,
                        worker_name=job.worker_name)  # fmt: skip


def _serve(
    args: tuple[Path, Path, Path, int, worktrees.SlotSetup | None],
    queue_with: Callable[[], Landings] | None,
    doorbell: forked.Doorbell | None,
    parent: int,
    commands: int,
    results: int,
) -> NoReturn:
    """The workers' process: a LocalExecutor's jobs until a close or the end of the pipe (the
    stream is gone). It never returns into the stream's code, whatever happens."""
    code = 0
    try:
        os.setpgid(0, 0)
        forked.become("sage-workers", parent)
        out = forked.Pipe(results)
        repo, worktrees_dir, pids_dir, slots, setup = args
        local = LocalExecutor(repo, worktrees_dir, pids_dir, slots, setup=setup,
                              on_group=lambda tid, pgid: out.put(("group", tid, pgid)))  # fmt: skip
        queue = queue_with() if queue_with is not None else None
        killing = threading.Event()

        def done(job: WorkerJob, result: WorkerResult) -> None:
            if queue is not None and not killing.is_set():
                result = workers.queued(queue, job, result)
                if result.queued is not None and doorbell is not None:
                    doorbell.ring()
            out.put(("done", result))

        for message in forked.messages(commands):
            match message:
                case ("job", WorkerJob() as job) if not killing.is_set():
                    local.submit(job, functools.partial(done, job),
                                 lambda tid: out.put(("released", tid)))  # fmt: skip
                case ("job", WorkerJob() as job):
                    out.put(("done", _lost(job, "killed by a second Ctrl+C", Outcome.KILLED)))
                case ("kill",):
                    killing.set()
                    local.kill_all()
                case ("close",):
                    break
        local.shutdown()
    except BaseException:
        code = 70
    finally:
        os._exit(code)


def kill_stale(pids_dir: Path) -> list[str]:
    """Kill worker process groups left by a run that died (kill -9), so none writes on."""
    killed = []
    for path in sorted(pids_dir.glob("*.pid")) if pids_dir.is_dir() else []:
        named = proc.pid_entry(path)
        with contextlib.suppress(ValueError, OSError):
            if named and _is_sage_worker(named[1]) and proc.kill_group(named[1]):
                killed.append(named[0])
        path.unlink(missing_ok=True)
    return killed


def pid_file(pids_dir: Path, slot: int) -> Path:
    """Where slot `slot`'s running worker is named: "<ticket> <process group>"."""
    return pids_dir / f"slot-{slot}.pid"


def _is_sage_worker(pid: int) -> bool:
    """Guard against PID reuse: the process must carry a SAGE_TICKET_ID in its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return b"SAGE_TICKET_ID=" in environ
