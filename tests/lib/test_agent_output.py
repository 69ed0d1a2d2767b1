"""Reading agents' output: the shapes the real CLIs print (see tests/agents for the CLIs)."""

from __future__ import annotations

import json

import pytest

from sage.lib import agent_output, agents
from sage.lib.outcomes import Outcome, Usage


def claude_result(**fields: object) -> str:
    report = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "Done.",
        "total_cost_usd": 0.0123,
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7},
    }
    report.update(fields)
    return "some stderr line\n" + json.dumps(report) + "\n"


def test_claude_success_reports_usage() -> None:
    verdict = agent_output.claude(0, claude_result())
    assert verdict == agent_output.Verdict(
        outcome=Outcome.OK, usage=Usage(input_tokens=15, output_tokens=7, cost_usd=0.0123)
    )


def test_claude_429_is_throttled_in_its_own_words() -> None:
    text = "API Error: 429 rate_limit_error: try again in 2 minutes"
    verdict = agent_output.claude(
        1, claude_result(is_error=True, result=text, api_error_status=429)
    )
    assert verdict is not None
    assert verdict.outcome == Outcome.THROTTLED
    assert verdict.retry_after == 120
    assert verdict.detail == text


def test_claude_401_and_bad_flags_are_unusable() -> None:
    bad_key = claude_result(is_error=True, result="Invalid API key", api_error_status=401)
    assert agent_output.claude(1, bad_key).outcome == Outcome.UNUSABLE  # type: ignore[union-attr]
    flags = agent_output.claude(1, "error: unknown option '--full-auto'\n")
    assert flags is not None and flags.outcome == Outcome.UNUSABLE


def test_claude_other_errors_fail_and_silence_is_left_to_the_exit_code() -> None:
    verdict = agent_output.claude(
        1, claude_result(is_error=True, subtype="error_max_turns", result="")
    )
    assert verdict is not None and verdict.outcome == Outcome.FAILED
    assert verdict.detail == "error_max_turns"
    assert agent_output.claude(0, "plain text answer\n") is None


def test_codex_events() -> None:
    done = [
        {"type": "thread.started"},
        {
            "type": "turn.completed",
            "usage": {"input_tokens": 100, "cached_input_tokens": 20, "output_tokens": 9},
        },
    ]
    text = "\n".join(json.dumps(e) for e in done)
    verdict = agent_output.codex(0, text)
    assert verdict == agent_output.Verdict(
        outcome=Outcome.OK, usage=Usage(input_tokens=100, output_tokens=9)
    )
    failed = {
        "type": "turn.failed",
        "error": {"message": "exceeded retry limit, last status: 429 Too Many Requests"},
    }
    verdict = agent_output.codex(1, json.dumps(failed))
    assert verdict is not None and verdict.outcome == Outcome.THROTTLED
    assert "429 Too Many Requests" in verdict.detail
    usage_limit = {"type": "error", "message": "You've hit your usage limit. Try again in 3 hours."}
    assert agent_output.codex(1, json.dumps(usage_limit)).retry_after == 3 * 3600  # type: ignore[union-attr]
    bad = "error: unexpected argument '--full-auto' found\n"
    assert agent_output.codex(2, bad).outcome == Outcome.UNUSABLE  # type: ignore[union-attr]


AIDER_OK = "Applied edit to hello.py\nTokens: 2.3k sent, 120 received. Cost: $0.01 message, $0.02 session.\n"  # noqa: E501


@pytest.mark.parametrize(
    ("output", "outcome"),
    [
        (AIDER_OK, Outcome.OK),
        (
            "litellm.RateLimitError: OpenAIException - 429\nRetrying in 0.2 seconds...\n"
            "litellm.RateLimitError: OpenAIException - rate limited\n",
            Outcome.THROTTLED,
        ),
        (
            "litellm.AuthenticationError: AuthenticationError: OpenAIException - bad key\n",
            Outcome.UNUSABLE,
        ),
        ("litellm.APIConnectionError: APIConnectionError: connection refused\n", Outcome.FAILED),
        ("litellm.RateLimitError: once\n" + AIDER_OK, Outcome.OK),
        ("No LLM model was specified and no API keys were provided.\n", Outcome.UNUSABLE),
    ],
)
def test_aider_exit_0_is_read_from_its_words(output: str, outcome: Outcome) -> None:
    verdict = agent_output.aider(0, output)
    assert verdict is not None and verdict.outcome == outcome


def test_aider_usage_sums_messages() -> None:
    usage = agent_output.aider(0, AIDER_OK + AIDER_OK.replace("0.02 session", "0.05 session")).usage  # type: ignore[union-attr]
    assert usage == Usage(input_tokens=4600, output_tokens=240, cost_usd=0.05)


def test_reset_times() -> None:
    now = 1_000_000_000.0
    assert agent_output.retry_after("Please try again in 20s.", now) == 20
    assert agent_output.retry_after("try again in 1 hour 30 minutes", now) == 5400
    assert agent_output.retry_after("Claude AI usage limit reached|1000000600", now) == 600
    assert agent_output.retry_after("limit resets at 2001-09-09T01:56:40Z", now) == 600
    assert agent_output.retry_after("Retry-After: 7", now) == 7
    assert agent_output.retry_after("rate limited", now) is None
    # 1e9 is 2001-09-09 01:46:40 UTC, 03:46:40 in Paris
    paris = "You've hit your limit · resets 4am (Europe/Paris)"
    assert agent_output.retry_after(paris, now) == 13 * 60 + 20
    assert agent_output.retry_after("try again at 1:00 AM (UTC)", now) == 24 * 3600 - 46 * 60 - 40


def test_a_status_decides_and_overloaded_is_throttled() -> None:
    assert agent_output.classify("whatever", status=529) == Outcome.THROTTLED
    assert agent_output.classify("rate limit", status=401) == Outcome.UNUSABLE
    assert agent_output.classify("You've hit your limit", status=None) == Outcome.THROTTLED
    assert agent_output.classify("model not found: invalid value 'x' for --model", status=400) == (
        Outcome.UNUSABLE
    )
    assert agent_output.classify("tests failed", status=500) == Outcome.FAILED


def test_a_tools_output_does_not_decide() -> None:
    """A command codex ran printed "401"; codex then failed for its own reason."""
    event = {"type": "item.completed", "item": {"type": "command_execution",
             "aggregated_output": "GET /login -> 401 Unauthorized"}}  # fmt: skip
    verdict = agent_output.codex(1, json.dumps(event) + "\nerror: something broke\n")
    assert verdict is None  # nothing the agent said: the exit code decides (failed)


AIDER_429 = (
    "litellm.RateLimitError: RateLimitError: OpenAIException - Rate limit reached. \n"
    "Try again in {wait}.\nThe API provider has rate limited you.\nRetrying in 0.2 seconds...\n"
)


@pytest.mark.parametrize(
    ("output", "stopped"),
    [
        (AIDER_429.format(wait="2 minutes"), True),  # resets after aider's ~64 s of retries
        (AIDER_429.format(wait="20 seconds"), False),  # aider's own retries outlast it
        (AIDER_429.format(wait="2 minutes").split("Try")[0], False),  # no reset said (yet)
        (AIDER_429.format(wait="2 minutes") + AIDER_OK, False),  # a retry got through
        ("litellm.AuthenticationError: AuthenticationError: bad key\n", False),
    ],
)
def test_aider_is_stopped_only_when_its_retries_would_end_before_the_limit_resets(
    output: str, stopped: bool
) -> None:
    verdict = agents.ADAPTERS["aider"].hopeless(output)
    assert (verdict is not None) == stopped
    if verdict:
        assert verdict.outcome == Outcome.THROTTLED and verdict.retry_after == 120
        assert "sage stopped aider" in verdict.detail and "Rate limit reached" in verdict.detail


def test_an_agent_that_gives_up_by_itself_is_never_stopped() -> None:
    said = '{"type":"result","is_error":true,"result":"API Error: 429 Try again in 2 minutes"}'
    assert agents.ADAPTERS["claude"].hopeless(said) is None


def test_the_reset_of_aiders_last_error_counts() -> None:
    output = AIDER_429.format(wait="5 seconds") + AIDER_429.format(wait="3 minutes")
    assert agent_output.aider(0, output).retry_after == 180  # type: ignore[union-attr]
