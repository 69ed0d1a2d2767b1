"""Where worker runs happen. Local: a thread per slot, each driving a process group."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from sage.lib import git, proc, workers, worktrees
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
        self._files_lock = threading.Lock()  # the pid files, written and deleted by workers
        self._pid_files: dict[str, tuple[int, int]] = {}  # ticket -> (pgid, thread that wrote)
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
                on_start=lambda pid: self._track(tid, pid),
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

    def _track(self, tid: str, pgid: int) -> None:
        with self._lock:
            self._groups[tid] = pgid
        with self._files_lock:
            self.pids_dir.mkdir(parents=True, exist_ok=True)
            (self.pids_dir / f"{tid}.pid").write_text(f"{pgid}\n", encoding="utf-8")
            self._pid_files[tid] = (pgid, id(threading.current_thread()))

    def _forget_pid_file(self, tid: str) -> None:
        """The attempt's processes are gone (see proc.run_logged); its pid file goes after its
        result is out (deleting a file can take a millisecond), unless the ticket's next attempt
        has written its own since."""
        with self._files_lock:
            mine = self._pid_files.get(tid, (0, 0))[1] == id(threading.current_thread())
            if mine:
                del self._pid_files[tid]
                with contextlib.suppress(FileNotFoundError):
                    (self.pids_dir / f"{tid}.pid").unlink()

    def kill_all(self) -> int:
        with self._lock:
            groups = list(self._groups.values())
        return sum(proc.kill_group(g) for g in groups)

    def shutdown(self) -> None:
        """Wait for the workers; then git's housekeeping, once for the run's commits (sage's
        own commits skip the `git maintenance run --auto` each `git commit` would start)."""
        self._pool.shutdown(wait=True)
        if self._ran:
            self._ran = False
            git.run(self.repo, "maintenance", "run", "--auto", "--quiet")


def kill_stale(pids_dir: Path) -> list[str]:
    """Kill worker process groups left by a run that died (kill -9), so none writes on."""
    killed = []
    for pid_file in sorted(pids_dir.glob("*.pid")) if pids_dir.is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            pgid = int(pid_file.read_text().strip() or "none")  # empty: killed while writing it
            if _is_sage_worker(pgid) and proc.kill_group(pgid):
                killed.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return killed


def _is_sage_worker(pid: int) -> bool:
    """Guard against PID reuse: the process must carry a SAGE_TICKET_ID in its environment."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return b"SAGE_TICKET_ID=" in environ
