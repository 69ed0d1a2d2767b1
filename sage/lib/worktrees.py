"""Ticket worktrees: `.sage/worktrees/<ID>` on branch `sage/<ID>`, made fresh from a base commit."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sage.lib import git


def branch_for(ticket_id: str) -> str:
    return f"sage/{ticket_id}"


def create(repo: Path, path: Path, branch: str, base: str) -> None:
    """A fresh worktree at `path`, `branch` reset to `base` (a dead run's leftovers removed)."""
    if path.exists():
        remove(repo, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # -f also reuses a path that is registered but gone (a worker deleted it, a crash)
    git.git(repo, "worktree", "add", "--quiet", "-f", "-B", branch, str(path), base)


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


def repair(repo: Path) -> list[str]:
    """Drop registrations a `git worktree add` killed halfway left with an empty `commondir`:
    git cannot read them, so every worktree command (prune too) fails until they go. Only git's
    bookkeeping is removed; the worktree's files are left alone."""
    admin = git.common_dir(repo) / "worktrees"
    broken = [
        entry
        for entry in (sorted(admin.iterdir()) if admin.is_dir() else [])
        if (entry / "commondir").is_file() and not (entry / "commondir").read_bytes().strip()
    ]
    for entry in broken:
        shutil.rmtree(entry, ignore_errors=True)
    return [entry.name for entry in broken]


@dataclass(frozen=True, slots=True, kw_only=True)
class Ownership:
    """What sage made: the worktree's `.git` link and its admin dir's pointer to the common dir.
    A worker can rewrite either (and then git in the worktree acts on another repository)."""

    link: str
    admin: Path
    commondir: str


def ownership(path: Path) -> Ownership:
    link = _read(path / ".git") or ""
    admin = Path(link.removeprefix("gitdir:").strip())
    return Ownership(link=link, admin=admin, commondir=_read(admin / "commondir") or "")


def taken_over(path: Path, branch: str, made: Ownership) -> str | None:
    """Why the worktree at `path` is no longer sage's worktree of `branch`, or None."""
    if _read(path / ".git") != made.link:
        return f"the worker rewrote its worktree's .git file (sage made it {made.link.strip()!r})"
    if _read(made.admin / "commondir") != made.commondir:
        return f"the worker rewrote {made.admin / 'commondir'}"
    head = git.run(path, "symbolic-ref", "-q", "HEAD").stdout.strip()
    if head != f"refs/heads/{branch}":
        where = f"on {head.removeprefix('refs/heads/')}" if head else "detached"
        return f"the worker moved its worktree off {branch} (HEAD is {where})"
    return None


def head_log(made: Ownership) -> Iterator[str]:
    """The worktree's HEAD reflog, one line per move (empty if the worker removed it)."""
    yield from (_read(made.admin / "logs" / "HEAD") or "").splitlines()


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
