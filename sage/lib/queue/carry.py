"""A user's edit in the way of a checkout update: saved where it cannot be lost, merged back in.

Their version of the path (the file, and their staged version when it is neither the old nor
the new one) is saved first: as a commit on `refs/sage/carried/<branch>` (each save on top of
the one before, so none is lost) and in the update's record. Then the update sets the path to
the new version, and the edit is merged back in three ways, `merge(mine, base, theirs)`: the
user's content, the old version's, the new version's (b"" for a side that has no file). The
path's own merge does it when one is registered (`merges`, by repository-relative path: the
ticket index has a JSON-aware one), else `merge_text` (`git merge-file`). A clean merge keeps
both edits; a conflict leaves what the merge returned in the file (text: both sides between
conflict markers) and a warning that names the saved copy.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sage.lib import git

CARRIED = "refs/sage/carried/"
LABELS = ("your uncommitted version", "before the landing", "landed")


@dataclass(frozen=True, slots=True)
class Merged:
    """What a merge made of a carried-over path; `clean` False: a conflict left in it."""

    content: bytes
    clean: bool = True


Merge = Callable[[bytes, bytes, bytes], Merged]
"""`merge(mine, base, theirs)`: the user's content, the old version's, the new version's."""


def merge_text(mine: bytes, base: bytes, theirs: bytes) -> Merged:
    """`git merge-file`; binary contents, which it cannot merge, keep `mine` (a conflict)."""
    content, conflicts = git.merge_file(mine, base, theirs, labels=LABELS)
    return Merged(content, clean=conflicts == 0)


@dataclass(frozen=True, slots=True, kw_only=True)
class InTheWay:
    """A path the update must write where the user's version is: its blobs in the old and
    new versions (None: no file there), and what the user has."""

    path: str
    old: str | None
    new: str | None
    mode: str  # the new version's (the old one's when the update deletes the path)
    mine: bytes | None  # their file's content; None: they deleted it
    staged: str | None  # their index entry, when it is neither the old nor the new blob


@dataclass(frozen=True, slots=True, kw_only=True)
class Carried:
    """A user's version saved before the update touched it, and what the path becomes."""

    path: str
    saved: str  # the commit that holds their file at `path` (its parent: a staged version)
    mine: str | None  # their file as a blob (None: deleted)
    staged: str | None = None
    merged: str | None = None  # what the file becomes (None: stays deleted)
    merged_staged: str | None = None  # what the index entry becomes (None: the new version)
    clean: bool = True
    own_merge: bool = False  # the path's registered merge did it


def over(
    checkout: Path, ref: str, paths: Sequence[InTheWay], merges: Mapping[str, Merge]
) -> list[Carried]:
    """Save the user's versions of `paths` and merge each with the new version (nothing in the
    checkout is touched yet: the caller records the result, then writes it)."""
    mine = {p.path: git.write_blob(checkout, p.mine, path=p.path)
            for p in paths if p.mine is not None}  # fmt: skip
    staged = {p.path: p.staged for p in paths if p.staged and p.staged != mine.get(p.path)}
    saved = _save(checkout, ref, staged, "staged") if staged else None
    saved = _save(checkout, ref, mine, "uncommitted", parent=saved)
    return [_merged(checkout, p, saved, mine.get(p.path), merges) for p in paths]


def _merged(
    checkout: Path, p: InTheWay, saved: str, mine: str | None, merges: Mapping[str, Merge]
) -> Carried:
    own = merges.get(p.path)
    merged, clean = None, True
    if p.mine is not None:
        done = _merge(own or merge_text, p.mine, *_sides(checkout, p, p.path))
        merged, clean = git.write_blob(checkout, done.content, path=p.path), done.clean
    merged_staged = None
    if p.staged:
        ours = git.read_blob(checkout, p.staged)
        again = _merge(own or merge_text, ours, *_sides(checkout, p, None))
        merged_staged = git.write_blob(checkout, again.content) if again.clean else None
        clean = clean and again.clean
    return Carried(path=p.path, saved=saved, mine=mine, staged=p.staged, merged=merged,
                   merged_staged=merged_staged, clean=clean, own_merge=own is not None)  # fmt: skip


def _sides(checkout: Path, p: InTheWay, path: str | None) -> tuple[bytes, bytes]:
    """The old and new versions' contents, as written in the checkout (`path`) or as stored."""
    base = git.read_blob(checkout, p.old, path=path) if p.old else b""
    theirs = git.read_blob(checkout, p.new, path=path) if p.new else b""
    return base, theirs


def _merge(merge: Merge, mine: bytes, base: bytes, theirs: bytes) -> Merged:
    try:
        return merge(mine, base, theirs)
    except Exception:  # a registered merge that fails must not lose the edit: merge as text
        return Merged(merge_text(mine, base, theirs).content, clean=False)


def _save(
    checkout: Path, ref: str, blobs: Mapping[str, str], what: str, *, parent: str | None = None
) -> str:
    """A commit holding `blobs` at their paths, on `refs/sage/carried/<branch>`; its id."""
    name = CARRIED + ref.removeprefix("refs/heads/")
    before = git.rev_parse(checkout, name)
    parent = parent or before
    with tempfile.TemporaryDirectory(prefix="sage-carried-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        lines = "".join(f"100644 {blob}\t{path}\0" for path, blob in blobs.items())
        git.git(checkout, "update-index", "--add", "-z", "--index-info", input=lines, env=env)
        tree = git.git(checkout, "write-tree", env=env)
    message = f"your {what} versions of {', '.join(blobs) or 'nothing'}, saved before a landing\n"
    env = git.identity_env(checkout)
    commit = git.commit_tree(checkout, tree, [parent] if parent else [], message, env=env)
    git.git(checkout, "update-ref", name, commit, *([before] if before else []))
    return commit


def warnings(carried: Sequence[Carried]) -> tuple[str, ...]:
    """A line for each carried-over edit the user must hear of: every conflict, and every
    merge of an ordinary file (a registered merge that went cleanly is routine)."""
    lines = []
    for c in carried:
        copy = _saved_as(c)
        if not c.clean:
            lines.append(
                f"{c.path}: your uncommitted edit and the landing conflict; the file now holds "
                f"both (text: between <<<<<<< and >>>>>>>), yours as it was is saved: {copy}"
            )
        elif not c.own_merge:
            lines.append(
                f"{c.path}: your uncommitted edit was merged onto the landed version (yours "
                f"as it was: {copy})"
            )
    return tuple(lines)


def _saved_as(c: Carried) -> str:
    """How to see the saved versions: the file in the saved commit, a staged one below it."""
    file = f"`git show {c.saved[:12]}:{c.path}`" if c.mine else ""
    staged = f"`git show {c.saved[:12]}^:{c.path}` (staged)" if c.staged != c.mine else ""
    return " and ".join(part for part in (file, staged if c.staged else "") if part)
