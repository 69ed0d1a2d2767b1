"""Reading an agent's output into an outcome: its exit code, its structured report, its words.

claude prints one JSON result (`--output-format json`), codex JSON lines (`--json`), aider plain
text (and exits 0 even when every API call failed). Each reader returns a `Verdict`, or None when
the output holds nothing it understands (the exit code decides then).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sage.lib.outcomes import Outcome, Usage
from sage.lib.words import counted

DETAIL = 300  # characters of the agent's own words kept in a result's detail


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    outcome: Outcome
    detail: str = ""
    retry_after: float | None = None  # THROTTLED: seconds until the limit resets, when said
    usage: Usage | None = None


_THROTTLED = re.compile(
    r"\b429\b|\b529\b|rate.?limit|too many requests|usage limit|quota|overloaded|"
    r"limit reached|hit your (usage )?limit",
    re.IGNORECASE,
)
_UNUSABLE = re.compile(
    r"\b401\b|\b403\b|invalid (x-)?api.?key|authentication|unauthori[sz]ed|not logged in|"
    r"please run /login|login required|missing (environment variable|api key)|"
    r"no api key|permission.?denied.?error|unknown option|unexpected argument|"
    r"unrecognized arguments?|invalid value .* for",
    re.IGNORECASE,
)


def classify(text: str, *, status: int | None = None) -> Outcome:
    """An error in the agent's words (and its HTTP status, if it gave one) to an outcome.
    Overloaded (529) counts as throttled: not the ticket's fault, worth waiting for."""
    if status in (429, 529):
        return Outcome.THROTTLED
    if status in (401, 403):
        return Outcome.UNUSABLE
    if _THROTTLED.search(text):
        return Outcome.THROTTLED
    return Outcome.UNUSABLE if _UNUSABLE.search(text) else Outcome.FAILED


def failure(text: str, *, status: int | None = None, usage: Usage | None = None) -> Verdict:
    outcome = classify(text, status=status)
    wait = retry_after(text) if outcome == Outcome.THROTTLED else None
    return Verdict(outcome=outcome, detail=_words(text), retry_after=wait, usage=usage)


# ---- reset times ------------------------------------------------------------------------------

_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600,
          "hr": 3600, "hour": 3600, "d": 86400, "day": 86400}  # fmt: skip
_IN = re.compile(
    r"(?:try again|retry|resets?|available)\s+(?:in|after)\s+"
    r"((?:[\d.]+\s*[a-z]+[\s,]*(?:and\s+)?)+)",
    re.I,
)
_PART = re.compile(r"([\d.]+)\s*([a-z]+)", re.I)
_EPOCH = re.compile(r"\|(\d{10})\b")  # claude: "Claude AI usage limit reached|1767225600"
_ISO = re.compile(r"\b(\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d)?(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d))")
_HEADER = re.compile(r"retry-after\W+(\d+(?:\.\d+)?)", re.I)
# "resets 3pm (Europe/Paris)", "try again at 3:04 PM": a time of day, in a zone when named
_CLOCK = re.compile(
    r"(?:resets?|try again|available)(?: at)? (\d{1,2})(?::(\d\d))?\s*([ap]m)\b"
    r"(?:\s*\(([\w/+-]+)\))?",
    re.I,
)


def retry_after(text: str, now: float | None = None) -> float | None:
    """Seconds until a limit resets, from what the agent said ("try again in 2 hours 5 minutes",
    "Retry-After: 30", an epoch after "|", an ISO time); None when it did not say."""
    clock = time.time() if now is None else now
    if match := _IN.search(text):
        seconds = sum(_seconds(n, unit) for n, unit in _PART.findall(match.group(1)))
        if seconds:
            return seconds
    if match := _HEADER.search(text):
        return float(match.group(1))
    if match := _EPOCH.search(text):
        return max(0.0, int(match.group(1)) - clock)
    if match := _ISO.search(text):
        stamp = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
        return max(0.0, stamp.timestamp() - clock)
    if match := _CLOCK.search(text):
        return _until(match, clock)
    return None


def _until(match: re.Match[str], clock: float) -> float:
    """Seconds from `clock` to the next time of day `match` names (local time, or its zone)."""
    hour = int(match.group(1)) % 12 + (12 if match.group(3).lower() == "pm" else 0)
    now = datetime.fromtimestamp(clock, _zone(match.group(4)))
    then = now.replace(hour=hour, minute=int(match.group(2) or 0), second=0, microsecond=0)
    if then <= now:
        then += timedelta(days=1)
    return then.timestamp() - clock


def _zone(name: str | None) -> ZoneInfo | None:
    try:
        return ZoneInfo(name) if name else None
    except (ZoneInfoNotFoundError, ValueError):
        return None  # an unknown zone: local time is the best guess


def _seconds(number: str, unit: str) -> float:
    word = unit.lower().rstrip("s") or "s"
    try:
        return float(number) * _UNITS.get(word, _UNITS.get(unit.lower(), 0))
    except ValueError:
        return 0.0


# ---- claude: one JSON result ------------------------------------------------------------------


def claude(returncode: int, output: str) -> Verdict | None:
    report = _last_json(output, lambda d: d.get("type") == "result")
    if report is None:
        tail = _plain_tail(output)
        return failure(tail) if returncode != 0 and _said_why(tail) else None
    usage = _claude_usage(report)
    if not report.get("is_error") and returncode == 0:
        return Verdict(outcome=Outcome.OK, detail=_denials(report), usage=usage)
    words = str(report.get("result") or report.get("subtype") or "")
    errors = report.get("errors")
    if isinstance(errors, list) and errors:
        words = "; ".join(str(e) for e in errors) + (f": {words}" if words else "")
    status = report.get("api_error_status")
    return failure(words, status=status if isinstance(status, int) else None, usage=usage)


def _claude_usage(report: dict[str, Any]) -> Usage | None:
    counts = report.get("usage")
    if not isinstance(counts, dict):
        return None
    sent = sum(_int(counts.get(k)) for k in ("input_tokens", "cache_creation_input_tokens",
                                             "cache_read_input_tokens"))  # fmt: skip
    cost = report.get("total_cost_usd")
    return Usage(input_tokens=sent, output_tokens=_int(counts.get("output_tokens")),
                 cost_usd=float(cost) if isinstance(cost, int | float) else None)  # fmt: skip


def _denials(report: dict[str, Any]) -> str:
    denied = report.get("permission_denials")
    if not isinstance(denied, list) or not denied:
        return ""
    names = sorted({str(d.get("tool_name", "?")) for d in denied if isinstance(d, dict)})
    return f"{counted(len(denied), 'tool call')} refused: {', '.join(names)}"


# ---- codex: JSON lines ------------------------------------------------------------------------


def codex(returncode: int, output: str) -> Verdict | None:
    events = list(_json_lines(output))
    usage = _codex_usage(events)
    errors = [_codex_error(e) for e in events if e.get("type") in ("turn.failed", "error")]
    if errors:
        return failure(errors[-1], usage=usage)
    if returncode != 0:
        tail = _plain_tail(output)
        return failure(tail, usage=usage) if _said_why(tail) else None
    if any(e.get("type") == "turn.completed" for e in events):
        return Verdict(outcome=Outcome.OK, usage=usage)
    return None


def _codex_error(event: dict[str, Any]) -> str:
    error = event.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(event.get("message") or error or event)


def _codex_usage(events: list[dict[str, Any]]) -> Usage | None:
    turns = [e["usage"] for e in events if e.get("type") == "turn.completed"
             and isinstance(e.get("usage"), dict)]  # fmt: skip
    if not turns:
        return None
    sent = sum(_int(u.get("input_tokens")) for u in turns)
    return Usage(input_tokens=sent, output_tokens=sum(_int(u.get("output_tokens")) for u in turns))


# ---- aider: plain text ------------------------------------------------------------------------

_LITELLM = re.compile(r"^.*litellm\.(\w+):.*$", re.MULTILINE)
_AIDER_DONE = re.compile(r"^(Applied edit to|Tokens: )", re.MULTILINE)
_TOKENS = re.compile(
    r"Tokens: ([\d.]+k?) sent(?:, [\d.]+k? cache \w+)*, ([\d.]+k?) received\."
    r"(?:\s+Cost: \$[\d.]+ message, \$([\d.]+) session\.)?"
)
_AIDER_UNUSABLE = re.compile(
    r"No LLM model was specified|aider: error: |Unknown model|Model .* not found", re.I
)
_AIDER_ERRORS = {
    "RateLimitError": Outcome.THROTTLED,
    "AuthenticationError": Outcome.UNUSABLE,
    "PermissionDeniedError": Outcome.UNUSABLE,
    "NotFoundError": Outcome.UNUSABLE,
}


def aider(returncode: int, output: str) -> Verdict | None:
    """aider exits 0 after failed API calls: its last words decide. An API error after the last
    applied edit or usage report means the run ended on it."""
    usage = _aider_usage(output)
    errors = list(_LITELLM.finditer(output))
    done = list(_AIDER_DONE.finditer(output))
    if errors and (not done or errors[-1].start() > done[-1].start()):
        kind, line = errors[-1].group(1), errors[-1].group(0)
        outcome = _AIDER_ERRORS.get(kind, Outcome.FAILED)
        said = output[errors[-1].start() :]  # the last error's own words: its reset time
        wait = retry_after(said) if outcome == Outcome.THROTTLED else None
        return Verdict(outcome=outcome, detail=_words(line), retry_after=wait, usage=usage)
    if unusable := _AIDER_UNUSABLE.search(output):
        return Verdict(outcome=Outcome.UNUSABLE, detail=_words(_line_at(output, unusable.start())))
    if returncode != 0:
        tail = _plain_tail(output)
        return failure(tail, usage=usage) if _said_why(tail) else None
    return Verdict(outcome=Outcome.OK, usage=usage) if done else None


def _aider_usage(output: str) -> Usage | None:
    reports = _TOKENS.findall(output)
    if not reports:
        return None
    costs = [float(cost) for _, _, cost in reports if cost]
    return Usage(input_tokens=sum(_k(sent) for sent, _, _ in reports),
                 output_tokens=sum(_k(got) for _, got, _ in reports),
                 cost_usd=costs[-1] if costs else None)  # fmt: skip


def _k(count: str) -> int:
    return round(float(count[:-1]) * 1000) if count.endswith("k") else int(float(count))


# ---- shared -----------------------------------------------------------------------------------


def _json_lines(output: str) -> Iterator[dict[str, Any]]:
    for line in output.splitlines():
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                yield value


def _last_json(output: str, wanted: Any) -> dict[str, Any] | None:
    found = [d for d in _json_lines(output) if wanted(d)]
    return found[-1] if found else None


def _said_why(output: str) -> bool:
    return bool(_THROTTLED.search(output) or _UNUSABLE.search(output))


def _plain_tail(output: str, lines: int = 20) -> str:
    """The agent's last plain-text lines (its stderr, not its JSON events or a tool's output)."""
    plain = [line for line in output.splitlines() if not line.startswith("{")]
    return "\n".join(plain[-lines:])


def _words(text: str) -> str:
    """The agent's explanation, trimmed: the line that says what went wrong, not the last one."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    telling = [line for line in lines if _THROTTLED.search(line) or _UNUSABLE.search(line)]
    chosen = (telling or lines or [""])[0]
    return chosen[:DETAIL]


def _line_at(text: str, index: int) -> str:
    start = text.rfind("\n", 0, index) + 1
    end = text.find("\n", index)
    return text[start : end if end >= 0 else len(text)]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
