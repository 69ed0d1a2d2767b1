"""`sage queue status|process|retry ID`: the commit queue by hand."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sage.commands._common import IndexOpt, JsonOpt, emit_json, open_state
from sage.lib import lazy
from sage.lib.project import Project

if TYPE_CHECKING:
    from sage.lib import policy, runs
    from sage.lib import queue as commit_queue
else:  # imported on first use: every command (and git hook) starts faster
    policy = lazy.module("sage.lib.policy")
    commit_queue = lazy.module("sage.lib.queue")
    runs = lazy.module("sage.lib.runs")


app = typer.Typer(
    name="queue",
    help="The commit queue by hand: what waits to land, land it now, retry a rejected ticket.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
)

VerifyOpt = Annotated[
    str | None,
    typer.Option(
        "--verify",
        metavar="CMD",
        help="Run CMD on each candidate before the target moves (default: [stream] verify).",
    ),
]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", metavar="BRANCH", help="The branch to land on (default: [stream] "
                 "target_branch, else the branch checked out here)."),
]  # fmt: skip


def _open(
    index: str | None, target: str | None, verify: str | None = None
) -> tuple[commit_queue.CommitQueue, Project]:
    project = open_state(index, verify=verify, target_branch=target)
    project.require_git()
    cfg = project.config
    queue = commit_queue.CommitQueue(
        project,
        project.ticket_store(),
        target_branch=runs.target_branch(project, cfg.target_branch),
        verify=cfg.verify,
        verify_batch=cfg.verify_batch,
        lock_timeout=cfg.lock_timeout,
        verify_timeout=cfg.verify_timeout,
        run_id=time.strftime("queue-%Y%m%d-%H%M%S"),
    )
    return queue, project


@app.command("status")
def status(json: JsonOpt = False, index: IndexOpt = None, target: TargetOpt = None) -> int:
    """Show the entries waiting to land, and how many landed, were deferred or discarded."""
    queue, _ = _open(index, target)
    pending, archived = queue.pending(), queue.archived()
    counts = {s: sum(e.status == s for e in archived) for s in ("landed", "deferred", "discarded")}
    update = queue.unfinished()
    behind = {"checkout": update.checkout, "old": update.old, "new": update.new} if update else None
    if json:
        emit_json({"target": queue.target, "pending": [_row(e) for e in pending],
                   "archived": counts, "unfinished_checkout_update": behind})  # fmt: skip
        return 0
    done = ", ".join(f"{n} {s}" for s, n in counts.items())
    typer.echo(f"commit queue for {queue.target}: {len(pending)} pending ({done})")
    if update is not None:
        typer.echo(f"  unfinished: the update of {update.checkout} from {update.old[:12]} to "
                   f"{update.new[:12]} (landed); `sage queue process` finishes it")  # fmt: skip
    for e in pending:
        why = f"  {e.reason}" if e.reason else ""
        typer.echo(f"  #{e.seq}  {e.ticket_id}  {e.status}  attempts {e.attempts}  {e.branch}{why}")
    return 0


def _row(entry: commit_queue.QueueEntry) -> dict[str, Any]:
    keys = ("seq", "ticket_id", "title", "status", "attempts", "branch", "head", "worker",
            "queued_at", "conflict_files", "collided_with", "reason")  # fmt: skip
    data = entry.as_dict()
    return {k: data[k] for k in keys}


@app.command("process")
def process(
    json: JsonOpt = False,
    index: IndexOpt = None,
    target: TargetOpt = None,
    verify: VerifyOpt = None,
) -> int:
    """Land every queued entry now. A rejected ticket goes back to UNPROCESSED to run again on
    the new head, or is DEFERRED once it used [queue] max_attempts; exit 1 if any was deferred
    or blocked."""
    queue, project = _open(index, target, verify)
    cfg = project.config
    rows = _land(queue, policy.Limits(max_attempts=cfg.max_attempts, backoff=cfg.backoff))
    if json:
        emit_json({"outcomes": rows, "verify_runs": queue.verify_runs})
    else:
        for row in rows:
            typer.echo(f"{row['outcome']:<9} {row['ticket']}  {row['detail']}".rstrip())
        if not rows:
            typer.echo("nothing to land", err=True)
    return 1 if any(r["outcome"] in ("deferred", "blocked") for r in rows) else 0


def _land(queue: commit_queue.CommitQueue, limits: policy.Limits) -> list[dict[str, str]]:
    """Process the queue, then settle every rejected entry: this run's, and any a dead stream
    left behind."""
    rows = []
    for outcome in queue.process():
        if not _rejected_for_retry(outcome):
            rows.append(_outcome(outcome))
        if isinstance(outcome, commit_queue.Landed):  # about the user's checkout
            tid = outcome.entry.ticket_id
            rows += [{"ticket": tid, "outcome": "warning", "detail": w} for w in outcome.warnings]
    for entry in queue.pending():
        if entry.status in commit_queue.REJECTED:
            step = queue.settle(entry, limits=limits)
            rows.append({"ticket": entry.ticket_id, "outcome": step, "detail": entry.reason or ""})
    return rows


def _rejected_for_retry(outcome: commit_queue.Outcome) -> bool:
    """Conflicts and verify failures are reported once settled (requeued or deferred)."""
    return isinstance(outcome, commit_queue.Rejected) and outcome.kind != "blocked"


def _outcome(outcome: commit_queue.Outcome) -> dict[str, str]:
    tid = outcome.entry.ticket_id
    if isinstance(outcome, commit_queue.Landed):
        return {"ticket": tid, "outcome": "landed", "detail": outcome.commit}
    return {"ticket": tid, "outcome": outcome.kind, "detail": outcome.detail}


@app.command("retry")
def retry(
    ticket_id: Annotated[str, typer.Argument(metavar="ID", help="The ticket to queue again.")],
    index: IndexOpt = None,
    target: TargetOpt = None,
) -> int:
    """Queue a ticket whose landing was rejected or deferred again, from its branch as it is now
    (fix the branch first if it conflicts), then land it with `sage queue process`."""
    queue, _ = _open(index, target)
    entry = queue.retry(ticket_id)
    typer.echo(
        f"queued {entry.ticket_id} again as #{entry.seq} from {entry.branch} ({entry.head[:12]})"
    )
    typer.echo("next: sage queue process", err=True)
    return 0


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="queue")
