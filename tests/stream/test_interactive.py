"""Interactive `sage stream` as a person sees it: in a real terminal (tmux), answered from the
screen, and refused with a hint when nobody is at a terminal."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.stream.conftest import states, ticket, writer

TMUX = shutil.which("tmux")


class Terminal:
    """One tmux server of our own (its own socket), one window running a command."""

    def __init__(self, cwd: Path, command: list[str]) -> None:
        self.socket = f"sage-test-{uuid.uuid4().hex[:8]}"
        script = cwd.parent / "run.sh"
        exports = "".join(
            f"export {k}={shlex.quote(v)}\n"
            for k, v in os.environ.items()
            if k.startswith(("GIT_", "PATH", "HOME"))
        )
        script.write_text(
            # the trap keeps this script (not sage: a handler is not inherited) alive on Ctrl+C
            f"{exports}trap : INT\ncd {shlex.quote(str(cwd))}\n{shlex.join(command)}\n"
            'echo "EXIT=$?"\nsleep 600\n'
        )
        self.tmux("new-session", "-d", "-x", "110", "-y", "40", f"sh {shlex.quote(str(script))}")

    def tmux(self, *args: str) -> str:
        argv = [str(TMUX), "-L", self.socket, "-f", "/dev/null", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-S", "-200")

    def wait_for(self, text: str, timeout: float = 30) -> str:
        try:
            wait_for(lambda: text in self.screen(), timeout)
        except AssertionError:
            raise AssertionError(f"{text!r} never showed up on:\n{self.screen()}") from None
        return self.screen()

    def type(self, keys: str) -> None:
        self.tmux("send-keys", keys, "Enter")

    def press(self, key: str) -> None:
        self.tmux("send-keys", key)

    def close(self) -> None:
        subprocess.run([str(TMUX), "-L", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def terminal() -> Iterator[type[Terminal]]:
    if TMUX is None:
        pytest.skip("tmux is not installed: the interactive prompt needs a real terminal to test")
    opened: list[Terminal] = []

    def open_one(cwd: Path, command: list[str]) -> Terminal:
        opened.append(Terminal(cwd, command))
        return opened[-1]

    yield open_one  # type: ignore[misc]
    for each in opened:
        each.close()


def test_three_tickets_driven_by_answering_what_is_on_screen(repo, tickets_repo, terminal):
    tickets_repo(
        [
            ticket("T-1", priority="P0", title="First", command=writer("one", sleep=0.5)),
            ticket("T-2", "T-1", title="Second", command=writer("two", sleep=0.5)),
            ticket("T-3", "T-2", title="Third", command=writer("three")),
        ]
    )
    term = terminal(repo, [sys.executable, "-m", "sage", "stream"])
    for n, title in ((1, "First"), (2, "Second"), (3, "Third")):
        screen = term.wait_for(f"Run T-{n} (P{0 if n == 1 else 1}) {title}?")
        if n > 1:  # the question comes after the previous ticket's outcome is on screen
            landed = screen.find(f"landed    T-{n - 1}")
            assert -1 < landed < screen.index(f"Run T-{n} "), screen
        term.type("y")
    screen = term.wait_for("EXIT=")
    assert "SUMMARY (finished): 3 completed" in screen and "EXIT=0" in screen, screen
    assert set(states(repo).values()) == {"COMPLETED"}
    # The live view came back after each answer without wiping what was above it: the
    # questions answered and every landing are still there to scroll back to.
    for n in (1, 2, 3):
        assert f"landed    T-{n}" in screen and f"Run T-{n} (" in screen, screen


def test_an_unknown_answer_asks_again_and_no_stops(repo, tickets_repo, terminal):
    tickets_repo([ticket("U-1", command=writer("u1")), ticket("U-2", command=writer("u2"))])
    term = terminal(repo, [sys.executable, "-m", "sage", "stream"])
    term.wait_for("Run U-1")
    term.type("maybe")
    term.wait_for("answer y (run it), n (stop here) or s")
    term.type("n")
    screen = term.wait_for("EXIT=")
    assert "stopped: stopped at the prompt" in screen and "EXIT=3" in screen, screen
    assert states(repo) == {"U-1": "UNPROCESSED", "U-2": "UNPROCESSED"}


def test_status_says_the_run_waits_for_an_answer(repo, sage, tickets_repo, terminal):
    tickets_repo([ticket("W-0", command=writer("w0"))])
    assert sage("stream", "--auto", cwd=repo).returncode == 0  # a run that timed a ticket
    earlier = sorted((repo / ".git" / "sage" / "runs").iterdir())[-1].name
    added = sage("add", "W-1", "Wait for me", "--command", "sh -c 'echo w > w1.txt'", cwd=repo)
    assert added.returncode == 0, added.stderr
    term = terminal(repo, [sys.executable, "-m", "sage", "stream"])
    term.wait_for("Run W-1")
    status = sage("status", cwd=repo)
    assert "  waiting for an answer at the prompt since " in status.stdout, status.stdout
    assert "run W-1 'Wait for me'?" in status.stdout and "no worker running" not in status.stdout
    # the run asking has timed nothing yet: the ETA goes by the one before
    assert f"s per ticket in run {earlier}" in status.stdout, status.stdout
    asking = json.loads(sage("status", "--json", cwd=repo).stdout)["asking"]
    assert (asking["ticket"], asking["title"]) == ("W-1", "Wait for me")
    term.type("y")
    term.wait_for("EXIT=")
    assert "waiting for an answer" not in sage("status", cwd=repo).stdout


def test_ctrl_c_at_the_prompt_stops_the_run(repo, tickets_repo, terminal):
    tickets_repo([ticket("K-1", command=writer("k1")), ticket("K-2", command=writer("k2"))])
    term = terminal(repo, [sys.executable, "-m", "sage", "stream"])
    term.wait_for("Run K-1")
    term.type("y")
    term.wait_for("Run K-2")
    term.press("C-c")
    screen = term.wait_for("EXIT=")
    assert "stopped: stopped at the prompt" in screen and "EXIT=3" in screen, screen
    assert "Traceback" not in screen
    assert states(repo) == {"K-1": "COMPLETED", "K-2": "UNPROCESSED"}


def test_skip_at_the_prompt_blocks_dependents(repo, tickets_repo, terminal):
    tickets_repo(
        [
            ticket("I-1", priority="P0", command=writer("i1")),
            ticket("I-2", priority="P1", command=writer("i2")),
            ticket("I-3", "I-2", command=writer("i3")),
        ]
    )
    term = terminal(repo, [sys.executable, "-m", "sage", "stream", "--interactive"])
    term.wait_for("Run I-1")
    term.type("y")
    term.wait_for("Run I-2")
    term.type("s")
    screen = term.wait_for("EXIT=")
    assert "blocked I-3 (by I-2)" in screen and "EXIT=1" in screen, screen
    assert states(repo) == {"I-1": "COMPLETED", "I-2": "UNPROCESSED", "I-3": "UNPROCESSED"}


def test_stdin_not_a_terminal_is_a_usage_error(repo, sage, tickets_repo):
    tickets_repo([ticket("N-1", command=writer("n1"))])
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "sage", "stream"],
        cwd=repo,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith("error: sage stream asks before each ticket")
    assert "hint: use --auto" in done.stderr and "Traceback" not in done.stderr
    assert states(repo) == {"N-1": "UNPROCESSED"} and time.monotonic() - started < 30


def test_the_live_view_shows_each_slot_and_the_counts(repo, tickets_repo, terminal, tmp_path):
    gate = tmp_path / "gate"
    hold = [sys.executable, "-c", f"import pathlib,time\nwhile not pathlib.Path({str(gate)!r})"
            ".exists(): time.sleep(0.05)\npathlib.Path('held').write_text('x')"]  # fmt: skip
    tickets_repo(
        [
            ticket("V-1", priority="P0", title="Held at the gate", command=hold),
            ticket("V-2", "V-1", title="After it", command=writer("v2")),
        ]
    )
    term = terminal(repo, [sys.executable, "-m", "sage", "stream", "--auto", "--parallel", "2"])

    def elapsed(screen: str) -> float:
        line = next(line for line in screen.splitlines() if line.startswith("slot 1"))
        return float(line.split()[-1].rstrip("s"))

    try:
        screen = term.wait_for("Held at the gate")
        # it redraws on its own while nothing happens: the elapsed time moves on
        wait_for(lambda: elapsed(term.screen()) >= elapsed(screen) + 0.5, timeout=10)
    finally:  # whatever happens, the worker is not left waiting
        gate.write_text("open")
    line = next(line for line in screen.splitlines() if line.startswith("slot 1"))
    assert line.split()[:8] == ["slot", "1", "V-1", "Held", "at", "the", "gate", "attempt"]
    assert line.rstrip().endswith("s") and "slot 2  idle" in screen
    assert (
        "ready 0 · waiting on dependencies 1 · queued to land 0 · blocked 0 · landed 0/2" in screen
    )
    screen = term.wait_for("EXIT=")
    assert "SUMMARY (finished): 2 completed" in screen and "slot 1" not in screen, screen
