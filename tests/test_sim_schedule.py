"""The simulator's lifecycle as pure functions of time (sim/schedule.py), table-tested without
a server, and the `jobs.json` round trip of its typed job record (sim/jobs.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from goenhance_nb.sim.jobs import APIFailure, GenerateArgs, JobRecord, Render, validate_body
from goenhance_nb.sim.schedule import Finish, api_status, assign_slots, next_step


def job(**kw: object) -> JobRecord:
    base = JobRecord(
        id="j1",
        account="a",
        args=GenerateArgs(2000, "http://h/x.mp4", 5, "720p", -1, None),
        model_version="v5",
        cost=50,
        submitted_at=100.0,
        pending_s=2.0,
        processing_s=10.0,
        forced_fail=False,
        slot_start=100.0,
    )
    return replace(base, **kw)


DONE = Render("done", duration=5.0, done_at=105.0)
LATE = Render("done", duration=5.0, done_at=130.0)
BROKEN = Render("failed", error="cannot transform video: ValueError", done_at=104.0)


@pytest.mark.parametrize(
    ("record", "now", "expected"),
    [
        (job(), 101.0, "wait"),  # still pending
        (job(), 102.0, "render"),  # processing starts: render it
        (job(render=Render("running")), 120.0, "wait"),  # planned end passed, render not done
        (job(render=DONE), 111.0, "wait"),  # render done, planned end not reached
        (job(render=DONE), 112.0, Finish("success", 112.0, None)),
        (job(render=LATE), 131.0, Finish("success", 130.0, None)),  # ends when the render did
        (job(render=BROKEN), 112.0, Finish("failed", 112.0, BROKEN.error)),
        (job(forced_fail=True), 111.0, "wait"),
        (job(forced_fail=True), 200.0, Finish("failed", 112.0, "generation failed")),
    ],
)
def test_next_step(record: JobRecord, now: float, expected: object) -> None:
    assert next_step(record, now) == expected


@pytest.mark.parametrize(
    ("record", "now", "expected"),
    [
        (job(slot_start=None), 100.0, "queued"),
        (job(), 101.0, "pending"),
        (job(), 103.0, "processing"),
        (job(state="success"), 103.0, "success"),
        (job(state="failed"), 103.0, "failed"),
    ],
)
def test_api_status(record: JobRecord, now: float, expected: str) -> None:
    assert api_status(record, now, waiting_status="queued", success_status="success") == expected


def test_assign_slots_respects_the_limit_and_the_last_end() -> None:
    done = job(id="d", state="success", slot_start=50.0, end_time=90.0)
    busy = job(id="b", slot_start=95.0)
    first = job(id="w1", slot_start=None, submitted_at=80.0)
    second = job(id="w2", slot_start=None, submitted_at=85.0)
    other = job(id="o", account="z", slot_start=None, submitted_at=99.0)
    assert assign_slots([done, busy, first, second, other], now=100.0, limit=2)
    assert first.slot_start == 90.0  # the account's slot freed at 90, after its submission
    assert second.slot_start is None  # limit 2: busy + first
    assert other.slot_start == 99.0  # another account has its own slots
    assert not assign_slots([busy, first, second], now=100.0, limit=2)


def test_job_record_round_trips_the_jobs_json_format() -> None:
    record = job(render=BROKEN, state="failed", end_time=112.0, error="x", refunded=True)
    data = record.to_json()
    assert data["render"] == {
        "status": "failed",
        "error": "cannot transform video: ValueError",
        "done_at": 104.0,
    }
    assert job().to_json()["render"] == {"status": "none"}
    assert JobRecord.from_json(data) == record


def test_validate_body_names_the_first_bad_field() -> None:
    args = {"model": "2000", "reference_video_url": "https://h/x.mp4", "duration": 5}
    ok = validate_body({"type": "mx-v2v", "args": {**args, "resolution": "540p"}})
    assert (ok.model, ok.seed, ok.prompt) == (2000, -1, None)
    with pytest.raises(APIFailure, match="invalid params: resolution"):
        validate_body({"type": "mx-v2v", "args": {**args, "resolution": "1080p"}})
    with pytest.raises(APIFailure, match="invalid params: duration"):
        validate_body({"type": "mx-v2v", "args": {**args, "duration": True}})
