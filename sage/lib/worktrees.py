"""Ticket worktrees: `.sage/worktrees/<ID>` on branch `sage/<ID>`, made fresh from a base commit."""

from __future__ import annotations

import shutil
from pathlib import Path

from sage.lib import git


def branch_for(ticket_id: str) -> str:
    return f"sage/{ticket_id}"


def create(repo: Path, path: Path, branch: str, base: str) -> None:
    """A fresh worktree at `path`, `branch` reset to `base` (a dead run's leftovers removed)."""
    if path.exists() or _registered(repo, path):
        remove(repo, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    git.git(repo, "worktree", "add", "--quiet", "-f", "-B", branch, str(path), base)


def _registered(repo: Path, path: Path) -> bool:
    return path.resolve() in {p.resolve() for p in git.worktrees(repo)}


def remove(repo: Path, path: Path) -> None:
    """Remove a worktree and its registration; tolerate one a worker already deleted."""
    if git.run(repo, "worktree", "remove", "--force", "--force", str(path)).returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
        git.run(repo, "worktree", "prune")


def delete_branch(repo: Path, branch: str) -> None:
    git.run(repo, "branch", "-D", branch)


def keep_unlanded(repo: Path, branch: str, target: str, label: str) -> str | None:
    """Rename a branch that holds commits not on `target`, so a re-run cannot overwrite them."""
    tip = git.rev_parse(repo, f"refs/heads/{branch}")
    if tip is None or git.is_ancestor(repo, tip, target):
        return None
    kept = f"{branch}-{label}"
    git.git(repo, "branch", "-M", branch, kept)
    return kept
