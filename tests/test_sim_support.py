"""Helpers shared by the simulator tests (no tests here).

Everything talks to a real simulator process over loopback HTTP.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from simctl import FAST_CONFIG, SimProcess

from goenhance_nb._samples import sample_clip

GUARD_SECONDS = 90.0  # a safety net against hangs, never an assertion about speed
TERMINAL = {"success", "completed", "failed"}


def client(sim: SimProcess, key: str | None = None, **kw: Any) -> httpx.Client:
    """An httpx client on the simulator with a bearer key (the sim's own by default)."""
    headers = {"Authorization": f"Bearer {key or sim.api_key}"}
    return httpx.Client(base_url=sim.base_url, headers=headers, timeout=kw.pop("timeout", 30), **kw)


def upload(http: httpx.Client, data: bytes, filename: str = "clip.mp4") -> str:
    """PUT bytes to /sim/uploads and return the public URL."""
    r = http.put("/sim/uploads", content=data, headers={"X-Filename": filename})
    r.raise_for_status()
    return str(r.json()["url"])


def gen_body(
    url: str,
    *,
    model: int = 2000,
    duration: int = 3,
    resolution: str = "540p",
    seed: int = -1,
    prompt: str | None = None,
) -> dict[str, Any]:
    """A generate body as the API expects it."""
    args: dict[str, Any] = {
        "model": model,
        "reference_video_url": url,
        "duration": duration,
        "resolution": resolution,
        "seed": seed,
    }
    if prompt is not None:
        args["prompt"] = prompt
    return {"type": "mx-v2v", "args": args}


def generate(http: httpx.Client, url: str, **kw: Any) -> dict[str, Any]:
    """POST generate and return the envelope's data (asserting code 0)."""
    r = http.post("/api/v1/video2video/generate", json=gen_body(url, **kw))
    assert r.status_code == 200, r.text
    env = r.json()
    assert env["code"] == 0, env
    return dict(env["data"])


def detail(http: httpx.Client, img_uuid: str) -> dict[str, Any]:
    """The whole jobs/detail envelope."""
    r = http.get("/api/v1/jobs/detail", params={"img_uuid": img_uuid})
    assert r.status_code == 200, r.text
    return dict(r.json())


def wait_for(
    http: httpx.Client,
    img_uuid: str,
    statuses: set[str] | None = None,
    seen: list[str] | None = None,
) -> dict[str, Any]:
    """Poll jobs/detail until the status is in `statuses` (default: terminal); return `data`.
    Every observed status is appended to `seen`."""
    want = statuses or TERMINAL
    deadline = time.monotonic() + GUARD_SECONDS
    while time.monotonic() < deadline:
        env = detail(http, img_uuid)
        assert env["code"] == 0, env
        data = env["data"]
        if seen is not None and (not seen or seen[-1] != data["status"]):
            seen.append(data["status"])
        if data["status"] in want:
            return dict(data)
        time.sleep(0.05)
    pytest.fail(f"job {img_uuid} never reached {want}")


def result_url(data: dict[str, Any]) -> str:
    """The result URL wherever the configured result field put it."""
    if data.get("json"):
        return str(data["json"][0]["value"])
    if data.get("img_url"):
        return str(data["img_url"])
    return str(data["output"]["video_url"])


def credits(http: httpx.Client) -> int:
    """The account's balance."""
    return int(http.get("/api/v1/user/tokens").json()["data"]["count"])


def probe(path: Path) -> dict[str, Any]:
    """Decode a video with PyAV: codec, pix_fmt, size, fps, frame count, duration."""
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        frames = sum(1 for _ in c.decode(vs))
        fps = float(vs.average_rate) if vs.average_rate else 0.0
        return {
            "codec": vs.codec_context.name,
            "pix_fmt": vs.codec_context.pix_fmt,
            "width": vs.codec_context.width,
            "height": vs.codec_context.height,
            "fps": fps,
            "frames": frames,
            "duration": frames / fps if fps else 0.0,
        }


def top_level_atoms(data: bytes) -> list[str]:
    """Names of the top-level ISO-BMFF boxes in order (to check faststart: moov before mdat)."""
    names = []
    i = 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        name = data[i + 4 : i + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[i + 8 : i + 16], "big")
        elif size == 0:
            size = len(data) - i
        names.append(name)
        if size < 8:
            break
        i += size
    return names


@pytest.fixture(scope="session")
def clip_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A 4 s 320x240 24 fps sample clip."""
    return sample_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=4.0).read_bytes()


def fresh(sim: SimProcess, **config: Any) -> None:
    """Full isolation: start config + default balances (DELETE /sim/config), then the fast
    lifecycle (plus `config`); `sim.reset()` itself only patches the fast lifecycle keys."""
    with client(sim) as c:
        c.delete("/sim/config").raise_for_status()
    sim.reset({**FAST_CONFIG, **config})


@pytest.fixture
def http(sim: SimProcess) -> Any:
    """An authenticated client on the shared simulator, with config and balances fresh."""
    fresh(sim, pending_seconds=0.1, processing_seconds=0.1)  # these tests wait for many jobs
    with client(sim) as c:
        yield c
    fresh(sim)


@pytest.fixture
def clip_url(http: httpx.Client, clip_bytes: bytes) -> str:
    """The sample clip uploaded to the simulator (content-addressed, so cheap to repeat)."""
    return upload(http, clip_bytes)


@pytest.fixture
def restore_credits(sim: SimProcess) -> Any:
    """Tests that change balances put the default back afterwards (reset() does not)."""
    yield
    sim.config(credits=5000)


def test_listening_socket_says_tcp_so_asyncio_sets_nodelay() -> None:
    """asyncio enables TCP_NODELAY on accepted connections only when the listening socket's
    proto is IPPROTO_TCP; with proto 0 each keep-alive poll waits ~40 ms for delayed ACKs."""
    import socket

    from goenhance_nb.sim.__main__ import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
