"""The exception tree of goenhance_nb (DECISIONS 14).

::

    GoEnhanceError
     +-- ConfigError          settings, key file, base URL
     +-- AuthError            HTTP 401 / 403 on an API path (wrong or missing key)
     +-- APIError(code, msg)  HTTP 200 envelope with a non-zero ``code``, or an unexpected status
     |    +-- InsufficientCredits
     |    +-- InvalidParameters
     |    +-- RateLimited(retry_after)
     +-- TransportError       connection failed, timed out, reset, malformed JSON, truncated body
     |    +-- TooLarge         a body (download or JSON answer) passed its size cap as it arrived
     +-- JobFailed(job_id, msg)
     +-- JobTimedOut(job_id)  the job stays resumable
     +-- ResultExpired        a result URL answered 403/404/410 (or is past its expiry)
     +-- CacheError           incl. a downloaded result that failed its probe (never cached)
     |    +-- DiskFull         ENOSPC / EFBIG / EDQUOT while writing a download or the store
     |    +-- ReplayMiss       replay/offline mode: the result is not in the cache (nothing sent)
     |    +-- BundleError      an export/import bundle was refused (the cache is untouched)
     +-- LedgerError
     +-- InputError           a bad local input (refused before any HTTP call)
     +-- BudgetExceeded       the session budget would be exceeded

    UserWarning
     +-- GoEnhanceWarning     something the user should know; the run goes on
          +-- InputWarning    an input is usable but odd (e.g. shorter than the duration)
          +-- StorageWarning  unreadable rows skipped, a damaged database moved aside

Every message is one line (at most :data:`MESSAGE_LIMIT` characters) and never contains the
API key or a URL's query string (use :func:`redact_url` for URLs, :func:`brief` to quote a
user's value). Every class renders as one line in IPython
(``_render_traceback_``), so expected failures never show a long traceback.
"""

from __future__ import annotations

import re
import reprlib
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "APIError",
    "AuthError",
    "BudgetExceeded",
    "BundleError",
    "CacheError",
    "ConfigError",
    "DiskFull",
    "GoEnhanceError",
    "GoEnhanceWarning",
    "InputError",
    "InputWarning",
    "InsufficientCredits",
    "InvalidParameters",
    "JobFailed",
    "JobTimedOut",
    "LedgerError",
    "RateLimited",
    "ReplayMiss",
    "ResultExpired",
    "StorageWarning",
    "TooLarge",
    "TransportError",
    "brief",
    "redact_text",
    "redact_url",
]

_URL_RE = re.compile(r"https?://[^\s\"'<>]+")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
# key-shaped tokens (real keys start "sk-", simulator keys "sim-" + 32 hex): defence in depth
_KEYLIKE_RE = re.compile(r"\b(sk|sim)-[A-Za-z0-9_]{16,}\b")


def redact_url(url: object) -> str:
    """Return ``url`` without its query string, fragment or userinfo.

    ``https://h/p.mp4?q-sign-time=1;2&sig=x`` -> ``https://h/p.mp4?…``. Never raises: a value
    that does not parse as a URL is returned with everything after ``?`` replaced.
    """
    text = str(url)
    try:
        parts = urlsplit(text)
    except ValueError:
        head, sep, _ = text.partition("?")
        return head + ("?…" if sep else "")
    netloc = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # e.g. "host:1234)." cut out of a sentence: keep the text, drop userinfo
        port = None
        netloc = parts.netloc.rpartition("@")[2]
    if port is not None:
        netloc = f"{netloc}:{port}"
    if not parts.scheme and not netloc:
        head, sep, _ = text.partition("?")
        return head + ("?…" if sep else "")
    out = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    if parts.query or parts.fragment:
        out += "?…"
    return out


def redact_text(text: object) -> str:
    """Make ``text`` safe for a message: URLs lose their query, bearer tokens and key-shaped
    tokens (``sk-…``, ``sim-…``) are masked, and newlines collapse to spaces (one line)."""
    s = _URL_RE.sub(lambda m: redact_url(m.group(0)), str(text))
    s = _BEARER_RE.sub(r"\1***", s)
    s = _KEYLIKE_RE.sub(r"\1-***", s)
    return " ".join(s.split())


#: Longest value quoted in a message, and longest message (a backstop for one-line errors).
BRIEF_LIMIT = 80
MESSAGE_LIMIT = 1000


def brief(value: object, limit: int = BRIEF_LIMIT, *, quote: bool = True) -> str:
    """A short one-line rendering of a user-supplied value, for quoting in an error message.

    ``repr`` of ``value`` (``str`` for a string when ``quote`` is false) built with bounded
    work: nested containers and long strings are cut *before* they are expanded (so a YAML
    alias bomb costs nothing), whitespace runs become one space, and the text is cut to
    ``limit`` characters ending in ``…``. Never raises.
    """
    if isinstance(value, str) and not quote:
        text = value[: limit * 4]
    else:
        r = reprlib.Repr()
        r.maxlevel, r.maxlist, r.maxtuple, r.maxset, r.maxdict = 3, 6, 6, 6, 6
        r.maxstring, r.maxother, r.maxlong = limit * 2, limit * 2, limit * 2
        try:
            text = r.repr(value)
        except Exception:
            text = f"<{type(value).__name__}>"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class GoEnhanceError(Exception):
    """Base class of every error goenhance_nb raises on purpose.

    ``job_may_exist`` is set by the client on an error of the paid generate POST when the
    server may have created (and charged) a job although no job id came back: an HTTP 5xx
    other than 503, a read timeout or reset after sending, malformed JSON, a success envelope
    without ``img_uuid``. It is ``False`` for every outcome that provably made no job (a
    connect error, HTTP 401/403/429/503, a 200 envelope with a non-zero ``code``) and for
    every other request (DECISIONS 25).
    """

    job_may_exist: bool = False

    def __init__(self, message: str = "") -> None:
        text = redact_text(message)
        if len(text) > MESSAGE_LIMIT:
            text = text[: MESSAGE_LIMIT - 1] + "…"
        super().__init__(text)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__

    def _render_traceback_(self) -> list[str]:
        """IPython hook: show one line instead of a traceback."""
        return [f"{type(self).__name__}: {self}"]


class ConfigError(GoEnhanceError):
    """Settings are invalid (bad value, key file with loose permissions, ...)."""


class AuthError(GoEnhanceError):
    """The API refused the key (HTTP 401/403 on an API path) or no key is available."""


class APIError(GoEnhanceError):
    """The API answered an error: a non-zero envelope ``code`` (with ``msg``) or an HTTP status."""

    def __init__(self, code: int | None, msg: str, *, status: int | None = None) -> None:
        self.code = code
        self.msg = redact_text(msg)
        self.status = status
        where = f"code {code}" if code is not None else f"HTTP {status}"
        super().__init__(f"{self.msg} ({where})" if self.msg else f"API error ({where})")

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild, (type(self), self.__dict__.copy(), str(self)))


class InsufficientCredits(APIError):
    """The account has too few credits for this job."""


class InvalidParameters(APIError):
    """The API rejected the request parameters (model, duration, resolution, prompt, URL)."""


class RateLimited(APIError):
    """Too many requests (HTTP 429) or a daily/concurrency limit; ``retry_after`` in seconds."""

    def __init__(
        self,
        code: int | None,
        msg: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(code, msg, status=status)


class TransportError(GoEnhanceError):
    """The request did not complete: connect error, timeout, reset, malformed JSON, truncated body.

    ``sent`` is ``False`` only when the request provably never left (a connect error), ``None``
    when it may have reached the server (a timeout or reset after sending).
    """

    def __init__(self, message: str = "", *, sent: bool | None = None) -> None:
        self.sent = sent
        super().__init__(message)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild, (type(self), self.__dict__.copy(), str(self)))


class TooLarge(TransportError):
    """A body passed its size cap while it arrived (``max_result_mb``, ``max_input_mb``, or the
    JSON answer cap); the transfer was stopped and nothing partial was kept."""


class JobFailed(GoEnhanceError):
    """The job ended in a failed state on the server."""

    def __init__(self, job_id: str | None, msg: str = "") -> None:
        self.job_id = job_id
        self.msg = redact_text(msg)
        super().__init__(f"job {job_id} failed" + (f": {self.msg}" if self.msg else ""))

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild, (type(self), self.__dict__.copy(), str(self)))


class JobTimedOut(GoEnhanceError):
    """The job did not finish before its deadline; it stays resumable (``%goenhance resume ID``).

    Without a job id yet (still submitting) the message names ``key``'s 12-character prefix,
    which ``resume`` accepts too; never ``resume None``.
    """

    def __init__(self, job_id: str | None, msg: str = "", *, key: str | None = None) -> None:
        self.job_id = job_id
        ident = job_id or (key[:12] if key else "")
        text = msg or (
            f"job {ident} did not finish in time; it stays resumable: %goenhance resume {ident}"
            if ident
            else "the job did not finish in time; see %goenhance jobs to resume it"
        )
        super().__init__(text)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild, (type(self), self.__dict__.copy(), str(self)))


class ResultExpired(GoEnhanceError):
    """A result URL is no longer valid (HTTP 403/404/410 or past its expiry time)."""


class CacheError(GoEnhanceError):
    """The result cache could not be read or written (or holds a refused row)."""


class DiskFull(CacheError):
    """The disk (or a file size limit) ran out while writing a download or the store: the
    partial file was removed and nothing was cached; a paid job stays resumable."""


class ReplayMiss(CacheError):
    """Replay or offline mode: a transformation has no result in the cache or an imported
    bundle. Nothing was sent (no API call, nothing charged)."""


class BundleError(CacheError):
    """A reproducibility bundle could not be written, or was refused on import (bad member
    name, link, oversize member, wrong hash, conflicting result); the cache is untouched."""


class LedgerError(GoEnhanceError):
    """The job ledger could not be read or written."""


class InputError(GoEnhanceError):
    """A local input is unusable (missing file, no video stream, out-of-range parameter)."""


class BudgetExceeded(GoEnhanceError):
    """Submitting would take the session's spend over its budget."""


class GoEnhanceWarning(UserWarning):
    """Base of our warnings: the work goes on, the user should know. The magics show these as
    one plain line in the cell's output; from Python they are ordinary, filterable warnings."""


class InputWarning(GoEnhanceWarning):
    """An input is accepted but odd (e.g. shorter than the requested duration)."""


class StorageWarning(GoEnhanceWarning):
    """The cache or ledger skipped unreadable rows, or moved a damaged database aside."""


def _rebuild(cls: type[GoEnhanceError], state: dict[str, object], message: str) -> GoEnhanceError:
    """Unpickle helper for errors whose ``__init__`` takes more than a message."""
    obj = cls.__new__(cls)
    Exception.__init__(obj, message)
    obj.__dict__.update(state)
    return obj
