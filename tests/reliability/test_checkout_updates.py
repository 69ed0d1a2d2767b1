"""A checkout update that dies halfway, against real git and real processes: kill -9 while
`read-tree` writes a large file, and a disk that fills up while it writes.

Each leaves a landing that stands (the target moved by compare-and-swap, never back) and the
user's checkout behind it, with a file cut short. The rerun must recognise that file as sage's
own (its update was recorded before it was written), finish the update without blaming the user,
keep the user's uncommitted and staged changes, and land everything exactly once. The disk is
really full where the test may mount a small tmpfs (root); everywhere a file-size limit
(`ulimit -f`, git's writes fail with EFBIG) stands in for it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sage.lib.project import open_project
from sage.lib.queue import CommitQueue
from tests.conftest import git, ticket
from tests.reliability.conftest import (
    SAGE,
    STREAM,
    finish,
    landed_exactly_once,
    moves_chain,
    new_repo,
    start,
)
from tests.stream.conftest import writer

MB = 1024 * 1024


def numbered(path: Path, size: int) -> None:
    """`size` bytes of numbered lines: a prefix of it is recognisable, and it packs small."""
    with path.open("wb") as out:
        for start_at in range(0, size // 16, 65536):
            count = min(65536, size // 16 - start_at)
            out.write(b"".join(b"%015d\n" % n for n in range(start_at, start_at + count)))


def queued_work(repo: Path, tid: str, files: dict[str, int | str]) -> None:
    """What a run killed right after queuing `tid` leaves: its branch and a queued entry.
    A file given as a number is that many bytes of `numbered` lines."""
    enqueue(repo, tid, work(repo, tid, files))


def work(repo: Path, tid: str, files: dict[str, int | str]) -> str:
    """`tid`'s branch, worked on in its worktree from main; the base."""
    base = git(repo, "rev-parse", "main")
    tree = open_project(repo).worktrees_dir / tid
    git(repo, "worktree", "add", "-q", "-b", f"sage/{tid}", str(tree), base)
    for name, content in files.items():
        if isinstance(content, int):
            numbered(tree / name, content)
        else:
            (tree / name).write_text(content)
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", f"{tid}: work\n\nSage-Ticket: {tid}")
    return base


def enqueue(repo: Path, tid: str, base: str) -> None:
    project = open_project(repo)
    q = CommitQueue(project, project.ticket_store(), target_branch="main", run_id="dead")
    q.enqueue(ticket_id=tid, title=tid, branch=f"sage/{tid}", base=base)


def users_changes(repo: Path) -> None:
    """An unrelated uncommitted edit and a staged new file: both must survive everything."""
    (repo / "README.md").write_text("my uncommitted edit\n")
    (repo / "staged.txt").write_text("my staged file\n")
    git(repo, "add", "staged.txt")


def assert_users_changes_kept(repo: Path) -> None:
    assert (repo / "README.md").read_text() == "my uncommitted edit\n"
    assert git(repo, "show", ":staged.txt") == "my staged file"
    status = subprocess.run(["git", "status", "--porcelain", "README.md", "staged.txt"],
                            cwd=repo, capture_output=True, text=True, check=True)  # fmt: skip
    assert status.stdout.splitlines() == [" M README.md", "A  staged.txt"]


def record_of(repo: Path) -> Path:
    return open_project(repo).queue_dir / "checkout-main.json"


def assert_is_landed_version(repo: Path, name: str) -> None:
    assert git(repo, "hash-object", name) == git(repo, "rev-parse", f"main:{name}")


def kill_while_written(proc: subprocess.Popen[str], path: Path, size: int) -> int:
    """SIGKILL the process group (sage and the git writing `path`) once a first megabyte of
    `path` is written, before it is whole; how much was written then."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            written = path.stat().st_size
        except FileNotFoundError:
            continue
        if MB <= written < size:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
            return written
    proc.kill()
    out, err = proc.communicate(timeout=30)
    pytest.fail(f"{path} was never seen half written: {out[-2000:]}{err}")


@pytest.mark.slow
def test_kill_9_while_the_checkout_update_writes_a_large_file_then_rerun(tmp_path: Path) -> None:
    size = 200 * MB
    tickets = [ticket(tid, state="IN_PROGRESS", command=writer("x")) for tid in ("K-1", "K-2")]
    repo = new_repo(tmp_path / "repo", tickets)
    users_changes(repo)
    queued_work(repo, "K-1", {"big.bin": size})
    before = git(repo, "rev-parse", "main")

    written = kill_while_written(start(repo, "queue", "process"), repo / "big.bin", size)

    landed = git(repo, "rev-parse", "main")
    assert landed != before and git(repo, "rev-parse", f"{landed}^") == before
    assert written <= (repo / "big.bin").stat().st_size < size  # cut short by the kill
    assert record_of(repo).exists()
    queued_work(repo, "K-2", {"small.txt": "small\n"})  # queued meanwhile: lands after it

    code, out, err = finish(start(repo, *STREAM))

    assert code == 0 and "Traceback" not in err, out[-3000:] + err
    assert "commit or stash" not in out + err  # sage's own half-written file is not blamed
    assert_is_landed_version(repo, "big.bin")
    # one move forward per landing, none back (the old code put main back: X → Y → X)
    assert [new for _, new, _ in moves_chain(repo, 1)] == [landed, git(repo, "rev-parse", "main")]
    landed_exactly_once(repo, ["K-1", "K-2"])
    assert_users_changes_kept(repo)
    assert not record_of(repo).exists()


@pytest.mark.slow
def test_kill_9_while_the_checkout_update_writes_the_index_then_rerun(tmp_path: Path) -> None:
    """The landing commit carries the ticket's COMPLETED, so the checkout update rewrites the
    index: killed halfway, it leaves the index cut short (not JSON). The rerun must finish that
    update before it reads the index, not call the index broken."""
    notes = "n" * (60 * MB)  # a large index: its rewrite takes long enough to be killed in
    tickets = [ticket("I-1", command=writer("x")), ticket("I-2", command=writer("j.txt"),
                                                       notes=notes)]  # fmt: skip
    repo = new_repo(tmp_path / "repo", tickets)
    index = repo / ".sage" / "tickets" / "index.json"
    size = index.stat().st_size
    users_changes(repo)
    queued_work(repo, "I-1", {"i.txt": "i\n"})

    written = kill_while_written(start(repo, "queue", "process"), index, size)

    assert written <= index.stat().st_size < size and record_of(repo).exists()
    code, out, err = finish(start(repo, *STREAM))

    assert code == 0 and "Traceback" not in err, out[-3000:] + err
    assert "invalid JSON" not in out + err and "commit or stash" not in out + err
    landed_exactly_once(repo, ["I-1", "I-2"])
    assert_users_changes_kept(repo)
    assert_is_landed_version(repo, ".sage/tickets/index.json")


@dataclass
class Disk:
    """Where the repository lives, and a way to fill it up and free it again."""

    root: Path
    how: str
    env: dict[str, str]

    def fill(self, leave: int) -> None:
        if self.how == "tmpfs":
            room = shutil.disk_usage(self.root).free - leave
            with (self.root / "filler").open("wb") as out:
                out.truncate(0)
                while room > 0:
                    out.write(b"\0" * min(room, MB))
                    room -= MB
        else:
            (self.root / "full").write_text(str(leave // 512))

    def free(self) -> None:
        (self.root / ("filler" if self.how == "tmpfs" else "full")).unlink()


# git with a file-size limit while `full` exists: its writes past it fail with EFBIG, as on a
# full disk (SIGXFSZ ignored, so git sees the error instead of dying of it).
LIMITED_GIT = """#!/bin/sh
if [ -f {full} ]; then trap '' XFSZ; ulimit -f "$(cat {full})"; fi
exec {git} "$@"
"""


@pytest.fixture(params=["tmpfs", "fsize"])
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Disk]:
    root = tmp_path / "disk"
    root.mkdir()
    if request.param == "fsize":
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        script = bin_dir / "git"
        script.write_text(LIMITED_GIT.format(full=root / "full", git=shutil.which("git")))
        script.chmod(0o755)
        yield Disk(root, "fsize", {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
        return
    mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)]
    if shutil.which("mount") is None or subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root): the fsize case stands in for it")
    try:
        yield Disk(root, "tmpfs", {})
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def sage_in(repo: Path, disk: Disk, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, **disk.env}
    done = subprocess.run([*SAGE, *args], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def test_a_disk_that_fills_during_the_checkout_update_is_said_then_finished(disk: Disk) -> None:
    tickets = [ticket(tid, state="IN_PROGRESS", command=writer("x")) for tid in ("F-1", "F-2")]
    repo = new_repo(disk.root / "repo", tickets)
    users_changes(repo)
    queued_work(repo, "F-1", {"big.bin": 16 * MB})
    before = git(repo, "rev-parse", "main")
    later = work(repo, "F-2", {"small.txt": "small\n"})  # its worktree would not fit later
    disk.fill(leave=4 * MB)

    code, out, err = sage_in(repo, disk, "queue", "process")

    assert code == 1, out + err
    [said] = [line for line in err.splitlines() if line.startswith("error:")]
    assert "F-1" in said and "could not follow" in said and "free on that disk" in said, err
    assert "sage queue process" in err and "free some space" in err
    landed = git(repo, "rev-parse", "main")
    assert git(repo, "rev-parse", f"{landed}^") == before  # the landing stands
    assert record_of(repo).exists()
    assert not (repo / "big.bin").exists()  # the part written is given back to the disk
    assert_users_changes_kept(repo)

    enqueue(repo, "F-2", later)
    code, out, err = sage_in(repo, disk, *STREAM)  # still full: nothing stacks on it
    assert code == 1 and "could not follow" in err, out + err
    assert git(repo, "rev-parse", "main") == landed

    disk.free()
    code, out, err = sage_in(repo, disk, "queue", "process")

    assert code == 0, out + err
    assert_is_landed_version(repo, "big.bin")
    assert [new for _, new, _ in moves_chain(repo, 1)] == [landed, git(repo, "rev-parse", "main")]
    landed_exactly_once(repo, ["F-1", "F-2"])
    assert_users_changes_kept(repo)
