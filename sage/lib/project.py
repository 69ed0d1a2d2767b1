"""Where things live: the repository root, the user's `.sage/` and sage's own run state.

`.sage/` holds what the user owns (the index, `config.toml`, ticket notes, and anything else the
project keeps there, which lands like any file). sage's run state (runs and logs, the queue,
locks, worker pids) lives in `<git common dir>/sage/`: no project file can collide with it, no
`git add -A` picks it up, and every worktree of the repository finds the same one. The workers'
worktrees live in the user's cache (`worktrees_dir` says why).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sage.lib import config as configuration
from sage.lib import files, git
from sage.lib.errors import NotARepository, SageError
from sage.lib.tickets import TicketStore

STATE = "sage"  # <git common dir>/sage/


@dataclass(frozen=True, slots=True, kw_only=True)
class Project:
    root: Path
    config: configuration.Config
    is_git: bool
    state_dir: Path  # sage's run state (runs, queue, locks, logs): `state_dir()`
    worktrees_dir: Path  # ticket and slot worktrees: `worktrees_dir()`

    @property
    def sage_dir(self) -> Path:
        return self.root / ".sage"

    @property
    def states_path(self) -> Path:
        """Ticket states that only mean something to sage (IN_PROGRESS, DEFERRED): see
        `TicketStore`."""
        return self.state_dir / "tickets.json"

    def ticket_store(self, lock_timeout: float | None = None) -> TicketStore:
        timeout = self.config.lock_timeout if lock_timeout is None else lock_timeout
        return TicketStore(self.index_path, lock_timeout=timeout, states=self.states_path,
                           lock=self.index_lock)  # fmt: skip

    @property
    def index_lock(self) -> Path:
        """The index's lock, in sage's run state (one per index path)."""
        key = hashlib.sha256(str(self.index_path.resolve()).encode()).hexdigest()[:12]
        return self.locks_dir / f"index-{key}.lock"

    @property
    def index_path(self) -> Path:
        path = Path(self.config.index)
        return path if path.is_absolute() else self.root / path

    @property
    def queue_dir(self) -> Path:
        return self.state_dir / "queue"

    @property
    def runs_dir(self) -> Path:
        return self.state_dir / "runs"

    @property
    def locks_dir(self) -> Path:
        return self.state_dir / "locks"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    def require_git(self) -> Path:
        if not self.is_git:
            raise NotARepository(
                f"not a git repository: {self.root}",
                hint="sage stream lands commits, so it runs inside a git repository (git init)",
            )
        return self.root

    def require_writable(self) -> None:
        """Every state dir a run writes takes a new file: refuse a read-only or clobbered one
        up front, not halfway through a run."""
        state = (self.runs_dir, self.queue_dir, self.locks_dir, self.worktrees_dir, self.logs_dir)
        for folder in (self.index_path.parent, *state):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=folder).close()
            except OSError as exc:
                clobbered = folder.exists() and not folder.is_dir()
                raise SageError(
                    f"{self.shown(folder)} is not a directory"
                    if clobbered
                    else f"cannot write in {self.shown(folder)}: {exc.strerror}",
                    hint=_WRITABLE_HINT,
                ) from None

    def shown(self, path: Path) -> str:
        """`path` for a message: relative to the repository when inside it, else from `~`."""
        for base, prefix in ((self.root, ""), (Path.home(), "~/")):
            try:
                return prefix + str(path.relative_to(base))
            except ValueError:
                continue
        return str(path)


_WRITABLE_HINT = (
    "sage keeps its run state in the repository's git dir (.git/sage/) and the workers' "
    "worktrees in ~/.cache/sage/ (XDG_CACHE_HOME): make them writable "
    "(and check that the disk is not full)"
)


def find_root(start: Path) -> tuple[Path, bool]:
    """The main worktree's top level (not a ticket worktree's), or `start` outside git."""
    try:
        top = git.toplevel(start)
    except NotARepository:
        return start.resolve(), False
    common = git.common_dir(top)
    main = common.parent if common.name == ".git" else top
    return (main if (main / ".git").exists() else top), True


def state_dir(root: Path, *, is_git: bool) -> Path:
    """`<git common dir>/sage/`; outside git (where only validate, plan and the like run) a
    folder in the user's cache, so that nothing is ever written into the project."""
    if is_git:
        return git.common_dir(root) / STATE
    return _cache() / "state" / _named(root, root)


def worktrees_dir(root: Path, state: Path) -> Path:
    """The user's cache, one folder per repository: not inside the git dir (claude refuses to
    edit a file with a `.git` folder in its path, and file watchers and test finders may skip
    such paths), and not inside the project, whose own tools would walk into the checkouts.
    Resolved, as git reports worktree paths (a symlinked `~/.cache` is common)."""
    return (_cache() / "worktrees" / _named(root, state)).resolve()


def _cache() -> Path:
    home = os.environ.get("XDG_CACHE_HOME") or ""
    return (Path(home) if Path(home).is_absolute() else Path.home() / ".cache") / "sage"


def _named(root: Path, key: Path) -> str:
    return f"{root.name}-{hashlib.sha256(str(key).encode()).hexdigest()[:12]}"


def open_project(
    start: Path, *, index: str | None = None, overrides: dict[str, object] | None = None
) -> Project:
    root, is_git = find_root(start)
    flags = dict(overrides or {})
    if index is not None:
        flags["index"] = str(Path(index).resolve()) if not Path(index).is_absolute() else index
    state = state_dir(root, is_git=is_git)
    return Project(
        root=root, config=configuration.load(root, overrides=flags), is_git=is_git,
        state_dir=state, worktrees_dir=worktrees_dir(root, state),
    )  # fmt: skip


def init(root: Path, *, force: bool = False) -> list[Path]:
    """Create `.sage/`: an empty index and a commented config; keep what exists. Nothing of
    sage's own goes there (not even the index's lock), so it needs no `.gitignore`."""
    sage = root / ".sage"
    made = []
    wanted = {
        sage / "tickets" / "index.json": '{\n  "tickets": []\n}\n',
        sage / "config.toml": configuration.TEMPLATE,
    }
    for path, text in wanted.items():
        if path.exists() and not force:
            continue
        try:
            files.write_atomic(path, text)
        except OSError as exc:
            raise SageError(f"cannot write {path}: {exc.strerror}") from None
        made.append(path)
    return made
