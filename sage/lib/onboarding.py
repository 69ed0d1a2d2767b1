"""What a repository's first `sage stream` says before it starts: what sage is about to do,
where to look, and about how long setting up the workers' checkouts takes."""

from __future__ import annotations

from sage.lib import git, history
from sage.lib.project import Project
from sage.lib.words import counted

FILES_PER_SECOND = 4000  # a git checkout on an ordinary disk, roughly


def first_run_note(project: Project, workers: int) -> list[str]:
    """Lines for the first run in this repository; none once any run has been recorded."""
    if history.run_dirs(project):
        return []
    files = len(git.git(project.root, "ls-files", "-z").split("\0")) - 1
    each = 0.05 + files / FILES_PER_SECOND
    slots = f"each of the {workers} workers" if workers > 1 else "the worker"
    lines = [
        f"first run in this repository: {slots} gets its own git worktree in "
        f"{project.shown(project.worktrees_dir)}/ (a checkout of {counted(files, 'file')}, "
        f"about {each:.1f} s{' each' if workers > 1 else ''})",
    ]
    setup = project.config.setup
    if setup:
        lines.append(f"  then `[worktree] setup` ({' '.join(setup)}) runs once in each worktree")
    lines += [
        f"  each ticket's worker output goes to {project.shown(project.runs_dir)}/<run-id>/"
        "<ID>.log; from another terminal: `sage status`, `sage log ID --follow`; afterwards: "
        "`sage report`",
    ]
    return lines
