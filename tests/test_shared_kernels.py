"""Two processes on two cache dirs sharing one store pay once (issue 16): real subprocesses
(tests/workers/transform_worker.py), a real S3 protocol server on loopback (moto) or a shared
folder, and the simulator's request log as the witness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from moto_s3 import S3Server, s3_server  # noqa: F401 (fixture)
from workers.support import Worker

pytestmark = pytest.mark.slow


@pytest.fixture(params=["s3", "folder"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment that points a worker at a fresh shared store."""
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return {**server.env, "GOENHANCE_SHARED_STORE": server.url()}
    share = tmp_path / "team-share"
    share.mkdir()
    return {"GOENHANCE_SHARED_STORE": str(share)}


def test_two_processes_same_transformation_at_once_one_generate_call(
    sim: Any, tmp_path: Path, clip: Path, store_env: dict[str, str]
) -> None:
    sim.config(download_rate=400_000)  # the two runs overlap for a while
    workers = [
        Worker(sim, tmp_path / name, clip, extra_env=store_env) for name in ("a", "b")
    ]  # both at once
    ends = [w.finish() for w in workers]
    assert all(e["ok"] for e in ends), ends
    assert sim.generate_calls() == 1
    assert ends[0]["sha"] == ends[1]["sha"]
    assert Path(ends[0]["path"]).read_bytes() == Path(ends[1]["path"]).read_bytes()
    assert Path(ends[0]["path"]).parent != Path(ends[1]["path"]).parent  # two caches


def test_the_claimer_killed_after_submitting_the_other_reattaches(
    sim: Any, tmp_path: Path, clip: Path, store_env: dict[str, str]
) -> None:
    sim.config(pending_seconds=2.0)  # still running on the server when the claimer dies
    a = Worker(sim, tmp_path / "a", clip, extra_env=store_env)
    submitted = a.wait_for(lambda e: e["kind"] == "submitted" and e["job_id"])
    a.kill()
    b = Worker(sim, tmp_path / "b", clip, extra_env=store_env)
    end = b.finish()
    assert end["ok"], (end, b.events)
    assert not end["cached"]
    assert submitted["job_id"] in {e["job_id"] for e in b.events if e["kind"] == "submitted"}
    assert sim.generate_calls() == 1
