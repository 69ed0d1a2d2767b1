"""What `sage hooks install` changed, so that uninstall undoes exactly that and nothing else.

Kept in the git common dir (`sage/hooks.json`, never committed), with every path relative to it,
so it stays true when the repository moves. A hook sage moved aside lives under
`sage/hooks-before/`, outside every hooks directory: no name there belongs to another manager.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from sage.lib import files
from sage.lib.errors import SageError

RECORD = Path("sage") / "hooks.json"
SAVED = Path("sage") / "hooks-before"


@dataclass(frozen=True, slots=True, kw_only=True)
class Script:
    """A hook script sage wrote into a hooks directory, and the hook it moved aside for it."""

    hook: str
    directory: str  # relative to the git common dir
    saved: str | None = None  # relative to the git common dir


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """A marked block sage added to another manager's hook file (husky's `.husky/<hook>`)."""

    hook: str
    file: str  # relative to the git common dir
    created: bool  # the file did not exist: uninstall removes it again
    separated: bool  # the file did not end with a newline: sage added one before the block


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    common: Path
    scripts: tuple[Script, ...] = ()
    blocks: tuple[Block, ...] = ()

    def rel(self, path: Path) -> str:
        return os.path.relpath(path, self.common)

    def path(self, rel: str) -> Path:
        return Path(os.path.normpath(self.common / rel))

    def script(self, directory: Path, hook: str) -> Script | None:
        key = self.rel(directory)
        return next((s for s in self.scripts if (s.directory, s.hook) == (key, hook)), None)

    def block(self, file: Path) -> Block | None:
        return next((b for b in self.blocks if b.file == self.rel(file)), None)

    def saved_path(self, directory: Path, hook: str) -> Path:
        """Where the hook in `directory` goes when sage moves it aside."""
        key = hashlib.sha256(self.rel(directory).encode()).hexdigest()[:12]
        return self.common / SAVED / key / hook

    def with_script(self, entry: Script) -> Record:
        kept = tuple(
            s for s in self.scripts if (s.directory, s.hook) != (entry.directory, entry.hook)
        )
        return replace(self, scripts=(*kept, entry))

    def with_block(self, entry: Block) -> Record:
        kept = tuple(b for b in self.blocks if b.file != entry.file)
        return replace(self, blocks=(*kept, entry))


def load(common: Path) -> Record:
    path = common / RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        scripts = tuple(Script(**s) for s in data.get("scripts", ()))
        blocks = tuple(Block(**b) for b in data.get("blocks", ()))
    except FileNotFoundError:
        return Record(common=common)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise SageError(
            f"cannot read {path}: {exc}",
            hint="it records what `sage hooks install` changed; move it away, then reinstall",
        ) from None
    return Record(common=common, scripts=scripts, blocks=blocks)


def save(record: Record) -> None:
    path = record.common / RECORD
    if not record.scripts and not record.blocks:
        path.unlink(missing_ok=True)
        _prune(record.common / SAVED)
        return
    data = {
        "scripts": [_script_dict(s) for s in record.scripts],
        "blocks": [_block_dict(b) for b in record.blocks],
    }
    files.write_json(path, data)


def _script_dict(entry: Script) -> dict[str, object]:
    return {"hook": entry.hook, "directory": entry.directory, "saved": entry.saved}


def _block_dict(entry: Block) -> dict[str, object]:
    return {
        "hook": entry.hook,
        "file": entry.file,
        "created": entry.created,
        "separated": entry.separated,
    }


def _prune(saved: Path) -> None:
    """Remove the empty folders under `hooks-before/` (and `sage/` itself when empty)."""
    folders = sorted(saved.iterdir(), reverse=True) if saved.is_dir() else []
    for folder in (*folders, saved, saved.parent):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
