"""Shared fixtures: real git repositories in tmp_path and a way to run the real CLI."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# CI explores the same examples every run (a red CI must mean a change broke something); a
# developer's run keeps exploring new ones, which is how the critical-path tie was found. No
# deadline in either: an example's time on a loaded machine (a test process per core, a busy
# disk) is not what these tests check, and pytest-timeout still stops one that hangs.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "examples" / "par-001.json"

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Committer",
    "GIT_COMMITTER_EMAIL": "committer@example.invalid",
}


@pytest.fixture(autouse=True, scope="session")
def _coverage_of_the_test_processes() -> None:
    """`dev.py test` measures the processes that run tests and what they fork (the lander), not
    the sage and git processes the tests start: starting coverage costs each of those about
    0.3 s (at -n 2 the suite took 10:13 so, 6:24 without). SAGE_COVER_ALL=1 measures them too."""
    if not os.environ.get("SAGE_COVER_ALL"):
        os.environ.pop("COVERAGE_PROCESS_CONFIG", None)
        os.environ.pop("COVERAGE_PROCESS_START", None)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's git config or leaks SAGE_* settings."""
    for key in list(os.environ):
        if key.startswith(("SAGE_", "GIT_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig-global"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    # worktrees go to the user's cache: this test's own, beside (not in) tmp_path, which is
    # often a repository itself
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path.with_name(f"{tmp_path.name}-cache")))
    for key, value in GIT_IDENTITY.items():
        monkeypatch.setenv(key, value)


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def state_dir(repo: Path) -> Path:
    """Where sage keeps a repository's run state (runs, queue, locks, logs): `<git common
    dir>/sage/`, the rule `Project.state_dir` follows."""
    common = git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir")
    return Path(common) / "sage"


def worktrees_dir(repo: Path) -> Path:
    """Where sage puts a repository's worktrees: `$XDG_CACHE_HOME/sage/worktrees/<name>-<hash of
    the state dir>`, the rule `Project.worktrees_dir` follows."""
    state = state_dir(repo)
    main = state.parent.parent if state.parent.name == ".git" else repo
    digest = hashlib.sha256(str(state).encode()).hexdigest()[:12]
    cache = Path(os.environ["XDG_CACHE_HOME"]).resolve()
    return cache / "sage" / "worktrees" / f"{main.name}-{digest}"


def write_index(
    repo: Path, tickets: list[dict[str, Any]], path: str = ".sage/tickets/index.json"
) -> Path:
    target = repo / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"tickets": tickets}, indent=2) + "\n")
    return target


def ticket(tid: str, *deps: str, **fields: Any) -> dict[str, Any]:
    """A minimal valid ticket dict."""
    data: dict[str, Any] = {
        "id": tid,
        "title": fields.pop("title", f"Ticket {tid}"),
        "state": "UNPROCESSED",
        "priority": "P1",
        "type": "implementation",
        "dependencies": list(deps),
    }
    data.update(fields)
    return data


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository on branch main with one commit (lock files ignored)."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("hello\n")
    (path / ".gitignore").write_text("*.lock\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def sage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., CliResult]]:
    """Run the real `sage` CLI as a subprocess: `sage(*args, cwd=..., env=..., timeout=...)`."""

    def run(
        *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
    ) -> CliResult:
        full_env = dict(os.environ)
        full_env.update(env or {})
        done = subprocess.run(
            [sys.executable, "-m", "sage", *args],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return CliResult(done.returncode, done.stdout, done.stderr)

    yield run


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """One real Dask LocalCluster (2 worker processes) per test module, made the way
    `--scheduler local` makes it; tests that use it skip where dask.distributed is missing."""
    pytest.importorskip("distributed")
    from sage.lib import dask_executor

    client, local = dask_executor.connect("local", workers=2)
    yield local
    client.close()
    local.close()


def wait_for(condition: Callable[[], object], timeout: float = 20.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def wait_for_file(path: Path, timeout: float = 60) -> str:
    """The text of `path` once something has written it."""
    wait_for(lambda: path.exists() and path.read_text(), timeout)
    return path.read_text()


# ---- real Dask processes: a scheduler and workers, each in its own process group -----------

DASK = Path(sys.executable).with_name("dask")


@contextmanager
def spawned(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own group, killed with everything it started when the block ends."""
    with open(log, "wb") as out:
        child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)  # fmt: skip
    try:
        yield child
    finally:
        with suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


@contextmanager
def scheduler(tmp_path: Path, name: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`dask scheduler` on a port the OS picks; its address comes back through --scheduler-file."""
    info = tmp_path / f"{name}.json"
    argv = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
            "--scheduler-file", str(info)]  # fmt: skip
    with spawned(argv, tmp_path / f"{name}.log") as child:
        address = json.loads(wait_for_file(info, timeout=30))["address"]
        yield child, address


def dask_worker(
    tmp_path: Path, address: str, name: str
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """`dask worker` as one process (no nanny to restart it), two threads, no dashboard."""
    argv = [str(DASK), "worker", address, "--no-nanny", "--nthreads", "2", "--no-dashboard",
            "--death-timeout", "5", "--name", name]  # fmt: skip
    return spawned(argv, tmp_path / f"{name}.log")


def sleeper(mark: Path, name: str) -> list[str]:
    """First run: say so in `mark`, then wait for our Dask worker to die (at most a minute).
    Later runs: write `name` and exit 0."""
    return [
        sys.executable,
        "-c",
        f"""
import os, pathlib, sys, time
mark = pathlib.Path({str(mark)!r})
if mark.exists():
    pathlib.Path({name!r}).write_text('second run')
    sys.exit(0)
mark.write_text(str(os.getpid()))
parent, deadline = os.getppid(), time.monotonic() + 60
while os.getppid() == parent and time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(9)
""",
    ]
