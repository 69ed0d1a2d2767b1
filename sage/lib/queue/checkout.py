"""The user's checkout of the target: brought along when the target moves, never over their edits.

`check` is the dry run before the target moves (`read-tree -m -u -n OLD NEW`): why the checkout
cannot follow, or None. A user's edit to a file the landing changes stops the landing there
(commit or stash it), unless its path has a registered merge: then it is carried over.

`follow` brings the checkout from OLD to NEW once the target has moved; the target never moves
back. It first records the update (`Update`, a JSON file beside the queue's entries: the
checkout, OLD and NEW), runs `read-tree -m -u`, then removes the record. The paths the update
writes or deletes are those of `git diff-tree OLD NEW`, and each holds OLD's version until then
(the dry run passed) or an edit `check` let through: the record names them by OLD and NEW, and
lists them with their blobs the first time the update must be finished (an update that goes
through starts no git process more).

An update that dies halfway (kill -9, a full disk) leaves its record, and `resume` (the next
pass, the next run) finishes it; so does `follow` when `read-tree` fails. Whoever finishes looks
at each path: a file with OLD's or NEW's content, the beginning of NEW's (a write cut short), no
file, or a version already saved is sage's own, and is set to NEW (none of these loses anything:
git has it all); anything else is the user's, and is carried over (see `carry`: saved, set to
NEW, merged back in with `merges[path]` or `merge_text`).

Per-path merges: `merges` maps a repository-relative path to a `Merge`, a callable
`(mine, base, theirs) -> Merged(content, clean)` over file contents (the user's, OLD's, NEW's;
b"" where a side has no file). It runs wherever the user's version of that path is in the way,
and a conflict it reports (`clean=False`) is named in a warning with the saved copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sage.lib import files, git, index_file, objects, proc
from sage.lib.errors import GitError, SageError
from sage.lib.queue import carry
from sage.lib.queue.carry import Carried, Merge, Merged, merge_text
from sage.lib.queue.entries import step

__all__ = ["CheckoutBehind", "Followed", "Merge", "Merged", "check", "follow", "merge_text",
           "resume"]  # fmt: skip

LOCK_WAIT = 10.0  # seconds to wait for a git in the user's checkout to let go of its index
STALE_LOCK = 2.0  # a lock this old with no git running in the checkout was left by a dead one
NO_MERGES: Mapping[str, Merge] = {}
UNMERGED = "unmerged"  # an index entry with conflict stages: the user is mid-merge
_IN_THE_WAY = re.compile(r"(?:Entry|working tree file) '([^']+)'")
_ZERO = re.compile(r"^0+$")


class CheckoutBehind(SageError):
    """The target moved, the user's checkout could not follow yet: its update is recorded and
    the next pass finishes it; nothing else lands until then."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """A path the update writes or deletes: its blob in OLD and in NEW (None: no file there)."""

    path: str
    old: str | None = None
    new: str | None = None
    mode: str = "100644"  # NEW's (OLD's when the update deletes the path)
    link: bool = False  # a symbolic link on either side: never merged


@dataclass(frozen=True, slots=True, kw_only=True)
class Update:
    """The record of a checkout update, written before any file is."""

    checkout: str
    ref: str
    old: str
    new: str
    changes: tuple[Change, ...] = ()
    carried: tuple[Carried, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Update:
        return cls(**{**data, "changes": tuple(Change(**c) for c in data["changes"]),
                      "carried": tuple(Carried(**c) for c in data["carried"])})  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Followed:
    """How an update went: `behind` says why the checkout could not follow yet (its record
    stays, for `resume`); `warnings` name the user's edits that were carried over."""

    behind: str = ""
    hint: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Seen:
    """A recorded path in the checkout now: its index entry, what is on disk, its blob."""

    staged: str | None
    kind: str  # "file", "link", "dir", "empty" (a directory), "missing", "other"
    blob: str | None = None


def check(
    checkout: Path | None, old: str, new: str, *, merges: Mapping[str, Merge] = NO_MERGES
) -> str | None:
    """The dry run, before the target moves: why `checkout` cannot follow, or None."""
    if checkout is None or _clean_here(checkout, old, new):
        return None
    done = _read_tree(checkout, old, new, dry_run=True)
    if done.returncode == 0 or git.lock_in_the_way(done.stderr):
        return None if done.returncode == 0 else _why(checkout, done.stderr)
    changes = _changes(checkout, old, new)
    seen = _look(checkout, changes)
    theirs = [c for c in changes if not _sages(checkout, c, seen[c.path])]
    kept = [c.path for c in theirs if c.path not in merges or not _carriable(c, seen[c.path])]
    if kept:
        return _edits_in_the_way(checkout, kept)
    if any(seen[c.path] != _Seen(c.old, *_as_old(c)) for c in changes):
        return None  # the update will set sage's own leftovers right and carry `theirs` over
    return _why(checkout, done.stderr)  # nothing recorded is in the way: something else is


def _clean_here(checkout: Path, old: str, new: str) -> bool:
    """The dry run's answer without a process, when it can be told from files: every path the
    update writes or deletes is in the index and on disk as OLD has it."""
    paths = objects.changed_paths(checkout, old, new)
    return paths is not None and index_file.unchanged(checkout, old, paths)


def follow(
    record: Path, checkout: Path | None, ref: str, old: str, new: str,
    *, merges: Mapping[str, Merge] = NO_MERGES,
) -> Followed:  # fmt: skip
    """Bring `checkout` from `old` to `new` now that `ref` moved there (module docstring)."""
    if checkout is None:
        return Followed()
    update = Update(checkout=str(checkout), ref=ref, old=old, new=new)
    try:
        files.write_json(record, asdict(update))
    except OSError as exc:  # no file is written before its record is
        return _cannot(checkout, f"cannot record the update first: {_said(exc)}")
    if (
        _forwarded_here(checkout, old, new)
        or not _read_tree(checkout, old, new, dry_run=False).returncode
    ):
        step("updated")
        record.unlink(missing_ok=True)
        return Followed()
    return _finish(record, update, merges)


def _forwarded_here(checkout: Path, old: str, new: str) -> bool:
    """The update done in process when it is plain (`index_file.fast_forward`); False: git
    does it. Cut short (a full disk), it is finished as a `read-tree` cut short is."""
    paths = objects.changed_paths(checkout, old, new)
    try:
        return paths is not None and index_file.fast_forward(checkout, old, new, paths)
    except OSError:
        return False


def resume(
    record: Path, trees: Mapping[Path, str | None], *, merges: Mapping[str, Merge] = NO_MERGES
) -> Followed | None:
    """Finish the update `record` holds, if there is one (None if not)."""
    update = _read(record)
    if update is None:
        return None
    checkout = Path(update.checkout)
    if trees.get(checkout) != update.ref or not checkout.is_dir():
        record.unlink(missing_ok=True)  # switched to another branch, or gone: nothing to follow
        return Followed(warnings=(f"{update.checkout} no longer has {update.ref} checked out: "
                                  f"its update to {update.new[:12]} is dropped",))  # fmt: skip
    return _finish(record, update, merges)


def _finish(record: Path, update: Update, merges: Mapping[str, Merge]) -> Followed:
    """Set every recorded path to NEW, carrying the user's edits over; or say why not."""
    checkout = Path(update.checkout)
    held = _free_lock(checkout, record)
    if held:
        return _cannot(checkout, held, hint="see to that lock")
    if not update.changes:
        update = replace(update, changes=_changes(checkout, update.old, update.new))
    seen = _look(checkout, update.changes)
    carried = {c.path: c for c in update.carried}
    theirs = [c for c in update.changes
              if not _sages(checkout, c, seen[c.path], carried.get(c.path))]  # fmt: skip
    if not theirs and not update.carried and all(_at_new(c, seen[c.path]) for c in update.changes):
        record.unlink(missing_ok=True)  # it had gone through: only the record was left
        return Followed()
    stuck = [c.path for c in theirs if not _carriable(c, seen[c.path])]
    if stuck:
        return _cannot(checkout, f"a directory, link or unmerged entry of yours is where "
                       f"{', '.join(stuck)} goes", hint="move it away")  # fmt: skip
    try:
        update = _carry(record, update, theirs, seen, merges) if theirs else update
    except (OSError, GitError) as exc:
        return _cannot(checkout, f"cannot save your version of {', '.join(c.path for c in theirs)}"
                       f" first: {_said(exc)}")  # fmt: skip
    failed = _apply(checkout, update)
    if failed:
        _drop_cut_short(checkout, update.changes)
        return _cannot(checkout, failed, needs=_sizes(checkout, update.changes))
    record.unlink(missing_ok=True)
    return Followed(warnings=carry.warnings(update.carried))


def _carry(
    record: Path, update: Update, theirs: Sequence[Change], seen: Mapping[str, _Seen],
    merges: Mapping[str, Merge],
) -> Update:  # fmt: skip
    """Save the user's versions and what each path becomes, in git and in the record, before
    any of them is touched."""
    checkout = Path(update.checkout)
    paths = [
        carry.InTheWay(path=c.path, old=c.old, new=c.new, mode=c.mode,
                       mine=_content(checkout, c.path, seen[c.path]),
                       staged=_users_staged(c, seen[c.path]))
        for c in theirs
    ]  # fmt: skip
    done = {c.path: c for c in carry.over(checkout, update.ref, paths, merges)}
    kept = tuple(c for c in update.carried if c.path not in done)
    update = replace(update, carried=(*kept, *done.values()))
    files.write_json(record, asdict(update))
    return update


def _content(checkout: Path, path: str, seen: _Seen) -> bytes | None:
    return (checkout / path).read_bytes() if seen.kind == "file" else None


def _users_staged(change: Change, seen: _Seen) -> str | None:
    return seen.staged if seen.staged not in (None, change.old, change.new) else None


def _apply(checkout: Path, update: Update) -> str | None:
    """Every recorded path as in NEW, then the carried ones as merged; git's complaint if it
    cannot (a full disk)."""
    gone = [c.path for c in update.changes if c.new is None]
    kept = [c.path for c in update.changes if c.new is not None]
    for path in gone:
        _remove(checkout, path)
    for path in kept:
        if _kind(checkout / path) == "empty":
            (checkout / path).rmdir()
    if kept:
        listed = ("--pathspec-from-file=-", "--pathspec-file-nul")
        done = _git(checkout, "--literal-pathspecs", "checkout", update.new, *listed,
                    input="\0".join(kept))  # fmt: skip
        if done.returncode != 0:
            return _last_line(done.stderr)
    return _index(checkout, update, gone) or _write_carried(checkout, update)


def _index(checkout: Path, update: Update, gone: Sequence[str]) -> str | None:
    """Entries the update deletes go; a carried staged version merged cleanly is staged."""
    modes = {c.path: c.mode for c in update.changes}
    lines = [f"0 {'0' * len(update.new)}\t{path}\0" for path in gone]
    lines += [f"{modes[c.path]} {c.merged_staged}\t{c.path}\0"
              for c in update.carried if c.merged_staged]  # fmt: skip
    if not lines:
        return None
    done = _git(checkout, "update-index", "-z", "--index-info", input="".join(lines))
    return _last_line(done.stderr) if done.returncode != 0 else None


def _write_carried(checkout: Path, update: Update) -> str | None:
    try:
        for c in update.carried:
            if c.merged is None:
                _remove(checkout, c.path)
            else:
                content = git.read_blob(checkout, c.merged, path=c.path)
                files.write_atomic(checkout / c.path, content)
    except (OSError, GitError) as exc:
        return _said(exc)
    return None


def _remove(checkout: Path, path: str) -> None:
    """A file goes, and the folders it leaves empty (as git does)."""
    target = checkout / path
    if _kind(target) in ("file", "link"):
        target.unlink()
    for parent in target.parents:
        if parent == checkout or not parent.is_dir() or any(parent.iterdir()):
            break
        parent.rmdir()


def _drop_cut_short(checkout: Path, changes: Sequence[Change]) -> None:
    """Give back the space a write cut short took (a full disk): it is sage's own and the record
    says what comes there."""
    seen = _look(checkout, changes)
    for c in changes:
        now = seen[c.path]
        if now.kind == "file" and now.blob not in (c.old, c.new) and _cut_short(checkout, c, now):
            (checkout / c.path).unlink(missing_ok=True)


# ---- what is there ---------------------------------------------------------------------------


def _changes(checkout: Path, old: str, new: str) -> tuple[Change, ...]:
    """Every file path that differs between `old` and `new` (submodules are not written)."""
    out = git.git(checkout, "diff-tree", "-r", "-z", "--no-renames", old, new).split("\0")
    changes = []
    for meta, path in zip(out[0::2], out[1::2], strict=False):
        old_mode, new_mode, old_blob, new_blob, _ = meta.lstrip(":").split()
        if "160000" in (old_mode, new_mode):
            continue
        changes.append(Change(path=path, old=_blob(old_blob), new=_blob(new_blob),
                              mode=new_mode if _blob(new_blob) else old_mode,
                              link="120000" in (old_mode, new_mode)))  # fmt: skip
    return tuple(changes)


def _blob(sha: str) -> str | None:
    return None if _ZERO.match(sha) else sha


def _look(checkout: Path, changes: Sequence[Change]) -> dict[str, _Seen]:
    """Each recorded path's index entry and file now (a few git calls for them all)."""
    staged = _staged(checkout, {c.path for c in changes})
    kinds = {c.path: _kind(checkout / c.path) for c in changes}
    blobs = _hashes(checkout, [p for p, kind in kinds.items() if kind == "file"])
    for path in (p for p, kind in kinds.items() if kind == "link"):
        blobs[path] = git.write_blob(checkout, os.fsencode(os.readlink(checkout / path)))
    return {p: _Seen(staged.get(p), kind, blobs.get(p)) for p, kind in kinds.items()}


def _staged(checkout: Path, paths: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in git.git(checkout, "ls-files", "-s", "-z").split("\0"):
        meta, _, path = line.partition("\t")
        if path in paths:
            _, blob, stage = meta.split()
            found[path] = blob if stage == "0" and path not in found else UNMERGED
    return found


def _hashes(checkout: Path, paths: Sequence[str]) -> dict[str, str]:
    """Blob ids of files, as git would store them (filters applied), in one process."""
    plain = [p for p in paths if "\n" not in p]
    if not plain:
        return {}
    out = git.git(checkout, "hash-object", "--stdin-paths", input="".join(f"{p}\n" for p in plain))
    return dict(zip(plain, out.split(), strict=True))


def _kind(path: Path) -> str:
    try:
        mode = path.lstat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    if stat.S_ISDIR(mode):
        return "dir" if any(path.iterdir()) else "empty"
    return "file" if stat.S_ISREG(mode) else "link" if stat.S_ISLNK(mode) else "other"


def _as_old(change: Change) -> tuple[str, str | None]:
    """What `_look` sees at a path the checkout has as in OLD."""
    return ("missing", None) if change.old is None else ("link" if change.link else "file",
                                                         change.old)  # fmt: skip


def _sages(checkout: Path, change: Change, seen: _Seen, carried: Carried | None = None) -> bool:
    """Whether what is at a recorded path now is sage's own: OLD's, NEW's, NEW's cut short, no
    file, or a version already saved. Setting it to NEW loses nothing of the user's."""
    known = {change.old, change.new}
    if carried is not None:
        known |= {carried.mine, carried.staged, carried.merged, carried.merged_staged}
    known.discard(None)
    if seen.staged is not None and seen.staged not in known:
        return False
    if seen.kind in ("missing", "empty"):
        return True
    if seen.kind not in ("file", "link"):
        return False
    return seen.blob in known or (seen.kind == "file" and _cut_short(checkout, change, seen))


def _cut_short(checkout: Path, change: Change, seen: _Seen) -> bool:
    return change.new is not None and git.starts_blob(
        checkout, change.new, change.path, checkout / change.path
    )


def _at_new(change: Change, seen: _Seen) -> bool:
    """The path is as NEW has it, in the index and on disk."""
    on_disk = seen.blob == change.new if change.new else seen.kind == "missing"
    return seen.staged == change.new and on_disk


def _carriable(change: Change, seen: _Seen) -> bool:
    """Only file contents are merged: not a directory, a link, or an unmerged index entry."""
    return not change.link and seen.kind in ("file", "missing") and seen.staged != UNMERGED


# ---- git in the user's checkout --------------------------------------------------------------


def _read_tree(checkout: Path, old: str, new: str, *, dry_run: bool) -> proc.Result:
    args = ("read-tree", "-m", "-u", *(["-n"] if dry_run else []), old, new)
    done = git.run(checkout, *args)
    if done.returncode != 0 and dry_run:  # stale stat data is no change: refresh, ask again
        git.run(checkout, "update-index", "-q", "--refresh")
        done = git.run(checkout, *args)
    return _waiting(checkout, args, done)


def _git(checkout: Path, *args: str, input: str | None = None) -> proc.Result:
    return _waiting(checkout, args, git.run(checkout, *args, input=input), input)


def _waiting(
    checkout: Path, args: Sequence[str], done: proc.Result, input: str | None = None
) -> proc.Result:
    """Again while an editor's `git status` holds the index lock (for up to LOCK_WAIT)."""
    deadline = time.monotonic() + LOCK_WAIT
    while done.returncode != 0 and _waited_out(done.stderr, checkout, deadline):
        done = git.run(checkout, *args, input=input)
    return done


def _waited_out(stderr: str, checkout: Path, deadline: float) -> bool:
    """An editor's `git status` holds the index lock for a moment: wait (until `deadline`)
    while a git runs there or the lock is young; whether to try again."""
    lock = git.lock_in_the_way(stderr)
    if lock is None:
        return False
    return _wait_for(Path(lock), checkout, deadline)


def _wait_for(lock: Path, checkout: Path, deadline: float) -> bool:
    """Whether `lock` went before `deadline`; False at once when it is stale."""
    while lock.exists() and time.monotonic() < deadline:
        if _stale(lock, checkout):
            return False  # nobody holds it: a git was killed there
        time.sleep(0.02)
    return not lock.exists()


def _free_lock(checkout: Path, record: Path) -> str | None:
    """The index lock out of the way, or why not. A stale lock younger than the record was left
    by the update's own git, killed while it wrote: sage removes it."""
    where = ("rev-parse", "--path-format=absolute", "--git-path", "index.lock")
    lock = Path(git.git(checkout, *where))
    if _wait_for(lock, checkout, time.monotonic() + LOCK_WAIT):
        return None
    if _stale(lock, checkout) and _mtime(lock) >= _mtime(record):
        lock.unlink(missing_ok=True)
        return None
    return _locked(checkout, str(lock), then="the update waits") if lock.exists() else None


def _stale(lock: Path, checkout: Path) -> bool:
    """Nobody holds `lock`: old, no git running in the checkout, no process has it open."""
    if time.time() - _mtime(lock) <= STALE_LOCK or git.gits_in(checkout):
        return False
    return not proc.holders(lock.resolve())


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


# ---- what to tell the user -------------------------------------------------------------------


def _why(checkout: Path, stderr: str) -> str:
    lock = git.lock_in_the_way(stderr)
    if lock:
        return _locked(checkout, lock)
    paths = list(dict.fromkeys(_IN_THE_WAY.findall(stderr)))
    return _edits_in_the_way(checkout, paths or [_last_line(stderr)])


def _locked(checkout: Path, lock: str, *, then: str = "the landing waits in the queue") -> str:
    """Whose `lock` is in the way, and (`then`) what waits for it."""
    if not _stale(Path(lock), checkout):  # a live process holds it: never delete it
        running = git.gits_in(checkout)
        who = f"a git running there (pid {running[0]})" if running else "another process"
        return (
            f"{lock} was held by {who} for over {LOCK_WAIT:.0f}s; {then}: run `sage queue "
            "process` once it is done"
        )
    return (  # a git killed in the checkout: not the user's edits
        f"{lock} exists but no git is running in {checkout}: one died there; remove that "
        "file, then run `sage queue process`"
    )


def _edits_in_the_way(checkout: Path, paths: Sequence[str]) -> str:
    return (
        f"uncommitted changes in {checkout} are in the way ({', '.join(paths)}); "
        "commit or stash them, then run `sage queue process`"
    )


def _cannot(checkout: Path, why: str, *, hint: str = "", needs: int = 0) -> Followed:
    """The checkout stays behind: why, and what the user does about it. Without a `hint` the
    cause is a write that failed (a full disk, most likely): say how much room is left."""
    if not hint:
        free = shutil.disk_usage(checkout).free if checkout.is_dir() else 0
        writes = f"{_size(needs)} to write, " if needs else ""
        why = f"{why} ({writes}{_size(free)} free on that disk)"
        hint = "free some space there (or fix what stops git writing)"
    return Followed(
        behind=f"{checkout} could not follow: {why}",
        hint=f"{hint}, then run `sage queue process`: it finishes the update and keeps your "
        f"changes; do not commit in {checkout} before",
    )


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TB"


def _sizes(checkout: Path, changes: Sequence[Change]) -> int:
    """How many bytes the update writes, in all."""
    blobs = "".join(f"{c.new}\n" for c in changes if c.new)
    done = git.run(checkout, "cat-file", "--batch-check=%(objectsize)", input=blobs)
    return sum(int(n) for n in done.stdout.split() if n.isdigit()) if blobs else 0


def _said(exc: Exception) -> str:
    if isinstance(exc, GitError):
        return _last_line(exc.stderr) if exc.stderr else exc.message
    return str(exc)


def _last_line(stderr: str) -> str:
    """git's diagnosis: its last "error:" or "fatal:" line (a summary or advice may follow)."""
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("hint:")]
    said = [line for line in lines if line.startswith(("error:", "fatal:"))] or lines
    return (said or ["git failed"])[-1].removeprefix("error: ").removeprefix("fatal: ")


def recorded(record: Path) -> Update | None:
    """The checkout update `record` holds, unfinished, or None."""
    return _read(record)


def _read(record: Path) -> Update | None:
    try:
        return Update.from_dict(json.loads(record.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise SageError(
            f"cannot read the record of a checkout update {record}: {exc}",
            hint="move the file aside and check `git status` in the checkout",
        ) from None
