"""How one worker attempt ended and what it cost: values for workers, agents and the stream."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """How one attempt ended, as the run's policy sees it."""

    OK = "ok"  # work to land (or, for a ticket that allows it, nothing)
    FAILED = "failed"  # the worker's fault: uses an attempt
    TIMEOUT = "timeout"
    THROTTLED = "throttled"  # rate limited (exit 75 or an agent's 429): parked, no attempt used
    UNUSABLE = "unusable"  # the worker cannot run at all (bad flags, no login): the run stops
    NO_CHANGES = "no-changes"  # exited 0 and left nothing to land
    KILLED = "killed"
    ERROR = "error"  # sage could not run or collect it


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """What an attempt cost, where the agent reports it."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
