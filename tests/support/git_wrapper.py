"""A `git` on PATH that fails, or kills, at a chosen git subcommand: crash points and git
failures against real git, without mocking it.

    def test_x(git_wrapper: GitWrapper) -> None:
        git_wrapper.arm("commit", "fail")          # the first `git … commit` fails
        git_wrapper.arm("update-ref", "kill-caller", nth=2)   # SIGKILL whoever ran git
        sage(..., env=git_wrapper.env())           # a subprocess; in-process code sees PATH too

Actions: `fail` (exit 128 with a `fatal:` line, nothing done), `kill` (git itself dies by
SIGKILL before doing anything), `kill-caller` (the process that ran git dies by SIGKILL before
the step), `kill-caller-after` (the step is done, then its caller dies). `calls` lists every
subcommand seen, in order. Import the fixture in a conftest: `from tests.support.git_wrapper
import git_wrapper`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ACTIONS = ("fail", "kill", "kill-caller", "kill-caller-after")

SCRIPT = """#!/bin/sh
# The subcommand is the first argument that is not an option (-C and -c take a value).
state={state}
sub=""
skip=0
for arg in "$@"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$arg" in
        -C|-c) skip=1 ;;
        -*) ;;
        *) sub=$arg; break ;;
    esac
done
printf '%s\\n' "$sub" >> "$state/calls"
if [ -f "$state/armed" ]; then
    read -r armed action nth < "$state/armed"
    if [ "$sub" = "$armed" ]; then
        count=$(( $(cat "$state/count" 2>/dev/null || echo 0) + 1 ))
        echo "$count" > "$state/count"
        if [ "$count" = "$nth" ]; then
            case "$action" in
                fail) echo "fatal: injected failure at git $sub" >&2; exit 128 ;;
                kill) kill -9 $$ ;;
                kill-caller) kill -9 $PPID; exit 137 ;;
                kill-caller-after) {real} "$@"; code=$?; kill -9 $PPID; exit $code ;;
            esac
        fi
    fi
fi
exec {real} "$@"
"""


@dataclass
class GitWrapper:
    bin_dir: Path
    state: Path

    def arm(self, subcommand: str, action: str = "fail", *, nth: int = 1) -> None:
        """Make the `nth` call of `git <subcommand>` from now on do `action`."""
        assert action in ACTIONS, action
        (self.state / "count").unlink(missing_ok=True)
        (self.state / "armed").write_text(f"{subcommand} {action} {nth}\n")

    def disarm(self) -> None:
        (self.state / "armed").unlink(missing_ok=True)

    def env(self) -> dict[str, str]:
        """The environment for a subprocess that should run this git."""
        return {"PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    @property
    def calls(self) -> list[str]:
        path = self.state / "calls"
        return path.read_text().splitlines() if path.exists() else []

    @property
    def fired(self) -> bool:
        armed = (self.state / "armed").read_text().split() if self.armed else []
        count = self.state / "count"
        return bool(armed) and count.exists() and count.read_text().strip() == armed[2]

    @property
    def armed(self) -> bool:
        return (self.state / "armed").exists()


def install(root: Path) -> GitWrapper:
    """Write the wrapper under `root` (not yet on PATH)."""
    real = shutil.which("git")
    assert real, "git is not installed"
    bin_dir, state = root / "bin", root / "state"
    bin_dir.mkdir(parents=True)
    state.mkdir()
    script = bin_dir / "git"
    script.write_text(SCRIPT.format(state=_quoted(state), real=_quoted(Path(real))))
    script.chmod(0o755)
    return GitWrapper(bin_dir=bin_dir, state=state)


def _quoted(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


@pytest.fixture
def git_wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GitWrapper]:
    """The wrapper, first on PATH for this test (and for every process it starts)."""
    wrapper = install(tmp_path / "git-wrapper")
    monkeypatch.setenv("PATH", wrapper.env()["PATH"])
    yield wrapper
