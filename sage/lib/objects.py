"""Git objects without a process per object, for the landing: a tree with one file changed
(`edit_file`), the merge of two sides that changed different paths (`merged_tree`), a commit
(`commit`).

Objects are read from their loose files, else from the packs (gitdb, which comes with
GitPython), else from one `git cat-file --batch`; they are written as loose objects, as git
itself writes them (zlib, a temporary file renamed into place; no fsync, like git's default for
loose objects). Whatever cannot be done exactly so (replace refs, a signed commit, a merge git
must think about) returns None, and the caller asks git.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sage.lib import git, proc
from sage.lib.files import replace_with

Edit = Callable[[bytes], bytes | None]  # the file's new content, or None to leave it
TREE_MODE = b"40000"
Entry = tuple[bytes, bytes]  # a tree entry's mode and raw id


def edit_file(repo: Path, tree: str, path: str, edit: Edit) -> str | None:
    """The id of `tree` (a tree's or a commit's id) with the file at `path` replaced by
    `edit(content)`; None when the file is not there (or not a regular file) or `edit` leaves
    it as it is."""
    store = _Store(repo)
    parts = path.strip("/").split("/")
    found = store.walk(tree, parts)
    if found is None:
        return None
    content = edit(found[-1])
    if content is None or content == found[-1]:
        return None
    new = store.write("blob", content)
    for level in range(len(parts) - 1, -1, -1):
        new = store.write("tree", _replace_entry(found[level], parts[level], new, store.size))
    return new


def merged_tree(repo: Path, base: str, ours: str, theirs: str) -> str | None:
    """The tree of merging commits `ours` and `theirs`, whose merge base is `base`, when every
    merge git could do agrees on it: no path both sides changed differently, nothing deleted
    where the other side changed something (git would look for renames), no file turned into a
    folder or back. Trees only one side changed are taken whole. None: git must merge."""
    store = _Store(repo)
    roots = [store.tree_of(sha) for sha in (base, ours, theirs)]
    if None in roots:
        return None
    b, o, t = (bytes.fromhex(str(root)) for root in roots)
    merged = _merge(store, b, o, t)
    if merged is None:
        return None
    return merged.hex() if merged else store.write("tree", b"")


def edited_tree(
    repo: Path, start: str, changes: Mapping[str, tuple[str, str] | None]
) -> str | None:
    """The tree of commit (or tree) `start` with each path in `changes` set to (mode, id), or
    removed where None; folders left empty go. None if an object cannot be read in process or
    a change runs through a file."""
    store = _Store(repo)
    root = store.tree_of(start)
    if root is None:
        return None
    split = {tuple(path.split("/")): change for path, change in changes.items()}
    edited = _edit(store, bytes.fromhex(root), split)
    if edited is None:
        return None
    return edited.hex() if edited else store.write("tree", b"")


def _edit(
    store: _Store, tree: bytes | None, changes: Mapping[tuple[str, ...], tuple[str, str] | None]
) -> bytes | None:
    """A tree with `changes` (paths split at "/") made: its raw id, b"" when it ends up empty,
    or None when that cannot be done here."""
    entries = store.entries(tree) if tree is not None else {}
    if entries is None:
        return None
    here: dict[bytes, Entry | None] = {}
    below: dict[bytes, dict[tuple[str, ...], tuple[str, str] | None]] = {}
    for parts, change in changes.items():
        name = parts[0].encode("utf-8", errors="surrogateescape")
        if len(parts) == 1:
            here[name] = None if change is None else (change[0].lstrip("0").encode() or b"0",
                                                      bytes.fromhex(change[1]))  # fmt: skip
        else:
            below.setdefault(name, {})[parts[1:]] = change
    out = dict(entries)
    for name, sub in below.items():
        if name in here:  # the name itself changes too: a file became a folder, or back
            if here[name] is not None:  # a folder became this file: only its files may go
                if any(change is not None for change in sub.values()):
                    return None
                continue
            current = None  # a file became a folder: the folder is made anew
        else:
            current = out.get(name)
        if current is not None and current[0] != TREE_MODE:
            return None  # a change below a file that stays
        edited = _edit(store, current[1] if current else None, sub)
        if edited is None:
            return None
        if edited:
            out[name] = (TREE_MODE, edited)
        else:
            out.pop(name, None)
    for name, entry in here.items():
        if entry is not None:
            out[name] = entry
        elif name not in below:
            out.pop(name, None)
    if not out:
        return b""
    return bytes.fromhex(store.write("tree", _tree_body(out)))


def entries_at(
    repo: Path, commit: str, paths: Iterable[str]
) -> dict[str, tuple[str, str] | None] | None:
    """What commit (or tree) `commit` holds at each path: (mode, id) as `git ls-tree` shows
    them, None where nothing (or a folder) is; None when an object cannot be read here."""
    store = _Store(repo)
    root = store.tree_of(commit)
    found = store.entries(bytes.fromhex(root)) if root else None
    if found is None:
        return None
    trees: dict[str, Mapping[bytes, Entry] | None] = {"": found}
    out: dict[str, tuple[str, str] | None] = {}
    try:
        for path in paths:
            folder, _, name = path.rpartition("/")
            tree = _tree_at(store, trees, folder)
            entry = tree.get(name.encode("utf-8", errors="surrogateescape")) if tree else None
            out[path] = None if entry is None or entry[0] == TREE_MODE else (
                entry[0].decode().rjust(6, "0"), entry[1].hex())  # fmt: skip
    except _Unreadable:
        return None
    return out


def files(repo: Path, commit: str) -> dict[str, tuple[str, str]] | None:
    """Every file commit (or tree) `commit` holds, as `git ls-tree -r` lists them: path ->
    (mode, id); None when an object cannot be read here."""
    store = _Store(repo)
    root = store.tree_of(commit)
    if root is None:
        return None
    out: dict[str, tuple[str, str]] = {}
    return out if _list(store, bytes.fromhex(root), "", out) else None


def _list(store: _Store, tree: bytes, prefix: str, out: dict[str, tuple[str, str]]) -> bool:
    entries = store.entries(tree)
    if entries is None:
        return False
    for name, (mode, oid) in entries.items():
        path = prefix + name.decode("utf-8", errors="surrogateescape")
        if mode == TREE_MODE:
            if not _list(store, oid, path + "/", out):
                return False
        else:
            out[path] = (mode.decode().rjust(6, "0"), oid.hex())
    return True


class _Unreadable(Exception):
    """An object that cannot be read in process."""


def _tree_at(
    store: _Store, trees: dict[str, Mapping[bytes, Entry] | None], folder: str
) -> Mapping[bytes, Entry] | None:
    """The entries of the tree at `folder`, None when there is no such folder."""
    if folder in trees:
        return trees[folder]
    parent, _, name = folder.rpartition("/")
    above = _tree_at(store, trees, parent)
    entry = above.get(name.encode("utf-8", errors="surrogateescape")) if above else None
    found = None
    if entry is not None and entry[0] == TREE_MODE:
        found = store.entries(entry[1])
        if found is None:
            raise _Unreadable(folder)
    trees[folder] = found
    return found


def reader(repo: Path) -> Callable[[str], tuple[str, bytes] | None]:
    """Read objects of `repo` in process: (type, content) by id, None where it cannot."""
    return _Store(repo).get


def tree_id(repo: Path, commit: str) -> str | None:
    """The tree a commit names, read in process; None if it cannot be."""
    return _Store(repo).tree_of(commit)


def changed_paths(repo: Path, old: str, new: str) -> frozenset[str] | None:
    """The files that differ between two commits (or trees), as `git diff-tree -r --name-only
    --no-renames` lists them; None when an object cannot be read in process. Kept by the ids
    (which name their content): a landing's dry run and its checkout update ask the same."""
    return _changed_paths(str(repo), old, new)


@functools.lru_cache(maxsize=64)
def _changed_paths(repo: str, old: str, new: str) -> frozenset[str] | None:
    store = _Store(Path(repo))
    trees = [store.tree_of(sha) for sha in (old, new)]
    if None in trees:
        return None
    found: set[str] = set()
    one, other = (bytes.fromhex(str(tree)) for tree in trees)
    return frozenset(found) if _diff(store, one, other, "", found) else None


def _diff(
    store: _Store, old: bytes | None, new: bytes | None, prefix: str, found: set[str]
) -> bool:
    """Add to `found` the files under two trees (either may be None: absent) that differ."""
    if old == new:
        return True
    trees = [store.entries(oid) if oid is not None else {} for oid in (old, new)]
    if None in trees:
        return False
    a, b = (tree or {} for tree in trees)
    for name in a.keys() | b.keys():
        ea, eb = a.get(name), b.get(name)
        if ea == eb:
            continue
        path = prefix + name.decode("utf-8", errors="surrogateescape")
        sub_a = ea[1] if ea and ea[0] == TREE_MODE else None
        sub_b = eb[1] if eb and eb[0] == TREE_MODE else None
        if (ea and sub_a is None) or (eb and sub_b is None):
            found.add(path)  # a file on either side (that is not the same file)
        if (sub_a or sub_b) and not _diff(store, sub_a, sub_b, path + "/", found):
            return False
    return True


def _merge(store: _Store, base: bytes, ours: bytes, theirs: bytes) -> bytes | None:
    """The merged tree's raw id, b"" when the merge leaves the folder empty (git drops it),
    None when git must merge."""
    if base == theirs:
        return ours
    if base == ours:
        return theirs
    if ours == theirs:  # the same change on both sides: if it drops a file, either side may
        return None if _drops(store, base, ours) else ours  # have moved it (git looks)
    trees = [store.entries(oid) for oid in (base, ours, theirs)]
    if None in trees:
        return None
    tb, to, tt = (tree or {} for tree in trees)
    out: dict[bytes, Entry] = {}
    for name in tb.keys() | to.keys() | tt.keys():
        eb, eo, et = tb.get(name), to.get(name), tt.get(name)
        entry: Entry | None
        if eb and eo and et and eb[0] == eo[0] == et[0] == TREE_MODE and eb not in (eo, et):
            sub = _merge(store, eb[1], eo[1], et[1])  # a folder both sides changed
            if sub is None:
                return None
            entry = (TREE_MODE, sub) if sub else None
        elif eo == et:
            if eo is None:  # deleted on both sides: maybe renamed twice, differently
                return None
            entry = eo
        elif eb == eo:
            entry = et
        elif eb == et:
            entry = eo
        else:  # both changed it differently, or one deleted what the other changed
            return None
        if entry is not None and eb is not None and (entry[0] == TREE_MODE) != (eb[0] == TREE_MODE):
            return None  # a file became a folder, or a folder a file
        if entry is not None:
            out[name] = entry
    return bytes.fromhex(store.write("tree", _tree_body(out))) if out else b""


def _drops(store: _Store, old: bytes, new: bytes) -> bool:
    """Whether a file under tree `old` is not under tree `new` (True when a tree cannot be
    read: git then decides)."""
    if old == new:
        return False
    a, b = store.entries(old), store.entries(new)
    if a is None or b is None:
        return True
    for name, (mode, oid) in a.items():
        other = b.get(name)
        if other is None or (other[0] == TREE_MODE) != (mode == TREE_MODE):
            return True
        if mode == TREE_MODE and _drops(store, oid, other[1]):
            return True
    return False


def _tree_body(entries: dict[bytes, Entry]) -> bytes:
    """A tree's raw content, in git's order (a folder sorts as if its name ended in "/")."""
    order = sorted(entries, key=lambda n: n + b"/" if entries[n][0] == TREE_MODE else n)
    return b"".join(b"%s %s\0%s" % (entries[n][0], n, entries[n][1]) for n in order)


def commit(
    repo: Path, tree: str, parents: Sequence[str], message: str,
    *, env: Mapping[str, str] | None = None, when: tuple[int, int] | None = None,
) -> str | None:  # fmt: skip
    """A commit written as `git commit-tree` writes it (the message as given, the author and
    committer git would use, now), or None when git must write it: the commit is to be
    signed (`commit.gpgSign`), the messages are in another encoding (`i18n.commitEncoding`), a
    date comes from the environment, or `tree` is a commit not stored loose. `env`: the
    identity variables sage adds for git (`git.identity_env`). `when`: (seconds, UTC offset in
    seconds), for tests."""
    settings = git.settings(repo)
    variables = collections.ChainMap(dict(env or {}), os.environ)  # not a copy of os.environ
    if (
        settings is None
        or settings.flag("commit.gpgsign")
        or settings.get("i18n.commitencoding", "utf-8").lower().replace("-", "") != "utf8"
        or "GIT_AUTHOR_DATE" in variables
        or "GIT_COMMITTER_DATE" in variables
    ):
        return None
    store = _Store(repo)
    root = store.tree_of(tree.removesuffix("^{tree}"))
    if root is None:
        return None
    stamp = git.stamp(when)
    author = settings.ident("AUTHOR", variables)
    committer = settings.ident("COMMITTER", variables)
    body = f"tree {root}\n" + "".join(f"parent {p}\n" for p in parents)
    body += f"author {author} {stamp}\ncommitter {committer} {stamp}\n\n{message}"
    return store.write("commit", body.encode("utf-8"))


def read(repo: Path, specs: Sequence[str]) -> list[tuple[str, str, bytes] | None]:
    """(id, type, content) of each object named (`rev`, `rev:path`), None where missing."""
    done = proc.run_bytes(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        input="".join(f"{spec}\n" for spec in specs).encode(),
    )
    out, at = done.stdout, 0
    found: list[tuple[str, str, bytes] | None] = []
    for _ in specs:
        end = out.find(b"\n", at)
        if end < 0:
            found.append(None)
            continue
        header = out[at:end].split()
        at = end + 1
        if len(header) != 3:  # "<spec> missing" / "ambiguous"
            found.append(None)
            continue
        size = int(header[2])
        found.append((header[0].decode(), header[1].decode(), out[at : at + size]))
        at += size + 1
    return found


def _replace_entry(tree: bytes, name: str, oid: str, size: int) -> bytes:
    """A tree's raw content with entry `name` pointing at `oid` (same mode, same place)."""
    at = _find(tree, name, size)
    if at is None:
        raise ValueError(f"{name} is not in the tree")
    return tree[:at] + bytes.fromhex(oid) + tree[at + size :]


def _entry(tree: bytes, name: str, size: int) -> str | None:
    """The id a tree's entry `name` points at, or None."""
    at = _find(tree, name, size)
    return None if at is None else tree[at : at + size].hex()


def _find(tree: bytes, name: str, size: int) -> int | None:
    """Where the id of entry `name` starts in a tree's raw content ("<mode> <name>\\0<id>"...)."""
    wanted, at = name.encode(), 0
    while at < len(tree):
        space = tree.index(b" ", at)
        nul = tree.index(b"\0", space)
        if tree[space + 1 : nul] == wanted:
            return nul + 1
        at = nul + 1 + size
    return None


class _Store:
    """Objects read in process (loose, else packed) and written loose; None where it cannot
    be told so (replace refs or grafts make git see other objects, a promisor's missing one)."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.objects = _objects_dir(str(repo))
        self.hash = _hash_name(str(repo))
        self.size = hashlib.new(self.hash).digest_size
        self.plain = git.objects_dir(repo) is not None  # nothing replaced or grafted
        self.seen = git.per_step("seen", self.objects, lambda: _seen_in(self.objects))

    def walk(self, start: str, parts: Sequence[str]) -> list[bytes] | None:
        """The contents of the root tree, each tree down the path, and the file at its end;
        None if any is missing or of the wrong type."""
        got = self.get(start)
        if got is not None and got[0] == "commit":  # its first line: "tree <id>"
            got = self.get(got[1][5 : got[1].index(b"\n")].decode())
        found: list[bytes] = []
        kinds: list[str] = []
        for name in (None, *parts):
            if name is not None:
                oid = _entry(found[-1], name, self.size)
                if oid is None:
                    return None
                got = self.get(oid)
            if got is None:
                return self._asked(start, parts)
            kinds.append(got[0])
            found.append(got[1])
        return found if kinds == ["tree"] * len(parts) + ["blob"] else None

    def _asked(self, start: str, parts: Sequence[str]) -> list[bytes] | None:
        root = f"{start}^{{tree}}"
        specs = [root, *(f"{root}:{'/'.join(parts[:i])}" for i in range(1, len(parts) + 1))]
        objects = read(self.repo, specs)
        kinds = [obj[1] if obj else None for obj in objects]
        if kinds != ["tree"] * len(parts) + ["blob"]:
            return None
        return [obj[2] for obj in objects if obj]

    def get(self, oid: str) -> tuple[str, bytes] | None:
        """(type, content) of an object, from its loose file, else from the packs."""
        if not self.plain:
            return None
        found = self.seen.get(oid)
        if found is None:
            found = git.read_loose(self.objects, oid)
            if found is None:
                found = _packed(str(self.objects), _packs_stamp(self.objects), oid)
            if found is not None:
                self.seen.keep(oid, found)
        return found

    def tree_of(self, oid: str) -> str | None:
        """The tree a commit (or a tree) names."""
        got = self.get(oid)
        if got is None or got[0] not in ("commit", "tree"):
            return None
        return oid if got[0] == "tree" else got[1][5 : got[1].index(b"\n")].decode()

    def entries(self, oid: bytes) -> Mapping[bytes, Entry] | None:
        """A tree's entries by name (kept: not to be changed)."""
        out = self.seen.trees.get(oid)
        if out is not None:
            return out
        got = self.get(oid.hex())
        if got is None or got[0] != "tree":
            return None
        body, at, out = got[1], 0, {}
        while at < len(body):
            space = body.index(b" ", at)
            nul = body.index(b"\0", space)
            out[body[space + 1 : nul]] = (body[at:space], body[nul + 1 : nul + 1 + self.size])
            at = nul + 1 + self.size
        if oid.hex() in self.seen:
            self.seen.trees[oid] = out
        return out

    def write(self, kind: str, body: bytes) -> str:
        data = b"%s %d\0%s" % (kind.encode(), len(body), body)
        oid = hashlib.new(self.hash, data).hexdigest()
        if oid in self.seen:
            return oid
        folder = f"{self.objects}/{oid[:2]}"
        target = f"{folder}/{oid[2:]}"
        if os.path.exists(target):
            self.seen.keep(oid, (kind, body))
            return oid
        # read-only, as git makes them (its umask applies)
        replace_with(target, zlib.compress(data), f"{folder}/tmp_obj_", mode=0o444)
        self.seen.keep(oid, (kind, body))
        return oid


class _Seen:
    """The objects of one object folder already read or written, by id: an id names its
    content, so nothing kept goes stale. Bounded in bytes, the oldest dropped first; trees
    are also kept parsed. Only what is in the folder (or its packs) is ever kept, and the
    folder is known by its inode, so a repository made anew at the same path starts empty."""

    MOST, LARGEST = 32 << 20, 1 << 20  # bytes kept in all; bytes of the largest object kept

    def __init__(self) -> None:
        self.objects: dict[str, tuple[str, bytes]] = {}
        self.trees: dict[bytes, dict[bytes, Entry]] = {}
        self.size = 0
        self.lock = threading.Lock()

    def __contains__(self, oid: str) -> bool:
        return oid in self.objects

    def get(self, oid: str) -> tuple[str, bytes] | None:
        return self.objects.get(oid)

    def keep(self, oid: str, found: tuple[str, bytes]) -> None:
        if len(found[1]) > self.LARGEST:
            return
        with self.lock:
            if oid in self.objects:
                return
            self.objects[oid] = found
            self.size += len(found[1])
            while self.size > self.MOST:
                dropped, (_, body) = next(iter(self.objects.items()))
                del self.objects[dropped]
                self.trees.pop(bytes.fromhex(dropped), None)
                self.size -= len(body)


def _seen_in(objects: Path) -> _Seen:
    try:
        found = objects.stat()
    except OSError:
        return _Seen()  # nothing to read anyway: kept for this use only
    key = (str(objects), found.st_dev, found.st_ino)
    with _SEEN_LOCK:
        seen = _SEEN.get(key)
        if seen is None:
            if len(_SEEN) >= 8:
                _SEEN.pop(next(iter(_SEEN)))
            seen = _SEEN[key] = _Seen()
        return seen


_SEEN: dict[tuple[str, int, int], _Seen] = {}
_SEEN_LOCK = threading.Lock()


def _packs_stamp(objects: Path) -> tuple[int, int]:
    """Changes when a pack is added or removed (a gc, a fetch): the pack reader is made anew."""
    try:
        found = (objects / "pack").stat()
    except OSError:
        return (0, 0)
    return found.st_mtime_ns, found.st_ino


def _packed(objects: str, stamp: tuple[int, int], oid: str) -> tuple[str, bytes] | None:
    with _READING:  # gitdb's caches are not made for threads
        try:
            info = _pack_reader(objects, stamp).stream(bytes.fromhex(oid))
            return info.type.decode("ascii"), info.read()
        except Exception:  # not there, or a pack gitdb cannot read: git answers
            return None


_READING = threading.Lock()


@functools.lru_cache(maxsize=4)
def _pack_reader(objects: str, stamp: tuple[int, int]) -> Any:
    from gitdb.db import GitDB  # type: ignore[import-untyped]  # comes with GitPython

    return GitDB(objects)


@functools.lru_cache(maxsize=64)
def _objects_dir(repo: str) -> Path:
    return git.shared_dir(Path(repo)) / "objects"  # (`shared_dir` is kept per path too)


@functools.lru_cache(maxsize=64)
def _hash_name(repo: str) -> str:
    """The repository's object format (it never changes once the repository exists)."""
    found = git.settings(Path(repo))
    if found is not None:
        name = found.get("extensions.objectformat", "sha1").lower()
    else:
        done = git.run(Path(repo), "rev-parse", "--show-object-format")
        name = done.stdout.strip() if done.returncode == 0 else "sha1"
    return name if name in ("sha1", "sha256") else "sha1"
