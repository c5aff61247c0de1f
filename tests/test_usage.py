"""Usage: the spend snapshot is one typed, frozen record read under the lock (no simulator)."""

from __future__ import annotations

import dataclasses

import pytest

from goenhance_nb._usage import Estimate, SpendSnapshot, Usage


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([], SpendSnapshot(spent=0, possible=0, jobs=0, budget=100, last_credits=None)),
        (
            [("record", 20, 15)],
            SpendSnapshot(spent=15, possible=0, jobs=1, budget=100, last_credits=None),
        ),
        (
            [("record", 20, None)],
            SpendSnapshot(spent=20, possible=0, jobs=1, budget=100, last_credits=None),
        ),
        (
            [("possible", 30, None), ("record", 10, 12)],
            SpendSnapshot(spent=42, possible=30, jobs=1, budget=100, last_credits=None),
        ),
        (
            [("release", 50, None)],
            SpendSnapshot(spent=0, possible=0, jobs=0, budget=100, last_credits=None),
        ),
    ],
)
def test_snapshot_counts_spend_possible_spend_and_jobs(
    steps: list[tuple[str, int, int | None]], expected: SpendSnapshot
) -> None:
    usage = Usage(budget=100)
    for what, credits, cost in steps:
        est = Estimate(credits, "default")
        usage.reserve(est)
        if what == "record":
            usage.record(est, cost, model=2000, resolution="540p", duration=3)
        elif what == "possible":
            usage.record_possible(est)
        else:
            usage.release(est)
    assert usage.snapshot() == expected


def test_snapshot_is_a_frozen_record_with_the_last_balance() -> None:
    usage = Usage()
    usage.last_credits = 480
    snap = usage.snapshot()
    assert snap == SpendSnapshot(spent=0, possible=0, jobs=0, budget=None, last_credits=480)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.spent = 1  # type: ignore[misc]
    usage.last_credits = 470  # a snapshot does not follow later changes
    assert snap.last_credits == 480
