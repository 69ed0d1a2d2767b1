"""One error base for everything a user can cause; the CLI maps it to `error:` / `hint:`."""

from __future__ import annotations

from collections.abc import Sequence


class SageError(Exception):
    """An error the user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(SageError):
    """Options that do not go together (exit 2, like every usage error)."""

    exit_code = 2


class IndexFileError(SageError):
    """The ticket index cannot be read or parsed."""


class ValidationFailed(SageError):
    """The ticket index has errors; `problems` lists every one found."""

    def __init__(self, message: str, problems: Sequence[object], *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.problems = list(problems)


class ConfigError(SageError):
    """A bad value in config.toml, the environment or a flag, naming the key and where."""


class LockHeld(SageError):
    """Another process holds a lock we need."""


class RefRefused(SageError):
    """git refused to move a ref that had not moved (a hook, permissions): no race."""


class GitError(SageError):
    """A git or worker command failed; carries what the user needs to see."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stdout: str = "",
        stderr: str = "",
        *,
        hint: str | None = None,
    ) -> None:
        detail = (stderr or stdout).strip().splitlines()
        # git's diagnosis is its "fatal:" / "error:" line; advice may follow (after a lock's)
        said = [line for line in detail if line.startswith(("fatal:", "error:"))] or detail
        tail = f": {said[-1]}" if said else ""
        super().__init__(f"`{' '.join(argv)}` exited {returncode}{tail}", hint=hint)
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


class NotARepository(SageError):
    """sage needs a git repository for this command."""


def message_of(exc: Exception) -> str:
    """What went wrong in a thread, for the journal: a write to a full disk, a clobbered path."""
    return exc.message if isinstance(exc, SageError) else f"{type(exc).__name__}: {exc}"
