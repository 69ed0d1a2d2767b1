"""The one place sage runs processes: argv lists only, never a shell."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    killed: bool = False


def clean_env(extra: Mapping[str, str] | None = None, *, keep_git: bool = False) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if keep_git or k not in _GIT_LEAKS}
    env.update(extra or {})
    return env


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | bytes | None = None,
    text: bool = True,
    timeout: float | None = None,
) -> Result:
    """Run to completion and capture output; raise GitError (command, code, output) if asked."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else clean_env(),
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


def run_logged(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    timeout: float | None = None,
    on_start: Callable[[int], None] | None = None,
) -> Finished:
    """Run in a new process group with output to `log`; the timeout kills the whole group.

    The wait blocks in waitpid (no polling delay); a timer does the killing.
    """
    start = time.monotonic()
    with open(log, "ab", buffering=0) as sink:
        try:
            child = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            sink.write(f"sage: cannot start {argv[0]}: {exc}\n".encode())
            return Finished(returncode=127, seconds=time.monotonic() - start)
        if on_start:
            on_start(child.pid)
        expired = threading.Event()
        timer = _kill_timer(child.pid, timeout, expired)
        code = child.wait()
        if timer:
            timer.cancel()
        if expired.is_set():
            kill_group(child.pid)  # stragglers that outlived the group leader
        return Finished(
            returncode=code, seconds=time.monotonic() - start, timed_out=expired.is_set()
        )


def _kill_timer(
    pgid: int, timeout: float | None, expired: threading.Event
) -> threading.Timer | None:
    if not timeout:
        return None

    def fire() -> None:
        expired.set()
        kill_group(pgid)

    timer = threading.Timer(timeout, fire)
    timer.daemon = True
    timer.start()
    return timer


def kill_group(pgid: int) -> bool:
    """SIGKILL a whole process group; False when it is already gone."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True
