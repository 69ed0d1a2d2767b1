#!/usr/bin/env python3
"""Bootstrap and run: `python3 dev.py demo|test|bench|lint|tools`. Needs Python 3.11+ and git.

Creates .venv on first use (and again when pyproject.toml changes), installs sage with its dev
and dask extras into it, then runs the command there. `test` (and `tools`) first installs the
pinned agent CLIs the agent tier (tests/agents) runs, into the ignored .tools/: claude and codex
(and husky, for the hook tests) with npm, aider in its own venv. Cached: a second run only checks.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import venv
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".sage-installed"
TOOLS = ROOT / ".tools"
NPM_TOOLS = ("@anthropic-ai/claude-code@2.1.197", "@openai/codex@0.171.0", "husky@9.1.7")
AIDER = "aider-chat==0.86.2"
AIDER_VENV = TOOLS / "aider-venv"

# -n: pytest-xdist, a test process per core (4 at most): most of the suite's time is the sage and
# git processes its tests start, which one test process at a time leaves a core idle for
PYTEST_ARGS = ["-q", "-p", "no:cacheprovider", "-n", str(min(4, os.cpu_count() or 1))]
COMMANDS = {
    "demo": [str(BIN / "sage"), "demo"],
    "test": [str(PY), "-m", "coverage", "run", "-m", "pytest", *PYTEST_ARGS],
    "bench": [str(PY), "bench/run.py", "--quick"],
    "lint": [str(PY), "-m", "ruff", "check", "sage", "tests", "bench"],
    "typecheck": [str(PY), "-m", "mypy"],
    "tools": [],
}


def ensure_venv() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PY.exists():
        return
    print(f"setting up {VENV} (first run only)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    pip = [str(PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev,dask]"], check=True)
    STAMP.write_text(wanted)


# The coverage floor of the test processes alone (what `dev.py test` measures; 78% on 2026-12-03);
# SAGE_COVER_ALL=1 measures the sage processes the tests start too, against pyproject.toml's.
IN_PROCESS_FLOOR = 75


def coverage_report() -> int:
    """After the tests: every process's coverage data combined, reported against the floor: the
    test processes' (`IN_PROCESS_FLOOR`), or with SAGE_COVER_ALL=1 every process's
    (`[tool.coverage.report] fail_under` in pyproject.toml)."""
    cov = [str(PY), "-m", "coverage"]
    subprocess.run([*cov, "combine", "-q"], cwd=ROOT, check=False)
    floor = [] if os.environ.get("SAGE_COVER_ALL") else [f"--fail-under={IN_PROCESS_FLOOR}"]
    return subprocess.run([*cov, "report", *floor], cwd=ROOT).returncode


def compile_sources() -> None:
    """sage's bytecode written once, as pip writes an installed package's: the editable install
    runs from the sources, and where imports may not write bytecode (PYTHONDONTWRITEBYTECODE)
    every sage process the tests start would compile them all again (70 ms or more each)."""
    subprocess.run([str(PY), "-m", "compileall", "-q", str(ROOT / "sage")],
                   stdout=subprocess.DEVNULL, check=False)  # fmt: skip


def ensure_tools() -> list[threading.Thread]:
    """The pinned agent CLIs in .tools/, each installed in a thread of its own (the caller joins
    them), beside .venv's install: most of each is waiting on a registry. A failure is reported
    and the agent tier skips."""
    started = []
    for what, installed, install in (
        ("npm tools", _npm_installed, _npm_install),
        ("aider", _aider_installed, _aider_install),
    ):
        if not installed():
            print(f"installing {what} into {TOOLS} (first run only)", flush=True)
            started.append(threading.Thread(target=_install, args=(what, install)))
            started[-1].start()
    return started


def _install(what: str, install: Callable[[], None]) -> None:
    try:
        install()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"warning: could not install {what} ({exc}): its agent tests will skip", flush=True)


def _npm_installed() -> bool:
    stamp = TOOLS / ".npm-installed"
    bins = [TOOLS / "node_modules" / ".bin" / name for name in ("claude", "codex", "husky")]
    return (
        stamp.exists() and stamp.read_text() == " ".join(NPM_TOOLS) and all(map(Path.exists, bins))
    )


def _npm_install() -> None:
    TOOLS.mkdir(exist_ok=True)
    args = ["npm", "install", "--prefix", str(TOOLS), "--no-audit", "--no-fund", "--save-exact"]
    subprocess.run([*args, "--loglevel", "error", *NPM_TOOLS], check=True)
    (TOOLS / ".npm-installed").write_text(" ".join(NPM_TOOLS))


def _aider_installed() -> bool:
    stamp = AIDER_VENV / ".sage-installed"
    return stamp.exists() and stamp.read_text() == AIDER and (AIDER_VENV / "bin" / "aider").exists()


def _aider_install() -> None:
    venv.EnvBuilder(with_pip=True, clear=True).create(AIDER_VENV)
    pip = [str(AIDER_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet",
           "--disable-pip-version-check"]  # fmt: skip
    done = subprocess.run([*pip, AIDER], capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-2000:] + done.stderr[-2000:], file=sys.stderr)
        raise subprocess.CalledProcessError(done.returncode, [*pip, AIDER])
    (AIDER_VENV / ".sage-installed").write_text(AIDER)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [args…]", file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"error: sage needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    tools = ensure_tools() if argv[0] in ("test", "tools") else []
    try:
        ensure_venv()
    finally:
        for thread in tools:
            thread.join()
    if not COMMANDS[argv[0]]:
        return 0
    if argv[0] in ("demo", "test"):
        compile_sources()
    if argv[0] == "test":
        shutil.rmtree(ROOT / ".coverage-data", ignore_errors=True)
        (ROOT / ".coverage-data").mkdir()
    code = subprocess.run([*COMMANDS[argv[0]], *argv[1:]], cwd=ROOT).returncode
    if argv[0] == "test" and code == 0 and not argv[1:]:
        code = coverage_report()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
