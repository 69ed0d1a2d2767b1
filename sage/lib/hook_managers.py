"""The other hook managers sage lives next to: the pre-commit framework and husky.

Each keeps its own scripts and its own names, so sage never takes them over: it is added through
the manager's own mechanism instead. pre-commit owns `.git/hooks/<hook>` (and `<hook>.legacy`,
its migration mode), so sage points the user to its framework hooks. husky 9 sets
`core.hooksPath` to `.husky/_`, whose stubs dispatch on their own file name to the user's
`.husky/<hook>`, so sage adds a marked block to that file.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

# How pre-commit recognises its own hook script (pre_commit/commands/install_uninstall.py).
PRE_COMMIT_IDS = (
    b"138fd403232d2ddd5efb44317e38bf03",
    b"4d9958c90bc262f47553e2c073f14cfe",
    b"d8ee923c46731b42cd95cc869add4062",
    b"49fd668cb42069aa1b6048464be5d395",
    b"79f09a650522a87b0da915d0d983b2de",
    b"e358c9dae00eac5d06b38dfdb1e33a8c",
)
PRE_COMMIT_CONFIG = ".pre-commit-config.yaml"
FRAMEWORK_IDS = {"pre-commit": "sage-validate", "commit-msg": "sage-commit-msg"}

BLOCK_START = "# >>> sage hooks: added by `sage hooks install`; `sage hooks uninstall` removes it"
BLOCK_END = "# <<< sage hooks"
BLOCK = """\
{start}
if [ -x {python} ]; then {python} -m sage hook-impl {hook} -- "$@" || exit; \
else sage hook-impl {hook} -- "$@" || exit; fi
{end}
"""
_BLOCK_RE = re.compile(
    rb"^" + re.escape(BLOCK_START.encode()) + rb"\n.*?^" + re.escape(BLOCK_END.encode()) + rb"\n",
    re.MULTILINE | re.DOTALL,
)


# --- pre-commit -----------------------------------------------------------------------------


def is_pre_commit_script(path: Path) -> bool:
    try:
        contents = path.read_bytes()
    except OSError:
        return False
    return any(marker in contents for marker in PRE_COMMIT_IDS)


def framework_configured(repo: Path, hook: str) -> bool:
    """Whether .pre-commit-config.yaml names sage's framework hook for this git hook."""
    try:
        text = (repo / PRE_COMMIT_CONFIG).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    pattern = rf"^[\s-]*id:\s*['\"]?{re.escape(FRAMEWORK_IDS[hook])}['\"]?\s*(#.*)?$"
    return re.search(pattern, text, re.MULTILINE) is not None


def framework_snippet(hooks: tuple[str, ...] | list[str], index_rel: str) -> str:
    """The `repos:` entry that runs sage's checks from pre-commit, offline (`repo: local`)."""
    lines = ["-   repo: local", "    hooks:"]
    for hook in hooks:
        lines += _framework_hook(hook, index_rel)
    return "\n".join(lines) + "\n"


def _framework_hook(hook: str, index_rel: str) -> list[str]:
    entry = [f"    -   id: {FRAMEWORK_IDS[hook]}"]
    if hook == "pre-commit":
        entry += [
            "        name: sage validate (ticket index)",
            "        entry: sage hook-impl pre-commit --",
            f"        files: ^{re.escape(index_rel)}$",
        ]
    else:
        entry += [
            "        name: sage commit message (strip AI attribution, check Sage-Ticket)",
            "        entry: sage hook-impl commit-msg --",
        ]
    return [*entry, "        language: system", f"        stages: [{hook}]"]


# --- husky ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Husky:
    """husky 9: git runs `<root>/_/<hook>`, a stub that runs the user's `<root>/<hook>`."""

    root: Path

    def hook_file(self, hook: str) -> Path:
        return self.root / hook

    def stub(self, hook: str) -> Path:
        return self.root / "_" / hook


def husky(hooks_dir: Path) -> Husky | None:
    """husky 9 when git's hooks directory is one of its `_/` stub directories."""
    dispatcher = hooks_dir / "h"
    if hooks_dir.name != "_" or not dispatcher.is_file():
        return None
    try:
        text = dispatcher.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return Husky(root=hooks_dir.parent) if "husky" in text else None


def block(hook: str, python: str) -> bytes:
    quoted = shlex.quote(python)
    text = BLOCK.format(start=BLOCK_START, end=BLOCK_END, python=quoted, hook=hook)
    return text.encode()


def find_block(contents: bytes) -> re.Match[bytes] | None:
    return _BLOCK_RE.search(contents)


def add_block(contents: bytes | None, text: bytes) -> tuple[bytes, bool]:
    """The file with sage's block appended (or replaced), and whether a newline was added."""
    found = find_block(contents or b"")
    if contents is not None and found:
        return contents[: found.start()] + text + contents[found.end() :], False
    separate = bool(contents) and not (contents or b"").endswith(b"\n")
    return (contents or b"") + (b"\n" if separate else b"") + text, separate


def remove_block(contents: bytes, separated: bool) -> bytes | None:
    """The file without sage's block (and the newline sage added before it); None if absent."""
    found = find_block(contents)
    if found is None:
        return None
    start = found.start()
    if separated and start > 0 and contents[start - 1 : start] == b"\n":
        start -= 1
    return contents[:start] + contents[found.end() :]
