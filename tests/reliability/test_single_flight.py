"""Single flight across kernels: two real kernels run the same transformation at once, with a
local file and with a URL input. One generate call; both cells show the video."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from workers.support import make_session

from reliability.conftest import Kernel, assert_cache_sound, kernel_env, output_text

pytestmark = pytest.mark.slow


@pytest.fixture
def kernels() -> Iterator[list[Kernel]]:
    started: list[Kernel] = []
    yield started
    for k in started:
        k.close()


def _upload(sim: Any, clip: Path) -> str:
    r = sim._http.put("/sim/uploads", content=clip.read_bytes(), headers={"X-Filename": "c.mp4"})
    r.raise_for_status()
    return str(r.json()["url"])


@pytest.mark.parametrize("source", ["file", "url"])
def test_two_kernels_same_transformation_one_generate_call(
    source: str, sim: Any, tmp_path: Path, clip: Path, kernels: list[Kernel]
) -> None:
    cache = tmp_path / "cache"
    env = kernel_env(sim, cache)
    sim.config(download_rate=400_000)  # the two runs overlap for a while
    dirs = []
    for name in ("a", "b"):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(clip, d / "clip.mp4")
        dirs.append(d)
    inp = "clip.mp4" if source == "file" else _upload(sim, clip)
    sim.clear_requests()
    if source == "url":
        # both kernels' input fetches wait, then stream at the same moment (issue 12 item 3)
        sim.faults({"kind": "slow", "path": "/sim/files/", "delay": 1.0, "times": 2})
    ks = [Kernel(d, env) for d in dirs]
    kernels.extend(ks)
    for k in ks:
        assert k.run("%load_ext goenhance_nb")["status"] == "ok"
    cell = f"%goenhance run {inp} --style 2000 -d 3 -r 540p --wait"
    ids = [k.start(cell) for k in ks]  # both at once
    outs = [k.collect(i, timeout=120) for k, i in zip(ks, ids, strict=True)]
    for msgs in outs:
        text = output_text(msgs)
        assert "goenhance-video" in text, text
        assert not [m for m in msgs if m["msg_type"] == "error"], text
    assert sim.generate_calls() == 1
    s = make_session(sim, cache)
    try:
        assert len(assert_cache_sound(s)) == 1
    finally:
        s.close()
