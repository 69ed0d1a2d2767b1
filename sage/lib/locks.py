"""Named file locks (filelock) that know who holds them, so a refusal can name the holder."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from sage.lib.errors import LockHeld
from sage.lib.tickets import LOCK_POLL, now


def owner(path: Path) -> dict[str, object] | None:
    """Who holds the lock at `path`, as its holder wrote it while holding it (nothing once
    released; stale if the holder died holding it): in the lock file itself, or, where the
    file system has no flock and filelock keeps its own record there, in `<lock>.owner`."""
    for where in (path, Path(f"{path}{_BESIDE}")):
        try:
            data = json.loads(where.read_bytes() or b"null")
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


_BESIDE = ".owner"


def describe(path: Path) -> str:
    info = owner(path)
    if not info:
        return "another process"
    return f"PID {info.get('pid')} on {info.get('host')} (since {info.get('since')})"


# How often a waiter tries a held lock again. filelock's default, 50 ms, is what a waiting
# thread loses each time the lander and the main loop meet at the ticket index: per ticket.
POLL = LOCK_POLL


@contextlib.contextmanager
def hold(path: Path, *, timeout: float, what: str, hint: str | None = None) -> Iterator[None]:
    """Hold the lock at `path`; on timeout raise LockHeld naming the holder's PID."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=timeout)
    try:
        lock.acquire(poll_interval=POLL)
    except Timeout:
        raise LockHeld(f"{what} is held by {describe(path)}", hint=hint) from None
    # The holder's name goes into the lock file itself, which stays (flock needs no new file):
    # no file made and removed per hold. Not where filelock fell back to a lock of its own
    # (no flock on this file system), which records its holder in that file: then beside it.
    soft = bool(getattr(getattr(lock, "_context", None), "soft_fallback", False))
    where = Path(f"{path}{_BESIDE}") if soft else path
    fd = None
    try:
        info = json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "since": now()})
        with contextlib.suppress(OSError):
            flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT if soft else 0)
            fd = os.open(where, flags, 0o666)
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
        yield
    finally:
        if fd is not None:
            with contextlib.suppress(OSError):
                if soft:
                    where.unlink()
                else:
                    os.ftruncate(fd, 0)
            os.close(fd)
        lock.release()
