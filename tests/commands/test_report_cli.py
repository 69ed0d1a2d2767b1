"""`sage report` on a real run (the demo), looked at in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import state_dir
from tests.png import colours

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RUNNING, LANDED_NODE, DEFERRED_NODE = (21, 101, 192), (165, 214, 167), (239, 154, 154)


def sage(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sage", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    root = tmp_path / "demo"
    done = sage("demo", str(root), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    intro = done.stdout.index("a conflict, on purpose: DEMO-020 and DEMO-021")
    assert (
        intro < done.stdout.index("a failure, on purpose: DEMO-030") < done.stdout.index("started")
    )
    assert "first run in this repository: each of the 3 workers gets its own git worktree" in (
        done.stdout
    )
    return root


def test_report_of_the_demo_run_is_self_contained(demo: Path) -> None:
    done = sage("report", cwd=demo)
    assert done.returncode == 0, done.stderr
    path = demo / done.stdout.strip()
    assert path.name == "report.html" and path.parent.parent == state_dir(demo) / "runs"
    page = path.read_text()
    assert page.count("<svg") == 2 and 'class="timeline"' in page and 'class="dag"' in page
    assert not re.search(r"<script|<link|https?://(?!www\.w3\.org/2000/svg)", page)
    for tid in ("DEMO-001", "DEMO-021", "DEMO-030", "DEMO-031"):
        assert tid in page
    assert 'class="k-conflict"' in page and 'class="k-retry"' in page  # the staged conflict
    assert 'class="node s-deferred"' in page and 'class="node s-blocked"' in page


def test_report_renders_in_a_headless_browser(demo: Path, tmp_path: Path) -> None:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed: no browser to render the report in")
    path = demo / sage("report", cwd=demo).stdout.strip()
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'chromium'}",
         "--window-size=1200,1300", f"--screenshot={shot}", path.resolve().as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    width, height, seen = colours(shot)
    assert (width, height) == (1200, 1300)
    white = seen[(255, 255, 255)] / (width * height)
    assert 0.3 < white < 0.98, f"{white:.0%} white: a blank (or broken) page"
    assert seen[RUNNING] > 2000, "no worker bars in the timeline"
    assert seen[LANDED_NODE] > 2000 and seen[DEFERRED_NODE] > 300, "no ticket graph"


def test_report_names_a_run_and_refuses_an_unknown_one(demo: Path, tmp_path: Path) -> None:
    run_id = next((state_dir(demo) / "runs").iterdir()).name
    out = tmp_path / "out" / "r.html"
    done = sage("report", run_id[:15], "--output", str(out), cwd=demo)
    assert done.returncode == 0 and out.is_file(), done.stderr
    assert run_id in out.read_text()
    done = sage("report", "1999", cwd=demo)
    assert done.returncode == 1 and "error: no run matching '1999'" in done.stderr
    assert f"hint: the newest runs are: {run_id}" in done.stderr


def test_report_before_any_run(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert sage("init", cwd=tmp_path).returncode == 0
    done = sage("report", cwd=tmp_path)
    assert done.returncode == 1 and "error: no run yet" in done.stderr
    assert "hint: start one: sage stream --auto" in done.stderr
