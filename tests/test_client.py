"""AsyncClient (and the sync face) against the real simulator over loopback HTTP.

Every endpoint, every documented response shape (the simulator's config switches), each error
type, the retry rules (asserted on the simulator's request log), downloads with Range resume,
truncation and expiry. Retry sleeps are recorded, not slept. ``httpx.MockTransport`` appears only
for shapes the simulator cannot produce (a server that ignores Range, a foreign download host).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from simctl import SimProcess

from goenhance_nb._client import AsyncClient
from goenhance_nb._errors import (
    APIError,
    AuthError,
    ConfigError,
    GoEnhanceError,
    InsufficientCredits,
    InvalidParameters,
    RateLimited,
    ResultExpired,
    TransportError,
)
from goenhance_nb._keys import hash_file
from goenhance_nb._lifecycle import JobState
from goenhance_nb._records import JobDetail, JobSpec
from goenhance_nb._samples import sample_clip
from goenhance_nb._settings import SecretKey, Settings
from goenhance_nb._sync import Client, register_engine_loop, run_sync
from goenhance_nb._transport import RetryTransport

pytestmark = pytest.mark.anyio

GENERATE = "/api/v1/video2video/generate"
DETAIL = "/api/v1/jobs/detail"
MODELS = "/api/v1/video2video/modellist"
TOKENS = "/api/v1/user/tokens"
RESULTS = "/sim/results/"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder:
    """Async sleep stand-in: records retry delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def make_client(
    sim: SimProcess,
    *,
    key: str | None = "default",
    request_timeout: float = 10.0,
    max_retries: int = 3,
    sleep: Recorder | None = None,
    inner: httpx.AsyncBaseTransport | None = None,
) -> AsyncClient:
    api_key = SecretKey(sim.api_key if key == "default" else key) if key else None
    settings = Settings(
        base_url=sim.base_url,
        api_key=api_key,
        request_timeout=request_timeout,
        max_retries=max_retries,
        rate_limit=0,
        poll_interval=0.1,
    )
    transport = RetryTransport(
        inner or httpx.AsyncHTTPTransport(),
        max_retries=max_retries,
        backoff_base=0.01,
        sleep=sleep or Recorder(),
    )
    return AsyncClient(settings, base_url=sim.base_url, api_key=api_key, transport=transport)


@pytest.fixture
async def client(sim: SimProcess) -> AsyncIterator[AsyncClient]:
    c = make_client(sim)
    yield c
    await c.aclose()


def no_secret(exc: BaseException, sim: SimProcess) -> None:
    """What the user sees: one line, no key, no signed query."""
    text = str(exc)
    assert sim.api_key not in text and "sig=" not in text and "exp=" not in text
    assert "\n" not in text
    assert exc._render_traceback_() == [f"{type(exc).__name__}: {text}"]  # type: ignore[attr-defined]


async def wait_state(
    client: AsyncClient, job_id: str, states: set[JobState], deadline_s: float = 60.0
) -> tuple[JobDetail, list[str]]:
    """Poll until the job reaches one of ``states``; return the detail and the raw statuses seen."""
    seen: list[str] = []
    end = time.monotonic() + deadline_s
    while True:
        d = await client.job_detail(job_id)
        if not seen or seen[-1] != d.raw_status:
            seen.append(d.raw_status)
        if d.state in states:
            return d, seen
        if time.monotonic() > end:
            raise AssertionError(f"job {job_id} stuck in {seen}")
        await asyncio.sleep(0.1)


async def wait_log(
    sim: SimProcess, prefix: str, n: int, deadline_s: float = 20.0
) -> list[dict[str, Any]]:
    """The request log for ``prefix`` once it has ``n`` entries (slow requests log late)."""
    end = time.monotonic() + deadline_s
    while True:
        log = sim.requests(prefix)
        if len(log) >= n or time.monotonic() > end:
            return log
        await asyncio.sleep(0.05)


SPEC = JobSpec(model=2000, duration=3, resolution="540p", seed=1)


@pytest.fixture(scope="module")
def clip_url(sim_session: SimProcess) -> str:
    """A small sample clip uploaded to the simulator once per module."""
    clip = sample_clip(seconds=3.0, width=160, height=120, fps=12)

    async def go() -> str:
        c = make_client(sim_session)
        try:
            return await c.sim_upload(clip)
        finally:
            await c.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def done_job(sim_session: SimProcess, clip_url: str) -> str:
    """One finished job, shared by the shape/download tests (rendering is the slow part)."""
    sim_session.reset()

    async def go() -> str:
        c = make_client(sim_session)
        try:
            gr = await c.generate(SPEC, clip_url)
            await wait_state(c, gr.img_uuid, {JobState.DONE, JobState.FAILED})
            return gr.img_uuid
        finally:
            await c.aclose()

    return asyncio.run(go())


# -- endpoints and shapes ------------------------------------------------------------------------


async def test_list_styles(client: AsyncClient, sim: SimProcess) -> None:
    styles = await client.list_styles()
    by_id = {s.id: s for s in styles}
    assert {2000, 2004, 2005, 2006, 2007, 2008, 2012} <= set(by_id)
    assert by_id[2000].label == "Anime Style" and by_id[2000].version == "v5"
    assert by_id[2005].is_vip and not by_id[2000].is_vip
    assert all(s.category for s in styles)
    assert by_id[2006].preview_url and "/sim/previews/2006" in by_id[2006].preview_url
    assert len(by_id) == len(styles)  # flat, one entry per id
    assert [q["method"] for q in sim.requests(MODELS)] == ["GET"]


async def test_credits(client: AsyncClient, sim: SimProcess) -> None:
    c = await client.credits()
    assert c.count == 5000 and c.queue_limit == 3 and c.user_id
    sim.config(credits=1234, queue_limit=2)
    c = await client.credits()
    assert (c.count, c.queue_limit) == (1234, 2)


async def test_full_lifecycle_upload_generate_poll_download(
    client: AsyncClient, sim: SimProcess, tmp_path: Path
) -> None:
    clip = sample_clip(seconds=3.0, width=160, height=120, fps=12)
    url = await client.sim_upload(clip)
    assert url.startswith(sim.base_url + "/sim/files/")
    # the uploaded file is public and identical
    copy = tmp_path / "copy.mp4"
    assert await client.download(url, copy) == clip.stat().st_size
    assert hash_file(copy) == hash_file(clip)

    gr = await client.generate(SPEC, url)
    assert gr.img_uuid and gr.cost == math.ceil(SPEC.duration) * 5  # 540p: 5 credits/s
    assert sim.generate_calls() == 1

    detail, seen = await wait_state(client, gr.img_uuid, {JobState.DONE, JobState.FAILED})
    assert detail.state is JobState.DONE, seen
    assert seen[-1] == "success" and set(seen) <= {"WAITING", "pending", "processing", "success"}
    assert detail.model_id == "2000" and detail.start_time and detail.end_time
    assert detail.result_url and detail.result_url.startswith(sim.base_url + RESULTS)
    assert (
        detail.expires_at is not None
        and time.time() < detail.expires_at <= time.time() + 12 * 3600 + 5
    )
    assert detail.output_duration is not None and detail.output_duration > 0
    assert "raw" not in detail.to_json()

    progress: list[tuple[int, int | None]] = []
    out = tmp_path / "out" / "result.mp4"
    total = await client.download(
        detail.result_url, out, on_progress=lambda d, t: progress.append((d, t))
    )
    assert total == out.stat().st_size > 0
    assert progress[-1] == (total, total)
    assert out.read_bytes()[4:8] == b"ftyp"
    assert client.request_count >= 6


@pytest.mark.parametrize(
    ("switch", "raw"),
    [
        ({"success_status": "completed"}, "completed"),
        ({"result_field": "img_url"}, "success"),
        ({"result_field": "output"}, "success"),
        ({"result_field": "img_url", "success_status": "completed"}, "completed"),
    ],
)
async def test_documented_result_shapes(
    client: AsyncClient,
    sim: SimProcess,
    done_job: str,
    switch: dict[str, str],
    raw: str,
    tmp_path: Path,
) -> None:
    sim.config(**switch)
    d = await client.job_detail(done_job)
    assert d.state is JobState.DONE and d.raw_status == raw
    assert d.result_url and d.result_url.startswith(sim.base_url + RESULTS)
    field = switch.get("result_field", "json")
    if field == "img_url":
        assert d.raw.get("img_url") == d.result_url and not d.raw.get("json")
    elif field == "output":
        assert d.raw["output"]["video_url"] == d.result_url
    # the URL from every shape downloads
    assert await client.download(d.result_url, tmp_path / "r.mp4") > 0


@pytest.mark.parametrize("waiting", ["WAITING", "queued"])
async def test_waiting_status_shown_verbatim(
    client: AsyncClient, sim: SimProcess, waiting: str
) -> None:
    # One slot, a long pending phase: the second job waits. The source URL is unreachable, so
    # both jobs fail fast once they get their slot and do not hold slots for later tests.
    sim.config(queue_limit=1, waiting_status=waiting, pending_seconds=0.5)
    dead = "http://127.0.0.1:9/nothing.mp4"
    a = await client.generate(SPEC, dead)
    b = await client.generate(SPEC, dead)
    da, db = await client.job_detail(a.img_uuid), await client.job_detail(b.img_uuid)
    # (a may itself wait if another test's job still holds the one slot)
    assert da.raw_status in ("pending", waiting) and da.state is JobState.QUEUED
    assert db.raw_status == waiting and db.state is JobState.QUEUED
    # let both finish (failed: unreachable source) so no slot or refund leaks into later tests
    for job in (a, b):
        d, _ = await wait_state(client, job.img_uuid, {JobState.FAILED, JobState.DONE})
        assert d.state is JobState.FAILED


async def test_unknown_status_is_in_flight_even_with_a_url(
    client: AsyncClient, sim: SimProcess, done_job: str
) -> None:
    sim.faults({"kind": "unknown_status", "status": "rendering-frames", "path": DETAIL, "times": 1})
    d = await client.job_detail(done_job)
    assert d.raw_status == "rendering-frames" and d.state is JobState.RUNNING
    d = await client.job_detail(done_job)
    assert d.raw_status == "success" and d.state is JobState.DONE


async def test_failed_job(client: AsyncClient, sim: SimProcess, clip_url: str) -> None:
    sim.faults({"kind": "job_failed", "path": GENERATE})
    gr = await client.generate(SPEC, clip_url)
    d, _ = await wait_state(client, gr.img_uuid, {JobState.DONE, JobState.FAILED})
    assert d.state is JobState.FAILED and d.raw_status == "failed" and d.result_url is None


# -- errors ----------------------------------------------------------------------------------------


async def test_wrong_key_is_auth_error_and_not_retried(sim: SimProcess) -> None:
    c = make_client(sim, key="sk-WRONG-123")
    try:
        with pytest.raises(AuthError) as info:
            await c.list_styles()
    finally:
        await c.aclose()
    no_secret(info.value, sim)
    assert "sk-WRONG-123" not in str(info.value) and "401" in str(info.value)
    assert [q["status"] for q in sim.requests(MODELS)] == [401]


async def test_missing_key_is_auth_error(sim: SimProcess) -> None:
    c = make_client(sim, key=None)
    try:
        with pytest.raises(AuthError, match="no API key"):
            await c.credits()
    finally:
        await c.aclose()


async def test_insufficient_credits(client: AsyncClient, sim: SimProcess, clip_url: str) -> None:
    sim.config(credits=0)
    # a big job, so a refund landing from another test's failed job cannot cover it
    big = JobSpec(model=2005, duration=30, resolution="720p")
    with pytest.raises(InsufficientCredits) as info:
        await client.generate(big, clip_url)
    assert info.value.code == 402 and "insufficient credits" in str(info.value)
    no_secret(info.value, sim)
    assert sim.generate_calls() == 1


@pytest.mark.parametrize(
    ("spec", "text"),
    [
        (JobSpec(model=999999, duration=3, resolution="540p"), "model"),
        (JobSpec(model=2000, duration=99, resolution="540p"), "duration"),
        (JobSpec(model=2000, duration=3, resolution="1080p"), "resolution"),
        (JobSpec(model=2000, duration=3, resolution="540p", prompt="x" * 501), "prompt"),
    ],
)
async def test_invalid_parameters(
    client: AsyncClient, sim: SimProcess, clip_url: str, spec: JobSpec, text: str
) -> None:
    with pytest.raises(InvalidParameters, match=text) as info:
        await client.generate(spec, clip_url)
    assert info.value.code == 400
    assert sim.generate_calls() == 1


async def test_invalid_reference_url(client: AsyncClient, sim: SimProcess) -> None:
    with pytest.raises(InvalidParameters):
        await client.generate(SPEC, "ftp://example.org/a.mp4")


async def test_unknown_job(client: AsyncClient, sim: SimProcess) -> None:
    with pytest.raises(APIError) as info:
        await client.job_detail("00000000-0000-4000-8000-000000000000")
    assert type(info.value) is APIError and info.value.code == 404
    assert "job not found" in str(info.value)
    assert len(sim.requests(DETAIL)) == 1  # an API answer, not retried


async def test_lost_job_fault(client: AsyncClient, sim: SimProcess, done_job: str) -> None:
    sim.faults({"kind": "lost_job", "path": DETAIL})
    with pytest.raises(APIError, match="job not found"):
        await client.job_detail(done_job)


async def test_reject_generate_is_an_error_not_a_retry(
    client: AsyncClient, sim: SimProcess, clip_url: str
) -> None:
    sim.faults(
        {"kind": "reject_generate", "code": 429, "msg": "daily limit exceeded", "path": GENERATE}
    )
    with pytest.raises(RateLimited, match="daily limit exceeded"):
        await client.generate(SPEC, clip_url)
    assert sim.generate_calls() == 1
    sim.faults({"kind": "reject_generate", "code": 1234, "msg": "something odd", "path": GENERATE})
    with pytest.raises(APIError) as info:
        await client.generate(SPEC, clip_url)
    assert type(info.value) is APIError and info.value.code == 1234
    assert sim.generate_calls() == 2


# -- retry rules (asserted on the simulator's request log) ----------------------------------------


async def test_get_retried_after_500(client: AsyncClient, sim: SimProcess) -> None:
    sim.faults({"kind": "http_500", "path": TOKENS})
    c = await client.credits()
    assert c.count == 5000
    assert [q["status"] for q in sim.requests(TOKENS)] == [500, 200]


async def test_get_gives_up_after_max_retries(sim: SimProcess) -> None:
    c = make_client(sim, max_retries=2)
    sim.faults({"kind": "http_500", "path": TOKENS, "times": 10})
    try:
        with pytest.raises(APIError) as info:
            await c.credits()
    finally:
        await c.aclose()
    assert info.value.status == 500
    assert [q["status"] for q in sim.requests(TOKENS)] == [500, 500, 500]


async def test_post_resent_after_503(client: AsyncClient, sim: SimProcess, clip_url: str) -> None:
    sim.faults({"kind": "http_503", "path": GENERATE})
    gr = await client.generate(SPEC, clip_url)
    assert gr.img_uuid
    assert [q["status"] for q in sim.requests(GENERATE)] == [503, 200]  # refused, then one job


async def test_post_resent_after_429_honouring_retry_after(sim: SimProcess, clip_url: str) -> None:
    rec = Recorder()
    c = make_client(sim, sleep=rec)
    sim.faults({"kind": "http_429", "retry_after": 2, "path": GENERATE})
    try:
        await c.generate(SPEC, clip_url)
    finally:
        await c.aclose()
    assert [q["status"] for q in sim.requests(GENERATE)] == [429, 200]
    assert rec.delays == [2.0]


async def test_429_exhausted_is_rate_limited(sim: SimProcess) -> None:
    c = make_client(sim, max_retries=1)
    sim.faults({"kind": "http_429", "retry_after": 7, "path": MODELS, "times": 5})
    try:
        with pytest.raises(RateLimited) as info:
            await c.list_styles()
    finally:
        await c.aclose()
    assert info.value.retry_after == 7.0 and info.value.status == 429
    no_secret(info.value, sim)


@pytest.mark.parametrize("after", [False, True])
async def test_post_not_resent_after_reset(
    client: AsyncClient, sim: SimProcess, clip_url: str, after: bool
) -> None:
    # after=True: the job was created, then the connection dropped (the client cannot know).
    sim.faults({"kind": "reset", "path": GENERATE, "after": after})
    with pytest.raises(TransportError, match="may have been submitted") as info:
        await client.generate(SPEC, clip_url)
    no_secret(info.value, sim)
    assert sim.generate_calls() == 1


async def test_post_not_resent_after_read_timeout(sim: SimProcess, clip_url: str) -> None:
    c = make_client(sim, request_timeout=0.3)
    sim.faults({"kind": "slow", "delay": 1.0, "path": GENERATE})
    try:
        with pytest.raises(TransportError, match="no answer") as info:
            await c.generate(SPEC, clip_url)
    finally:
        await c.aclose()
    no_secret(info.value, sim)
    # A marker request sent after the client gave up: the log is in arrival order and the
    # marker is logged before it is answered, so a re-send, had there been one, is logged
    # before the marker (no fixed wait).
    async with httpx.AsyncClient(
        base_url=sim.base_url, headers={"Authorization": f"Bearer {sim.api_key}"}
    ) as marker:
        (await marker.get(TOKENS)).raise_for_status()
    assert [q["path"] for q in sim.requests("/api/")][-1] == TOKENS  # the marker came last
    assert [q["method"] for q in sim.requests(GENERATE)] == ["POST"]


async def test_get_retried_after_read_timeout_and_reset(sim: SimProcess) -> None:
    c = make_client(sim, request_timeout=0.3)
    sim.faults({"kind": "slow", "delay": 1.0, "path": TOKENS}, {"kind": "reset", "path": MODELS})
    try:
        assert (await c.credits()).count == 5000
        assert len(await c.list_styles()) >= 7
    finally:
        await c.aclose()
    assert len(await wait_log(sim, TOKENS, 2)) == 2
    assert [q["status"] for q in sim.requests(MODELS)][-1] == 200
    assert len(sim.requests(MODELS)) == 2


async def test_malformed_json_retried_for_get(client: AsyncClient, sim: SimProcess) -> None:
    sim.faults({"kind": "malformed_json", "path": TOKENS})
    assert (await client.credits()).count == 5000
    assert len(sim.requests(TOKENS)) == 2


async def test_malformed_json_exhausted_is_transport_error(sim: SimProcess) -> None:
    c = make_client(sim, max_retries=1)
    sim.faults({"kind": "malformed_json", "path": TOKENS, "times": 5})
    try:
        with pytest.raises(TransportError, match="malformed"):
            await c.credits()
    finally:
        await c.aclose()
    assert len(sim.requests(TOKENS)) == 2


async def test_malformed_json_on_generate_not_resent(
    client: AsyncClient, sim: SimProcess, clip_url: str
) -> None:
    sim.faults({"kind": "malformed_json", "path": GENERATE})
    with pytest.raises(TransportError, match="malformed"):
        await client.generate(SPEC, clip_url)
    assert sim.generate_calls() == 1


async def test_connect_error_is_transport_error(sim: SimProcess) -> None:
    # a port nobody listens on: the client retries (connect errors are safe) then gives up
    settings = Settings(
        base_url="http://127.0.0.1:9", api_key=SecretKey("k"), max_retries=1, rate_limit=0
    )
    rec = Recorder()
    c = AsyncClient(
        settings,
        base_url="http://127.0.0.1:9",
        api_key=SecretKey("k"),
        transport=RetryTransport(max_retries=1, backoff_base=0.01, sleep=rec),
    )
    try:
        with pytest.raises(TransportError, match="cannot connect"):
            await c.generate(SPEC, "http://x/a.mp4")
    finally:
        await c.aclose()
    assert len(rec.delays) == 1  # the POST was re-sent once: it never left


# -- downloads ------------------------------------------------------------------------------------


async def _result_url(client: AsyncClient, job: str) -> str:
    d = await client.job_detail(job)
    assert d.result_url
    return d.result_url


async def test_download_resumes_with_range(
    client: AsyncClient, sim: SimProcess, done_job: str, tmp_path: Path
) -> None:
    url = await _result_url(client, done_job)
    full = tmp_path / "full.mp4"
    size = await client.download(url, full)
    part = tmp_path / "part.mp4"
    part.write_bytes(full.read_bytes()[: size // 3])
    sim.clear_requests()
    progress: list[tuple[int, int | None]] = []
    assert (
        await client.download(url, part, on_progress=lambda d, t: progress.append((d, t))) == size
    )
    assert part.read_bytes() == full.read_bytes()
    assert [q["status"] for q in sim.requests(RESULTS)] == [206]
    assert progress[0] == (size // 3, size) and progress[-1] == (size, size)
    # resume=False starts over
    sim.clear_requests()
    assert await client.download(url, part, resume=False) == size
    assert [q["status"] for q in sim.requests(RESULTS)] == [200]
    # already complete: a 416 answer means nothing left to fetch
    sim.clear_requests()
    assert await client.download(url, part) == size
    assert part.read_bytes() == full.read_bytes()


async def test_truncated_download_is_detected_and_resumed(
    client: AsyncClient, sim: SimProcess, done_job: str, tmp_path: Path
) -> None:
    url = await _result_url(client, done_job)
    sim.faults({"kind": "truncated_download", "after_bytes": 1000, "path": RESULTS})
    dest = tmp_path / "r.mp4"
    size = await client.download(url, dest)
    assert dest.stat().st_size == size > 1000
    assert [q["status"] for q in sim.requests(RESULTS)] == [200, 206]
    ref = tmp_path / "ref.mp4"
    await client.download(url, ref)
    assert dest.read_bytes() == ref.read_bytes()


async def test_truncated_download_gives_up(sim: SimProcess, done_job: str, tmp_path: Path) -> None:
    c = make_client(sim, max_retries=2)
    try:
        url = await _result_url(c, done_job)
        sim.faults({"kind": "truncated_download", "after_bytes": 500, "path": RESULTS, "times": 3})
        dest = tmp_path / "r.mp4"
        with pytest.raises(TransportError, match=r"truncated|interrupted") as info:
            await c.download(url, dest)
    finally:
        await c.aclose()
    no_secret(info.value, sim)
    assert 0 < dest.stat().st_size < 10_000_000  # partial file kept for a later resume
    assert len(sim.requests(RESULTS)) == 3


async def test_expired_url_is_result_expired(
    client: AsyncClient, sim: SimProcess, done_job: str, tmp_path: Path
) -> None:
    sim.faults({"kind": "expired_url", "path": DETAIL})
    d = await client.job_detail(done_job)
    assert d.result_url and d.expires_at is not None and d.expires_at < time.time()
    with pytest.raises(ResultExpired) as info:
        await client.download(d.result_url, tmp_path / "x.mp4")
    no_secret(info.value, sim)
    assert "403" in str(info.value)
    assert [q["status"] for q in sim.requests(RESULTS)] == [403]  # not retried


async def test_tampered_or_missing_result_url(
    client: AsyncClient, sim: SimProcess, done_job: str, tmp_path: Path
) -> None:
    url = await _result_url(client, done_job)
    with pytest.raises(ResultExpired):
        await client.download(url.replace("sig=", "sig=00"), tmp_path / "x.mp4")
    with pytest.raises(ResultExpired, match="404"):
        await client.download(sim.base_url + "/sim/files/" + "0" * 64 + ".mp4", tmp_path / "y.mp4")


async def test_download_restarts_when_server_ignores_range(tmp_path: Path) -> None:
    # The simulator always honours Range; a plain host may not (MockTransport: documented variant).
    body = bytes(range(256)) * 40

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body)

    settings = Settings(base_url="http://127.0.0.1:1", rate_limit=0)
    c = AsyncClient(
        settings,
        base_url="http://127.0.0.1:1",
        api_key=None,
        transport=httpx.MockTransport(handler),
    )
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"garbage-prefix")
    assert await c.download("https://cdn.example/f.bin?sig=1", dest) == len(body)
    assert dest.read_bytes() == body
    await c.aclose()


async def test_key_sent_only_to_the_api_origin(tmp_path: Path) -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("authorization")
        return httpx.Response(200, content=b"data")

    key = SecretKey("sk-SENTINEL")
    c = AsyncClient(
        Settings(base_url="https://api.goenhance.ai", api_key=key, rate_limit=0),
        base_url="https://api.goenhance.ai",
        api_key=key,
        transport=httpx.MockTransport(handler),
    )
    await c.download("https://openapi-static.goenhance.ai/x.mp4?q-sign-time=1;2", tmp_path / "a")
    await c.download("https://api.goenhance.ai/files/x.mp4", tmp_path / "b")
    await c.aclose()
    assert seen == {"openapi-static.goenhance.ai": None, "api.goenhance.ai": "Bearer sk-SENTINEL"}
    assert "sk-SENTINEL" not in repr(c)


# -- sync face -----------------------------------------------------------------------------------


def _settings_for(sim: SimProcess) -> Settings:
    return Settings(base_url=sim.base_url, api_key=SecretKey(sim.api_key), rate_limit=0)


def test_sync_client_without_a_loop(sim: SimProcess) -> None:
    c = Client(_settings_for(sim))
    assert any(s.id == 2000 for s in c.styles())
    assert c.credits().count == 5000
    with pytest.raises(APIError, match="job not found"):
        c.job_detail("nope")
    assert sim.api_key not in repr(c)


def test_sync_client_needs_a_base_url() -> None:
    with pytest.raises(ConfigError, match="base URL"):
        Client(Settings())


def test_run_sync_inside_a_running_loop_without_engine(sim: SimProcess) -> None:
    register_engine_loop(None)

    async def cell() -> int:
        # like a notebook cell: a loop runs in this thread, sync code calls the sync face
        return Client(_settings_for(sim)).credits().count

    assert asyncio.run(cell()) == 5000


@pytest.fixture
def engine_loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, name="fake-engine", daemon=True)
    t.start()
    register_engine_loop(loop)
    yield loop
    register_engine_loop(None)
    loop.call_soon_threadsafe(loop.stop)
    t.join(5)
    loop.close()


def test_run_sync_from_another_loop_goes_to_the_engine(
    engine_loop: asyncio.AbstractEventLoop,
) -> None:
    async def where() -> str:
        return threading.current_thread().name

    async def cell() -> str:
        return run_sync(where())

    assert asyncio.run(cell()) == "fake-engine"


REENTRANT_SCRIPT = r"""
import asyncio, json, os, sys, threading
from goenhance_nb import _sync
from goenhance_nb._settings import SecretKey, Settings
from goenhance_nb._sync import Client, register_engine_loop, run_sync

loop = asyncio.new_event_loop()
errors = []
t = threading.Thread(target=loop.run_forever, name="engine", daemon=True)
t.start()
register_engine_loop(loop)
settings = Settings(base_url=os.environ["SIM_URL"], api_key=SecretKey(os.environ["SIM_KEY"]), rate_limit=0)
out = {}
done = threading.Event()

def callback():
    # a sync call on the engine thread (e.g. a widget callback asking for a result)
    try:
        fut = loop.create_future()
        loop.call_later(0.05, fut.set_result, "engine-progressed")
        for _ in range(5):  # busy ready queue around the nested run
            loop.call_soon(lambda: None)
        out["count"] = Client(settings).credits().count
        out["fut"] = run_sync(asyncio.wait_for(fut, 5))   # needs the engine loop itself
        out["thread"] = threading.current_thread().name
    except BaseException as exc:
        out["error"] = repr(exc)
    done.set()

loop.call_soon_threadsafe(callback)
done.wait(30)
# the engine loop must survive and keep serving work afterwards
after = asyncio.run_coroutine_threadsafe(asyncio.sleep(0.01, "alive"), loop).result(10)
out["after"] = after
out["nested"] = id(loop) in _sync._nested
loop.call_soon_threadsafe(loop.stop)
t.join(5)
print(json.dumps(out))
"""


def test_run_sync_reentrant_on_the_engine_thread(sim: SimProcess) -> None:
    # In a subprocess: nest_asyncio patches asyncio process-wide, which must not leak into
    # the other tests. A callback on the engine thread calls the sync face and awaits engine
    # work; nest_asyncio is applied lazily, the call completes, and the loop stays alive.
    import json
    import os
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", REENTRANT_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SIM_URL": sim.base_url, "SIM_KEY": sim.api_key},
    )
    assert proc.returncode == 0, proc.stderr
    assert "Exception in thread" not in proc.stderr and "IndexError" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {
        "count": 5000,
        "fut": "engine-progressed",
        "thread": "engine",
        "after": "alive",
        "nested": True,
    }


ORDINARY_SCRIPT = r"""
import asyncio, json, os, threading
from pathlib import Path
from goenhance_nb import _sync
from goenhance_nb._session import Session
from goenhance_nb._settings import SecretKey, Settings
from goenhance_nb._sync import Client, run_sync

settings = Settings(base_url=os.environ["SIM_URL"], api_key=SecretKey(os.environ["SIM_KEY"]),
                    rate_limit=0, cache_dir=Path(os.environ["CACHE_DIR"]))
out = {"count": Client(settings).credits().count}            # the sync face, main thread
session = Session(settings)
out["styles"] = len(session.styles())                         # through the engine thread
box = {}
t = threading.Thread(target=lambda: box.update(v=run_sync(asyncio.sleep(0, "t"))))
t.start(); t.join(10)                                         # run_sync from a plain thread
out["thread"] = box.get("v")
session.close()
out["nested"] = sorted(_sync._nested)
out["patched"] = hasattr(asyncio, "_nest_patched")
print(json.dumps(out))
"""


def test_nest_asyncio_not_applied_outside_the_reentrant_case(
    sim: SimProcess, tmp_path: Path
) -> None:
    # In a fresh process (the re-entrant case, which some tests reach in this one, patches
    # asyncio process-wide): ordinary sync calls, engine work and run_sync leave it alone.
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "SIM_URL": sim.base_url, "SIM_KEY": sim.api_key}
    env["CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run(
        [sys.executable, "-c", ORDINARY_SCRIPT], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["count"] == 5000 and out["styles"] > 0 and out["thread"] == "t"
    assert out["nested"] == [] and out["patched"] is False


def test_run_sync_propagates_errors_and_timeout() -> None:
    async def boom() -> None:
        raise InvalidParameters(400, "invalid params: x")

    with pytest.raises(InvalidParameters):
        run_sync(boom())
    with pytest.raises(TimeoutError):
        run_sync(asyncio.sleep(5), timeout=0.05)


def test_errors_are_goenhance_errors() -> None:
    assert issubclass(ResultExpired, GoEnhanceError)
    fn: Callable[..., Any] = run_sync
    assert callable(fn)


async def test_httpx_log_lines_carry_no_signed_query(
    client: AsyncClient,
    sim: SimProcess,
    done_job: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level("DEBUG"):
        url = await _result_url(client, done_job)
        await client.download(url, tmp_path / "r.mp4")
    assert "/sim/results/" in caplog.text  # the line is there ...
    assert "sig=" not in caplog.text and "exp=" not in caplog.text  # ... without its signature
    assert sim.api_key not in caplog.text


async def test_post_5xx_warns_the_job_may_exist(
    client: AsyncClient, sim: SimProcess, clip_url: str
) -> None:
    sim.faults({"kind": "http_500", "path": GENERATE})
    with pytest.raises(APIError, match="may have been submitted") as info:
        await client.generate(SPEC, clip_url)
    assert info.value.status == 500
    assert sim.generate_calls() == 1


async def test_documented_real_api_examples(tmp_path: Path) -> None:
    # The real API's TLS host and its documented example bodies (spec §3.2-3.4), which the
    # simulator does not reproduce byte for byte: MockTransport.
    signed = (
        "https://openapi-static.goenhance.ai/user/2025/01/10/0b6f7c1e_0.mp4"
        "?q-sign-algorithm=sha1&q-sign-time=1736496271;1736539471"
    )
    pending = {
        "code": 0,
        "msg": "Success",
        "data": {
            "img_uuid": "0b6f",
            "status": "pending",
            "type": "mx-v2v",
            "job_type": "mx-v2v",
            "model_id": "2000",
            "start_time": "2025-01-10T08:00:00.120Z",
            "json": None,
        },
    }
    done = {
        "code": 0,
        "msg": "Success",
        "data": {
            "img_uuid": "0b6f",
            "status": "success",
            "type": "mx-v2v",
            "job_type": "mx-v2v",
            "model_id": "2000",
            "start_time": "2025-01-10T08:00:00.120Z",
            "end_time": "2025-01-10T08:04:31.870Z",
            "json": [
                {
                    "type": "video",
                    "value": signed,
                    "duration": 5.0,
                    "link_expired_at": "2025-01-10T20:04:31Z",
                }
            ],
        },
    }
    models = {
        "code": 0,
        "msg": "success",
        "data": [
            {
                "label": "Popular",
                "value": "default",
                "list": [
                    {
                        "label": "Anime Style",
                        "value": 2000,
                        "version": "v5",
                        "isVip": False,
                        "url": "https://cdn.goenhance.ai/preview/anime_v5.mp4",
                    },
                    {"label": "Clay Style", "value": 2005, "version": "v5", "isVip": True},
                ],
            },
            {
                "label": "Anime",
                "value": "anime",
                "list": [
                    {"label": "Cute Anime Style", "value": 5, "version": "v1", "isVip": False},
                    {"value": "not-an-id"},
                    {"label": "Anime Style", "value": 2000},
                ],
            },
        ],
    }
    answers = iter([pending, done])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.scheme}://{request.url.host}{request.url.path}")
        if request.url.path.endswith("/modellist"):
            return httpx.Response(200, json=models)
        if request.url.path.endswith("/tokens"):
            return httpx.Response(200, json={"code": 0, "msg": "success", "data": {"count": 4207}})
        return httpx.Response(200, json=next(answers))

    key = SecretKey("sk-docs-example")
    settings = Settings(api_key=key, rate_limit=0)
    assert settings.base_url == "https://api.goenhance.ai" and settings.poll_interval == 5.0
    c = AsyncClient(
        settings, base_url=settings.base_url, api_key=key, transport=httpx.MockTransport(handler)
    )
    styles = await c.list_styles()
    assert [(s.id, s.category, s.is_vip) for s in styles] == [
        (2000, "Popular", False),
        (2005, "Popular", True),
        (5, "Anime", False),
    ]
    assert styles[1].preview_url is None
    credits = await c.credits()
    assert (credits.count, credits.queue_limit, credits.user_id) == (4207, None, None)
    d1 = await c.job_detail("0b6f")
    assert (d1.state, d1.raw_status, d1.result_url) == (JobState.QUEUED, "pending", None)
    d2 = await c.job_detail("0b6f")
    assert d2.state is JobState.DONE and d2.result_url == signed
    assert d2.expires_at == 1736539471.0 and d2.output_duration == 5.0
    await c.aclose()
    assert seen[0] == "https://api.goenhance.ai/api/v1/video2video/modellist"
