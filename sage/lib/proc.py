"""The one place sage runs processes: argv lists only, never a shell."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sage.lib import files
from sage.lib.errors import GitError, SageError

# Inherited from a hook or an outer git; they would point our git at the wrong repository.
_GIT_LEAKS = (
    "GIT_DIR",
    "GIT_INDEX_FILE",
    "GIT_WORK_TREE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_PREFIX",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """How a logged, possibly long-running process ended."""

    returncode: int
    seconds: float
    timed_out: bool = False
    stopped: bool = False  # `watch` said the run could only end badly: its group was killed
    left_running: tuple[str, ...] = ()  # "pid command" of what was killed after the main exit


def clean_env(extra: Mapping[str, str] | None = None, *, keep_git: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if keep_git or k not in _GIT_LEAKS}
    env.update(extra or {})
    return env


def _inherited() -> dict[str, str] | None:
    """The environment for a child with nothing added: None (inherit it as it is, no copy to
    build per process) unless a variable must be taken out."""
    return clean_env() if any(name in os.environ for name in _GIT_LEAKS) else None


@contextlib.contextmanager
def _shielded(shield: bool = True) -> Iterator[None]:
    """Processes started meanwhile by this thread start with SIGINT blocked, and keep it so
    through exec. A terminal sends Ctrl+C to its whole foreground process group; the stream
    makes a graceful stop of it, which a git call under way must not fail by dying of it. A
    kill still reaches them; sage itself hears the press (another thread, or this one after)."""
    if not shield or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | bytes | None = None,
    text: bool = True,
    timeout: float | None = None,
    interruptible: bool = False,
) -> Result:
    """Run to completion and capture output; raise GitError (command, code, output) if asked.
    `interruptible`: a user's command, which a terminal's Ctrl+C reaches (not sage's own git:
    see `_shielded`)."""
    try:
        with _shielded(not interruptible):
            done = subprocess.run(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else _inherited(),
                input=input,
                capture_output=True,
                text=text,
                timeout=timeout,
            )
    except FileNotFoundError as exc:
        raise SageError(
            f"command not found: {argv[0]}", hint="install it or fix the command in your config"
        ) from exc
    out = done.stdout if text else done.stdout.decode(errors="replace")
    err = done.stderr if text else done.stderr.decode(errors="replace")
    if check and done.returncode != 0:
        raise GitError(argv, done.returncode, out, err)
    return Result(returncode=done.returncode, stdout=out, stderr=err)


def spawn(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """Start sage's own command as `run` does (environment, Ctrl+C shielded), its output
    discarded, and return without waiting for it."""
    with _shielded():
        return subprocess.Popen(list(argv), env=_inherited(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Output:
    """A finished process whose output is bytes: file contents, which need not be text."""

    returncode: int
    stdout: bytes
    stderr: str


def run_bytes(
    argv: Sequence[str], *, input: bytes | None = None, env: Mapping[str, str] | None = None
) -> Output:
    """Like `run(check=False)`, stdout kept as the bytes the process wrote."""
    try:
        with _shielded():
            done = subprocess.run(
                list(argv), env=dict(env) if env is not None else clean_env(), input=input,
                capture_output=True,
            )  # fmt: skip
    except FileNotFoundError as exc:
        raise SageError(f"command not found: {argv[0]}", hint="install it") from exc
    return Output(returncode=done.returncode, stdout=done.stdout,
                  stderr=done.stderr.decode(errors="replace"))  # fmt: skip


@contextlib.contextmanager
def stdout_of(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Iterator[IO[bytes]]:
    """A process's stdout to read as it comes (a large blob, compared piece by piece); the
    process is killed if the reader stops early."""
    with _shielded():
        child = subprocess.Popen(
            list(argv), env=dict(env) if env is not None else clean_env(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        assert child.stdout is not None
        yield child.stdout
    finally:
        if child.poll() is None:
            child.kill()
        if child.stdout is not None:
            child.stdout.close()
        child.wait()


def run_logged(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    timeout: float | None = None,
    on_start: Callable[[int], None] | None = None,
    watch: Callable[[], bool] | None = None,
    what: str = "the worker",
) -> Finished:
    """Run in a new process group with output to `log`; the timeout kills the whole group, and
    so does `watch` returning True (it is asked every `WATCH_EVERY` seconds while the run lasts).
    `what` runs (the worker, a slot's setup): the log names what it left running.

    The wait blocks in waitpid (no polling delay); a guard thread does the killing. When the main
    process is gone, whatever it left running is killed too, and named in the log and result:
    its process group, and processes that left the group (`setsid`) but carry this run's tag.
    """
    start = time.monotonic()
    tag = uuid.uuid4().hex
    with open(log, "ab", buffering=0) as sink:
        try:
            child = _start(argv, cwd, {**env, TAG: tag}, sink)
        except OSError as exc:
            sink.write(f"sage: cannot start {argv[0]}: {exc}\n".encode())
            return Finished(returncode=127, seconds=time.monotonic() - start)
        forks = _forks()
        if on_start:
            on_start(child.pid)
        guard = _Guard(child.pid, timeout, watch)
        code = child.wait()
        guard.end()
        left = kill_leftovers(child.pid, tag, lowest=_lowest_pid(child.pid, forks))
        if left:
            sink.write(f"sage: killed what {what} left running: {'; '.join(left)}\n".encode())
        seconds = time.monotonic() - start
        return Finished(returncode=code, seconds=seconds, timed_out=guard.expired.is_set(),
                        stopped=guard.stopped.is_set(), left_running=left)  # fmt: skip


def _start(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], sink: IO[bytes]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=sink,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


TAG = "SAGE_PROCESS_TAG"  # in a worker's environment: finds its processes wherever they went


def kill_leftovers(pgid: int, tag: str, rounds: int = 5, *, lowest: int = 0) -> tuple[str, ...]:
    """SIGKILL every process in group `pgid` or carrying `tag`, until none is left (a process
    may fork while we look); wait until they are gone, so none writes after this returns.
    Processes numbered below `lowest` are not looked at (see `_lowest_pid`)."""
    killed: dict[int, str] = {}
    for _ in range(rounds):
        found = {pid: name for pid, name in _processes(pgid, tag, lowest) if pid not in killed}
        if not found:
            break
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        killed.update(found)
    _wait_gone(killed)
    return tuple(f"{pid} {name}" for pid, name in killed.items())


def _processes(pgid: int, tag: str, lowest: int = 0) -> list[tuple[int, str]]:
    """(pid, command) of the live processes in group `pgid` or with `tag` in their environment,
    numbered `lowest` or above."""
    marker = f"{TAG}={tag}".encode()
    found, me = [], os.getpid()
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit() or int(entry.name) < lowest or int(entry.name) == me:
            continue
        state = _stat(entry.path)
        if state and state[0] not in "ZX" and (state[1] == pgid or marker in _environ(entry.path)):
            found.append((int(entry.name), _command(entry.path)))
    return found


def _forks() -> int | None:
    """Processes (and threads) the kernel has started since boot, from /proc/stat."""
    try:
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"processes "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


@functools.cache
def _pid_max() -> int:
    try:
        return int(Path("/proc/sys/kernel/pid_max").read_text())
    except (OSError, ValueError):
        return 0


def _lowest_pid(first: int, forks: int | None) -> int:
    """The lowest number a process started after process `first` (and `forks` counted) can
    have. Linux numbers new processes upwards from the last one, skipping numbers in use, and
    wraps around at pid_max: if no wrap could have happened since (fewer starts, plus numbers
    in use, than the numbers left above `first`), every process started since is numbered above
    `first`, and the older ones below need no look (reading each /proc/PID is most of the
    cost). Else 0: look at every process."""
    now, most = _forks(), _pid_max()
    if forks is None or now is None or not most:
        return 0
    started = now - forks
    in_use = sum(1 for name in os.listdir("/proc") if name.isdigit())
    return first if first + 2 * started + in_use < most else 0


def _stat(path: str) -> tuple[str, int] | None:
    """A process's state letter and process group, from /proc/PID/stat."""
    try:
        with open(f"{path}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[2])


def _environ(path: str) -> bytes:
    try:
        with open(f"{path}/environ", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _command(path: str) -> str:
    try:
        with open(f"{path}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")
    except OSError:
        return "?"
    return b" ".join(w for w in words if w).decode(errors="replace")[:120] or "?"


def holders(path: Path) -> list[int]:
    """PIDs of the processes that have `path` open, where /proc tells (a lock file a live
    process holds, whatever its name)."""
    target, found = str(path), []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.scandir(f"{entry.path}/fd")
        except OSError:
            continue
        with fds:
            if any(_link(fd.path) == target for fd in fds):
                found.append(int(entry.name))
    return found


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _wait_gone(pids: Mapping[int, str], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    state = _stat(f"/proc/{pid}")
    return state is not None and state[0] not in "ZX"


WATCH_EVERY = 0.5  # seconds between a run's `watch` calls


class _Guard:
    """One thread per run that has a timeout or a `watch`: it kills the run's process group when
    the timeout passes (`expired`) or `watch` returns True (`stopped`). Without a watch it waits
    the whole timeout at once. `end()`, once the run is over, stops it and waits for it, so it
    never kills a group after the run."""

    def __init__(self, pgid: int, timeout: float | None, watch: Callable[[], bool] | None) -> None:
        self.expired, self.stopped = threading.Event(), threading.Event()
        self._ended = threading.Event()
        self._thread: threading.Thread | None = None
        if timeout or watch:
            deadline = time.monotonic() + timeout if timeout else math.inf
            self._thread = threading.Thread(target=self._keep, args=(pgid, deadline, watch),
                                            name=f"sage-guard-{pgid}", daemon=True)  # fmt: skip
            self._thread.start()

    def _keep(self, pgid: int, deadline: float, watch: Callable[[], bool] | None) -> None:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.expired.set()
                break
            wait = min(left, WATCH_EVERY if watch is not None else math.inf)
            if self._ended.wait(None if math.isinf(wait) else wait):
                return
            if watch is not None and watch():
                self.stopped.set()
                break
        kill_group(pgid)

    def end(self) -> None:
        self._ended.set()
        if self._thread is not None:
            self._thread.join()


def kill_group(pgid: int) -> bool:
    """SIGKILL a whole process group; False when it is already gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def pid_entry(path: Path) -> tuple[str, int] | None:
    """The ticket and process group a pid file names: a slot's "<ticket> <group>", or an older
    sage's `<ticket>.pid` holding the group alone. None when it names none (emptied, or cut
    short by a kill while it was written)."""
    try:
        words = files.read_text(path).split()
    except (OSError, UnicodeDecodeError):
        return None
    if len(words) == 2 and words[1].isdigit():
        return words[0], int(words[1])
    if len(words) == 1 and words[0].isdigit() and not path.stem.startswith("slot-"):
        return path.stem, int(words[0])
    return None
