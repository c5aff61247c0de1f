"""Pure functions: content hashes, cache keys, result extraction (status mapping: ``_lifecycle``).

No network, no clock (``extract_result`` takes ``now``), no global state: values in, values out.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import queue
import stat
import threading
import time
from collections.abc import Callable, Generator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import blake3

from goenhance_nb._records import JobSpec

__all__ = [
    "RESULT_URL_MAX_TTL",
    "FileChangedError",
    "canonical_json",
    "extract_result",
    "hash_bytes",
    "hash_file",
    "request_key",
    "sha256_file",
]

RESULT_URL_MAX_TTL = 12 * 3600.0
"""Result URLs are treated as valid for at most 12 h (spec §4.3)."""

_CHUNK = 4 << 20
"""Read size of :func:`hash_file`; two buffers of it are the memory it holds (8 MiB)."""


class FileChangedError(OSError):
    """A file's size or mtime changed while :func:`hash_file` read it (it was being written):
    its digest would be that of no version of the file, so none is returned."""


def hash_bytes(data: bytes) -> str:
    """blake3 hex digest of ``data``."""
    return blake3.blake3(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, streamed (what lockfiles, bundles and the shared store
    record: a digest any tool can check, unlike the cache's blake3)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_ahead(fh: Any, ahead: bool) -> Generator[memoryview, None, None]:
    """Yield ``fh``'s bytes to EOF in chunks of up to :data:`_CHUNK`, each valid until the next
    is asked for. With ``ahead`` a worker thread reads the next chunk while the caller uses the
    current one (two buffers, reused); without it the caller's thread reads (one buffer).

    Never maps the file: a file truncated while it is read gives a short read, not a SIGBUS.
    """
    if not ahead:
        buf = bytearray(_CHUNK)
        while n := fh.readinto(buf):
            yield memoryview(buf)[:n]
        return
    free: queue.SimpleQueue[bytearray | None] = queue.SimpleQueue()
    full: queue.SimpleQueue[tuple[bytearray, int] | BaseException] = queue.SimpleQueue()
    free.put(bytearray(_CHUNK))
    free.put(bytearray(_CHUNK))

    def reader() -> None:
        try:
            while (b := free.get()) is not None:
                n = fh.readinto(b)
                full.put((b, n))
                if not n:
                    return
        except BaseException as exc:  # handed to the caller's thread, raised there
            full.put(exc)

    worker = threading.Thread(target=reader, name="goenhance-read-ahead", daemon=True)
    worker.start()
    try:
        while not isinstance(item := full.get(), BaseException) and item[1]:
            yield memoryview(item[0])[: item[1]]
            free.put(item[0])
        if isinstance(item, BaseException):
            raise item
    finally:
        free.put(None)  # wakes the reader if it waits for a buffer; it stops after its read
        worker.join()


def hash_file(path: str | os.PathLike[str], *also: Callable[[memoryview], object]) -> str:
    """blake3 hex digest of a file, read once to EOF; each of ``also`` (``sha256().update``,
    a file's ``write``...) is called with every chunk too, in order (a view of a reused buffer,
    valid only during the call).

    A file larger than one chunk (4 MiB) is read ahead by a worker thread while this thread
    hashes the previous chunk (blake3 with ``max_threads=AUTO``, its own threads joining in when
    cores are free): about the speed of the slower of the two, not their sum. At most two 4 MiB
    buffers are held; the file is never mapped into memory.

    :raises FileChangedError: a regular file's size or mtime changed while it was read, or
        fewer or more bytes than its size were read.
    :raises OSError: unreadable file (or what an ``also`` callable raises).
    """
    h = blake3.blake3(max_threads=blake3.blake3.AUTO)  # its threads when cores are free
    with Path(path).open("rb", buffering=0) as fh:
        before = os.fstat(fh.fileno())
        regular = stat.S_ISREG(before.st_mode)
        total = 0
        with contextlib.closing(_read_ahead(fh, not regular or before.st_size > _CHUNK)) as it:
            for chunk in it:
                h.update(chunk)
                for sink in also:
                    sink(chunk)
                total += len(chunk)
        after = os.fstat(fh.fileno())
    if regular and (
        total != before.st_size
        or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
    ):
        raise FileChangedError(
            errno.EAGAIN,
            "it changed while it was being read (is it still being written?); "
            "try again once it is complete",
            os.fspath(path),
        )
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no spaces, non-ASCII kept: equal values give equal strings."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def request_key(input_hash: str, spec: JobSpec, model_version: str, backend: str) -> str:
    """Cache key (DECISIONS 7): blake3 of input hash, params, model id, model version, backend.

    ``backend`` is ``"simulated"`` or the real API's host, never a port or full URL.
    """
    payload = {
        "input": input_hash,
        "params": spec.canonical(),
        "model": spec.model,
        "model_version": model_version,
        "backend": backend,
    }
    return hash_bytes(canonical_json(payload).encode("utf-8"))


def _parse_time(value: Any) -> float | None:
    """ISO-8601 string or unix seconds (or ms) -> unix seconds; None if unparsable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        v = float(value)
        return v / 1000.0 if v > 1e11 else v
    if isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        try:
            return _parse_time(float(s))
        except ValueError:
            pass
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(s)
        except ValueError:
            return None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    return None


def _expiry_from_url(url: str) -> float | None:
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return None
    sign_time = query.get("q-sign-time")
    if sign_time:
        _, _, end = sign_time[0].partition(";")
        t = _parse_time(end)
        if t is not None:
            return t
    for name in ("exp", "expires", "Expires"):
        if query.get(name):
            t = _parse_time(query[name][0])
            if t is not None:
                return t
    return None


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    """``value`` stripped when it is a non-blank string, else ``None``."""
    return value.strip() if isinstance(value, str) and value.strip() else None


def _result_item(items: Any) -> tuple[str, Any, float | None] | None:
    """``(url, link_expired_at, duration)`` of the first ``json[*]`` item of type ``video``
    with a URL value (else the first item with one), or ``None``."""
    if not isinstance(items, list):
        return None
    candidates = [i for i in items if isinstance(i, Mapping) and _text(i.get("value"))]
    videos = [i for i in candidates if str(i.get("type", "")).lower() == "video"]
    pool = videos or candidates
    if not pool:
        return None
    chosen = pool[0]
    return chosen["value"].strip(), chosen.get("link_expired_at"), _as_float(chosen.get("duration"))


def _fallback_url(data: Mapping[str, Any]) -> str | None:
    """``img_url``, else ``output.video_url`` (stripped, non-blank), else ``None``."""
    output = data.get("output")
    video_url = _text(output.get("video_url")) if isinstance(output, Mapping) else None
    return _text(data.get("img_url")) or video_url


def extract_result(
    data: Mapping[str, Any] | None, now: float | None = None
) -> tuple[str | None, float | None, float | None]:
    """Find the result URL in a ``jobs/detail`` ``data`` object.

    Order: ``json[*].value`` of an item with type ``video`` (then any item with a URL value),
    then ``img_url``, then ``output.video_url``. Returns ``(url, expires_at, duration)``;
    ``expires_at`` comes from ``link_expired_at``, else the URL's ``q-sign-time=a;b`` /
    ``exp=`` query, and is capped at ``now + 12 h`` (also when nothing says). ``now`` defaults
    to ``time.time()``. Tolerates any malformed shape (returns ``(None, None, None)``).
    """
    if not isinstance(data, Mapping):
        return None, None, None
    found = _result_item(data.get("json"))
    if found is None:
        url = _fallback_url(data)
        if url is None:
            return None, None, None
        found = (url, None, None)
    url, link_expiry, duration = found
    if link_expiry is None:
        link_expiry = data.get("link_expired_at")
    expires = _parse_time(link_expiry)
    if expires is None:
        expires = _expiry_from_url(url)
    cap = (time.time() if now is None else now) + RESULT_URL_MAX_TTL
    return url, cap if expires is None else min(expires, cap), duration
