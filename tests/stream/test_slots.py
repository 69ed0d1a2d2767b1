"""Worker slots through the real CLI: setup once per slot, nothing leaks between tickets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import git, ticket, worktrees_dir, write_index
from tests.reliability.conftest import worktree_paths
from tests.stream.conftest import events, py, states

# Each ticket checks it sees no other ticket's leftovers (tracked, untracked or ignored), then
# leaves some of its own behind.
CHECKER = (
    "import os, pathlib, subprocess\n"
    "me = os.environ['SAGE_TICKET_ID']\n"
    "def git(*a): return subprocess.run(['git', *a], capture_output=True, text=True).stdout\n"
    "extra = git('ls-files', '--others', '--exclude-standard').split()\n"
    "ignored = git('ls-files', '--others', '--ignored', '--exclude-standard').split()\n"
    "foreign = [p for p in extra + ignored if not p.startswith('deps/')]\n"
    "assert not foreign and not git('status', '--porcelain', '-uno'), f'{me} sees {foreign}'\n"
    "assert pathlib.Path('deps/installed').exists(), 'setup did not run for this slot'\n"
    "pathlib.Path(f'junk-{me}').write_text('untracked: it lands')\n"
    "pathlib.Path(f'build-{me}.o').write_text('ignored: it stays behind')\n"
)


def test_setup_runs_once_per_slot_and_no_ticket_sees_another_s_leftovers(repo, sage, tmp_path):
    counter = tmp_path / "setups"
    setup = (
        # two slots may set up at once: one appended byte each (O_APPEND), not a read and a rewrite
        f"import pathlib\nwith open({str(counter)!r}, 'a') as c:\n    c.write('x')\n"
        "pathlib.Path('deps').mkdir(exist_ok=True)\n"
        "pathlib.Path('deps/installed').write_text('1')\n"
    )
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + "*.o\ndeps/\n")
    write_index(repo, [ticket(f"S-{i}", command=py(CHECKER)) for i in range(8)])
    (repo / ".sage/config.toml").write_text(
        f"[worktree]\nsetup = {json.dumps([sys.executable, '-c', setup])}\n"
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tickets")
    done = sage("stream", "--auto", "--parallel", "2", "--json", cwd=repo)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert set(states(repo).values()) == {"COMPLETED"}
    slots = {e["slot"] for e in events(repo) if e["event"] == "started"}
    assert len(counter.read_text()) == len(slots) <= 3, "setup once per slot, not per ticket"
    landed = git(repo, "log", "--name-only", "--format=", "main").split()
    assert sorted(p for p in landed if p.startswith("junk-")) == [f"junk-S-{i}" for i in range(8)]
    assert not [p for p in landed if p.startswith(("build-", "deps"))], "ignored files never land"
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["setup_seconds"] > 0
    # a second run reuses the slots: no setup again
    write_index(repo, [ticket("T-1", command=py(CHECKER))])
    git(repo, "commit", "-qam", "one more")
    again = sage("stream", "--auto", "--json", cwd=repo)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert len(counter.read_text()) == len(slots)
    assert worktree_paths(repo) == [repo]


def test_a_slot_broken_between_runs_is_recreated(repo, sage):
    write_index(repo, [ticket("R-1", command=py("open('r1', 'w').write('1')"))])
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tickets")
    assert sage("stream", "--auto", cwd=repo).returncode == 0
    slot = next((worktrees_dir(repo) / "_slots").iterdir())
    admin = Path(git(slot, "rev-parse", "--git-dir"))
    (admin / "index.lock").write_text("")  # a git killed mid-switch
    write_index(repo, [ticket("R-2", command=py("open('r2', 'w').write('2')"))])
    git(repo, "commit", "-qam", "next")
    done = sage("stream", "--auto", cwd=repo)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert states(repo) == {"R-2": "COMPLETED"}


def test_a_slot_left_after_a_run_is_on_its_last_ticket_s_commit(repo, sage):
    """The landed branches go at the run's end; a slot that had one checked out is left on its
    commit (detached), clean, not on a branch that no longer exists (`git worktree list` showed
    0000000, `git fsck` an unborn branch, `git status` every file as added)."""
    write_index(repo, [ticket("D-1", command=py("open('d1', 'w').write('1')")),
                       ticket("D-2", "D-1", command=py("open('d2', 'w').write('2')"))])  # fmt: skip
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tickets")
    done = sage("stream", "--auto", cwd=repo)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert git(repo, "for-each-ref", "refs/heads/sage/") == ""
    slots = sorted((worktrees_dir(repo) / "_slots").iterdir())
    assert slots
    for slot in slots:
        head = git(slot, "rev-parse", "HEAD")  # a commit, not an unborn branch
        assert git(slot, "status", "--porcelain") == "", slot
        assert git(slot, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"  # detached
        assert git(repo, "cat-file", "-t", head) == "commit"
    fsck = subprocess.run(["git", "-C", str(repo), "fsck"], capture_output=True, text=True)
    assert "unborn" not in fsck.stdout + fsck.stderr
    # and the next run switches them as before
    write_index(repo, [ticket("D-3", command=py("open('d3', 'w').write('3')"))])
    git(repo, "commit", "-qam", "next")
    again = sage("stream", "--auto", cwd=repo)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert states(repo) == {"D-3": "COMPLETED"}
