"""Unit tests of the ids the coordinator gives training tasks."""

from __future__ import annotations

from dataclasses import replace

from coordinator.dispatch import task_id_for
from plantfed.roundstore import RoundSpec

SPEC = RoundSpec(
    campaign_id="line-3",
    index=2,
    attempt=1,
    sites=("plant-a", "plant-b"),
    trainer="noop",
    params={},
    model_hash="0" * 64,
    strategy={},
    min_completed=1,
    deadline_unix_s=100.0,
    grace_s=1.0,
    opened_unix_s=0.0,
    token="0123456789abcdef",
)


def test_task_id_names_round_opening_and_site() -> None:
    assert task_id_for(SPEC, "plant-a") == "plantfed-line-3-r0002.a1-01234567-plant-a"


def test_reopened_round_gets_new_task_ids() -> None:
    # Redis lost the first opening; the round is opened again with the same tag.
    reopened = replace(SPEC, token="fedcba9876543210")

    assert task_id_for(reopened, "plant-a") != task_id_for(SPEC, "plant-a")
