"""Where worker runs happen. Local: a thread per slot, each driving a process group."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from sage.lib import files, git, proc, workers, worktrees
from sage.lib.queue.landing import SLOTS_DIR  # ticket IDs cannot start with "_": no clash
from sage.lib.workers import WorkerJob, WorkerResult

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
    ) -> None:
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
