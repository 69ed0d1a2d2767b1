"""`sage hooks install|uninstall|status`, and the hidden `sage hook-impl` the hook scripts run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from sage.commands._common import JsonOpt, emit_json, open_project, sub_app
from sage.lib import git, hooks
from sage.lib.errors import UsageError

ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force", help="Install even though core.hooksPath is set (into that directory)."
    ),
]

app = sub_app(
    "hooks",
    "Git hooks: validate a staged ticket index (pre-commit); strip AI attribution lines "
    "and check Sage-Ticket trailers (commit-msg).",
)


def _repo() -> Path:
    return git.toplevel(Path.cwd())


@app.command("install")
def install(force: ForceOpt = False) -> int:
    """Install the pre-commit and commit-msg hooks for every worktree of this repository.

    A hook that is already there is kept as <hook>.legacy and runs first; `sage hooks uninstall`
    puts it back. Reinstalling is safe.
    """
    repo = _repo()
    setting = hooks.hooks_path_setting(repo)
    changes = hooks.install(repo, force=force)
    if setting is not None:
        typer.echo(f"core.hooksPath is {setting!r}: installed there (--force)")
    for change in changes:
        typer.echo(_installed(change))
    return 0


def _installed(change: hooks.HookChange) -> str:
    verb = {"installed": "installed", "updated": "updated", "unchanged": "up to date"}
    line = f"{change.hook}: {verb[change.action]} ({change.path})"
    if change.legacy:
        line += f"\n  chained: the previous hook, kept as {change.legacy.name}, runs first"
    return line


@app.command("uninstall")
def uninstall() -> int:
    """Remove sage's hooks and restore the hooks that were there before, byte for byte."""
    for change in hooks.uninstall(_repo()):
        typer.echo(_removed(change))
    return 0


def _removed(change: hooks.HookChange) -> str:
    if change.action == "foreign":
        return f"{change.hook}: not sage's hook, left alone ({change.path})"
    if change.action == "absent":
        return f"{change.hook}: not installed"
    restored = f"; restored the previous hook from {change.legacy.name}" if change.legacy else ""
    what = "removed sage's hook" if change.action == "removed" else "sage's hook was gone"
    return f"{change.hook}: {what}{restored} ({change.path})"


@app.command("status")
def status(json: JsonOpt = False) -> int:
    """Show whether sage's hooks are installed, and which previous hooks they chain."""
    found = hooks.status(_repo())
    if json:
        emit_json(_status_dict(found))
        return 0
    typer.echo(f"hooks directory: {found.directory}")
    if found.hooks_path is not None:
        typer.echo(f"core.hooksPath: {found.hooks_path!r} (git runs hooks from there)")
    for state in found.hooks:
        typer.echo(f"  {state.hook}: {_state(state)}")
    return 0


def _state(state: hooks.HookState) -> str:
    if state.state == "foreign":
        return "another tool's hook (not sage's)"
    if state.state == "absent":
        return "not installed"
    text = f"installed (python: {state.interpreter or 'sage on PATH'})"
    return text + (f", chains {state.legacy.name}" if state.legacy else "")


def _status_dict(found: hooks.Status) -> dict[str, object]:
    return {
        "directory": str(found.directory),
        "hooks_path": found.hooks_path,
        "hooks": [
            {
                "hook": s.hook,
                "path": str(s.path),
                "state": s.state,
                "legacy": str(s.legacy) if s.legacy else None,
                "interpreter": s.interpreter,
            }
            for s in found.hooks
        ],
    }


def hook_impl(
    hook: Annotated[str, typer.Argument(help="pre-commit or commit-msg.")],
    args: Annotated[list[str] | None, typer.Argument(help="The hook's own arguments.")] = None,
    legacy: Annotated[
        str | None, typer.Option("--legacy", metavar="PATH", help="A previous hook to run first.")
    ] = None,
) -> int:
    """Run sage's checks for one git hook (the installed hook scripts call this)."""
    if hook not in hooks.HOOKS:
        raise UsageError(f"unknown hook {hook!r}", hint=f"hooks are {', '.join(hooks.HOOKS)}")
    argv = list(args or [])
    code = _run_legacy(hook, Path(legacy), argv) if legacy else 0
    if code:
        return code
    verdict = _check(hook, argv)
    for line in verdict.messages:
        typer.echo(line, err=True)
    return verdict.exit_code


def _run_legacy(hook: str, legacy: Path, argv: list[str]) -> int:
    done = hooks.run_legacy(legacy, argv)
    if done is None:
        return 0
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode:
        typer.echo(f"sage {hook}: the previous hook {legacy.name} failed (exit {done.returncode})",
                   err=True)  # fmt: skip
    return done.returncode


def _check(hook: str, argv: list[str]) -> hooks.Verdict:
    worktree = _repo()
    project = open_project(None)
    if hook == "pre-commit":
        return hooks.check_staged_index(project, worktree)
    if not argv:
        raise UsageError("commit-msg needs the commit message file", hint="git passes it")
    return hooks.check_message(project, worktree, Path(argv[0]))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="hooks")
    root.command("hook-impl", hidden=True, context_settings={"ignore_unknown_options": True})(
        hook_impl
    )
