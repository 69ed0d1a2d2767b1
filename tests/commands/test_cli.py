"""The root command: -h, -V, shell completion, and `validate --json` when the JSON is broken."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from sage import __version__
from tests.conftest import CliResult

Sage = Callable[..., CliResult]


def test_short_help_and_version(sage: Sage, tmp_path: Path) -> None:
    assert sage("-V", cwd=tmp_path).stdout.strip() == f"sage {__version__}"
    root = sage("-h", cwd=tmp_path)
    assert (
        root.returncode == 0 and "import" in root.stdout and "--install-completion" in root.stdout
    )
    sub = sage("queue", "-h", cwd=tmp_path)
    assert sub.returncode == 0 and "Usage: sage queue" in sub.stdout


def test_help_lists_every_exit_code_the_readme_documents() -> None:
    """`sage -h` and the README's table say the same codes (3 once missed three of its causes)."""
    import re

    from sage.cli import EXIT_CODES

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| (\d+) \|", table, flags=re.M))
    helped = set(re.findall(r"(?:: |; )(\d+) ", " ".join(EXIT_CODES.split())))
    assert documented == helped == {"0", "1", "2", "3", "70", "130"}


def test_shell_completion(sage: Sage, tmp_path: Path) -> None:
    # typer names the shell from the running processes (shellingham), not $SHELL: run under
    # bash, which stays sage's parent (`; true`: no exec), whatever started the tests
    command = f"{shlex.quote(sys.executable)} -m sage --show-completion; true"
    shown = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True)
    assert "_sage_completion" in shown.stdout, shown.stderr
    env = {"_SAGE_COMPLETE": "complete_bash", "COMP_WORDS": "sage va", "COMP_CWORD": "1"}
    assert sage(cwd=tmp_path, env=env).stdout.split() == ["validate"]


def test_validate_json_reports_a_syntax_error_on_stdout(repo: Path, sage: Sage) -> None:
    index = repo / ".sage" / "tickets" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text('{"tickets": [\n  {"id": "A-1",, "title": "x"}\n]}\n')
    done = sage("validate", "--json", cwd=repo)
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["ok"] is False
    assert report["errors"][0]["code"] == "unreadable" and ":2:" in report["errors"][0]["message"]
    assert "Traceback" not in done.stderr


def test_validate_prints_hints_and_counts_tickets(repo: Path, sage: Sage) -> None:
    index = repo / ".sage" / "tickets" / "index.json"
    index.parent.mkdir(parents=True)
    tickets = [{"id": "CORE-001", "title": "a"}, {"id": "APP-1", "title": "b",
                                                  "dependencies": ["CORE-01"]}]  # fmt: skip
    index.write_text(json.dumps({"tickets": tickets}))
    done = sage("validate", cwd=repo)
    assert "    hint: did you mean CORE-001?" in done.stdout
    index.write_text(json.dumps({"tickets": [*tickets[:1], {"id": "APP-1", "title": "b"}]}))
    assert "critical path: 1 tickets" in sage("validate", cwd=repo).stdout


def test_stream_refuses_a_typo_in_a_placeholder_before_anything_runs(
    repo: Path, sage: Sage
) -> None:
    assert sage("add", "APP-001", "Do it", cwd=repo).returncode == 0
    done = sage("stream", "--auto", "--worker", "touch {titel}", cwd=repo)
    assert done.returncode == 1, done.stderr
    assert "error: worker: unknown placeholder {titel}" in done.stderr
    assert "hint: did you mean {title}?" in done.stderr
    index = json.loads((repo / ".sage" / "tickets" / "index.json").read_text())
    assert (
        index["tickets"][0]["state"] == "UNPROCESSED" and "state_history" not in index["tickets"][0]
    )


LOADED = """
import sys
from sage.cli import main
code = main(sys.argv[1:])
print(" ".join(sorted(m for m in sys.modules if m.startswith(("sage.", "networkx")))))
"""


def test_a_command_imports_only_its_own_module(tmp_path: Path) -> None:
    """`sage stream` (and the git hooks' `sage hook-impl`) do not pay for every other command:
    the root command imports a command's module when that command is looked up."""
    done = subprocess.run([sys.executable, "-c", LOADED, "stream", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, check=True)  # fmt: skip
    loaded = set(done.stdout.split("\n")[-2].split())
    assert "sage.commands.stream" in loaded and "Usage: sage stream" in done.stdout
    others = {f"sage.commands.{m}" for m in ("add", "clean", "hooks", "import_", "demo", "report")}
    assert not loaded & (others | {"sage.lib.hooks", "sage.lib.clean", "sage.lib.importer"})


LEAVING = """
import atexit, sys, threading, time
from pathlib import Path
from sage.cli import leave
mark = Path(sys.argv[1])
atexit.register(lambda: mark.write_text(mark.read_text() + "exit handler;"))
if sys.argv[2] == "thread":  # still running when the command ends: waited for
    threading.Thread(target=lambda: (time.sleep(0.3), mark.write_text("thread;"))).start()
print("all of the output", end="")
sys.stderr.write("and its errors")
leave(3)
"""


def test_sage_exits_without_taking_python_apart_but_loses_nothing(tmp_path: Path) -> None:
    """`leave`: the output flushed into a pipe, the exit handlers run, the exit code kept; a
    thread still running is waited for, as a plain exit does."""
    for case, marked in (("alone", "exit handler;"), ("thread", "thread;exit handler;")):
        mark = tmp_path / f"{case}.txt"
        mark.write_text("")
        done = subprocess.run([sys.executable, "-c", LEAVING, str(mark), case],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
        said = (done.returncode, done.stdout, done.stderr)
        assert said == (3, "all of the output", "and its errors"), case
        assert mark.read_text() == marked, case


def test_a_reader_that_stops_early_is_no_error(repo: Path) -> None:
    """`sage plan | head`: the reader has what it wanted; exit 0 and nothing on stderr (typer
    would say 1), for `set -o pipefail` scripts."""
    many = [{"id": f"T-{i}", "title": f"ticket {i}", "dependencies": [f"T-{i - 1}"] if i > 1
             else []} for i in range(1, 1500)]  # fmt: skip
    (repo / ".sage" / "tickets").mkdir(parents=True, exist_ok=True)
    (repo / ".sage" / "tickets" / "index.json").write_text(json.dumps({"tickets": many}))
    for argv in (["plan"], ["plan", "--json"], ["graph"]):
        reader = subprocess.Popen([sys.executable, "-m", "sage", *argv], cwd=repo,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        assert reader.stdout is not None and reader.stderr is not None
        reader.stdout.read(64)
        reader.stdout.close()  # as `head` does
        said = reader.stderr.read().decode()
        reader.stderr.close()
        assert (reader.wait(timeout=60), said) == (0, ""), argv
