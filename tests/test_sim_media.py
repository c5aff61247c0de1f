# ruff: noqa: F811  (pytest fixtures imported from test_sim_support)
"""The simulator's output videos, decoded with PyAV: H.264, yuv420p, faststart, size, duration;
styles differ measurably (DECISIONS 19); bad sources end the job `failed`."""

from __future__ import annotations

import hashlib
import http.server as http_server
import io
import itertools
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from simctl import SimProcess
from test_sim_support import (  # noqa: F401  (fixtures)
    clip_bytes,
    clip_url,
    credits,
    generate,
    http,
    probe,
    result_url,
    top_level_atoms,
    upload,
    wait_for,
)

from goenhance_nb._samples import sample_clip
from goenhance_nb.sim import media

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("seconds", "duration", "resolution"),
    [
        (4.0, 3, "540p"),  # trimmed to the requested duration
        (4.0, 5, "720p"),  # a shorter source is used whole
    ],
)
def test_output_video_over_http(
    http: httpx.Client, tmp_path: Path, seconds: float, duration: int, resolution: str
) -> None:
    src = sample_clip(tmp_path / "src.mp4", seconds=seconds, width=320, height=240, fps=24)
    url = upload(http, src.read_bytes())
    done = wait_for(
        http, generate(http, url, model=2006, duration=duration, resolution=resolution)["img_uuid"]
    )
    assert done["status"] == "success"
    out = tmp_path / "out.mp4"
    out.write_bytes(httpx.get(result_url(done)).content)
    info = probe(out)
    height = int(resolution[:-1])
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["height"] == height and info["width"] % 2 == 0
    assert info["width"] == round(height * 4 / 3 / 2) * 2  # source aspect ratio kept
    assert info["fps"] == pytest.approx(24, abs=0.01)  # source fps kept
    expected = min(float(duration), seconds)
    assert info["duration"] == pytest.approx(expected, abs=1.5 / 24)
    assert done["json"][0]["duration"] == pytest.approx(expected, abs=1.5 / 24)
    atoms = top_level_atoms(out.read_bytes())
    assert atoms.index("moov") < atoms.index("mdat")  # faststart


def test_high_fps_source_is_capped_at_30(tmp_path: Path) -> None:
    src = sample_clip(tmp_path / "fast.mp4", seconds=1.0, width=160, height=120, fps=60)
    out = tmp_path / "out.mp4"
    dur = media.render_video(src, out, style="pixar", duration=1.0, height=540)
    info = probe(out)
    assert info["fps"] == pytest.approx(30, abs=0.01)
    assert info["frames"] == pytest.approx(30, abs=1)
    assert dur == pytest.approx(1.0, abs=1 / 30)
    assert (info["width"], info["height"]) == (720, 540)


def test_odd_aspect_gives_even_width(tmp_path: Path) -> None:
    src = sample_clip(tmp_path / "odd.mp4", seconds=0.5, width=202, height=100, fps=10)
    out = tmp_path / "out.mp4"
    media.render_video(src, out, style="clay", duration=3.0, height=720)
    info = probe(out)
    assert info["height"] == 720 and info["width"] % 2 == 0
    assert info["width"] == pytest.approx(720 * 202 / 100, abs=2)


def _frames(path: Path, n: int, size: tuple[int, int] | None = None) -> np.ndarray:
    with av.open(str(path)) as c:
        kw = {"width": size[0], "height": size[1]} if size else {}
        return np.stack(
            [
                f.to_ndarray(format="rgb24", **kw).astype(np.int16)
                for f in itertools.islice(c.decode(video=0), n)
            ]
        )


def test_styles_differ_from_the_input_and_from_each_other(tmp_path: Path) -> None:
    """DECISIONS 19: mean absolute pixel difference (0..255) vs the input and pairwise."""
    src = sample_clip(tmp_path / "src.mp4", seconds=1.0)
    outs = {}
    for style in media.STYLES:
        out = tmp_path / f"{style}.mp4"
        media.render_video(src, out, style=style, duration=1.0, height=540)
        outs[style] = _frames(out, 12)
    inp = _frames(src, 12, size=(720, 540))
    assert set(outs) == {"anime", "pixar", "clay", "oil", "watercolor", "cyberpunk", "pencil"}
    for style, frames in outs.items():
        assert float(np.abs(frames - inp).mean()) > 8.0, style
    for a, b in itertools.combinations(outs, 2):
        assert float(np.abs(outs[a] - outs[b]).mean()) > 8.0, (a, b)
    # pencil sketch is grey; cyberpunk pushes towards magenta/cyan (little green in highlights)
    pencil = outs["pencil"]
    assert float(np.abs(pencil[..., 0] - pencil[..., 1]).mean()) < 3.0
    assert float(np.abs(outs["cyberpunk"][..., 0] - outs["cyberpunk"][..., 1]).mean()) > 20.0


def test_every_model_renders_over_http(http: httpx.Client) -> None:
    models = [
        m["value"]
        for c in http.get("/api/v1/video2video/modellist").json()["data"]
        for m in c["list"]
    ]
    clip = sample_clip(seconds=1.0, width=160, height=120, fps=12)
    url = upload(http, clip.read_bytes())
    jobs = [generate(http, url, model=m, duration=3)["img_uuid"] for m in models]
    hashes = set()
    for job in jobs:
        done = wait_for(http, job)
        assert done["status"] == "success", done
        hashes.add(hashlib.sha256(httpx.get(result_url(done)).content).hexdigest())
    assert len(hashes) == len(models)


def test_previews_are_jpegs_of_the_styled_test_frame(http: httpx.Client, sim: SimProcess) -> None:
    cats = http.get("/api/v1/video2video/modellist").json()["data"]
    images = {}
    for m in (m for c in cats for m in c["list"]):
        r = httpx.get(m["url"])
        assert r.status_code == 200
        with av.open(io.BytesIO(r.content)) as c:
            frame = next(c.decode(video=0))
        assert (frame.width, frame.height) == (320, 180)
        images[m["value"]] = frame.to_ndarray(format="rgb24").astype(np.int16)
    for a, b in itertools.combinations(images, 2):
        assert float(np.abs(images[a] - images[b]).mean()) > 5.0, (a, b)
    assert (
        httpx.get(cats[0]["list"][0]["url"]).content == httpx.get(cats[0]["list"][0]["url"]).content
    )


# -- bad sources -------------------------------------------------------------------------------
def test_undecodable_source_fails_the_job_and_keeps_the_source(http: httpx.Client) -> None:
    junk = b"this is not a video at all" * 200
    url = upload(http, junk, "junk.mp4")
    before = credits(http)
    failed = wait_for(http, generate(http, url)["img_uuid"])
    assert failed["status"] == "failed" and failed["json"] is None
    assert credits(http) == before  # refunded (refund_on_failure default)
    assert httpx.get(url).content == junk


def test_unreachable_source_fails_the_job(http: httpx.Client) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    failed = wait_for(http, generate(http, f"http://127.0.0.1:{port}/x.mp4")["img_uuid"])
    assert failed["status"] == "failed"


def test_missing_own_file_fails_the_job(http: httpx.Client, sim: SimProcess) -> None:
    failed = wait_for(http, generate(http, f"{sim.base_url}/sim/files/{'0' * 64}.mp4")["img_uuid"])
    assert failed["status"] == "failed"


@pytest.fixture
def other_host(tmp_path: Path) -> Iterator[str]:
    """A plain http.server on another loopback port serving tmp_path."""
    handler = lambda *a, **kw: http_server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tmp_path), **kw
    )
    server = http_server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_source_fetched_from_another_loopback_host(
    http: httpx.Client, other_host: str, tmp_path: Path
) -> None:
    sample_clip(tmp_path / "remote.mp4", seconds=1.0, width=160, height=120, fps=12)
    done = wait_for(http, generate(http, f"{other_host}/remote.mp4")["img_uuid"])
    assert done["status"] == "success"
    missing = wait_for(http, generate(http, f"{other_host}/nope.mp4")["img_uuid"])
    assert missing["status"] == "failed"
