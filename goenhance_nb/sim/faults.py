"""One-shot fault injection for the simulator (docs/ARCHITECTURE.md §1, `/sim/faults`)."""

from __future__ import annotations

import threading
from typing import Any

#: Kinds handled generically in front of every non-control route.
GENERIC_KINDS = frozenset(
    {
        "http_500",
        "http_502",
        "http_503",
        "http_504",
        "http_429",
        "reset",
        "slow",
        "malformed_json",
        "oversize_json",
        "no_job_id",
    }
)
#: Kinds consumed by particular handlers.
SPECIFIC_KINDS = frozenset(
    {
        "unknown_status",
        "lost_job",
        "expired_url",
        "truncated_download",
        "short_download",
        "html_download",
        "zeros_download",
        "oversize_download",
        "job_failed",
        "reject_generate",
    }
)
KINDS = GENERIC_KINDS | SPECIFIC_KINDS

#: Kinds that replace or cut a file download (consumed where `/sim/files` and
#: `/sim/results` are served).
DOWNLOAD_KINDS = frozenset(
    {"truncated_download", "short_download", "html_download", "zeros_download", "oversize_download"}
)

#: Paths never affected by faults (the control API must keep working).
CONTROL_PREFIXES = ("/sim/faults", "/sim/config", "/sim/requests", "/sim/health")


class FaultError(ValueError):
    """A fault description is malformed (unknown kind, bad `times`, ...)."""


def validate_fault(raw: object) -> dict[str, Any]:
    """Check one fault dict and return a normalised copy (`times` >= 1, `path` a string).

    :raises FaultError: not an object, unknown kind, bad `times`, `path` not a string, or a bad
        kind-specific field.
    """
    if not isinstance(raw, dict):
        raise FaultError("a fault must be a JSON object")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise FaultError(f"unknown fault kind: {kind!r}")
    fault = dict(raw)
    times = fault.get("times", 1)
    if not isinstance(times, int) or isinstance(times, bool) or times < 1:
        raise FaultError("fault 'times' must be an integer >= 1")
    fault["times"] = times
    path = fault.get("path", "")
    if not isinstance(path, str):
        raise FaultError("fault 'path' must be a string")
    fault["path"] = path
    for field in ("retry_after", "delay", "after_bytes", "size"):
        if field in fault:
            v = fault[field]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise FaultError(f"fault '{field}' must be a number >= 0")
    if "length" in fault and not isinstance(fault["length"], bool):
        raise FaultError("fault 'length' must be true or false")
    if kind == "reject_generate":
        code = fault.get("code", 500)
        if not isinstance(code, int) or isinstance(code, bool) or code == 0:
            raise FaultError("reject_generate 'code' must be a non-zero integer")
        fault["code"] = code
        fault["msg"] = str(fault.get("msg", "generation rejected"))
    if kind == "unknown_status":
        fault["status"] = str(fault.get("status", "mystery"))
    return fault


class FaultQueue:
    """Thread-safe queue of one-shot faults; `take` consumes one use of the first match."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[dict[str, Any]] = []

    def add(self, faults: list[dict[str, Any]]) -> None:
        """Append validated faults."""
        with self._lock:
            self._faults.extend(faults)

    def clear(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def list(self) -> list[dict[str, Any]]:
        """A copy of the queued faults."""
        with self._lock:
            return [dict(f) for f in self._faults]

    def take(
        self, kinds: frozenset[str] | set[str], path: str, *, img_uuid: str | None = None
    ) -> dict[str, Any] | None:
        """Consume one use of the first fault of one of `kinds` matching `path` (prefix) and,
        when the fault names an `img_uuid`, that job. Returns a copy of it or None."""
        with self._lock:
            for f in self._faults:
                if f["kind"] not in kinds or not path.startswith(f["path"]):
                    continue
                target = f.get("img_uuid")
                if target is not None and target != img_uuid:
                    continue
                f["times"] -= 1
                if f["times"] <= 0:
                    self._faults.remove(f)
                return dict(f)
        return None
