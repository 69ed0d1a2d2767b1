"""Where things live: the repository root and the `.sage/` layout under it."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from sage.lib import config as configuration
from sage.lib import files, git
from sage.lib.errors import NotARepository, SageError
from sage.lib.tickets import TicketStore

GITIGNORE = """\
# sage's runtime state: never committed. The ticket index and config.toml are yours to commit.
runs/
queue/
worktrees/
locks/
logs/
tickets.json
*.lock
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Project:
    root: Path
    config: configuration.Config
    is_git: bool

    @property
    def sage_dir(self) -> Path:
        return self.root / ".sage"

    @property
    def state_dir(self) -> Path:
        """Where sage keeps its run state (runs, queue, worktrees, locks, logs, ticket states)."""
        return self.sage_dir

    @property
    def states_path(self) -> Path:
        """Ticket states that only mean something to sage (IN_PROGRESS, DEFERRED): see
        `TicketStore`."""
        if self.is_git:  # MERGE: state_dir moves to the git common dir
            return git.cached_common_dir(self.root) / "sage" / "tickets.json"
        return self.state_dir / "tickets.json"

    def ticket_store(self, lock_timeout: float | None = None) -> TicketStore:
        timeout = self.config.lock_timeout if lock_timeout is None else lock_timeout
        return TicketStore(self.index_path, lock_timeout=timeout, states=self.states_path)

    @property
    def index_path(self) -> Path:
        path = Path(self.config.index)
        return path if path.is_absolute() else self.root / path

    @property
    def queue_dir(self) -> Path:
        return self.sage_dir / "queue"

    @property
    def runs_dir(self) -> Path:
        return self.sage_dir / "runs"

    @property
    def worktrees_dir(self) -> Path:
        return self.sage_dir / "worktrees"

    @property
    def locks_dir(self) -> Path:
        return self.sage_dir / "locks"

    @property
    def logs_dir(self) -> Path:
        return self.sage_dir / "logs"

    def require_git(self) -> Path:
        if not self.is_git:
            raise NotARepository(
                f"not a git repository: {self.root}",
                hint="sage stream lands commits, so it runs inside a git repository (git init)",
            )
        return self.root

    def require_writable(self) -> None:
        """Every state dir a run writes takes a new file: refuse a read-only or clobbered
        `.sage/` up front, not halfway through a run."""
        state = (self.runs_dir, self.queue_dir, self.locks_dir, self.worktrees_dir, self.logs_dir)
        for folder in (self.index_path.parent, *state):
            try:
                folder.mkdir(parents=True, exist_ok=True)
                tempfile.TemporaryFile(dir=folder).close()
            except OSError as exc:
                clobbered = folder.exists() and not folder.is_dir()
                raise SageError(
                    f"{folder} is not a directory"
                    if clobbered
                    else f"cannot write in {folder}: {exc.strerror}",
                    hint="sage keeps its run state under .sage/: make it writable "
                    "(and check that the disk is not full)",
                ) from None
        self._ignore_state()

    def _ignore_state(self) -> None:
        """Run state (worktrees, logs, the queue) must never show up in `git status` or be
        added by `git add -A`: write `.sage/.gitignore` if `sage init` never did."""
        ignore = self.sage_dir / ".gitignore"
        if not ignore.exists():
            files.write_atomic(ignore, GITIGNORE)


def find_root(start: Path) -> tuple[Path, bool]:
    """The main worktree's top level (not a ticket worktree's), or `start` outside git."""
    try:
        top = git.toplevel(start)
    except NotARepository:
        return start.resolve(), False
    common = git.common_dir(top)
    main = common.parent if common.name == ".git" else top
    return (main if (main / ".git").exists() else top), True


def open_project(
    start: Path, *, index: str | None = None, overrides: dict[str, object] | None = None
) -> Project:
    root, is_git = find_root(start)
    flags = dict(overrides or {})
    if index is not None:
        flags["index"] = str(Path(index).resolve()) if not Path(index).is_absolute() else index
    return Project(root=root, config=configuration.load(root, overrides=flags), is_git=is_git)


def init(root: Path, *, force: bool = False) -> list[Path]:
    """Create `.sage/`: an empty index, a commented config, a .gitignore; keep what exists."""
    sage = root / ".sage"
    made = []
    wanted = {
        sage / "tickets" / "index.json": '{\n  "tickets": []\n}\n',
        sage / "config.toml": configuration.TEMPLATE,
        sage / ".gitignore": GITIGNORE,
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
