"""Slash-command files for AI coding agents: shipped in `sage/data/commands`, copied where each
agent looks for them."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sage.lib import files
from sage.lib.errors import SageError, UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    name: str
    project_dir: str  # relative to the project root
    user_dir: str  # relative to the home directory


AGENTS = {
    "claude": Agent(name="claude", project_dir=".claude/commands", user_dir=".claude/commands"),
    "opencode": Agent(  # `command/` (singular) is opencode's deprecated name
        name="opencode", project_dir=".opencode/commands", user_dir=".config/opencode/commands"
    ),
    "droid": Agent(name="droid", project_dir=".factory/commands", user_dir=".factory/commands"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Placed:
    """One command file and what install did with it."""

    path: Path
    action: str  # installed | unchanged | overwritten | kept (modified there; no --force) | old


OLD_NAMES = ("plan.md", "ready.md", "stream.md", "validate.md")  # before the `sage-` prefix


def bundled() -> dict[str, str]:
    """The shipped slash commands by file name (the folder's README is for people, not agents)."""
    folder = resources.files("sage").joinpath("data", "commands")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".md") and entry.name != "README.md"
    }


def target_dir(agent: str, *, user: bool, root: Path, home: Path | None = None) -> Path:
    try:
        spec = AGENTS[agent]
    except KeyError:
        raise UsageError(
            f"unknown agent {agent!r}", hint=f"agents are {', '.join(AGENTS)}"
        ) from None
    return (home or Path.home()) / spec.user_dir if user else root / spec.project_dir


def install(directory: Path, *, force: bool = False) -> list[Placed]:
    """Copy every command into `directory`; a file changed there is kept unless `force`. Files
    an older sage installed under other names are reported ("old"), never deleted: they may
    be the user's own."""
    placed = [_place(directory / name, text, force) for name, text in bundled().items()]
    return placed + [Placed(path=p, action="old") for p in _old_files(directory)]


def _old_files(directory: Path) -> list[Path]:
    folders = [directory]
    if directory.name == "commands" and directory.parent.name in (".opencode", "opencode"):
        folders.append(directory.parent / "command")  # opencode's deprecated folder
    found = [f / name for f in folders for name in OLD_NAMES if (f / name).is_file()]
    return [p for p in found if "sage " in (_read(p) or "")]


def _place(path: Path, text: str, force: bool) -> Placed:
    current = _read(path)
    if current == text:
        return Placed(path=path, action="unchanged")
    if current is not None and not force:
        return Placed(path=path, action="kept")
    try:
        files.write_atomic(path, text)
    except OSError as exc:
        raise SageError(f"cannot write {path}: {exc.strerror}") from None
    return Placed(path=path, action="installed" if current is None else "overwritten")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise SageError(f"cannot read {path}: {exc}") from None
