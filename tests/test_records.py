"""Records: frozen, slotted, JSON round-trip, no signed URLs persisted from JobDetail.raw."""

from __future__ import annotations

import dataclasses
import json

import pytest

from goenhance_nb._lifecycle import JobState
from goenhance_nb._records import Credits, GenerateResult, JobDetail, JobSpec, Style

SAMPLES = [
    Style(
        id=2000,
        label="Anime Style",
        version="v5",
        category="Popular",
        is_vip=False,
        preview_url="http://127.0.0.1:1/sim/previews/2000.jpg",
    ),
    Style(id=2005, label="Clay Style", version="v5", category="", is_vip=True, preview_url=None),
    Credits(count=4207, queue_limit=3, user_id="u-1"),
    Credits(count=0),
    GenerateResult(img_uuid="0b6f7c1e", cost=50),
    GenerateResult(img_uuid="0b6f7c1e"),
    JobSpec(model=2000, duration=5, resolution="720p", seed=-1, prompt="soft light"),
    JobSpec(model=2006),
    JobDetail(img_uuid="u", raw_status="WAITING", state=JobState.QUEUED),
    JobDetail(
        img_uuid="u",
        raw_status="success",
        state=JobState.DONE,
        result_url="https://h/x.mp4",
        expires_at=1.5e9,
        output_duration=5.0,
        start_time="2025-01-10T08:00:00.120Z",
        end_time="2025-01-10T08:04:31.870Z",
        model_id="2000",
    ),
]


@pytest.mark.parametrize("rec", SAMPLES, ids=lambda r: type(r).__name__)
def test_json_round_trip(rec: object) -> None:
    d = rec.to_json()  # type: ignore[attr-defined]
    text = json.dumps(d)  # plain JSON only
    back = type(rec).from_json(json.loads(text))  # type: ignore[attr-defined]
    assert back == rec


@pytest.mark.parametrize("rec", SAMPLES, ids=lambda r: type(r).__name__)
def test_frozen_and_slotted(rec: object) -> None:
    assert not hasattr(rec, "__dict__")
    field = dataclasses.fields(rec)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(rec, field, None)


def test_job_detail_to_json_drops_raw() -> None:
    d = JobDetail(
        img_uuid="u",
        raw_status="success",
        state=JobState.DONE,
        result_url="https://h/x.mp4?sig=1",
        raw={"json": [{"value": "https://h/x.mp4?sig=1"}], "secret_field": "s"},
    )
    out = d.to_json()
    assert "raw" not in out and "secret_field" not in json.dumps(out)
    assert JobDetail.from_json(out).raw == {}


@pytest.mark.parametrize(
    ("cls", "data"),
    [
        (Style, {"id": "2000", "label": "x", "version": "v5", "category": ""}),
        (Style, {"label": "x"}),
        (Credits, {"count": True}),
        (JobSpec, {"model": 1, "duration": 5, "resolution": "720p"}),
        (JobDetail, {"img_uuid": "u", "raw_status": "x", "state": "exploded"}),
        (GenerateResult, {}),
    ],
)
def test_from_json_rejects_bad_data(cls: type, data: dict) -> None:
    with pytest.raises(ValueError):
        cls.from_json(data)  # type: ignore[attr-defined]


def test_jobspec_args_and_canonical() -> None:
    spec = JobSpec(model=2000, duration=5, resolution="540p", seed=7)
    assert spec.to_args("https://x/a.mp4") == {
        "model": 2000,
        "reference_video_url": "https://x/a.mp4",
        "duration": 5,
        "resolution": "540p",
        "seed": 7,
    }
    assert "prompt" not in spec.to_args("u")
    assert JobSpec(model=1, prompt="p").to_args("u")["prompt"] == "p"
    assert spec.canonical() == {
        "model": 2000,
        "duration": 5,
        "resolution": "540p",
        "seed": 7,
        "prompt": None,
    }


def test_job_state_values_are_badge_text() -> None:
    assert [s.value for s in JobState if not s.local] == ["queued", "running", "done", "failed"]
    assert str(JobState.DONE) == "done" and JobState.DONE.terminal and not JobState.QUEUED.terminal
