"""Issue 15 point 1: a repeat of an input URL revalidates with ONE conditional request.

A loopback server we control (validators on/off, a request log) and the simulator's own
`/sim/files` route. The first run downloads, hashes and probes the input and remembers the
server's validators; a repeat sends one conditional GET, is answered 304 and reuses the
remembered hash and probe; changed bytes at the same URL are a new key and a new job; a server
without validators is downloaded and hashed every time.
"""

from __future__ import annotations

import email.utils
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from workers.support import make_session

from goenhance_nb._errors import InputError
from goenhance_nb._keys import hash_bytes
from goenhance_nb._samples import sample_clip
from goenhance_nb._session import Session

WAIT = 60


class ValidatorServer:
    """Serves one body at ``/v/input.mp4`` with the validators ``mode`` says ("etag",
    "last-modified" or "none"), honours If-None-Match / If-Modified-Since with 304, and logs
    ``(method, status, request headers)`` of goenhance_nb's own requests (the simulator's
    fetch of the source for a new job has another User-Agent and is not logged)."""

    def __init__(self, body: bytes, mode: str) -> None:
        self.mode = mode
        self.delay = 0.0  # seconds before a 200 answer
        self.answers: list[int] = []  # statuses for goenhance_nb's next requests (no body)
        self.log: list[tuple[str, int, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.set_body(body)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body, etag, modified = outer.current()
                headers = {"Content-Type": "video/mp4"}
                if outer.mode == "etag":
                    headers["ETag"] = etag
                if outer.mode == "last-modified":
                    headers["Last-Modified"] = email.utils.formatdate(modified, usegmt=True)
                status = 200
                inm = self.headers.get("If-None-Match")
                ims = self.headers.get("If-Modified-Since")
                if outer.mode == "etag" and inm is not None and inm == etag:
                    status = 304
                elif outer.mode == "last-modified" and ims is not None:
                    since = email.utils.parsedate_to_datetime(ims).timestamp()
                    status = 304 if int(modified) <= since else 200
                ours = self.headers.get("User-Agent", "").startswith("goenhance-nb")
                with outer.lock:
                    if ours and outer.answers:
                        status = outer.answers.pop(0)
                if status == 200 and outer.delay:
                    time.sleep(outer.delay)
                if self.headers.get("User-Agent", "").startswith("goenhance-nb"):
                    with outer.lock:
                        outer.log.append(("GET", status, dict(self.headers.items())))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if status == 200:
                    self.send_header("Content-Length", str(len(body)))
                elif status != 304:
                    self.send_header("Content-Length", "0")
                self.end_headers()
                if status == 200:
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        # a query string, as a signed bucket URL has: it must never appear in a message
        port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{port}/v/input.mp4?X-Amz-Signature=secret123"

    def set_body(self, body: bytes) -> None:
        with self.lock:
            self.body = body
            self.etag = f'"{hash_bytes(body)[:16]}"'
            # an hour old: well before the Date of any answer, so a usable validator
            self.modified = time.time() - 3600 + len(getattr(self, "log", []))

    def current(self) -> tuple[bytes, str, float]:
        with self.lock:
            return self.body, self.etag, self.modified

    def requests(self) -> list[tuple[str, int, dict[str, str]]]:
        with self.lock:
            return list(self.log)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def other_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another valid clip (other bytes) to put behind the same URL."""
    return sample_clip(tmp_path_factory.mktemp("clips2") / "other.mp4", seconds=3.0, seed=7)


def _server(request: pytest.FixtureRequest, clip: Path, mode: str) -> ValidatorServer:
    srv = ValidatorServer(clip.read_bytes(), mode)
    request.addfinalizer(srv.close)
    return srv


@pytest.mark.parametrize("mode", ["etag", "last-modified"])
def test_repeat_sends_one_conditional_request_and_no_download(
    mode: str, request: pytest.FixtureRequest, sim: Any, session: Session, clip: Path
) -> None:
    srv = _server(request, clip, mode)
    first = session.transform(srv.url, 2000, duration=3).result(WAIT)
    assert [(m, s) for m, s, _ in srv.requests()] == [("GET", 200)]
    reads_before = session.client.request_count

    again = session.transform(srv.url, 2000, duration=3)
    assert again.done() and again.cached  # served at once: no engine round trip
    assert again.result(0).key == first.key
    log = srv.requests()[1:]
    assert [(m, s) for m, s, _ in log] == [("GET", 304)]  # ONE request, no body
    sent = log[0][2]
    if mode == "etag":
        assert sent["If-None-Match"] == srv.current()[1]
    else:
        assert "If-Modified-Since" in sent
    assert session.client.request_count == reads_before + 1
    assert sim.generate_calls() == 1
    assert list(session.store.tmp_dir.glob("src-*")) == []
    # the stored row names the URL only by its hash
    keys = [k for k in session.cache._meta.iterkeys() if str(k).startswith("src-url:")]
    stored = repr(keys) + repr([session.cache._meta.get(k) for k in keys])
    assert keys and "secret123" not in stored and "127.0.0.1" not in stored


def test_a_repeat_answered_304_writes_nothing_to_disk(
    request: pytest.FixtureRequest, sim: Any, session: Session, clip: Path
) -> None:
    # (a temp file made and deleted for nothing costs a network-filesystem cache dir far more
    # than the request itself)
    srv = _server(request, clip, "etag")
    session.transform(srv.url, 2000, duration=3).result(WAIT)
    tmp = session.store.tmp_dir
    before = tmp.stat().st_mtime_ns
    time.sleep(0.05)  # past the file system's timestamp granularity
    assert session.transform(srv.url, 2000, duration=3).cached
    assert [s for _, s, _ in srv.requests()] == [200, 304]
    assert tmp.stat().st_mtime_ns == before  # no file made in it, none deleted


def test_changed_bytes_at_the_same_url_are_a_new_transformation(
    request: pytest.FixtureRequest, sim: Any, session: Session, clip: Path, other_clip: Path
) -> None:
    srv = _server(request, clip, "etag")
    first = session.transform(srv.url, 2000, duration=3).result(WAIT)
    srv.set_body(other_clip.read_bytes())
    second_job = session.transform(srv.url, 2000, duration=3)
    second = second_job.result(WAIT)
    assert not second_job.cached
    assert second.key != first.key
    assert second_job.input.content_hash == hash_bytes(other_clip.read_bytes())
    assert sim.generate_calls() == 2  # a new job, never a stale hit
    # the conditional GET was answered 200 with the new body: still one request for it
    assert [s for _, s, _ in srv.requests()] == [200, 200]
    # and the new validators are remembered: the next repeat is a 304 hit on the new key
    third = session.transform(srv.url, 2000, duration=3)
    assert third.done() and third.cached and third.key == second.key
    assert [s for _, s, _ in srv.requests()] == [200, 200, 304]


def test_a_server_without_validators_is_downloaded_and_hashed_each_time(
    request: pytest.FixtureRequest, sim: Any, session: Session, clip: Path
) -> None:
    srv = _server(request, clip, "none")
    first = session.transform(srv.url, 2000, duration=3).result(WAIT)
    again = session.transform(srv.url, 2000, duration=3).result(WAIT)
    assert again.key == first.key and sim.generate_calls() == 1
    log = srv.requests()
    assert [s for _, s, _ in log] == [200, 200]
    assert not any("If-None-Match" in h or "If-Modified-Since" in h for _, _, h in log)


def test_a_fresh_last_modified_alone_is_not_trusted(
    request: pytest.FixtureRequest, sim: Any, session: Session, clip: Path
) -> None:
    # Last-Modified equal to the answer's Date: the bytes may change again within that second
    srv = _server(request, clip, "last-modified")
    with srv.lock:
        srv.modified = time.time()
    session.transform(srv.url, 2000, duration=3).result(WAIT)
    session.transform(srv.url, 2000, duration=3).result(WAIT)
    assert [s for _, s, _ in srv.requests()] == [200, 200]


def test_simulator_files_revalidate_with_one_304(
    sim: Any, session: Session, clip: Path, tmp_path: Path
) -> None:
    url = httpx.put(
        f"{sim.base_url}/sim/uploads",
        content=clip.read_bytes(),
        headers={"Authorization": f"Bearer {sim.api_key}", "X-Filename": "c.mp4"},
    ).json()["url"]
    first = session.transform(url, 2000, duration=3).result(WAIT)
    sim.clear_requests()
    again = session.transform(url, 2000, duration=3)
    assert again.done() and again.cached and again.key == first.key
    got = [(r["method"], r["status"]) for r in sim.requests("/sim/files/")]
    assert got == [("GET", 304)]
    assert sim.requests("/api/v1/video2video/generate") == []
    # a 304 leaves its connection open for the next repeat (no new TCP connection each time)
    for _ in range(2):
        assert session.transform(url, 2000, duration=3).cached
    conns = {r["conn"] for r in sim.requests("/sim/files/")}
    assert len(conns) == 1, sim.requests("/sim/files/")


def test_simulator_files_send_validators_and_honour_conditions(sim: Any, clip: Path) -> None:
    url = httpx.put(
        f"{sim.base_url}/sim/uploads",
        content=clip.read_bytes(),
        headers={"Authorization": f"Bearer {sim.api_key}", "X-Filename": "c.mp4"},
    ).json()["url"]
    full = httpx.get(url)
    assert full.status_code == 200 and full.content == clip.read_bytes()
    etag, modified = full.headers["etag"], full.headers["last-modified"]
    assert etag.startswith('"') and modified.endswith("GMT")
    r = httpx.get(url, headers={"If-None-Match": etag})
    assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    assert httpx.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    assert httpx.get(url, headers={"If-Modified-Since": modified}).status_code == 304
    old = email.utils.formatdate(0, usegmt=True)
    assert httpx.get(url, headers={"If-Modified-Since": old}).status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
    both = {"If-None-Match": '"other"', "If-Modified-Since": modified}
    assert httpx.get(url, headers=both).status_code == 200
    assert httpx.head(url, headers={"If-None-Match": etag}).status_code == 304


@pytest.fixture
def two_sessions(sim: Any, tmp_path: Path) -> Iterator[tuple[Session, Session]]:
    a = make_session(sim, tmp_path / "cache")
    b = make_session(sim, tmp_path / "cache")
    yield a, b
    a.close()
    b.close()


def test_the_memo_is_shared_by_sessions_on_one_cache_dir(
    request: pytest.FixtureRequest,
    sim: Any,
    two_sessions: tuple[Session, Session],
    clip: Path,
) -> None:
    srv = _server(request, clip, "etag")
    a, b = two_sessions
    first = a.transform(srv.url, 2000, duration=3).result(WAIT)
    again = b.transform(srv.url, 2000, duration=3)  # another kernel, same cache dir
    assert again.done() and again.key == first.key
    assert [s for _, s, _ in srv.requests()] == [200, 304]


def test_two_kernels_fetching_one_new_url_at_once_download_it_once(
    request: pytest.FixtureRequest,
    sim: Any,
    two_sessions: tuple[Session, Session],
    clip: Path,
) -> None:
    srv = _server(request, clip, "etag")
    srv.delay = 1.0  # the first download is slow: the second kernel asks meanwhile
    a, b = two_sessions
    refs: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda s=s, n=n: refs.__setitem__(n, s.inspect(srv.url)))
        for n, s in (("a", a), ("b", b))
    ]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join(WAIT)
    assert refs["a"].content_hash == refs["b"].content_hash == hash_bytes(clip.read_bytes())
    # the second waited for the first, then revalidated what it remembered: one download
    assert [s for _, s, _ in srv.requests()] == [200, 304]


def test_a_revalidation_without_an_answer_falls_back_to_the_full_fetch(
    request: pytest.FixtureRequest, sim: Any, session: Session, clip: Path
) -> None:
    srv = _server(request, clip, "etag")
    first = session.transform(srv.url, 2000, duration=3).result(WAIT)
    srv.answers = [503]  # the quick revalidation gets no usable answer
    again = session.transform(srv.url, 2000, duration=3)
    assert again.done() and again.cached and again.key == first.key
    # then the engine's fetch (with its transport's retries) asks again: still no download
    assert [s for _, s, _ in srv.requests()] == [200, 503, 304]
    assert sim.generate_calls() == 1


def test_a_changed_input_over_the_cap_is_refused_when_revalidated(
    request: pytest.FixtureRequest, sim: Any, tmp_path: Path, clip: Path
) -> None:
    srv = _server(request, clip, "etag")
    small = make_session(sim, tmp_path / "cache", max_input_mb=0.5)
    request.addfinalizer(small.close)
    small.transform(srv.url, 2000, duration=3).result(WAIT)
    srv.set_body(b"\0" * 600_000)  # changed, and over the 0.5 MB cap
    with pytest.raises(InputError, match="too large"):
        small.transform(srv.url, 2000, duration=3)
    assert [s for _, s, _ in srv.requests()] == [200, 200]  # refused, not retried
    assert sim.generate_calls() == 1
    assert list(small.store.tmp_dir.glob("src-*")) == []
