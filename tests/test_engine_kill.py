"""Exactly-once across processes: real worker subprocesses SIGKILLed mid-poll, mid-download and
mid-submit, and two processes racing on one key (tests/workers/transform_worker.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import pytest
from workers.support import Worker, make_session

from goenhance_nb._errors import LedgerError
from goenhance_nb._keys import hash_file


def _frames(path: str) -> int:
    with av.open(path) as c:
        return sum(1 for _ in c.decode(video=0))


def test_kill_mid_poll_then_rerun_reattaches(sim: Any, tmp_path: Path, clip: Path) -> None:
    cache = tmp_path / "cache"
    sim.config(pending_seconds=3.0)
    w = Worker(sim, cache, clip)
    submitted = w.wait_for(lambda e: e["kind"] == "submitted")
    w.kill()
    assert sim.generate_calls() == 1
    sim.config(pending_seconds=0.3)
    s = make_session(sim, cache)
    try:
        job = s.transform(clip, 2000, duration=3)
        rec = job.result(60)
        assert job.id == submitted["job_id"] == rec.job_id
        assert hash_file(rec.path) == rec.sha and _frames(rec.path) > 0
        assert sim.generate_calls() == 1
    finally:
        s.close()


def test_kill_mid_download_then_rerun_resumes_with_range(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    cache = tmp_path / "cache"
    sim.config(download_rate=150_000)
    w = Worker(sim, cache, clip)
    w.wait_for(lambda e: e["kind"] == "downloading" and (e["progress"] or [0])[0] > 0)
    w.kill()
    parts = list((cache / "tmp").glob("*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size > 0
    partial = parts[0].stat().st_size
    sim.config(download_rate=None)
    sim.clear_requests()
    s = make_session(sim, cache)
    try:
        rec = s.transform(clip, 2000, duration=3).result(60)
        assert rec.size > partial
        assert hash_file(rec.path) == rec.sha and _frames(rec.path) > 0
        assert [d["status"] for d in sim.requests("/sim/results/")] == [
            206
        ]  # resumed, not restarted
        assert sim.generate_calls() == 0  # none since the kill; the worker made the only one
        assert not list((cache / "tmp").glob("*.part"))
    finally:
        s.close()


def test_two_processes_racing_on_one_key_make_one_generate_call(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    cache = tmp_path / "cache"
    a = Worker(sim, cache, clip)
    b = Worker(sim, cache, clip)
    ra, rb = a.finish(), b.finish()
    assert ra["ok"] and rb["ok"], (ra, rb)
    assert ra["path"] == rb["path"] and ra["sha"] == rb["sha"]
    assert sorted([ra["cached"], rb["cached"]]) == [False, True]
    assert sim.generate_calls() == 1
    assert hash_file(ra["path"]) == ra["sha"]


def test_kill_mid_submit_leaves_an_orphan_that_is_reported_then_resubmitted(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    cache = tmp_path / "cache"
    sim.faults({"kind": "slow", "path": "/api/v1/video2video/generate", "delay": 5})
    w = Worker(sim, cache, clip)
    w.wait_for(lambda e: e["kind"] == "submitting")
    w.kill()
    s = make_session(sim, cache)
    try:
        (entry,) = s.ledger_entries()
        assert entry.state == "submitting" and entry.job_id is None
        calls = sim.generate_calls()
        with pytest.raises(LedgerError) as info:
            s.transform(clip, 2000, duration=3)
        msg = str(info.value)
        assert f"%goenhance resume {entry.key[:12]} --resubmit" in msg
        assert "resubmit=True" in msg and "\n" not in msg
        with pytest.raises(LedgerError, match="--resubmit"):
            s.transform(clip, 2000, duration=3, force=True)  # force does not re-send either
        with pytest.raises(LedgerError, match="--resubmit"):
            s.resume(entry.key[:12]).result(30)
        assert sim.generate_calls() == calls  # reporting made no generate call
        with pytest.warns(UserWarning, match="may charge twice"):
            job = s.resume(entry.key[:12], resubmit=True)
            rec = job.result(60)
        assert hash_file(rec.path) == rec.sha
        assert sim.generate_calls() == calls + 1
        assert s.ledger.get(entry.key).state == "done"  # type: ignore[union-attr]
    finally:
        s.close()
