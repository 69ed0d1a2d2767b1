"""`sage demo`: the newcomer's first command goes as designed."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.conftest import worktree_paths
from tests.stream.conftest import states, trailers


def test_demo_runs_as_designed(sage, tmp_path: Path) -> None:
    target = tmp_path / "demo"
    done = sage("demo", str(target), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo OK" in done.stdout
    assert "conflict  DEMO-021" in done.stdout or "conflict  DEMO-020" in done.stdout
    got = states(target)
    assert got.pop("DEMO-030") == "DEFERRED"
    assert got.pop("DEMO-031") == "UNPROCESSED"
    assert set(got.values()) == {"COMPLETED"}
    assert sorted(trailers(target)) == sorted(got)
    assert worktree_paths(target) == [target], "only the main worktree (and the slots) are left"


def test_demo_refuses_a_non_empty_directory(sage, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    done = sage("demo", str(tmp_path / "full"), cwd=tmp_path)
    assert done.returncode == 1
    assert "is not empty" in done.stderr
    assert "Traceback" not in done.stderr
