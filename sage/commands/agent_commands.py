"""`sage agent-commands install`: slash commands that let an AI coding agent drive sage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sage.commands._common import sub_app
from sage.lib import agent_commands
from sage.lib.project import find_root
from sage.lib.words import counted

app = sub_app(
    "agent-commands",
    "Slash commands (/sage-stream, /sage-validate, /sage-plan, /sage-ready, /sage-import) for "
    "AI coding agents.",
)

ACTIONS = {
    "installed": "installed",
    "unchanged": "up to date",
    "overwritten": "overwritten (--force)",
    "kept": "kept: changed there (--force overwrites it)",
    "old": "left over from an older sage (renamed with a sage- prefix): delete it",
}


@app.command("install")
def install(
    agent: Annotated[
        str,
        typer.Option("--agent", metavar="|".join(agent_commands.AGENTS), help="Which agent."),
    ],
    user: Annotated[
        bool, typer.Option("--user", help="Install for your user, not just this project.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite command files that were changed.")
    ] = False,
) -> int:
    """Copy the slash-command files to where the agent looks. Safe to run again.

    claude: .claude/commands/ (--user: ~/.claude/commands/); opencode: .opencode/commands/
    (--user: ~/.config/opencode/commands/); droid: .factory/commands/ (--user:
    ~/.factory/commands/). Exit 1 when a file changed there was kept; files an older sage
    installed under other names are listed, not deleted.
    """
    root, _ = find_root(Path.cwd())
    directory = agent_commands.target_dir(agent.lower(), user=user, root=root)
    placed = agent_commands.install(directory, force=force)
    for item in placed:
        typer.echo(f"{item.path}: {ACTIONS[item.action]}")
    kept = [p for p in placed if p.action == "kept"]
    if kept:
        typer.echo(
            f"hint: {counted(len(kept), 'file')} {'differs' if len(kept) == 1 else 'differ'} "
            "from this sage's version; "
            "pass --force to replace them",
            err=True,
        )
    return 1 if kept else 0


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="agent-commands")
