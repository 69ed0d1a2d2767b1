"""`.sage/config.toml`, `SAGE_*` variables and flags: flag > environment > file > default."""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sage.lib import agents, files
from sage.lib.errors import ConfigError

CONFIG_PATH = Path(".sage/config.toml")


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    # [stream]
    workers: str = "1"  # `sage stream --auto` without --parallel; "auto" or N
    worker: tuple[str, ...] = ()
    timeout: float = 0.0  # seconds per worker run; 0 = none
    max_cost: float = 0.0  # USD the agents may report spending in a run; 0 = no limit
    on_conflict: str = "auto"  # resolve | redo | auto: resolve for agents, redo for a "command"
    retries: int = 2
    on_error: str = "skip"
    verify: tuple[str, ...] = ()
    target_branch: str = ""  # empty: the branch checked out where sage runs
    schedule: str = "dynamic"
    executor: str = "local"
    scheduler: str = ""
    index: str = ".sage/tickets/index.json"
    # [queue]
    lock_timeout: float = 60.0
    verify_timeout: float = 0.0  # seconds per verify run; 0 = none
    max_attempts: int = 3
    backoff: float = 1.0  # seconds before the first retry; doubles after each
    verify_batch: bool = True
    # [tickets]
    id_pattern: str = ""  # regex every ID should match; empty: PREFIX-123 (a warning otherwise)
    # [worktree]: worker slots keep one worktree each across tickets
    setup: tuple[str, ...] = ()  # argv run when a slot is created (and when setup_when changes)
    setup_when: tuple[str, ...] = ()  # tracked files (lockfiles) whose change reruns setup
    copy: tuple[str, ...] = ()  # untracked files copied from the user's checkout into each slot
    keep: tuple[str, ...] = ()  # gitignore-style globs the between-tickets clean leaves alone
    # [hooks]
    strip_lines: tuple[str, ...] = (
        r"^Co-Authored-By: Claude",
        r"^🤖 Generated with \[Claude Code\]",
        r"^Generated with Claude Code",
    )
    # [agents.<name>]: model, args, timeout, env per agent adapter
    agents: Mapping[str, agents.Settings] = field(default_factory=dict)
    source: str = "defaults"


SECTIONS: dict[str, tuple[str, ...]] = {
    "stream": ("workers", "worker", "timeout", "max_cost", "on_conflict", "retries", "on_error",
               "verify", "target_branch", "schedule", "executor", "scheduler", "index"),
    "queue": ("lock_timeout", "max_attempts", "backoff", "verify_batch", "verify_timeout"),
    "hooks": ("strip_lines",),
    "tickets": ("id_pattern",),
    "worktree": ("setup", "setup_when", "copy", "keep"),
}  # fmt: skip
CHOICES = {
    "on_error": ("fail", "skip"),
    "on_conflict": ("auto", "resolve", "redo"),
    "schedule": ("dynamic", "batch"),
    "executor": ("local", "dask"),
}


def _argv(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("expected a command string or a list of strings")


def _workers(value: Any) -> str:
    text = str(value).strip().lower()
    if text == "auto" or (text.isdigit() and int(text) >= 1):
        return text
    raise ValueError("expected 'auto' or a whole number >= 1")


def _number(minimum: float) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        number = float(value)
        if isinstance(value, bool) or not math.isfinite(number) or number < minimum:
            raise ValueError(f"expected a number >= {minimum:g}")
        return number

    return convert


def _count(value: Any) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if isinstance(value, bool) or not number.is_integer() or number < 0:
        raise ValueError("expected a whole number >= 0")
    return int(number)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _paths(value: Any) -> tuple[str, ...]:
    """Paths (or globs) relative to the repository root, never outside it."""
    if isinstance(value, str):  # from the environment: SAGE_COPY=".env .env.local"
        value = shlex.split(value)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected a list of relative paths")
    for item in value:
        if Path(item).is_absolute() or ".." in Path(item).parts:
            raise ValueError(f"{item!r} is not a path inside the repository")
    return tuple(value)


def _lines(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(line for line in value.split("\n") if line)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("expected a list of regular expressions")


def _regex(value: Any) -> str:
    text = _text(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {exc}") from None
    return text


CONVERT: dict[str, Callable[[Any], Any]] = {
    "id_pattern": _regex,
    "workers": _workers,
    "worker": _argv,
    "verify": _argv,
    "timeout": _number(0),
    "max_cost": _number(0),
    "lock_timeout": _number(0),
    "verify_timeout": _number(0),
    "backoff": _number(0),
    "retries": _count,
    "max_attempts": _count,
    "verify_batch": _bool,
    "strip_lines": _lines,
    "setup": _argv,
    "setup_when": _paths,
    "copy": _paths,
    "keep": _paths,
    "args": _argv,
    "agents": lambda tables: tables,  # already checked by agent_tables
}

AGENT_KEYS = ("model", "args", "timeout", "env")


def agent_tables(body: Any, path: Path) -> dict[str, agents.Settings]:
    """`[agents.claude]`, `[agents.codex]`, …: one table of settings per known adapter."""
    names = ", ".join(agents.ADAPTERS)
    if not isinstance(body, dict) or not all(isinstance(v, dict) for v in body.values()):
        raise ConfigError(f"{path}: [agents] must hold tables such as [agents.claude]",
                          hint=f"agents are {names}")  # fmt: skip
    for name in body:
        if name not in agents.ADAPTERS:
            raise ConfigError(f"{path}: unknown agent [agents.{name}]", hint=f"agents are {names}")
    return {name: _agent(name, table, path) for name, table in body.items()}


def _agent(name: str, table: dict[str, Any], path: Path) -> agents.Settings:
    for key in table:
        if key not in AGENT_KEYS:
            raise ConfigError(f"{path}: unknown key {key!r} in [agents.{name}]",
                              hint=f"[agents.{name}] takes {', '.join(AGENT_KEYS)}")  # fmt: skip
    where = f"{path} ([agents.{name}])"
    values: dict[str, Any] = {k: convert(k, v, where) for k, v in table.items() if k != "env"}
    if "env" in table:
        values["env"] = _env(table["env"], where)
    return agents.Settings(**values)


def _env(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{where}: bad value {value!r} for env: expected a table of strings")
    return dict(value)


def convert(key: str, value: Any, where: str) -> Any:
    """One value to its type; a bad one is a ConfigError naming the key and where it came from."""
    converter: Callable[[Any], Any] = CONVERT.get(key, _text)
    try:
        result = converter(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: bad value {value!r} for {key}: {exc}") from None
    if key in CHOICES and result not in CHOICES[key]:
        allowed = ", ".join(CHOICES[key])
        raise ConfigError(f"{where}: bad value {value!r} for {key}: expected one of {allowed}")
    return result


def load(
    root: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Defaults, then the file, then SAGE_* variables, then flags (None means not given)."""
    config = Config()
    path = root / CONFIG_PATH
    if path.exists():
        config = _apply(config, _read_file(path), str(path))
    env = os.environ if environ is None else environ
    keys = [f.name for f in fields(Config) if f.name not in ("source", "agents")]
    from_env = {k: env[f"SAGE_{k.upper()}"] for k in keys if f"SAGE_{k.upper()}" in env}
    config = _apply(config, from_env, "environment", name=lambda k: f"SAGE_{k.upper()}")
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    return _apply(config, flags, "command line")


def _apply(
    config: Config, values: Mapping[str, Any], where: str, name: Callable[[str], str] = str
) -> Config:
    if not values:
        return config
    changes = {k: convert(k, v, f"{where} ({name(k)})") for k, v in values.items()}
    return replace(
        config, **changes, source=where if config.source == "defaults" else config.source
    )


def _read_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", hint="fix the syntax") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    flat: dict[str, Any] = {}
    for section, body in data.items():
        if section == "agents":
            flat["agents"] = agent_tables(body, path)
            continue
        if section in SECTIONS and not isinstance(body, dict):
            raise ConfigError(f"{path}: [{section}] must be a table of keys", hint="fix the syntax")
        if section not in SECTIONS:
            raise ConfigError(
                f"{path}: unknown section [{section}]",
                hint=f"sections are {', '.join(f'[{s}]' for s in SECTIONS)}",
            )
        for key, value in body.items():
            if key not in SECTIONS[section]:
                raise _unknown_key(path, section, key)
            flat[key] = value
    return flat


def _unknown_key(path: Path, section: str, key: str) -> ConfigError:
    """Name the section a misplaced key belongs to, or the key a typo meant."""
    home = next((s for s, keys in SECTIONS.items() if key in keys), None)
    close = difflib.get_close_matches(key, SECTIONS[section], n=1)
    if home:
        hint = f"{key} belongs in [{home}]: move it there"
    elif close:
        hint = f"did you mean {close[0]}? [{section}] takes {', '.join(SECTIONS[section])}"
    else:
        hint = f"[{section}] takes {', '.join(SECTIONS[section])}"
    return ConfigError(f"{path}: unknown key {key!r} in [{section}]", hint=hint)


def set_value(root: Path, section: str, key: str, value: str) -> Path:
    """Set one string key in config.toml (made from the template if missing), keeping every
    other line and comment as it is."""
    path = root / CONFIG_PATH
    text = path.read_text(encoding="utf-8") if path.exists() else TEMPLATE
    quoted = f"'{value}'" if "'" not in value and "\n" not in value else json.dumps(value)
    line = f"{key} = {quoted}"
    header = re.search(rf"^\[{section}\][ \t]*$", text, re.MULTILINE)
    if header:
        text = f"{text[: header.end()]}\n{line}{text[header.end() :]}"
    else:
        text = f"{text.rstrip()}\n\n[{section}]\n{line}\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: cannot set {key}: {exc}", hint=f"set {line} by hand") from None
    files.write_atomic(path, text)
    return path


TEMPLATE = """\
# sage configuration. Precedence: command-line flag > SAGE_* environment variable > this file.
# Every key is optional; the values shown are the defaults.

[stream]
# workers = 1              # for --auto without --parallel: a number or "auto" (half the cores,
#                           # 1..8)
# worker = ""               # none: tickets without a "command" need --worker or this key.
#                           # A preset ("claude", "codex", "aider") or an argv template such as
#                           # "claude -p --permission-mode acceptEdits 'Do {context_file}'";
#                           # placeholders: {ticket_id} {title} {worktree} {context_file}
#                           #   {run_id} {attempt}
# timeout = 0               # seconds per worker run; the whole process group is killed (0 = none)
# max_cost = 0              # USD the agents may report spending; then nothing new starts (0 = none)
# on_conflict = "auto"      # after a conflict: resolve (the previous attempt merged in, markers in
#                           # place) or redo; auto: resolve for agents, redo for a ticket's command
# retries = 2               # re-runs of a failing worker before the ticket is DEFERRED
# on_error = "skip"         # "skip": go on; "fail": start nothing new, let running work land
# verify = ""               # command run on each candidate merge before the target moves
# target_branch = ""        # default: the branch checked out here
# schedule = "dynamic"      # or "batch" (the seed's waves)
# executor = "local"        # or "dask" (pip install 'sage-stream[dask]')
# scheduler = ""            # Dask scheduler address, or "local" for a LocalCluster
# index = ".sage/tickets/index.json"

[queue]
# lock_timeout = 60         # seconds to wait for the commit-queue lock
# verify_timeout = 0        # seconds a verify run may take before it counts as failed (0 = none)
# max_attempts = 3          # landing attempts (conflicts, verify failures) before DEFERRED
# backoff = 1.0             # seconds before the first retry; doubles each time
# verify_batch = true       # test several waiting entries together, bisect on failure

[tickets]
# id_pattern = ""           # regular expression every ticket ID should match (a warning
#                           # otherwise); empty: PREFIX-123 such as AUTH-001. spec-kit IDs:
#                           # 'T[0-9]+[a-z]*' (`sage import` sets it for a spec-kit tasks.md)

[worktree]
# Each worker slot keeps one git worktree across tickets and runs (`sage clean` removes them).
# setup = []                # argv run once in each new slot, in a process group of its own
#                           # (SAGE_SLOT = 0 .. N-1, for ports), e.g. ["npm", "ci"]; its output
#                           # goes to the ticket's log; what it leaves running is killed
# setup_when = []           # tracked files (lockfiles) whose change runs setup again
# copy = []                 # untracked files copied from this checkout into each slot, such as
#                           # [".env"]; they must be ignored, or they would land
# keep = []                 # globs the clean between tickets leaves alone (besides what setup
#                           # left ignored)

[hooks]
# strip_lines = ["^Co-Authored-By: Claude", "^Generated with Claude Code"]
"""
