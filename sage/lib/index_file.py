"""A git index file read in process (versions 2 to 4, SHA-1 or SHA-256), for what sage asks of
it often: the flags a worker may set (`flags`), what it holds for a few paths (`objects`), and
whether a few paths of a checkout are as it says (`clean`). None wherever it cannot tell: another
format, a split or sparse index (whose entries are not all in this file); then git answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sage.lib import files, git, objects


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


def unchanged(
    checkout: Path, commit: str, paths: Iterable[str], *, while_written: bool = False
) -> bool:
    """Whether each of `paths` is, in `checkout`'s index and files, as `commit` has it (see
    `clean`): by stat data, or by content where nothing converts it. False when it is not so
    or cannot be told from files, or while a git writes the index (unless `while_written`)."""
    found = git.settings(checkout)
    index = index_of(checkout)
    expected = objects.entries_at(checkout, commit, paths) if found and index else None
    if found is None or index is None or expected is None:
        return False
    by_content = not _converts(checkout, found, expected)
    filemode = found.flag("core.filemode", default=True)
    return clean(checkout, index, len(commit) // 2, expected, by_content=by_content,
                 filemode=filemode, while_written=while_written)  # fmt: skip


Side = tuple[str, str] | None  # a file's (mode, object id), or None: no file there


def status(checkout: Path, head: str) -> dict[str, tuple[Side, Side]] | None:
    """What `git status` would list for a checkout whose HEAD is commit `head`, when all it
    would list is staged: each path whose index entry differs from `head`'s file, with what
    `head` and the index hold there ((mode, id), None: no file). None when git must answer: anything
    else to list (a file changed since it was staged, an untracked or ignored file, a nested
    repository), or anything the files cannot tell exactly (see `clean`; submodules, an index
    over 1 MB). Every file on disk is looked at, so this is for a worker's slot, whose
    untracked setup (if any) sends it to git."""
    found = git.settings(checkout)
    index = index_of(checkout)
    if found is None or index is None or _unusual_checkout(found):
        return None
    hash_size = len(head) // 2
    entries = _wanted(index, hash_size, None, 1 << 20)
    tree = objects.files(checkout, head)
    if entries is None or tree is None or not _only_tracked(checkout, entries):
        return None
    if any(e.mode == 0o160000 or e.flags & _UNUSUAL for e in entries.values()):
        return None
    staged = {path: (f"{e.mode:06o}", e.oid) for path, e in entries.items()}
    by_content = not _converts(checkout, found, staged)
    filemode = found.flag("core.filemode", default=True)
    if not clean(checkout, index, hash_size, staged, by_content=by_content, filemode=filemode,
                 entries=entries):  # fmt: skip
        return None
    changed: dict[str, tuple[Side, Side]] = {
        path: (tree.get(path), entry) for path, entry in staged.items() if tree.get(path) != entry
    }
    changed.update((path, (tree[path], None)) for path in tree.keys() - staged.keys())
    return changed


def _only_tracked(checkout: Path, entries: Mapping[str, Entry]) -> bool:
    """Whether every file and link under `checkout` (but its own `.git`) is in the index, and
    no folder is a repository of its own: then nothing is untracked, nor ignored."""
    pending = [("", os.fspath(checkout))]
    while pending:
        prefix, folder = pending.pop()
        try:
            listing = os.scandir(folder)
        except OSError:
            return False
        with listing:
            for item in listing:
                if item.name == ".git":
                    if prefix:
                        return False  # a nested repository
                    continue
                if item.is_dir(follow_symlinks=False):
                    pending.append((f"{prefix}{item.name}/", item.path))
                elif not (item.is_file(follow_symlinks=False) or item.is_symlink()):
                    return False  # a socket, a pipe: git says nothing of these; ask it
                elif f"{prefix}{item.name}" not in entries:
                    return False
    return True


def index_of(checkout: Path) -> Path | None:
    """A checkout's index file, if it is where git keeps it (no GIT_INDEX_FILE)."""
    if "GIT_INDEX_FILE" in os.environ:
        return None
    admin = git.git_dir_of(checkout)
    return None if admin is None else admin / "index"


def tracked_count(checkout: Path) -> int | None:
    """How many files a checkout tracks, from its index file's header (12 bytes read); 0
    with no index yet, None when it cannot be told."""
    index = index_of(checkout)
    if index is None:
        return None
    try:
        with open(index, "rb") as handle:
            head = handle.read(12)
    except FileNotFoundError:
        return 0  # nothing added yet
    except OSError:
        return None
    return int.from_bytes(head[8:], "big") if len(head) == 12 and head[:4] == b"DIRC" else None


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
    candidates = [f"{git.shared_dir(checkout)}/info/attributes", os.path.expanduser(user)]
    folders = {p[: p.rfind("/") + 1] for p in paths}  # "" or "a/b/": each path's own folder
    folders |= {f[: i + 1] for f in folders for i, c in enumerate(f) if c == "/"} | {""}
    root = os.fspath(checkout)
    candidates += [f"{root}/{folder}.gitattributes" for folder in folders]
    return any(os.path.lexists(c) for c in candidates)


def clean(
    checkout: Path, index: Path, hash_size: int, expected: Mapping[str, tuple[str, str] | None],
    *, by_content: bool, filemode: bool = True, most: int = 1 << 20,
    entries: Mapping[str, Entry] | None = None, while_written: bool = False,
) -> bool:  # fmt: skip
    """Whether each path of `expected` is, in `checkout` and its `index`, as a clean checkout of
    a commit holding `expected` has it: a tracked path ((mode, id)) staged as that, with no
    flag or conflict, and unchanged on disk (its stat data as recorded and not racy, or, when
    `by_content` says no attribute or setting converts content, the same bytes); an untracked
    one (None) neither staged nor on disk, and no file where its folders go. False when it is
    not so or cannot be told (then git is asked). `entries`: the index's, already read.
    `while_written`: an answer for now even while a git writes a new index (it is renamed over
    the old one, which stays whole until then), for a question about the moment only."""
    try:
        written = os.stat(index)
    except OSError:
        return False
    if not while_written and os.path.lexists(index.with_name(index.name + ".lock")):
        return False  # a git is writing the index now
    folders = {"/".join(p.split("/")[:i]) for p in expected for i in range(1, p.count("/") + 1)}
    found = (
        entries if entries is not None else _wanted(index, hash_size, set(expected) | folders, most)
    )
    if found is None or any(f in found for f in folders):
        return False
    index_time = (written.st_mtime_ns // 10**9, written.st_mtime_ns % 10**9)
    root = os.fspath(checkout)
    for path, want in expected.items():
        entry, where = found.get(path), f"{root}/{path}"
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


def _same_content(where: str, seen: os.stat_result, entry: Entry, hash_size: int) -> bool:
    try:
        if stat.S_ISLNK(seen.st_mode):
            data = os.fsencode(os.readlink(where))
        else:
            data = files.read_bytes(where)
    except OSError:
        return False
    digest = hashlib.sha1 if hash_size == 20 else hashlib.sha256
    return digest(b"blob %d\0%s" % (len(data), data)).hexdigest() == entry.oid


def _wanted(
    index: Path, hash_size: int, paths: set[str] | None, most: int
) -> dict[str, Entry] | None:
    """The index's entries for `paths` (every entry: None), by name; None for an index over
    `most` bytes or one that cannot be read here."""
    try:
        if index.stat().st_size > most:
            return None
    except OSError:
        return None
    named = None if paths is None else {os.fsencode(path) for path in paths}
    found = _index_entries(index, hash_size, lambda name, bits: named is None or name in named)
    return None if found is None else {e.name: e for e in found}


_ASSUMED, _SKIPPED, _STAGES = 0x8000, 0x4000_0000, 0x3000  # flags; the extended ones shifted
_INTENT = 0x2000_0000  # intent-to-add (`git add -N`), extended
_UNUSUAL = _ASSUMED | _SKIPPED | _STAGES | _INTENT


Wanted = Callable[[bytes, int], bool]  # an entry's name and flags: keep it?


def _index_entries(index: Path, hash_size: int, wanted: Wanted) -> list[Entry] | None:
    try:
        data = files.read_bytes(index)
    except OSError:
        return None
    if data[:4] != b"DIRC" or hash_size not in (20, 32) or len(data) < 12:
        return None
    version, count = int.from_bytes(data[4:8], "big"), int.from_bytes(data[8:12], "big")
    if version not in (2, 3, 4):
        return None
    try:
        found, end = _entries(data, version, count, hash_size, wanted)
    except (IndexError, ValueError, struct.error):
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


def fast_forward(
    checkout: Path, old: str, new: str, paths: Iterable[str], *, in_place: bool = False
) -> bool:
    """Move a clean checkout (its index and files) from commit `old` to `new`, which differ in
    `paths`, as `git read-tree -m -u old new` does then, without a process: each path's file
    written (or removed) from the objects, then the index written under git's `index.lock`.
    The update must be plain: nothing converts content (attributes, autocrlf), no symlink
    setting, sparse checkout, case folding or submodule, an index of version 2 or 3 with no
    extension git requires, and every path in the index and on disk as `old` has it.
    False: nothing was changed (git does it). An error once files are written propagates:
    the checkout is then half way, as when git is killed there (the caller's journal).
    `in_place`: a file that stays a plain file is rewritten where it is, not removed and made
    anew as git does (for sage's own slots: making a file costs the filesystem far more than
    writing one; a program of the user's holding the old file is what git's way is for)."""
    found, index = git.settings(checkout), index_of(checkout)
    wanted = sorted(set(paths))
    if found is None or index is None or not wanted or _unusual_checkout(found):
        return False
    hash_size = len(old) // 2
    before = objects.entries_at(checkout, old, wanted)
    after = objects.entries_at(checkout, new, wanted)
    if before is None or after is None or _converts(checkout, found, wanted):
        return False
    if any(e and e[0] == "160000" for e in (*before.values(), *after.values())):
        return False
    if not clean(checkout, index, hash_size, before, by_content=True,
                 filemode=found.flag("core.filemode", default=True)):  # fmt: skip
        return False
    parsed = _parse_whole(index, hash_size)
    contents = _contents(checkout, after, _MOST_WRITTEN)
    if parsed is None or contents is None:
        return False
    lock = index.with_name(index.name + ".lock")
    try:
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError:
        return False
    try:
        try:
            version, entries, kept, written = parsed
            changed = _write_files(checkout, before, after, contents, in_place=in_place)
            for path, entry in changed.items():
                if entry is None:
                    entries.pop(os.fsencode(path), None)
                else:
                    entries[os.fsencode(path)] = entry
            fresh = {os.fsencode(path) for path in changed}
            files.write_all(fd, _serialized(version, entries, kept, hash_size))
        finally:
            os.close(fd)
        if any(name not in fresh and e[0][2:4] >= written for name, e in entries.items()):
            # an entry racily clean in the old file stays so: git reads it again, not trusting
            # stat data from the instant that file was written (git smudges such entries)
            os.utime(lock, ns=(time.time_ns(), written[0] * 10**9 + written[1]))
        os.replace(lock, index)
    except BaseException:
        lock.unlink(missing_ok=True)
        raise
    return True


_MOST_WRITTEN = 8 << 20  # bytes of files an update writes in process; more: git does it


def _unusual_checkout(found: git.Settings) -> bool:
    return (
        not found.flag("core.symlinks", default=True)
        or found.flag("core.ignorecase")
        or found.flag("core.sparsecheckout")
        or found.flag("core.protectntfs")
        or bool(found.get("core.fsmonitor"))
    )


_Raw = tuple[tuple[int, ...], bytes, int, int | None]  # stat data, object id, flags, extended


def _parse_whole(
    index: Path, hash_size: int
) -> tuple[int, dict[bytes, _Raw], list[bytes], tuple[int, int]] | None:
    """Every entry of a version 2 or 3 index (by name, stage 0 only), the extensions kept (the
    resolve-undo record; the optional caches are dropped, git makes them again), the file's
    mtime; None for anything else (version 4, a conflict's stages, an extension git
    requires, a checksum that does not match)."""
    try:
        data = files.read_bytes(index)
        seen = os.stat(index)
    except OSError:
        return None
    digest = hashlib.sha1 if hash_size == 20 else hashlib.sha256
    if data[:4] != b"DIRC" or len(data) < 12 + hash_size:
        return None
    if digest(data[:-hash_size]).digest() != data[-hash_size:]:
        return None
    version, count = struct.unpack_from(">II", data, 4)
    if version not in (2, 3):
        return None
    try:
        found, at = _entries(data, version, count, hash_size, lambda name, bits: True)
    except (IndexError, ValueError, struct.error):
        return None
    entries: dict[bytes, _Raw] = {}
    for entry in found:  # as the file has them: 16 bits of flags, 16 more if extended
        if entry.flags & _STAGES:
            return None
        extended = entry.flags >> 16 if entry.flags & 0x4000 else None
        raw = (entry.stat, bytes.fromhex(entry.oid), entry.flags & 0xFFFF, extended)
        entries[os.fsencode(entry.name)] = raw
    kept: list[bytes] = []
    stop = len(data) - hash_size
    while at + 8 <= stop:
        signature, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "big")
        if not b"A" <= signature[:1] <= b"Z":
            return None  # git must understand it: leave the index to git
        if signature == b"REUC":
            kept.append(data[at : at + 8 + size])
        at += 8 + size
    if at != stop:
        return None
    return version, entries, kept, divmod(seen.st_mtime_ns, 10**9)


def _contents(
    checkout: Path, after: Mapping[str, tuple[str, str] | None], most: int
) -> dict[str, bytes] | None:
    """The blobs to write, read before anything changes; None if one cannot be read in process
    or they come to more than `most` bytes (git streams large files better)."""
    read, out, total = objects.reader(checkout), {}, 0
    for path, entry in after.items():
        if entry is None:
            continue
        got = read(entry[1])
        if got is None or got[0] != "blob":
            return None
        total += len(got[1])
        if total > most:
            return None
        out[path] = got[1]
    return out


def _write_files(
    checkout: Path, before: Mapping[str, tuple[str, str] | None],
    after: Mapping[str, tuple[str, str] | None], contents: Mapping[str, bytes], *,
    in_place: bool = False,
) -> dict[str, _Raw | None]:  # fmt: skip
    """Remove what `after` drops, then write what it has; the index entry of each path."""
    out: dict[str, _Raw | None] = {}
    for path in sorted(before, reverse=True):
        if before[path] is not None and after[path] is None:
            os.unlink(checkout / path)
            _prune_folders(checkout, path)
            out[path] = None
    for path, content in contents.items():
        mode, oid = after[path] or ("", "")
        target = checkout / path
        if not (in_place and _rewritten(target, content, mode)):
            _put(target, content, mode)
        fields = _stat_fields(os.lstat(target), int(mode, 8))
        out[path] = (fields, bytes.fromhex(oid), min(len(os.fsencode(path)), 0xFFF), None)
    return out


def _put(target: Path, content: bytes, mode: str) -> None:
    """Write a file as git's checkout does: the old one removed, the new one created (a write
    cut short leaves the start of it, which the checkout journal knows as sage's)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
    if mode == "120000":
        files.in_folder(target.parent, lambda: os.symlink(os.fsdecode(content), target))
        return
    flags, made = os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o777 if mode == "100755" else 0o666
    fd = files.in_folder(target.parent, lambda: os.open(target, flags, made))
    try:
        files.write_all(fd, content)
    finally:
        os.close(fd)


def _rewritten(target: Path, content: bytes, mode: str) -> bool:
    """The new content written into the file already at `target`, when it is a plain file with
    one name and stays one, executable or not as before; False: nothing done. Written over
    the old content, then its rest cut off (as `files.write_over`): a file emptied first and
    written again is one ext4 allocates and starts writing out at its close (`auto_da_alloc`,
    its guard for programs that rewrite a file in place), which made a slot's switch of nine
    files 2.0 ms where this takes 0.7."""
    if mode not in ("100644", "100755"):
        return False
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        seen = os.fstat(fd)
        if (
            not stat.S_ISREG(seen.st_mode)
            or seen.st_nlink != 1
            or bool(seen.st_mode & 0o100) != (mode == "100755")
        ):
            return False
        files.write_all(fd, content)
        if seen.st_size > len(content):
            os.ftruncate(fd, len(content))
    finally:
        os.close(fd)
    return True


def _prune_folders(checkout: Path, path: str) -> None:
    """Remove the folders a removed file leaves empty, as git does."""
    parent = (checkout / path).parent
    while parent != checkout:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


def _stat_fields(seen: os.stat_result, mode: int) -> tuple[int, ...]:
    ctime, mtime, low = divmod(seen.st_ctime_ns, 10**9), divmod(seen.st_mtime_ns, 10**9), 2**32 - 1
    return (*ctime, *mtime, seen.st_dev & low, seen.st_ino & low, mode, seen.st_uid & low,
            seen.st_gid & low, seen.st_size & low)  # fmt: skip


def _serialized(
    version: int, entries: Mapping[bytes, _Raw], kept: Sequence[bytes], hash_size: int
) -> bytes:
    """The index file: header, entries in git's order, the kept extensions, the checksum."""
    out = [b"DIRC", struct.pack(">II", version, len(entries))]
    for name in sorted(entries):
        fields, oid, bits, extended = entries[name]
        body = struct.pack(">10I", *fields) + oid + bits.to_bytes(2, "big")
        if extended is not None:
            body += extended.to_bytes(2, "big")
        body += name
        out.append(body + b"\0" * (8 - len(body) % 8))
    out += kept
    data = b"".join(out)
    digest = hashlib.sha1 if hash_size == 20 else hashlib.sha256
    return data + digest(data).digest()
