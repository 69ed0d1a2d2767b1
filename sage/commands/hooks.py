"""`sage hooks install|uninstall|status`, and the hidden `sage hook-impl` the hook scripts run."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from sage.commands._common import JsonOpt, emit_json, open_project, sub_app
from sage.lib import git, hook_managers, hooks
from sage.lib.errors import UsageError

ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Install even though core.hooksPath is set to a directory no known manager owns "
        "(into that directory). Not needed for husky.",
    ),
]

app = sub_app(
    "hooks",
    "Git hooks: validate a staged ticket index (pre-commit); strip AI attribution lines "
    "and check Sage-Ticket trailers (commit-msg). Works next to pre-commit and husky.",
)


def _repo() -> Path:
    return git.toplevel(Path.cwd())


@app.command("install")
def install(force: ForceOpt = False) -> int:
    """Add sage's pre-commit and commit-msg hooks for every worktree of this repository.

    A plain hook that is already there is moved aside (into the git dir) and runs first. A hook
    owned by pre-commit is left to it: sage prints the .pre-commit-config.yaml entry that runs its
    checks. Under husky, sage adds a marked block to .husky/pre-commit and .husky/commit-msg.
    `sage hooks uninstall` undoes exactly this. Reinstalling is safe.
    """
    repo = _repo()
    setting = hooks.hooks_path_setting(repo)
    changes = hooks.install(repo, force=force)
    if setting is not None and not any(c.manager == "husky" for c in changes):
        typer.echo(f"core.hooksPath is {setting!r}: installed there (--force)")
    for change in changes:
        typer.echo(_installed(change))
    _advise(repo, changes)
    return 0


def _installed(change: hooks.HookChange) -> str:
    verb = {"installed": "installed", "updated": "updated", "unchanged": "up to date"}
    if change.manager == "husky":
        return f"{change.hook}: sage's block {verb[change.action]} in {change.path} (husky runs it)"
    if change.manager == "pre-commit":
        return _pre_commit_line(change)
    line = f"{change.hook}: {verb[change.action]} ({change.path})"
    if change.previous:
        line += f"\n  chained: the previous hook runs first (sage keeps it as {change.previous})"
    return line


def _pre_commit_line(change: hooks.HookChange) -> str:
    if change.action == "unchanged":
        return f"{change.hook}: pre-commit runs sage's hook first (as {change.path.name})"
    if change.configured:
        name = hook_managers.FRAMEWORK_IDS[change.hook]
        return f"{change.hook}: pre-commit's hook, which runs {name} from .pre-commit-config.yaml"
    return f"{change.hook}: pre-commit's hook, left alone ({change.path})"


def _advise(repo: Path, changes: list[hooks.HookChange]) -> None:
    missing = [c.hook for c in changes if c.action == "framework" and not c.configured]
    if missing:
        snippet = hooks.framework_snippet(open_project(None), repo, missing)
        typer.echo(
            f"\npre-commit manages {' and '.join(missing)}. To run sage's checks from it, add "
            f"this to the `repos:` list in {hook_managers.PRE_COMMIT_CONFIG} (it needs `sage` "
            "on PATH; sage's .pre-commit-hooks.yaml offers the same hooks as a remote repo):\n"
        )
        typer.echo(snippet, nl=False)
        if shutil.which("sage") is None:
            typer.echo(f"note: `sage` is not on PATH here; pre-commit needs it there "
                       f"(or use `{sys.executable} -m sage` as the entry's program)")  # fmt: skip
    if any(c.manager == "husky" and c.action != "unchanged" for c in changes):
        typer.echo("\nhusky's hook files belong to the repository: commit them to share the "
                   "change, or run `sage hooks uninstall` to take it out again")  # fmt: skip


@app.command("uninstall")
def uninstall() -> int:
    """Undo what `sage hooks install` did, and only that: remove sage's scripts and blocks and
    put back each hook it moved aside, byte for byte (also after pre-commit or husky reinstalled)."""
    for change in hooks.uninstall(_repo()):
        typer.echo(_removed(change))
    return 0


def _removed(change: hooks.HookChange) -> str:
    if change.action == "foreign":
        owner = f"{change.manager}'s hook" if change.manager else "not sage's hook"
        return f"{change.hook}: {owner}, left alone ({change.path})"
    if change.action == "kept":
        return (f"{change.hook}: {change.path} is no longer sage's hook, so the hook sage had "
                f"moved aside stays at {change.previous}")  # fmt: skip
    if change.manager == "husky":
        done = "removed sage's block from" if change.action == "removed" else "no sage block in"
        return f"{change.hook}: {done} {change.path}"
    if change.action == "absent" and not change.previous:
        return f"{change.hook}: not installed"
    restored = "; restored the previous hook there" if change.previous else ""
    what = "removed sage's hook" if change.action == "removed" else "sage's hook was gone"
    return f"{change.hook}: {what}{restored} ({change.path})"


@app.command("status")
def status(json: JsonOpt = False) -> int:
    """Show which manager (none, pre-commit or husky) runs each hook, and whether sage runs there."""
    found = hooks.status(_repo())
    if json:
        emit_json(_status_dict(found))
        return 0
    typer.echo(f"hooks directory: {found.directory}")
    if found.hooks_path is not None:
        typer.echo(f"core.hooksPath: {found.hooks_path!r} (git runs hooks from there)")
    typer.echo(f"managed by: {found.manager or 'git (no hook manager)'}")
    for state in found.hooks:
        typer.echo(f"  {state.hook}: {_state(state)}")
    return 0


def _state(state: hooks.HookState) -> str:
    if state.state == "foreign":
        return "another tool's hook (not sage's)"
    if state.state == "absent":
        return "not installed"
    if state.how in ("framework", "block"):
        return _managed_state(state)
    where = f", as {state.path.name}, which pre-commit runs first" if state.how == "chained" else ""
    text = f"installed{where} (python: {state.interpreter or 'sage on PATH'})"
    return text + (f", runs {state.previous} first" if state.previous else "")


def _managed_state(state: hooks.HookState) -> str:
    if state.how == "block" and state.state == "installed":
        return f"husky's hook; sage runs from its block in {state.path}"
    if state.how == "block":
        return f"husky's hook, without sage's block in {state.path}: run `sage hooks install`"
    name = hook_managers.FRAMEWORK_IDS[state.hook]
    if state.state == "installed":
        return f"pre-commit's hook; sage runs as {name} from .pre-commit-config.yaml"
    return f"pre-commit's hook, without sage: add {name} (`sage hooks install` prints it)"


def _status_dict(found: hooks.Status) -> dict[str, object]:
    return {
        "directory": str(found.directory),
        "hooks_path": found.hooks_path,
        "manager": found.manager,
        "hooks": [
            {
                "hook": s.hook,
                "path": str(s.path),
                "state": s.state,
                "manager": s.manager,
                "how": s.how,
                "previous": str(s.previous) if s.previous else None,
                "interpreter": s.interpreter,
            }
            for s in found.hooks
        ],
    }


def hook_impl(
    hook: Annotated[str, typer.Argument(help="pre-commit or commit-msg.")],
    args: Annotated[
        list[str] | None,
        typer.Argument(help="The hook's own arguments; for pre-commit, index files to check."),
    ] = None,
    chained: Annotated[
        bool, typer.Option("--chained", help="First run the hook sage moved aside.")
    ] = False,
    legacy: Annotated[
        str | None, typer.Option("--legacy", metavar="PATH", help="A previous hook to run first.")
    ] = None,
) -> int:
    """Run sage's checks for one git hook (the installed hook scripts call this)."""
    if hook not in hooks.HOOKS:
        raise UsageError(f"unknown hook {hook!r}", hint=f"hooks are {', '.join(hooks.HOOKS)}")
    argv = list(args or [])
    previous = Path(legacy) if legacy else (hooks.previous_hook(_repo(), hook) if chained else None)
    code = _run_previous(hook, previous, argv) if previous else 0
    if code:
        return code
    verdict = _check(hook, argv)
    for line in verdict.messages:
        typer.echo(line, err=True)
    return verdict.exit_code


def _run_previous(hook: str, previous: Path, argv: list[str]) -> int:
    done = hooks.run_legacy(previous, argv)
    if done is None:
        return 0
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode:
        typer.echo(f"sage {hook}: the previous hook ({previous}) failed (exit {done.returncode})",
                   err=True)  # fmt: skip
    return done.returncode


def _check(hook: str, argv: list[str]) -> hooks.Verdict:
    if hook == "pre-commit" and argv:  # the pre-commit framework passes the index files
        return hooks.check_index_files(argv)
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
