"""Workers that do what no worker should, through the real CLI: the user's branch and checkout
are sage's to move, nothing a worker made is lost or landed without a word, and no worker
process outlives the run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import CliResult, git, state_dir, ticket
from tests.reliability.conftest import fsck_clean, index_data, new_repo, worktree_paths
from tests.stream.conftest import py, trailers, writer
from tests.support.git_wrapper import GitWrapper

Sage = Callable[..., CliResult]
AUTO = ("stream", "--auto", "--backoff", "0.05", "--retries", "0", "--json")


def stream(repo: Path, sage: Sage, **env: str) -> tuple[CliResult, dict[str, Any]]:
    done = sage(*AUTO, cwd=repo, env=env or None)
    assert "Traceback" not in done.stderr, done.stderr
    return done, json.loads(done.stdout.splitlines()[-1])


def users_checkout(repo: Path) -> tuple[str, str, str]:
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        git(repo, "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude).sage"),
    )


def test_a_worker_pointing_its_worktree_at_the_users_repository_lands_nothing(
    tmp_path: Path, sage: Sage
) -> None:
    """Found here: sage's leftover commit ran in the user's checkout, on the user's branch."""
    hijack = py(
        "import pathlib\n"
        "import subprocess\n"
        "main = pathlib.Path(subprocess.run(['git', 'rev-parse', '--git-common-dir'], text=True,\n"
        "                                   capture_output=True).stdout.strip()).resolve()\n"
        "pathlib.Path('.git').write_text(f'gitdir: {main}')\n"
        "pathlib.Path('README.md').write_text('the worker was here')\n"
    )
    repo = new_repo(
        tmp_path / "repo", [ticket("H-1", command=hijack), ticket("OK-1", command=writer("ok"))]
    )
    before = users_checkout(repo)

    done, summary = stream(repo, sage)

    assert done.returncode == 1 and "H-1" in summary["deferred"], summary
    assert ".git" in summary["deferred"]["H-1"]
    assert trailers(repo) == ["OK-1"]
    _, branch, status = users_checkout(repo)
    assert (branch, status) == before[1:] and git(repo, "rev-parse", "HEAD~1") == before[0]
    assert (repo / "README.md").read_text() == "hello\n"
    fsck_clean(repo)


def test_a_worker_committing_onto_the_users_branch_is_deferred(tmp_path: Path, sage: Sage) -> None:
    onto_main = py(
        "import subprocess\n"
        "subprocess.run(['git', 'switch', '-q', '--ignore-other-worktrees', 'main'], check=True)\n"
        "open('x.txt', 'w').write('x')\n"
        "subprocess.run(['git', 'add', 'x.txt'], check=True)\n"
        "subprocess.run(['git', 'commit', '-qm', 'onto main'], check=True)\n"
    )
    repo = new_repo(tmp_path / "repo", [ticket("S-1", command=onto_main)])

    done, summary = stream(repo, sage)

    assert done.returncode == 1
    assert "moved its worktree off sage/S-1" in summary["deferred"]["S-1"]
    assert trailers(repo) == []


def test_work_that_cannot_land_is_deferred_by_name(tmp_path: Path, sage: Sage) -> None:
    nested = py(
        "import subprocess; subprocess.run(['git', 'init', '-q', 'lib'], check=True)\n"
        "open('lib/main.rs', 'w').write('fn main() {}')\n"
    )
    markers = writer("README.md", "<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> side\n")
    tickets = [
        ticket("N-1", command=nested),
        ticket("M-1", command=markers),
        ticket("E-1", command=py("pass")),
        ticket("E-2", command=py("pass"), allow_empty=True),
        ticket("OK-1", command=writer("ok.txt")),
    ]
    repo = new_repo(tmp_path / "repo", tickets)

    done, summary = stream(repo, sage)

    assert done.returncode == 1
    deferred = summary["deferred"]
    assert sorted(deferred) == ["E-1", "M-1", "N-1"], summary
    assert "git repository of its own" in deferred["N-1"]
    assert "conflict markers in README.md" in deferred["M-1"]
    assert "nothing to land" in deferred["E-1"]
    assert sorted(summary["completed"]) == ["E-2", "OK-1"]
    states = {t["id"]: t["state"] for t in index_data(repo)["tickets"]}
    assert states["E-1"] == "DEFERRED" and states["E-2"] == "COMPLETED"


def test_a_background_process_never_writes_after_the_run(tmp_path: Path, sage: Sage) -> None:
    """Found here: a child started with setsid outlived the run and wrote into the user's
    checkout after the ticket had landed."""
    late = tmp_path / "repo" / "late.txt"
    child = f"import time, pathlib; time.sleep(2); pathlib.Path({str(late)!r}).write_text('late')"
    escape = py(
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session=True)\n"
        "open('work.txt', 'w').write('w')\n"
    )
    repo = new_repo(tmp_path / "repo", [ticket("B-1", command=escape)])

    done, summary = stream(repo, sage)

    assert done.returncode == 0 and summary["completed"] == ["B-1"], summary
    time.sleep(3)
    assert not late.exists()
    [log] = (state_dir(repo) / "runs").glob("*/B-1.log")
    assert "killed what the worker left running" in log.read_text()


def test_a_git_failure_while_collecting_is_a_clear_deferral(
    tmp_path: Path, sage: Sage, git_wrapper: GitWrapper
) -> None:
    """The worker leaves an untracked file, so collecting runs `git add` (the commit itself is
    written without git): that call fails."""
    repo = new_repo(tmp_path / "repo", [ticket("G-1", command=writer("g.txt"))])
    git_wrapper.arm("add", "fail")

    done, summary = stream(repo, sage)

    assert git_wrapper.fired and done.returncode == 1
    assert "injected failure at git add" in summary["deferred"]["G-1"]
    assert index_data(repo)["tickets"][0]["state"] == "DEFERRED"
    assert worktree_paths(repo) == [repo]


def test_the_git_wrapper_fails_or_kills_at_the_chosen_call(
    repo: Path, git_wrapper: GitWrapper
) -> None:
    """The fixture itself: the nth call of a subcommand does the armed action, others run."""
    caller = [sys.executable, "-c", "import subprocess; subprocess.run(['git', 'status'])"]
    git_wrapper.arm("status", "kill-caller", nth=2)
    assert subprocess.run(caller, cwd=repo).returncode == 0
    assert subprocess.run(caller, cwd=repo).returncode == -signal.SIGKILL
    git_wrapper.arm("log", "fail")
    failed = subprocess.run(["git", "-C", str(repo), "log"], capture_output=True, text=True)
    assert failed.returncode == 128 and "injected failure at git log" in failed.stderr
    assert git_wrapper.calls == ["status", "status", "log"]
