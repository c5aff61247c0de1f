"""Pure functions: hashes, canonical JSON, request keys, map_status, extract_result (tables)."""

from __future__ import annotations

import hashlib
import os
import threading
import tracemalloc
from pathlib import Path

import blake3
import pytest

from goenhance_nb import _keys
from goenhance_nb._keys import (
    RESULT_URL_MAX_TTL,
    FileChangedError,
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


C = _keys._CHUNK


@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, 2 * C - 1, 2 * C, 2 * C + 1, 3 * C + 7])
def test_hash_file_sizes_around_chunk_boundaries(tmp_path: Path, size: int) -> None:
    data = (bytes(range(251)) * (size // 251 + 1))[:size]
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    threads = threading.active_count()
    assert hash_file(p) == blake3.blake3(data).hexdigest()
    assert threading.active_count() == threads  # the read-ahead thread is gone


def test_hash_file_feeds_every_byte_to_also_in_order(tmp_path: Path) -> None:
    data = os.urandom(3 * C + 12345)
    p = tmp_path / "f.bin"
    p.write_bytes(data)
    sha = hashlib.sha256()
    with (tmp_path / "copy.bin").open("wb") as out:
        digest = hash_file(p, sha.update, out.write)
    assert digest == blake3.blake3(data).hexdigest()
    assert sha.hexdigest() == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "copy.bin").read_bytes() == data


def test_hash_file_reads_a_pipe_to_its_end(tmp_path: Path) -> None:
    data = os.urandom(2 * C + 3)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(data,))
    writer.start()
    assert hash_file(fifo) == blake3.blake3(data).hexdigest()  # no size to check against
    writer.join()


@pytest.mark.parametrize("change", ["grow", "shrink", "rewrite"])
def test_hash_file_refuses_a_file_changed_while_read(tmp_path: Path, change: str) -> None:
    # no digest of a mix of two versions: a clear error (never a crash: the file is not mapped)
    p = tmp_path / "f.bin"
    p.write_bytes(os.urandom(3 * C))
    calls = 0

    def meddle(chunk: memoryview) -> None:
        nonlocal calls
        calls += 1
        if calls != 1:
            return
        if change == "grow":
            with p.open("ab") as fh:
                fh.write(b"more")
        elif change == "shrink":
            os.truncate(p, C // 2)
        else:  # same size, new bytes, new mtime
            with p.open("r+b") as fh:
                fh.write(b"x" * 10)
            os.utime(p, ns=(1, 1))

    threads = threading.active_count()
    with pytest.raises(FileChangedError, match="changed while it was being read") as info:
        hash_file(p, meddle)
    assert isinstance(info.value, OSError) and info.value.strerror
    assert threading.active_count() == threads


def test_hash_file_stops_its_reader_when_a_sink_fails(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(bytes(5 * C))

    def full_disk(chunk: memoryview) -> None:
        raise OSError(28, "No space left on device")

    threads = threading.active_count()
    with pytest.raises(OSError, match="No space left"):
        hash_file(p, full_disk)
    assert threading.active_count() == threads


def test_hash_file_memory_is_bounded(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    with p.open("wb") as fh:
        for _ in range(10):
            fh.write(os.urandom(C))
    tracemalloc.start()
    try:
        hash_file(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * C + (1 << 20)  # two read buffers, whatever the file size


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
