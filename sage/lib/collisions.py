"""Early warning: after a landing, a running ticket whose work so far touches what just landed is
told so (an event, and a file in its worktree), so an agent can adapt or a script stop early.

Nothing is killed: the queue's conflict check at landing stays the judge. The file is
`.sage-warnings` at the worktree's top, one JSON object a line; sage never lands it.
"""

from __future__ import annotations

import json
from pathlib import Path

from sage.lib import git, index_file, objects
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


def work_so_far(worktree: Path, base: str, among: set[str] | None = None) -> set[str]:
    """Files a running worker changed since its base: committed, staged or not (tracked ones);
    of `among` only, if given. When its HEAD is still the base and the files show each of
    `among` as the base has it, none (no git process)."""
    if among is not None and _untouched(worktree, base, among):
        return set()
    done = git.run(worktree, "diff", "--name-only", "-z", base)
    found = {path for path in done.stdout.split("\0") if path} if done.returncode == 0 else set()
    return found if among is None else found & among


def _untouched(worktree: Path, base: str, paths: set[str]) -> bool:
    index = index_file.index_of(worktree)
    return (
        index is not None
        and git.worktree_head(worktree, index.parent) == base
        and index_file.unchanged(worktree, base, paths)
    )


def warn(worktree: Path, *, landed: str, commit: str, files: set[str]) -> None:
    """Append one warning to the worktree's warnings file."""
    record = {"at": now(), "landed": landed, "commit": commit, "files": sorted(files),
              "says": f"{landed} just landed changes to {', '.join(sorted(files))}, which you "
                      "changed too: your work may conflict when it lands"}  # fmt: skip
    with open(worktree / WARNINGS_FILE, "a", encoding="utf-8") as sink:
        sink.write(json.dumps(record) + "\n")
