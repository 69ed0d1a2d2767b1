"""`sage log ID [--follow]`: a ticket's newest worker log, and following it like `tail -f`
until the attempt that writes it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sage.lib import history
from sage.lib.errors import SageError
from sage.lib.project import Project

POLL = 0.2


def find(project: Project, ticket_id: str, run: str | None = None) -> Path:
    """`<ID>.log` in the newest run that has one (or in the run named)."""
    dirs = [history.find_run(project, run)] if run else history.run_dirs(project)
    for folder in dirs:
        path = folder / f"{ticket_id}.log"
        if path.is_file():
            return path
    where = f"run {dirs[0].name}" if run else f"any run in {project.shown(project.runs_dir)}"
    raise SageError(
        f"no log for {ticket_id} in {where}",
        hint="a ticket has a log once a stream has started it (sage status shows what runs)",
    )


def attempt_over(project: Project, log: Path) -> bool:
    """The run writing `log` has no attempt of that ticket going on: the worker finished, the
    run wrote its summary, or no stream runs any more."""
    if history.stream_holder(project) is None:
        return True
    tid, latest = log.stem, None
    for event in history.read_events(log.parent / "events.jsonl"):
        if event.get("ticket") == tid and event.get("event") in ("started", "finished"):
            latest = event["event"]
        elif event.get("event") in ("summary", "run-finished"):
            return True
    return latest != "started"


def follow(
    log: Path,
    over: Callable[[], bool],
    write: Callable[[str], None],
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write the log, then what is added to it, until `over()`; then what came last."""
    with open(log, encoding="utf-8", errors="replace") as handle:
        while True:
            done = over()  # asked before reading: nothing written before the end is missed
            text = handle.read()
            if text:
                write(text)
            if done:
                return
            sleep(POLL)
