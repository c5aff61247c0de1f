"""Session: synchronous validation with no HTTP, styles TTL cache, uploads, URL inputs,
module-level functions, and the embedded simulator default."""

from __future__ import annotations

import json
import os
import signal
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from workers.support import make_session

import goenhance_nb
from goenhance_nb._errors import InputError
from goenhance_nb._keys import hash_file
from goenhance_nb._session import Session, _set_session
from goenhance_nb._settings import Settings
from goenhance_nb._simproc import sim_paths


def test_styles_are_cached_on_disk_with_a_ttl(sim: Any, session: Session, tmp_path: Path) -> None:
    first = session.styles()
    assert {s.id for s in first} >= {2000, 2004, 2005, 2006, 2007, 2008, 2012}
    assert len(sim.requests("/api/v1/video2video/modellist")) == 1
    assert session.styles() == first
    other = make_session(sim, tmp_path / "cache")  # another kernel, same cache dir
    try:
        assert other.styles() == first
    finally:
        other.close()
    assert len(sim.requests("/api/v1/video2video/modellist")) == 1
    session.styles(refresh=True)
    assert len(sim.requests("/api/v1/video2video/modellist")) == 2


def test_style_by_label_or_id(session: Session) -> None:
    assert session.resolve_style("oil painting").id == 2006
    assert session.resolve_style("2006").label == "Oil Painting"
    assert session.resolve_style(2005).is_vip
    with pytest.raises(InputError, match="unknown style 'Vaporwave'"):
        session.resolve_style("Vaporwave")


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ("clip", {"duration": 2}, "between 3 and 30"),
        ("clip", {"resolution": "4k"}, "resolution"),
        ("clip", {"prompt": "p" * 501}, "limit is 500"),
        ("missing", {}, "not found"),
        ("text", {}, "as a video"),
        ("clip", {"timeout": -1}, "timeout"),
    ],
)
def test_bad_input_raises_in_transform_with_no_http_call(
    sim: Any,
    session: Session,
    clip: Path,
    tmp_path: Path,
    source: str,
    kwargs: dict[str, Any],
    message: str,
) -> None:
    paths = {"clip": clip, "missing": tmp_path / "nope.mp4", "text": tmp_path / "t.mp4"}
    paths["text"].write_text("hello")
    with pytest.raises(InputError, match=message):
        session.transform(paths[source], 2000, **{"duration": 3, **kwargs})
    assert sim.requests() == []
    assert session.ledger_entries() == []


def test_unknown_style_raises_before_any_job_call(sim: Any, session: Session, clip: Path) -> None:
    with pytest.raises(InputError, match="unknown style"):
        session.transform(clip, 99999, duration=3)
    assert sim.generate_calls() == 0
    assert {r["path"] for r in sim.requests()} == {"/api/v1/video2video/modellist"}


def test_a_duration_longer_than_the_source_is_refused(
    sim: Any, session: Session, clip: Path
) -> None:
    # issue 17 point 2 (was: only a warning, and the 5 s were charged for a 3 s video)
    with pytest.raises(InputError, match=r"duration 5 is longer than the input clip.mp4 \(3.0 s\)"):
        session.transform(clip, 2000, duration=5)
    assert sim.generate_calls() == 0
    job = session.transform(clip, 2000)  # the default: the input's length
    assert job.spec.duration == 3
    assert hash_file(job.result(60).path) == job.result().sha


def test_real_api_local_file_without_uploader_names_the_options(tmp_path: Path, clip: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 5 s poll floor notice
        settings = Settings.resolve(
            explicit={
                "api_key": "sk-test-not-real",
                "base_url": "https://api.goenhance.invalid",
                "cache_dir": tmp_path / "c",
            },
            env={},
        )
    s = Session(settings)
    try:
        assert s.backend == "api.goenhance.invalid"
        with pytest.raises(InputError) as info:
            s.transform(clip, 2000, duration=3)
        assert "uploader" in str(info.value) and "URL" in str(info.value)
        assert "sk-test" not in str(info.value)
        tiny = Session(settings.with_(max_upload_mb=0.001), uploader=lambda p: "https://x/y.mp4")
        try:
            with pytest.raises(InputError, match="at most"):
                tiny.transform(clip, 2000, duration=3)
        finally:
            tiny.close()
    finally:
        s.close()


def test_local_upload_is_cached_by_content_hash(sim: Any, session: Session, clip: Path) -> None:
    session.transform(clip, 2000, duration=3, seed=1).result(60)
    session.transform(clip, 2004, duration=3, seed=1).result(60)
    assert len([r for r in sim.requests("/sim/uploads") if r["method"] == "PUT"]) == 1


def test_url_input_is_keyed_by_its_content(sim: Any, session: Session, clip: Path) -> None:
    url = session.engine.run(session.client.sim_upload(clip))
    rec = session.transform(url, 2000, duration=3).result(60)
    sim.clear_requests()
    job = session.transform(clip, 2000, duration=3)  # same bytes as a local file
    assert job.result(10).path == rec.path and job.cached
    assert sim.requests() == []


def test_credits_and_jobs(sim: Any, session: Session, clip: Path) -> None:
    before = session.credits().count
    rec = session.transform(clip, 2000, duration=3, resolution="540p").result(60)
    assert session.credits().count == before - 15 == before - (rec.cost or 0)
    (entry,) = session.ledger_entries()
    assert entry.state == "done" and entry.job_id == rec.job_id and entry.cost == 15
    assert session.usage.spent == 15


def test_module_level_functions_use_the_process_session(
    sim_env: dict[str, str], sim: Any, clip: Path
) -> None:
    _set_session(None)
    try:
        sess = goenhance_nb.get_session()
        assert sess is goenhance_nb.get_session()
        assert str(sess.cache_dir) == sim_env["GOENHANCE_CACHE_DIR"]
        assert any(s.id == 2000 for s in goenhance_nb.styles())
        rec = goenhance_nb.transform(clip, "anime style", duration=3).result(60)
        assert goenhance_nb.resume(rec.job_id).result(10).path == rec.path
        assert goenhance_nb.credits().count >= 0
    finally:
        goenhance_nb.get_session().close()
        _set_session(None)


def test_embedded_simulator_is_the_default_without_a_key(tmp_path: Path, clip: Path) -> None:
    cache = tmp_path / "cache"
    settings = Settings.resolve(explicit={"cache_dir": cache, "poll_interval": 0.2}, env={})
    assert settings.api_key is None and settings.base_url is None
    s = Session(settings)
    pid = json.loads(sim_paths(cache)["port_file"].read_text())["pid"]
    try:
        assert s.backend == "simulated" and s.is_simulated
        s.engine.run(s.client.sim_upload(clip))  # the embedded sim answers with its own key
        assert (cache / "sim" / "state").is_dir()
    finally:
        s.close()
        os.kill(pid, signal.SIGTERM)


class _ForwardToSim(httpx.AsyncBaseTransport):
    """Routes API requests for a fake public API host to the simulator on loopback (the seam is
    the transport; everything else is the real client and the real simulator). Like the real
    API, the fake host answers only ``/api/`` paths: its ``/sim/health`` is a 404, so the
    Session's identity probe (DECISIONS 26) finds a real API, not the simulator behind it."""

    def __init__(self, sim_url: str) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._sim = httpx.URL(sim_url)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "api.goenhance.invalid":
            if not request.url.path.startswith("/api/"):
                return httpx.Response(404, json={"code": 404, "msg": "not found", "data": None})
            request.url = request.url.copy_with(
                scheme="http", host=self._sim.host, port=self._sim.port
            )
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_real_api_backend_uses_the_uploader_once_per_content(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    uploaded: list[Path] = []
    sent: list[bytes] = []

    def uploader(path: Path) -> str:
        uploaded.append(path)
        sent.append(path.read_bytes())
        r = httpx.put(
            f"{sim.base_url}/sim/uploads",
            content=path.read_bytes(),
            headers={"Authorization": f"Bearer {sim.api_key}"},
        )
        r.raise_for_status()
        return str(r.json()["url"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 5 s poll floor notice for a public host
        settings = Settings.resolve(
            explicit={
                "api_key": sim.api_key,
                "base_url": "https://api.goenhance.invalid",
                "cache_dir": tmp_path / "c",
            },
            env={},
        )
    s = Session(settings, transport=_ForwardToSim(sim.base_url), uploader=uploader)
    s.engine.poll_interval = 0.05  # injected: the test talks to a simulator behind the seam
    try:
        assert s.backend == "api.goenhance.invalid" and not s.is_simulated
        rec = s.transform(clip, 2000, duration=3).result(60)
        assert rec.backend == "api.goenhance.invalid" and hash_file(rec.path) == rec.sha
        s.transform(clip, 2004, duration=3).result(60)
        # the uploader gets a private copy of the validated bytes, under the same file name
        # (issue 12: the bytes uploaded are the bytes hashed), removed after the upload
        assert [p.name for p in uploaded] == [clip.name] and sent == [clip.read_bytes()]
        assert not uploaded[0].exists()
        assert sim.generate_calls() == 2
        assert len(sim.requests("/sim/uploads")) == 1
    finally:
        s.close()


def test_style_preview_is_fetched_once_and_kept_in_the_cache_dir(
    sim: Any, session: Session, tmp_path: Path
) -> None:
    from dataclasses import replace

    style = session.resolve_style(2006)
    sim.clear_requests()
    path = session.style_preview(style)
    assert path is not None and path.parent == session.cache_dir / "previews"
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # the JPEG the API serves
    assert len(sim.requests("/sim/previews")) == 1
    other = make_session(sim, tmp_path / "cache")  # another kernel, same cache dir: no HTTP
    try:
        assert other.style_preview(style) == path
    finally:
        other.close()
    assert session.style_preview(style) == path
    assert len(sim.requests("/sim/previews")) == 1
    # no preview URL, or one the server lacks: None (a text button), nothing raised
    assert session.style_preview(replace(style, preview_url=None)) is None
    gone = replace(style, id=99, preview_url=str(style.preview_url).rsplit("/", 1)[0] + "/9.jpg")
    assert session.style_preview(gone) is None
    assert list((session.cache_dir / "previews").iterdir()) == [path]
    assert list(session.store.tmp_dir.glob("preview-*")) == []  # no temp file left
    # offline: only a preview already on disk; nothing is sent
    session.set_mode("offline")
    sim.clear_requests()
    assert session.style_preview(style) == path
    assert session.style_preview(replace(style, id=2000, version="v-new")) is None
    assert sim.requests("/sim/previews") == []
