"""Queue entries on disk: one JSON file each in the queue folder, moved to `done/` when settled."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from sage.lib import files, git, locks
from sage.lib.errors import SageError
from sage.lib.tickets import now, printable

TRAILER = git.TRAILER


class Status(StrEnum):
    QUEUED = "queued"
    APPLYING = "applying"  # the target is about to move (or moved): see recovery
    CONFLICT = "conflict"
    VERIFY_FAILED = "verify-failed"
    LANDED = "landed"
    DEFERRED = "deferred"
    DISCARDED = "discarded"


REJECTED = (Status.CONFLICT, Status.VERIFY_FAILED)
RETRYABLE = (*REJECTED, Status.DEFERRED, Status.DISCARDED)


def step(name: str) -> None:
    """A named point between the steps of an application: crash-safety tests set
    `sage.lib.queue.step_hook` to kill the process there."""
    hook = getattr(sys.modules.get("sage.lib.queue"), "step_hook", None)
    if hook is not None:
        hook(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueEntry:
    """One ticket branch waiting to land, as persisted in the queue folder."""

    seq: int
    ticket_id: str
    title: str
    branch: str
    base: str
    head: str
    worker: str = ""
    run_id: str = ""
    attempts: int = 0
    status: str = Status.QUEUED
    queued_at: str = ""
    landed_at: str | None = None
    landed_commit: str | None = None
    old_target: str | None = None
    new_target: str | None = None
    conflict_files: tuple[str, ...] = ()
    collided_with: tuple[str, ...] = ()
    reason: str | None = None
    commits: tuple[str, ...] = ()
    message: str = ""
    verify: tuple[str, ...] = ()  # the verify command it was queued under: whoever lands applies it
    from_base: bool = False  # its head descends from its base (a worker may reset below it)
    target: str = ""  # the branch it lands on

    @property
    def filename(self) -> str:
        return f"{self.seq:06d}-{self.ticket_id}.json"

    def as_dict(self) -> dict[str, Any]:
        """Its fields by name (`dataclasses.asdict` less the deep copy its values never need:
        they are strings, numbers and tuples of strings), a tenth of the cost."""
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueueEntry:
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in _KNOWN
        }
        return cls(**values)


_FIELDS = tuple(f.name for f in fields(QueueEntry))
_KNOWN = frozenset(_FIELDS)

_TYPES: dict[str, tuple[type, ...]] = {
    "seq": (int,), "ticket_id": (str,), "title": (str,), "branch": (str,), "base": (str,),
    "head": (str,), "attempts": (int,), "status": (str,),
}  # fmt: skip


def _checked(data: Any, path: Path) -> QueueEntry:
    """A hand-edited entry is refused with what is wrong, never an internal error."""
    if not isinstance(data, dict):
        raise _unreadable(path, f"expected a JSON object, found {type(data).__name__}")
    for key, types in _TYPES.items():
        value = data.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise _unreadable(path, f'"{key}" is missing or not a {types[0].__name__}')
    if data["status"] not in set(Status):
        raise _unreadable(path, f"unknown status {data['status']!r}")
    try:
        return QueueEntry.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise _unreadable(path, str(exc)) from None


def _unreadable(path: Path, why: str) -> SageError:
    return SageError(
        f"cannot read queue entry {path}: {why}",
        hint="move the file aside; its ticket can be re-run with `sage stream`",
    )


def squash_message(ticket_id: str, title: str, subjects: Sequence[str]) -> str:
    """`<ID>: <title>`, the branch's commit subjects, and the Sage-Ticket trailer."""
    shown = printable(title)
    header = f"{ticket_id}: {shown}" if shown else ticket_id
    listed = "".join(f"- {s}\n" for s in subjects if s and s != header)
    body = f"{listed}\n" if listed else ""
    return f"{header}\n\n{body}{TRAILER}: {ticket_id}\n"


def read_entry(path: Path) -> QueueEntry | None:
    """An entry file, or None when it was archived meanwhile."""
    try:
        data = json.loads(files.read_bytes(path))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise _unreadable(path, str(exc)) from None
    return _checked(data, path)


def _entry_names(folder: Path) -> list[str]:
    """The entry files' names in a queue folder ("<seq>-<ID>.json"), listed without a Path or
    a pattern match each: the archive holds every entry of every run."""
    try:
        with os.scandir(folder) as found:
            return [e.name for e in found if e.name[:1].isdigit() and e.name.endswith(".json")]
    except (FileNotFoundError, NotADirectoryError):  # as a glob: nothing there to number
        return []


def _seq_of(name: str) -> int:
    return int(name.split("-", 1)[0])


def by_seq(entries: Iterable[QueueEntry | None]) -> list[QueueEntry]:
    return sorted((e for e in entries if e is not None), key=lambda e: e.seq)


class Entries:
    """The queue folder and its `done/` archive."""

    def __init__(self, queue_dir: Path, locks_dir: Path, lock_timeout: float) -> None:
        self.queue_dir, self.done_dir = queue_dir, queue_dir / "done"
        self.locks_dir, self.lock_timeout = locks_dir, lock_timeout

    def add(self, entry: QueueEntry) -> QueueEntry:
        """Write `entry` under the next sequence number. Numbering has a lock of its own:
        enqueuing never waits for a landing's verify run."""
        numbering = self.locks_dir / "queue-seq.lock"
        with locks.hold(numbering, timeout=self.lock_timeout, what="the queue's numbering"):
            seq = self._last_seq() + 1
            # the number first: a crash before the entry is written leaves a gap, never a reuse
            self._keep_seq(seq)
            return self.write(replace(entry, seq=seq))

    def _keep_seq(self, seq: int) -> None:
        """The last number, written over the one before in a line of fixed width (no file made
        per entry). A line cut short or garbled cannot be read as a number: the entries are
        counted instead (`_last_seq`)."""
        files.write_over(self._seq_file, f"{seq:020d}\n")

    @property
    def _seq_file(self) -> Path:
        return self.locks_dir / "queue-seq"

    def _last_seq(self) -> int:
        """The last number given, from the file kept beside the numbering lock; counted from
        the entries (both folders, which grow run after run) when it is missing or unreadable,
        or behind them (an older sage, a hand edit)."""
        try:
            kept = int(files.read_bytes(self._seq_file))
        except (OSError, ValueError):
            kept = -1
        newest = max((_seq_of(n) for n in _entry_names(self.queue_dir)), default=0)
        if kept < newest:  # the queue folder is small: checked every time
            kept = max(newest, max((_seq_of(n) for n in _entry_names(self.done_dir)), default=0))
        return kept

    def write(self, entry: QueueEntry, *, durable: bool = False) -> QueueEntry:
        """`durable`: on disk before returning (`sage.lib.files`), for the write-ahead record of
        an entry marked applying before the target moves; else run state (atomic, no fsync)."""
        files.write_json(self.queue_dir / entry.filename, entry.as_dict(), durable=durable)
        return entry

    def archive(self, entry: QueueEntry) -> QueueEntry:
        """Into done/ first, then out of the queue: a crash in between leaves two copies, which
        `active` reads as archived. A landed entry is named as its target's last landing
        first (`last_landed`): a crash before its copy is in done/ leaves a name that
        `last_landed` does not trust."""
        if entry.status == Status.LANDED and entry.target:
            self._name_last_landed(entry)
        files.write_json(self.done_dir / entry.filename, entry.as_dict(), durable=False)
        (self.queue_dir / entry.filename).unlink(missing_ok=True)
        return entry

    def active(self) -> list[QueueEntry]:
        """The entries in the queue folder; one also archived (a crash between the two steps of
        `archive`) is removed from it. Every landing pass reads this: names, not a glob."""
        paths = []
        queue, done = str(self.queue_dir), str(self.done_dir)
        for name in _entry_names(self.queue_dir):
            if os.path.exists(f"{done}/{name}"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{queue}/{name}")
            else:
                paths.append(self.queue_dir / name)
        return by_seq(map(read_entry, paths))

    def archived(self, ticket_id: str | None = None) -> list[QueueEntry]:
        """Every archived entry, or only `ticket_id`'s (told by the file's name: the archive
        holds every entry of every run, and one JSON read each would cost a stream that
        reconciles a ticket about 40 µs per entry ever settled)."""
        names = _entry_names(self.done_dir)
        if ticket_id is not None:
            own = f"{ticket_id}.json"
            names = [name for name in names if name.partition("-")[2] == own]
        return by_seq(read_entry(self.done_dir / name) for name in names)

    def current(self, entry: QueueEntry) -> QueueEntry:
        """The entry as on disk now (the caller's copy may be older), else the caller's."""
        return read_entry(self.queue_dir / entry.filename) or entry

    def of_ticket(self, ticket_id: str) -> list[QueueEntry]:
        """A ticket's entries, waiting and archived, oldest first. The queue is read before the
        archive: an entry archived meanwhile (into done/ first, then out of the queue) is then
        in one or both, never in neither. In both, the archived copy is the newer."""
        waiting = [e for e in self.active() if e.ticket_id == ticket_id]
        done = {e.seq: e for e in self.archived(ticket_id) if e.ticket_id == ticket_id}
        return by_seq([*done.values(), *(e for e in waiting if e.seq not in done)])

    def queued(self) -> list[QueueEntry]:
        """Queued entries in order, one per ticket: a newer entry supersedes older ones."""
        active = self.active()
        latest = {e.ticket_id: e for e in active if e.status == Status.QUEUED}
        for entry in active:
            newer = latest.get(entry.ticket_id)
            if newer and entry.seq < newer.seq and entry.status != Status.APPLYING:
                why = f"superseded by #{newer.seq}"
                self.archive(replace(entry, status=Status.DISCARDED, reason=why))
        return sorted(latest.values(), key=lambda e: e.seq)

    def last_landed(self, target: str) -> QueueEntry | None:
        """The newest entry landed on `target`: the top of the queue's last landing there.
        Every landing pass asks. The archive names it (`archive`); when that name is missing
        or names no such entry (a crash between the two, an older sage), it is found in the
        archive, newest first: a listing of every entry of every run (17 ms a pass at 20k)."""
        named = self._last_landed_names().get(target)
        entry = read_entry(self.done_dir / named) if isinstance(named, str) else None
        if entry and entry.status == Status.LANDED and entry.target == target:
            return entry
        for name in sorted(_entry_names(self.done_dir), reverse=True):
            entry = read_entry(self.done_dir / name)
            if entry and entry.status == Status.LANDED and entry.target == target:
                return entry
        return None

    @property
    def _last_landed_file(self) -> Path:
        return self.done_dir / ".last-landed.json"  # not an entry's name: no listing reads it

    def _last_landed_names(self) -> dict[str, object]:
        """Each target's last landed entry's file name, as `archive` wrote it ({} if unreadable)."""
        try:
            found = json.loads(files.read_bytes(self._last_landed_file))
        except (OSError, ValueError, RecursionError):
            return {}
        return found if isinstance(found, dict) else {}

    def _name_last_landed(self, entry: QueueEntry) -> None:
        """Only landings write this (one at a time: under the queue's lock)."""
        names = {**self._last_landed_names(), str(entry.target): entry.filename}
        files.write_json(self._last_landed_file, names, durable=False)

    def requeue(self, entries: Sequence[QueueEntry], reason: str | None = None) -> list[QueueEntry]:
        return [
            self.write(replace(e, status=Status.QUEUED, old_target=None, new_target=None,
                               landed_at=None, reason=reason))
            for e in entries
        ]  # fmt: skip


def new_entry(**values: Any) -> QueueEntry:
    return QueueEntry(seq=0, queued_at=now(), **values)
