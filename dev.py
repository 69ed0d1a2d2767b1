#!/usr/bin/env python3
"""Bootstrap and run: `python3 dev.py demo|test|bench|lint`. Needs only Python 3.11+ and git.

Creates .venv on first use (and again when pyproject.toml changes), installs sage with its dev
and dask extras into it, then runs the command there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
STAMP = VENV / ".sage-installed"

COMMANDS = {
    "demo": [str(BIN / "sage"), "demo"],
    "test": [str(PY), "-m", "coverage", "run", "-m", "pytest", "-q", "-p", "no:cacheprovider"],
    "bench": [str(PY), "bench/run.py", "--quick"],
    "lint": [str(PY), "-m", "ruff", "check", "sage", "tests", "bench"],
    "typecheck": [str(PY), "-m", "mypy"],
}


def ensure_venv() -> None:
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == wanted and PY.exists():
        return
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py may be run by an older python3
        sys.exit(f"error: sage needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    print(f"setting up {VENV} (first run only)", flush=True)
    venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    pip = [str(PY), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev,dask]"], check=True)
    STAMP.write_text(wanted)


def coverage_report() -> int:
    """After the tests: every process's coverage data combined, reported against the floor in
    pyproject.toml (`[tool.coverage.report] fail_under`)."""
    cov = [str(PY), "-m", "coverage"]
    subprocess.run([*cov, "combine", "-q"], cwd=ROOT, check=False)
    return subprocess.run([*cov, "report"], cwd=ROOT).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python3 dev.py {{{'|'.join(COMMANDS)}}} [args…]", file=sys.stderr)
        return 2
    ensure_venv()
    if argv[0] == "test":
        shutil.rmtree(ROOT / ".coverage-data", ignore_errors=True)
        (ROOT / ".coverage-data").mkdir()
    code = subprocess.run([*COMMANDS[argv[0]], *argv[1:]], cwd=ROOT).returncode
    if argv[0] == "test" and code == 0 and not argv[1:]:
        code = coverage_report()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
