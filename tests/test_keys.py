"""Pure functions: hashes, canonical JSON, request keys, map_status, extract_result (tables)."""

from __future__ import annotations

from pathlib import Path

import blake3
import pytest

from goenhance_nb._keys import (
    RESULT_URL_MAX_TTL,
    canonical_json,
    extract_result,
    hash_bytes,
    hash_file,
    request_key,
)
from goenhance_nb._lifecycle import JobState, map_status
from goenhance_nb._records import JobSpec

NOW = 1_736_496_271.0  # 2025-01-10T08:04:31Z


def test_hash_bytes_and_file_agree(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 chunks
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    assert hash_bytes(data) == hash_file(p) == blake3.blake3(data).hexdigest()
    assert hash_bytes(b"") == "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
    assert hash_bytes(b"a") != hash_bytes(b"b")


def test_canonical_json() -> None:
    assert (
        canonical_json({"b": 1, "a": [1, {"d": None, "c": "é"}]})
        == '{"a":[1,{"c":"é","d":null}],"b":1}'
    )
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})


BASE = dict(
    input_hash="ab" * 32,
    spec=JobSpec(model=2000, duration=5, resolution="720p", seed=-1),
    model_version="v5",
    backend="simulated",
)


@pytest.mark.parametrize(
    "change",
    [
        {"input_hash": "cd" * 32},
        {"spec": JobSpec(model=2004, duration=5, resolution="720p", seed=-1)},
        {"spec": JobSpec(model=2000, duration=6, resolution="720p", seed=-1)},
        {"spec": JobSpec(model=2000, duration=5, resolution="540p", seed=-1)},
        {"spec": JobSpec(model=2000, duration=5, resolution="720p", seed=3)},
        {"spec": JobSpec(model=2000, duration=5, resolution="720p", seed=-1, prompt="x")},
        {"model_version": "v6"},
        {"backend": "api.goenhance.ai"},
    ],
)
def test_request_key_changes_with_each_input(change: dict) -> None:
    assert request_key(**{**BASE, **change}) != request_key(**BASE)  # type: ignore[arg-type]


def test_request_key_is_stable() -> None:
    k = request_key(**BASE)  # type: ignore[arg-type]
    assert k == request_key(**BASE) and len(k) == 64  # type: ignore[arg-type]
    # equal specs built differently give equal keys
    assert k == request_key(
        BASE["input_hash"], JobSpec(2000, 5, "720p", -1, None), "v5", "simulated"
    )  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "has_result", "expected"),
    [
        ("success", True, JobState.DONE),
        ("completed", True, JobState.DONE),
        ("SUCCESS", True, JobState.DONE),
        ("Completed", True, JobState.DONE),
        ("success", False, JobState.RUNNING),
        ("completed", False, JobState.RUNNING),
        ("failed", False, JobState.FAILED),
        ("error", True, JobState.FAILED),
        ("FAILED", False, JobState.FAILED),
        ("pending", False, JobState.QUEUED),
        ("queued", False, JobState.QUEUED),
        ("WAITING", False, JobState.QUEUED),
        ("waiting", False, JobState.QUEUED),
        ("processing", False, JobState.RUNNING),
        ("rendering-frames", False, JobState.RUNNING),
        ("", False, JobState.RUNNING),
        (None, False, JobState.RUNNING),
        ("  success ", True, JobState.DONE),
    ],
)
def test_map_status(raw: str | None, has_result: bool, expected: JobState) -> None:
    assert map_status(raw, has_result) is expected


SIGNED = "https://openapi-static.goenhance.ai/u/x_0.mp4?q-sign-algorithm=sha1&q-sign-time=1736496271;1736539471"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # documented shape: json[*].value with link_expired_at
        (
            {
                "json": [
                    {
                        "type": "video",
                        "value": SIGNED,
                        "duration": 5.0,
                        "link_expired_at": "2025-01-10T20:04:31Z",
                    }
                ]
            },
            (SIGNED, 1736539471.0, 5.0),
        ),
        # json item without link_expired_at: expiry from q-sign-time end
        ({"json": [{"type": "video", "value": SIGNED}]}, (SIGNED, 1736539471.0, None)),
        # video item preferred over an image item
        (
            {
                "json": [
                    {"type": "image", "value": "https://h/t.jpg"},
                    {"type": "video", "value": "https://h/v.mp4?exp=1736500000"},
                ]
            },
            ("https://h/v.mp4?exp=1736500000", 1736500000.0, None),
        ),
        # untyped item accepted when no video item exists
        (
            {"json": [{"value": "https://h/v.mp4"}]},
            ("https://h/v.mp4", NOW + RESULT_URL_MAX_TTL, None),
        ),
        # img_url (schema field)
        (
            {"json": None, "img_url": "https://h/i.mp4"},
            ("https://h/i.mp4", NOW + RESULT_URL_MAX_TTL, None),
        ),
        # output.video_url (legacy)
        (
            {"output": {"video_url": "https://h/o.mp4", "thumbnail_url": "https://h/o.jpg"}},
            ("https://h/o.mp4", NOW + RESULT_URL_MAX_TTL, None),
        ),
        # order: json before img_url before output
        (
            {
                "json": [{"type": "video", "value": "https://h/a.mp4"}],
                "img_url": "https://h/b.mp4",
                "output": {"video_url": "https://h/c.mp4"},
            },
            ("https://h/a.mp4", NOW + RESULT_URL_MAX_TTL, None),
        ),
        (
            {"img_url": "https://h/b.mp4", "output": {"video_url": "https://h/c.mp4"}},
            ("https://h/b.mp4", NOW + RESULT_URL_MAX_TTL, None),
        ),
        # expiry further than 12 h is capped
        (
            {
                "json": [
                    {
                        "type": "video",
                        "value": "https://h/v.mp4",
                        "link_expired_at": "2030-01-01T00:00:00Z",
                    }
                ]
            },
            ("https://h/v.mp4", NOW + RESULT_URL_MAX_TTL, None),
        ),
        # numeric link_expired_at (seconds and milliseconds)
        (
            {"json": [{"type": "video", "value": "https://h/v.mp4", "link_expired_at": NOW + 60}]},
            ("https://h/v.mp4", NOW + 60, None),
        ),
        (
            {
                "json": [
                    {
                        "type": "video",
                        "value": "https://h/v.mp4",
                        "link_expired_at": (NOW + 60) * 1000,
                    }
                ]
            },
            ("https://h/v.mp4", NOW + 60, None),
        ),
        # nothing there / malformed shapes
        ({"json": None}, (None, None, None)),
        ({"json": [], "img_url": "", "output": None}, (None, None, None)),
        ({"json": "oops", "output": "oops"}, (None, None, None)),
        ({"json": [{"type": "video"}, 5, None]}, (None, None, None)),
        ({}, (None, None, None)),
    ],
)
def test_extract_result(data: dict, expected: tuple) -> None:
    assert extract_result(data, now=NOW) == expected


def test_extract_result_tolerates_non_dict() -> None:
    assert extract_result(None, now=NOW) == (None, None, None)  # type: ignore[arg-type]
    assert extract_result([1, 2], now=NOW) == (None, None, None)  # type: ignore[arg-type]
