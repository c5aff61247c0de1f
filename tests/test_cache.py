"""The result cache: JSON-only rows, pickles refused, verify/list/info/remove/clear/size limit."""

from __future__ import annotations

import time
from pathlib import Path

import diskcache
import pytest

from goenhance_nb._cache import ResultCache, ResultRecord
from goenhance_nb._errors import CacheError, StorageWarning
from goenhance_nb._jsondisk import JSONOnlyDisk, PickledRowError, network_fs_type


def _record(
    cache: ResultCache, key: str, content: bytes, created: float | None = None
) -> ResultRecord:
    part = cache.store.part_path(key)
    part.write_bytes(content)
    stored = cache.store.commit(part)
    rec = ResultRecord(
        key=key,
        path=str(stored.path),
        sha=stored.sha,
        size=stored.size,
        job_id=f"job-{key}",
        model=2000,
        style_label="Anime Style",
        model_version="v5",
        params={"model": 2000, "duration": 3, "resolution": "720p", "seed": -1, "prompt": None},
        input_hash="ih",
        cost=30,
        backend="simulated",
        created=time.time() if created is None else created,
        source_name="clip.mp4",
    )
    cache.put(rec)
    return rec


def test_record_round_trips_through_the_index(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    rec = _record(cache, "k1", b"data")
    cache.close()
    again = ResultCache(tmp_path)
    assert again.get("k1") == rec
    assert again.lookup("k1") == (rec, "ok")
    assert again.lookup("nope") == (None, "absent")


def test_pickled_row_written_by_plain_diskcache_is_refused(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    _record(cache, "good", b"x")
    cache.close()
    with diskcache.Cache(str(tmp_path / "index")) as plain:  # default Disk pickles dicts
        plain.set("r:evil", {"key": "evil", "__reduce__": "would run code"})
    cache = ResultCache(tmp_path)
    with pytest.raises(CacheError, match="non-JSON row"):
        cache.get("evil")
    # a listing skips the refused row and says so in one line (issue 12)
    with pytest.warns(StorageWarning, match=r"skipped 1 unreadable row in the result cache"):
        assert [r.key for r in cache.list()] == ["good"]
    assert cache.get("good") is not None  # good rows still readable


def test_pickled_key_is_refused(tmp_path: Path) -> None:
    with diskcache.Cache(str(tmp_path / "db")) as plain:
        plain.set(("tuple", "key"), "v")  # a non-str key is pickled
    with (
        diskcache.Cache(str(tmp_path / "db"), disk=JSONOnlyDisk) as c,
        pytest.raises(PickledRowError),
    ):
        list(c.iterkeys())


def test_verify_full_detects_same_size_corruption(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    rec = _record(cache, "k", b"0123456789")
    assert cache.verify("k") and cache.verify("k", full=True)
    rec.file.write_bytes(b"0123456780")
    assert cache.verify("k")  # size still matches
    assert not cache.verify("k", full=True)
    assert cache.lookup("k")[1] == "ok"
    rec.file.write_bytes(b"01")
    assert cache.lookup("k")[1] == "damaged"
    with pytest.raises(CacheError, match="no cached result"):
        cache.verify("other")


def test_list_info_remove(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    a = _record(cache, "aaaa1111", b"A", created=1.0)
    b = _record(cache, "bbbb2222", b"BB", created=2.0)
    assert [r.key for r in cache.list()] == ["bbbb2222", "aaaa1111"]
    assert cache.info("aaaa") == a
    assert cache.info("job-bbbb2222") == b
    with pytest.raises(CacheError, match="no cached result"):
        cache.info("zzzz")
    assert cache.remove("aaaa1111")
    assert not a.file.exists()
    assert not cache.remove("aaaa1111")
    assert cache.total_size() == 2


def test_clear_keeps_notebook_outputs(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path / "cache")
    rec = _record(cache, "k", b"video")
    outputs = tmp_path / "goenhance_outputs"
    outputs.mkdir()
    linked = outputs / "anime-k.mp4"
    linked.hardlink_to(rec.file)
    copied = outputs / "copy.mp4"
    copied.write_bytes(b"video")
    assert cache.clear() == 1
    assert cache.list() == []
    assert not rec.file.exists()
    assert linked.read_bytes() == b"video" and copied.exists()


def test_size_limit_evicts_oldest(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path, size_limit=10)
    old = _record(cache, "old", b"x" * 6, created=1.0)
    new = _record(cache, "new", b"y" * 6, created=2.0)
    assert cache.get("old") is None and not old.file.exists()
    assert cache.get("new") == new


def test_meta_values_expire_by_ttl(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.meta_set("styles:simulated", [1, 2], now=100.0)
    assert cache.meta_get("styles:simulated", max_age=50, now=120.0) == [1, 2]
    assert cache.meta_get("styles:simulated", max_age=50, now=200.0) is None


def test_network_fs_detection_reads_proc_mounts(tmp_path: Path) -> None:
    assert network_fs_type(tmp_path) is None  # tmp is local on this machine
    share = tmp_path / "share"
    share.mkdir()
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        f"server:/export {share} nfs4 rw,relatime 0 0\n"
        f"//host/x {tmp_path / 'smb'} cifs rw 0 0\n"
    )
    assert network_fs_type(share / "cache", mounts) == "nfs4"
    assert network_fs_type(tmp_path / "smb", mounts) == "cifs"
    assert network_fs_type(tmp_path / "sharedrive", mounts) is None  # prefix is not a parent
    assert network_fs_type(tmp_path, tmp_path / "missing") is None


def test_record_from_json_tolerates_old_and_new_writers(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    rec = _record(cache, "k1", b"data")
    minimal = {k: rec.to_json()[k] for k in ("key", "path", "sha", "size", "job_id", "model")}
    old = ResultRecord.from_json({**minimal, "params": None, "added_later": 1})
    assert (old.params, old.timings, old.created, old.style_label, old.cost) == (
        {},
        {},
        0.0,
        "",
        None,
    )
    assert ResultRecord.from_json({**rec.to_json(), "timings": {"finished": 2}}).timings == {
        "finished": 2.0
    }


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("x", "malformed cache record (a str, not an object)"),
        ({"key": "k"}, "malformed cache record (missing field 'path')"),
        (
            {"key": "k", "path": "p", "sha": "s", "size": "twelve", "model": 1},
            "malformed cache record (field 'size' has a bad value (invalid literal for int()",
        ),
    ],
)
def test_malformed_record_is_a_cache_error_naming_the_field(data: object, message: str) -> None:
    with pytest.raises(CacheError) as info:
        ResultRecord.from_json(data)
    assert str(info.value).startswith(message)


def test_record_from_json_coerces_python_values(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    rec = _record(cache, "k1", b"data")
    again = ResultRecord.from_json({**rec.to_json(), "path": Path(rec.path), "size": "4"})
    assert again == rec
