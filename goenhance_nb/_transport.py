"""Retry and rate limiting as an httpx transport (the client cannot tell it is there).

Rules (DECISIONS 15, STYLE 4):

* Idempotent methods (GET, HEAD, PUT, OPTIONS, DELETE) are retried on any transport error
  (connect, timeouts, read/write errors, resets), on HTTP 429 and 5xx, and on an HTTP 200 from
  an ``/api/`` path whose body is not valid JSON. Never on 401 or any other 4xx.
* POST (the paid ``generate``) is re-sent only when it provably never left or was refused before
  work: ``httpx.ConnectError``, ``httpx.ConnectTimeout``, ``httpx.PoolTimeout``, HTTP 429 or 503.
  Never after a read timeout, a write error or a reset mid-request.
* Backoff: ``backoff_base * 2**attempt`` capped at ``backoff_max``, with jitter (x0.5-1.0);
  ``Retry-After`` (seconds or an HTTP date) wins when present, capped at ``backoff_max``.
* Every attempt at an ``/api/`` path first takes a token from the :class:`RateLimiter` (if
  any). File transfers (result and input downloads, simulator uploads) are not API calls and are
  not paced: a long download never delays a poll or the paid POST behind it in the bucket.
  The paid POST is urgent: it never waits behind queued polls (its token is borrowed).

``sleep`` is injectable so tests never wait.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

__all__ = ["RateLimiter", "RetryTransport", "parse_retry_after"]

Sleep = Callable[[float], Coroutine[Any, Any, None]]

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "OPTIONS", "DELETE"})
RETRY_STATUSES_IDEMPOTENT = frozenset({429, 500, 502, 503, 504})
RETRY_STATUSES_POST = frozenset({429, 503})
_POST_SAFE_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or HTTP date); None if absent
    or unparsable. Never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, dt.timestamp() - now)


class RateLimiter:
    """Async token bucket: at most ``rate_per_s`` requests per second, bursts up to ``burst``.

    Lock-free per event loop (the reservation is computed without awaiting) and guarded by a
    thread lock, so one limiter may serve several loops/threads. ``rate_per_s <= 0`` disables it.
    An ``urgent`` request (the paid POST, which a freed queue slot waits for) goes at once and
    its token is borrowed from the requests after it: the average rate holds, a burst may run
    one request over per urgent request.
    """

    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.rate = float(rate_per_s)
        self.capacity = float(burst if burst is not None else max(1.0, self.rate))
        self._tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = threading.Lock()

    def reserve(self, *, urgent: bool = False) -> float:
        """Take one token; return how long the caller must wait before using it (seconds);
        0 for an ``urgent`` caller (the token is borrowed: later callers wait for it)."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 or urgent else -self._tokens / self.rate

    async def acquire(self, *, urgent: bool = False) -> None:
        """Wait until a request may be sent (an ``urgent`` one never waits)."""
        delay = self.reserve(urgent=urgent)
        if delay > 0:
            await self._sleep(delay)


class RetryTransport(httpx.AsyncBaseTransport):
    """Wraps ``inner`` and retries per the module rules; see the module docstring."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        max_retries: int = 4,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        rate_limiter: RateLimiter | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rate_limiter = rate_limiter
        self.sleep = sleep
        self._rng = rng or random.Random()
        self.attempts = 0
        """Requests handed to ``inner`` (all attempts), for tests and usage."""
        self.retries = 0
        """Re-sends made."""

    def backoff(self, attempt: int, retry_after: float | None = None) -> float:
        """Delay before re-send number ``attempt + 1`` (``Retry-After`` wins, capped)."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        base = min(self.backoff_max, self.backoff_base * (2.0**attempt))
        return base * self._rng.uniform(0.5, 1.0)

    def limits(self, path: str) -> bool:
        """Whether the rate limit covers a request for URL ``path`` (an ``/api/`` path while a
        limit is set)."""
        return self.rate_limiter is not None and path.startswith("/api/")

    @staticmethod
    def _may_retry_error(request: httpx.Request, exc: Exception) -> bool:
        if request.method.upper() in IDEMPOTENT_METHODS:
            return isinstance(exc, httpx.TransportError)
        return isinstance(exc, _POST_SAFE_ERRORS)

    @staticmethod
    def _may_retry_status(request: httpx.Request, status: int) -> bool:
        if request.method.upper() in IDEMPOTENT_METHODS:
            return status in RETRY_STATUSES_IDEMPOTENT or 500 <= status < 600
        return status in RETRY_STATUSES_POST

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` through ``inner``, re-sending per the rules."""
        attempt = 0
        while True:
            if self.rate_limiter is not None and self.limits(request.url.path):
                await self.rate_limiter.acquire(urgent=request.method.upper() == "POST")
            self.attempts += 1
            try:
                response = await self.inner.handle_async_request(request)
            except Exception as exc:
                if attempt < self.max_retries and self._may_retry_error(request, exc):
                    await self.sleep(self.backoff(attempt))
                    attempt += 1
                    self.retries += 1
                    continue
                raise
            last = attempt >= self.max_retries
            if not last and self._may_retry_status(request, response.status_code):
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                await response.aclose()
                await self.sleep(self.backoff(attempt, retry_after))
                attempt += 1
                self.retries += 1
                continue
            if (
                response.status_code == 200
                and request.method.upper() == "GET"
                and request.url.path.startswith("/api/")
            ):
                try:
                    response = await _buffer(response)
                    body = response.content
                    ok = len(body) > MAX_ANSWER_BYTES or _is_json(body)  # too large: final
                except httpx.TransportError:
                    if last:
                        raise
                    ok = False
                if not ok and not last:
                    await self.sleep(self.backoff(attempt))
                    attempt += 1
                    self.retries += 1
                    continue
            return response

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self.inner.aclose()


#: The most of one API answer that is read (the client's JSON cap): the transport's buffer
#: stops one byte past it, so a huge answer is never held whole.
MAX_ANSWER_BYTES = 1 << 20


async def _buffer(response: httpx.Response) -> httpx.Response:
    """Read a (small, API) response and return an equivalent buffered response; reading stops
    once it passes :data:`MAX_ANSWER_BYTES` (the answer is returned cut there: the client
    refuses it as too large, and it is not retried)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.stream:  # type: ignore[union-attr]
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                break
    finally:
        await response.aclose()
    raw = b"".join(chunks)
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        content=raw,
        extensions=response.extensions,
    )


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return True
