"""The report page: lanes packed without overlaps, the graph laid out by generations, text
escaped, nothing fetched."""

from __future__ import annotations

from pathlib import Path

from sage.lib import history, report
from sage.lib.history import Span
from sage.lib.tickets import Ticket
from tests.lib.test_history import RUN, write_run


def tk(tid: str, *deps: str, title: str = "", state: str = "UNPROCESSED") -> Ticket:
    return Ticket(id=tid, title=title or tid, dependencies=deps, state=state)


def span(ticket: str, lane: str, start: float, end: float) -> Span:
    return Span(ticket=ticket, lane=lane, kind="running", start=start, end=end)


def test_lanes_in_slot_order_with_overlaps_packed_into_rows() -> None:
    spans = [span("Q", "queue", 0, 1), span("A", "slot 1", 0, 2), span("B", "slot 0", 0, 1),
             span("C", "slot 0", 0.5, 1.5), span("D", "slot 0", 1.0, 2.0)]  # fmt: skip
    got = [(lane, [[s.ticket for s in row] for row in rows]) for lane, rows in report.lanes(spans)]
    assert got == [("slot 0", [["B", "D"], ["C"]]), ("slot 1", [["A"]]), ("queue", [["Q"]])]


def test_graph_columns_are_generations_and_chains_run_straight() -> None:
    tickets = [tk("A"), tk("B"), tk("C", "B"), tk("D", "C"), tk("E", "A", "C")]
    nodes = {n.ticket: n for n in report.layout(tickets)}
    columns = {tid: n.x for tid, n in nodes.items()}
    assert columns["A"] == columns["B"] < columns["C"] < columns["D"] == columns["E"]
    assert nodes["C"].y == nodes["B"].y  # level with its dependency


def test_page_escapes_titles_and_fetches_nothing(tmp_path: Path) -> None:
    h = history.load(write_run(tmp_path, "20261201-100000-aaaaaa", RUN))
    tickets = [tk("A", title="<script>alert(1)</script>"), tk("B"), tk("C", "B"),
               tk("Z", state="COMPLETED")]  # fmt: skip
    page = report.page(h, tickets)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    states = report.final_states(h, tickets)
    assert states == {"A": "landed", "B": "deferred", "C": "blocked", "Z": "done earlier"}
    assert 'class="node s-earlier"' in page and 'class="k-retry"' in page


def test_time_at_the_prompt_is_a_figure_only_where_someone_was_asked(tmp_path: Path) -> None:
    h = history.load(write_run(tmp_path, "20261201-100000-aaaaaa", RUN))
    assert h.summary is not None and "at the prompt" not in report.figures(h)
    h.summary["prompt_seconds"] = 42.0
    assert "<b>42.0 s</b><span>of it at the prompt</span>" in report.figures(h)


def test_the_prompt_has_a_lane_and_a_legend_only_where_the_run_asked(tmp_path: Path) -> None:
    plain = report.page(history.load(write_run(tmp_path, "20261201-100000-aaaaaa", RUN)), [])
    assert "waiting for your answer" not in plain and ">prompt</text>" not in plain
    asked = [*RUN[:1], {"event": "asked", "ticket": "A", "at": RUN[0]["at"], "title": "Alpha"},
             {**RUN[1], "event": "answered", "answer": "yes"}, *RUN[1:]]  # fmt: skip
    page = report.page(history.load(write_run(tmp_path, "20261201-100001-bbbbbb", asked)), [])
    assert "waiting for your answer" in page and ">prompt</text>" in page
