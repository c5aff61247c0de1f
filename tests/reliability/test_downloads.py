"""Bytes arriving on disk (issue 12 points 3, 7 and 14): input URL fetches that never share a
temp file, results that enter the cache only after a size cap and a probe, a full disk, JSON
answers and input downloads capped as they arrive, and output/upload files that never follow a
symlink. Against the real simulator over loopback (its download fault kinds are in
docs/ARCHITECTURE.md section 1)."""

# ruff: noqa: F811  (fixtures imported from test_widgets are requested by name)

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from test_widgets import comms  # noqa: F401 (fixture)
from workers.support import make_session

from goenhance_nb._errors import (
    CacheError,
    DiskFull,
    GoEnhanceError,
    InputError,
    TooLarge,
    TransportError,
)
from goenhance_nb._keys import hash_file
from goenhance_nb._outputs import outputs_path
from goenhance_nb._samples import sample_clip
from goenhance_nb._session import Session
from goenhance_nb._store import probe_result

WAIT = 120
RESULTS = "/sim/results/"


# -- helpers ------------------------------------------------------------------------------------
def assert_nothing_cached(session: Session, key: str) -> None:
    """No record for ``key``, no file in the store, no temp file left behind."""
    assert session.cache.get(key) is None
    assert [p for p in session.store.root.rglob("*") if p.is_file()] == []
    assert list(session.store.tmp_dir.glob("*.part")) == []


def assert_resumable(session: Session, key: str, job_id: str | None) -> None:
    entry = session.ledger.get(key)
    assert entry is not None and job_id is not None
    assert entry.job_id == job_id and entry.resumable, entry


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


class GatedServer:
    """A loopback HTTP server serving one clip slowly. Each request waits (up to ``gate`` s)
    until a second request has arrived, so two fetches that can overlap do; it records how
    many goenhance_nb fetches were in flight at once."""

    def __init__(self, body: bytes, gate: float = 1.5) -> None:
        self.body = body
        self.gate = gate
        self.cond = threading.Condition()
        self.arrived = 0
        self.in_flight = 0
        self.max_in_flight = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ours = self.headers.get("User-Agent", "").startswith("goenhance-nb")
                with outer.cond:
                    outer.arrived += 1
                    outer.cond.notify_all()
                    outer.cond.wait_for(lambda: outer.arrived >= 2, timeout=outer.gate)
                    if ours:
                        outer.in_flight += 1
                        outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    self.send_header("Content-Length", str(len(outer.body)))
                    self.end_headers()
                    for i in range(0, len(outer.body), 8192):
                        self.wfile.write(outer.body[i : i + 8192])
                        self.wfile.flush()
                        time.sleep(0.01)
                finally:
                    if ours:
                        with outer.cond:
                            outer.in_flight -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/input%20clip.mp4"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gated(clip: Path) -> Iterator[GatedServer]:
    srv = GatedServer(clip.read_bytes())
    yield srv
    srv.close()


def run_at_once(*calls: Any) -> list[Any]:
    """Run each zero-argument callable in its own thread, released together; return results
    (or the exception each raised)."""
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = calls[i]()
        except BaseException as exc:  # reported by the caller's asserts
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    return out


# -- point 3: one input URL fetched twice at once --------------------------------------------
def test_two_threads_fetching_one_input_url_at_once_pay_once(
    sim: Any, session: Session, gated: GatedServer
) -> None:
    def go() -> Any:
        return session.transform(gated.url, 2000, duration=3).result(WAIT)

    first, second = run_at_once(go, go)
    assert not isinstance(first, BaseException), first
    assert not isinstance(second, BaseException), second
    assert first.key == second.key and first.path == second.path
    assert hash_file(first.path) == first.sha
    assert sim.generate_calls() == 1
    assert gated.max_in_flight == 1  # the per-URL lock: one fetch at a time
    assert list(session.store.tmp_dir.glob("src-*")) == []


def test_two_sessions_on_one_cache_dir_fetching_one_url_at_once_pay_once(
    sim: Any, tmp_path: Path, gated: GatedServer
) -> None:
    a = make_session(sim, tmp_path / "cache")
    b = make_session(sim, tmp_path / "cache")  # a second kernel on the same cache dir
    try:
        first, second = run_at_once(
            lambda: a.transform(gated.url, 2000, duration=3).result(WAIT),
            lambda: b.transform(gated.url, 2000, duration=3).result(WAIT),
        )
        assert not isinstance(first, BaseException), first
        assert not isinstance(second, BaseException), second
        assert first.key == second.key and first.sha == second.sha
        assert sim.generate_calls() == 1
        assert gated.max_in_flight == 1
        assert list(a.store.tmp_dir.glob("src-*")) == []
    finally:
        a.close()
        b.close()


# -- point 7: results are probed before they enter the cache -----------------------------------
@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"kind": "html_download"}, "not a video"),
        ({"kind": "zeros_download", "size": 2_000_000}, "not a video"),
    ],
    ids=["html-page-with-200", "2MB-of-zeros"],
)
def test_an_invalid_result_is_refused_never_cached_and_stays_resumable(
    sim: Any, session: Session, clip: Path, fault: dict[str, Any], words: str
) -> None:
    sim.faults({**fault, "path": RESULTS, "times": 10})
    job = session.transform(clip, 2000, duration=3)
    with pytest.raises(CacheError) as err:
        job.result(WAIT)
    text = one_line(err.value)
    assert words in text and f"%goenhance resume {job.id}" in text and "nothing was cached" in text
    assert_nothing_cached(session, job.key)
    assert_resumable(session, job.key, job.id)
    assert len(sim.requests(RESULTS)) == 2  # refused, fetched afresh once, refused: reported
    # the same transformation later: re-attaches to the paid job, fetches a good file
    sim.clear_faults()
    rec = session.transform(clip, 2000, duration=3).result(WAIT)
    assert rec.job_id == job.id and hash_file(rec.path) == rec.sha
    assert probe_result(Path(rec.path), max_duration=3) > 0
    assert sim.generate_calls() == 1


def test_one_bad_download_is_fetched_again_and_the_good_file_cached(
    sim: Any, session: Session, clip: Path
) -> None:
    sim.faults({"kind": "html_download", "path": RESULTS, "times": 1})
    rec = session.transform(clip, 2000, duration=3).result(WAIT)
    assert hash_file(rec.path) == rec.sha and rec.size > 10_000
    assert probe_result(Path(rec.path), max_duration=3) > 0
    assert [d["status"] for d in sim.requests(RESULTS)] == [200, 200]
    assert sim.generate_calls() == 1


def test_a_body_shorter_than_its_content_length_is_never_cached(
    sim: Any, session: Session, clip: Path
) -> None:
    # a server that ignores Range and always stops early: every resume starts again, and fails
    sim.faults({"kind": "short_download", "path": RESULTS, "times": 200, "after_bytes": 20_000})
    job = session.transform(clip, 2000, duration=3)
    with pytest.raises(TransportError) as err:
        job.result(WAIT)
    one_line(err.value)
    assert session.cache.get(job.key) is None
    assert [p for p in session.store.root.rglob("*") if p.is_file()] == []
    assert_resumable(session, job.key, job.id)
    sim.clear_faults()
    rec = session.resume(job.id or "").result(WAIT)
    assert hash_file(rec.path) == rec.sha
    assert probe_result(Path(rec.path), max_duration=3) > 0
    assert sim.generate_calls() == 1


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_an_oversize_result_is_stopped_as_it_arrives(
    sim: Any, tmp_path: Path, clip: Path, declared: bool
) -> None:
    session = make_session(sim, tmp_path / "cache", max_result_mb=1)
    try:
        # 64 MiB of zeros, announced by Content-Length or (switched off) arriving chunked
        fault = {"kind": "oversize_download", "path": RESULTS, "times": 10}
        sim.faults({**fault, "size": 64 * 1024 * 1024, "length": declared})
        job = session.transform(clip, 2000, duration=3)
        with pytest.raises(TooLarge) as err:
            job.result(WAIT)
        text = one_line(err.value)
        assert "max_result_mb=1" in text and f"%goenhance resume {job.id}" in text
        assert job.progress is None or job.progress[0] <= 1_000_000  # stopped at the cap
        assert_nothing_cached(session, job.key)
        assert_resumable(session, job.key, job.id)
        assert sim.generate_calls() == 1
    finally:
        session.close()


def test_the_duration_rule_accepts_shorter_and_refuses_longer_results(tmp_path: Path) -> None:
    five = sample_clip(tmp_path / "five.mp4", seconds=5.0, width=160, height=120, fps=12)
    assert probe_result(five, max_duration=5) == pytest.approx(5.0, abs=0.2)
    assert probe_result(five, max_duration=10) > 0  # the API trims to a shorter source
    assert probe_result(five, max_duration=4.5) > 0  # within the 1 s tolerance
    with pytest.raises(CacheError, match=r"5\.0s long, 3s were requested"):
        probe_result(five, max_duration=3)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(five.read_bytes()[: five.stat().st_size * 2 // 3])
    with pytest.raises(CacheError, match="frames are present"):
        probe_result(cut, max_duration=5)


_EFBIG_WORKER = r"""
import json, resource, signal, sys
from pathlib import Path
from goenhance_nb._errors import GoEnhanceError
from goenhance_nb._session import Session
from goenhance_nb._settings import Settings

cache, base_url, key, clip, limit = sys.argv[1:6]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past the limit fails with EFBIG
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), hard))
s = Session(Settings.resolve(explicit={"api_key": key, "base_url": base_url, "cache_dir": cache,
                                       "poll_interval": 0.05}, env={}))
job = s.transform(Path(clip), 2000, duration=3)
try:
    job.result(120)
    out = {"error": None}
except GoEnhanceError as exc:
    out = {"error": type(exc).__name__, "message": str(exc), "job_id": job.id, "key": job.key}
s.close()
print(json.dumps(out))
"""


def test_a_full_disk_during_the_download_removes_the_part_and_keeps_the_job(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    # A file size limit (RLIMIT_FSIZE with SIGXFSZ ignored) makes writes fail with EFBIG, which
    # is handled like ENOSPC. The limit lets the cache's small databases grow, not the video.
    cache = tmp_path / "cache"
    args = [str(cache), sim.base_url, sim.api_key, str(clip), "400000"]
    proc = subprocess.run(
        [sys.executable, "-c", _EFBIG_WORKER, *args],
        capture_output=True,
        text=True,
        timeout=WAIT,
        env={k: v for k, v in os.environ.items() if not k.startswith("GOENHANCE_")},
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] == "DiskFull", out
    text = out["message"]
    assert "\n" not in text and "disk full" in text
    assert f"%goenhance resume {out['job_id']}" in text
    session = make_session(sim, cache)
    try:
        assert_nothing_cached(session, out["key"])
        assert_resumable(session, out["key"], out["job_id"])
        rec = session.resume(out["job_id"]).result(WAIT)  # space is back: same job, no charge
        assert rec.job_id == out["job_id"] and hash_file(rec.path) == rec.sha
        assert sim.generate_calls() == 1
    finally:
        session.close()


def test_disk_full_tells_what_to_do() -> None:
    from goenhance_nb._display import what_to_do

    assert "%goenhance resume abc" in what_to_do(DiskFull("disk full"), "abc")
    assert "max_result_mb" in what_to_do(TooLarge("too large"), "abc")


# -- point 14: size caps on JSON answers and input downloads -----------------------------------
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_huge_json_answer_is_refused_as_it_arrives(
    sim: Any, session: Session, declared: bool
) -> None:
    sim.faults(
        {
            "kind": "oversize_json",
            "path": "/api/v1/user/tokens",
            "size": 32 * 1024 * 1024,
            "length": declared,
        }
    )
    with pytest.raises(TooLarge) as err:
        session.credits()
    text = one_line(err.value)
    assert "larger than 1 MiB" in text
    assert session.credits().count >= 0  # the next answer is read normally


def test_a_huge_json_answer_to_a_poll_is_never_held_in_memory(sim: Any, session: Session) -> None:
    # GET answers on /api/ are buffered by the transport (to retry a half-read one): that
    # buffer stops at the cap too, so a 64 MiB answer costs about 1 MiB of memory
    import tracemalloc

    sim.faults(
        {"kind": "oversize_json", "path": "/api/v1/user/tokens", "size": 64 << 20, "length": False}
    )
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge):
            session.credits()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak >> 20} MiB"


def test_an_input_url_over_the_cap_is_refused_before_hashing(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    session = make_session(sim, tmp_path / "cache", max_input_mb=0.01)
    try:
        url = httpx.put(
            f"{sim.base_url}/sim/uploads",
            content=clip.read_bytes(),
            headers={"Authorization": f"Bearer {sim.api_key}", "X-Filename": "big.mp4"},
        ).json()["url"]
        with pytest.raises(InputError) as err:
            session.transform(url, 2000, duration=3)
        text = one_line(err.value)
        assert "too large" in text and "max_input_mb" in text
        assert sim.generate_calls() == 0
        assert list(session.store.tmp_dir.iterdir()) == []
    finally:
        session.close()


# -- point 14: files beside the notebook never follow a symlink --------------------------------
def test_output_files_replace_symlinks_and_never_follow_them(tmp_path: Path, clip: Path) -> None:
    nb = tmp_path / "nb"
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.mp4"
    victim.write_bytes(clip.read_bytes())  # same bytes: a symlink to it must not be kept
    result = SimpleNamespace(path=str(clip), key="abcdef1234567890", style_label="Anime Style")
    out_dir = nb / "goenhance_outputs"
    out_dir.mkdir(parents=True)
    dest = out_dir / "anime-style-abcdef12.mp4"
    dest.symlink_to(victim)
    got = outputs_path(result, nb)
    assert got == dest and not dest.is_symlink() and dest.read_bytes() == clip.read_bytes()
    assert victim.read_bytes() == clip.read_bytes()

    dest.unlink()
    dest.symlink_to(outside / "dangling.mp4")  # a dangling symlink at the output name
    outputs_path(result, nb)
    assert not dest.is_symlink() and dest.read_bytes() == clip.read_bytes()
    assert not (outside / "dangling.mp4").exists()
    assert [p.name for p in out_dir.iterdir()] == [dest.name]  # no temp file left


def test_a_panel_upload_never_writes_through_a_planted_symlink(
    sim: Any, session: Session, comms: Any, tmp_path: Path, clip: Path
) -> None:
    from goenhance_nb._panel import Panel

    nb = tmp_path / "nb"
    uploads = nb / "goenhance_uploads"
    uploads.mkdir(parents=True)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    # symlinks planted at the names an upload used to write through, and at the target name
    (uploads / f".my_clip.mp4.{os.getpid()}.part").symlink_to(victim)
    (uploads / "my_clip.mp4").symlink_to(tmp_path / "dangling")
    p = Panel(session, load_previews=False, notebook_dir=nb)
    data = clip.read_bytes()
    p.upload.set_state(
        {
            "value": [
                {
                    "name": "my clip.mp4",
                    "type": "video/mp4",
                    "size": len(data),
                    "content": memoryview(data),
                    "last_modified": 1_700_000_000_000,
                }
            ]
        }
    )
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "dangling").exists()
    local = uploads / "my_clip.mp4"
    assert not local.is_symlink() and local.read_bytes() == data
    assert p.input_path.value == "goenhance_uploads/my_clip.mp4"


def test_errors_from_this_module_are_goenhance_errors() -> None:
    for cls in (DiskFull, TooLarge):
        assert issubclass(cls, GoEnhanceError)
    assert issubclass(DiskFull, CacheError) and issubclass(TooLarge, TransportError)
