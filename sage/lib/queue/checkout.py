"""The user's checkout of the target: brought along when the target moves, never over their edits.

`read-tree -m -u OLD NEW` is a two-tree merge: a file the user changed is never overwritten, and
the update is refused instead. An update killed halfway leaves files with NEW's content that the
index does not know yet; `undo_half_update` recognises exactly those and puts them back.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from sage.lib import git

LOCK_WAIT = 10.0  # seconds to wait for a git in the user's checkout to let go of its index
STALE_LOCK = 2.0  # a lock this old with no git running in the checkout was left by a dead one
_IN_THE_WAY = re.compile(r"(?:Entry|working tree file) '([^']+)'")


def follow(checkout: Path | None, old: str, new: str, *, dry_run: bool) -> str | None:
    """Update the checkout's index and files from `old` to `new`; why it cannot, or None."""
    if checkout is None:
        return None
    args = ("read-tree", "-m", "-u", *(["-n"] if dry_run else []), old, new)
    done = git.run(checkout, *args)
    if done.returncode != 0 and dry_run:  # stale stat data is no change: refresh, ask again
        git.run(checkout, "update-index", "-q", "--refresh")
        done = git.run(checkout, *args)
    if done.returncode != 0 and undo_half_update(checkout, old, new, done.stderr):
        done = git.run(checkout, *args)
    deadline = time.monotonic() + LOCK_WAIT
    while done.returncode != 0 and _waited_out(done.stderr, checkout, deadline):
        done = git.run(checkout, *args)
    if done.returncode == 0:
        return None
    return _why(checkout, done.stderr)


def _waited_out(stderr: str, checkout: Path, deadline: float) -> bool:
    """An editor's `git status` holds the index lock for a moment: wait (until `deadline`)
    while a git runs there or the lock is young; whether to try again."""
    lock = git.lock_in_the_way(stderr)
    if lock is None:
        return False
    path = Path(lock)
    while path.exists() and time.monotonic() < deadline:
        if _stale(path, checkout):
            return False  # nobody holds it: a git was killed there
        time.sleep(0.02)
    return not path.exists()


def _stale(lock: Path, checkout: Path) -> bool:
    return _age(lock) > STALE_LOCK and not git.gits_in(checkout)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _why(checkout: Path, stderr: str) -> str:
    lock = git.lock_in_the_way(stderr)
    if lock and not _stale(Path(lock), checkout):  # a live process holds it: never delete it
        running = git.gits_in(checkout)
        who = f"a git running there (pid {running[0]})" if running else "another process"
        return (
            f"{lock} was held by {who} for over {LOCK_WAIT:.0f}s; the landing waits in the "
            "queue: run `sage queue process` once it is done"
        )
    if lock:  # a git killed in the checkout: not the user's edits
        return (
            f"{lock} exists but no git is running in {checkout}: one died there; remove that "
            "file, then run `sage queue process`"
        )
    paths = list(dict.fromkeys(_IN_THE_WAY.findall(stderr)))
    what = ", ".join(paths) or (stderr.strip().splitlines() or ["read-tree failed"])[-1]
    return (
        f"uncommitted changes in {checkout} are in the way ({what}); "
        "commit or stash them, then run `sage queue process`"
    )


def undo_half_update(checkout: Path, old: str, new: str, error: str) -> bool:
    """Files in the way whose content is exactly `new`'s were written by an update that was
    killed halfway (nobody else writes that content there): put them back as in `old`, so
    the update can run again. Anything else in the way is the user's and stays."""
    paths = list(dict.fromkeys(_IN_THE_WAY.findall(error)))
    if not paths:
        return False
    have = git.run(checkout, "hash-object", "--", *paths)
    want = git.run(checkout, "rev-parse", *(f"{new}:{p}" for p in paths))
    if have.returncode or want.returncode or have.stdout.split() != want.stdout.split():
        return False
    in_old = set(git.git(checkout, "ls-tree", "-r", "--name-only", old, "--", *paths).split("\n"))
    if in_old - {""}:
        git.git(checkout, "checkout", old, "--", *sorted(in_old - {""}))
    for path in set(paths) - in_old:
        (checkout / path).unlink(missing_ok=True)
    return True
