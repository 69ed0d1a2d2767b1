"""Worker presets: AI coding agents as documented argv templates, run without a shell.

`--worker claude` (or `SAGE_WORKER=claude`, or `[stream] worker = "claude"`) expands to the argv
below. Each runs the agent once, non-interactively, in the ticket's worktree (its cwd), with stdin
closed; `PROMPT` is one argument (the text is `PROMPT` in this module) that names the ticket's
context file. Placeholders are filled per ticket; anything the agent leaves uncommitted is
committed by sage as `<ID>: <title>` with a `Sage-Ticket` trailer.

| preset   | argv |
|----------|------|
| `claude` | `claude -p --permission-mode acceptEdits PROMPT` |
| `codex`  | `codex exec --full-auto PROMPT` |
| `aider`  | `aider --yes-always --no-check-update --no-auto-commits --read {context_file} --message PROMPT` |

- `claude -p` is Claude Code's print (headless) mode; `acceptEdits` lets it edit files without
  asking. Shell commands outside its allowed tools are refused, not prompted for.
- `codex exec` is Codex's non-interactive mode; `--full-auto` is its workspace-write sandbox.
- `aider --message` runs one instruction and exits; `--read` adds the context file read-only;
  `--no-auto-commits` leaves committing (with the trailer) to sage.

Any other `--worker` value is an argv template used as given, e.g.
`--worker 'claude -p --allowedTools Bash(pytest:*) --permission-mode acceptEdits "Do {context_file}"'`.
"""  # noqa: E501 (a table row cannot wrap)

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

PLACEHOLDERS = ("ticket_id", "title", "worktree", "context_file", "run_id", "attempt")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")

PROMPT = (
    "You are working on ticket {ticket_id}: {title}. The ticket and its context are in "
    "{context_file}. Make the change in the current directory (a git worktree) and run the "
    "relevant tests if you can. Commit with a message that starts with '{ticket_id}: ', or leave "
    "your changes uncommitted: sage commits them. Nobody will answer questions: decide yourself."
)

PRESETS: dict[str, tuple[str, ...]] = {
    "claude": ("claude", "-p", "--permission-mode", "acceptEdits", PROMPT),
    "codex": ("codex", "exec", "--full-auto", PROMPT),
    "aider": (
        "aider", "--yes-always", "--no-check-update", "--no-auto-commits",
        "--read", "{context_file}", "--message", PROMPT,
    ),
}  # fmt: skip


def expand(worker: Sequence[str]) -> tuple[str, ...]:
    """A lone preset name becomes its template; anything else is used as given."""
    if len(worker) == 1 and worker[0] in PRESETS:
        return PRESETS[worker[0]]
    return tuple(worker)


def render(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill `{ticket_id}`-style placeholders in each argument; unknown braces are left alone."""

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return [_PLACEHOLDER.sub(fill, arg) for arg in template]
