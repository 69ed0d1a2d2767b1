"""Git hooks: install sage's pre-commit and commit-msg hooks, and what they check.

The installed scripts only exec back into `sage hook-impl <hook>`, so every decision is made here,
in Python. sage lives next to other hook managers instead of taking their place: a plain hook that
was there before is moved aside (out of the hooks directory, see `hook_record`) and run first; a
hook owned by pre-commit is left to it (sage's framework hooks run from its config); under husky,
sage adds a marked block to husky's own hook file. Uninstall undoes what the record says sage did.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from sage.lib import files, git, hook_managers, hook_record, proc, tickets, validation
from sage.lib.errors import ConfigError, IndexFileError, SageError
from sage.lib.hook_record import Record
from sage.lib.project import Project
from sage.lib.words import counted

HOOKS = ("pre-commit", "commit-msg")
MARKER = "# sage-hook: installed by `sage hooks install`"
TRAILER = "Sage-Ticket"

SCRIPT = """\
#!/bin/sh
{marker}; `sage hooks uninstall` restores the hook that was here before.
# sage keeps that hook in the git dir (sage/hooks-before/) and runs it first, then its own checks.
SAGE_PYTHON={python}
if [ -x "$SAGE_PYTHON" ]; then
    exec "$SAGE_PYTHON" -m sage hook-impl {hook} --chained -- "$@"
fi
if command -v sage >/dev/null 2>&1; then
    exec sage hook-impl {hook} --chained -- "$@"
fi
echo "sage {hook} hook: neither $SAGE_PYTHON nor sage on PATH" >&2
echo "hint: run \\`sage hooks install\\` again, or \\`sage hooks uninstall\\`" >&2
exit 1
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class HookChange:
    """What install or uninstall did for one hook."""

    hook: str
    path: Path  # the file sage wrote, edited or removed (or left to its manager)
    action: str  # installed | updated | unchanged | framework | removed | kept | foreign | absent
    manager: str | None = None  # pre-commit | husky: the manager sage went through
    previous: Path | None = None  # install: the hook sage moved aside; uninstall: put back here
    configured: bool = False  # framework: .pre-commit-config.yaml already names sage's hook


@dataclass(frozen=True, slots=True, kw_only=True)
class HookState:
    hook: str
    path: Path
    state: str  # installed | missing (its manager runs without sage) | foreign | absent
    manager: str | None = None  # pre-commit | husky, when that tool is in charge of the hook
    how: str | None = None  # script | chained (pre-commit's legacy hook) | framework | block
    previous: Path | None = None  # the hook sage moved aside and runs first
    interpreter: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Status:
    directory: Path
    hooks_path: str | None  # core.hooksPath, when set
    manager: str | None  # pre-commit | husky, when one of them is in charge of a hook
    hooks: tuple[HookState, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """A hook's answer: let the commit through or block it, and what to tell the user."""

    ok: bool
    messages: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


# --- where hooks live -----------------------------------------------------------------------


def script(hook: str, python: str) -> str:
    return SCRIPT.format(marker=MARKER, hook=hook, python=shlex.quote(python))


def legacy_path(path: Path) -> Path:
    """pre-commit's name for the hook it chains (its migration mode): never sage's to take."""
    return path.with_name(f"{path.name}.legacy")


def is_ours(path: Path) -> bool:
    try:
        return MARKER in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def _old_style(path: Path) -> bool:
    """A script from an earlier sage, which kept the previous hook as `<hook>.legacy`."""
    return is_ours(path) and '"$0.legacy"' in path.read_text(encoding="utf-8", errors="replace")


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


def husky(repo: Path) -> hook_managers.Husky | None:
    return hook_managers.husky(hooks_dir(repo, force=True))


def _record(repo: Path) -> Record:
    return hook_record.load(git.common_dir(repo))


def previous_hook(repo: Path, hook: str) -> Path | None:
    """The hook sage moved aside to install its own here: the installed script runs it first."""
    record = _record(repo)
    entry = record.script(hooks_dir(repo, force=True), hook)
    return record.path(entry.saved) if entry is not None and entry.saved else None


# --- installing -----------------------------------------------------------------------------


def install(repo: Path, *, force: bool = False, python: str | None = None) -> list[HookChange]:
    """Add sage to every hook, through whichever manager is in charge of it. Idempotent."""
    interpreter = python if python is not None else sys.executable
    found = husky(repo)
    if found is not None:
        return _install_blocks(_record(repo), found, interpreter)
    directory = hooks_dir(repo, force=force)
    record = _record(repo)
    for hook in HOOKS:
        _refuse_clobbering_saved(record, directory / hook)
    changes = []
    for hook in HOOKS:
        change, record = _install_script(repo, record, directory / hook, script(hook, interpreter))
        changes.append(change)
    return changes


def _previous(path: Path) -> Path | None:
    """The hook that install moves aside: a foreign one, or an earlier sage's `.legacy`."""
    if os.path.lexists(path) and not is_ours(path):
        return path
    legacy = legacy_path(path)
    return legacy if _old_style(path) and os.path.lexists(legacy) else None


def _refuse_clobbering_saved(record: Record, path: Path) -> None:
    if hook_managers.is_pre_commit_script(path):
        return
    previous = _previous(path)
    saved = record.saved_path(path.parent, path.name)
    if previous is None or not os.path.lexists(saved) or _same_file_content(previous, saved):
        return
    raise SageError(
        f"{path} is not sage's hook, and sage already keeps an earlier one for it ({saved})",
        hint=f"keep one of them (move {path.name} away, or delete {saved}), "
        "then run `sage hooks install` again",
    )


def _same_file_content(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def _install_script(repo: Path, record: Record, path: Path, text: str) -> tuple[HookChange, Record]:
    if hook_managers.is_pre_commit_script(path):
        return _leave_to_pre_commit(repo, path), record
    entry = record.script(path.parent, path.name) or hook_record.Script(
        hook=path.name, directory=record.rel(path.parent)
    )
    previous = _previous(path)
    saved = record.saved_path(path.parent, path.name)
    if previous is not None:
        entry = replace(entry, saved=record.rel(saved))
    record = record.with_script(entry)
    hook_record.save(record)  # first: a crash must never leave a moved hook unrecorded
    if previous is not None:
        _move_aside(previous, saved)
    action = _write_script(path, text)
    kept = record.path(entry.saved) if entry.saved else None
    return HookChange(hook=path.name, path=path, action=action, previous=kept), record


def _leave_to_pre_commit(repo: Path, path: Path) -> HookChange:
    """pre-commit owns this hook: sage runs from its config, or as the legacy hook it chains."""
    legacy = legacy_path(path)
    if is_ours(legacy):  # `pre-commit install` moved sage's script there: it already runs
        return HookChange(hook=path.name, path=legacy, action="unchanged", manager="pre-commit")
    configured = hook_managers.framework_configured(repo, path.name)
    return HookChange(
        hook=path.name, path=path, action="framework", manager="pre-commit", configured=configured
    )


def _move_aside(previous: Path, saved: Path) -> None:
    if os.path.lexists(saved):  # the very same hook is already kept (checked before)
        previous.unlink()
        return
    saved.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(previous, saved)  # a rename: content, mode and symlinks stay exactly


def _write_script(path: Path, text: str) -> str:
    before = path.read_text(encoding="utf-8") if path.exists() else None
    if before == text:
        return "unchanged"
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, text)
    path.chmod(0o755)
    return "updated" if before else "installed"


def _install_blocks(record: Record, found: hook_managers.Husky, python: str) -> list[HookChange]:
    changes = []
    for hook in HOOKS:
        if is_ours(found.stub(hook)):  # an earlier sage's script over husky's stub: undo it
            _uninstall_unrecorded(found.stub(hook))
        change, record = _install_block(record, found.hook_file(hook), python)
        changes.append(change)
    return changes


def _install_block(record: Record, file: Path, python: str) -> tuple[HookChange, Record]:
    before = file.read_bytes() if file.exists() else None
    after, separated = hook_managers.add_block(before, hook_managers.block(file.name, python))
    change = HookChange(hook=file.name, path=file, action="unchanged", manager="husky")
    if after == before:
        return change, record
    had_block = before is not None and hook_managers.find_block(before) is not None
    entry = record.block(file) if had_block else None
    entry = entry or hook_record.Block(
        hook=file.name, file=record.rel(file), created=before is None, separated=separated
    )
    record = record.with_block(entry)
    hook_record.save(record)
    _write_bytes(file, after)
    return replace(change, action="updated" if had_block else "installed"), record


def _write_bytes(file: Path, data: bytes) -> None:
    """Write in place, so the file keeps its mode (husky's hook files are the user's)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(file.stat().st_mode) if file.exists() else 0o644
    file.write_bytes(data)
    file.chmod(mode)


def framework_snippet(project: Project, repo: Path, names: Sequence[str]) -> str:
    """The `.pre-commit-config.yaml` entry that runs sage's checks for these hooks."""
    rel = index_relpath(project, repo) or project.config.index
    return hook_managers.framework_snippet(list(names), rel)


# --- uninstalling ---------------------------------------------------------------------------


def uninstall(repo: Path) -> list[HookChange]:
    """Undo what the record says install did: remove sage, put each moved hook back exactly."""
    record = _record(repo)
    changes = [_uninstall_script(record, entry) for entry in record.scripts]
    changes += [_uninstall_block(record, entry) for entry in record.blocks]
    hook_record.save(Record(common=record.common))
    done = {c.path.parent / c.hook for c in changes}
    return changes + _uninstall_leftovers(repo, done)


def _uninstall_leftovers(repo: Path, done: set[Path]) -> list[HookChange]:
    """sage's scripts the record does not name (from an earlier sage), and what else is there."""
    current = hooks_dir(repo, force=True)
    changes = []
    for directory in dict.fromkeys((current, git.common_dir(repo) / "hooks")):
        stubs = hook_managers.husky(directory) is not None  # husky's own: not worth a line
        for path in (directory / hook for hook in HOOKS if directory / hook not in done):
            change = _uninstall_unrecorded(path)
            if change.action == "removed" or (directory == current and not stubs):
                changes.append(change)
    return changes


def _uninstall_script(record: Record, entry: hook_record.Script) -> HookChange:
    path = record.path(entry.directory) / entry.hook
    saved = record.path(entry.saved) if entry.saved else None
    where = next((p for p in (path, legacy_path(path)) if is_ours(p)), None)
    if where is not None:
        where.unlink()
    target = where if where is not None else (None if os.path.lexists(path) else path)
    change = HookChange(
        hook=entry.hook, path=where or path, action="removed" if where else "absent"
    )
    if saved is None or not os.path.lexists(saved):
        return change
    if target is None:  # something else took sage's place: keep the moved hook where it is
        return replace(change, action="kept", previous=saved)
    shutil.move(saved, target)
    return replace(change, previous=target)


def _uninstall_block(record: Record, entry: hook_record.Block) -> HookChange:
    file = record.path(entry.file)
    change = HookChange(hook=entry.hook, path=file, action="absent", manager="husky")
    contents = file.read_bytes() if file.is_file() else b""
    after = hook_managers.remove_block(contents, entry.separated)
    if after is None:
        return change
    if entry.created and not after:
        file.unlink()
    else:
        _write_bytes(file, after)
    return replace(change, action="removed")


def _uninstall_unrecorded(path: Path) -> HookChange:
    """A hook with no record: foreign, absent, or sage's from before the record existed."""
    if not os.path.lexists(path):
        return HookChange(hook=path.name, path=path, action="absent")
    if not is_ours(path):
        owner = "pre-commit" if hook_managers.is_pre_commit_script(path) else None
        return HookChange(hook=path.name, path=path, action="foreign", manager=owner)
    old_style = _old_style(path)
    path.unlink()
    legacy = legacy_path(path)
    if not (old_style and os.path.lexists(legacy)):
        return HookChange(hook=path.name, path=path, action="removed")
    os.rename(legacy, path)
    return HookChange(hook=path.name, path=path, action="removed", previous=path)


# --- status ---------------------------------------------------------------------------------


def status(repo: Path) -> Status:
    directory = hooks_dir(repo, force=True)
    record = _record(repo)
    found = hook_managers.husky(directory)
    if found is not None:
        states = tuple(_block_state(found.hook_file(hook)) for hook in HOOKS)
    else:
        states = tuple(_state(repo, record, directory / hook) for hook in HOOKS)
    managers = [s.manager for s in states if s.manager]
    return Status(
        directory=directory,
        hooks_path=hooks_path_setting(repo),
        manager=managers[0] if managers else None,
        hooks=states,
    )


def _state(repo: Path, record: Record, path: Path) -> HookState:
    if hook_managers.is_pre_commit_script(path):
        return _pre_commit_state(repo, record, path)
    if not os.path.lexists(path):
        return HookState(hook=path.name, path=path, state="absent")
    if not is_ours(path):
        return HookState(hook=path.name, path=path, state="foreign")
    return _script_state(record, path, path)


def _script_state(
    record: Record, path: Path, where: Path, *, manager: str | None = None
) -> HookState:
    entry = record.script(path.parent, path.name)
    saved = record.path(entry.saved) if entry is not None and entry.saved else None
    found = re.search(r"^SAGE_PYTHON=(.*)$", where.read_text(encoding="utf-8"), re.MULTILINE)
    python = shlex.split(found.group(1))[0] if found else None
    return HookState(
        hook=path.name, path=where, state="installed", manager=manager,
        how="chained" if manager else "script",
        previous=saved if saved is not None and os.path.lexists(saved) else None,
        interpreter=python,
    )  # fmt: skip


def _pre_commit_state(repo: Path, record: Record, path: Path) -> HookState:
    if is_ours(legacy_path(path)):
        return _script_state(record, path, legacy_path(path), manager="pre-commit")
    configured = hook_managers.framework_configured(repo, path.name)
    return HookState(
        hook=path.name, path=path, state="installed" if configured else "missing",
        manager="pre-commit", how="framework",
    )  # fmt: skip


def _block_state(file: Path) -> HookState:
    present = file.is_file() and hook_managers.find_block(file.read_bytes()) is not None
    return HookState(
        hook=file.name, path=file, state="installed" if present else "missing",
        manager="husky", how="block",
    )  # fmt: skip


# --- what the hooks check -------------------------------------------------------------------


def run_legacy(legacy: Path, args: Sequence[str]) -> proc.Result | None:
    """Run the previous hook with the same arguments and environment; stdin is inherited."""
    if not legacy.is_file() or not os.access(legacy, os.X_OK):
        return None  # git would not have run a non-executable hook either
    try:
        argv = [str(legacy.absolute()), *args]
        return proc.run(argv, check=False, env=proc.clean_env(keep_git=True), interruptible=True)
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


def check_index_files(names: Sequence[str]) -> Verdict:
    """pre-commit framework: every file it passes is a ticket index, checked as it is on disk
    (during a commit pre-commit has stashed what is not staged; `run --all-files` checks all)."""
    verdicts = [_judge_file(Path(name)) for name in names]
    messages = tuple(m for v in verdicts for m in v.messages)
    return Verdict(ok=all(v.ok for v in verdicts), messages=messages)


def _judge_file(path: Path) -> Verdict:
    try:
        text = path.read_bytes().decode("utf-8", "replace")
    except OSError as exc:
        return _blocked(f"sage validate: cannot read {path}: {exc.strerror}", [])
    return _judge_index(text, path.as_posix(), head="sage validate: {rel} has {errors}")


def _judge_index(text: str, rel: str, *, head: str = "") -> Verdict:
    head = head or "sage pre-commit: the staged {rel} has {errors}; commit blocked"
    try:
        index = tickets.parse(text, Path(rel))
    except IndexFileError as exc:
        return _blocked(head.format(rel=rel, errors=counted(1, "error")), [exc.message])
    errors = [p.message for p in validation.validate(index).errors]
    if not errors:
        return Verdict(ok=True)
    return _blocked(head.format(rel=rel, errors=counted(len(errors), "error")), errors)


def _blocked(head: str, problems: Sequence[str]) -> Verdict:
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
