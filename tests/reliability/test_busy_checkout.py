"""Ordinary git use in the user's checkout while a stream lands: it is waited out, not fatal.

An editor polling `git status` takes `.git/index.lock` for a moment; a user commits to the target
now and then; a reference-transaction hook refuses an update. Each used to stop the run (or be
misreported as "main kept moving").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import CliResult, git
from tests.reliability.conftest import SAGE, landed_exactly_once, new_repo
from tests.stream.conftest import writer

Sage = Callable[..., CliResult]
AUTO = ("stream", "--auto", "--parallel", "2", "--backoff", "0.05")


@contextmanager
def background(code: str, cwd: Path) -> Iterator[None]:
    """A Python loop running in the user's checkout until the block ends."""
    child = subprocess.Popen([sys.executable, "-c", code], cwd=cwd)
    try:
        yield
    finally:
        child.terminate()
        child.wait(timeout=10)


EDITOR = """
import subprocess, time
while True:
    subprocess.run(["git", "status", "--porcelain"], capture_output=True)
    time.sleep(0.01)
"""

LOCK_HOLDER = """
import os, time
while True:
    try:
        fd = os.open(".git/index.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        time.sleep(0.01)
        continue
    time.sleep(0.3)  # as long as a slow `git status` on a big repository holds it
    os.close(fd)
    os.unlink(".git/index.lock")
    time.sleep(0.05)
"""


def tickets(n: int) -> list[dict[str, object]]:
    from tests.conftest import ticket

    return [ticket(f"B-{i}", command=writer(f"b{i}.txt", sleep=0.1)) for i in range(n)]


def test_an_editor_polling_git_status_does_not_stop_the_stream(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", tickets(8))
    with background(EDITOR, repo):
        done = subprocess.run([*SAGE, *AUTO], cwd=repo, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    landed_exactly_once(repo, [f"B-{i}" for i in range(8)])


def test_a_held_index_lock_is_waited_out_and_never_called_stale(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", tickets(6))
    with background(LOCK_HOLDER, repo):
        done = subprocess.run([*SAGE, *AUTO], cwd=repo, capture_output=True, text=True, timeout=240)
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    assert "remove that file" not in said
    landed_exactly_once(repo, [f"B-{i}" for i in range(6)])


def test_frequent_commits_to_the_target_are_raced_with_backoff(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo", tickets(6))
    # Bursts of commits (a user's rebase, a script), then a pause: immediate retries all fall
    # inside a burst; backing off outlasts it.
    committer = (
        "import subprocess, time\n"
        "while True:\n"
        "    for _ in range(8):\n"
        "        subprocess.run(['git', 'commit', '-q', '--allow-empty', '-m', 'user work'])\n"
        "        time.sleep(0.02)\n"
        "    time.sleep(0.6)\n"
    )
    env = {**os.environ}
    with background(committer, repo):
        done = subprocess.run(
            [*SAGE, *AUTO], cwd=repo, capture_output=True, text=True, timeout=240, env=env
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    subjects = git(repo, "log", "--format=%s", "main").splitlines()
    assert sorted(s.split(":")[0] for s in subjects if s.startswith("B-")) == [
        f"B-{i}" for i in range(6)
    ]
    assert "user work" in subjects  # the user's commits are all there too
    time.sleep(0.1)


def test_a_hook_refusing_the_update_is_named_not_called_a_race(tmp_path: Path, sage: Sage) -> None:
    repo = new_repo(tmp_path / "repo", tickets(1))
    hook = repo / ".git/hooks/reference-transaction"
    hook.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = prepared ] && grep -q " refs/heads/main$"; then\n'
        '  echo "main is frozen for the release" >&2; exit 1\n'
        "fi\n"
    )
    hook.chmod(0o755)
    head = git(repo, "rev-parse", "main")
    done = sage(*AUTO, cwd=repo, timeout=120)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "Traceback" not in said
    assert "kept moving" not in said and "refused" in said, said[-2000:]
    assert git(repo, "rev-parse", "main") == head
