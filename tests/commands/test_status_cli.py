"""`sage status` and `sage log` from another terminal while a stream runs, and after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import git, state_dir, wait_for, write_index
from tests.stream.conftest import py, ticket, writer


@pytest.fixture
def tickets_repo(repo: Path):
    def make(entries: list[dict[str, object]]) -> Path:
        write_index(repo, entries)
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", "tickets")
        return repo

    return make


def gated(gate: Path, name: str) -> list[str]:
    """A worker that says it started, waits for `gate` to exist, then writes `name`."""
    return py(
        "import pathlib,time,sys; print('waiting for the gate', flush=True); "
        f"g=pathlib.Path({str(gate)!r})\nwhile not g.exists(): time.sleep(0.05)\n"
        f"print('through the gate', flush=True); pathlib.Path({name!r}).write_text('x')"
    )


def stream(repo: Path) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "sage", "stream", "--auto", "--parallel", "2"]
    return subprocess.Popen(argv, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip


def test_status_and_log_follow_while_a_stream_runs(repo, sage, tickets_repo, tmp_path):
    gate = tmp_path / "gate"
    tickets_repo(
        [
            ticket("G-1", priority="P0", title="Gated", estimate_minutes=30,
                   command=gated(gate, "g1")),
            ticket("G-2", "G-1", title="After", estimate_minutes=10, command=writer("g2")),
            ticket("G-3", "G-9", title="Never", command=writer("g3")),
            ticket("G-9", state="DEFERRED", title="Deferred", deferred_reason="broke earlier",
                   command=writer("g9")),
        ]
    )  # fmt: skip
    run = stream(repo)
    try:
        wait_for(lambda: next_log(repo, "G-1").exists() or run.poll() is not None)
        assert run.poll() is None, run.communicate()[0]
        wait_for(lambda: "waiting for the gate" in next_log(repo, "G-1").read_text())
        done = sage("status", cwd=repo)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert f"running (PID {run.pid}" in out, out
        assert "slot 1: G-1 'Gated' attempt 1, since" in out and ", PID " in out
        assert "waiting: G-2 (on G-1)" in out and "blocked: G-3 (by G-9)" in out
        assert "deferred: G-9: broke earlier" in out
        assert "eta: about 40 min with 2 workers, from the estimates" in out
        page = (repo / sage("report", cwd=repo).stdout.strip()).read_text()
        assert "2 worker slots, running</p>" in page and "G-1 attempt 1: worker running" in page
        data = json.loads(sage("status", "--json", cwd=repo).stdout)
        assert data["live"] and [r["ticket"] for r in data["running"]] == ["G-1"]
        follow = subprocess.Popen([sys.executable, "-m", "sage", "log", "G-1", "--follow"],
                                  cwd=repo, stdout=subprocess.PIPE, text=True)  # fmt: skip
        gate.write_text("open")
        followed, _ = follow.communicate(timeout=60)
        assert follow.returncode == 0
        assert "waiting for the gate" in followed and "through the gate" in followed
    finally:  # a failed check must not leave the stream waiting at the gate
        gate.write_text("open")
        try:
            output, _ = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
    assert run.returncode == 1, output  # G-3 blocked, G-9 deferred earlier
    after = sage("status", cwd=repo).stdout
    assert "finished, 2 completed, 1 deferred, 1 blocked (exit 1)" in after, after
    assert "slot" not in after and "eta: nothing left that can run (the rest is blocked)" in after


def test_a_run_that_stopped_early_says_so_and_why(repo, sage, tickets_repo):
    tickets_repo([ticket("F-1", command=py("raise SystemExit(1)")),
                  ticket("F-2", "F-1", command=py("print('never')"))])  # fmt: skip
    run = sage("stream", "--auto", "--retries", "0", "--on-error", "fail", cwd=repo)
    assert run.returncode == 3, run.stdout + run.stderr
    first = sage("status", cwd=repo).stdout.splitlines()[0]
    assert first.endswith(
        "stopped early, 0 completed, 1 deferred, 1 blocked (exit 3): "
        "F-1 was deferred and --on-error is fail"
    ), first


def next_log(repo: Path, tid: str) -> Path:
    folder = state_dir(repo) / "runs"
    runs = sorted(folder.glob("*")) if folder.is_dir() else []
    return (runs[-1] if runs else folder / "none") / f"{tid}.log"


def test_log_prints_the_newest_and_refuses_unknown(repo, sage, tickets_repo):
    tickets_repo([ticket("L-1", command=py("print('hello from L-1')"), allow_empty=True)])
    first = sage("stream", "--auto", cwd=repo)
    assert first.returncode == 0 and "first run in this repository: the worker gets" in first.stdout
    assert "(a checkout of 3 files, about 0.1 s)" in first.stdout  # one worker: not "each"
    assert "first run" not in sage("stream", "--auto", cwd=repo).stdout
    done = sage("log", "L-1", cwd=repo)
    assert done.returncode == 0 and "hello from L-1" in done.stdout
    assert sage("log", "L-1", "--follow", cwd=repo).stdout == done.stdout  # over: no wait
    missing = sage("log", "L-2", cwd=repo)
    assert missing.returncode == 1 and "error: no log for L-2 in any run" in missing.stderr
    assert "hint: " in missing.stderr and "Traceback" not in missing.stderr


def test_status_before_any_run(repo, sage, tickets_repo):
    tickets_repo([ticket("B-1", command=writer("b")), ticket("B-2", "B-1")])
    done = sage("status", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "run: none yet (sage stream starts one)",
        "queue: empty",
        "tickets: 2 unprocessed",
        "ready: B-1",
        "waiting: B-2 (on B-1)",
        "eta: unknown (no estimates, and no run to time tickets by)",
    ]


def test_status_shows_what_waits_to_land(repo, sage, tickets_repo):
    from sage.lib.queue.entries import Entries, new_entry

    tickets_repo([ticket("Q-1", command=writer("q"))])
    entry = new_entry(ticket_id="Q-1", title="q", branch="sage/Q-1", base="b", head="h")
    Entries(state_dir(repo) / "queue", state_dir(repo) / "locks", 5).add(entry)
    out = sage("status", cwd=repo).stdout
    assert "queue: 1 waiting to land: #1 Q-1 (queued since " in out, out
    data = json.loads(sage("status", "--json", cwd=repo).stdout)
    assert [(q["seq"], q["ticket"], q["status"]) for q in data["queue"]] == [(1, "Q-1", "queued")]


def test_the_eta_times_tickets_by_an_earlier_run_past_a_damaged_one(repo, sage, tickets_repo):
    tickets_repo([ticket("E-1", command=writer("e1"))])
    assert sage("stream", "--auto", cwd=repo).returncode == 0
    timed = sorted((state_dir(repo) / "runs").iterdir())[-1].name
    assert sage("add", "E-2", "Next", "--command", "true", cwd=repo).returncode == 0
    runs = state_dir(repo) / "runs"
    later = {
        "29991231-000000-bbbbbb": "garbage",  # damaged by hand
        "29991231-000001-cccccc": "2999-12-31T00:00:01.000Z",  # just started: timed nothing
    }
    for name, at in later.items():
        (runs / name).mkdir()
        (runs / name / "events.jsonl").write_text(json.dumps({"event": "run-started", "at": at}))
    out = sage("status", cwd=repo)
    assert out.returncode == 0 and f"s per ticket in run {timed}" in out.stdout, out
