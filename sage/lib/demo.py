"""`sage demo`: a small repository whose scripted tickets show every part of a stream."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sage.lib import git, project

WORK_SCRIPT = '''\
"""Scripted demo worker: what an AI agent would do, in a few lines of Python."""
import pathlib
import sys
import time

action, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(seconds)
if action == "write":
    path = pathlib.Path("src") / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"def {name}():\\n    return {name!r}\\n")
elif action == "chain":
    need = sys.argv[4] if len(sys.argv) > 4 else None
    if need and not pathlib.Path(need).exists():
        sys.exit(f"dependency output {need} is missing")
    pathlib.Path("chain").mkdir(exist_ok=True)
    pathlib.Path("chain", name).write_text(f"{name} done\\n")
elif action == "setting":
    lines = pathlib.Path("settings.ini").read_text().splitlines()
    lines[1] = f"mode = {name}"
    pathlib.Path("settings.ini").write_text("\\n".join(lines) + "\\n")
elif action == "fail":
    print(f"{name}: the build is broken on purpose", file=sys.stderr)
    sys.exit(1)
'''

SETTINGS = "[app]\nmode = default\nlevel = 1\n"

# id, title, priority, dependencies, minutes, action, name, seconds, extra argument
TICKETS: list[tuple[Any, ...]] = [
    ("DEMO-001", "Add the parser", "P0", [], 20, "write", "parser", 0.6, None),
    ("DEMO-002", "Add the formatter", "P1", [], 15, "write", "formatter", 0.4, None),
    ("DEMO-003", "Add the cache", "P1", [], 15, "write", "cache", 0.4, None),
    ("DEMO-004", "Add the logger", "P2", [], 10, "write", "logger", 0.3, None),
    ("DEMO-010", "Chain: schema", "P0", [], 10, "chain", "schema", 0.3, None),
    (
        "DEMO-011",
        "Chain: migration",
        "P0",
        ["DEMO-010"],
        10,
        "chain",
        "migration",
        0.3,
        "chain/schema",
    ),
    (
        "DEMO-012",
        "Chain: backfill",
        "P0",
        ["DEMO-011"],
        10,
        "chain",
        "backfill",
        0.3,
        "chain/migration",
    ),
    ("DEMO-020", "Settings: fast mode", "P0", [], 40, "setting", "fast", 0.5, None),
    ("DEMO-021", "Settings: safe mode", "P0", [], 40, "setting", "safe", 0.5, None),
    ("DEMO-030", "Broken build step", "P2", [], 5, "fail", "broken", 0.1, None),
    ("DEMO-031", "Package the broken step", "P2", ["DEMO-030"], 5, "write", "package", 0.1, None),
    (
        "DEMO-040",
        "Wire parser and formatter",
        "P1",
        ["DEMO-001", "DEMO-002"],
        10,
        "write",
        "wiring",
        0.2,
        None,
    ),
]

INTRO = """\
The demo's 12 scripted tickets show, in a couple of seconds:
  independent work: DEMO-001 … DEMO-004 run side by side, one worker slot each
  a chain: DEMO-010 → DEMO-011 → DEMO-012, each starts only once the one before has landed
  a conflict, on purpose: DEMO-020 and DEMO-021 rewrite the same line of settings.ini from the
    same base; one lands, the other is rolled back and re-run on the new head, then lands
  a failure, on purpose: DEMO-030 exits 1, is retried, then deferred with its reason; DEMO-031
    depends on it and is reported blocked
  DEMO-040 waits for DEMO-001 and DEMO-002
"""

EXPECTED_DEFERRED = ("DEMO-030",)
EXPECTED_BLOCKED = ("DEMO-031",)


def ticket_entries() -> list[dict[str, Any]]:
    entries = []
    for tid, title, prio, deps, minutes, action, name, seconds, extra in TICKETS:
        command = [sys.executable, "tools/demo_work.py", action, name, str(seconds)]
        entries.append(
            {
                "id": tid,
                "title": title,
                "state": "UNPROCESSED",
                "priority": prio,
                "type": "implementation",
                "validation_type": "generic",
                "dependencies": deps,
                "estimate_minutes": minutes,
                "command": command + ([extra] if extra else []),
            }
        )
    return entries


def build(root: Path) -> Path:
    """Create the demo repository at `root` (which must be empty or absent)."""
    if root.exists() and any(root.iterdir()):
        from sage.lib.errors import SageError

        raise SageError(f"{root} is not empty", hint="pass a new directory: sage demo DIR")
    (root / "tools").mkdir(parents=True)
    (root / "tools" / "demo_work.py").write_text(WORK_SCRIPT)
    (root / "settings.ini").write_text(SETTINGS)
    (root / "README.md").write_text("# sage demo\n\nBuilt by `sage demo`.\n")
    project.init(root)
    index = root / ".sage" / "tickets" / "index.json"
    index.write_text(json.dumps({"tickets": ticket_entries()}, indent=2) + "\n")
    git.git(root, "init", "--quiet", "-b", "main")
    git.git(root, "add", "-A")
    git.git(root, "commit", "--quiet", "-m", "demo: initial commit", env=git.identity_env(root))
    return root
