"""The lander: passes of the commit queue on request, outcomes sent to the inbox.

It runs in a process of its own where it can: a child forked when the stream starts (on Linux,
while the stream has no other thread yet), given a queue of its own (`own_queue`), so that its
landings use a core of their own instead of taking turns with the stream for the one
interpreter lock. The child dies with the stream (`PR_SET_PDEATHSIG`, and at the end of the
pass under way if that is refused), ignores Ctrl+C (the stream decides), and reports over a
pipe. Elsewhere, or without `own_queue`, it is a thread of the stream's process. Either way the
stream hears the same messages.

Another process holding the queue's lock (a `sage queue process` by hand, verifying) makes a
pass wait `[queue] lock_timeout`, then give up for now: the stream asks again later, and only
after MAX_BUSY passes in a row found the queue held does it count as a failure of the queue.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NoReturn, Protocol

from sage.lib import forked
from sage.lib.errors import LockHeld, SageError, message_of
from sage.lib.inbox import (
    LandedMsg,
    LanderBusy,
    LanderFailed,
    Message,
    PassDone,
    RejectedMsg,
)
from sage.lib.queue import Landed, Outcome, QueueEntry
from sage.lib.tickets import IndexWrite


class Outbox(Protocol):
    """Where the lander's news goes: the stream's `Inbox`, or in a child the pipe to it."""

    def put(self, message: Message) -> None: ...


class Landings(Protocol):
    """What the stream needs of a commit queue (`sage.lib.queue.CommitQueue`, or a test's)."""

    def enqueue(
        self, *, ticket_id: str, title: str, branch: str, base: str, worker: str = "",
        attempts: int = 0, head: str | None = None,
    ) -> QueueEntry: ...  # fmt: skip
    def process(self, notify: Callable[[Landed], None] | None = None) -> list[Outcome]: ...
    def head(self) -> str: ...
    def warm(self) -> None: ...
    def pending(self) -> list[QueueEntry]: ...
    def latest(self, ticket_id: str) -> QueueEntry | None: ...
    def defer(self, entry: QueueEntry, reason: str) -> QueueEntry: ...
    def discard(self, entry: QueueEntry, reason: str | None = None) -> QueueEntry: ...
    def keep_previous(self, entry: QueueEntry) -> None: ...
    def tidy(self, landed: Iterable[QueueEntry] = ...) -> None: ...
    def tell_index_writes(self, tell: Callable[[IndexWrite], None]) -> None: ...


MAX_BUSY = 10


class Lander:
    """`start()` it, `wake()` it for a pass, `close()` it: ends after the pass under way."""

    def __init__(
        self, queue: Landings, inbox: Outbox, *, own_queue: Callable[[], Landings] | None = None,
        follow: Callable[[IndexWrite], None] | None = None,
    ) -> None:  # fmt: skip
        """`own_queue` makes the queue a child process lands with (see the module's text);
        `follow` hears of each write of the ticket index the child makes (the stream's store
        follows it there rather than parse the index again)."""
        self.queue, self.inbox, self._own_queue = queue, inbox, own_queue
        self.follow = follow
        self._wake = threading.Event()
        self._closed = False
        self._in_pass = False
        self.busy_passes = 0
        self._child: _Child | None = None
        self._thread = threading.Thread(target=self._loop, name="sage-lander", daemon=True)

    def start(self) -> None:
        if self._own_queue is not None and forked.may_fork():
            self._child = _Child.fork(self, self._own_queue)
        if self._child is None:
            self._thread.start()

    @property
    def pid(self) -> int | None:
        """The lander's own process, when it has one."""
        return self._child.pid if self._child is not None else None

    def wake(self) -> None:
        if self._child is not None:
            self._child.wake()
        else:
            self._wake.set()

    @property
    def busy(self) -> bool:
        """A pass is asked for or under way."""
        if self._child is not None:
            return self._child.busy
        return self._wake.is_set() or self._in_pass

    def closing(self) -> None:
        """Ask it to end after the pass under way, without waiting (see `close`)."""
        if self._child is not None:
            self._child.closing()
            return
        self._closed = True
        self._wake.set()

    def close(self) -> None:
        """Ask it to end after the pass under way, and wait for it (and its last messages)."""
        if self._child is not None:
            self._child.close()
            return
        self.closing()
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
                self._try_pass()
            finally:
                self._in_pass = False

    def _try_pass(self) -> None:
        """A pass, its failure told as a message: a dead lander would leave the run waiting."""
        try:
            self._pass()
            self.busy_passes = 0
        except LockHeld as exc:
            self.busy_passes += 1
            failed = self.busy_passes >= MAX_BUSY
            self.inbox.put(LanderFailed(error=exc) if failed else LanderBusy(error=exc))
        except Exception as exc:
            error = exc if isinstance(exc, SageError) else SageError(message_of(exc))
            self.inbox.put(LanderFailed(error=error))

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
        pending = frozenset(e.ticket_id for e in self.queue.pending())
        self.inbox.put(PassDone(pending=pending))


# ---- the lander's own process ------------------------------------------------------------------

_CLOSE = b"c"  # on the command pipe; any other byte asks for a pass


@dataclass(frozen=True, slots=True)
class _Asked:
    """The child's word after each pass: how many passes it had been asked for by then."""

    count: int


@dataclass(frozen=True, slots=True)
class _IndexWritten:
    """The child is writing the ticket index (COMPLETED): told to the lander's `follow`."""

    write: IndexWrite


class _Child:
    """The stream's side of a lander process: wakes down one pipe, messages back up another,
    relayed to the inbox by a thread. Its end without a close is the queue failing."""

    def __init__(
        self, pid: int, commands: int, results: int, inbox: Outbox,
        follow: Callable[[IndexWrite], None] | None = None,
    ) -> None:  # fmt: skip
        self.pid, self._commands, self._inbox, self._follow = pid, commands, inbox, follow
        self._asked = self._answered = 0
        self._closing = self._gone = self._failed = False
        self._relay = threading.Thread(
            target=self._read, args=(results,), name="sage-lander-relay", daemon=True
        )
        self._relay.start()

    @classmethod
    def fork(cls, lander: Lander, own_queue: Callable[[], Landings]) -> _Child | None:
        """None when the fork fails: the lander is then a thread."""
        child = forked.fork(functools.partial(_serve, lander, own_queue))
        if child is None:
            return None
        pid, commands_w, results_r = child
        os.set_blocking(commands_w, False)  # a full pipe holds wakes enough: never wait on it
        return cls(pid, commands_w, results_r, lander.inbox, lander.follow)

    @property
    def busy(self) -> bool:
        return self._answered < self._asked and not self._gone

    def wake(self) -> None:
        try:
            os.write(self._commands, b"w")
        except BlockingIOError:
            return  # wakes enough wait unread
        except OSError:
            return  # it has ended: its relay reports that
        self._asked += 1

    def closing(self) -> None:
        """Ask it to end after the pass under way."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError):
            os.write(self._commands, _CLOSE)
        with contextlib.suppress(OSError):
            os.close(self._commands)

    def close(self) -> None:
        """`closing`, then wait for it and its last messages."""
        self.closing()
        self._relay.join()

    def _read(self, results: int) -> None:
        for message in forked.messages(results):
            if isinstance(message, _Asked):
                self._answered = message.count
            elif isinstance(message, _IndexWritten):  # at once: the stream may be reading it
                if self._follow is not None:
                    with contextlib.suppress(Exception):  # a hint: never the relay's end
                        self._follow(message.write)
            else:
                assert isinstance(message, Message)
                self._failed = self._failed or isinstance(message, LanderFailed)
                self._inbox.put(message)
        _, status = os.waitpid(self.pid, 0)
        self._gone = True  # and so never busy again, whatever a wake meanwhile counted
        if not self._failed and (not self._closing or status):  # it said why itself, else
            how = forked.ended(status)
            self._inbox.put(LanderFailed(error=SageError(f"the lander's process {how}")))


class _Pipe(forked.Pipe):
    """The child's inbox: each message pickled up the result pipe. An error goes as a plain
    SageError (message and hint): the stream reads no more of it, and some do not pickle."""

    def put(self, message: object) -> None:
        if isinstance(message, LanderFailed | LanderBusy):
            error = SageError(message.error.message, hint=message.error.hint)
            message = type(message)(error=error)
        super().put(message)


def _serve(
    lander: Lander, own_queue: Callable[[], Landings], parent: int, commands: int, results: int
) -> NoReturn:
    """The child: a pass per read of wakes, until a close or the end of the pipe (the stream
    is gone). It never returns into the stream's code, whatever happens."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        forked.become("sage-lander", parent)
        out = _Pipe(results)
        lander.inbox = out
        try:
            lander.queue = own_queue()
        except Exception as exc:
            out.put(LanderFailed(error=SageError(f"the lander's queue: {message_of(exc)}")))
            raise
        # the stream's store follows the index this process writes instead of parsing it
        lander.queue.tell_index_writes(lambda write: out.put(_IndexWritten(write=write)))
        with contextlib.suppress(Exception):  # on the second core, before anything waits on it
            lander.queue.warm()
        asked = 0
        while (data := os.read(commands, 4096)) and _CLOSE not in data:
            asked += len(data)
            lander._try_pass()
            out.put(_Asked(asked))
    except BaseException:
        code = 70
    finally:
        os._exit(code)
