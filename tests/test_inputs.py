"""Input validation (DECISIONS 10) and memoised hashing, on real files made with PyAV."""

from __future__ import annotations

import hashlib
import os
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from goenhance_nb import _keys
from goenhance_nb._errors import InputError
from goenhance_nb._inputs import HashMemo, inspect_file, snapshot_for_upload, validate_params
from goenhance_nb._keys import hash_bytes, hash_file
from goenhance_nb._samples import sample_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=2.0)


def _audio_only_mp4(path: Path) -> Path:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 44100
            frame.pts = i * 1024
            frame.time_base = Fraction(1, 44100)
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return path


def _mkv_video(path: Path) -> Path:
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(10):
            frame = av.VideoFrame.from_ndarray(
                np.zeros((48, 64, 3), dtype=np.uint8), format="rgb24"
            )
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return path


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"duration": 2}, "between 3 and 30"),
        ({"duration": 31}, "between 3 and 30"),
        ({"duration": 5.5}, "whole number"),
        ({"resolution": "1080p"}, "540p, 720p"),
        ({"prompt": "x" * 501}, "501 characters"),
        ({"seed": "7"}, "seed"),
    ],
)
def test_parameters_out_of_range_are_refused(kwargs: dict[str, object], message: str) -> None:
    params: dict[str, object] = {"duration": 5, "resolution": "720p", "prompt": None, "seed": -1}
    params.update(kwargs)
    with pytest.raises(InputError, match=message):
        validate_params(**params)


def test_valid_parameters_pass() -> None:
    validate_params(duration=3, resolution="540p", prompt="x" * 500, seed=-1)
    validate_params(duration=30, resolution="720p", prompt=None, seed=42)


def test_good_clip_gives_input_ref(clip: Path, tmp_path: Path) -> None:
    ref = inspect_file(clip, HashMemo(tmp_path), duration=None)
    assert ref.kind == "file" and ref.name == "clip.mp4"
    assert ref.content_hash == hash_file(clip)
    assert ref.size == clip.stat().st_size
    assert ref.width == 320 and ref.height == 240
    assert ref.duration is not None and 1.5 < ref.duration < 2.5


def test_shorter_source_than_duration_only_warns(clip: Path, tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="shorter than the requested duration 5s"):
        inspect_file(clip, HashMemo(tmp_path), duration=5)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        inspect_file(tmp_path / "nope.mp4", HashMemo(tmp_path))


def test_not_a_video(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video")
    with pytest.raises(InputError, match=r"cannot open notes\.mp4 as a video"):
        inspect_file(bad, HashMemo(tmp_path))


def test_no_video_stream(tmp_path: Path) -> None:
    audio = _audio_only_mp4(tmp_path / "voice.mp4")
    with pytest.raises(InputError, match="no video stream"):
        inspect_file(audio, HashMemo(tmp_path))


def test_wrong_container(tmp_path: Path) -> None:
    mkv = _mkv_video(tmp_path / "clip.mkv")
    with pytest.raises(InputError, match="MP4 or MOV is required"):
        inspect_file(mkv, HashMemo(tmp_path))


def test_size_limit_for_real_api(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="at most"):
        inspect_file(clip, HashMemo(tmp_path), max_bytes=clip.stat().st_size - 1)


def test_hash_memo_does_not_reread_unchanged_file(clip: Path, tmp_path: Path) -> None:
    memo = HashMemo(tmp_path / "c")
    first = memo.hash(clip)
    again = HashMemo(tmp_path / "c")  # a later run (new process state), same memo on disk
    assert again.hash(clip) == first
    assert again.reads == 0
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clip.read_bytes())
    assert again.hash(copy) == first and again.reads == 1  # other inode: read once
    with copy.open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    os.utime(copy, ns=(1, 1))  # a different mtime
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert again.hash(copy) != first
    assert again.reads == 2


def test_probe_is_memoised_with_the_hash(clip: Path, tmp_path: Path) -> None:
    # issue 15: a re-run on an unchanged file neither re-reads nor re-opens it with PyAV
    first = inspect_file(clip, HashMemo(tmp_path / "c"))
    memo = HashMemo(tmp_path / "c")  # a later run, same memo on disk
    with pytest.warns(UserWarning, match="shorter than the requested duration 5s"):
        again = inspect_file(clip, memo, duration=5)  # the warning comes from the memo too
    assert again == first
    assert memo.probes == 0 and memo.reads == 0
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(clip.read_bytes())
    assert inspect_file(copy, memo).content_hash == first.content_hash
    assert memo.probes == 1  # another inode: probed once
    copy.write_bytes(b"not a video any more")  # changed: the memo does not vouch for it
    with pytest.raises(InputError, match="cannot open"):
        inspect_file(copy, memo)
    with pytest.raises(InputError, match="cannot open"):  # a failed probe is not remembered
        inspect_file(copy, memo)
    assert memo.probes == 3


def test_a_forgotten_file_is_hashed_again_even_with_the_same_stat(
    clip: Path, tmp_path: Path
) -> None:
    # the upload snapshot found other bytes than the memo vouched for (rewritten within the
    # mtime's resolution): forget() must drop the digest AND the probe row that carries it,
    # in this process's memory too, or every retry would send the old key again
    src = tmp_path / "clip.mp4"
    src.write_bytes(clip.read_bytes())
    memo = HashMemo(tmp_path / "c")
    first = inspect_file(src, memo)
    st = os.stat(src)
    other = sample_clip(tmp_path / "other.mp4", seconds=3.0, seed=11).read_bytes()
    with src.open("r+b") as fh:  # same inode, same size, same mtime: the memo cannot tell
        fh.write(other[: st.st_size].ljust(st.st_size, b"\0"))
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert inspect_file(src, memo).content_hash == first.content_hash  # still vouched for
    memo.forget(src)
    assert inspect_file(src, memo).content_hash == hash_file(src) != first.content_hash
    again = HashMemo(tmp_path / "c")  # and on disk
    assert again.inspect(src)[0] == hash_file(src)


def _meddling_hash_file(monkeypatch: pytest.MonkeyPatch, target: Path) -> None:
    """Make ``_inputs``' hash_file append to ``target`` after the first chunk it reads."""
    import goenhance_nb._inputs as inputs

    def meddle_once(chunk: memoryview, done: list[bool] = []) -> None:  # noqa: B006
        if not done:
            done.append(True)
            with target.open("ab") as fh:
                fh.write(b"still being written")

    monkeypatch.setattr(
        inputs, "hash_file", lambda path, *also: hash_file(path, *also, meddle_once)
    )


def test_hash_memo_refuses_and_forgets_a_file_written_while_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    growing = tmp_path / "growing.mp4"
    growing.write_bytes(os.urandom(100_000))
    memo = HashMemo(tmp_path / "c")
    with monkeypatch.context() as m:
        _meddling_hash_file(m, growing)
        with pytest.raises(InputError, match=r"growing\.mp4: it changed while it was being read"):
            memo.hash(growing)
    assert memo.hash(growing) == hash_bytes(growing.read_bytes())  # now complete: hashed
    assert memo.reads == 1


def test_upload_snapshot_is_the_hashed_bytes_or_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "in.mp4"
    data = os.urandom(3 * _keys._CHUNK + 5)
    src.write_bytes(data)
    snap = snapshot_for_upload(src, hash_bytes(data), tmp_path / "tmp")
    assert snap.path.read_bytes() == data and snap.size == len(data)
    assert snap.sha256 == hashlib.sha256(data).hexdigest()
    snap.discard()
    with pytest.raises(InputError, match="changed after it was validated"):
        snapshot_for_upload(src, "0" * 64, tmp_path / "tmp")
    with monkeypatch.context() as m:
        _meddling_hash_file(m, src)
        with pytest.raises(InputError, match="for upload: it changed while it was being read"):
            snapshot_for_upload(src, hash_bytes(data), tmp_path / "tmp")
    assert list((tmp_path / "tmp").glob("upload-*")) == []  # no copy left behind
