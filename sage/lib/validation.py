"""`sage validate`: every check in one pass, plus the prerequisites and parallelization analysis."""

from __future__ import annotations

import difflib
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sage.lib import agents, git, lazy, proc, scheduler
from sage.lib import graph as dag
from sage.lib.errors import SageError
from sage.lib.project import Project
from sage.lib.tickets import Index, Problem, Ticket, quiet_gc, unsafe_id_reason
from sage.lib.words import counted
from sage.lib.workers import argv_for

if TYPE_CHECKING:
    import networkx as nx
else:
    nx = lazy.module("networkx")  # imported on first use

_BRACED = re.compile(r"(?<!\$)\{([A-Za-z_][A-Za-z0-9_]*)\}")  # not a shell's ${VAR}


TESTED = {"claude": "2.1.197", "codex": "0.171.0", "aider": "0.86.2"}  # the conformance tier's


@dataclass(frozen=True, slots=True, kw_only=True)
class Check:
    name: str
    ok: bool
    detail: str
    level: str = "error"  # what a failure counts as


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis:
    remaining: int
    ready_now: int
    widths: tuple[int, ...]
    critical_path: tuple[str, ...]
    critical_minutes: float
    total_minutes: float
    recommended_workers: int
    unit: str = "minutes"  # of the critical path and total work: "tickets" without estimates

    @property
    def parallel_share(self) -> float:
        return self.ready_now / self.remaining if self.remaining else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "remaining": self.remaining,
            "ready_now": self.ready_now,
            "parallel_share": round(self.parallel_share, 4),
            "width_per_level": list(self.widths),
            "critical_path": list(self.critical_path),
            "critical_path_minutes": self.critical_minutes,
            "total_minutes": self.total_minutes,
            "recommended_workers": self.recommended_workers,
            "unit": self.unit,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    index: Index
    problems: tuple[Problem, ...]
    checks: tuple[Check, ...] = ()
    analysis: Analysis | None = None
    graph: nx.DiGraph | None = field(default=None, repr=False)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    def exit_code(self, strict: bool = False) -> int:
        return 1 if self.errors or (strict and self.warnings) else 0


def validate(index: Index, project: Project | None = None, *, analysis: bool = True) -> Report:
    """Every check; `analysis=False` skips the parallelization analysis (for commands that only
    need to know the index is sound)."""
    graph = dag.build(index.tickets)
    problems = list(index.problems) + dag.problems(index.tickets, graph)
    if project and project.config.id_pattern:
        problems = id_format(problems, index.tickets, project.config.id_pattern)
    if project:
        problems += placeholder_problems(_templates(project, index))
    problems = [_with_hint(p) for p in problems]
    checks = prerequisites(project, index) if project else ()
    problems += [
        Problem(level=c.level, code="prerequisite", message=f"{c.name}: {c.detail}")
        for c in checks
        if not c.ok
    ]
    cyclic = any(p.code == "cycle" for p in problems)
    result = analyse(index.tickets, graph) if analysis and not cyclic else None
    return Report(
        index=index, problems=tuple(problems), checks=tuple(checks), analysis=result, graph=graph
    )


def analyse(tickets: tuple[Ticket, ...], graph: nx.DiGraph) -> Analysis:
    with quiet_gc():
        return _analyse(tickets, graph)


def _analyse(tickets: tuple[Ticket, ...], graph: nx.DiGraph) -> Analysis:
    state = {t.id: t.state for t in tickets}
    todo = dag.open_subgraph(graph, state)
    weights = {t.id: t.weight for t in tickets if t.id in todo}
    generations = list(nx.topological_generations(todo))
    order = [node for level in generations for node in level]
    longest = dag.remaining_path(todo, weights, order=order)
    path = dag.critical_path(todo, weights, longest=longest)
    widths = tuple(len(level) for level in generations)
    total = sum(weights.values())
    bound = math.ceil(total / path.minutes) if path.minutes else 1
    recommended = max(1, min(scheduler.MAX_WORKERS, max(widths, default=1), bound))
    return Analysis(
        remaining=len(todo),
        ready_now=len({t.id for t in dag.startable(tickets, state)}),  # duplicates count once
        widths=widths,
        critical_path=path.tickets,
        critical_minutes=path.minutes,
        total_minutes=total,
        recommended_workers=recommended,
        unit="minutes" if any(t.estimate_minutes is not None for t in tickets) else "tickets",
    )


HINTS = {  # what fixes each kind of problem, where the problem itself cannot say more
    "duplicate-id": "give each ticket its own ID (IDs name branches and folders)",
    "unsafe-id": "use letters, digits, '.', '_' and '-', such as AUTH-001",
    "id-format": "rename it like AUTH-001, or set [tickets] id_pattern in .sage/config.toml",
    "bad-dependencies": 'write "dependencies": ["AUTH-001", "AUTH-002"]',
    "bad-estimate": 'write minutes as a number, such as "estimate_minutes": 30',
    "unknown-parent": "add the parent ticket, or remove the parent field",
}


def _with_hint(problem: Problem) -> Problem:
    hint = None if problem.hint else HINTS.get(problem.code)
    return replace(problem, hint=hint) if hint else problem


def id_format(problems: list[Problem], tickets: tuple[Ticket, ...], pattern: str) -> list[Problem]:
    """The ID-format warnings for `[tickets] id_pattern` instead of the default PREFIX-123."""
    regex = re.compile(pattern, re.ASCII)
    kept = [p for p in problems if p.code != "id-format"]
    return kept + [
        Problem(level="warning", code="id-format", ticket=t.id,
                message=f"{t.id}: ID does not match [tickets] id_pattern {pattern!r}")
        for t in tickets
        if not regex.fullmatch(t.id) and unsafe_id_reason(t.id) is None
    ]  # fmt: skip


def _templates(project: Project, index: Index) -> dict[str, tuple[str, ...]]:
    """Every argv a stream would fill, by where it comes from."""
    found = {f"ticket {t.id}": t.command for t in index.tickets if t.command}
    if project.config.worker:
        found["worker"] = agents.expand(project.config.worker, project.config.agents)
    return found


def placeholder_problems(templates: Mapping[str, Sequence[str]]) -> list[Problem]:
    """`{titel}` would reach the worker as is: an error when it is close to a placeholder,
    a warning otherwise (a literal brace, as in awk '{print}', is allowed)."""
    found = []
    for where, argv in templates.items():
        for name in dict.fromkeys(_BRACED.findall(" ".join(argv))):
            if name in agents.PLACEHOLDERS:
                continue
            close = difflib.get_close_matches(name, agents.PLACEHOLDERS, n=1, cutoff=0.75)
            if close or where == "worker":  # a ticket's own braces are its business
                found.append(_placeholder_problem(where, name, close[0] if close else None))
    return found


def _placeholder_problem(where: str, name: str, close: str | None) -> Problem:
    known = " ".join(f"{{{p}}}" for p in agents.PLACEHOLDERS)
    return Problem(
        level="error" if close else "warning",
        code="unknown-placeholder",
        message=f"{where}: unknown placeholder {{{name}}}"
        + ("" if close else " (passed to the program as is)"),
        hint=f"did you mean {{{close}}}? placeholders are {known}" if close
        else f"placeholders are {known}",
    )  # fmt: skip


def prerequisites(project: Project, index: Index) -> tuple[Check, ...]:
    """What `sage stream --parallel` needs: git, a repository, writable state dirs, the worker."""
    ok, detail = git.supports_parallel_mode()
    found = [Check(name="git", ok=ok, detail=detail)]
    found.append(
        Check(
            name="repository",
            ok=project.is_git,
            detail=f"{project.root} is a git repository" if project.is_git
            else f"{project.root} is not a git repository (needed by `sage stream`)",
            level="warning",
        )
    )  # fmt: skip
    state = (("queue dir", project.queue_dir), ("lock dir", project.locks_dir),
             ("worktrees dir", project.worktrees_dir))  # fmt: skip
    for name, path in state:
        found.append(_writable(name, path))
    found += _worker_checks(project, index)
    found += agent_checks(project.config.worker, project.config.agents)
    return tuple(found)


def _writable(name: str, path: Path) -> Check:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    ok = os.access(probe, os.W_OK | os.X_OK)
    detail = f"{path} is writable" if ok else f"{path} is not writable (checked {probe})"
    return Check(name=name, ok=ok, detail=detail)


def _worker_checks(project: Project, index: Index) -> list[Check]:
    checks = []
    needs_worker = any(t.command is None for t in index.tickets if t.state in dag.OPEN_STATES)
    if project.config.worker:
        checks.append(_on_path("worker", agents.expand(project.config.worker)[0]))
    elif needs_worker:
        checks.append(
            Check(
                name="worker",
                ok=True,
                detail='none configured: tickets without a "command" need --worker or '
                "[stream] worker",
            )
        )
    commands = {t.command[0] for t in index.tickets if t.command and t.state in dag.OPEN_STATES}
    checks += [_on_path(f"command {c}", c) for c in sorted(commands)]
    return checks


def agent_checks(
    worker: tuple[str, ...],
    settings: Mapping[str, agents.Settings],
    env: Mapping[str, str] = os.environ,
) -> list[Check]:
    """For an agent worker: its version, that it accepts every option sage passes (its own
    `--help`, no network), and that it is logged in as far as its files and environment show."""
    found = _agent_program(worker, settings)
    if found is None:
        return []
    agent, program, argv = found
    return [_version(agent.name, program), _flags(agent, program, argv), _login(agent, env)]


def _agent_program(
    worker: tuple[str, ...], settings: Mapping[str, agents.Settings]
) -> tuple[agents.Agent, str, tuple[str, ...]] | None:
    argv = agents.expand(worker, settings) if worker else ()
    agent = agents.detect(argv)
    program = shutil.which(argv[0]) if agent else None
    return (agent, program, argv) if agent and program else None


def _version(name: str, program: str) -> Check:
    done = _probe([program, "--version"])
    first = (done.stdout or done.stderr).strip().splitlines()[:1] if done else []
    ok = bool(done and done.returncode == 0 and first)
    detail = first[0] if ok else f"`{program} --version` failed: {_said(done)}"
    tested = TESTED.get(name)
    return Check(name=f"{name} version", ok=ok, detail=f"{detail} (tested with {tested})")


def _flags(agent: agents.Agent, program: str, argv: Sequence[str]) -> Check:
    shown = f"{agent.name} {' '.join(agent.help_argv)}"
    done = _probe([program, *agent.help_argv])
    if not done or done.returncode != 0:
        return Check(
            name=f"{agent.name} options", ok=False, detail=f"`{shown}` failed: {_said(done)}"
        )
    text = done.stdout + done.stderr
    wanted = sorted({a.split("=")[0] for a in argv[1:] if a.startswith("--")})
    unknown = [f for f in wanted if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    if unknown:
        detail = f"{', '.join(unknown)} not in `{shown}` (an older or newer {agent.name}?)"
        return Check(name=f"{agent.name} options", ok=False, detail=detail)
    return Check(
        name=f"{agent.name} options",
        ok=True,
        detail=f"accepts all {len(wanted)} options sage passes",
    )


def _login(agent: agents.Agent, env: Mapping[str, str]) -> Check:
    how = agent.logged_in(env)
    if how:
        return Check(name=f"{agent.name} login", ok=True, detail=how)
    detail = f"no credentials seen: {agent.login}"
    return Check(name=f"{agent.name} login", ok=False, detail=detail, level="warning")


def _probe(argv: list[str]) -> proc.Result | None:
    try:
        return proc.run(argv, check=False, timeout=60, interruptible=True)
    except (SageError, subprocess.TimeoutExpired, OSError):
        return None


def _said(done: proc.Result | None) -> str:
    if done is None:
        return "it did not run (or took over a minute)"
    lines = (done.stderr or done.stdout).strip().splitlines()
    return f"exit {done.returncode}" + (f": {lines[-1][:200]}" if lines else "")


def require_runnable(project: Project, index: Index, *, local: bool = True) -> None:
    """Refuse a stream up front, before any ticket changes state, when a ticket has nothing to
    run or (for local workers) its program is not installed or, for an agent, lacks an option."""
    for ticket in index.tickets:
        if ticket.state in dag.OPEN_STATES:
            argv_for(ticket, project.config.worker)  # raises when there is nothing to run
    typos = [p for p in placeholder_problems(_templates(project, index)) if p.level == "error"]
    if typos:
        raise SageError(typos[0].message, hint=typos[0].hint)
    missing = [c for c in _worker_checks(project, index) if not c.ok] if local else []
    if missing:
        raise SageError(
            f"{missing[0].name}: {missing[0].detail}",
            hint='install it, or fix the worker (--worker, [stream] worker) or the "command"',
        )
    broken = _broken_agent(project, index) if local else None
    if broken:
        raise SageError(
            f"{broken.name}: {broken.detail}",
            hint="update the agent, or fix [agents] args in .sage/config.toml (`sage validate`)",
        )


def _broken_agent(project: Project, index: Index) -> Check | None:
    """An agent worker that cannot run at all (an option it rejects): found before any ticket
    changes state rather than by every ticket failing."""
    if not any(t.command is None for t in index.tickets if t.state in dag.OPEN_STATES):
        return None
    found = _agent_program(project.config.worker, project.config.agents)
    check = _flags(*found) if found else None
    return check if check and not check.ok else None


def _on_path(name: str, program: str) -> Check:
    if "/" in program:  # a path: resolved in the ticket's worktree, which does not exist yet
        return Check(name=name, ok=True, detail=f"{program} runs from the ticket's worktree")
    found = shutil.which(program)
    detail = f"{program} found at {found}" if found else f"{program} not found on PATH"
    return Check(name=name, ok=bool(found), detail=detail)


def require_no_errors(report: Report) -> None:
    if report.errors:
        first = report.errors[0].message
        raise SageError(
            f"the ticket index has {counted(len(report.errors), 'error')}, first: {first}",
            hint="run `sage validate` to see every problem",
        )
