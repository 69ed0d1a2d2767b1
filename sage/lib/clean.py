"""`sage clean`: what runs leave behind and no longer need, each item with why it is safe to
remove; anything holding work the target branch does not have is kept, and said so.

- ticket branches `sage/<ID>`, and the `sage/<ID>-recovered-*` / `-deferred-*` branches a
  recovery kept: removed only when the target already holds their changes (their tip is an
  ancestor of it, or merging them into it changes nothing: a squash landing), never while queued
  to land or checked out in a worktree;
- the commit queue's scratch worktree for `--verify` (`_verify`), made again when needed;
- worker slots' worktrees (`_slots/slot-<k>`), kept between runs: made and set up again when
  needed (the branch a slot has checked out is judged as a branch, like any other);
- run folders (events and logs) older than the newest few.

All of it is where `Project` keeps run state (`<git common dir>/sage/`, the worktrees in the
user's cache); what an older sage left in `.sage/` is moved there first (`sage.lib.legacy`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sage.lib import git, history, locks, worktrees
from sage.lib.project import Project
from sage.lib.queue.entries import Entries
from sage.lib.queue.landing import SLOTS_DIR
from sage.lib.queue.verify import VERIFY_DIR
from sage.lib.words import counted

KEEP_RUNS = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    kind: str  # branch | worktree | run
    name: str
    why: str
    safe: bool  # True: removed (or would be); False: kept, `why` says why


def survey(project: Project, target: str, *, keep_runs: int = KEEP_RUNS) -> list[Item]:
    """Worktrees come first: a branch goes only once the worktree holding it has gone."""
    trees = [*ticket_worktrees(project, target), *slot_worktrees(project)]
    going = {Path(i.name) for i in trees if i.safe}
    return [*trees, *verify_worktree(project), *branches(project, target, going),
            *old_runs(project, keep_runs)]  # fmt: skip


def ticket_worktrees(project: Project, target: str) -> list[Item]:
    """Ticket worktrees a run left (`<worktrees dir>/<ID>`; not the slots', which runs reuse)."""
    items = []
    for path, ref in git.worktrees(project.root).items():
        if path.parent != project.worktrees_dir or path.name == VERIFY_DIR:
            continue
        if path.name.startswith("slot-") or ref is None:
            continue
        items.append(_worktree(project.root, path, ref.removeprefix("refs/heads/"), target))
    return items


def _worktree(root: Path, path: Path, branch: str, target: str) -> Item:
    if path.is_dir() and git.run(path, "status", "--porcelain").stdout.strip():
        return Item(kind="worktree", name=str(path), why="has uncommitted changes", safe=False)
    landed = landed_because(root, branch, target)
    if landed is None:
        why = f"on {branch}, which has work {target} does not have"
        return Item(kind="worktree", name=str(path), why=why, safe=False)
    return Item(kind="worktree", name=str(path), why=f"a finished ticket's: {landed}", safe=True)


def branches(project: Project, target: str, going: set[Path]) -> list[Item]:
    root = project.root
    refs = git.git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads/sage/")
    queued = {e.branch: e.seq for e in Entries(project.queue_dir, project.locks_dir, 0).active()}
    checked_out = {b.removeprefix("refs/heads/"): p for p, b in git.worktrees(root).items()
                   if b and p not in going}  # fmt: skip
    return [_branch(root, b, target, queued, checked_out) for b in refs.splitlines() if b]


def _branch(
    root: Path, branch: str, target: str, queued: dict[str, int], checked_out: dict[str, Path]
) -> Item:
    what = _branch_kind(branch)
    if branch in queued:
        why = f"{what}, queued to land (#{queued[branch]}): `sage queue process` lands it"
        return Item(kind="branch", name=branch, why=why, safe=False)
    if branch in checked_out:
        why = f"{what}, checked out in {checked_out[branch]}"
        return Item(kind="branch", name=branch, why=why, safe=False)
    landed = landed_because(root, branch, target)
    if landed:
        return Item(kind="branch", name=branch, why=f"{what}: {landed}", safe=True)
    ahead = int(git.git(root, "rev-list", "--count", f"{target}..{branch}"))
    why = (
        f"{what} with work {target} does not have ({counted(ahead, 'commit')}): "
        "land it or delete it by hand"
    )
    return Item(kind="branch", name=branch, why=why, safe=False)


def _branch_kind(branch: str) -> str:
    if "-recovered-" in branch:
        return "kept by a recovery"
    if "-deferred-" in branch:
        return "kept when its ticket was deferred"
    return "ticket branch"


def landed_because(root: Path, branch: str, target: str) -> str | None:
    """Why `target` already holds everything on `branch`, or None if it may not."""
    tip = git.rev_parse(root, f"refs/heads/{branch}")
    if tip is None:
        return None
    if git.is_ancestor(root, tip, target):
        return f"its commits are on {target}"
    merged = git.merge_tree(root, target, tip)
    if not merged.conflicts and merged.tree == git.git(root, "rev-parse", f"{target}^{{tree}}"):
        return f"its changes are already on {target} (landed as a squash commit)"
    return None


def slot_worktrees(project: Project) -> list[Item]:
    folder = project.worktrees_dir / SLOTS_DIR
    found = {p for p in git.worktrees(project.root) if p.parent == folder}
    found.update(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else None
    why = "a worker slot's worktree, kept between runs: made and set up again when needed"
    return [Item(kind="worktree", name=str(p), why=why, safe=True) for p in sorted(found)]


def verify_worktree(project: Project) -> list[Item]:
    path = project.worktrees_dir / VERIFY_DIR
    registered = path in git.worktrees(project.root)
    if not (path.exists() or registered):
        return []
    why = "the commit queue's scratch worktree for --verify; made again when needed"
    return [Item(kind="worktree", name=str(path), why=why, safe=True)]


def old_runs(project: Project, keep: int) -> list[Item]:
    folder = project.runs_dir
    found = [p for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    runs = sorted(found, key=history.age, reverse=True)
    why = f"an old run's events and logs (keeping the newest {keep})"
    return [Item(kind="run", name=str(p), why=why, safe=True) for p in runs[keep:]]


@contextmanager
def quiet(project: Project) -> Iterator[None]:
    """No stream and no queue landing while cleaning: both locks, or a refusal naming who."""
    hint = "wait for it to finish; `sage clean --dry-run` shows what would go meanwhile"
    with (
        locks.hold(project.locks_dir / "stream.lock", timeout=0, what="a sage stream", hint=hint),
        locks.hold(project.locks_dir / "queue.lock", timeout=0, what="the commit queue", hint=hint),
    ):
        yield


def remove(project: Project, item: Item) -> None:
    if not item.safe:
        return
    if item.kind == "branch":
        worktrees.delete_branch(project.root, item.name)
    elif item.kind == "worktree":
        worktrees.remove(project.root, Path(item.name))
    elif item.kind == "run":
        shutil.rmtree(item.name, ignore_errors=True)
