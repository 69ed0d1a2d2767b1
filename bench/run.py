"""sage benchmarks: `python bench/run.py [--quick] [--only SECTION ...]`.

Prints a table and writes bench/results.json. Every figure is a ratio against a floor measured in
the same run (these machines are noisy), so a row carries its value, the floor, the ratio and the
goal / limit it is judged by.

Adding a section: write `bench/<name>.py` with `run(options: Options) -> list[dict]` building its
rows with `row(...)`, and add `("<name>", "bench.<name>")` to SECTIONS. A section whose module or
optional dependency is missing is reported as skipped; one that raises is reported as an error and
the others still run.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results.json"
# `python bench/run.py` puts bench/ first on sys.path, where a section named like a stdlib module
# (bench/queue.py) would shadow it for every library: sections are imported as bench.<name>.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (name, module): the module's run(options) returns rows. Append new sections here.
SECTIONS: list[tuple[str, str]] = [
    ("scale", "bench.scale"),
    ("dask_overhead", "bench.dask_overhead"),
    ("stream", "bench.stream"),
    ("queue", "bench.queue"),
    ("replay", "bench.replay"),
    ("isolation", "bench.isolation"),
    ("conflicts", "bench.conflicts"),
]

Row = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    quick: bool
    workdir: Path  # a scratch directory, removed after the run
    root: Path = ROOT
    python: str = sys.executable
    conflict_variants: tuple[
        str, ...
    ] = ()  # bench/conflicts.py: which variants (default: today's two)


def row(
    section: str,
    case: str,
    metric: str,
    value: float,
    unit: str = "s",
    *,
    floor: float | None = None,
    goal: float | None = None,
    limit: float | None = None,
    note: str = "",
) -> Row:
    """One figure. With a floor, `ratio` = value / floor and goal / limit judge the ratio;
    without one they judge the value itself. Lower is better."""
    ratio = value / floor if floor else None
    judged = ratio if floor else value
    return {
        "section": section,
        "case": case,
        "metric": metric,
        "value": value,
        "unit": unit,
        "floor": floor,
        "ratio": ratio,
        "goal": goal,
        "limit": limit,
        "verdict": verdict(judged, goal, limit),
        "note": note,
    }


def verdict(judged: float | None, goal: float | None, limit: float | None) -> str:
    if judged is None or (goal is None and limit is None):
        return "-"
    if goal is not None and judged <= goal:
        return "goal"
    if limit is None or judged <= limit:
        return "ok"
    return "OVER"


def best_of(fns: Mapping[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """The fastest of `repeat` runs of each function, interleaved so that a burst of load on the
    machine hits the floor and the measured code alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            gc.collect()
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def run_section(name: str, module: str, options: Options) -> list[Row]:
    try:
        section = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        print(f"[{name}] skipped: {exc}", file=sys.stderr)
        return [row(name, "-", "skipped", 0.0, "", note=str(exc))]
    started = time.perf_counter()
    try:
        rows: list[Row] = section.run(options)
    except Exception as exc:  # one broken section must not hide the others' figures
        print(f"[{name}] error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return [row(name, "-", "error", 0.0, "", note=f"{type(exc).__name__}: {exc}")]
    print(f"[{name}] {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return rows


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "s":
        for scale, name in ((1, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if value >= scale or name == "µs":
                return f"{value / scale:.3g} {name}"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}".strip()


def table(rows: list[Row]) -> str:
    head = ("section", "case", "metric", "value", "floor", "ratio", "goal", "limit", "verdict")
    lines = [head]
    for r in rows:
        lines.append((
            r["section"], r["case"], r["metric"], fmt(r["value"], r["unit"]),
            fmt(r["floor"], r["unit"]), fmt(r["ratio"], "x") if r["ratio"] else "-",
            fmt(r["goal"]), fmt(r["limit"]), r["verdict"],
        ))  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(t.rstrip() for t in text)


def save(rows: list[Row], ran: list[str], argv: list[str], seconds: float) -> None:
    """Write results.json. With --only, the other sections' earlier rows are kept, and `runs`
    says which command measured each section, and when."""
    old: dict[str, Any] = {}
    if RESULTS.exists():
        try:
            old = json.loads(RESULTS.read_text())
        except ValueError:
            old = {}
    command = " ".join(["python", "bench/run.py", *argv])
    when = datetime.now(UTC).isoformat(timespec="seconds")
    runs = {k: v for k, v in old.get("runs", {}).items() if k not in ran}
    runs.update({name: {"command": command, "when": when} for name in ran})
    data = {
        "command": command,
        "when": when,
        "python": platform.python_version(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "seconds": round(seconds, 1),
        "runs": runs,
        "rows": [r for r in old.get("rows", []) if r.get("section") not in ran] + rows,
    }
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--only", nargs="+", metavar="SECTION", choices=[n for n, _ in SECTIONS])
    parser.add_argument(
        "--conflict-variants", nargs="+", metavar="VARIANT", default=(),
        help="the conflicts section's variants, side by side (see bench/conflicts.py)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    wanted = [(n, m) for n, m in SECTIONS if not args.only or n in args.only]
    started = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sage-bench-") as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # the worktrees: scratch too
        compiled()
        options = Options(
            quick=args.quick, workdir=Path(tmp), conflict_variants=tuple(args.conflict_variants)
        )
        for name, module in wanted:
            rows += run_section(name, module, options)
    seconds = time.perf_counter() - started
    print(table(rows))
    print(f"\n{seconds:.1f} s; results in {RESULTS.relative_to(ROOT)}")
    save(rows, [n for n, _ in wanted], sys.argv[1:] if argv is None else argv, seconds)
    return 1 if any(r["verdict"] == "OVER" for r in rows) else 0


def compiled() -> None:
    """sage's modules compiled once into their `__pycache__`, for every run measured to read:
    an installed sage runs from the bytecode pip wrote, while this checkout may have none and
    imports may be barred from writing it (PYTHONDONTWRITEBYTECODE), so each run would compile
    sage's sources anew. Not with PYTHONPYCACHEPREFIX: Python then looks there for every
    module's bytecode, the standard library's and the dependencies' too, finds none and
    compiles them all at each start (half a second a run, sage's and not the loop's). A
    checkout that cannot be written keeps compiling at each start."""
    os.environ.pop("PYTHONPYCACHEPREFIX", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "sage")],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
