"""Worker presets: AI coding agents as documented argv templates, run without a shell."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

_PLACEHOLDER = re.compile(r"\{(ticket_id|title|worktree|context_file|run_id|attempt)\}")

PROMPT = (
    "You are working on ticket {ticket_id}: {title}. The ticket and its context are in "
    "{context_file}. Make the change in the current directory (a git worktree), run the relevant "
    "tests, and commit your work with a message that starts with '{ticket_id}: '."
)

PRESETS: dict[str, tuple[str, ...]] = {
    "claude": ("claude", "-p", "--permission-mode", "acceptEdits", PROMPT),
    "codex": ("codex", "exec", "--full-auto", PROMPT),
    "aider": ("aider", "--yes-always", "--no-check-update", "--message-file", "{context_file}"),
}


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
