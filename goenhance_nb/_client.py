"""AsyncClient: the one place that speaks HTTP to the GoEnhance API (or its simulator).

All HTTP and httpx errors are translated here into the :mod:`goenhance_nb._errors` tree
(STYLE 2). Retries and rate limiting live in :class:`~goenhance_nb._transport.RetryTransport`,
which wraps whatever transport is given (pass a ``RetryTransport`` yourself to tune it).

The bearer key is sent only to the configured base URL, never to result/download hosts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import httpx

from goenhance_nb._errors import (
    APIError,
    AuthError,
    CacheError,
    ConfigError,
    DiskFull,
    GoEnhanceError,
    InputError,
    InsufficientCredits,
    InvalidParameters,
    RateLimited,
    ResultExpired,
    TooLarge,
    TransportError,
    redact_url,
)
from goenhance_nb._keys import extract_result
from goenhance_nb._lifecycle import map_status
from goenhance_nb._records import Credits, GenerateResult, JobDetail, JobSpec, Style
from goenhance_nb._settings import SecretKey, Settings
from goenhance_nb._transport import (
    MAX_ANSWER_BYTES,
    RateLimiter,
    RetryTransport,
    parse_retry_after,
)

__all__ = [
    "AsyncClient",
    "URLValidators",
    "classify_envelope_error",
    "generate_may_have_made_a_job",
]

_USER_AGENT = "goenhance-nb/0.1.0"
_GENERATE = "/api/v1/video2video/generate"
_DETAIL = "/api/v1/jobs/detail"
_MODELS = "/api/v1/video2video/modellist"
_TOKENS = "/api/v1/user/tokens"
_UPLOAD = "/sim/uploads"
_SIM_CONTROL = frozenset({"/sim/config", "/sim/faults", "/sim/requests"})
_SIM_HEALTH = "/sim/health"
#: The simulator's identity (docs/ARCHITECTURE.md section 1): a header on every response, and
#: the ``service`` named by ``GET /sim/health``. The real API answers neither.
SIM_IDENTITY_HEADER = "X-GoEnhance-Simulator"
SIM_SERVICE = "goenhance-simulator"
SIM_PROBE_TIMEOUT = 2.0

#: The largest API JSON answer read (the real ones are a few KiB); checked as bytes arrive.
MAX_JSON_BYTES = MAX_ANSWER_BYTES  # an answer longer than this is refused as it arrives
#: ``errno`` values that mean "no room to write" (a full disk, a file size limit, a quota).
_NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})

#: Appended to a failure of the paid POST whose outcome is unknown (DECISIONS 25).
MAYBE_SUBMITTED = (
    " (the job may have been submitted; check %goenhance jobs before submitting again)"
)

ProgressFn = Callable[[int, "int | None"], None]


def classify_envelope_error(
    code: int | None,
    msg: str,
    *,
    status: int | None = None,
    retry_after: float | None = None,
    what: str = "",
) -> APIError:
    """Map a non-zero envelope ``code`` to an error by its ``msg`` (the API documents no codes).

    "credit" -> InsufficientCredits; "param"/"invalid"/"model" -> InvalidParameters;
    "limit"/"rate"/"too many" -> RateLimited; anything else -> APIError. Only ``msg`` is
    classified; ``what`` (e.g. "generate") only prefixes the message.
    """
    m = (msg or "").lower()
    text = f"{what}: {msg}" if what else msg
    if "credit" in m:
        return InsufficientCredits(code, text, status=status)
    if "param" in m or "invalid" in m or re.search(r"\bmodel", m):
        return InvalidParameters(code, text, status=status)
    if re.search(r"\blimit|\brate\b|rate.?limit|too many", m):
        return RateLimited(code, text, status=status, retry_after=retry_after)
    return APIError(code, text, status=status)


def generate_may_have_made_a_job(exc: GoEnhanceError) -> bool:
    """Could the generate POST that raised ``exc`` have created (and charged) a job?

    False only where the server provably made none (DECISIONS 15, 25): a connect error
    (``TransportError.sent is False``), HTTP 401/403, HTTP 429/503 (refused before work, after
    the transport's own retries), or an HTTP 200 envelope with a non-zero ``code``. True for
    everything else after sending: other 5xx (500/502/504), a read timeout or reset, malformed
    JSON, an unexpected status.
    """
    if isinstance(exc, TransportError):
        return exc.sent is not False
    if isinstance(exc, AuthError):
        return False
    if isinstance(exc, APIError):
        return exc.status not in (200, 429, 503)
    return True


@dataclass(frozen=True, slots=True)
class URLValidators:
    """What a server said identifies one version of a URL's bytes (RFC 9110 section 8.8).

    ``etag`` and ``last_modified`` are sent back verbatim in a conditional request;
    ``content_length`` is the size of the 200 body. :attr:`usable` is false when the server
    gave neither validator (then only a fresh download can tell whether the bytes changed).
    """

    etag: str | None = None
    last_modified: str | None = None
    content_length: int | None = None

    @property
    def usable(self) -> bool:
        """True when a conditional request can revalidate these bytes."""
        return bool(self.etag or self.last_modified)

    def conditional_headers(self) -> dict[str, str]:
        """``If-None-Match`` / ``If-Modified-Since`` for a revalidating GET."""
        headers = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers

    @classmethod
    def from_headers(cls, headers: httpx.Headers, content_length: int | None) -> URLValidators:
        """The validators of a 200 answer. A ``Last-Modified`` less than a second older than
        the answer's ``Date`` is dropped (RFC 9110 8.8.2.2: the bytes may change again within
        that second unseen), as is a malformed one."""
        etag = headers.get("etag") or None
        last = headers.get("last-modified") or None
        if last is not None:
            try:
                modified = parsedate_to_datetime(last)
                date = headers.get("date")
                if (
                    date is not None
                    and (parsedate_to_datetime(date) - modified).total_seconds() < 1
                ):
                    last = None
            except (TypeError, ValueError):
                last = None
        return cls(etag=etag, last_modified=last, content_length=content_length)


class _NotModified(Exception):
    """Internal: a conditional GET was answered 304."""


def _int_or_none(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


class _RedactURLs(logging.Filter):
    """Strip query strings (signatures) from URLs in httpx's own log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(redact_url(a) if isinstance(a, httpx.URL) else a for a in args)
        return True


def _install_log_filter() -> None:
    for name in ("httpx", "httpcore"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _RedactURLs) for f in log.filters):
            log.addFilter(_RedactURLs())


_install_log_filter()


class AsyncClient:
    """Async GoEnhance API client.

    :param settings: timeouts, retries and rate limit come from here.
    :param base_url: the API root (``https://api.goenhance.ai`` or a simulator URL).
    :param api_key: sent as ``Authorization: Bearer`` to ``base_url`` only.
    :param transport: the seam for tests; wrapped in a :class:`RetryTransport` unless it already
        is one.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        base_url: str,
        api_key: SecretKey | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        if isinstance(transport, RetryTransport):
            self.transport = transport
        else:
            limit = settings.rate_limit_for(self.base_url)
            self.transport = RetryTransport(
                transport,
                max_retries=settings.max_retries,
                rate_limiter=RateLimiter(limit) if limit > 0 else None,
            )
        self._http = httpx.AsyncClient(
            transport=self.transport,
            timeout=httpx.Timeout(settings.request_timeout),
            headers={"User-Agent": _USER_AGENT},
            follow_redirects=False,
        )
        base = urlsplit(self.base_url)
        self._origin = (base.scheme, base.hostname, base.port)
        self.request_count = 0
        self._sync: httpx.Client | None = None  # revalidate_input's, made when first needed
        self._sync_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={redact_url(self.base_url)!r})"

    # -- plumbing -----------------------------------------------------------------------
    def _auth_headers(self) -> dict[str, str]:
        if self._api_key is None:
            return {}
        return {"Authorization": f"Bearer {self._api_key.reveal()}"}

    def _is_api_origin(self, url: str) -> bool:
        p = urlsplit(url)
        return (p.scheme, p.hostname, p.port) == self._origin

    def _translate_transport_error(
        self, exc: httpx.HTTPError, what: str, *, post: bool
    ) -> TransportError:
        host = redact_url(self.base_url)
        if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
            # never left this machine: nothing was submitted (and nothing charged)
            return TransportError(f"{what}: cannot connect to {host}", sent=False)
        if isinstance(exc, httpx.TimeoutException):
            text = f"{what}: no answer from {host} within {self.settings.request_timeout:g}s"
        elif isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
            text = f"{what}: connection to {host} closed before a complete answer"
        else:
            text = f"{what}: {type(exc).__name__} talking to {host}"
        if post:
            text += MAYBE_SUBMITTED
        return TransportError(text)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
    ) -> Any:
        """Send one API request and return the envelope's ``data``.

        :raises AuthError: HTTP 401/403.
        :raises RateLimited: HTTP 429 (after the transport's retries).
        :raises APIError: other non-200 status, or a non-zero ``code`` (subclass by ``msg``).
        :raises TransportError: no complete answer, or a body that is not a JSON envelope.
        """
        self.request_count += 1
        request = self._build_request(
            method, path, what=what, params=params, json_body=json_body, headers=None
        )
        response = await self._send(request, what, post=method == "POST")
        return self._envelope_data(response, what, post=method == "POST")

    def _build_request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Request:
        """Build one API request (nothing is sent).

        Any exception while building (e.g. ``UnicodeEncodeError`` for a header an HTTP/1.1
        header cannot carry) becomes a :class:`ConfigError` or :class:`TransportError` with
        ``sent=False``, raised outside the ``except`` block: no chained exception and no frame
        local holds the failed value (the Authorization header), even in ``%xmode Verbose``.

        :raises ConfigError: the API key cannot be sent in a header.
        :raises TransportError: another part of the request cannot be built (never sent).
        """
        failure: type[Exception] = Exception
        try:
            return self._http.build_request(
                method,
                self.base_url + path,
                params=params,
                json=json_body,
                content=content,
                headers={**self._auth_headers(), **(headers or {})},
            )
        except Exception as exc:
            failure = type(exc)  # only the type leaves this block: its value may hold the key
        if issubclass(failure, UnicodeError) and self._key_unsendable():
            raise ConfigError(
                f"{what}: the API key contains characters an HTTP header cannot carry; "
                "set the key again (nothing was sent)"
            )
        raise TransportError(
            f"{what}: the request could not be built ({failure.__name__}; nothing was sent)",
            sent=False,
        )

    def _key_unsendable(self) -> bool:
        """True when the key would not encode as an HTTP header value (ASCII, no CR/LF)."""
        if self._api_key is None:
            return False
        value = self._api_key.reveal()
        return not value.isascii() or any(c in value for c in "\r\n\0")

    async def _send(self, request: httpx.Request, what: str, *, post: bool) -> httpx.Response:
        """Send ``request``; translate every failure into our tree (STYLE 2).

        httpx errors go through :meth:`_translate_transport_error`; any other exception (a bug
        or a foreign error below httpx) becomes a :class:`TransportError` whose ``sent`` is
        ``None`` (it may have left), raised outside the ``except`` block (no chain, no locals).

        :raises TransportError: no complete answer.
        """
        failure: GoEnhanceError | None = None
        try:
            streamed = await self._http.send(request, stream=True)
            try:
                body = await _read_capped(streamed, MAX_JSON_BYTES)
            finally:
                await streamed.aclose()
        except GoEnhanceError:
            raise
        except httpx.HTTPError as exc:
            failure = self._translate_transport_error(exc, what, post=post)
        except Exception as exc:
            text = f"{what}: {type(exc).__name__} while talking to {redact_url(self.base_url)}"
            if post:
                text += MAYBE_SUBMITTED
            failure = TransportError(text)
        if failure is not None:
            raise failure
        if body is None:
            text = (
                f"{what}: the answer from {redact_url(self.base_url)} is larger than "
                f"{MAX_JSON_BYTES >> 20} MiB; stopped reading it"
            )
            if post:
                text += MAYBE_SUBMITTED
            raise TooLarge(text)
        headers = [
            (k, v)
            for k, v in streamed.headers.multi_items()
            if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")
        ]
        return httpx.Response(
            streamed.status_code,
            headers=headers,
            content=body,
            request=streamed.request,
            extensions=streamed.extensions,
        )

    def _envelope_data(self, response: httpx.Response, what: str, *, post: bool = False) -> Any:
        status = response.status_code
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            body = None
        env = body if isinstance(body, dict) else None
        code = _int_or_none(env.get("code")) if env else None
        msg = str(env.get("msg") or "") if env else ""
        if status in (401, 403):
            if self._api_key is None:
                raise AuthError(
                    f"{what}: no API key set (HTTP {status}); set GOENHANCE_API_KEY or use %goenhance login"
                )
            raise AuthError(f"{what}: the API rejected the key (HTTP {status})")
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise RateLimited(
                code,
                f"{what}: {msg or 'too many requests'}",
                status=status,
                retry_after=retry_after,
            )
        if status != 200:
            if env and msg:
                err = classify_envelope_error(code, msg, status=status, what=what)
            else:
                err = APIError(
                    None, f"{what}: HTTP {status} {response.reason_phrase}".strip(), status=status
                )
            if post and status >= 500 and status != 503:  # 503 = refused before work
                err.args = (f"{err}{MAYBE_SUBMITTED}",)
            raise err
        if env is None or "code" not in env:
            raise TransportError(
                f"{what}: malformed response (not a JSON envelope) from {redact_url(self.base_url)}"
            )
        if code != 0:
            raise classify_envelope_error(code, msg or "error", status=status, what=what)
        return env.get("data")

    # -- identity -------------------------------------------------------------------------
    async def is_simulator(self, timeout: float = SIM_PROBE_TIMEOUT) -> bool | None:
        """Ask the base URL whether it is the goenhance simulator (DECISIONS 26).

        One ``GET <base>/sim/health``, sent straight to the inner transport (no retries, no
        rate-limit token) **without the API key**: the probe needs no auth, and a server that
        is not ours (a proxy, a gateway, the real API) has no business seeing the key on a path
        the API does not document. True only for HTTP 200 carrying the header
        ``X-GoEnhance-Simulator: 1`` *and* a JSON body ``{"ok": true, "service":
        "goenhance-simulator"}``. Any other answer means "not the simulator", i.e. a real API.
        ``None`` when nothing answered (connection refused, a timeout within ``timeout`` s): the
        caller cannot tell yet and asks again later. Never raises; not counted in
        ``request_count`` (it is not an API call) and never logged by the simulator as one.
        """
        try:
            request = self._http.build_request(
                "GET", self.base_url + _SIM_HEALTH, timeout=httpx.Timeout(timeout)
            )
            return await asyncio.wait_for(self._probe(request), timeout + 0.5)
        except (httpx.TransportError, asyncio.TimeoutError, OSError):
            return None
        except Exception:
            return False

    async def _probe(self, request: httpx.Request) -> bool:
        response = await self.transport.inner.handle_async_request(request)
        try:
            if response.status_code != 200:
                return False
            if response.headers.get(SIM_IDENTITY_HEADER, "").strip() != "1":
                return False
            body = b""
            async for chunk in response.aiter_raw():  # the answer is tiny: read at most 64 KiB
                body += chunk
                if len(body) > 65536:
                    return False
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return False
        finally:
            await response.aclose()
        return (
            isinstance(data, dict)
            and data.get("ok") is True
            and (data.get("service") == SIM_SERVICE)
        )

    # -- API ----------------------------------------------------------------------------
    async def list_styles(self) -> list[Style]:
        """The model (style) list, flattened out of its categories, first occurrence per id.

        Tolerates missing fields (label defaults to ``Style <id>``, version to ``""``) and
        skips entries without an integer id. :raises GoEnhanceError: see ``_call``.
        """
        data = await self._call("GET", _MODELS, what="model list")
        return parse_styles(data)

    async def generate(self, spec: JobSpec, reference_video_url: str) -> GenerateResult:
        """Start a video-to-video job (charges credits). Sent at most once unless refused
        before work (connect error, HTTP 429/503; DECISIONS 15).

        Every error raised here says whether the server may have made (and charged) a job
        anyway: ``exc.job_may_exist`` (DECISIONS 25; see :func:`generate_may_have_made_a_job`).

        :raises InsufficientCredits, InvalidParameters, RateLimited, APIError: API refusals
            (``job_may_exist`` False), or another HTTP status / a success without a job id
            (``job_may_exist`` True).
        :raises AuthError: HTTP 401/403 (no job).
        :raises TransportError: no complete answer; ``sent`` False (connect error: no job) or
            None (the job may exist; never re-sent).
        """
        body = {"type": "mx-v2v", "args": spec.to_args(reference_video_url)}  # before sending
        try:
            data = await self._call("POST", _GENERATE, what="generate", json_body=body)
        except GoEnhanceError as exc:
            exc.job_may_exist = generate_may_have_made_a_job(exc)
            raise
        uuid = data.get("img_uuid") if isinstance(data, dict) else None
        if not isinstance(uuid, str) or not uuid:
            err = APIError(
                0,
                "generate: the answer carried no job id (img_uuid); the job may have been "
                "submitted",
                status=200,
            )
            err.job_may_exist = True
            raise err
        return GenerateResult(img_uuid=uuid, cost=_int_or_none(data.get("cost")))

    async def job_detail(self, img_uuid: str) -> JobDetail:
        """Status of one job; ``state`` normalised by ``map_status``, ``raw_status`` verbatim.

        :raises APIError: unknown job ("job not found") or another refusal.
        :raises GoEnhanceError: see ``_call``.
        """
        data = await self._call(
            "GET", _DETAIL, what=f"job {img_uuid}", params={"img_uuid": img_uuid}
        )
        return parse_job_detail(img_uuid, data, now=time.time())

    async def credits(self) -> Credits:
        """Account balance (``/api/v1/user/tokens``). :raises GoEnhanceError: see ``_call``."""
        data = await self._call("GET", _TOKENS, what="credits")
        if not isinstance(data, dict) or _int_or_none(data.get("count")) is None:
            raise APIError(0, "credits: the answer carried no count", status=200)
        user = data.get("user_id")
        return Credits(
            count=int(data["count"]),
            queue_limit=_int_or_none(data.get("queueLimit")),
            user_id=str(user) if user is not None else None,
        )

    async def sim_upload(self, path: Path) -> str:
        """Upload a local file to the simulator (``PUT /sim/uploads``); return its public URL.

        The file name travels percent-encoded in ``X-Filename`` (the simulator decodes it).

        :raises InputError: the file cannot be read.
        :raises GoEnhanceError: see ``_call`` (a real API answers 404: not a simulator).
        """
        path = Path(path)
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path.name}: {exc.strerror}") from None
        self.request_count += 1
        request = self._build_request(
            "PUT",
            _UPLOAD,
            what="upload",
            content=content,
            headers={
                # percent-encoded: any file name (non-ASCII, even a newline) fits one header
                "X-Filename": quote(path.name, safe=""),
                "Content-Type": "application/octet-stream",
            },
        )
        response = await self._send(request, "upload", post=False)
        if response.status_code in (401, 403):
            raise AuthError(f"upload: the simulator rejected the key (HTTP {response.status_code})")
        if response.status_code != 200:
            raise APIError(
                None,
                f"upload: HTTP {response.status_code} (is {redact_url(self.base_url)} a simulator?)",
                status=response.status_code,
            )
        try:
            url = response.json()["url"]
        except (ValueError, KeyError, TypeError):
            raise TransportError("upload: malformed response from the simulator") from None
        if not isinstance(url, str):
            raise TransportError("upload: malformed response from the simulator")
        return url

    async def sim_control(self, method: str, path: str, body: Any = None) -> Any:
        """One simulator control request (``/sim/config``, ``/sim/faults``, ``/sim/requests``).

        Returns the JSON answer. Only a simulator has these routes (check ``is_simulator``
        first); nothing here is an API call, so ``request_count`` is not touched.

        :raises ConfigError: an unknown control path, or the simulator refused the body (its
            message, e.g. ``invalid config: unknown key 'x'``).
        :raises AuthError: the simulator rejected the key.
        :raises APIError: any other non-200 answer.
        :raises TransportError: no complete answer, or not JSON.
        """
        if path not in _SIM_CONTROL:
            raise ConfigError(f"not a simulator control path: {path!r}")
        what = f"simulator {path.rsplit('/', 1)[-1]}"
        request = self._build_request(method, path, what=what, json_body=body, headers=None)
        response = await self._send(request, what, post=False)
        if response.status_code in (401, 403):
            raise AuthError(f"{what}: the simulator rejected the key (HTTP {response.status_code})")
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code == 400 and isinstance(answer, dict):
            raise ConfigError(f"{what}: {answer.get('msg') or 'refused'}")
        if response.status_code != 200 or answer is None:
            raise APIError(
                None, f"{what}: HTTP {response.status_code}", status=response.status_code
            )
        return answer

    async def download(
        self,
        url: str,
        dest: Path,
        *,
        resume: bool = True,
        on_progress: ProgressFn | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Stream ``url`` into ``dest``; return the file's total size in bytes.

        With ``resume`` and an existing ``dest``, asks for the rest with ``Range`` and appends
        (a server that ignores Range restarts the file). A body shorter than ``Content-Length``
        is resumed up to ``settings.max_retries`` times. ``on_progress(done, total)`` is called
        as bytes arrive (``total`` None when unknown). The bearer key is sent only when ``url``
        is on the API's own origin. A partial file is left in place for a later resume.
        ``max_bytes`` caps the file: a ``Content-Length`` over it is refused before the body is
        read, and a body that grows past it is stopped as the bytes arrive.

        :raises ResultExpired: HTTP 403/404/410 (the signed URL expired or is gone).
        :raises TooLarge: the file is larger than ``max_bytes`` (``dest`` is deleted).
        :raises DiskFull: writing ``dest`` ran out of space or hit a file size limit (ENOSPC,
            EFBIG, EDQUOT); ``dest`` is deleted.
        :raises CacheError: ``dest`` cannot be written for another reason.
        :raises TransportError: truncated or failed transfer after the retries.
        :raises APIError: another HTTP status.
        """
        dest = Path(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not resume:
                dest.unlink(missing_ok=True)
        except OSError as exc:
            raise _write_error(exc, dest) from None
        return await self._download(url, dest, on_progress, max_bytes, None, None)

    async def fetch_input(
        self,
        url: str,
        dest: Path,
        *,
        known: URLValidators | None,
        max_bytes: int | None = None,
    ) -> URLValidators | None:
        """Fetch an input URL into ``dest`` unless ``known`` still describes its bytes.

        With usable ``known`` validators this is ONE conditional GET (``If-None-Match`` /
        ``If-Modified-Since``): a 304 answer returns ``None`` and ``dest`` is not written (no
        body is transferred). Any 200 answer (changed bytes, a server that ignores the
        condition, or no ``known``) is streamed into ``dest`` exactly as :meth:`download`
        does with ``resume=False``, and the answer's :class:`URLValidators` are returned
        (``usable`` false when the server sent none).

        :raises ResultExpired, TooLarge, DiskFull, CacheError, TransportError, APIError,
            AuthError: as :meth:`download`.
        """
        dest = Path(dest)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.unlink(missing_ok=True)
        except OSError as exc:
            raise _write_error(exc, dest) from None
        conditional = known.conditional_headers() if known is not None else None
        seen: dict[str, URLValidators] = {}
        try:
            await self._download(url, dest, None, max_bytes, conditional or None, seen)
        except _NotModified:
            return None
        return seen.get("validators", URLValidators())

    def revalidate_input(
        self,
        url: str,
        new_dest: Callable[[], Path],
        *,
        known: URLValidators,
        max_bytes: int | None = None,
    ) -> tuple[URLValidators, Path] | None:
        """:meth:`fetch_input` for a URL seen before, on the CALLER's thread: the one
        conditional GET over a kept-alive sync connection, with no hop to the event loop
        (on a loopback or LAN server that hop and the async stack cost more than the request).

        A 304 returns ``None`` and touches no file. A 200 body is written, with the same size
        cap, into the file ``new_dest()`` makes then (the caller deletes it); its
        :class:`URLValidators` and that path are returned. The headers are a
        download's (the key only on the API's own origin); only for a URL the rate limit does
        not cover (:meth:`may_revalidate_now`); no retries here.

        :raises TransportError: no complete answer (a connection error, a timeout, a cut body,
            a status worth retrying): the caller fetches again with :meth:`fetch_input`
            (except :class:`TooLarge`, a TransportError too, which is final).
        :raises ResultExpired, AuthError, TooLarge, DiskFull, CacheError: as :meth:`fetch_input`.
        """
        safe = redact_url(url)
        conditional = known.conditional_headers()
        headers = self._download_headers(url, 0, conditional)
        self.request_count += 1
        try:
            with self._sync_client().stream("GET", url, headers=headers) as response:
                try:
                    _resume_offset(response, safe, None, 0, conditional)
                except _NotModified:
                    response.read()  # (no body) so the connection goes back to the pool
                    return None
                except APIError as exc:
                    raise TransportError(f"revalidating {safe}: {exc}") from None
                encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
                length = None if encoded else _int_or_none(response.headers.get("content-length"))
                if max_bytes is not None and length is not None and length > max_bytes:
                    raise _too_large(safe, length, max_bytes)
                dest = new_dest()
                _Body(safe, length, max_bytes, None).write_sync(response, dest)
                return URLValidators.from_headers(response.headers, length), dest
        except _Truncated as exc:
            raise TransportError(str(exc)) from None
        except (httpx.HTTPError, httpx.InvalidURL, UnicodeError) as exc:
            raise TransportError(f"revalidating {safe} failed: {type(exc).__name__}") from None

    def may_revalidate_now(self, url: str) -> bool:
        """Whether :meth:`revalidate_input` may fetch ``url``: not when the transport's rate
        limit covers it (an ``/api/`` path while a limit is set), which only the async path
        applies."""
        return not self.transport.limits(urlsplit(url).path)

    def _sync_client(self) -> httpx.Client:
        with self._sync_lock:
            if self._sync is None:
                self._sync = httpx.Client(
                    timeout=httpx.Timeout(self.settings.request_timeout),
                    headers={"User-Agent": _USER_AGENT},
                    follow_redirects=False,
                )
            return self._sync

    async def _download(
        self,
        url: str,
        dest: Path,
        on_progress: ProgressFn | None,
        max_bytes: int | None,
        conditional: Mapping[str, str] | None,
        seen: dict[str, URLValidators] | None,
    ) -> int:
        """Fetch ``url`` into ``dest``, resuming a body that stopped early.

        Each GET is one request to the transport (which alone re-sends a request that failed
        before its answer began). A body cut off mid-way is continued with ``Range`` from the
        bytes already written: at most ``settings.max_retries`` continuations, so one call
        costs at most ``max_retries + 1`` GETs. ``conditional`` headers go on the first GET
        only (a 304 raises :class:`_NotModified`); ``seen["validators"]`` receives the 200
        answer's validators.
        """
        gets = self.settings.max_retries + 1
        last_error: GoEnhanceError | None = None
        for n in range(gets):
            try:
                return await self._download_once(
                    url, dest, on_progress, max_bytes, conditional if n == 0 else None, seen
                )
            except _Truncated as exc:
                last_error = TransportError(str(exc))
                if n + 1 < gets:
                    await self.transport.sleep(self.transport.backoff(n))
            except (TooLarge, CacheError):
                with contextlib.suppress(OSError):
                    dest.unlink(missing_ok=True)
                raise
        assert last_error is not None
        raise last_error

    async def _download_once(
        self,
        url: str,
        dest: Path,
        on_progress: ProgressFn | None,
        max_bytes: int | None,
        conditional: Mapping[str, str] | None = None,
        seen: dict[str, URLValidators] | None = None,
    ) -> int:
        """One GET of ``url`` into ``dest`` (appending from its current size); return the
        file's size once complete.

        :raises _Truncated: the body stopped early or the range did not fit (resumable).
        :raises _NotModified, ResultExpired, AuthError, APIError, TooLarge, DiskFull,
            CacheError, TransportError: see :meth:`download` and :meth:`fetch_input`.
        """
        have = dest.stat().st_size if dest.exists() else 0
        headers = self._download_headers(url, have, conditional)
        safe = redact_url(url)
        self.request_count += 1
        try:
            async with self._http.stream("GET", url, headers=headers) as response:
                if response.status_code == 304:
                    await response.aread()  # (no body) so the connection goes back to the pool
                offset = _resume_offset(response, safe, dest, have, conditional)
                if offset is None:  # nothing left to fetch
                    return have
                encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
                length = None if encoded else _int_or_none(response.headers.get("content-length"))
                total = offset + length if length is not None else None
                if seen is not None and response.status_code == 200:
                    seen["validators"] = URLValidators.from_headers(response.headers, length)
                if max_bytes is not None and total is not None and total > max_bytes:
                    raise _too_large(safe, total, max_bytes)
                body = _Body(safe, total, max_bytes, on_progress)
                return await body.write(response, dest, offset)
        except httpx.HTTPError as exc:
            raise TransportError(f"download of {safe} failed: {type(exc).__name__}") from None
        except (httpx.InvalidURL, UnicodeError) as exc:  # the request could not be built
            raise TransportError(
                f"download of {safe} failed: {type(exc).__name__}", sent=False
            ) from None

    def _download_headers(
        self, url: str, have: int, conditional: Mapping[str, str] | None
    ) -> dict[str, str]:
        """Headers of a download GET: the key only on the API's own origin, no content coding,
        ``Range`` from ``have`` bytes (else the ``conditional`` validators)."""
        headers = self._auth_headers() if self._is_api_origin(url) else {}
        headers["Accept-Encoding"] = "identity"
        if have:
            headers["Range"] = f"bytes={have}-"
        elif conditional:
            headers.update(conditional)
        return headers

    async def aclose(self) -> None:
        """Close connections (the client is unusable afterwards)."""
        with self._sync_lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _read_capped(response: httpx.Response, cap: int) -> bytes | None:
    """Read a streamed body (decoded) up to ``cap`` bytes; ``None`` once it passes the cap
    (reading stops there: the rest is never received)."""
    length = _int_or_none(response.headers.get("content-length"))
    if length is not None and length > cap and "content-encoding" not in response.headers:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(safe_url: str, size: int, cap: int, *, so_far: bool = False) -> TooLarge:
    what = f"passed {cap / 1e6:g} MB while arriving" if so_far else f"is {size / 1e6:.1f} MB"
    return TooLarge(f"download of {safe_url} {what}; the limit is {cap / 1e6:g} MB")


def _write_error(exc: OSError, dest: Path) -> CacheError:
    """A local write failure while downloading, as one of our errors (never a raw OSError)."""
    if exc.errno in _NO_SPACE:
        return DiskFull(f"no space left writing the download ({exc.strerror or exc})")
    return CacheError(f"cannot write {dest.name}: {exc.strerror or exc}")


def _resume_offset(
    response: httpx.Response,
    safe: str,
    dest: Path | None,
    have: int,
    conditional: Mapping[str, str] | None,
) -> int | None:
    """Where the answer's body goes in ``dest``: 0 (a full body) or ``have`` (the rest, 206);
    ``None`` when nothing is left to fetch (416 and the file is complete). ``dest`` None: no
    file yet (``have`` is 0).

    :raises _NotModified: 304 to a conditional GET.
    :raises ResultExpired: 403/404/410. :raises AuthError: 401. :raises APIError: other status.
    :raises _Truncated: the range does not fit (``dest`` is deleted: start again).
    """
    status = response.status_code
    if status == 304 and conditional and not have:
        raise _NotModified
    if status in (403, 404, 410):
        raise ResultExpired(f"result URL expired or gone (HTTP {status}): {safe}")
    if status == 416 and have:
        if _content_range_total(response.headers.get("content-range")) == have:
            return None
        if dest is not None:
            dest.unlink(missing_ok=True)
        raise _Truncated(f"download of {safe}: range not satisfiable, restarting")
    if status == 206 and have:
        if _content_range_start(response.headers.get("content-range")) != have:
            if dest is not None:
                dest.unlink(missing_ok=True)
            raise _Truncated(f"download of {safe}: unexpected range, restarting")
        return have
    if status == 200:
        return 0
    if status == 401:
        raise AuthError(f"download refused (HTTP {status}): {safe}")
    raise APIError(None, f"download of {safe}: HTTP {status}", status=status)


class _Body:
    """Writes one download answer's body into the destination file, with the size cap and
    progress reports."""

    def __init__(
        self,
        safe: str,
        total: int | None,
        max_bytes: int | None,
        on_progress: ProgressFn | None,
    ) -> None:
        self.safe = safe
        self.total = total
        self.max_bytes = max_bytes
        self.on_progress = on_progress

    def _progress(self, done: int) -> None:
        if self.on_progress is not None:
            self.on_progress(done, self.total)

    async def write(self, response: httpx.Response, dest: Path, offset: int) -> int:
        """Write the body at ``offset`` (append when > 0); return the file's size.

        :raises _Truncated: the body stopped early (what arrived is kept for a resume).
        :raises TooLarge: the body passed ``max_bytes``. :raises DiskFull, CacheError: writing.
        """
        done = offset
        self._progress(done)
        try:
            with dest.open("ab" if offset else "wb") as fh:
                try:
                    async for chunk in response.aiter_bytes():
                        done = self._take(fh, done, chunk)
                except _CUT as exc:
                    fh.flush()
                    raise self._cut(done, exc) from None
        except OSError as exc:
            raise _write_error(exc, dest) from None
        return self._complete(done)

    def write_sync(self, response: httpx.Response, dest: Path) -> int:
        """:meth:`write` of a whole body (offset 0) from a sync client's response."""
        done = 0
        self._progress(done)
        try:
            with dest.open("wb") as fh:
                try:
                    for chunk in response.iter_bytes():
                        done = self._take(fh, done, chunk)
                except _CUT as exc:
                    raise self._cut(done, exc) from None
        except OSError as exc:
            raise _write_error(exc, dest) from None
        return self._complete(done)

    def _take(self, fh: BinaryIO, done: int, chunk: bytes) -> int:
        """Write one chunk that arrived after ``done`` bytes (the cap checked first)."""
        done += len(chunk)
        if self.max_bytes is not None and done > self.max_bytes:
            raise _too_large(self.safe, done, self.max_bytes, so_far=True)
        fh.write(chunk)
        self._progress(done)
        return done

    def _cut(self, done: int, exc: Exception) -> _Truncated:
        total = self.total if self.total is not None else "?"
        return _Truncated(
            f"download of {self.safe} interrupted at {done} of {total} bytes ({type(exc).__name__})"
        )

    def _complete(self, done: int) -> int:
        if self.total is not None and done != self.total:
            raise _Truncated(f"download of {self.safe} truncated: {done} of {self.total} bytes")
        return done


# a body that stopped arriving (resumable)
_CUT = (httpx.RemoteProtocolError, httpx.ReadError, httpx.ReadTimeout)


class _Truncated(Exception):
    """Internal: a download stopped early; resumable."""


def _content_range_start(value: str | None) -> int | None:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    rng = value[6:].split("/", 1)[0]
    start, _, _ = rng.partition("-")
    return _int_or_none(start)


def _content_range_total(value: str | None) -> int | None:
    if not value or "/" not in value:
        return None
    return _int_or_none(value.rsplit("/", 1)[1])


def parse_styles(data: Any) -> list[Style]:
    """Flatten the model list (categories with ``list[]``; a flat list is accepted too)."""
    styles: list[Style] = []
    seen: set[int] = set()

    def add(item: Any, category: str) -> None:
        if not isinstance(item, Mapping):
            return
        sid = _int_or_none(item.get("value"))
        if sid is None or sid in seen:
            return
        seen.add(sid)
        label = item.get("label")
        version = item.get("version")
        url = item.get("url")
        styles.append(
            Style(
                id=sid,
                label=str(label) if label not in (None, "") else f"Style {sid}",
                version=str(version) if version is not None else "",
                category=category,
                is_vip=bool(item.get("isVip", False)),
                preview_url=url if isinstance(url, str) and url else None,
            )
        )

    if isinstance(data, Mapping):
        data = data.get("list", [])
    if not isinstance(data, list):
        return styles
    for entry in data:
        if isinstance(entry, Mapping) and isinstance(entry.get("list"), list):
            cat = entry.get("label") or entry.get("value") or ""
            for item in entry["list"]:
                add(item, str(cat))
        else:
            add(entry, "")
    return styles


def parse_job_detail(img_uuid: str, data: Any, *, now: float) -> JobDetail:
    """Build a :class:`JobDetail` from a ``jobs/detail`` ``data`` object (tolerant)."""
    if not isinstance(data, dict):
        data = {}
    url, expires, duration = extract_result(data, now=now)
    raw_status = data.get("status")
    raw_status = "" if raw_status is None else str(raw_status)
    model_id = data.get("model_id")

    def opt_str(v: Any) -> str | None:
        return None if v is None else str(v)

    return JobDetail(
        img_uuid=str(data.get("img_uuid") or img_uuid),
        raw_status=raw_status,
        state=map_status(raw_status, url is not None),
        result_url=url,
        expires_at=expires,
        output_duration=duration,
        start_time=opt_str(data.get("start_time")),
        end_time=opt_str(data.get("end_time")),
        model_id=opt_str(model_id),
        raw=data,
    )
