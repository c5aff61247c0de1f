"""Crash and resume with real kernels (jupyter_client): a kernel is SIGKILLed while the paid
POST is in flight, while the job is polled, and while the result downloads; then the same cell
runs in a new kernel on the same cache dir.

Promises checked: the same job id, one generate call, an intact file; after a kill mid-POST the
documented orphan outcome (the server got the POST: a plain re-run refuses in one line naming
``--resubmit`` and sends nothing).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from workers.support import make_session, wait_until

from reliability.conftest import (
    DETAIL,
    GENERATE,
    Kernel,
    assert_cache_sound,
    generate_statuses,
    kernel_env,
    output_text,
)

pytestmark = pytest.mark.slow

CELL = "%goenhance run clip.mp4 --style 2000 -d 3 -r 540p"


@pytest.fixture
def work(tmp_path: Path, clip: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    shutil.copy(clip, d / "clip.mp4")
    return d


@pytest.fixture
def kernels() -> Iterator[list[Kernel]]:
    """Kernels a test started; every one still alive is shut down at the end."""
    started: list[Kernel] = []
    yield started
    for k in started:
        k.close()


def _start(kernels: list[Kernel], work: Path, env: dict[str, str]) -> Kernel:
    k = Kernel(work, env)
    kernels.append(k)
    assert k.run("%load_ext goenhance_nb")["status"] == "ok"
    return k


def _job_ids(sim: Any) -> set[str]:
    return {
        q["query"].split("img_uuid=", 1)[1].split("&", 1)[0]
        for q in sim.requests(DETAIL)
        if "img_uuid=" in q["query"]
    }


def _rerun_shows_video(kernels: list[Kernel], work: Path, env: dict[str, str]) -> str:
    k = _start(kernels, work, env)
    reply = k.run(CELL + " --wait", timeout=120)
    text = output_text(reply["outputs"])
    assert reply["status"] == "ok", text
    assert "goenhance-video" in text, text
    return text


def test_kill_mid_post_then_rerun_is_the_orphan_outcome(
    sim: Any, tmp_path: Path, work: Path, kernels: list[Kernel]
) -> None:
    cache = tmp_path / "cache"
    env = kernel_env(sim, cache)
    sim.faults({"kind": "slow", "path": GENERATE, "delay": 3.0})
    k = _start(kernels, work, env)
    k.start(CELL + " --wait")
    wait_until(lambda: len(generate_statuses(sim)) == 1, timeout=60)  # the POST arrived
    k.sigkill()
    # the server finishes the POST it received (a job is created and charged)
    wait_until(lambda: generate_statuses(sim) != [0], timeout=30)
    k2 = _start(kernels, work, env)
    reply = k2.run(CELL + " --wait", timeout=60)
    assert reply["status"] == "error"
    shown = f"{reply['ename']}: {reply['evalue']}"
    assert reply["ename"] == "LedgerError" and "--resubmit" in shown and "\n" not in shown, shown
    assert len(generate_statuses(sim)) == 1, "the re-run sent the paid POST again"


def test_kill_mid_poll_then_rerun_reattaches(
    sim: Any, tmp_path: Path, work: Path, kernels: list[Kernel]
) -> None:
    cache = tmp_path / "cache"
    env = kernel_env(sim, cache)
    sim.config(pending_seconds=4.0)
    k = _start(kernels, work, env)
    k.start(CELL + " --wait")
    wait_until(lambda: bool(_job_ids(sim)), timeout=60)  # submitted and being polled
    (job_id,) = _job_ids(sim)
    k.sigkill()
    _rerun_shows_video(kernels, work, env)
    assert len(generate_statuses(sim)) == 1
    _assert_one_sound_result(sim, cache, job_id)


def test_kill_mid_download_then_rerun_completes(
    sim: Any, tmp_path: Path, work: Path, kernels: list[Kernel]
) -> None:
    cache = tmp_path / "cache"
    env = kernel_env(sim, cache)
    sim.config(download_rate=60_000)
    k = _start(kernels, work, env)
    k.start(CELL + " --wait")

    def downloading() -> bool:
        return any(p.stat().st_size > 0 for p in (cache / "tmp").glob("*.part"))

    wait_until(lambda: (cache / "tmp").is_dir() and downloading(), timeout=90)
    (job_id,) = _job_ids(sim)
    k.sigkill()
    sim.config(download_rate=None)
    _rerun_shows_video(kernels, work, env)
    assert len(generate_statuses(sim)) == 1
    _assert_one_sound_result(sim, cache, job_id)


def _assert_one_sound_result(sim: Any, cache: Path, job_id: str) -> None:
    s = make_session(sim, cache)
    try:
        (entry,) = s.ledger_entries()
        assert entry.job_id == job_id and entry.state == "done"
        (rec,) = assert_cache_sound(s)
        assert rec.job_id == job_id
    finally:
        s.close()
