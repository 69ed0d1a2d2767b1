"""A corpus of bad input through the real CLI. Each gets one clear `error:` line (never a
traceback) or a recorded deferral, a non-zero exit, and loses nothing: the index is still valid
JSON with its previous content, and no branch, worktree or file appears that should not."""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliResult, git, state_dir, ticket
from tests.reliability.conftest import (
    SAGE,
    branches,
    fsck_clean,
    index_data,
    new_repo,
    no_lost_work,
    worktree_paths,
)
from tests.stream.conftest import py, trailers, writer

Sage = Callable[..., CliResult]
AUTO = ("stream", "--auto", "--backoff", "0.05")
INDEX = ".sage/tickets/index.json"


def refused(done: CliResult, *needles: str) -> str:
    """A clean refusal: non-zero, `error: …` first on stderr, no traceback; the error line."""
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    first = done.stderr.splitlines()[0] if done.stderr else ""
    assert first.startswith("error: "), done.stderr
    for needle in needles:
        assert needle in first, first
    return first


def untouched(repo: Path, before: bytes) -> None:
    """Nothing happened: the index is as it was, no ticket branch, worktree or landing."""
    assert (repo / INDEX).read_bytes() == before
    assert branches(repo) == {}
    assert worktree_paths(repo) == [repo]
    assert git(repo, "rev-list", "--count", "main") == "1"


def setup_index(tmp_path: Path, text: str | None = None, **kwargs: Any) -> tuple[Path, bytes]:
    """A repository whose committed index is `text` (or built from `tickets=`)."""
    repo = new_repo(tmp_path / "repo", kwargs.get("tickets", []))
    if text is not None:
        (repo / INDEX).write_text(text, encoding="utf-8")
        git(repo, "commit", "-q", "--amend", "-am", "tickets")
    return repo, (repo / INDEX).read_bytes()


# ---- malformed and truncated JSON ----------------------------------------------------------------

VALID = json.dumps(
    {"tickets": [ticket("A-1", command=["true"]), ticket("A-2", "A-1", estimate_minutes=5)]},
    indent=2,
)
MALFORMED = [
    '{"tickets": [{"id": "A-1",}]}',
    "{'tickets': []}",
    '{"tickets": [{"id": "A-1", "title": "unterminated}]}',
    '{"tickets": []} trailing',
    '// a comment\n{"tickets": []}',
    '\ufeff{"tickets": []}',
    "",
]
CUTS = sorted(random.Random(7).sample(range(1, len(VALID) - 1), 6))


@pytest.mark.parametrize(
    "text", [*MALFORMED, *(VALID[:cut] for cut in CUTS)], ids=lambda t: repr(t[:24])
)
def test_malformed_or_truncated_json_names_line_and_column(
    tmp_path: Path, sage: Sage, text: str
) -> None:
    repo, before = setup_index(tmp_path, text)
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    where = f"index.json:{expected.value.lineno}:{expected.value.colno}: invalid JSON"

    refused(sage("validate", cwd=repo), where)
    untouched(repo, before)


def test_stream_on_truncated_json_refuses_and_changes_nothing(tmp_path: Path, sage: Sage) -> None:
    repo, before = setup_index(tmp_path, VALID[: len(VALID) // 2])
    refused(sage(*AUTO, "--parallel", "2", cwd=repo), "invalid JSON")
    refused(sage("plan", cwd=repo), "invalid JSON")
    untouched(repo, before)


@pytest.mark.parametrize("text", ['"tickets"', "null", '{"tickets": {}}', "{}"])
def test_a_document_of_the_wrong_shape_is_refused(tmp_path: Path, sage: Sage, text: str) -> None:
    repo, before = setup_index(tmp_path, text)
    refused(sage("validate", cwd=repo), "index.json")
    untouched(repo, before)


# ---- duplicate keys, deep nesting, huge numbers ------------------------------------------------

HIDDEN = '{"tickets": [{"id": "A-1", "title": "a", "command": ["true"]}],\n "tickets": []}'
TWO_IDS = '{"tickets": [\n  {"id": "B-1", "title": "b", "id": "B-2", "command": ["true"]}]}'


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (HIDDEN, 'index.json:2:2: duplicate key "tickets"'),
        (TWO_IDS, 'index.json:2:31: duplicate key "id"'),
    ],
)
def test_a_duplicate_key_is_refused_everywhere_and_the_index_kept(
    tmp_path: Path, sage: Sage, text: str, where: str
) -> None:
    """Found here: Python keeps the last of two keys, so this validated clean and the first
    write of a stream deleted the hidden tickets for good."""
    repo, before = setup_index(tmp_path, text)
    refused(sage("validate", cwd=repo), where)
    for command in (AUTO, ("plan",), ("ready",), ("graph",)):
        refused(sage(*command, cwd=repo), where)
    untouched(repo, before)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"tickets": [], "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
        ('{"tickets": [{"id": "N-1", "title": "n", "estimate_minutes": ' + "9" * 5000 + "}]}",
         "number is too long"),
    ],
    ids=["deep", "long-number"],
)  # fmt: skip
def test_input_python_cannot_hold_is_one_error_line(
    tmp_path: Path, sage: Sage, text: str, needle: str
) -> None:
    """Found here: both exited 70 with an internal error (RecursionError, ValueError)."""
    repo, before = setup_index(tmp_path, text)
    refused(sage("validate", cwd=repo), "index.json", needle)
    refused(sage(*AUTO, cwd=repo), "index.json", needle)
    untouched(repo, before)


# ---- wrong types ------------------------------------------------------------------------------

WRONG = [
    ({"id": 7, "title": "number id"}, "missing-field", None),
    ({"id": None, "title": "null id"}, "missing-field", None),
    ("just a string", "not-an-object", None),
    (ticket("B-1", dependencies="A-1"), "bad-dependencies", "B-1"),
    (ticket("B-2", dependencies=["A-1", 3]), "bad-dependencies", "B-2"),
    (ticket("B-3", estimate_minutes=-5), "bad-estimate", "B-3"),
    (ticket("B-4", estimate_minutes="45"), "bad-estimate", "B-4"),
    (ticket("B-5", estimate_minutes=True), "bad-estimate", "B-5"),
    (ticket("B-6", command="make test"), "bad-command", "B-6"),
    (ticket("B-7", command=[]), "bad-command", "B-7"),
    (ticket("B-8", command=["make", 1]), "bad-command", "B-8"),
    (ticket("B-9", title=42), "missing-field", "B-9"),
    (ticket("B-10", state="done"), "bad-state", "B-10"),
    (ticket("B-11", priority="P9"), "bad-priority", "B-11"),
    (ticket("B-12", type=["implementation"]), "bad-type", "B-12"),
]


def test_wrong_types_are_each_reported_in_one_run(tmp_path: Path, sage: Sage) -> None:
    tickets = [entry for entry, _, _ in WRONG]
    repo, before = setup_index(tmp_path, json.dumps({"tickets": tickets}, indent=2))

    done = sage("validate", "--json", cwd=repo)

    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    found = {(e["code"], e["ticket"]) for e in json.loads(done.stdout)["errors"]}
    for _, code, tid in WRONG:
        assert (code, tid) in found, (code, tid, found)
    refused(sage(*AUTO, cwd=repo), "errors")
    untouched(repo, before)


@pytest.mark.parametrize("estimate", ["Infinity", "NaN", "1e308"])
def test_estimates_beyond_any_real_number_of_minutes_are_refused(
    tmp_path: Path, sage: Sage, estimate: str
) -> None:
    """Found here: `Infinity` (and two 1e308s, whose sum is) crashed validate and plan."""
    text = (
        '{"tickets": ['
        f'{{"id": "E-1", "title": "a", "estimate_minutes": {estimate}}}, '
        f'{{"id": "E-2", "title": "b", "estimate_minutes": {estimate}}}]}}'
    )
    repo, before = setup_index(tmp_path, text)

    done = sage("validate", "--json", cwd=repo)

    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert {e["code"] for e in json.loads(done.stdout)["errors"]} == {"bad-estimate"}
    refused(sage("plan", cwd=repo), "estimate_minutes")
    untouched(repo, before)


# ---- huge fields ------------------------------------------------------------------------------


def test_a_one_megabyte_title_validates_fast_and_its_ticket_lands(
    tmp_path: Path, sage: Sage
) -> None:
    """Found here: the title went into the worker's environment whole, and one variable over
    128 KiB makes exec fail (E2BIG), so the ticket could never start."""
    huge = "T" * 1_000_000
    notes = "n" * 1_000_000
    repo, _ = setup_index(
        tmp_path, tickets=[ticket("H-1", title=huge, notes=notes, command=writer("h.txt"))]
    )
    started = time.monotonic()
    assert sage("validate", cwd=repo).returncode == 0
    assert time.monotonic() - started < 20

    done = sage(*AUTO, cwd=repo)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    [raw] = index_data(repo)["tickets"]
    assert raw["state"] == "COMPLETED" and raw["title"] == huge and raw["notes"] == notes
    assert trailers(repo) == ["H-1"]


# ---- unsafe IDs -------------------------------------------------------------------------------

UNSAFE = {
    "../x": "'..'",
    "a b": "whitespace",
    "x.lock": ".lock",
    "-rf": "'-'",
    "..": "'..'",
    "ТASK-1": "non-ASCII",  # Cyrillic Т
    "TASK-１": "non-ASCII",  # fullwidth digit one
    "TASK-٣": "non-ASCII",  # Arabic-Indic digit three
    "T\x00": "control",
    "T-1\n": "control",
    "": "empty",
    "x/y": "separator",
    ".hidden": "'.'",
    "T-1.": "'.'",
}


def test_unsafe_ids_are_refused_by_name_and_nothing_is_created(tmp_path: Path, sage: Sage) -> None:
    tickets = [ticket(tid, command=writer(f"../../../marker-{n}")) for n, tid in enumerate(UNSAFE)]
    repo, before = setup_index(tmp_path, json.dumps({"tickets": tickets}, indent=2))

    done = sage("validate", "--json", cwd=repo)

    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    unsafe = {e["ticket"]: e["message"] for e in json.loads(done.stdout)["errors"]
              if e["code"] == "unsafe-id"}  # fmt: skip
    for tid, why in UNSAFE.items():
        assert why in unsafe.get(tid, ""), (tid, unsafe.get(tid))
    refused(sage(*AUTO, "--parallel", "4", cwd=repo), "errors", "IDs become branch")
    untouched(repo, before)
    assert not list(tmp_path.rglob("marker-*")) and not (repo.parent / "x").exists()


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (ticket("x" * 250, command=writer("x")), "longer than 100 characters"),
        (ticket("T-1", title="a\x00b", command=writer("x")), "NUL"),
        (ticket("T-2", command=[*writer("x"), "\x00"]), "NUL"),
        (ticket("T-3", command=writer("x"), state_history="oops"), "state_history"),
        (ticket("T-4", title="a\ud800", command=writer("x")), "surrogate"),
    ],
    ids=["long-id", "nul-title", "nul-command", "history", "surrogate"],
)
def test_input_that_crashed_every_run_is_refused_up_front(
    tmp_path: Path, sage: Sage, entry: dict[str, Any], needle: str
) -> None:
    """Found here: each validated, then every run crashed (exit 70: `File name too long`, a
    history that is not a list, a lone surrogate that cannot be written) or every attempt
    failed (`ValueError: embedded null byte`)."""
    text = json.dumps({"tickets": [entry]}, indent=2)
    repo, before = setup_index(tmp_path, text)
    refused(sage(*AUTO, cwd=repo), needle)
    checked = sage("validate", cwd=repo)
    assert checked.returncode == 1 and "Traceback" not in checked.stderr, checked.stderr
    assert needle in checked.stdout + checked.stderr
    untouched(repo, before)


def test_a_lookalike_dependency_is_an_unknown_ticket(tmp_path: Path, sage: Sage) -> None:
    tickets = [ticket("TASK-1"), ticket("TASK-2", "ТASK-1")]  # the second Т is Cyrillic
    repo, before = setup_index(tmp_path, json.dumps({"tickets": tickets}))

    done = sage("validate", "--json", cwd=repo)

    errors = json.loads(done.stdout)["errors"]
    assert done.returncode == 1
    assert [(e["code"], e["ticket"]) for e in errors] == [("unknown-dependency", "TASK-2")]
    untouched(repo, before)


def test_a_ticket_depending_on_itself_is_a_cycle(tmp_path: Path, sage: Sage) -> None:
    repo, before = setup_index(tmp_path, tickets=[ticket("S-1", "S-1", command=writer("s"))])
    done = sage("validate", cwd=repo)
    assert done.returncode == 1 and "cycle: S-1 → S-1" in done.stdout
    refused(sage(*AUTO, cwd=repo), "cycle: S-1 → S-1")
    untouched(repo, before)


# ---- a 10k-long chain -------------------------------------------------------------------------


def chain(length: int, *, closed: bool = False) -> list[dict[str, Any]]:
    tickets = [ticket(f"C-{n}", *([f"C-{n - 1}"] if n else [])) for n in range(length)]
    if closed:
        tickets[0]["dependencies"] = [f"C-{length - 1}"]
    return tickets


def test_a_10k_long_chain_validates_and_plans_fast_without_recursion(
    tmp_path: Path, sage: Sage
) -> None:
    repo, _ = setup_index(tmp_path, tickets=chain(10_000))
    for args in (("validate", "--json"), ("plan", "--json", "--parallel", "4"), ("ready",)):
        started = time.monotonic()
        done = sage(*args, cwd=repo)
        assert done.returncode == 0, done.stderr[-2000:]
        assert time.monotonic() - started < 20, args  # about a second here; no quadratic path
    plan = json.loads(sage("plan", "--json", cwd=repo).stdout)
    assert len(plan["critical_path"]) == 10_000 and len(plan["waves"]) == 10_000


def test_a_10k_long_cycle_is_found_without_recursion(tmp_path: Path, sage: Sage) -> None:
    repo, before = setup_index(tmp_path, tickets=chain(10_000, closed=True))
    done = sage("validate", "--json", cwd=repo)
    assert done.returncode == 1, done.stderr[-2000:]
    [cycle] = [e for e in json.loads(done.stdout)["errors"] if e["code"] == "cycle"]
    assert cycle["message"].startswith("cycle: C-0 → C-1 → C-2")
    refused(sage(*AUTO, cwd=repo), "cycle: C-0")
    untouched(repo, before)


# ---- misbehaving workers ----------------------------------------------------------------------


def test_misbehaving_workers_are_deferred_with_reasons_and_lose_nothing(
    tmp_path: Path, sage: Sage
) -> None:
    """A worker printing megabytes (it lands, its log has it all), one that never exits (killed
    at --timeout, deferred), one that deletes its own worktree (deferred); a well-behaved one
    lands beside them."""
    megabytes = py(
        "import sys, pathlib\n"
        "sys.stdout.write(''.join('%07d' % n + 'y' * 92 + '\\n' for n in range(80000)))\n"
        "pathlib.Path('m.txt').write_text('m')\n"
    )
    tickets = [
        ticket("M-1", command=megabytes),
        ticket("N-1", command=py("import time; time.sleep(600)")),
        ticket("D-1", command=py("import os, shutil; shutil.rmtree(os.getcwd())")),
        ticket("OK-1", command=writer("ok.txt")),
    ]
    repo, _ = setup_index(tmp_path, tickets=tickets)

    # 3 s: long enough for the 8 MB writer on a loaded machine (2 test processes, coverage)
    done = sage(*AUTO, "--parallel", "4", "--timeout", "3", "--retries", "0", "--json", cwd=repo)

    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    summary = json.loads(done.stdout.splitlines()[-1])
    assert sorted(summary["completed"]) == ["M-1", "OK-1"]
    assert "timed out after 3s" in summary["deferred"]["N-1"]
    assert "deleted its worktree" in summary["deferred"]["D-1"]
    reasons = {t["id"]: t.get("deferred_reason", "") for t in index_data(repo)["tickets"]}
    assert "timed out" in reasons["N-1"] and "deleted its worktree" in reasons["D-1"]
    [log] = (state_dir(repo) / "runs").glob("*/M-1.log")
    assert log.stat().st_size > 8_000_000 and "0079999" + "y" * 92 in log.read_text()
    assert sorted(trailers(repo)) == ["M-1", "OK-1"]
    assert worktree_paths(repo) == [repo] and not workers_alive(repo)
    no_lost_work(repo)
    fsck_clean(repo)


def workers_alive(repo: Path) -> list[int]:
    """Processes still running with a worktree of `repo` in their environment."""
    alive = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        if f"SAGE_WORKTREE={repo}".encode() in environ:
            alive.append(int(proc.name))
    return alive


# ---- sage's own state dir unwritable ----------------------------------------------------------


def read_only(folder: Path) -> list[str]:
    """An argv prefix running a command with `folder` read-only. Not root: chmod is enough.
    Root ignores file modes, so: a read-only bind mount in a private mount namespace."""
    if os.geteuid() != 0:
        for path in [folder, *folder.rglob("*")]:
            if path.is_dir():
                path.chmod(0o555)
        return []
    script = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    prefix = ["unshare", "--mount", "sh", "-c", script, "sh", str(folder)]
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no read-only bind mount here: {probe.stderr.decode().strip()}")
    return prefix


def test_a_read_only_state_dir_is_refused_before_any_work(tmp_path: Path, sage: Sage) -> None:
    """A full or read-only disk where sage keeps its run state: the stream says so and starts
    nothing."""
    ran = tmp_path / "ran"
    repo, before = setup_index(tmp_path, tickets=[ticket("R-1", command=writer(str(ran)))])
    state = state_dir(repo)
    (state / "runs").mkdir(parents=True)
    prefix = read_only(state)
    try:
        run = subprocess.run(
            [*prefix, *SAGE, *AUTO], cwd=repo, capture_output=True, text=True, timeout=60
        )
        checked = subprocess.run(
            [*prefix, *SAGE, "validate"], cwd=repo, capture_output=True, text=True, timeout=60
        )
    finally:
        for path in [state, *state.rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)

    refused(CliResult(run.returncode, run.stdout, run.stderr), ".git/sage")
    assert checked.returncode == 1 and "is not writable" in checked.stdout
    untouched(repo, before)
    assert not ran.exists() and index_data(repo)["tickets"][0]["state"] == "UNPROCESSED"


def test_a_file_where_the_queue_dir_belongs_is_refused_and_kept(tmp_path: Path, sage: Sage) -> None:
    """The chmod-free stand-in for an unwritable dir: a file where the queue dir belongs."""
    repo, before = setup_index(tmp_path, tickets=[ticket("F-1", command=writer("f.txt"))])
    queue = state_dir(repo) / "queue"
    queue.parent.mkdir()
    queue.write_text("in the way\n")

    refused(sage(*AUTO, cwd=repo), ".git/sage/queue", "not a directory")
    assert queue.read_text() == "in the way\n"
    untouched(repo, before)


def test_a_write_failing_in_the_lander_stops_the_run_instead_of_hanging(
    tmp_path: Path, sage: Sage
) -> None:
    """Found here: an OSError in the lander thread (disk full, a path clobbered) killed that
    thread with a traceback, and the run waited for its landings forever."""
    clobber = py(
        "import pathlib, shutil\n"
        "import subprocess\n"
        "common = subprocess.run(['git', 'rev-parse', '--git-common-dir'], text=True,\n"
        "                        capture_output=True).stdout.strip()\n"
        "done = pathlib.Path(common).resolve() / 'sage/queue/done'\n"
        "shutil.rmtree(done, ignore_errors=True); done.write_text('in the way')\n"
        "pathlib.Path('c.txt').write_text('c')\n"
    )
    repo, _ = setup_index(tmp_path, tickets=[ticket("C-1", command=clobber)])

    done = sage(*AUTO, cwd=repo, timeout=60)

    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "queue/done" in done.stdout + done.stderr
    (state_dir(repo) / "queue/done").unlink()  # the user clears the way; the rerun finishes the job
    rerun = sage(*AUTO, cwd=repo)
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr
    assert trailers(repo) == ["C-1"] and index_data(repo)["tickets"][0]["state"] == "COMPLETED"
    assert worktree_paths(repo) == [repo]
