"""The one channel other threads use to reach a stream's main thread: typed messages.

Worker threads and the lander never touch the run's ledger; they put one of these values in the
`Inbox` (a lander in a process of its own sends them down a pipe, and a thread of the stream's
puts them there: `sage.lib.lander`), and the main thread acts on them in order. `Inbox.killing`
is the one flag they may read: set by a second Ctrl+C, it tells a worker thread not to queue
work that will be reset.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

from sage.lib.errors import SageError
from sage.lib.queue import Landed, QueueEntry, Rejected
from sage.lib.workers import WorkerResult


@dataclass(frozen=True, slots=True, kw_only=True)
class Released:
    """A worker's process exited 0: its slot is free while its work is collected."""

    ticket_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Finished:
    """A worker's attempt is over; `entry` is its queued work, if it produced any."""

    result: WorkerResult
    entry: QueueEntry | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LandedMsg:
    outcome: Landed


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedMsg:
    outcome: Rejected


@dataclass(frozen=True, slots=True, kw_only=True)
class LanderFailed:
    error: SageError


@dataclass(frozen=True, slots=True, kw_only=True)
class LanderBusy:
    """Another process held the queue's lock for the whole of `[queue] lock_timeout`."""

    error: SageError


@dataclass(frozen=True, slots=True, kw_only=True)
class PassDone:
    """The lander finished a pass of the queue: these tickets still have entries waiting."""

    pending: frozenset[str]


Message = Released | Finished | LandedMsg | RejectedMsg | LanderFailed | LanderBusy | PassDone


class Inbox:
    def __init__(self) -> None:
        self._queue: queue.Queue[Message] = queue.Queue()
        self.killing = threading.Event()

    def put(self, message: Message) -> None:
        self._queue.put(message)

    def get(self, timeout: float) -> Message | None:
        try:
            return self._queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def drain(self) -> list[Message]:
        """What is there now, without waiting."""
        found = []
        while True:
            try:
                found.append(self._queue.get_nowait())
            except queue.Empty:
                return found
