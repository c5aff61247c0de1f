"""The lifecycle vocabulary (goenhance_nb._lifecycle): the raw-status table and the badges."""

from __future__ import annotations

import pytest

from goenhance_nb._lifecycle import (
    RAW_STATUS,
    Badge,
    EventKind,
    JobState,
    LedgerState,
    badge_for,
    known_raw_status,
    map_status,
)


@pytest.mark.parametrize(
    ("raw", "has_result", "expected"),
    [
        ("success", True, JobState.DONE),
        ("completed", True, JobState.DONE),
        ("SUCCESS", True, JobState.DONE),
        ("success", False, JobState.RUNNING),  # finished without a URL: keep polling
        ("failed", False, JobState.FAILED),
        ("error", True, JobState.FAILED),
        ("pending", False, JobState.QUEUED),
        (" waiting ", False, JobState.QUEUED),
        ("processing", False, JobState.RUNNING),
        ("something-new", False, JobState.RUNNING),
        (None, False, JobState.RUNNING),
    ],
)
def test_map_status(raw: str | None, has_result: bool, expected: JobState) -> None:
    assert map_status(raw, has_result) is expected


def test_known_raw_status() -> None:
    assert known_raw_status("Completed") and known_raw_status("queued")
    assert not known_raw_status("paused") and not known_raw_status(None)
    assert set(RAW_STATUS.values()) == {
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.DONE,
        JobState.FAILED,
    }


def test_values_are_the_strings_stored_and_shown() -> None:
    # str enums: old ledger rows and event comparisons keep working
    assert LedgerState("watch_cancelled") is LedgerState.WATCH_CANCELLED
    assert EventKind.TIMED_OUT == "timed_out" and str(EventKind.TIMED_OUT) == "timed_out"
    assert str(JobState.LOCAL_QUEUE) == "LOCAL_QUEUE"
    assert [k for k in EventKind if k.terminal] == [
        EventKind.CACHED,
        EventKind.DONE,
        EventKind.FAILED,
        EventKind.TIMED_OUT,
    ]
    assert EventKind.WATCH_CANCELLED.ends_watch and not EventKind.WATCH_CANCELLED.terminal
    assert {s for s in LedgerState if s.terminal} == {LedgerState.DONE, LedgerState.FAILED}
    assert JobState.LOCAL.local and not JobState.QUEUED.local and JobState.FAILED.terminal


@pytest.mark.parametrize(
    ("kind", "state", "cached", "expected"),
    [
        (EventKind.CACHED, None, False, Badge.CACHED),
        (EventKind.DONE, JobState.DONE, True, Badge.CACHED),
        (EventKind.DONE, JobState.DONE, False, Badge.DONE),
        (EventKind.FAILED, JobState.FAILED, False, Badge.FAILED),
        (EventKind.TIMED_OUT, JobState.RUNNING, False, Badge.TIMED_OUT),
        (EventKind.WATCH_CANCELLED, JobState.RUNNING, False, Badge.NOT_WATCHING),
        (EventKind.QUEUED_LOCALLY, JobState.LOCAL_QUEUE, False, Badge.QUEUED),
        (EventKind.SUBMITTED, JobState.QUEUED, False, Badge.QUEUED),
        (EventKind.STATUS, JobState.RUNNING, False, Badge.RUNNING),
        (EventKind.DOWNLOADING, None, False, Badge.RUNNING),
        (None, LedgerState.DOWNLOADING, False, Badge.RUNNING),
        (None, LedgerState.WATCH_CANCELLED, False, Badge.NOT_WATCHING),
        (None, LedgerState.SUBMITTING, False, Badge.QUEUED),
        (None, None, False, Badge.QUEUED),
    ],
)
def test_badge_for(
    kind: EventKind | None, state: JobState | LedgerState | None, cached: bool, expected: Badge
) -> None:
    assert badge_for(kind, state, cached=cached) is expected


def test_every_badge_has_colours_and_ledger_state_maps() -> None:
    for badge in Badge:
        bg, fg = badge.colours
        assert bg.startswith("#") and fg.startswith("#")
    for state in JobState:
        assert isinstance(LedgerState.for_job(state), LedgerState)
