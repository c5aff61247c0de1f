"""The content-addressed store: commit, size checks, verification, deletion bounds."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from goenhance_nb._errors import CacheError
from goenhance_nb._keys import hash_bytes
from goenhance_nb._store import ResultStore


def test_commit_moves_part_into_content_addressed_path(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "c")
    part = store.part_path("k1")
    part.write_bytes(b"video bytes" * 1000)
    stored = store.commit(part, expected_size=11000)
    assert stored.sha == hash_bytes(b"video bytes" * 1000)
    assert stored.path == tmp_path / "c" / "store" / stored.sha[:2] / f"{stored.sha}.mp4"
    assert stored.path.read_bytes() == b"video bytes" * 1000
    assert not part.exists()
    assert stat.S_IMODE((tmp_path / "c" / "store").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "c" / "tmp").stat().st_mode) == 0o700


def test_commit_refuses_wrong_size_and_discards_part(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    part = store.part_path("k")
    part.write_bytes(b"short")
    with pytest.raises(CacheError, match="does not match"):
        store.commit(part, expected_size=100)
    assert not part.exists()
    assert list(store.root.rglob("*.mp4")) == []


def test_check_detects_missing_and_damaged(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    part = store.part_path("k")
    part.write_bytes(b"abcdef")
    stored = store.commit(part)
    assert store.check(stored.path, size=6, sha=stored.sha) == "ok"
    stored.path.write_bytes(b"abcdeX")  # same size, different content
    assert store.check(stored.path, size=6) == "ok"  # fast check: size only
    assert store.check(stored.path, size=6, sha=stored.sha) == "damaged"
    stored.path.write_bytes(b"abc")
    assert store.check(stored.path, size=6) == "damaged"
    stored.path.unlink()
    assert store.check(stored.path, size=6) == "missing"


def test_remove_refuses_paths_outside_the_store(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "cache")
    outside = tmp_path / "goenhance_outputs" / "anime-1234.mp4"
    outside.parent.mkdir()
    outside.write_bytes(b"x")
    with pytest.raises(CacheError, match="outside the store"):
        store.remove(outside)
    assert outside.exists()


def test_link_or_copy_racing_itself_leaves_no_temp_file(tmp_path: Path) -> None:
    """Two threads putting the same result at the same name (the display and the lockfile
    writer do): the loser's temp link and ``dest`` are then links to one inode, where
    ``rename`` does nothing (POSIX) and would leave ``.<name>.<hex>.tmp`` behind."""
    from goenhance_nb._store import _link_temp, _replace

    src = tmp_path / "src.mp4"
    src.write_bytes(b"video")
    dest = tmp_path / "out" / "a.mp4"
    dest.parent.mkdir()
    first, second = _link_temp(src, dest), _link_temp(src, dest)
    assert first is not None and second is not None
    _replace(first, dest)
    _replace(second, dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.mp4"]
    assert dest.read_bytes() == b"video"
