"""Preparing and starting a stream: `sage stream` calls `exclusive`, `load`, then `execute`.

Under the run lock the index is read once and its graph built once; recovery (what a dead run
left) changes that in-memory view and the file alike, and the run's ledger is seeded from it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage.lib import agents as agent_presets
from sage.lib import executors, git, locks, worktrees
from sage.lib import graph as dag
from sage.lib import queue as commit_queue
from sage.lib.errors import IndexFileError, SageError
from sage.lib.events import Journal, RunSummary
from sage.lib.ledger import Ledger, Phase
from sage.lib.project import Project
from sage.lib.queue.landing import SLOTS_DIR, recorded_targets
from sage.lib.scheduler import Dispatcher
from sage.lib.stream import Confirm, Interrupts, Stream, StreamOptions
from sage.lib.tickets import DEFAULT_INDEX, Index, Ticket, TicketStore, read_notes
from sage.lib.validation import require_no_errors, validate
from sage.lib.workers import Resolve, WorkerJob, argv_for, context_text

if TYPE_CHECKING:
    import networkx as nx


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def target_branch(project: Project, configured: str, where: Path | None = None) -> str:
    """The configured branch, else the one checked out where sage runs (`where`, the current
    directory: a linked worktree on `feature` lands on `feature`)."""
    if configured:
        name = configured.removeprefix("refs/heads/")
    else:
        here = _worktree_of(project, where or Path.cwd())
        checked_out = git.head_branch(here)
        if not checked_out:
            raise SageError(
                "HEAD is detached: no target branch to land on",
                hint="check out a branch or pass --target BRANCH",
            )
        name = checked_out
    if git.rev_parse(project.root, f"refs/heads/{name}") is None:
        raise SageError(
            f"target branch {name!r} does not exist (or has no commit yet)",
            hint="create it with a first commit, or pass --target BRANCH",
        )
    return name


def _worktree_of(project: Project, where: Path) -> Path:
    """`where`'s worktree if it is one of this repository's (not a ticket's), else the root."""
    try:
        top = git.toplevel(where)
    except SageError:
        return project.root
    same = git.common_dir(top).resolve() == git.common_dir(project.root).resolve()
    inside_sage = project.worktrees_dir.resolve() in top.resolve().parents
    return top if same and not inside_sage else project.root


def make_queue(
    project: Project, store: TicketStore, options: StreamOptions, run_id: str
) -> commit_queue.CommitQueue:
    queue = commit_queue.CommitQueue(
        project, store, target_branch=options.target_branch, verify=options.verify,
        verify_batch=options.verify_batch, lock_timeout=options.lock_timeout,
        verify_timeout=options.verify_timeout, run_id=run_id,
    )  # fmt: skip
    queue.landing.batch_cleanup = True  # tidied once, when the stream ends
    return queue


@contextmanager
def exclusive(project: Project) -> Iterator[None]:
    """One stream per repository at a time; a second is refused, naming the holder."""
    with locks.hold(
        project.locks_dir / "stream.lock",
        timeout=0,
        what="a sage stream in this repository",
        hint="wait for it to finish, or stop it with Ctrl+C; a dead one's lock frees itself",
    ):
        yield


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """The index, read once, checked, with the graph the check built."""

    index: Index
    graph: nx.DiGraph


def load(project: Project, *, slots_for: SlotsFor | None = None) -> Loaded:
    """The index, read and checked. `slots_for`: how many worker slots the run's first
    tickets take, given how many are ready; they are made while the index is checked
    (`first_slots`)."""
    store = project.ticket_store()
    try:
        index = store.load()
    except IndexFileError:
        # A run killed while the checkout followed a landing can leave the index half written:
        # finish that update (it is recorded) before calling the index broken.
        if not finish_checkout_updates(project, store):
            raise
        index = store.load()
    made = first_slots(project, index, slots_for) if slots_for else worktrees.nothing_made
    try:
        report = validate(index, analysis=False)
    finally:
        made()
    require_no_errors(report)
    assert report.graph is not None  # validate always builds it
    return Loaded(index=index, graph=report.graph)


SlotsFor = Callable[[int], int]  # the ready tickets' count -> the slots the run starts with


def first_slots(project: Project, index: Index, slots_for: SlotsFor) -> Callable[[], None]:
    """Start making the slots the first tickets take, at the target's head, unless they have
    setup to run or files to copy (their first ticket makes those: the setup is its to log and
    time) or the workers are not this machine's; the call that waits for them. A target that
    cannot be told is left for the run to report."""
    config = project.config
    setup = worktrees.SlotSetup.of(config)
    if config.executor != "local" or setup.setup or setup.copy:
        return worktrees.nothing_made
    state = {t.id: t.state for t in index.tickets}
    count = slots_for(len(dag.startable(index.tickets, state)))
    try:
        head = git.rev_parse(
            project.root, f"refs/heads/{target_branch(project, config.target_branch)}"
        )
    except SageError:
        return worktrees.nothing_made
    if not count or head is None:
        return worktrees.nothing_made
    worktrees.repair(project.root)  # as recovery does: a killed add's leftovers fail each add
    return worktrees.make_slots(project.root, project.worktrees_dir / SLOTS_DIR, count, head)


def finish_checkout_updates(project: Project, store: TicketStore) -> bool:
    """Finish the checkout updates a dead run left recorded; whether there were any."""
    targets = recorded_targets(project.queue_dir)
    for target in targets:
        commit_queue.CommitQueue(project, store, target_branch=target).recover()
    return bool(targets)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPlan:
    """What a `Stream` runs: the tickets after recovery, their ready set and their ledger."""

    run_id: str
    run_dir: Path
    index_path: Path
    index_in_repo: str = DEFAULT_INDEX.as_posix()  # the index's path in the repository
    tickets: dict[str, Ticket]
    raw: dict[str, dict[str, Any]]
    dispatcher: Dispatcher
    ledger: Ledger
    worker: tuple[str, ...] = ()
    timeout: float = 0.0
    agents: Mapping[str, agent_presets.Settings] = field(default_factory=dict)  # [agents.<name>]
    repo: Path | None = None  # the repository (None: the stream runs without git, in tests)

    def job(
        self, ticket: Ticket, *, attempt: int, base: str, slot: int, resolve: Resolve | None = None
    ) -> WorkerJob:
        """The job for one attempt; its context file is written now."""
        context = self.run_dir / f"{ticket.id}.context.md"
        notes = read_notes(self.index_path, ticket.id)
        text = context_text(ticket, self.raw[ticket.id], notes, resolve)
        context.write_text(text, encoding="utf-8")
        argv = argv_for(ticket, self.worker, self.agents)
        return WorkerJob(
            ticket=ticket, run_id=self.run_id, attempt=attempt, base=base, argv=argv,
            timeout=agent_presets.timeout_for(argv, self.timeout, self.agents),
            env=agent_presets.env_for(argv, self.agents),
            log=self.run_dir / f"{ticket.id}.log", context_file=context,
            worker_name=f"worker-{slot + 1}", slot=slot, index_path=self.index_in_repo,
            resolve=resolve,
        )  # fmt: skip


def execute(
    project: Project,
    options: StreamOptions,
    loaded: Loaded,
    journal: Journal,
    *,
    run_id: str,
    executor: executors.Executor | None = None,
    confirm: Confirm | None = None,
    interrupts: Interrupts | None = None,
) -> RunSummary:
    """Recover, plan and run; the caller holds `exclusive(project)`."""
    store = project.ticket_store(options.lock_timeout)
    queue = make_queue(project, store, options, run_id)
    plan = prepare(project, options, loaded, journal, run_id=run_id, queue=queue, store=store)
    pids = project.locks_dir / "workers"
    executor = executor or executors.LocalExecutor(
        project.root, project.worktrees_dir, pids, options.workers,
        setup=worktrees.SlotSetup.of(project.config),
    )  # fmt: skip

    git.identity_env(project.root)  # asked once: a lander's process inherits the answer

    def own_queue() -> commit_queue.CommitQueue:  # the lander's, in its own process
        return make_queue(project, project.ticket_store(options.lock_timeout), options, run_id)

    stream = Stream(plan, options, journal, queue=queue, executor=executor, store=store,
                    confirm=confirm, interrupts=interrupts, own_queue=own_queue)  # fmt: skip
    return stream.run()


def prepare(
    project: Project, options: StreamOptions, loaded: Loaded, journal: Journal, *,
    run_id: str, queue: commit_queue.CommitQueue, store: TicketStore,
) -> RunPlan:  # fmt: skip
    recovery = Recovery(project, options, journal, run_id=run_id, queue=queue, store=store)
    states = recovery.run(loaded.index.tickets)
    tickets = [replace(t, state=states.get(t.id, t.state)) for t in loaded.index.tickets]
    pending = {e.ticket_id: e for e in queue.pending()}
    recovery.sweep(tickets, set(pending))
    dispatcher = Dispatcher(tickets, loaded.graph)
    for tid in pending:  # queued by a dead run: what overlaps waits until it has landed
        dispatcher.hold(tid)
    run_dir = project.runs_dir / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    raw = {e["id"]: e for e in loaded.index.raw["tickets"]}
    return RunPlan(
        run_id=run_id, run_dir=run_dir, index_path=project.index_path,
        index_in_repo=_in_repo(project),
        tickets=dispatcher.tickets, raw=raw,
        dispatcher=dispatcher, ledger=seed_ledger(tickets, dispatcher, pending, raw),
        worker=options.worker, timeout=options.timeout, agents=project.config.agents,
        repo=project.root,
    )  # fmt: skip


def _in_repo(project: Project) -> str:
    """The index's path relative to the repository (a worker's edits to it never land)."""
    try:
        return project.index_path.resolve().relative_to(project.root.resolve()).as_posix()
    except ValueError:  # outside the repository: nothing of it can land anyway
        return DEFAULT_INDEX.as_posix()


def seed_ledger(
    tickets: list[Ticket],
    dispatcher: Dispatcher,
    pending: dict[str, commit_queue.QueueEntry],
    raw: dict[str, dict[str, Any]],
) -> Ledger:
    """Open tickets wait, queued ones are landing, and what earlier runs left deferred or blocked
    is counted as such (and named) in this run's summary."""
    ledger = Ledger()
    for ticket in tickets:
        tid, entry = ticket.id, pending.get(ticket.id)
        if tid in dispatcher.blocked:
            ledger.add(tid, Phase.BLOCKED, blocked_by=dispatcher.blocked[tid], earlier=True)
        elif entry is not None and ticket.state == "IN_PROGRESS":
            ledger.add(tid, Phase.LANDING, land_attempts=entry.attempts, claimed=True,
                       earlier=True)  # fmt: skip
        elif ticket.state == "DEFERRED":
            why = raw.get(tid, {}).get("deferred_reason") or "deferred by an earlier run"
            ledger.add(tid, Phase.DEFERRED, reason=str(why), earlier=True)
        elif ticket.state in ("UNPROCESSED", "IN_PROGRESS"):
            ledger.add(tid)
    return ledger


class Recovery:
    """What a dead run left: half-landed work finished, orphaned workers killed, tickets it had
    started put back (their unlanded branches kept), and `--retry-deferred`'s revival."""

    def __init__(
        self, project: Project, options: StreamOptions, journal: Journal, *, run_id: str,
        queue: commit_queue.CommitQueue, store: TicketStore,
    ) -> None:  # fmt: skip
        self.project, self.options, self.journal, self.run_id = project, options, journal, run_id
        self.queue, self.store = queue, store

    def run(self, tickets: tuple[Ticket, ...]) -> dict[str, str]:
        """The states recovery changed, by ticket id."""
        worktrees.repair(self.project.root)
        landed = self.queue.recover()
        for warning in (w for outcome in landed for w in outcome.warnings):
            self.journal.emit("warning", reason=warning)
        killed = executors.kill_stale(self.project.locks_dir / "workers")
        queued = {e.ticket_id for e in self.queue.pending()}
        states = {e.entry.ticket_id: "COMPLETED" for e in landed}
        stale = [t.id for t in tickets if t.state == "IN_PROGRESS"
                 and t.id not in queued and t.id not in states]  # fmt: skip
        self._put_back(stale, "recovered", "recovered: the run that started it ended first")
        states.update(dict.fromkeys(stale, "UNPROCESSED"))
        if self.options.retry_deferred:
            deferred = [t.id for t in tickets if t.state == "DEFERRED"]
            self._put_back(deferred, "deferred", f"retried by run {self.run_id} (--retry-deferred)")
            states.update(dict.fromkeys(deferred, "UNPROCESSED"))
        if killed or queued:
            self.journal.emit("recovered", killed_workers=killed, queued=sorted(queued))
        return states

    def _put_back(self, ids: list[str], label: str, reason: str) -> None:
        """UNPROCESSED again; a branch with unlanded work is renamed first, so that the fresh
        run cannot overwrite it."""
        for tid in ids:
            worktrees.remove(self.project.root, self.project.worktrees_dir / tid)
            branch, target = worktrees.branch_for(tid), self.options.target_branch
            kept = worktrees.keep_unlanded(
                self.project.root, branch, target, f"{label}-{self.run_id}"
            )
            self.journal.emit("recovered", tid, reason=reason, kept_branch=kept)
        if ids:
            self.store.transition([(t, "UNPROCESSED") for t in ids], run_id=self.run_id,
                                  reason=reason)  # fmt: skip

    def sweep(self, tickets: list[Ticket], queued: set[str]) -> None:
        """Worktrees and branches of tickets whose work is recorded as landed (a crash between
        landing and cleanup leaves them) go; anything else is kept."""
        root = self.project.root
        landed = {t.id for t in tickets if t.state == "COMPLETED"} - queued
        refs = git.git(root, "for-each-ref", "--format=%(refname:short)", "refs/heads/sage/")
        for branch in refs.splitlines():
            tid = branch.removeprefix("sage/")
            if tid in landed:
                worktrees.remove(root, self.project.worktrees_dir / tid)
                worktrees.delete_branch(root, branch)
        # The branch may be gone already (the queue deletes it before the worktree), and the
        # folder too (`git worktree remove` deletes it before the registration).
        trees = self.project.worktrees_dir
        found = set(trees.iterdir()) if trees.is_dir() else set()
        found.update(p for p in git.worktrees(root) if p.parent == trees)
        for path in sorted(found):
            if path.name in landed:
                worktrees.remove(root, path)
