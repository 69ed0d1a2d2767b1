"""EXAMPLES.md stays true: every `sh` block runs, in order, and every `text` line shows up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```(sh|text)\n(.*?)```", re.S)


def blocks(kind: str) -> list[str]:
    return [body for k, body in BLOCK.findall((ROOT / "EXAMPLES.md").read_text()) if k == kind]


def expected_lines() -> list[str]:
    """Lines of the shown output, without the elided ones (…) and paths that vary."""
    lines = [line.strip() for body in blocks("text") for line in body.splitlines()]
    return [line for line in lines if line and "…" not in line]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_examples_run_and_show_what_they_say() -> None:
    script = "set -euo pipefail\n" + "\n".join(blocks("sh"))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=280
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    missing = [line for line in expected_lines() if line not in output]
    assert not missing, f"not in the output: {missing}\n\n{output}"
    assert "Traceback" not in output
