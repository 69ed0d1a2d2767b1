"""Agent adapters: how sage runs claude, codex and aider, and how it reads what they say.

`--worker claude` (or `SAGE_WORKER=claude`, or `[stream] worker = "claude"`) expands to the
adapter's argv below. Each runs the agent once, non-interactively, in the ticket's worktree (its
cwd), with stdin closed. `PROMPT` is one argument (`PROMPT` in this module): the ticket, the context
file to read, and that sage commits what is left (as `<ID>: <title>` with a `Sage-Ticket` trailer),
so the agent need not commit. `MODEL` is `--model <[agents.NAME] model>` when one is set, `ARGS`
the `[agents.NAME] args`; both may be empty.

| preset   | argv |
|----------|------|
| `claude` | `claude -p PROMPT --output-format json --no-session-persistence --permission-mode acceptEdits MODEL ARGS --allowedTools TOOLS` |
| `codex`  | `codex exec --json --color never --sandbox workspace-write MODEL ARGS PROMPT` |
| `aider`  | `aider --message PROMPT --read {context_file} --yes-always --no-auto-commits --no-dirty-commits --no-gitignore --map-tokens 0 --no-check-update --analytics-disable --no-show-release-notes --no-pretty --no-fancy-input --no-stream --no-detect-urls --no-suggest-shell-commands --no-restore-chat-history --chat-history-file {context_file}.aider.md --input-history-file {context_file}.aider-input MODEL ARGS` |

What each may do in its worktree:
- claude reads and edits files there (`acceptEdits`), reads its context file (the one path
  `Read(//…)` allows outside it) and runs the commands in TOOLS (git's read-only commands, ls,
  grep and common test runners); anything else is refused.
- codex runs in its `workspace-write` sandbox: it reads anywhere, writes only in the worktree (and
  temp dirs), no network. It cannot write the repository's git dir, so it cannot commit: sage does.
- aider edits the files its model names (`--yes-always`), reads the context file (`--read`),
  never commits, never edits `.gitignore`, and keeps its history files beside the context file.

Any other `--worker` value is an argv template used as given; its result is still read by the
adapter whose program it runs (`claude …` by the claude reader), else by its exit code alone.
"""  # noqa: E501 (a table row cannot wrap)

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

from sage.lib import agent_output
from sage.lib.agent_output import Verdict
from sage.lib.outcomes import Outcome

DEFAULT_TIMEOUT = 1800.0  # seconds: an agent run may not hang a slot forever
PLACEHOLDERS = ("ticket_id", "title", "worktree", "context_file", "run_id", "attempt")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")

PROMPT = (
    "You are working on ticket {ticket_id}: {title}. Read {context_file} first: it holds the "
    "ticket and its context. Make the change in the current directory (a git worktree of the "
    "project) and run the project's tests or checks if it has any. Do not commit: sage commits "
    "whatever you leave in the worktree as '{ticket_id}: {title}'. Change only what the ticket "
    "needs (no ignore rules; leave the ticket index alone). If the context file starts with a "
    "'Resolve' section, your previous attempt is already merged in with conflict markers: "
    "resolve them keeping both intents instead of starting over. Nobody will answer "
    "questions: decide yourself."
)

# Reads inside the worktree need no rule; `Read(//path)` is one absolute path (the context file).
CLAUDE_TOOLS = (
    "Read(/{context_file})", "Edit", "Write", "NotebookEdit",
    "Bash(git status *)", "Bash(git diff *)", "Bash(git log *)", "Bash(git show *)",
    "Bash(ls *)", "Bash(grep *)", "Bash(rg *)", "Bash(pytest *)", "Bash(python -m pytest *)",
    "Bash(python3 -m pytest *)", "Bash(make test *)", "Bash(make check *)", "Bash(npm test *)",
    "Bash(npm run test *)", "Bash(cargo test *)", "Bash(go test *)", "Bash(ruff *)", "Bash(mypy *)",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """`[agents.<name>]` in `.sage/config.toml`."""

    model: str = ""
    args: tuple[str, ...] = ()
    timeout: float = DEFAULT_TIMEOUT  # seconds; 0 = none
    env: Mapping[str, str] = field(default_factory=dict)


class Agent:
    """One agent CLI: its argv, what it needs to run, and how to read its output."""

    name: ClassVar[str]
    head: ClassVar[tuple[str, ...]]  # before the model and the user's args
    tail: ClassVar[tuple[str, ...]] = ()  # after them
    model_flag: ClassVar[str] = "--model"
    help_argv: ClassVar[tuple[str, ...]] = ("--help",)
    keys: ClassVar[tuple[str, ...]] = ()  # environment variables that log it in
    login: ClassVar[str] = ""  # how to log in, for `sage validate`
    retries_for: ClassVar[float] = 0.0  # seconds the CLI goes on retrying a rate limit itself

    def argv(self, settings: Settings) -> tuple[str, ...]:
        model = (self.model_flag, settings.model) if settings.model else ()
        return (*self.head, *model, *settings.args, *self.tail)

    def read(self, returncode: int, output: str) -> Verdict | None:
        """What the agent said about its run; None when it said nothing sage understands."""
        raise NotImplementedError

    def hopeless(self, output: str) -> Verdict | None:
        """While it runs: the verdict its run will end on, when what it printed last says it can
        only end throttled: a rate limit that resets after its own retries are over. sage stops
        it then (see workers.run) rather than hold a slot while it waits in vain."""
        if not self.retries_for:
            return None
        said = self.read(0, output)
        if not said or said.outcome != Outcome.THROTTLED:
            return None
        if not said.retry_after or said.retry_after <= self.retries_for:
            return None  # no reset said, or the agent's own retries may still get through
        why = (f"sage stopped {self.name}: the limit resets in {said.retry_after:g}s, after its "
               f"own retries end ({self.retries_for:g}s)")  # fmt: skip
        return replace(said, detail=f"{said.detail} ({why})" if said.detail else why)

    def preflight(self, env: Mapping[str, str], worktree: Path) -> str | None:
        """Why the agent cannot run at all, when that is known before starting it."""
        return None

    def logged_in(self, env: Mapping[str, str]) -> str | None:
        """How it is logged in, from the environment and its files (no network), else None."""
        found = [k for k in self.keys if env.get(k)]
        return f"{found[0]} is set" if found else None


class Claude(Agent):
    name = "claude"
    head = ("claude", "-p", PROMPT, "--output-format", "json", "--no-session-persistence",
            "--permission-mode", "acceptEdits")  # fmt: skip
    tail = ("--allowedTools", *CLAUDE_TOOLS)
    keys = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
            "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX")  # fmt: skip
    login = "run `claude` once and /login, or set ANTHROPIC_API_KEY"

    def read(self, returncode: int, output: str) -> Verdict | None:
        return agent_output.claude(returncode, output)

    def logged_in(self, env: Mapping[str, str]) -> str | None:
        home = Path(env.get("CLAUDE_CONFIG_DIR") or Path(env.get("HOME", "~")) / ".claude")
        credentials = home.expanduser() / ".credentials.json"
        if credentials.exists():
            return f"credentials in {credentials}"
        return Agent.logged_in(self, env)


class Codex(Agent):
    name = "codex"
    head = ("codex", "exec", "--json", "--color", "never", "--sandbox", "workspace-write")
    tail = (PROMPT,)
    help_argv = ("exec", "--help")
    keys = ("CODEX_API_KEY", "OPENAI_API_KEY")
    login = "run `codex login`, or set CODEX_API_KEY"

    def read(self, returncode: int, output: str) -> Verdict | None:
        return agent_output.codex(returncode, output)

    def logged_in(self, env: Mapping[str, str]) -> str | None:
        home = Path(env.get("CODEX_HOME") or Path(env.get("HOME", "~")) / ".codex").expanduser()
        if (home / "auth.json").exists():
            return f"credentials in {home / 'auth.json'}"
        if "model_provider" in _text(home / "config.toml"):
            return f"a model provider is configured in {home / 'config.toml'}"
        return Agent.logged_in(self, env)


class Aider(Agent):
    name = "aider"
    head = ("aider", "--message", PROMPT, "--read", "{context_file}", "--yes-always",
            "--no-auto-commits", "--no-dirty-commits", "--no-gitignore", "--map-tokens", "0",
            "--no-check-update", "--analytics-disable", "--no-show-release-notes", "--no-pretty",
            "--no-fancy-input", "--no-stream", "--no-detect-urls", "--no-suggest-shell-commands",
            "--no-restore-chat-history", "--chat-history-file", "{context_file}.aider.md",
            "--input-history-file", "{context_file}.aider-input")  # fmt: skip
    # the keys aider picks a default model from (aider/onboarding.py)
    keys = ("ANTHROPIC_API_KEY", "DEEPSEEK_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY",
            "OPENROUTER_API_KEY", "VERTEXAI_PROJECT", "AIDER_MODEL")  # fmt: skip
    login = "set your provider's API key, or model and key in .aider.conf.yml"
    # aider retries a rate limit itself, doubling its wait from 0.125 s until the next would be
    # over 60 s (aider/models.py, RETRY_TIMEOUT): about 64 s of waiting in all, then it gives up.
    retries_for = 64.0

    def read(self, returncode: int, output: str) -> Verdict | None:
        return agent_output.aider(returncode, output)

    def preflight(self, env: Mapping[str, str], worktree: Path) -> str | None:
        # With no model and no key aider offers a browser login and waits five minutes for it.
        if self.logged_in(env) or _aider_config(env, worktree):
            return None
        return "aider has no model and no API key (it would wait for a browser login)"


def _aider_config(env: Mapping[str, str], worktree: Path) -> bool:
    homes = [Path(env.get("HOME", "~")).expanduser(), worktree]
    names = (".aider.conf.yml", ".env")
    return any((home / name).exists() for home in homes for name in names)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


ADAPTERS: dict[str, Agent] = {a.name: a for a in (Claude(), Codex(), Aider())}
PRESETS: dict[str, tuple[str, ...]] = {n: a.argv(Settings()) for n, a in ADAPTERS.items()}


def detect(argv: Sequence[str]) -> Agent | None:
    """The adapter for the program an argv runs (`/opt/bin/claude -p …` is claude's)."""
    return ADAPTERS.get(Path(argv[0]).name) if argv else None


def expand(
    worker: Sequence[str], settings: Mapping[str, Settings] | None = None
) -> tuple[str, ...]:
    """A lone preset name becomes its adapter's argv (with `[agents.<name>]`); else as given."""
    if len(worker) == 1 and worker[0] in ADAPTERS:
        return ADAPTERS[worker[0]].argv((settings or {}).get(worker[0], Settings()))
    return tuple(worker)


def settings_for(argv: Sequence[str], settings: Mapping[str, Settings] | None) -> Settings:
    agent = detect(argv)
    return (settings or {}).get(agent.name, Settings()) if agent else Settings(timeout=0)


def timeout_for(
    argv: Sequence[str], timeout: float, settings: Mapping[str, Settings] | None = None
) -> float:
    """`[stream] timeout` when set, else the agent's own (30 min unless `[agents.<name>]
    timeout` says otherwise; its 0 is no limit: `math.inf`); 0 for any other worker."""
    if timeout or detect(argv) is None:
        return timeout
    return settings_for(argv, settings).timeout or math.inf


def env_for(argv: Sequence[str], settings: Mapping[str, Settings] | None) -> dict[str, str]:
    return dict(settings_for(argv, settings).env)


def render(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill `{ticket_id}`-style placeholders in each argument; unknown braces are left alone."""

    def fill(match: re.Match[str]) -> str:
        return values.get(match.group(1), match.group(0))

    return [_PLACEHOLDER.sub(fill, arg) for arg in template]
