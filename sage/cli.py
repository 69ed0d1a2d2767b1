"""The `sage` command line: typer wiring and the one place errors become exit codes."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import sys
import threading
import traceback
from collections.abc import Iterator, Mapping, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import typer.core
import typer.main

from sage import __version__
from sage.lib.errors import SageError

EXIT_CODES = """\
Exit codes: 0 success; 1 error (or validation errors, or tickets a stream left deferred, blocked
or waiting to land); 2 usage error (also: an interactive stream without a terminal); 3 a stream
stopped early (--on-error fail, "no" at the prompt, a worker that cannot run, or a landing the
checkout is in the way of); 70 unexpected internal error (the traceback is saved); 130
interrupted (Ctrl+C)."""

COMMANDS = {  # name: its module in sage.commands, in the order `sage -h` lists them
    "init": "init", "validate": "validate", "ready": "ready", "plan": "plan", "graph": "graph",
    "import": "import_", "add": "add", "stream": "stream", "status": "status", "log": "log",
    "report": "report", "clean": "clean", "demo": "demo", "queue": "queue", "hooks": "hooks",
    "hook-impl": "hooks", "agent-commands": "agent_commands",
}  # fmt: skip


def _commands_in(module: str) -> Mapping[str, Any]:
    """The click commands `sage.commands.<module>` defines: its `register(app)`, else its
    `command` under the one name that maps to it."""
    found = importlib.import_module(f"sage.commands.{module}")
    app = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    if hasattr(found, "register"):
        found.register(app)
    else:
        app.command(next(name for name, m in COMMANDS.items() if m == module))(found.command)
    return typer.main.get_group(app).commands


class _Commands(MutableMapping[str, Any]):
    """Every command by name, each module imported the first time one of its commands is
    looked up: `sage stream` (and the git hooks' `sage hook-impl`) never import the code and
    libraries of the other commands. Listing them all (`sage -h`, completion) imports all."""

    def __init__(self, known: MutableMapping[str, Any]) -> None:
        self._known = known

    def __getitem__(self, name: str) -> Any:
        if name not in self._known and name in COMMANDS:
            self._known.update(_commands_in(COMMANDS[name]))
        return self._known[name]

    def __setitem__(self, name: str, command: Any) -> None:
        self._known[name] = command

    def __delitem__(self, name: str) -> None:
        del self._known[name]

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(COMMANDS), **dict.fromkeys(self._known)})

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._known.keys())


class _Root(typer.core.TyperGroup):
    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(self.commands)

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names: no import until one is looked up


app = typer.Typer(
    name="sage",
    cls=_Root,
    help="Turn a backlog of dependent tickets into landed commits.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, …
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"sage {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Turn a backlog of dependent tickets into landed commits."""


def report_error(exc: SageError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)


def _save_traceback() -> Path:
    from sage.lib import files  # on a crash only: every command starts faster

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    path = _crash_folder() / f"crash-{stamp}.log"
    try:
        files.write_atomic(path, traceback.format_exc())
    except OSError:
        path = Path("/dev/stderr")
        traceback.print_exc()
    return path


def _crash_folder() -> Path:
    """The run state's `logs/` in a repository (`<git common dir>/sage/logs`), else the cache."""
    with contextlib.suppress(Exception):  # what crashed may be git itself
        from sage.lib import project as projects

        root, is_git = projects.find_root(Path.cwd())
        if is_git:
            return projects.state_dir(root, is_git=True) / "logs"
    return Path.home() / ".cache" / "sage"


def _usage_error(exc: Exception) -> int | None:
    """Click's usage errors (typer may vendor click, so match by shape, not by class)."""
    show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
    if callable(show) and isinstance(code, int):
        show()
        return code
    return None


def main(argv: list[str] | None = None) -> int:
    try:
        result = app(args=argv, prog_name="sage", standalone_mode=False)
    except SageError as exc:
        report_error(exc)
        return exc.exit_code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except BrokenPipeError:  # `sage graph | head`: the reader has what it wanted
        return _reader_gone()
    except SystemExit as exc:  # typer says the same (EPIPE) as exit 1, stdout made quiet
        if exc.code == 1 and isinstance(sys.stdout, typer._click.utils.PacifyFlushWrapper):
            return _reader_gone()
        raise
    except Exception as exc:  # anything else is our bug: say so, keep the traceback
        code = _usage_error(exc)
        if code is not None:
            return code
        path = _save_traceback()
        typer.echo(f"error: unexpected error: {type(exc).__name__}: {exc}", err=True)
        typer.echo(f"hint: the traceback is in {path}; please report it", err=True)
        return 70
    return result if isinstance(result, int) else 0


def _reader_gone() -> int:
    """What is left to print goes nowhere: the reader of the output has what it wanted."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def run() -> None:
    leave(main())


def leave(code: int) -> NoReturn:
    """Exit with `code` without taking the interpreter apart (15 ms and more once networkx is
    loaded, at the end of every command and git hook): the output flushed and the exit
    handlers run first, as an exit does. While a thread other than a daemon still runs, a
    plain exit, which waits for it."""
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (BrokenPipeError, ValueError):  # a reader gone, or closed: nothing to keep
            pass
    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    run()
