"""A git index file read in process (versions 2 to 4, SHA-1 or SHA-256), for what sage asks of
it often: the flags a worker may set (`flags`), what it holds for a few paths (`objects`), and
whether a few paths of a checkout are as it says (`clean`). None wherever it cannot tell: another
format, a split or sparse index (whose entries are not all in this file); then git answers.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sage.lib import git, objects


@dataclass(frozen=True, slots=True)
class Entry:
    """One index entry: its path, mode, object id, flags (the extended ones shifted by 16) and
    stat data as git recorded it (ctime s, ns, mtime s, ns, dev, ino, mode, uid, gid, size)."""

    name: str
    mode: int
    oid: str
    flags: int
    stat: tuple[int, ...]


def flags(index: Path, hash_size: int) -> tuple[list[str], list[str]] | None:
    """The assume-unchanged and the skip-worktree paths of a git index file (objects of
    `hash_size` bytes), or None when it cannot tell."""
    found = _index_entries(index, hash_size, lambda name, bits: bool(bits & (_ASSUMED | _SKIPPED)))
    if found is None:
        return None
    assumed = [e.name for e in found if e.flags & _ASSUMED]
    skipped = [e.name for e in found if e.flags & _SKIPPED]
    return assumed, skipped


def staged(
    index: Path, hash_size: int, paths: Iterable[str], *, most: int = 1 << 20
) -> dict[str, tuple[str, str] | None] | None:
    """What a git index file holds for each of `paths`: (mode, object id) as `git ls-files -s`
    shows them, None where the path is not in it. None when it cannot tell (a conflict's
    stages, a file over `most` bytes: then git is faster)."""
    wanted = set(paths)
    found = _wanted(index, hash_size, wanted, most)
    if found is None or any(e.flags & _STAGES for e in found.values()):
        return None
    return {path: (f"{e.mode:06o}", e.oid) if (e := found.get(path)) else None for path in wanted}


def unchanged(checkout: Path, commit: str, paths: Iterable[str]) -> bool:
    """Whether each of `paths` is, in `checkout`'s index and files, as `commit` has it (see
    `clean`): by stat data, or by content where nothing converts it. False when it is not so
    or cannot be told from files."""
    found = git.settings(checkout)
    index = index_of(checkout)
    expected = objects.entries_at(checkout, commit, paths) if found and index else None
    if found is None or index is None or expected is None:
        return False
    by_content = not _converts(checkout, found, expected)
    filemode = found.flag("core.filemode", default=True)
    return clean(checkout, index, len(commit) // 2, expected, by_content=by_content,
                 filemode=filemode)  # fmt: skip


def index_of(checkout: Path) -> Path | None:
    """A checkout's index file, if it is where git keeps it (no GIT_INDEX_FILE)."""
    if "GIT_INDEX_FILE" in os.environ:
        return None
    dot = checkout / ".git"
    if dot.is_dir():
        return dot / "index"
    try:
        text = dot.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    admin = Path(text.removeprefix("gitdir: "))
    return (admin if admin.is_absolute() else checkout / admin) / "index"


def _converts(checkout: Path, found: git.Settings, paths: Iterable[str]) -> bool:
    """Whether git may convert a file's content between the checkout and its blob: autocrlf,
    or any attributes file that could apply (`.gitattributes` in a folder on a path, the
    repository's, the user's)."""
    if found.get("core.autocrlf", "false").lower() not in ("false", "no", "off", "0"):
        return True
    home = Path(os.environ.get("HOME", "/"))
    user = found.get("core.attributesfile") or str(
        Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "git" / "attributes"
    )
    candidates = [git.shared_dir(checkout) / "info" / "attributes", Path(os.path.expanduser(user))]
    folders = {"/".join(p.split("/")[:i]) for p in paths for i in range(p.count("/") + 1)}
    candidates += [checkout / folder / ".gitattributes" for folder in folders]
    return any(os.path.lexists(c) for c in candidates)


def clean(
    checkout: Path, index: Path, hash_size: int, expected: Mapping[str, tuple[str, str] | None],
    *, by_content: bool, filemode: bool = True, most: int = 1 << 20,
) -> bool:  # fmt: skip
    """Whether each path of `expected` is, in `checkout` and its `index`, as a clean checkout of
    a commit holding `expected` has it: a tracked path ((mode, id)) staged as that, with no
    flag or conflict, and unchanged on disk (its stat data as recorded and not racy, or, when
    `by_content` says no attribute or setting converts content, the same bytes); an untracked
    one (None) neither staged nor on disk, and no file where its folders go. False when it is
    not so or cannot be told (then git is asked)."""
    try:
        written = os.stat(index)
    except OSError:
        return False
    if os.path.lexists(index.with_name(index.name + ".lock")):
        return False  # a git is writing the index now
    folders = {"/".join(p.split("/")[:i]) for p in expected for i in range(1, p.count("/") + 1)}
    found = _wanted(index, hash_size, set(expected) | folders, most)
    if found is None or any(f in found for f in folders):
        return False
    index_time = (written.st_mtime_ns // 10**9, written.st_mtime_ns % 10**9)
    for path, want in expected.items():
        entry, where = found.get(path), checkout / path
        if want is None:
            if entry is not None or os.path.lexists(where) or _file_in_the_way(checkout, path):
                return False
            continue
        if entry is None or entry.flags & _UNUSUAL or (f"{entry.mode:06o}", entry.oid) != want:
            return False
        try:
            seen = os.lstat(where)
        except OSError:
            return False
        if not _same_kind(seen, entry.mode, filemode=filemode):
            return False
        if _stat_matches(entry, seen) and entry.stat[2:4] < index_time:
            continue  # git too takes it as unchanged without reading it
        if (
            not by_content
            or seen.st_size > most
            or not _same_content(where, seen, entry, hash_size)
        ):
            return False
    return True


def _file_in_the_way(checkout: Path, path: str) -> bool:
    """Whether a file (not a folder) stands where one of `path`'s folders goes."""
    parts = path.split("/")
    for i in range(1, len(parts)):
        try:
            if not stat.S_ISDIR(os.lstat(checkout.joinpath(*parts[:i])).st_mode):
                return True
        except FileNotFoundError:
            return False
        except OSError:
            return True
    return False


def _same_kind(seen: os.stat_result, mode: int, *, filemode: bool) -> bool:
    if mode == 0o120000:
        return stat.S_ISLNK(seen.st_mode)
    if mode not in (0o100644, 0o100755) or not stat.S_ISREG(seen.st_mode):
        return False
    return not filemode or bool(seen.st_mode & 0o100) == (mode == 0o100755)


def _stat_matches(entry: Entry, seen: os.stat_result) -> bool:
    """git's stat check (statinfo.c): times to the nanosecond, inode, owner, size (32 bits)."""
    ctime_s, ctime_ns, mtime_s, mtime_ns, _dev, ino, _mode, uid, gid, size = entry.stat
    return (
        (mtime_s, mtime_ns) == divmod(seen.st_mtime_ns, 10**9)
        and (ctime_s, ctime_ns) == divmod(seen.st_ctime_ns, 10**9)
        and ino == seen.st_ino & 0xFFFFFFFF
        and (uid, gid) == (seen.st_uid & 0xFFFFFFFF, seen.st_gid & 0xFFFFFFFF)
        and size == seen.st_size & 0xFFFFFFFF
    )


def _same_content(where: Path, seen: os.stat_result, entry: Entry, hash_size: int) -> bool:
    try:
        data = os.fsencode(os.readlink(where)) if stat.S_ISLNK(seen.st_mode) else where.read_bytes()
    except OSError:
        return False
    digest = hashlib.sha1 if hash_size == 20 else hashlib.sha256
    return digest(b"blob %d\0%s" % (len(data), data)).hexdigest() == entry.oid


def _wanted(index: Path, hash_size: int, paths: set[str], most: int) -> dict[str, Entry] | None:
    try:
        if index.stat().st_size > most:
            return None
    except OSError:
        return None
    named = {os.fsencode(path) for path in paths}
    found = _index_entries(index, hash_size, lambda name, bits: name in named)
    return None if found is None else {e.name: e for e in found}


_ASSUMED, _SKIPPED, _STAGES = 0x8000, 0x4000_0000, 0x3000  # flags; the extended ones shifted
_INTENT = 0x2000_0000  # intent-to-add (`git add -N`), extended
_UNUSUAL = _ASSUMED | _SKIPPED | _STAGES | _INTENT


Wanted = Callable[[bytes, int], bool]  # an entry's name and flags: keep it?


def _index_entries(index: Path, hash_size: int, wanted: Wanted) -> list[Entry] | None:
    try:
        data = index.read_bytes()
    except OSError:
        return None
    if data[:4] != b"DIRC" or hash_size not in (20, 32) or len(data) < 12:
        return None
    version, count = int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big")
    if version not in (2, 3, 4):
        return None
    try:
        found, end = _entries(data, version, count, hash_size, wanted)
    except (IndexError, ValueError):
        return None
    return None if _split_or_sparse(data, end, hash_size) else found


def _entries(
    data: bytes, version: int, count: int, hash_size: int, wanted: Wanted
) -> tuple[list[Entry], int]:
    """Walk the entries (see git's gitformat-index): 40 bytes of stat data, the object id, 16
    bits of flags (assume-valid 0x8000, extended 0x4000, the stage 0x3000, name length), 16
    more if extended (skip-worktree 0x4000, intent-to-add 0x2000, kept here shifted by 16),
    then the name: padded with NULs to 8 bytes (v2, v3), or the length to drop from the
    previous name and a NUL-terminated suffix (v4). Each entry `wanted`, with its stat data."""
    out: list[Entry] = []
    at, flags_at, name = 12, 40 + hash_size, b""
    for _ in range(count):
        bits = int.from_bytes(data[at + flags_at : at + flags_at + 2], "big")
        start = at + flags_at + (4 if bits & 0x4000 else 2)
        if bits & 0x4000:
            bits |= int.from_bytes(data[at + flags_at + 2 : at + flags_at + 4], "big") << 16
        entry = at
        if version == 4:
            drop, start = _varint(data, start)
            end = data.index(b"\0", start)
            name = name[: len(name) - drop] + data[start:end]
            at = end + 1
        else:
            length = bits & 0xFFF
            end = data.index(b"\0", start) if length == 0xFFF else start + length
            name = data[start:end]
            at += (end - at + 8) & ~7
        if wanted(name, bits):
            fields = struct.unpack_from(">10I", data, entry)
            oid = data[entry + 40 : entry + 40 + hash_size].hex()
            out.append(Entry(os.fsdecode(name), fields[6], oid, bits, fields))
    return out, at


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """git's offset encoding (varint.c): 7 bits a byte, high bit set on all but the last."""
    byte = data[at]
    value = byte & 0x7F
    while byte & 0x80:
        at += 1
        byte = data[at]
        value = ((value + 1) << 7) | (byte & 0x7F)
    return value, at + 1


def _split_or_sparse(data: bytes, at: int, hash_size: int) -> bool:
    """Whether the extensions after the entries include a link to a shared index or sparse
    directory entries; a malformed extension list counts as such (cannot tell)."""
    stop = len(data) - hash_size
    while at + 8 <= stop:
        signature, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "big")
        if signature in (b"link", b"sdir"):
            return True
        at += 8 + size
    return at != stop
