"""The policy: plain decisions after a worker exit and after a rejected landing."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sage.lib import policy
from sage.lib.workers import Outcome

LIMITS = policy.Limits(retries=2, max_attempts=3, backoff=1.0)


def exit(outcome: str, failures: int = 0, **extra: object) -> policy.Exit:
    return policy.Exit(outcome=outcome, detail="worker exited 1: boom", failures=failures,
                       log="/tmp/x.log", **extra)  # type: ignore[arg-type]  # fmt: skip


def test_a_failure_is_retried_until_the_retries_are_used_then_deferred_with_the_log() -> None:
    assert isinstance(policy.after_exit(exit(Outcome.FAILED, 0), LIMITS), policy.Retry)
    assert isinstance(policy.after_exit(exit(Outcome.FAILED, 1), LIMITS), policy.Retry)
    last = policy.after_exit(exit(Outcome.TIMEOUT, 2), LIMITS)
    assert isinstance(last, policy.Defer) and "boom" in last.reason and "/tmp/x.log" in last.reason


def test_unusable_stops_the_run_and_no_changes_defers() -> None:
    assert isinstance(policy.after_exit(exit(Outcome.UNUSABLE), LIMITS), policy.StopRun)
    assert isinstance(policy.after_exit(exit(Outcome.NO_CHANGES), LIMITS), policy.Defer)


def test_throttled_parks_without_an_attempt_and_honours_the_reset_time() -> None:
    parked = policy.after_exit(exit(Outcome.THROTTLED, 2, retry_after=90.0), LIMITS)
    assert parked == policy.Park(delay=90.0, reason="worker exited 1: boom")


def test_throttled_past_the_cap_is_deferred() -> None:
    capped = policy.after_exit(exit(Outcome.THROTTLED, parked_seconds=3600.0), LIMITS)
    assert isinstance(capped, policy.Defer) and "throttled" in capped.reason


@given(st.integers(1, 30), st.floats(0.01, 100.0), st.integers(0, 2**32))
def test_backoff_is_jittered_within_a_band_and_capped(number: int, base: float, seed: int) -> None:
    limits = policy.Limits(backoff=base)
    delay = policy.backoff(limits, number, random.Random(seed))
    plain = min(policy.MAX_BACKOFF, base * 2 ** (number - 1))
    assert (
        plain * (1 - policy.JITTER / 2) - 0.001 <= delay <= plain * (1 + policy.JITTER / 2) + 0.001
    )


def test_backoff_differs_between_tickets_waiting_on_the_same_thing() -> None:
    rng = random.Random(1)
    assert len({policy.backoff(LIMITS, 3, rng) for _ in range(10)}) > 5


def test_rejections_retry_until_max_attempts_then_defer_naming_files_and_ticket() -> None:
    conflict = policy.Rejection(kind="conflict", attempts=1, files=("a.txt",),
                                collided_with=("B-1",))  # fmt: skip
    assert isinstance(policy.after_rejection(conflict, LIMITS), policy.Retry)
    final = policy.after_rejection(policy.Rejection(**{**_fields(conflict), "attempts": 3}), LIMITS)
    assert final == policy.Defer(reason="conflict in a.txt with B-1 after 3 attempts")
    blocked = policy.after_rejection(policy.Rejection(kind="blocked", attempts=0), LIMITS)
    assert isinstance(blocked, policy.Hold)


def test_live_workers_halve_on_a_throttle_and_grow_back_one_at_a_time() -> None:
    assert policy.next_live_limit(8, 8, throttled=True) == 4
    assert policy.next_live_limit(1, 8, throttled=True) == 1
    assert policy.next_live_limit(4, 8, throttled=False) == 5
    assert policy.next_live_limit(8, 8, throttled=False) == 8


def _fields(rejection: policy.Rejection) -> dict[str, object]:
    return {k: getattr(rejection, k) for k in ("kind", "attempts", "detail", "files",
                                                "collided_with")}  # fmt: skip
