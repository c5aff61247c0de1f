"""Pure functions: content hashes, cache keys, result extraction (status mapping: ``_lifecycle``).

No network, no clock (``extract_result`` takes ``now``), no global state: values in, values out.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import blake3

from goenhance_nb._records import JobSpec

__all__ = [
    "RESULT_URL_MAX_TTL",
    "canonical_json",
    "extract_result",
    "hash_bytes",
    "hash_file",
    "request_key",
]

RESULT_URL_MAX_TTL = 12 * 3600.0
"""Result URLs are treated as valid for at most 12 h (spec §4.3)."""

_CHUNK = 1 << 20


def hash_bytes(data: bytes) -> str:
    """blake3 hex digest of ``data``."""
    return blake3.blake3(data).hexdigest()


def hash_file(path: str | os.PathLike[str]) -> str:
    """blake3 hex digest of a file, read in 1 MiB chunks. :raises OSError: unreadable file."""
    h = blake3.blake3()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
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
