"""RetryTransport and RateLimiter rules, with precise httpx failure types.

The retry transport under test is real; only the innermost transport is an
``httpx.MockTransport`` here, because these tests need exact exception classes (a connect error
versus a read timeout) that a live server cannot produce on demand. The same rules are checked
end to end against the simulator in test_client.py.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Callable

import httpx
import pytest

from goenhance_nb._transport import RateLimiter, RetryTransport, parse_retry_after

API = "http://127.0.0.1:9/api/v1/jobs/detail"
GENERATE = "http://127.0.0.1:9/api/v1/video2video/generate"
OK = {"code": 0, "msg": "Success", "data": {}}


class Recorder:
    """Async sleep stand-in that records the delays instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def script(*steps: object) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    """A handler that plays ``steps`` in order: an int status, a Response, or an exception."""
    seen: list[httpx.Request] = []
    queue = list(steps)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return step
        return httpx.Response(int(step), json=OK if step == 200 else {"code": step, "msg": "x"})  # type: ignore[call-overload]

    return handler, seen


def send(
    steps: tuple, method: str = "GET", url: str = API, **kw: object
) -> tuple[httpx.Response | Exception, list[httpx.Request], Recorder]:
    handler, seen = script(*steps)
    rec = Recorder()
    transport = RetryTransport(
        httpx.MockTransport(handler),
        max_retries=kw.pop("max_retries", 3),  # type: ignore[arg-type]
        backoff_base=0.01,
        sleep=rec,
        **kw,
    )  # type: ignore[arg-type]

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=transport) as client:
            return await client.request(method, url, json={"a": 1} if method == "POST" else None)

    try:
        result: httpx.Response | Exception = asyncio.run(go())
    except Exception as exc:
        result = exc
    return result, seen, rec


def req_for(url: str) -> httpx.Request:
    return httpx.Request("GET", url)


# -- GET / idempotent ------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429])
def test_get_retried_on_5xx_and_429(status: int) -> None:
    result, seen, rec = send((status, 200))
    assert isinstance(result, httpx.Response) and result.status_code == 200
    assert len(seen) == 2 and len(rec.delays) == 1


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("reset"),
        httpx.ReadError("reset"),
    ],
)
def test_get_retried_on_transport_errors(exc: Exception) -> None:
    result, seen, _ = send((exc, 200))
    assert isinstance(result, httpx.Response) and result.status_code == 200
    assert len(seen) == 2


@pytest.mark.parametrize("status", [401, 403, 404, 400])
def test_get_never_retried_on_4xx(status: int) -> None:
    result, seen, rec = send((status, 200))
    assert isinstance(result, httpx.Response) and result.status_code == status
    assert len(seen) == 1 and rec.delays == []


def test_get_gives_up_after_max_retries() -> None:
    result, seen, rec = send((500,), max_retries=2)
    assert isinstance(result, httpx.Response) and result.status_code == 500
    assert len(seen) == 3 and len(rec.delays) == 2


def test_get_transport_error_raised_after_max_retries() -> None:
    result, seen, _ = send((httpx.ConnectError("refused"),), max_retries=2)
    assert isinstance(result, httpx.ConnectError) and len(seen) == 3


def test_malformed_json_on_api_get_is_retried() -> None:
    bad = httpx.Response(
        200, content=b'{"code": 0, "data": {', headers={"content-type": "application/json"}
    )
    result, seen, _ = send((bad, 200))
    assert isinstance(result, httpx.Response) and result.json() == OK and len(seen) == 2


def test_malformed_json_returned_when_retries_run_out() -> None:
    bad = httpx.Response(200, content=b'{"code": 0', headers={"content-type": "application/json"})
    result, seen, _ = send((bad,), max_retries=1)
    assert isinstance(result, httpx.Response) and result.content == b'{"code": 0' and len(seen) == 2


def test_non_api_get_body_not_validated() -> None:
    body = httpx.Response(200, content=b"\x00\x01 not json")
    result, seen, _ = send((body,), url="http://127.0.0.1:9/sim/files/x.mp4")
    assert (
        isinstance(result, httpx.Response)
        and result.content == b"\x00\x01 not json"
        and len(seen) == 1
    )


# -- POST (the paid generate) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ConnectTimeout("no syn-ack"), httpx.PoolTimeout("pool")],
)
def test_post_resent_after_connect_error(exc: Exception) -> None:
    result, seen, _ = send((exc, 200), method="POST", url=GENERATE)
    assert isinstance(result, httpx.Response) and result.status_code == 200 and len(seen) == 2


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("reset"),
        httpx.ReadError("reset"),
        httpx.WriteError("broken pipe"),
        httpx.WriteTimeout("slow write"),
    ],
)
def test_post_not_resent_after_it_may_have_left(exc: Exception) -> None:
    result, seen, rec = send((exc, 200), method="POST", url=GENERATE)
    assert isinstance(result, type(exc)) and len(seen) == 1 and rec.delays == []


@pytest.mark.parametrize("status", [429, 503])
def test_post_resent_after_429_or_503(status: int) -> None:
    result, seen, _ = send((status, 200), method="POST", url=GENERATE)
    assert isinstance(result, httpx.Response) and result.status_code == 200 and len(seen) == 2


@pytest.mark.parametrize("status", [500, 502, 504, 401, 400])
def test_post_not_resent_after_other_statuses(status: int) -> None:
    result, seen, _ = send((status, 200), method="POST", url=GENERATE)
    assert isinstance(result, httpx.Response) and result.status_code == status and len(seen) == 1


def test_post_with_nonzero_code_is_not_retried() -> None:
    rejected = httpx.Response(200, json={"code": 429, "msg": "daily limit exceeded", "data": None})
    result, seen, _ = send((rejected, 200), method="POST", url=GENERATE)
    assert isinstance(result, httpx.Response) and result.json()["code"] == 429 and len(seen) == 1


# -- Retry-After and backoff -------------------------------------------------------------------


def test_retry_after_seconds_honoured() -> None:
    r429 = httpx.Response(429, headers={"Retry-After": "3"}, json={"code": 429, "msg": "x"})
    result, _, rec = send((r429, 200))
    assert isinstance(result, httpx.Response) and result.status_code == 200
    assert rec.delays == [3.0]


def test_retry_after_capped_by_backoff_max() -> None:
    r503 = httpx.Response(503, headers={"Retry-After": "3600"}, json={"code": 503, "msg": "x"})
    _, _, rec = send((r503, 200), backoff_max=7.0)
    assert rec.delays == [7.0]


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    t = RetryTransport(
        httpx.MockTransport(lambda r: httpx.Response(200)), backoff_base=1.0, backoff_max=10.0
    )
    for attempt in range(8):
        expected = min(10.0, 2.0**attempt)
        samples = [t.backoff(attempt) for _ in range(50)]
        assert all(expected * 0.5 <= s <= expected for s in samples)
        assert len(set(samples)) > 1  # jitter
    assert t.backoff(2, retry_after=4.0) == 4.0


# -- rate limiter ------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_rate_limiter_token_bucket() -> None:
    clock = FakeClock()
    lim = RateLimiter(2.0, burst=1, clock=clock)
    assert lim.reserve() == 0.0
    assert lim.reserve() == pytest.approx(0.5)
    assert lim.reserve() == pytest.approx(1.0)
    clock.t += 10  # refills up to the burst only
    assert lim.reserve() == 0.0
    assert lim.reserve() == pytest.approx(0.5)


def test_rate_limiter_burst_and_disabled() -> None:
    clock = FakeClock()
    lim = RateLimiter(5.0, clock=clock)
    assert [lim.reserve() for _ in range(5)] == [0.0] * 5
    assert lim.reserve() == pytest.approx(0.2)
    off = RateLimiter(0, clock=clock)
    assert all(off.reserve() == 0.0 for _ in range(100))


def test_rate_limiter_paces_the_transport() -> None:
    clock = FakeClock()
    rec = Recorder()
    lim = RateLimiter(4.0, burst=1, clock=clock, sleep=rec)
    handler, seen = script(200)
    transport = RetryTransport(httpx.MockTransport(handler), rate_limiter=lim, sleep=rec)

    async def go() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                await client.get(API)

    asyncio.run(go())
    assert len(seen) == 3
    assert rec.delays == [pytest.approx(0.25), pytest.approx(0.5)]


def test_the_paid_post_never_waits_behind_queued_polls() -> None:
    """A freed queue slot waits for the generate POST: it goes at once, and its token is
    borrowed from the requests after it (the average rate holds)."""
    clock = FakeClock()
    lim = RateLimiter(4.0, burst=1, clock=clock)
    assert lim.reserve() == 0.0
    assert lim.reserve() == pytest.approx(0.25)  # a poll waits its turn
    assert lim.reserve(urgent=True) == 0.0  # the POST does not
    assert lim.reserve() == pytest.approx(0.75)  # the next poll pays for it

    rec = Recorder()
    lim = RateLimiter(4.0, burst=1, clock=FakeClock(), sleep=rec)
    handler, seen = script(200, 200, 200)
    transport = RetryTransport(httpx.MockTransport(handler), rate_limiter=lim, sleep=rec)

    async def go() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(API)
            await client.post(GENERATE, json={})
            await client.get(API)

    asyncio.run(go())
    assert len(seen) == 3
    assert rec.delays == [pytest.approx(0.5)]  # only the poll after the POST waited


def test_rate_limiter_paces_api_calls_only() -> None:
    """File transfers (result downloads, uploads) take no token: they never queue a poll or the
    paid POST behind them, and are never delayed themselves."""
    clock = FakeClock()
    rec = Recorder()
    lim = RateLimiter(4.0, burst=1, clock=clock, sleep=rec)
    handler, seen = script(200)
    transport = RetryTransport(httpx.MockTransport(handler), rate_limiter=lim, sleep=rec)

    async def go() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            for _ in range(3):
                await client.get("http://127.0.0.1:9/sim/results/j1.mp4")
            await client.get(API)

    asyncio.run(go())
    assert len(seen) == 4
    assert rec.delays == []
