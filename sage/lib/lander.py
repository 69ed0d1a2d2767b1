"""The lander thread: passes of the commit queue on request, outcomes sent to the inbox.

Another process holding the queue's lock (a `sage queue process` by hand, verifying) makes a
pass wait `[queue] lock_timeout`, then give up for now: the stream asks again later, and only
after MAX_BUSY passes in a row found the queue held does it count as a failure of the queue.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from sage.lib.errors import LockHeld, SageError
from sage.lib.inbox import Inbox, LandedMsg, LanderBusy, LanderFailed, PassDone, RejectedMsg
from sage.lib.queue import Landed, Outcome, QueueEntry


class Landings(Protocol):
    """What the stream needs of a commit queue (`sage.lib.queue.CommitQueue`, or a test's)."""

    def enqueue(
        self, *, ticket_id: str, title: str, branch: str, base: str, worker: str = "",
        attempts: int = 0, head: str | None = None,
    ) -> QueueEntry: ...  # fmt: skip
    def process(self, notify: Callable[[Landed], None] | None = None) -> list[Outcome]: ...
    def head(self) -> str: ...
    def pending(self) -> list[QueueEntry]: ...
    def latest(self, ticket_id: str) -> QueueEntry | None: ...
    def defer(self, entry: QueueEntry, reason: str) -> QueueEntry: ...
    def discard(self, entry: QueueEntry, reason: str | None = None) -> QueueEntry: ...
    def keep_previous(self, entry: QueueEntry) -> None: ...
    def tidy(self) -> None: ...


MAX_BUSY = 10


class Lander:
    """One thread; `wake()` asks for a pass, `close()` ends it after the pass under way."""

    def __init__(self, queue: Landings, inbox: Inbox) -> None:
        self.queue, self.inbox = queue, inbox
        self._wake = threading.Event()
        self._closed = False
        self._in_pass = False
        self.passes = self.busy_passes = 0
        self._thread = threading.Thread(target=self._loop, name="sage-lander", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    @property
    def busy(self) -> bool:
        """A pass is asked for or under way."""
        return self._wake.is_set() or self._in_pass

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._in_pass = True
            self._wake.clear()
            if self._closed:
                return
            try:
                self._pass()
                self.busy_passes = 0
            except LockHeld as exc:
                self.busy_passes += 1
                failed = self.busy_passes >= MAX_BUSY
                self.inbox.put(LanderFailed(error=exc) if failed else LanderBusy(error=exc))
            except Exception as exc:  # a dead lander would leave the run waiting forever
                error = exc if isinstance(exc, SageError) else SageError(message_of(exc))
                self.inbox.put(LanderFailed(error=error))
            finally:
                self._in_pass = False

    def _pass(self) -> None:
        """Landings are reported the moment the target moves (again after the pass if the
        user's checkout gave warnings), rejections after the pass, then which of the queue's
        entries still wait (the stream reconciles against it)."""
        told: set[int] = set()

        def notify(landed: Landed) -> None:
            told.add(landed.entry.seq)
            self.inbox.put(LandedMsg(outcome=landed))

        for outcome in self.queue.process(notify=notify):
            if not isinstance(outcome, Landed):
                self.inbox.put(RejectedMsg(outcome=outcome))
            elif outcome.entry.seq not in told or outcome.warnings:  # told early, without them
                self.inbox.put(LandedMsg(outcome=outcome))
        self.passes += 1
        pending = frozenset(e.ticket_id for e in self.queue.pending())
        self.inbox.put(PassDone(pending=pending))


def message_of(exc: Exception) -> str:
    """What went wrong in a thread, for the journal: a write to a full disk, a clobbered path."""
    return exc.message if isinstance(exc, SageError) else f"{type(exc).__name__}: {exc}"
