"""The campaign report page: plots from the history, tables from the statistics."""

from __future__ import annotations

import re

from coordinator.checkpoint import CampaignState, RoundSummary
from coordinator.config import campaign_config_from_dict
from coordinator.reliability import SiteReliability, record_outcome
from coordinator.report import Series, campaign_report_html, line_plot_svg
from plantfed.messages import OutcomeStatus


def summary(index: int, f1: float | None) -> RoundSummary:
    metrics = {"f1": f1} if f1 is not None else {}
    return RoundSummary(index, "completed", ("a", "b"), (), 1.5, metrics=metrics, deadline_s=10.0)


def test_plot_has_one_point_per_known_value() -> None:
    svg = line_plot_svg("F1", [Series("f1", [0.1, None, 0.5, 0.7])], "f1")

    points = re.search(r'points="([^"]+)"', svg)
    assert points is not None
    assert len(points.group(1).split()) == 3
    assert "round 3" in svg


def test_plot_without_data_says_so() -> None:
    assert "no data yet" in line_plot_svg("F1", [Series("f1", [None])], "f1")


def test_report_contains_plots_sites_and_advice() -> None:
    config = campaign_config_from_dict({"id": "c1", "rounds": 3, "trainer": {"name": "noop"}})
    reliability = record_outcome(
        SiteReliability(), OutcomeStatus.TIMED_OUT, 10.0, reason="slow <link>"
    )
    state = CampaignState(
        campaign_id="c1",
        next_round=2,
        global_model_hash="h",
        history=(summary(0, 0.4), summary(1, 0.6)),
        reliability={"plant-x": reliability},
    )

    page = campaign_report_html(config, state, "f1")

    assert page.count("<svg") == 3
    assert "Campaign c1" in page
    assert "<td>plant-x</td>" in page
    assert "slow &lt;link&gt;" in page
