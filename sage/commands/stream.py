"""`sage stream`: run ready tickets through workers and land them through the commit queue."""

from __future__ import annotations

import contextlib
import functools
import gc
import shlex
import signal
import sys
from collections.abc import Iterator
from dataclasses import replace
from enum import Enum, StrEnum
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from sage.commands import _progress
from sage.commands._common import IndexOpt, JsonOpt, adopt, checked, emit_json, open_project
from sage.commands.plan import render as render_plan
from sage.lib import config as configuration
from sage.lib import graph as dag
from sage.lib import lazy
from sage.lib.errors import SageError, UsageError
from sage.lib.events import Journal
from sage.lib.project import Project
from sage.lib.tally import Tally
from sage.lib.tickets import Ticket
from sage.lib.words import counted

if TYPE_CHECKING:
    from sage.lib import agents, executors, onboarding, runs, scheduler, validation, workers
    from sage.lib import stream as streams
else:  # imported on first use: every command (and git hook) starts faster
    agents = lazy.module("sage.lib.agents")
    executors = lazy.module("sage.lib.executors")
    onboarding = lazy.module("sage.lib.onboarding")
    runs = lazy.module("sage.lib.runs")
    scheduler = lazy.module("sage.lib.scheduler")
    validation = lazy.module("sage.lib.validation")
    workers = lazy.module("sage.lib.workers")
    streams = lazy.module("sage.lib.stream")


class OnError(StrEnum):
    fail = "fail"
    skip = "skip"


class Schedule(StrEnum):
    dynamic = "dynamic"
    batch = "batch"


class ExecutorName(StrEnum):
    local = "local"
    dask = "dask"


# fmt: off
Interactive = Annotated[bool, typer.Option("--interactive", help="Ask before each ticket (default; needs a terminal, else use --auto).")]
Auto = Annotated[bool, typer.Option("--auto", help="Run without asking; needed for --parallel.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
Parallel = Annotated[str | None, typer.Option("--parallel", metavar="N|auto", help="Workers at once (with --auto). auto = half the cores, 1..8.")]
Worker = Annotated[str | None, typer.Option("--worker", metavar="CMD", help="Worker argv for tickets without a command: a preset (claude, codex, aider) or a command with {ticket_id} {title} {worktree} {context_file}.")]
Timeout = Annotated[float | None, typer.Option("--timeout", metavar="SECONDS", help="Kill a worker's process group after this long.")]
Retries = Annotated[int | None, typer.Option("--retries", help="Re-runs of a failing worker before DEFERRED.")]
OnErrorOpt = Annotated[OnError | None, typer.Option("--on-error", help="fail: start nothing new once a ticket is deferred; skip: go on.")]
ScheduleOpt = Annotated[Schedule | None, typer.Option("--schedule", help="dynamic (start as soon as ready) or batch (the seed's waves).")]
Verify = Annotated[str | None, typer.Option("--verify", metavar="CMD", help="Test each candidate merge before the target moves.")]
Target = Annotated[str | None, typer.Option("--target", metavar="BRANCH", help="Branch to land on (default: the one checked out).")]
ExecutorOpt = Annotated[ExecutorName | None, typer.Option("--executor", help="Where workers run.")]
SchedulerAddress = Annotated[str | None, typer.Option("--scheduler", metavar="ADDRESS", help="Dask scheduler (tcp://host:8786) or 'local'.")]
RetryDeferred = Annotated[bool, typer.Option("--retry-deferred", help="Run DEFERRED tickets again (their blocked dependents follow).")]
Backoff = Annotated[float | None, typer.Option("--backoff", metavar="SECONDS", help="First retry delay; doubles each time.")]
MaxCost = Annotated[float | None, typer.Option("--max-cost", metavar="USD", help="Start nothing new once the agents report this much spent.")]
# fmt: on


def command(
    interactive: Interactive = False,
    auto: Auto = False,
    dry_run: DryRun = False,
    parallel: Parallel = None,
    worker: Worker = None,
    timeout: Timeout = None,
    retries: Retries = None,
    on_error: OnErrorOpt = None,
    schedule: ScheduleOpt = None,
    verify: Verify = None,
    target: Target = None,
    executor: ExecutorOpt = None,
    scheduler_address: SchedulerAddress = None,
    backoff: Backoff = None,
    max_cost: MaxCost = None,
    retry_deferred: RetryDeferred = False,
    json: JsonOpt = False,
    index: IndexOpt = None,
) -> int:
    """Run ready tickets, each in its own git worktree, and land them one commit at a time.

    Logs, events and the commit queue go to the repository's git dir (.git/sage/), the workers'
    worktrees to the user's cache (~/.cache/sage/worktrees/); .sage/ holds only your files.

    Exit 0 when every ticket it took on landed; 1 when any was deferred, blocked or left waiting
    to land; 3 when it stopped early (--on-error fail, a "no" at the prompt, a worker that cannot
    run, or a landing the checkout is in the way of); 130 on Ctrl+C. Without --auto it asks
    before each ticket, which needs a terminal: exit 2 when stdin is not one.
    """
    mode = _mode(interactive, auto, dry_run, parallel)
    project = open_project(index, **_overrides(locals()))
    cfg = project.config
    if dry_run:
        return _dry_run(project, parallel or cfg.workers, json)
    project.require_git()
    adopt(project)
    project.require_writable()
    with runs.exclusive(project):
        first = _slots_for(cfg, parallel) if mode == "auto" else None
        loaded = runs.load(project, slots_for=first)
        validation.require_runnable(project, loaded.index, local=cfg.executor == "local")
        ready = len(dag.ready(loaded.index.tickets, loaded.graph))
        count = scheduler.resolve_workers(parallel or cfg.workers if mode == "auto" else 1, ready)
        options = replace(_options(project, cfg, count.workers), retry_deferred=retry_deferred)
        return _run(project, options, loaded, count, mode, json)


def _mode(interactive: bool, auto: bool, dry_run: bool, parallel: str | None) -> str:
    if sum((interactive, auto, dry_run)) > 1:
        raise UsageError("choose one of --interactive, --auto and --dry-run")
    if parallel is not None and not (auto or dry_run):
        raise UsageError(
            "--parallel needs --auto: parallel workers cannot stop to ask before each ticket",
            hint="run `sage stream --auto --parallel " + parallel + "`",
        )
    if not (auto or dry_run):
        _require_terminal()
    return "auto" if auto else "dry-run" if dry_run else "interactive"


def _require_terminal() -> None:
    """Asking before each ticket needs someone at a terminal to answer."""
    if not sys.stdin.isatty():
        raise UsageError(
            "sage stream asks before each ticket (interactive mode), but stdin is not a terminal",
            hint="use --auto to run without asking (sage stream --auto [--parallel N])",
        )


def _overrides(values: dict[str, object]) -> dict[str, object]:
    """Flags that map onto config keys (None = not given, so env and file still apply)."""

    def plain(value: object) -> object:
        return value.value if isinstance(value, Enum) else value

    keys = {
        "worker": "worker",
        "timeout": "timeout",
        "retries": "retries",
        "on_error": "on_error",
        "schedule": "schedule",
        "verify": "verify",
        "target": "target_branch",
        "executor": "executor",
        "scheduler_address": "scheduler",
        "backoff": "backoff",
        "max_cost": "max_cost",
    }
    return {key: plain(values[flag]) for flag, key in keys.items() if values[flag] is not None}


def _options(project: Project, cfg: configuration.Config, workers: int) -> streams.StreamOptions:
    return streams.StreamOptions(
        workers=workers,
        target_branch=runs.target_branch(project, cfg.target_branch),
        worker=cfg.worker,
        timeout=cfg.timeout,
        retries=cfg.retries,
        on_error=cfg.on_error,
        schedule=cfg.schedule,
        verify=cfg.verify,
        verify_batch=cfg.verify_batch,
        backoff=cfg.backoff,
        max_attempts=cfg.max_attempts,
        lock_timeout=cfg.lock_timeout,
        verify_timeout=cfg.verify_timeout,
        max_cost=cfg.max_cost,
        on_conflict=cfg.on_conflict,
        slow_start=_slow_start(cfg),
    )


def _slow_start(cfg: configuration.Config) -> bool:
    """An agent that is not logged in fails every ticket alike: find out on one."""
    return agents.detect(agents.expand(cfg.worker, cfg.agents)) is not None


def _slots_for(cfg: configuration.Config, parallel: str | None) -> runs.SlotsFor:
    """How many slots a run's first tickets take: one per worker started at once."""

    def count(ready: int) -> int:
        if _slow_start(cfg):
            return min(ready, 1)
        try:
            workers = scheduler.resolve_workers(parallel or cfg.workers, ready).workers
        except SageError:
            return 0  # a bad --parallel is told after the index is checked
        return min(workers, ready)

    return count


def _dry_run(project: Project, parallel: str, json: bool) -> int:
    from sage.lib.queue.landing import SLOTS_DIR

    idx, graph = checked(project)
    plan = scheduler.plan(idx.tickets, graph, parallel)
    slots = project.shown(project.worktrees_dir / SLOTS_DIR / "slot-<k>")
    starts = [(t.id, _argv(t, project.config, slots)) for t in dag.ready(idx.tickets, graph)]
    if json:
        would = [{"ticket": tid, "argv": argv if isinstance(argv, list) else None,
                  "error": argv if isinstance(argv, str) else None} for tid, argv in starts]  # fmt: skip
        emit_json({"dry_run": True, "plan": plan.as_dict(), "would_start": would})
        return 0
    typer.echo(f"DRY RUN (nothing changes): {counted(plan.workers.workers, 'worker')}")
    render_plan(plan)
    for tid, argv in starts:
        text = shlex.join(argv) if isinstance(argv, list) else f"(cannot run: {argv})"
        typer.echo(f"would start {tid}: {text}")
    return 0


def _argv(ticket: Ticket, cfg: configuration.Config, where: str) -> list[str] | str:
    """The argv the ticket would run, or why it cannot (no worker configured)."""
    try:
        argv = workers.argv_for(ticket, cfg.worker, cfg.agents)
    except SageError as exc:
        return exc.message
    return workers.fill(argv, ticket, worktree=where, context_file="<context file>")


def _run(
    project: Project,
    options: streams.StreamOptions,
    loaded: runs.Loaded,
    count: scheduler.WorkerCount,
    mode: str,
    json: bool,
) -> int:
    run_id = runs.new_run_id()
    tally = functools.partial(Tally, loaded.index.tickets, loaded.graph, options.workers)
    reporter = _progress.make(json=json, tally=tally)
    if count.warning:
        typer.echo(f"warning: {count.warning}", err=True)
    if not json:
        label = (
            "PARALLEL EXECUTION"
            if mode == "auto" and count.requested != "1"
            else "SEQUENTIAL EXECUTION"
        )
        typer.echo(f"{label}: {counted(options.workers, 'worker')}")
        for line in onboarding.first_run_note(project, options.workers):
            typer.echo(line)
    journal = Journal(project.runs_dir / run_id / "events.jsonl", reporter.event)
    confirm = _asker(reporter) if mode == "interactive" else None
    interrupts = streams.Interrupts()
    # What is loaded by now (modules, the graph, the config) lives as long as the run: the
    # collector need not look through it again on each of the run's many small collections.
    # It was off while all that loaded (`sage.run`); a run is long enough to need it.
    gc.freeze()
    gc.enable()
    try:
        with reporter, _sigint(interrupts):
            summary = runs.execute(
                project, options, loaded, journal, run_id=run_id,
                executor=_executor(project, options), confirm=confirm, interrupts=interrupts,
            )  # fmt: skip
    finally:
        journal.close()
    reporter.summary(summary, project.runs_dir / run_id)
    if summary.unusable:
        _say_unusable(summary.unusable, dask=project.config.executor == "dask")
    return summary.exit_code


def _say_unusable(reason: str, *, dask: bool) -> None:
    """Why nothing more could run, in one `error:` line, and what to do."""
    typer.echo(f"error: the {'cluster' if dask else 'worker'} cannot run: {reason}", err=True)
    hint = (
        "start the scheduler and its workers again, then rerun: the tickets are back to UNPROCESSED"
        if dask
        else "log the agent in (or set its API key), or fix its flags in [agents.<name>] args; "
        "`sage validate` checks what it can without a network call"
    )
    typer.echo(f"hint: {hint}", err=True)


def _executor(project: Project, options: streams.StreamOptions) -> executors.Executor | None:
    if project.config.executor != "dask":
        return None
    try:
        from sage.lib import dask_executor
    except ImportError as exc:
        raise UsageError(
            f"--executor dask needs dask.distributed ({exc.name} is missing)",
            hint="pip install 'sage-stream[dask]'",
        ) from None
    return dask_executor.make(project, options)


ANSWERS = {"y": "yes", "yes": "yes", "n": "no", "no": "no", "s": "skip", "skip": "skip"}


def _asker(reporter: _progress.Reporter) -> streams.Confirm:
    """The prompt, with the live view paused so that the question is on screen."""

    def confirm(ticket: Ticket) -> str:
        with reporter.paused():
            return _prompt(ticket)

    return confirm


def _prompt(ticket: Ticket) -> str:
    """y, n or s; anything else asks again. Ctrl+C or Ctrl+D at the prompt stops the run."""
    question = f"Run {ticket.id} ({ticket.priority}) {ticket.title}? [y]es / [n]o, stop / [s]kip"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        while (answer := ANSWERS.get(typer.prompt(question, default="y").strip().lower())) is None:
            typer.echo("answer y (run it), n (stop here) or s (skip it and its dependents)")
    except (typer.Abort, KeyboardInterrupt, EOFError):
        typer.echo("")
        return "no"
    finally:
        signal.signal(signal.SIGINT, previous)
    return answer


@contextlib.contextmanager
def _sigint(interrupts: streams.Interrupts) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        interrupts.press()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if interrupts.presses:
            sys.stderr.flush()


def register(app: typer.Typer) -> None:
    app.command("stream")(command)
