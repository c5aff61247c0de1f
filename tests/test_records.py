"""Records: frozen, slotted, JSON round-trip, no signed URLs persisted from JobDetail.raw."""

from __future__ import annotations

import dataclasses
import json

import pytest

from goenhance_nb._lifecycle import JobState
from goenhance_nb._records import (
    NUMBER,
    Credits,
    Field,
    FieldError,
    GenerateResult,
    JobDetail,
    JobSpec,
    Style,
    dump_fields,
    read_fields,
)

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


# -- the one JSON-record helper: Field tables, read_fields, dump_fields ------------------------


def test_every_persisted_record_has_a_table_naming_all_its_fields() -> None:
    from goenhance_nb import _cache, _inputs, _ledger, _records

    tables = [
        (Style, _records._STYLE, set()),
        (Credits, _records._CREDITS, set()),
        (GenerateResult, _records._GENERATE_RESULT, set()),
        (JobDetail, _records._JOB_DETAIL, {"raw"}),  # signed URLs: never persisted
        (JobSpec, _records._JOB_SPEC, set()),
        (_cache.ResultRecord, _cache._RECORD_FIELDS, set()),
        (_ledger.LedgerEntry, _ledger._ENTRY_FIELDS, set()),
        (_inputs.InputRef, _inputs._INPUT_REF_FIELDS, set()),
    ]
    for cls, table, left_out in tables:
        names = [f.name for f in dataclasses.fields(cls)]
        assert list(table) == [n for n in names if n not in left_out], cls.__name__


TABLE = {
    "name": Field(str),
    "count": Field(int, 0),
    "ratio": Field(NUMBER, None, float),
    "flag": Field(object, False, bool),
    "state": Field(str, None, JobState),
}


@pytest.mark.parametrize(
    ("data", "read"),
    [
        ({"name": "a"}, {"name": "a", "count": 0, "ratio": None, "flag": False, "state": None}),
        (  # null means absent; unknown keys are ignored
            {"name": "a", "count": None, "ratio": 2, "flag": "yes", "state": "done", "new": 1},
            {"name": "a", "count": 0, "ratio": 2.0, "flag": True, "state": JobState.DONE},
        ),
    ],
)
def test_read_fields_defaults_converts_and_ignores_unknown(data: dict, read: dict) -> None:
    out = read_fields(data, TABLE)
    assert out == read and type(out["ratio"]) is type(read["ratio"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "a list, not an object"),
        ({}, "missing field 'name'"),
        ({"name": None}, "missing field 'name'"),
        ({"name": 1}, "field 'name' has the wrong type (int)"),
        ({"name": "a", "count": True}, "field 'count' has the wrong type (bool)"),
        ({"name": "a", "ratio": "1.5"}, "field 'ratio' has the wrong type (str)"),
        ({"name": "a", "state": "exploded"}, "field 'state' has a bad value ("),
    ],
)
def test_read_fields_errors_name_the_field(data: object, message: str) -> None:
    with pytest.raises(FieldError) as info:
        read_fields(data, TABLE)
    assert str(info.value).startswith(message)
    assert isinstance(info.value, ValueError)


def test_dump_fields_gives_enum_values_and_copies_containers() -> None:
    @dataclasses.dataclass(frozen=True)
    class R:
        state: JobState
        spec: dict

    rec = R(JobState.DONE, {"a": [1]})
    out = dump_fields(rec, {"state": Field(str), "spec": Field(dict)})
    assert out == {"state": "done", "spec": {"a": [1]}} and type(out["state"]) is str
    out["spec"]["a"].append(2)
    assert rec.spec == {"a": [1]}
