"""Git hooks: install sage's pre-commit and commit-msg hooks, and what they check.

The installed scripts only exec back into `sage hook-impl <hook>`, so every decision is made here,
in Python. A hook that was there before is kept as `<hook>.legacy` and run first (the way
pre-commit chains foreign hooks); uninstall moves it back untouched.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sage.lib import files, git, proc, tickets, validation
from sage.lib.errors import ConfigError, IndexFileError, SageError
from sage.lib.project import Project

HOOKS = ("pre-commit", "commit-msg")
MARKER = "# sage-hook: installed by `sage hooks install`"
TRAILER = "Sage-Ticket"

SCRIPT = """\
#!/bin/sh
{marker}; `sage hooks uninstall` restores the hook that was here before.
# It runs {hook}.legacy (the previous hook) first, then sage's checks, all in Python.
SAGE_PYTHON={python}
if [ -x "$SAGE_PYTHON" ]; then
    exec "$SAGE_PYTHON" -m sage hook-impl {hook} --legacy "$0.legacy" -- "$@"
fi
if command -v sage >/dev/null 2>&1; then
    exec sage hook-impl {hook} --legacy "$0.legacy" -- "$@"
fi
echo "sage {hook} hook: neither $SAGE_PYTHON nor sage on PATH" >&2
echo "hint: run \\`sage hooks install\\` again, or \\`sage hooks uninstall\\`" >&2
exit 1
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class HookChange:
    """What install or uninstall did to one hook file."""

    hook: str
    path: Path
    action: str  # installed | updated | unchanged | removed | foreign | absent
    legacy: Path | None = None  # the previous hook: chained (install) or restored (uninstall)


@dataclass(frozen=True, slots=True, kw_only=True)
class HookState:
    hook: str
    path: Path
    state: str  # installed | foreign | absent
    legacy: Path | None = None
    interpreter: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    directory: Path
    hooks_path: str | None  # core.hooksPath, when set
    hooks: tuple[HookState, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """A hook's answer: let the commit through or block it, and what to tell the user."""

    ok: bool
    messages: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


# --- installing -----------------------------------------------------------------------------


def script(hook: str, python: str) -> str:
    return SCRIPT.format(marker=MARKER, hook=hook, python=shlex.quote(python))


def legacy_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.legacy")


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def hooks_path_setting(repo: Path) -> str | None:
    done = git.run(repo, "config", "--get", "core.hooksPath")
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def hooks_dir(repo: Path, *, force: bool = False) -> Path:
    """Where git runs hooks from: the common dir's `hooks/`, shared by every worktree."""
    setting = hooks_path_setting(repo)
    if setting is None:
        return git.common_dir(repo) / "hooks"
    if not force:
        raise SageError(
            f"core.hooksPath is set to {setting!r}, so git does not run hooks from "
            f"{git.common_dir(repo) / 'hooks'}",
            hint="unset it (git config --unset core.hooksPath), or pass --force to install "
            "sage's hooks into that directory",
        )
    return (repo / git.git(repo, "rev-parse", "--git-path", "hooks")).resolve()


def install(repo: Path, *, force: bool = False, python: str | None = None) -> list[HookChange]:
    """Write both hooks; a foreign hook becomes `<hook>.legacy` and is chained. Idempotent."""
    directory = hooks_dir(repo, force=force)
    interpreter = python if python is not None else sys.executable
    paths = [directory / hook for hook in HOOKS]
    for path in paths:
        _refuse_clobbering_legacy(path)
    return [_install_one(path, script(path.name, interpreter)) for path in paths]


def _refuse_clobbering_legacy(path: Path) -> None:
    legacy = legacy_path(path)
    if not _foreign(path) or not os.path.lexists(legacy):
        return
    if _same_file_content(path, legacy):
        return
    raise SageError(
        f"{path} is not sage's hook and {legacy.name} already exists next to it",
        hint="keep one of them (move the other away), then run `sage hooks install` again",
    )


def _foreign(path: Path) -> bool:
    return os.path.lexists(path) and not is_ours(path)


def _same_file_content(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def _install_one(path: Path, text: str) -> HookChange:
    legacy = legacy_path(path)
    if _foreign(path) and os.path.lexists(legacy):
        path.unlink()  # the very same hook is already kept as .legacy (checked before)
    elif _foreign(path):
        os.rename(path, legacy)  # rename keeps content, mode and symlinks exactly
    before = path.read_text(encoding="utf-8") if path.exists() else None
    if before != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, text)
        path.chmod(0o755)
    action = "unchanged" if before == text else ("updated" if before else "installed")
    return HookChange(
        hook=path.name, path=path, action=action,
        legacy=legacy if os.path.lexists(legacy) else None,
    )  # fmt: skip


def uninstall(repo: Path) -> list[HookChange]:
    """Remove sage's hooks and put each previous hook back, byte for byte."""
    current = hooks_dir(repo, force=True)
    changes = [_uninstall_one(current / hook) for hook in HOOKS]
    common = git.common_dir(repo) / "hooks"
    if common != current:  # installed before core.hooksPath was set
        others = (_uninstall_one(common / hook) for hook in HOOKS)
        changes += [c for c in others if c.action not in ("absent", "foreign")]
    return changes


def _uninstall_one(path: Path) -> HookChange:
    legacy = legacy_path(path)
    if _foreign(path):
        return HookChange(hook=path.name, path=path, action="foreign")
    ours = os.path.lexists(path)
    if ours:
        path.unlink()
    restored = os.path.lexists(legacy)
    if restored:
        os.rename(legacy, path)
    action = "removed" if ours else ("restored" if restored else "absent")
    return HookChange(hook=path.name, path=path, action=action, legacy=legacy if restored else None)


def status(repo: Path) -> Status:
    setting = hooks_path_setting(repo)
    directory = hooks_dir(repo, force=True)
    return Status(
        directory=directory,
        hooks_path=setting,
        hooks=tuple(_state(directory / hook) for hook in HOOKS),
    )


def _state(path: Path) -> HookState:
    legacy = legacy_path(path)
    kept = legacy if os.path.lexists(legacy) else None
    if not os.path.lexists(path):
        return HookState(hook=path.name, path=path, state="absent", legacy=kept)
    if not is_ours(path):
        return HookState(hook=path.name, path=path, state="foreign")
    found = re.search(r"^SAGE_PYTHON=(.*)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    python = shlex.split(found.group(1))[0] if found else None
    return HookState(hook=path.name, path=path, state="installed", legacy=kept, interpreter=python)


# --- what the hooks check -------------------------------------------------------------------


def run_legacy(legacy: Path, args: Sequence[str]) -> proc.Result | None:
    """Run the previous hook with the same arguments and environment; stdin is inherited."""
    if not legacy.is_file() or not os.access(legacy, os.X_OK):
        return None  # git would not have run a non-executable hook either
    try:
        argv = [str(legacy.absolute()), *args]
        return proc.run(argv, check=False, env=proc.clean_env(keep_git=True))
    except (OSError, SageError) as exc:  # e.g. a script without a shebang line
        return proc.Result(returncode=126, stdout="", stderr=f"cannot run {legacy}: {exc}\n")


def index_relpath(project: Project, worktree: Path) -> str | None:
    """The index's path inside the repository (the same in every worktree); None if outside."""
    for top in (project.root, worktree):
        try:
            return project.index_path.relative_to(top).as_posix()
        except ValueError:
            continue
    return None


def _index_env() -> dict[str, str]:
    # `git commit -a` and `git commit PATH` stage into a temporary index named by GIT_INDEX_FILE;
    # the stripped environment would read the real index, which does not hold the commit yet.
    index = os.environ.get("GIT_INDEX_FILE")
    return {"GIT_INDEX_FILE": os.path.abspath(index)} if index else {}


def check_staged_index(project: Project, worktree: Path) -> Verdict:
    """pre-commit: when the ticket index is staged, the staged version must validate."""
    rel = index_relpath(project, worktree)
    if rel is None:
        return Verdict(ok=True)
    env = _index_env()
    staged = git.git(
        worktree, "--literal-pathspecs", "diff", "--cached", "--name-only", "--diff-filter=d",
        "--", rel, env=env,
    )  # fmt: skip
    if not staged:
        return Verdict(ok=True)
    return _judge_index(git.git(worktree, "show", f":{rel}", env=env), rel)


def _judge_index(text: str, rel: str) -> Verdict:
    try:
        index = tickets.parse(text, Path(rel))
    except IndexFileError as exc:
        return _blocked(rel, [exc.message])
    errors = validation.validate(index).errors
    return _blocked(rel, [p.message for p in errors]) if errors else Verdict(ok=True)


def _blocked(rel: str, problems: Sequence[str]) -> Verdict:
    head = f"sage pre-commit: the staged {rel} has {len(problems)} error(s); commit blocked"
    hint = "hint: fix the index, `git add` it, commit again (`sage validate` shows every problem)"
    return Verdict(ok=False, messages=(head, *(f"  error: {m}" for m in problems), hint))


def strip_lines(text: str, patterns: Sequence[str]) -> str:
    """Drop lines matching any pattern, and the blank lines they leave behind at the end."""
    regexes = _compile(patterns)
    lines = text.splitlines()
    kept: list[str] = []
    after_strip = False
    for line in lines:
        if any(r.search(line) for r in regexes):
            after_strip = True
            continue
        blank = not line.strip()
        if blank and after_strip and (not kept or not kept[-1].strip()):
            continue  # the blank line that only separated a stripped line
        after_strip = after_strip and blank
        kept.append(line)
    if len(kept) == len(lines):
        return text
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n" if kept else ""


def _compile(patterns: Sequence[str]) -> list[re.Pattern[str]]:
    try:
        return [re.compile(p) for p in patterns]
    except re.error as exc:
        raise ConfigError(
            f"[hooks] strip_lines: bad regular expression {exc.pattern!r}: {exc}",
            hint="fix it in .sage/config.toml (Python regular expression syntax)",
        ) from None


def ticket_trailers(worktree: Path, message: str) -> list[str]:
    """The IDs named by `Sage-Ticket:` trailers, as git parses trailers."""
    out = git.git(worktree, "interpret-trailers", "--parse", input=message)
    named = []
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == TRAILER.lower() and value.strip():
            named.append(value.strip())
    return named


def check_message(project: Project, worktree: Path, message_file: Path) -> Verdict:
    """commit-msg: strip the configured lines, then check Sage-Ticket trailers against the index."""
    raw = message_file.read_bytes().decode("utf-8", "surrogateescape")
    message = strip_lines(raw, project.config.strip_lines)
    if message != raw:
        message_file.write_bytes(message.encode("utf-8", "surrogateescape"))
    named = ticket_trailers(worktree, message)
    return _check_tickets(project, named) if named else Verdict(ok=True)


def _check_tickets(project: Project, named: Sequence[str]) -> Verdict:
    try:
        known = tickets.load(project.index_path).by_id()
    except IndexFileError as exc:
        warning = f"sage commit-msg: cannot check {TRAILER}: {exc.message}"
        return Verdict(ok=True, messages=(warning,))
    unknown = [tid for tid in named if tid not in known]
    if not unknown:
        return Verdict(ok=True)
    where = index_relpath(project, project.root) or str(project.index_path)
    return Verdict(
        ok=False,
        messages=(
            f"sage commit-msg: {TRAILER}: {', '.join(unknown)} is not a ticket in {where}; "
            "commit blocked",
            "hint: fix the trailer (`sage ready` lists open tickets), or add the ticket first",
        ),
    )
