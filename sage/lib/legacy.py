"""The layout older sage versions used: run state inside the project, under `.sage/` (`runs/`,
`queue/`, `worktrees/`, `locks/`, `logs/`).

The first command that uses run state moves it to `Project.state_dir`: queued commits still
land, past runs stay in `sage status`, `sage log` and `sage report`, the pid files of workers a
dead run left let the next recovery stop them. The old worktrees are removed, as a recovery would
(their commits are on their `sage/<ID>` branches), and the `.gitignore` sage wrote in `.sage/` is
rewritten to ignore only what is still sage's there. A folder the project tracks files in is the
project's, and is left alone.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sage.lib import git, locks, worktrees
from sage.lib.errors import SageError
from sage.lib.project import Project
from sage.lib.words import counted

OLD_DIRS = ("runs", "queue", "worktrees", "locks", "logs")
# what `sage init` and every stream wrote into .sage/.gitignore until run state moved out
OLD_GITIGNORE = """\
# sage's runtime state: never committed. The ticket index and config.toml are yours to commit.
runs/
queue/
worktrees/
locks/
logs/
*.lock
"""


def adopt(project: Project) -> list[str]:
    """Move an older sage's run state out of `.sage/`; one note per thing done."""
    found = leftovers(project)
    notes = []
    if found:
        with _quiet(project, found):
            for name in found:
                notes += MOVERS[name](project, project.sage_dir / name)
        for name in found:
            shutil.rmtree(project.sage_dir / name, ignore_errors=True)
    return notes + _gitignore(project)


def leftovers(project: Project) -> list[str]:
    """The old state folders present in `.sage/` that hold no file the project tracks."""
    present = [n for n in OLD_DIRS if (project.sage_dir / n).is_dir()]
    if not present or not project.is_git:
        return []
    tracked = git.git(project.root, "ls-files", "-z", "--", *(f".sage/{n}/" for n in present))
    theirs = {Path(p).parts[1] for p in tracked.split("\0") if p}
    return [n for n in present if n not in theirs]


@contextmanager
def _quiet(project: Project, found: list[str]) -> Iterator[None]:
    """No older sage streaming or landing here, and no landing of ours, while things move."""
    old = project.sage_dir / "locks"
    hint = "wait for it to finish (or stop it): this sage then moves its state out of .sage/"
    held = [(project.locks_dir / "queue.lock", "the commit queue")]
    if "locks" in found:
        held += [(old / "stream.lock", "the stream lock of an older sage"),
                 (old / "queue.lock", "the queue lock of an older sage")]  # fmt: skip
    with ExitStack() as stack:
        for path, what in held:
            stack.enter_context(locks.hold(path, timeout=0, what=what, hint=hint))
        yield


def _queue(project: Project, old: Path) -> list[str]:
    """Entries waiting and archived, each under its own number: the queue lands in order."""
    moves = [(p, project.queue_dir / p.relative_to(old)) for p in _entries(old)]
    for source, target in moves:
        if target.exists() and target.read_bytes() != source.read_bytes():
            raise SageError(
                f"{project.shown(source)} and {project.shown(target)} are two queue entries "
                "with the same number",
                hint=f"rename {project.shown(source)} to a number not used in "
                f"{project.shown(project.queue_dir)} (entries land in number order)",
            )
    for source, target in moves:
        _move_file(source, target)
    waiting = sum(1 for source, _ in moves if source.parent == old)
    return [f"moved {counted(waiting, 'queued commit')} from .sage/queue/ to "
            f"{project.shown(project.queue_dir)}"] if waiting else []  # fmt: skip


def _entries(old: Path) -> list[Path]:
    return sorted([*old.glob("[0-9]*.json"), *(old / "done").glob("[0-9]*.json")])


def _move_file(source: Path, target: Path) -> None:
    if target.exists():  # the same entry (checked): a crash left both copies
        source.unlink()
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        _move(source, target)


def _move(source: Path, target: Path) -> None:
    """A rename; onto another file system, a copy under a scratch name renamed into place before
    the source goes: a crash never leaves half a file or folder under the target's name."""
    try:
        os.rename(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    scratch = target.with_name(f".{target.name}.moving")
    shutil.rmtree(scratch, ignore_errors=True)
    if source.is_dir():
        shutil.copytree(source, scratch, symlinks=True)
        os.replace(scratch, target)
        shutil.rmtree(source)
    else:
        shutil.copy2(source, scratch)
        os.replace(scratch, target)
        source.unlink()


def _runs(project: Project, old: Path) -> list[str]:
    moved = _move_all([p for p in old.iterdir() if p.is_dir()], project.runs_dir)
    return [f"moved {counted(moved, 'past run')} from .sage/runs/ to "
            f"{project.shown(project.runs_dir)}"] if moved else []  # fmt: skip


def _logs(project: Project, old: Path) -> list[str]:
    _move_all([p for p in old.iterdir() if p.is_file()], project.logs_dir)
    return []


def _locks(project: Project, old: Path) -> list[str]:
    """The lock files go; the pid files of a dead run's workers come along for its recovery."""
    pids = old / "workers"
    _move_all([p for p in pids.iterdir() if p.is_file()] if pids.is_dir() else [],
              project.locks_dir / "workers")  # fmt: skip
    return []


def _move_all(paths: list[Path], folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    fresh = [p for p in paths if not (folder / p.name).exists()]
    for path in fresh:
        _move(path, folder / path.name)
    return len(fresh)


def _worktrees(project: Project, old: Path) -> list[str]:
    resolved = old.resolve()
    gone = [p for p in git.worktrees(project.root) if resolved in p.resolve().parents]
    for path in gone:
        worktrees.remove(project.root, path)
    git.run(project.root, "worktree", "prune")
    return [f"removed {counted(len(gone), 'worktree')} an older sage left in .sage/worktrees/ "
            "(their commits stay on their branches)"] if gone else []  # fmt: skip


MOVERS: dict[str, Callable[[Project, Path], list[str]]] = {
    "runs": _runs, "queue": _queue, "worktrees": _worktrees, "locks": _locks, "logs": _logs,
}  # fmt: skip


def _gitignore(project: Project) -> list[str]:
    """The old `.gitignore` hid any `runs/`, `logs/` … and `*.lock` in `.sage/`, the
    project's too: removed when it is exactly what sage wrote (nothing of sage's is there
    now, not even the index's lock)."""
    path = project.sage_dir / ".gitignore"
    try:
        if path.read_text(encoding="utf-8") != OLD_GITIGNORE:
            return []
    except (OSError, UnicodeDecodeError):
        return []
    path.unlink()
    return [f"removed {project.shown(path)}: sage's run state is no longer in .sage/ "
            "(commit the change)"]  # fmt: skip
