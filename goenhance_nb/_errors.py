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
     +-- JobFailed(job_id, msg)
     +-- JobTimedOut(job_id)  the job stays resumable
     +-- ResultExpired        a result URL answered 403/404/410 (or is past its expiry)
     +-- CacheError
     +-- LedgerError
     +-- InputError           a bad local input (refused before any HTTP call)
     +-- BudgetExceeded       the session budget would be exceeded

    UserWarning
     +-- GoEnhanceWarning     something the user should know; the run goes on
          +-- InputWarning    an input is usable but odd (e.g. shorter than the duration)
          +-- StorageWarning  unreadable rows skipped, a damaged database moved aside

Every message is one line and never contains the API key or a URL's query string (use
:func:`redact_url` for URLs). Every class renders as one line in IPython
(``_render_traceback_``), so expected failures never show a long traceback.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "APIError",
    "AuthError",
    "BudgetExceeded",
    "CacheError",
    "ConfigError",
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
    "ResultExpired",
    "StorageWarning",
    "TransportError",
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
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
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


class GoEnhanceError(Exception):
    """Base class of every error goenhance_nb raises on purpose."""

    def __init__(self, message: str = "") -> None:
        super().__init__(redact_text(message))

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


class JobFailed(GoEnhanceError):
    """The job ended in a failed state on the server."""

    def __init__(self, job_id: str | None, msg: str = "") -> None:
        self.job_id = job_id
        self.msg = redact_text(msg)
        super().__init__(f"job {job_id} failed" + (f": {self.msg}" if self.msg else ""))

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild, (type(self), self.__dict__.copy(), str(self)))


class JobTimedOut(GoEnhanceError):
    """The job did not finish before its deadline; it stays resumable (``%goenhance resume ID``)."""

    def __init__(self, job_id: str | None, msg: str = "") -> None:
        self.job_id = job_id
        text = (
            msg or f"job {job_id} did not finish in time; resume it with %goenhance resume {job_id}"
        )
        super().__init__(text)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_rebuild, (type(self), self.__dict__.copy(), str(self)))


class ResultExpired(GoEnhanceError):
    """A result URL is no longer valid (HTTP 403/404/410 or past its expiry time)."""


class CacheError(GoEnhanceError):
    """The result cache could not be read or written (or holds a refused row)."""


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
