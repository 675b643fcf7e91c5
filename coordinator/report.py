"""A campaign report for operators: one self-contained HTML page with SVG plots.

The page shows the primary metric per round, round durations and
participation, per-site reliability and the recommendations. It needs no
plotting library and no network: the plots are inline SVG.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.checkpoint import CampaignState
from coordinator.config import CampaignConfig
from coordinator.stats import build_report

PLOT_WIDTH = 640
PLOT_HEIGHT = 220
MARGIN = 40


@dataclass(frozen=True)
class Series:
    """One line of a plot: a label and one y value per round (None where unknown)."""

    label: str
    values: Sequence[float | None]


def line_plot_svg(title: str, series: Sequence[Series], y_label: str) -> str:
    """Return an SVG line plot of per-round values; rounds run along the x axis."""
    points = [v for s in series for v in s.values if v is not None]
    rounds = max((len(s.values) for s in series), default=0)
    if not points or rounds == 0:
        return f"<p>{html.escape(title)}: no data yet.</p>"
    low, high = min(points), max(points)
    if high == low:
        high = low + 1.0
    width = PLOT_WIDTH - 2 * MARGIN
    height = PLOT_HEIGHT - 2 * MARGIN

    def xy(index: int, value: float) -> str:
        x = MARGIN + (width * index / max(rounds - 1, 1))
        y = MARGIN + height * (1 - (value - low) / (high - low))
        return f"{x:.1f},{y:.1f}"

    colours = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")
    lines = []
    for number, line in enumerate(series):
        coords = " ".join(xy(i, v) for i, v in enumerate(line.values) if v is not None)
        colour = colours[number % len(colours)]
        lines.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}">'
            f"<title>{html.escape(line.label)}</title></polyline>"
        )
    legend = " ".join(
        f'<tspan fill="{colours[i % len(colours)]}">{html.escape(s.label)}</tspan>'
        for i, s in enumerate(series)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{PLOT_WIDTH}" height="{PLOT_HEIGHT}" '
        f'role="img" aria-label="{html.escape(title)}">'
        f'<text x="{MARGIN}" y="20" font-size="14">{html.escape(title)}</text>'
        f'<text x="{PLOT_WIDTH - MARGIN}" y="20" font-size="12" text-anchor="end">{legend}</text>'
        f'<line x1="{MARGIN}" y1="{MARGIN + height}" x2="{MARGIN + width}" y2="{MARGIN + height}" '
        'stroke="#888"/>'
        f'<line x1="{MARGIN}" y1="{MARGIN}" x2="{MARGIN}" y2="{MARGIN + height}" stroke="#888"/>'
        f'<text x="4" y="{MARGIN + 4}" font-size="11">{high:.3g}</text>'
        f'<text x="4" y="{MARGIN + height}" font-size="11">{low:.3g}</text>'
        f'<text x="{MARGIN}" y="{PLOT_HEIGHT - 8}" font-size="11">round 0</text>'
        f'<text x="{MARGIN + width}" y="{PLOT_HEIGHT - 8}" font-size="11" text-anchor="end">'
        f"round {rounds - 1}</text>"
        f'<text x="{MARGIN + width / 2}" y="{PLOT_HEIGHT - 8}" font-size="11" '
        f'text-anchor="middle">{html.escape(y_label)}</text>' + "".join(lines) + "</svg>"
    )


def campaign_report_html(config: CampaignConfig, state: CampaignState, metric: str) -> str:
    """Return the whole report page of a campaign."""
    history = state.history
    metric_series = Series(metric, [h.metrics.get(metric) for h in history])
    duration = Series("round seconds", [h.duration_s for h in history])
    deadline = Series("deadline seconds", [h.deadline_s for h in history])
    completed = Series("completed sites", [float(len(h.completed_sites)) for h in history])
    failed = Series("failed sites", [float(len(h.failed_sites)) for h in history])
    report = build_report(state.stats, state.reliability, config)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>plantfed campaign {html.escape(config.id)}</title></head><body>",
        f"<h1>Campaign {html.escape(config.id)}</h1>",
        f"<p>Trainer {html.escape(config.trainer)}, round {state.next_round} of {config.rounds}."
        f" {html.escape(state.stopped_reason or '')}</p>",
        line_plot_svg(f"{metric} of the global model", [metric_series], metric),
        line_plot_svg("Round time against deadline", [duration, deadline], "seconds"),
        line_plot_svg("Participation", [completed, failed], "sites"),
        "<h2>Datasites</h2>",
        _sites_table(report.to_json()["datasites"]),
        "<h2>Recommendations</h2><ul>",
        *(f"<li>{html.escape(text)}</li>" for text in report.recommendations),
        "</ul></body></html>",
    ]
    return "\n".join(parts)


def _sites_table(sites: dict[str, dict[str, object]]) -> str:
    header = "<tr><th>site</th><th>participations</th><th>success rate</th>"
    header += "<th>mean response s</th><th>reliability</th><th>last failure</th></tr>"
    rows = []
    for site, info in sites.items():
        cells = [
            site,
            info["participations"],
            _fmt(info["success_rate"], "{:.0%}"),
            _fmt(info["mean_response_s"], "{:.2f}"),
            _fmt(info["reliability_score"], "{:.2f}"),
            info["last_failure_reason"] or "",
        ]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "<table border='1' cellpadding='4'>" + header + "".join(rows) + "</table>"


def _fmt(value: object, pattern: str) -> str:
    return pattern.format(value) if isinstance(value, int | float) else "-"
