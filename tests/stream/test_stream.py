"""`sage stream` end to end: real repositories, real worker processes, the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sage.lib import executors, proc
from tests.conftest import git, state_dir, ticket, wait_for, worktrees_dir
from tests.reliability.conftest import worktree_paths
from tests.stream.conftest import events, index_data, index_file, py, states, trailers, writer

AUTO = ("stream", "--auto", "--backoff", "0.05")


def test_parallel_without_auto_is_refused(repo, sage, tickets_repo):
    tickets_repo([ticket("T-1", command=writer("a.txt"))])
    done = sage("stream", "--parallel", "2", cwd=repo)
    assert done.returncode == 2
    assert "--parallel needs --auto" in done.stderr
    assert "Traceback" not in done.stderr


def test_eight_independent_tickets_land_with_trailers_and_run_four_at_once(
    repo, sage, tickets_repo
):
    tickets_repo([ticket(f"T-{i}", command=writer(f"f{i}.txt", sleep=0.5)) for i in range(1, 9)])
    done = sage(*AUTO, "--parallel", "4", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PARALLEL EXECUTION: 4 workers" in done.stdout
    assert set(states(repo).values()) == {"COMPLETED"}
    assert sorted(trailers(repo)) == sorted(f"T-{i}" for i in range(1, 9))
    assert all((repo / f"f{i}.txt").exists() for i in range(1, 9)), "user's checkout moved forward"
    assert git(repo, "status", "--porcelain", "--untracked-files=no") in (
        "",
        "M .sage/tickets/index.json",
    )
    assert max_concurrency(events(repo)) == 4


def max_concurrency(evs: list[dict]) -> int:
    running, peak = 0, 0
    for ev in evs:
        running += {"started": 1, "exited": -1}.get(ev["event"], 0)
        peak = max(peak, running)
    return peak


def test_chain_runs_after_dependencies_land_and_failure_blocks_dependents(repo, sage, tickets_repo):
    tickets_repo(
        [
            ticket("C-1", command=writer("c1.txt")),
            ticket("C-2", "C-1", command=writer("c2.txt", need="c1.txt")),
            ticket("C-3", "C-2", command=writer("c3.txt", need="c2.txt")),
            ticket("F-1", command=py("import sys; print('boom'); sys.exit(3)")),
            ticket("F-2", "F-1", command=writer("f2.txt")),
        ]
    )
    done = sage(*AUTO, "--parallel", "2", "--retries", "1", "--json", cwd=repo)
    assert done.returncode == 1, done.stderr
    assert states(repo) == {
        "C-1": "COMPLETED",
        "C-2": "COMPLETED",
        "C-3": "COMPLETED",
        "F-1": "DEFERRED",
        "F-2": "UNPROCESSED",
    }
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["blocked"] == {"F-2": "F-1"}
    assert "exited 3" in summary["deferred"]["F-1"] and "boom" in summary["deferred"]["F-1"]
    assert summary["retries"] == 1
    f1 = next(t for t in index_data(repo)["tickets"] if t["id"] == "F-1")
    assert [h["to"] for h in f1["state_history"]] == ["IN_PROGRESS", "DEFERRED"]
    assert "exited 3" in f1["deferred_reason"]


def test_sequential_runs_in_dispatch_order(repo, sage, tickets_repo):
    tickets_repo(
        [
            ticket("A-1", priority="P2", command=writer("a")),
            ticket("A-2", priority="P0", command=writer("b")),
            ticket("A-3", priority="P1", command=writer("c")),
        ]
    )
    done = sage(*AUTO, "--parallel", "1", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert [e["ticket"] for e in events(repo) if e["event"] == "started"] == ["A-2", "A-3", "A-1"]


def test_exit_75_retries_without_using_an_attempt(repo, sage, tickets_repo):
    code = (
        f"import pathlib,sys; p=pathlib.Path({str(repo.parent / 'count-T')!r}); "
        "n=int(p.read_text()) if p.exists() else 0; p.write_text(str(n+1)); "
        "sys.exit(75 if n < 2 else 0)"
    )
    tickets_repo([ticket("T-1", command=py(code), allow_empty=True)])
    done = sage(*AUTO, "--retries", "0", "--json", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    retries = [e for e in events(repo) if e["event"] == "retry"]
    assert len(retries) == 2 and not any(e["counted"] for e in retries)
    assert states(repo) == {"T-1": "COMPLETED"}


def test_timeout_kills_the_process_group(repo, sage, tickets_repo, tmp_path):
    marker = tmp_path / "grandchild-survived"
    script = tmp_path / "slow.py"
    script.write_text(
        "import pathlib, subprocess, sys, time\n"
        "if sys.argv[1:] == ['child']:\n"
        "    time.sleep(1.5)\n"
        f"    pathlib.Path({str(marker)!r}).write_text('x')\n"
        "else:\n"
        "    subprocess.Popen([sys.executable, __file__, 'child'])\n"
        "    time.sleep(30)\n"
    )
    tickets_repo([ticket("T-1", command=[sys.executable, str(script)])])
    start = time.monotonic()
    done = sage(*AUTO, "--timeout", "0.5", "--retries", "0", "--json", cwd=repo)
    assert time.monotonic() - start < 20
    assert done.returncode == 1
    assert "timed out" in json.loads(done.stdout.splitlines()[-1])["deferred"]["T-1"]
    time.sleep(1.5)
    assert not marker.exists(), "the worker's child outlived the timeout"


def test_on_error_fail_stops_new_work_and_says_so(repo, sage, tickets_repo):
    tickets_repo(
        [
            ticket("B-1", priority="P0", command=py("import sys; sys.exit(1)")),
            ticket("B-2", priority="P3", command=writer("b2")),
            ticket("B-3", priority="P3", command=writer("b3")),
        ]
    )
    done = sage(
        *AUTO, "--parallel", "1", "--retries", "0", "--on-error", "fail", "--json", cwd=repo
    )
    assert done.returncode == 3
    summary = json.loads(done.stdout.splitlines()[-1])
    assert summary["stopped_early"] is True
    assert sorted(summary["not_started"]) == ["B-2", "B-3"]
    assert states(repo)["B-2"] == "UNPROCESSED"


def test_a_second_stream_is_refused_naming_the_holder(repo, sage, tickets_repo):
    tickets_repo([ticket("S-1", command=writer("s", sleep=3))])
    env = dict(os.environ)
    first = subprocess.Popen(
        [sys.executable, "-m", "sage", *AUTO],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: any(e["event"] == "started" for e in events(repo)))
        second = sage(*AUTO, cwd=repo)
        assert second.returncode == 1
        assert f"held by PID {first.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.communicate(timeout=30)
    assert first.returncode == 0


def start_stream(repo: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sage", *AUTO, *args],
        cwd=repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_once_lets_running_work_land(repo, tickets_repo):
    tickets_repo([ticket(f"G-{i}", command=writer(f"g{i}", sleep=1.5)) for i in range(1, 5)])
    run = start_stream(repo, "--parallel", "2", "--json")
    wait_for(lambda: sum(e["event"] == "started" for e in events(repo)) == 2)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    got = states(repo)
    assert sorted(got.values()) == ["COMPLETED", "COMPLETED", "UNPROCESSED", "UNPROCESSED"]
    assert len(trailers(repo)) == 2


def test_ctrl_c_at_a_terminal_reaches_the_lander_too_and_running_work_still_lands(
    repo, tickets_repo
):
    """A terminal's Ctrl+C goes to the whole foreground group: the stream and its lander's
    process. The lander ignores it (the stream decides), so the running tickets still land.
    Running: each worker's process is in its own session, as its slot's pid file says once it
    is (a press while a worker is being spawned, before it leaves the group, reaches it)."""
    tickets_repo([ticket(f"G-{i}", command=writer(f"g{i}", sleep=1.5)) for i in range(1, 5)])
    run = subprocess.Popen([sys.executable, "-m", "sage", *AUTO, "--parallel", "2", "--json"],
                           cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)  # fmt: skip
    pids = state_dir(repo) / "locks" / "workers"
    wait_for(lambda: all(proc.pid_entry(executors.pid_file(pids, k)) for k in (0, 1)))
    os.killpg(run.pid, signal.SIGINT)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 130, err
    assert "lander" not in out + err
    got = states(repo)
    said = out[-3000:] + err[-2000:]
    assert sorted(got.values()) == ["COMPLETED", "COMPLETED", "UNPROCESSED", "UNPROCESSED"], said
    assert len(trailers(repo)) == 2


def test_ctrl_c_twice_kills_workers_and_resets_their_tickets(repo, tickets_repo):
    tickets_repo([ticket(f"K-{i}", command=writer(f"k{i}", sleep=30)) for i in range(1, 3)])
    run = start_stream(repo, "--parallel", "2", "--json")
    wait_for(lambda: sum(e["event"] == "started" for e in events(repo)) == 2)
    time.sleep(0.3)
    run.send_signal(signal.SIGINT)
    time.sleep(0.3)
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=20)
    assert run.returncode == 130
    assert set(states(repo).values()) == {"UNPROCESSED"}


def test_kill_9_then_rerun_lands_everything_exactly_once(repo, sage, tickets_repo):
    chains = [
        ticket(
            f"R-{c}{i}", *([f"R-{c}{i - 1}"] if i else []), command=writer(f"r{c}{i}", sleep=0.2)
        )
        for c in "ab"
        for i in range(4)
    ]
    tickets_repo(chains)
    run = subprocess.Popen(
        [sys.executable, "-m", "sage", *AUTO, "--parallel", "2", "--json"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: sum(e["event"] == "landed" for e in events(repo)) >= 2)
    run.kill()
    run.wait()
    done = sage(*AUTO, "--parallel", "2", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(states(repo).values()) == {"COMPLETED"}
    landed = trailers(repo)
    assert sorted(landed) == sorted(t["id"] for t in chains), "each ticket exactly once"


def test_dry_run_changes_nothing(repo, sage, tickets_repo):
    tickets_repo([ticket("D-1", command=writer("d"))])
    before = (repo / ".sage/tickets/index.json").read_text()
    done = sage("stream", "--dry-run", "--parallel", "2", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "would start D-1" in done.stdout
    assert (repo / ".sage/tickets/index.json").read_text() == before
    assert git(repo, "rev-list", "--count", "main") == "2"


def test_worker_changes_under_sage_are_not_landed(repo, sage, tickets_repo):
    code = (
        "import pathlib; pathlib.Path('.sage/tickets/index.json').write_text('garbage'); "
        "pathlib.Path('real.txt').write_text('ok')"
    )
    tickets_repo([ticket("W-1", command=py(code))])
    done = sage(*AUTO, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (repo / "real.txt").exists()
    assert git(repo, "show", "main:.sage/tickets/index.json") != "garbage"
    assert states(repo) == {"W-1": "COMPLETED"}


def test_a_worker_configured_by_flag_gets_placeholders_and_env(repo, sage, tickets_repo):
    tickets_repo([ticket("P-1", title="Hello world")])
    code = (
        "import os,sys,pathlib; pathlib.Path('out.txt').write_text("
        "'|'.join(sys.argv[1:]) + '|' + os.environ['SAGE_TICKET_ID'])"
    )
    worker = f'{sys.executable} -c "{code}" {{ticket_id}} {{title}}'
    done = sage(*AUTO, "--worker", worker, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (repo / "out.txt").read_text() == "P-1|Hello world|P-1"
    assert "P-1: Hello world" in git(repo, "log", "-1", "--format=%s", "main")


def test_a_worker_missing_from_the_worktree_is_a_clear_deferral(repo, sage, tickets_repo):
    # A path is looked up in the ticket's worktree, so only the run can find it missing.
    tickets_repo([ticket("M-1", command=["./tools/not-there.sh"])])
    done = sage(*AUTO, "--retries", "0", "--json", cwd=repo)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "M-1" in json.loads(done.stdout.splitlines()[-1])["deferred"]


def test_a_landed_tickets_leftover_worktree_and_branch_are_swept(repo, sage, tickets_repo):
    tickets_repo([ticket("L-1", state="COMPLETED"), ticket("L-2", command=writer("l2"))])
    tree = worktrees_dir(repo) / "L-1"
    git(repo, "worktree", "add", "-q", "-b", "sage/L-1", str(tree))
    done = sage(*AUTO, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sage/L-1" not in git(repo, "branch", "--list", "sage/*")
    assert not tree.exists()


@pytest.mark.slow
def test_sixty_tickets_in_six_chains_survive_kill_9_two_seconds_in(repo, sage, tickets_repo):
    """Issue 4's done-when: kill -9 two seconds in, rerun, all 60 land exactly once."""
    chains = [
        ticket(f"C{c}-{i}", *([f"C{c}-{i - 1}"] if i else []), command=writer(f"c{c}/{i}.txt"))
        for c in range(6)
        for i in range(10)
    ]
    tickets_repo(chains)
    run = subprocess.Popen(
        [sys.executable, "-m", "sage", *AUTO, "--parallel", "4"],
        cwd=repo,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(2)
    run.kill()
    run.wait()
    done = sage(*AUTO, "--parallel", "4", cwd=repo, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(trailers(repo)) == sorted(t["id"] for t in chains)
    assert set(states(repo).values()) == {"COMPLETED"}
    assert worktree_paths(repo) == [repo]


def test_run_state_stays_out_of_the_checkout_even_without_sage_init(tmp_path, sage):
    repo = tmp_path / "bare-project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")
    index = repo / ".sage" / "tickets" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"tickets": [ticket("N-1", command=writer("n.txt"))]}))
    done = sage(*AUTO, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    untracked = git(repo, "status", "--porcelain", "-uall").splitlines()
    assert untracked == ["?? .sage/tickets/index.json"]  # the user's own file, nothing of sage's
    assert (state_dir(repo) / "runs").is_dir() and (worktrees_dir(repo) / "_slots").is_dir()


def test_a_projects_own_files_under_sage_land(tmp_path, sage):
    """The bash tool sage grew from keeps `.sage/config.json` and `.sage/lib/…`: what a worker
    changes there lands, `sage init`'s `.gitignore` committed or not; only the index lock stays
    ignored."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".sage/lib").mkdir(parents=True)
    (repo / ".sage/config.json").write_text("{}\n")
    (repo / ".sage/lib/a.sh").write_text("echo a\n")
    assert sage("init", cwd=repo).returncode == 0
    names = [".sage/config.json", ".sage/lib/x.sh", ".sage/lib/logs/y.sh", ".sage/runs/notes.md"]
    code = "import pathlib\n" + "".join(
        f"p = pathlib.Path({name!r}); p.parent.mkdir(parents=True, exist_ok=True); "
        f"p.write_text('from S-1')\n"
        for name in names
    )
    index = repo / ".sage/tickets/index.json"
    index.write_text(json.dumps({"tickets": [ticket("S-1", command=py(code))]}))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tickets")
    done = sage(*AUTO, cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    changed = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
    assert sorted(set(changed) - {".sage/tickets/index.json"}) == sorted(names)
    assert all((repo / name).read_text() == "from S-1" for name in names)
    assert (
        git(repo, "status", "--porcelain", "-uall", "--", ".", ":!.sage/tickets/index.json") == ""
    )


def test_retry_deferred_runs_a_deferred_ticket_and_its_dependents_again(repo, sage, tickets_repo):
    flaky = py(
        f"import pathlib,sys; p=pathlib.Path({str(repo.parent / 'flaky-once')!r}); "
        "first = not p.exists(); p.write_text('x'); "
        "sys.exit(1) if first else pathlib.Path('fixed.txt').write_text('ok')"
    )
    tickets_repo([ticket("F-1", command=flaky), ticket("F-2", "F-1", command=writer("f2.txt"))])
    first = sage(*AUTO, "--retries", "0", cwd=repo)
    assert first.returncode == 1
    assert states(repo) == {"F-1": "DEFERRED", "F-2": "UNPROCESSED"}

    again = sage(*AUTO, cwd=repo)  # without the flag a deferred ticket stays deferred
    assert again.returncode == 1 and states(repo)["F-1"] == "DEFERRED"
    f1 = next(t for t in index_data(repo)["tickets"] if t["id"] == "F-1")
    assert [h["to"] for h in f1["state_history"]] == ["IN_PROGRESS", "DEFERRED"]
    assert "state_history" not in index_file(repo)["tickets"][0]  # run state, not the index

    done = sage(*AUTO, "--retry-deferred", cwd=repo)
    assert done.returncode == 0, done.stdout + done.stderr
    assert states(repo) == {"F-1": "COMPLETED", "F-2": "COMPLETED"}
    f1 = next(t for t in index_file(repo)["tickets"] if t["id"] == "F-1")
    assert [h["to"] for h in f1["state_history"]] == ["COMPLETED"]  # as its landing commit says
    assert git(repo, "status", "--porcelain", "-uno") == ""  # the index came with the landing


def test_nothing_to_run_is_refused_before_any_ticket_changes(repo, sage, tickets_repo):
    tickets_repo([ticket("Z-1"), ticket("Z-2", command=["definitely-not-a-program-xyz"])])
    before = (repo / ".sage/tickets/index.json").read_text()
    no_worker = sage(*AUTO, cwd=repo)
    assert no_worker.returncode == 1
    assert 'Z-1 has no "command" and no worker is configured' in no_worker.stderr
    missing = sage(*AUTO, "--worker", "true", cwd=repo)
    assert missing.returncode == 1
    assert "definitely-not-a-program-xyz not found on PATH" in missing.stderr
    assert (repo / ".sage/tickets/index.json").read_text() == before
    dry = sage("stream", "--dry-run", "--worker", "echo {ticket_id} {context_file}", cwd=repo)
    assert "would start Z-1: echo Z-1 '<context file>'" in dry.stdout


def test_a_hand_run_queue_process_lands_while_a_stream_runs(repo, tickets_repo):
    """Another terminal's `sage queue process` lands the stream's entry: the stream notices,
    starts the dependent, and finishes with exit 0."""
    from filelock import FileLock

    tickets_repo(
        [
            ticket("H-1", command=writer("h1", sleep=1.5)),
            ticket("H-2", "H-1", command=writer("h2")),
        ]
    )
    env = {**os.environ, "SAGE_LOCK_TIMEOUT": "0.2"}
    run = subprocess.Popen(
        [sys.executable, "-m", "sage", *AUTO, "--json"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: any(e["event"] == "started" for e in events(repo)))

    def busy() -> bool:
        return any(
            e["event"] == "warning" and "held by" in e.get("reason", "") for e in events(repo)
        )

    with FileLock(str(state_dir(repo) / "locks/queue.lock")):  # H-1 waits to land meanwhile
        wait_for(busy)
        by_hand = subprocess.Popen(
            [sys.executable, "-m", "sage", "queue", "process"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)  # it waits for the lock, polling
    hand_out, hand_err = by_hand.communicate(timeout=60)
    out, err = run.communicate(timeout=60)
    assert by_hand.returncode == 0, hand_out + hand_err
    assert run.returncode == 0, out + err
    assert states(repo) == {"H-1": "COMPLETED", "H-2": "COMPLETED"}
    assert sorted(trailers(repo)) == ["H-1", "H-2"]
    if "landed" in hand_out:  # the hand-run got there first: the stream must have reconciled
        assert [e["ticket"] for e in events(repo) if e["event"] == "reconciled"] == ["H-1"]


def test_from_a_linked_worktree_it_lands_on_the_branch_checked_out_there(
    repo, sage, tickets_repo, tmp_path
):
    tickets_repo([ticket("W-1", command=writer("w.txt"))])
    main_before = git(repo, "rev-parse", "main")
    feature = tmp_path / "feature"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(feature))
    done = sage(*AUTO, cwd=feature)
    assert done.returncode == 0, done.stdout + done.stderr
    assert git(repo, "rev-parse", "main") == main_before, "main must not move"
    assert trailers(repo, "feature") == ["W-1"]
    assert (feature / "w.txt").read_text() == "x", "the feature checkout followed"


def test_a_detached_head_is_no_target_branch(repo, sage, tickets_repo):
    tickets_repo([ticket("H-1", command=writer("h"))])
    git(repo, "checkout", "-q", "--detach")
    done = sage(*AUTO, cwd=repo)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "error: HEAD is detached: no target branch to land on" in done.stderr
    assert "hint: check out a branch or pass --target BRANCH" in done.stderr
    assert sage(*AUTO, "--target", "main", cwd=repo).returncode == 0
