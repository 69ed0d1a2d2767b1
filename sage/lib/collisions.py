"""Early warning: after a landing, a running ticket whose work so far touches what just landed is
told so (an event, and a file in its worktree), so an agent can adapt or a script stop early.

Nothing is killed: the queue's conflict check at landing stays the judge. The file is
`.sage-warnings` at the worktree's top, one JSON object a line; sage never lands it.
"""

from __future__ import annotations

import json
from collections.abc import Container
from pathlib import Path

from sage.lib import files, git, index_file, objects, worktrees
from sage.lib.tickets import now

WARNINGS_FILE = ".sage-warnings"


def landed_files(repo: Path, commit: str) -> set[str]:
    """What a landed (squash) commit changed (read from the objects, else asked of git)."""
    parent = git.loose_commit(repo, commit)
    if parent is not None and len(parent[0]) == 1:
        found = objects.changed_paths(repo, parent[0][0], commit)
        if found is not None:
            return set(found)
    out = git.run(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "-z", f"{commit}^",
                  commit).stdout  # fmt: skip
    return {path for path in out.split("\0") if path}


def based_on(repo: Path, base: str, commit: str, older: Container[str]) -> bool:
    """Whether `base` is `commit` or comes after it on the first-parent line: the walk back from
    `base` through loose commits (the queue's landings are loose) stops at `commit`, at one of
    `older` (commits known to come before it), or after a few steps. False when it cannot be
    told: then the worker's files are looked at, as for any ticket started before `commit`."""
    at = base
    for _ in range(_WALK):
        if at == commit:
            return True
        if at in older:
            return False
        found = git.loose_commit(repo, at)
        if found is None or not found[0]:
            return False
        at = found[0][0]
    return False


_WALK = 8  # landings the stream may not have heard of yet when a ticket starts: a few at most


def work_so_far(
    worktree: Path, base: str, among: set[str] | None = None, *, branch: str | None = None
) -> set[str]:
    """Files a running worker changed since its base: committed, staged or not (tracked ones);
    of `among` only, if given. Nothing (and no git process) when its HEAD is still the base
    and the files show each of `among` as the base has it, or when the slot is not switched to
    `branch` yet (HEAD, which is written last, is detached or names the last ticket's branch):
    its worker has not started and has done nothing."""
    if branch is not None and _not_switched(worktree, branch):
        return set()
    if among is not None and _untouched(worktree, base, among):
        return set()
    done = git.run(worktree, "diff", "--name-only", "-z", base)
    found = {path for path in done.stdout.split("\0") if path} if done.returncode == 0 else set()
    return found if among is None else found & among


def _not_switched(worktree: Path, branch: str) -> bool:
    """The slot has no `.git` file or HEAD yet, or HEAD is detached (git is making the slot:
    its files may not be there yet), or HEAD names another ticket's branch (the slot's last
    ticket's). A branch of the worker's own is looked at."""
    admin = git.linked_git_dir(worktree)
    try:
        head = files.read_text(admin / "HEAD").strip() if admin else ""
    except OSError:
        return True
    if not head.startswith("ref: "):
        return True
    named = head.removeprefix("ref: refs/heads/")
    return named != branch and named.startswith(worktrees.BRANCH_PREFIX)


def _untouched(worktree: Path, base: str, paths: set[str]) -> bool:
    """None of `paths` changed since `base`: in the commits since (read in process), nor in the
    index or the files. A git writing the index now (the worker's) leaves the old one whole:
    what it says of the files still holds for those whose stat data it recorded."""
    index = index_file.index_of(worktree)
    head = git.worktree_head(worktree, index.parent) if index is not None else None
    if head is None:
        return False
    if head != base:
        committed = objects.changed_paths(worktree, base, head)
        if committed is None or committed & paths:
            return False
    return index_file.unchanged(worktree, head, paths, while_written=True)


def warn(worktree: Path, *, landed: str, commit: str, files: set[str]) -> None:
    """Append one warning to the worktree's warnings file."""
    record = {"at": now(), "landed": landed, "commit": commit, "files": sorted(files),
              "says": f"{landed} just landed changes to {', '.join(sorted(files))}, which you "
                      "changed too: your work may conflict when it lands"}  # fmt: skip
    with open(worktree / WARNINGS_FILE, "a", encoding="utf-8") as sink:
        sink.write(json.dumps(record) + "\n")
