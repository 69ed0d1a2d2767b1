"""Worker slots through the real CLI: setup once per slot, nothing leaks between tickets."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import git, ticket, wait_for, worktrees_dir, write_index
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


def with_setup(repo: Path, entries: list[dict[str, object]], setup: list[str]) -> None:
    """The index and a `[worktree] setup` argv, committed."""
    write_index(repo, entries)
    (repo / ".sage/config.toml").write_text(f"[worktree]\nsetup = {json.dumps(setup)}\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tickets")


def test_setup_runs_once_per_slot_and_no_ticket_sees_another_s_leftovers(repo, sage, tmp_path):
    counter = tmp_path / "setups"
    setup = (
        # two slots may set up at once: one appended byte each (O_APPEND), not a read and a rewrite
        f"import pathlib\nwith open({str(counter)!r}, 'a') as c:\n    c.write('x')\n"
        "pathlib.Path('deps').mkdir(exist_ok=True)\n"
        "pathlib.Path('deps/installed').write_text('1')\n"
    )
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + "*.o\ndeps/\n")
    tickets = [ticket(f"S-{i}", command=py(CHECKER)) for i in range(8)]
    with_setup(repo, tickets, [sys.executable, "-c", setup])
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


SLOW_SETUP = (  # says it began, then takes its time: a terminal's Ctrl+C comes meanwhile
    "import os, pathlib, sys, time\n"
    "pathlib.Path(sys.argv[1], os.environ['SAGE_SLOT']).write_text(str(os.getpid()))\n"
    "time.sleep(float(sys.argv[2]))\n"
    "pathlib.Path('deps').mkdir(exist_ok=True)\n"
)


def setup_repo(repo: Path, began: Path, seconds: float) -> None:
    began.mkdir()
    (repo / ".gitignore").write_text((repo / ".gitignore").read_text() + "deps/\n")
    tickets = [ticket(f"C-{i}", command=py(f"open('c{i}', 'w').write('{i}')")) for i in range(2)]
    with_setup(repo, tickets, [sys.executable, "-c", SLOW_SETUP, str(began), str(seconds)])


def streaming(repo: Path) -> subprocess.Popen[str]:
    """`sage stream` as a terminal runs it: the leader of its own foreground process group."""
    return subprocess.Popen([sys.executable, "-m", "sage", "stream", "--auto", "--parallel", "2",
                             "--json"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip


def test_a_terminal_s_ctrl_c_lets_a_slot_s_setup_finish_and_its_ticket_land(repo, tmp_path):
    """The setup is the ticket's first step: the graceful stop waits for it as for the worker."""
    began = tmp_path / "began"
    setup_repo(repo, began, 1.5)
    run = streaming(repo)
    wait_for(lambda: len(list(began.iterdir())) == 2)
    os.killpg(run.pid, signal.SIGINT)  # to the whole group, as a terminal sends it
    out, err = run.communicate(timeout=60)
    assert run.returncode == 130, err
    assert states(repo) == {"C-0": "COMPLETED", "C-1": "COMPLETED"}, out[-2000:] + err


def test_a_second_ctrl_c_kills_a_slot_s_setup(repo, tmp_path):
    began = tmp_path / "began"
    setup_repo(repo, began, 60)
    run = streaming(repo)
    wait_for(lambda: len(list(began.iterdir())) == 2)
    pids = [int(p.read_text()) for p in began.iterdir()]
    os.killpg(run.pid, signal.SIGINT)
    time.sleep(0.3)
    os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert set(states(repo).values()) == {"UNPROCESSED"}, out[-2000:] + err
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        ), f"setup {pid} still runs"


def test_a_first_run_makes_one_slot_per_worker_and_sets_up_no_spare(repo, sage, tmp_path):
    """A slot whose ticket is only being collected is free in a moment: the next ticket waits
    for it rather than for a new slot's checkout and setup (an `npm ci`)."""
    counter = tmp_path / "setups"
    setup = f"open({str(counter)!r}, 'a').write('x')"
    tickets = [ticket(f"Q-{i}", command=py(f"open('q{i}', 'w').write('{i}')")) for i in range(16)]
    with_setup(repo, tickets, [sys.executable, "-c", setup])
    done = sage("stream", "--auto", "--parallel", "2", "--json", cwd=repo)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    assert set(states(repo).values()) == {"COMPLETED"}
    assert len(counter.read_text()) == 2, "a setup per worker, none for a spare slot"
    assert {e["slot"] for e in events(repo) if e["event"] == "started"} == {0, 1}


def test_a_setup_that_leaves_a_process_running_is_cleaned_up_not_waited_for(repo, sage, tmp_path):
    """A setup that starts something in the background (a dev server, say) and exits: the
    ticket goes on, and what it left running is killed and named in the ticket's log."""
    pid_file = tmp_path / "left.pid"
    left = f"sleep 300 & echo $! > {pid_file}; echo set up"
    with_setup(repo, [ticket("L-1", command=py("open('l1', 'w').write('1')"))], ["sh", "-c", left])
    done = sage("stream", "--auto", "--json", cwd=repo, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert states(repo) == {"L-1": "COMPLETED"}
    pid = int(pid_file.read_text())
    wait_for(lambda: not Path(f"/proc/{pid}").exists()
             or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z")  # fmt: skip
    log = next((repo / ".git" / "sage" / "runs").glob("*/L-1.log")).read_text()
    assert "set up" in log and "killed what the setup left running" in log, log


def test_the_first_tickets_slots_are_made_while_the_index_is_checked(repo):
    from sage.lib import runs
    from sage.lib.project import open_project

    write_index(repo, [ticket("A"), ticket("B"), ticket("C"), ticket("D", "A")])
    project = open_project(repo)
    asked: list[int] = []

    def two(ready: int) -> int:
        asked.append(ready)
        return 2

    loaded = runs.load(project, slots_for=two)
    assert asked == [3]  # A, B and C are ready; D waits for A
    assert loaded.graph.has_edge("A", "D")
    slots = worktrees_dir(repo) / "_slots"
    assert sorted(p.name for p in slots.iterdir()) == ["slot-0", "slot-1"]
    assert git(slots / "slot-1", "rev-parse", "HEAD") == git(repo, "rev-parse", "main")


def test_slots_with_setup_or_copies_are_left_to_their_first_ticket(repo):
    from sage.lib import runs
    from sage.lib.project import open_project

    for worktree in ('setup = ["true"]', 'copy = [".env"]'):
        write_index(repo, [ticket("A")])
        (repo / ".sage/config.toml").write_text(f"[worktree]\n{worktree}\n")
        runs.load(open_project(repo), slots_for=lambda ready: ready)
        assert not (worktrees_dir(repo) / "_slots").exists()


def test_as_many_slots_as_workers_start_at_once():
    from sage.commands.stream import _slots_for
    from sage.lib.config import Config

    script, agent = Config(worker=("make",)), Config(worker=("claude", "-p", "{prompt}"))
    assert [_slots_for(script, "2")(ready) for ready in (0, 1, 5)] == [0, 1, 2]
    assert _slots_for(script, None)(5) == 1  # the config's workers: "1"
    assert _slots_for(script, "zero")(5) == 0  # refused after the index is checked
    assert _slots_for(agent, "4")(5) == 1  # an agent's first ticket goes alone
