"""A stream's helper process (the lander): forked, never exec'd, so that it shares the
stream's code and what it has read, and talks to it in pickles over pipes.

A child is forked only while the stream has no other thread (a thread may hold a lock the
child would need), dies with its parent (`PR_SET_PDEATHSIG`: a kill -9 of the stream stops
its helper at the same step, as it would a thread), and never returns into the stream's
code (`os._exit`).
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator

FRAME = struct.Struct("<I")  # each message on a pipe: its pickle's length, then the pickle


def may_fork() -> bool:
    """Only a process with no other thread forks well. Linux: the child can die with it."""
    return sys.platform == "linux" and threading.active_count() == 1


def fork(serve: Callable[[int, int, int], object]) -> tuple[int, int, int] | None:
    """A child with two pipes, running `serve(parent pid, commands' read end, results' write
    end)`, which should end it with `os._exit` (if it returns, the child exits 70). Here: (the
    child's pid, commands' write end, results' read end); None if it cannot be forked."""
    commands_r, commands_w = os.pipe()
    results_r, results_w = os.pipe()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        for fd in (commands_r, commands_w, results_r, results_w):
            os.close(fd)
        return None
    if pid == 0:
        try:
            os.close(commands_w)
            os.close(results_r)
            serve(parent, commands_r, results_w)
        finally:
            os._exit(70)
    os.close(commands_r)
    os.close(results_w)
    return pid, commands_w, results_r


def become(name: str, parent: int) -> None:
    """The child's first step: named `name` (what `ps` and /proc/<pid>/comm show), and
    SIGKILLed when its parent dies. Without the latter, the end of the parent's pipe stops the
    child at its next read."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(15, name.encode()[:15])  # PR_SET_NAME
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before the above took hold
        os._exit(0)


def ended(status: int) -> str:
    """How a child ended, from its wait status."""
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with {os.waitstatus_to_exitcode(status)}"


class Pipe:
    """Messages, pickled and framed, down one end of a pipe, by one thread (the lander's)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def put(self, message: object) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(FRAME.pack(len(data)) + data)
        while view:
            view = view[os.write(self.fd, view) :]


def messages(fd: int) -> Iterator[object]:
    """What comes up the pipe at `fd` until its end (or a message cut short: the writer died
    writing it); the pipe is closed after."""
    with os.fdopen(fd, "rb") as pipe:
        while len(head := pipe.read(FRAME.size)) == FRAME.size:
            size = FRAME.unpack(head)[0]
            if len(data := pipe.read(size)) < size:
                return
            yield pickle.loads(data)
