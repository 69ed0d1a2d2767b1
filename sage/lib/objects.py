"""Git objects without a process per object: a tree with one file changed, for the landing.

`edit_file` reads the tree and the trees down to the file in one `git cat-file --batch` and
writes the changed blob and trees as loose objects, as git itself writes them (zlib, a
temporary file renamed into place; no fsync, like git's default for loose objects). The ref
that makes them reachable is moved later by git, under its own rules.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from sage.lib import git, proc

Edit = Callable[[bytes], bytes | None]  # the file's new content, or None to leave it


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


def read(repo: Path, specs: Sequence[str]) -> list[tuple[str, str, bytes] | None]:
    """(id, type, content) of each object named (`rev`, `rev:path`), None where missing."""
    done = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        input="".join(f"{spec}\n" for spec in specs).encode(),
        capture_output=True,
        env=proc.clean_env(),
        check=False,
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
    """Loose objects read and written in process; anything packed is asked of git."""

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.objects = _objects_dir(str(repo))
        self.hash = _hash_name(str(repo))
        self.size = hashlib.new(self.hash).digest_size

    def walk(self, start: str, parts: Sequence[str]) -> list[bytes] | None:
        """The contents of the root tree, each tree down the path, and the file at its end;
        None if any is missing or of the wrong type."""
        got = self.loose(start)
        if got is not None and got[0] == "commit":  # its first line: "tree <id>"
            got = self.loose(got[1][5 : got[1].index(b"\n")].decode())
        found: list[bytes] = []
        kinds: list[str] = []
        for name in (None, *parts):
            if name is not None:
                oid = _entry(found[-1], name, self.size)
                if oid is None:
                    return None
                got = self.loose(oid)
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

    def loose(self, oid: str) -> tuple[str, bytes] | None:
        """(type, content) of a loose object, None if it is not loose (packed, or absent)."""
        return git.loose_object(self.repo, oid)

    def write(self, kind: str, body: bytes) -> str:
        data = b"%s %d\0%s" % (kind.encode(), len(body), body)
        oid = hashlib.new(self.hash, data).hexdigest()
        folder = self.objects / oid[:2]
        target = folder / oid[2:]
        if target.exists():
            return oid
        folder.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="tmp_obj_", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(zlib.compress(data))
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return oid


@functools.lru_cache(maxsize=16)
def _objects_dir(repo: str) -> Path:
    return git.common_dir(Path(repo)) / "objects"


@functools.lru_cache(maxsize=16)
def _hash_name(repo: str) -> str:
    done = git.run(Path(repo), "rev-parse", "--show-object-format")
    name = done.stdout.strip() if done.returncode == 0 else "sha1"
    return name if name in ("sha1", "sha256") else "sha1"
