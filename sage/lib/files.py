"""Atomic file writes (a temporary file beside the target, renamed over it), and `Snapshot`,
a file read once and reused while it is unchanged.

A reader sees the old file or the new one, never a part, and a process killed at any point
(kill -9) leaves one of the two: the page cache outlives the process. What a power cut leaves
depends on what was fsynced, and sage chooses by what the file is:

- **durable** (`durable=True`, the default): fsync the file, rename, fsync its folder. For the
  user's files (the ticket index, `config.toml`, hooks, agent commands) and for a
  **write-ahead** record that must be on disk before an irreversible step: the queue entry
  marked `applying` before the target ref's compare-and-swap, the checkout's update record
  before `read-tree` rewrites the user's files.
- **run state** (`durable=False`): temp file and rename, no fsync. For records that describe
  what happened or is under way, which recovery checks against git (queue entries queued,
  conflicting, archived; `tickets.json`'s IN_PROGRESS and DEFERRED). git by default
  (`core.fsync` unset) fsyncs neither refs, nor its index, nor loose objects: after a power cut
  the refs such a record describes may be gone as well, and fsyncing the record would buy
  nothing but two disk flushes per state change. (Pid files and the events journal are plain
  writes and appends, never fsynced.) A power cut may leave such a file at an older version, or
  empty on a filesystem that does not order a rename after the data it names; its reader then
  says which file it cannot read.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def write_atomic(path: Path, text: str | bytes, *, durable: bool = True) -> None:
    """`text` (str: UTF-8) in `path` whole or not at all, with the mode of the file it replaces;
    on disk before returning unless `durable` is False (run state: see the module docstring)."""
    old = _mode_of(path)  # the index and config are the user's files
    data = text.encode() if isinstance(text, str) else text
    # a new file: what a plain open() makes; else the old one's mode, bits the umask took back
    replace_with(path, data, f"{path.parent}/.{path.name}.", ".tmp",
                 mode=0o666 if old is None else old, exact=old is not None and bool(old & _UMASK),
                 durable=durable)  # fmt: skip
    if durable:
        _fsync_dir(path.parent)


def replace_with(
    path: str | os.PathLike[str], data: bytes, prefix: str, suffix: str = "", *,
    mode: int = 0o666, exact: bool = False, durable: bool = False,
) -> None:  # fmt: skip
    """`data` written into a new file named `<prefix><unique><suffix>` (its folder made if
    missing; `mode` less the umask, or `mode` itself if `exact`), fsynced if `durable`, then
    renamed over `path`; nothing left behind when any step fails."""
    folder = os.path.dirname(os.fspath(path))
    fd, tmp = in_folder(folder, lambda: new_file(prefix, suffix, mode))
    try:
        if exact:
            os.fchmod(fd, mode)
        write_all(fd, data)
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """A file's bytes in four system calls (open, read, read, close; a large file more),
    where `open(path, "rb").read()` takes seven: it also asks for the file's size, whether it
    is a terminal and where it stands. Sage reads a few small files (refs, HEAD, links, queue
    entries) per object and per ref it looks at."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, _READ_AT_ONCE):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


_READ_AT_ONCE = 1 << 20


def read_text(path: str | os.PathLike[str], errors: str = "strict") -> str:
    """A UTF-8 file's text (`read_bytes`); newlines as they are."""
    return read_bytes(path).decode("utf-8", errors)


def present(folder: Path, names: Iterable[str]) -> list[str]:
    """Which of `names` are in `folder` (a link to nothing counts), in their order: one listing
    of the folder, not a stat per name; none when it is missing."""
    try:
        there = set(os.listdir(folder))
    except OSError:
        return []
    return [name for name in names if name in there]


def in_folder(folder: Path | str, make: Callable[[], T]) -> T:
    """`make()`, which makes a file in `folder`; the folder made first only if `make` finds it
    missing (a mkdir per file costs two system calls, and a file is made per state change)."""
    try:
        return make()
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return make()


def new_file(prefix: str, suffix: str, mode: int = 0o666) -> tuple[int, str]:
    """A file made anew (create-exclusive) as `<prefix><unique><suffix>`, open for writing, and
    its name: unique per process and thread, as `tempfile.mkstemp`'s names, without its random
    names' cost; a name a dead process left is skipped."""
    while True:
        name = f"{prefix}{os.getpid()}-{threading.get_ident()}-{next(_MADE)}{suffix}"
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode), name
        except FileExistsError:
            continue


_MADE = itertools.count()


def write_all(fd: int, data: bytes) -> None:
    """All of `data` into the open file `fd` (a write may take part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _mode_of(path: Path) -> int | None:
    """The mode of the file being replaced; None if there is none."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (os.umask sets it, and
    another thread could create a file in between)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


_UMASK = _umask()  # sage never sets its own


class Snapshot(Generic[T]):
    """What `parse` made of a file's bytes when it was last read, reused while the file is
    unchanged: the same (inode, size, mtime, ctime) as then and, until a read began well after
    the file last changed, the same bytes. A file rewritten in place within one tick of the
    filesystem's clock keeps its size and its timestamps ("racily clean", as git calls such
    index entries), so until then the bytes are read again and compared: only the parse is
    saved. Thread-safe; the value is shared, so whoever gets it must not change it."""

    def __init__(self, path: Path, parse: Callable[[bytes], T]) -> None:
        self.path, self.parse = path, parse
        self._seen: _Seen[T] | None = None
        self._told: tuple[bytes, T] | None = None  # see `told`

    def read(self) -> T:
        """The file's value now: OSError (FileNotFoundError …) and `parse`'s errors as raised."""
        seen = self._seen
        if seen is not None and seen.settled and _signature(os.stat(self.path)) == seen.signature:
            return seen.value
        began = time.time_ns()
        with open(self.path, "rb") as handle:
            signature = _signature(os.fstat(handle.fileno()))  # older than the bytes, if anything
            data = handle.read()
        told, digests = self._told, list[bytes]()
        if seen is not None and seen.data == data:  # `told` is kept: of a write still to come
            value, digests = seen.value, seen.digests
        elif told is not None and (digest := content_digest(data)) == told[0]:
            value, digests, self._told = told[1], [digest], None
        else:
            value, self._told = self.parse(data), None
        self._seen = _Seen(signature, data, value, settled=_settled(signature, began),
                           digests=digests)  # fmt: skip
        return value

    def wrote(self, data: bytes, value: T, *, digest: bytes | None = None) -> None:
        """This process just replaced the file with `data`, which `parse` would read as
        `value`: the next read compares bytes instead of parsing them. (`digest`: its
        `content_digest`, when the caller has it.)"""
        self._told = None
        try:
            signature = _signature(os.stat(self.path))
        except OSError:
            self._seen = None
            return
        self._seen = _Seen(signature, data, value, settled=False,
                           digests=[digest] if digest is not None else [])  # fmt: skip

    def latest(self) -> tuple[bytes, T] | None:
        """The `content_digest` and value of the file as this snapshot last knew it: as read or
        written here, or as another process said it wrote it (`told`); None before any."""
        if self._told is not None:
            return self._told
        seen = self._seen
        if seen is None:
            return None
        if not seen.digests:
            seen.digests.append(content_digest(seen.data))
        return seen.digests[0], seen.value

    def seen(self) -> tuple[bytes, T] | None:
        """The bytes this snapshot last read or wrote, and their value."""
        seen = self._seen
        return None if seen is None else (seen.data, seen.value)

    def told(self, digest: bytes, value: T) -> None:
        """Another process replaces the file (or just did) with bytes of this
        `content_digest`, which read as `value`: a read that finds such bytes takes `value`
        without parsing them (a hash of the bytes costs a small part of a parse). Anything
        else there is parsed, as before."""
        self._told = (digest, value)


RACY_NS = 2_000_000_000  # a file changed this long before a read began is settled (FAT: 2 s ticks)


@dataclass(frozen=True, slots=True)
class _Seen(Generic[T]):
    signature: tuple[int, int, int, int]
    data: bytes
    value: T
    settled: bool  # read well after the file last changed: its signature alone says "unchanged"
    digests: list[bytes] = field(default_factory=list)  # its content_digest, once asked (one)


def content_digest(data: bytes) -> bytes:
    """What names a file's content between processes (SHA-256: 3 ms for a 6 MB index)."""
    return hashlib.sha256(data).digest()


def _signature(found: os.stat_result) -> tuple[int, int, int, int]:
    return (found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)


def _settled(signature: tuple[int, int, int, int], began: int) -> bool:
    """Whether a change after the read began must show in the signature: the last one was a
    clear tick earlier (mtime can be set back; ctime, which moves with it, cannot)."""
    return max(signature[2], signature[3]) + RACY_NS < began


def write_json(path: Path, data: Any, *, durable: bool = True) -> None:
    write_atomic(path, json_text(data), durable=durable)


def json_text(data: Any, *, rendered: dict[int, str] | None = None) -> str:
    """JSON as sage writes every file: indented, UTF-8 as is, a final newline (`rendered`: see
    `dumps`)."""
    return dumps(data, rendered=rendered) + "\n"


def dumps(data: Any, *, rendered: dict[int, str] | None = None) -> str:
    """`json.dumps(data, indent=2, ensure_ascii=False)`, the same text, faster for a document
    rewritten whole for each small change (the ticket index): the values two levels down (each
    ticket) are indented once and reused while their content is the same. json's indenting
    encoder is pure Python, several times slower than its compact one. A small document is
    written by json directly (the reuse costs more than it saves there).

    `rendered`, for a caller that keeps the document and knows which of those values it changed
    since it last wrote it (and dropped them from here): their texts by `id()`, reused without
    encoding them again, and filled in for the next write."""
    items = _longest_list(data)
    if items >= _MANY:
        if len(_KEPT) > max(_KEEP_MOST, 2 * items):  # between writes: a write reuses all it can
            _KEPT.clear()
        return _indented(data, 0, rendered)
    return json.dumps(data, indent=2, ensure_ascii=False)


def _longest_list(data: Any) -> int:
    """Items in the longest list at the top of a dict (0 for anything else)."""
    if type(data) is not dict:
        return 0
    return max((len(v) for v in data.values() if type(v) is list), default=0)


_MANY = 16  # items in a top-level list that make reusing their text worth it
_REUSED_AT = 2  # depth of the values whose indented text is kept: {"tickets": [<here>, …]}
_KEPT: dict[str, str] = {}  # compact JSON of such a value -> its indented text at that depth
_KEEP_MOST = 50_000  # texts kept at least (and twice the largest document's items)


def _indented(value: Any, depth: int, rendered: dict[int, str] | None = None) -> str:
    if depth == _REUSED_AT and isinstance(value, dict | list):
        if rendered is None:
            return _reused(value, depth)
        text = rendered.get(id(value))
        if text is None:
            text = rendered[id(value)] = _reused(value, depth)
        return text
    pad = "\n" + "  " * (depth + 1)
    if type(value) is dict and value and all(type(key) is str for key in value):
        items = (
            f"{_encode_key(key)}: {_indented(item, depth + 1, rendered)}"
            for key, item in value.items()
        )
        return "{" + pad + ("," + pad).join(items) + pad[:-2] + "}"
    if type(value) is list and value:
        if rendered is not None and depth + 1 == _REUSED_AT:  # the tickets: most texts are known
            known = rendered.get
            items = (known(id(item)) or _indented(item, depth + 1, rendered) for item in value)
        else:
            items = (_indented(item, depth + 1, rendered) for item in value)
        return "[" + pad + ("," + pad).join(items) + pad[:-2] + "]"
    return _plain(value, depth)


def _reused(value: dict[Any, Any] | list[Any], depth: int) -> str:
    key = _COMPACT.encode(value)
    text = _KEPT.get(key)
    if text is None:
        text = _KEPT[key] = _plain(value, depth)
    return text


def rendered_in(text: str, data: Any) -> dict[int, str]:
    """What `dumps` wrote into `text` for each value two levels down in `data` (the parse of
    `text`): its text by `id()`, for `dumps(data, rendered=…)` to reuse instead of encoding it
    again (at 20k tickets, a second or more of a first write). A file `dumps` wrote splits
    where a line holds a value's first `{` two levels in: no string holds a newline. Only a
    piece that reads back as its value does (the same compact JSON: types and key order too) is
    kept, so a ticket edited by hand keeps its layout until it changes; a file laid out
    otherwise keeps little or none."""
    if type(data) is not dict or len(data) != 1:
        return {}
    ((key, items),) = data.items()
    head = "{\n  " + _encode_key(key) + ": [\n    "
    if type(items) is not list or len(items) < _MANY or not text.startswith(head):
        return {}
    body, tail = text[len(head) :], "\n  ]\n}\n"
    if not body.endswith(tail):
        return {}
    pieces = body[: -len(tail)].split(",\n    {")
    if len(pieces) != len(items):
        return {}
    found = {}
    for number, (piece, item) in enumerate(zip(pieces, items, strict=True)):
        piece = piece if number == 0 else "{" + piece
        if type(item) is dict and _reads_as(piece, _COMPACT.encode(item)):
            found[id(item)] = piece
    return found


def _reads_as(text: str, compact: str) -> bool:
    """Whether `text` is JSON that reads as the value whose compact JSON is `compact`."""
    try:
        return _COMPACT.encode(json.loads(text)) == compact
    except ValueError:
        return False


def _plain(value: Any, depth: int) -> str:
    """What json writes for `value` at `depth` (its text has no raw newline but its own)."""
    return json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + "  " * depth)


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # json's C encoder
_encode_key = json.encoder.encode_basestring  # a str as JSON, as ensure_ascii=False writes it


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_over(path: Path, text: str) -> None:
    """The file's content replaced where it is (the file made only the first time): the new
    text, then the old one's rest cut off. Not atomic: for a small record whose reader takes a
    torn one for none (a pid file, the queue's last number), where a new file per write would
    cost more than the write."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
