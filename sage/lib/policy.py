"""What happens to a ticket after its worker exits, and after the queue rejects its landing.

Plain functions over plain values: no git, no threads, no clock of their own. The stream and
`sage queue process` both ask here, so a rejected landing is settled the same way whoever saw it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sage.lib.words import counted
from sage.lib.workers import Outcome

MAX_BACKOFF = 60.0
MAX_THROTTLE_WAIT = 3600.0  # seconds a ticket may stay parked by rate limits in one run
JITTER = 0.5  # a retry waits between (1 - JITTER/2) and (1 + JITTER/2) times its backoff


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    retries: int = 2  # re-runs of a failing worker before DEFERRED
    max_attempts: int = 3  # landing attempts before DEFERRED
    backoff: float = 1.0  # seconds before the first retry; doubles after each
    max_backoff: float = MAX_BACKOFF
    max_throttle_wait: float = MAX_THROTTLE_WAIT


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """Run the ticket again after `delay` seconds; `counted` if it used up an attempt."""

    delay: float
    reason: str
    counted: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Park:
    """Rate limited: wait `delay` seconds without using an attempt; run fewer workers."""

    delay: float
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Defer:
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StopRun:
    """Not the ticket's fault (the worker cannot run at all): the run stops, the ticket returns."""

    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """The entry cannot land now for a reason outside the ticket (the user's checkout is in the
    way): it stays queued and the run stops starting new work."""

    reason: str


Decision = Retry | Park | Defer | StopRun | Hold


@dataclass(frozen=True, slots=True, kw_only=True)
class Exit:
    """A worker attempt that did not produce work to land, as the policy needs to see it."""

    outcome: str  # an Outcome
    detail: str
    failures: int  # attempts used before this one
    throttles: int = 0  # earlier attempts parked by a rate limit
    parked_seconds: float = 0.0
    retry_after: float | None = None
    log: str = ""


def backoff(limits: Limits, number: int, rng: random.Random | None = None) -> float:
    """Exponential from `limits.backoff`, capped, with jitter so that tickets waiting on the same
    thing do not retry in lockstep."""
    growth: float = 2.0 ** max(0, number - 1)
    delay = min(limits.max_backoff, limits.backoff * growth)
    spread = (rng or random).random() * JITTER
    return round(delay * (1 - JITTER / 2 + spread), 3)


def after_exit(exit: Exit, limits: Limits, rng: random.Random | None = None) -> Decision:
    """A worker exited without work to land (a non-OK outcome)."""
    if exit.outcome == Outcome.UNUSABLE:
        return StopRun(reason=exit.detail)
    if exit.outcome == Outcome.THROTTLED:
        return _throttled(exit, limits, rng)
    if exit.outcome == Outcome.NO_CHANGES:
        return Defer(reason=exit.detail or "the worker exited 0 and left nothing to land")
    failures = exit.failures + 1
    if failures <= limits.retries:
        return Retry(delay=backoff(limits, failures, rng), reason=exit.detail)
    where = f" (log: {exit.log})" if exit.log else ""
    return Defer(reason=f"{exit.detail}{where}")


def _throttled(exit: Exit, limits: Limits, rng: random.Random | None) -> Decision:
    if exit.parked_seconds >= limits.max_throttle_wait:
        waited = f"{exit.parked_seconds:.0f}s"
        return Defer(reason=f"throttled: still rate limited after {waited} ({exit.detail})")
    delay = exit.retry_after or backoff(limits, exit.throttles + 1, rng)
    room = max(0.0, limits.max_throttle_wait - exit.parked_seconds)
    return Park(delay=min(delay, room), reason=exit.detail or "throttled")


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """A landing the queue turned down."""

    kind: str  # "conflict", "verify" or "blocked"
    attempts: int  # landing attempts used, this one included
    detail: str = ""
    files: tuple[str, ...] = ()
    collided_with: tuple[str, ...] = ()


def after_rejection(
    rejection: Rejection, limits: Limits, rng: random.Random | None = None
) -> Decision:
    if rejection.kind == "blocked":
        return Hold(reason=rejection.detail)
    if rejection.attempts >= limits.max_attempts:
        return Defer(reason=rejection_reason(rejection))
    why = rejection.detail or rejection.kind
    return Retry(delay=backoff(limits, rejection.attempts, rng), reason=why)


def rejection_reason(rejection: Rejection) -> str:
    if rejection.kind == "conflict":
        files = ", ".join(rejection.files) or "unknown files"
        other = ", ".join(rejection.collided_with) or "earlier work on the target"
        return f"conflict in {files} with {other} after {counted(rejection.attempts, 'attempt')}"
    return f"verify failed after {counted(rejection.attempts, 'attempt')}: {rejection.detail}"


def next_live_limit(current: int, asked: int, *, throttled: bool) -> int:
    """How many workers may run: halve on a rate limit, grow by one per success, 1 … asked."""
    if throttled:
        return max(1, current // 2)
    return min(asked, current + 1)
