"""`sage report`: one run as a self-contained HTML page (inline CSS and SVG, no script, nothing
fetched): a timeline of every attempt per worker slot and in the commit queue, the ticket graph
with each ticket's final state, and the summary figures."""

from __future__ import annotations

import html
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sage.lib import graph as dag
from sage.lib.history import KINDS, History, Span
from sage.lib.tickets import Ticket
from sage.lib.words import counted

LABEL_W, PLOT_W, ROW_H, BAR_H = 90, 1000, 24, 18
NODE_W, NODE_H, COL_GAP, ROW_GAP = 150, 38, 60, 14
INDEX_STATES = {"COMPLETED": "done earlier", "DEFERRED": "deferred", "IN_PROGRESS": "not started"}
STATE_CLASS = {"done earlier": "earlier", "not started": "open", "failed": "deferred"}

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; padding: 0; }
.figures li { list-style: none; border: 1px solid #ddd; border-radius: 4px; padding: 4px 10px; }
.figures b { display: block; font-size: 18px; } .figures span { color: #555; font-size: 12px; }
ul.reasons { padding-left: 18px; }
svg text { font: 11px system-ui, sans-serif; } .axis { stroke: #bbb; }
.lane-label { fill: #444; } .bar-label { fill: #fff; pointer-events: none; }
.k-running { fill: #1565c0; } .k-failed { fill: #c62828; } .k-waiting { fill: #90a4ae; }
.k-landed { fill: #2e7d32; } .k-conflict { fill: #ef6c00; } .k-verify-failed { fill: #ad1457; }
.k-retry { fill: #bdbdbd; }
.node rect { stroke: #555; stroke-width: 1; } .node text { fill: #111; }
.s-landed rect { fill: #a5d6a7; } .s-deferred rect { fill: #ef9a9a; }
.s-blocked rect { fill: #ffcc80; } .s-skipped rect, .s-returned rect { fill: #e0e0e0; }
.s-earlier rect { fill: #e8f5e9; } .s-open rect { fill: #fff; }
.s-running rect, .s-collecting rect, .s-landing rect, .s-retrying rect { fill: #90caf9; }
.edge { fill: none; stroke: #888; stroke-width: 1.2; }
.legend span { display: inline-block; margin-right: 14px; }
.legend i { display: inline-block; width: 12px; height: 12px; margin-right: 4px;
  vertical-align: -1px; }
"""
SWATCH = {"running": "#1565c0", "failed": "#c62828", "waiting": "#90a4ae", "landed": "#2e7d32",
          "conflict": "#ef6c00", "verify-failed": "#ad1457", "retry": "#bdbdbd",
          "asked": "#f9a825"}  # fmt: skip
MEANING = {"running": "worker running", "failed": "worker failed", "waiting": "waiting to land",
           "landed": "queued → landed", "conflict": "queued → conflict",
           "verify-failed": "queued → verify failed", "retry": "waiting to retry",
           "asked": "waiting for your answer"}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    ticket: str
    title: str
    state: str
    x: float
    y: float


def page(history: History, tickets: Sequence[Ticket]) -> str:
    """The whole HTML document."""
    title = f"sage run {history.run_id}"
    body = "\n".join(
        [
            f"<h1>{_e(title)}</h1>",
            f"<p>{_e(_status_line(history))}</p>",
            "<h2>Summary</h2>",
            figures(history),
            "<h2>Timeline</h2>",
            legend({s.kind for s in history.spans}),
            timeline(history.spans),
            "<h2>Tickets</h2>",
            graph_svg(tickets, final_states(history, tickets)),
        ]
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}'
        f"</title><style>{CSS}</style></head><body>\n{body}\n</body></html>\n"
    )


def _status_line(history: History) -> str:
    started = history.started.strftime("%Y-%m-%d %H:%M:%S UTC") if history.started else "?"
    state = (
        "finished"
        if history.finished
        else "running"
        if history.live
        else ("no summary (it was stopped, or it died)")
    )
    return f"started {started}, {counted(history.workers, 'worker slot')}, {state}"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# ---- summary figures -------------------------------------------------------------------


def figures(history: History) -> str:
    s = history.summary
    if s is None:
        return "<p>The run has not written its summary.</p>"
    cards = "".join(
        f"<li><b>{_e(_figure(s, key))}</b><span>{_e(name)}</span></li>"
        for name, key in FIGURES
        if key not in SHOWN_WHEN_SET or s.get(key)
    )
    reasons = [f"deferred {tid}: {why}" for tid, why in sorted(s.get("deferred", {}).items())]
    reasons += [f"blocked {tid} (by {by})" for tid, by in sorted(s.get("blocked", {}).items())]
    reasons += [f"stopped: {s['stop_reason']}"] if s.get("stop_reason") else []
    items = "".join(f"<li>{_e(r)}</li>" for r in reasons)
    return f'<ul class="figures">{cards}</ul>' + (
        f'<ul class="reasons">{items}</ul>' if items else ""
    )


FIGURES = [
    ("completed", "completed"), ("deferred", "deferred"), ("blocked", "blocked"),
    ("waiting to land", "waiting_to_land"), ("not started", "not_started"),
    ("wall time", "wall_seconds"), ("of it at the prompt", "prompt_seconds"),
    ("worker time", "worker_seconds"),
    ("saved against sequential", "saved_seconds"), ("efficiency", "efficiency"),
    ("commits landed", "commits_landed"), ("conflicts", "conflicts"), ("retries", "retries"),
    ("worker time not landed", "wasted_seconds"), ("exit code", "exit_code"),
]  # fmt: skip


SHOWN_WHEN_SET = {"prompt_seconds"}  # an interactive run's: the others would show "0.0 s"


def _figure(summary: dict[str, Any], key: str) -> str:
    value = summary.get(key)
    if isinstance(value, list | dict):
        return str(len(value))
    if key == "efficiency":
        return f"{float(value or 0):.0%}"
    if key.endswith("_seconds"):
        return f"{float(value or 0):.1f} s"
    return str(value)


# ---- timeline --------------------------------------------------------------------------


def legend(drawn: Collection[str] = ()) -> str:
    """Every kind of bar, but for the prompt's unless the run asked anything (`drawn`)."""
    items = "".join(
        f'<span><i style="background:{SWATCH[k]}"></i>{_e(MEANING[k])}</span>'
        for k in KINDS
        if k != "asked" or k in drawn
    )
    return f'<p class="legend">{items}</p>'


def lanes(spans: Iterable[Span]) -> list[tuple[str, list[list[Span]]]]:
    """Each lane (slots in order, then the queue, then retries), its spans packed into rows
    that do not overlap."""
    by_lane: dict[str, list[Span]] = {}
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        by_lane.setdefault(span.lane, []).append(span)
    order = sorted(by_lane, key=_lane_key)
    return [(lane, _pack(by_lane[lane])) for lane in order]


def _lane_key(lane: str) -> tuple[int, int]:
    if lane.startswith("slot "):
        return (0, int(lane.split()[1]))
    return ({"queue": 1, "retries": 2}.get(lane, 3), 0)  # the prompt's lane last


def _pack(spans: list[Span]) -> list[list[Span]]:
    rows: list[list[Span]] = []
    for span in spans:
        row = next((r for r in rows if r[-1].end <= span.start), None)
        if row is None:
            rows.append(row := [])
        row.append(span)
    return rows


def timeline(spans: Sequence[Span]) -> str:
    total = max((s.end for s in spans), default=0.0) or 1.0
    parts, y = [], 20
    for lane, rows in lanes(spans):
        label = f"slot {int(lane.split()[1]) + 1}" if lane.startswith("slot ") else lane
        parts.append(f'<text class="lane-label" x="0" y="{y + 13}">{_e(label)}</text>')
        for row in rows:
            parts += [_bar(span, total, y) for span in row]
            y += ROW_H
        parts.append(f'<line class="axis" x1="0" x2="{LABEL_W + PLOT_W}" y1="{y}" y2="{y}"/>')
    parts += _ticks(total, y)
    height = y + 24
    return (
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 20}"'
        f' height="{height}">{"".join(parts)}</svg>'
    )


def _bar(span: Span, total: float, y: float) -> str:
    x = LABEL_W + span.start / total * PLOT_W
    w = max(2.0, (span.end - span.start) / total * PLOT_W)
    tip = (
        f"{span.ticket} attempt {span.attempt}: {MEANING.get(span.kind, span.kind)}, "
        f"{span.start:.2f}–{span.end:.2f} s ({span.end - span.start:.2f} s) {span.note}"
    )
    label = span.ticket if w > 7.5 * len(span.ticket) + 4 else ""
    return (
        f'<g><rect class="k-{span.kind}" x="{x:.1f}" y="{y + 2}" width="{w:.1f}" '
        f'height="{BAR_H}" rx="2"><title>{_e(tip)}</title></rect>'
        f'<text class="bar-label" x="{x + 3:.1f}" y="{y + 15}">{_e(label)}</text></g>'
    )


def _ticks(total: float, y: float) -> list[str]:
    step = _nice_step(total / 8)
    parts, t = [], 0.0
    while t <= total + 1e-9:
        x = LABEL_W + t / total * PLOT_W
        parts.append(f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="14" y2="{y}"/>')
        parts.append(f'<text x="{x:.1f}" y="{y + 16}" text-anchor="middle">{_clock(t)}</text>')
        t = round(t + step, 6)
    return parts


def _clock(seconds: float) -> str:
    if seconds < 120 or seconds % 60:
        return f"{seconds:g} s"
    return f"{seconds / 60:g} min" if seconds < 7200 else f"{seconds / 3600:g} h"


def _nice_step(raw: float) -> float:
    for unit in (0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if unit >= raw:
            return float(unit)
    return 3600.0 * (raw // 3600 + 1)


# ---- the ticket graph ------------------------------------------------------------------


def final_states(history: History, tickets: Sequence[Ticket]) -> dict[str, str]:
    """What the run made of each ticket; tickets it never touched, as the index has them."""
    return {
        t.id: history.phases.get(t.id) or INDEX_STATES.get(t.state, "not started") for t in tickets
    }


def layout(tickets: Sequence[Ticket]) -> list[Node]:
    """Columns by topological generation; inside a column, ordered by where the ticket's
    dependencies sit (fewer crossings)."""
    graph = dag.build(tickets)
    titles, rows, nodes = {t.id: t.title for t in tickets}, dict[str, float](), []
    for col, level in enumerate(dag.levels(graph)):
        order = sorted(level, key=lambda tid: (_barycenter(graph, tid, rows), tid))
        row = -1.0
        for tid in order:  # level with its dependencies where there is room: chains run straight
            row = rows[tid] = max(row + 1, round(_barycenter(graph, tid, rows)))
            x, y = col * (NODE_W + COL_GAP) + 10, row * (NODE_H + ROW_GAP) + 10
            nodes.append(Node(ticket=tid, title=titles.get(tid, ""), state="", x=x, y=y))
    return nodes


def _barycenter(graph: Any, tid: str, rows: dict[str, float]) -> float:
    placed = [rows[d] for d in graph.predecessors(tid) if d in rows]
    return sum(placed) / len(placed) if placed else 0.0


def graph_svg(tickets: Sequence[Ticket], states: dict[str, str]) -> str:
    nodes = {n.ticket: n for n in layout(tickets)}
    if not nodes:
        return "<p>No tickets.</p>"
    edges = [_edge(nodes[d], nodes[t.id]) for t in tickets for d in t.dependencies if d in nodes]
    boxes = [_node(n, states.get(n.ticket, "not started")) for n in nodes.values()]
    width = max(n.x for n in nodes.values()) + NODE_W + 20
    height = max(n.y for n in nodes.values()) + NODE_H + 20
    return (
        f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
        f'height="{height:.0f}"><defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" '
        f'fill="#888"/></marker></defs>{"".join(edges)}{"".join(boxes)}</svg>'
    )


def _edge(a: Node, b: Node) -> str:
    x1, y1, x2, y2 = a.x + NODE_W, a.y + NODE_H / 2, b.x, b.y + NODE_H / 2
    mid = (x1 + x2) / 2
    return (
        f'<path class="edge" d="M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} '
        f'{x2:.0f},{y2:.0f}" marker-end="url(#arrow)"/>'
    )


def _node(n: Node, state: str) -> str:
    css = STATE_CLASS.get(state, state)
    title = n.title if len(n.title) <= 22 else n.title[:21] + "…"
    return (
        f'<g class="node s-{_e(css)}"><title>{_e(n.ticket)}: {_e(n.title)} ({_e(state)})</title>'
        f'<rect x="{n.x:.0f}" y="{n.y:.0f}" width="{NODE_W}" height="{NODE_H}" rx="4"/>'
        f'<text x="{n.x + 6:.0f}" y="{n.y + 15:.0f}"><tspan font-weight="bold">{_e(n.ticket)}'
        f'</tspan> {_e(state)}</text><text x="{n.x + 6:.0f}" y="{n.y + 30:.0f}">{_e(title)}</text>'
        "</g>"
    )


def write(history: History, tickets: Sequence[Ticket], output: Path | None = None) -> Path:
    path = output or history.folder / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(history, tickets), encoding="utf-8")
    return path
