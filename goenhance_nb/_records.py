"""Frozen, slotted records that cross tasks and disk, each with ``to_json``/``from_json``.

``from_json`` raises ``ValueError`` on a missing or ill-typed field (callers that read disk
translate it into ``CacheError``/``LedgerError``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from goenhance_nb._lifecycle import JobState

__all__ = ["Credits", "GenerateResult", "JobDetail", "JobSpec", "Style"]


def _req(d: Mapping[str, Any], name: str, typ: type | tuple[type, ...]) -> Any:
    if not isinstance(d, Mapping) or name not in d:
        raise ValueError(f"missing field {name!r}")
    v = d[name]
    if isinstance(v, bool) and typ in (int, float, (int, float)):
        raise ValueError(f"field {name!r} has the wrong type")
    if not isinstance(v, typ):
        raise ValueError(f"field {name!r} has the wrong type")
    return v


def _opt(d: Mapping[str, Any], name: str, typ: type | tuple[type, ...]) -> Any:
    v = d.get(name)
    if v is None:
        return None
    if isinstance(v, bool) and typ in (int, float, (int, float)):
        raise ValueError(f"field {name!r} has the wrong type")
    if not isinstance(v, typ):
        raise ValueError(f"field {name!r} has the wrong type")
    return v


@dataclass(frozen=True, slots=True)
class Style:
    """One model (style) from the model list, flattened out of its category."""

    id: int
    label: str
    version: str
    category: str
    is_vip: bool = False
    preview_url: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "id": self.id,
            "label": self.label,
            "version": self.version,
            "category": self.category,
            "is_vip": self.is_vip,
            "preview_url": self.preview_url,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Style:
        """Inverse of :meth:`to_json`. :raises ValueError: bad data."""
        return cls(
            id=_req(d, "id", int),
            label=_req(d, "label", str),
            version=_req(d, "version", str),
            category=_req(d, "category", str),
            is_vip=bool(d.get("is_vip", False)),
            preview_url=_opt(d, "preview_url", str),
        )


@dataclass(frozen=True, slots=True)
class Credits:
    """Account balance from ``/api/v1/user/tokens``."""

    count: int
    queue_limit: int | None = None
    user_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"count": self.count, "queue_limit": self.queue_limit, "user_id": self.user_id}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Credits:
        """Inverse of :meth:`to_json`. :raises ValueError: bad data."""
        return cls(
            count=_req(d, "count", int),
            queue_limit=_opt(d, "queue_limit", int),
            user_id=_opt(d, "user_id", str),
        )


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """What ``generate`` returns: the job id and the credits charged (if reported)."""

    img_uuid: str
    cost: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"img_uuid": self.img_uuid, "cost": self.cost}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GenerateResult:
        """Inverse of :meth:`to_json`. :raises ValueError: bad data."""
        return cls(img_uuid=_req(d, "img_uuid", str), cost=_opt(d, "cost", int))


@dataclass(frozen=True, slots=True)
class JobDetail:
    """One ``jobs/detail`` answer: raw status verbatim, normalised state, result URL.

    ``raw`` is the API's ``data`` object as received; it holds signed URLs, so
    :meth:`to_json` leaves it out (never persist it).
    """

    img_uuid: str
    raw_status: str
    state: JobState
    result_url: str | None = None
    expires_at: float | None = None
    output_duration: float | None = None
    start_time: str | None = None
    end_time: str | None = None
    model_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict without ``raw``."""
        return {
            "img_uuid": self.img_uuid,
            "raw_status": self.raw_status,
            "state": self.state.value,
            "result_url": self.result_url,
            "expires_at": self.expires_at,
            "output_duration": self.output_duration,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "model_id": self.model_id,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> JobDetail:
        """Inverse of :meth:`to_json` (``raw`` comes back empty). :raises ValueError: bad data."""
        try:
            state = JobState(_req(d, "state", str))
        except ValueError:
            raise ValueError("field 'state' is not a JobState") from None
        exp = _opt(d, "expires_at", (int, float))
        dur = _opt(d, "output_duration", (int, float))
        return cls(
            img_uuid=_req(d, "img_uuid", str),
            raw_status=_req(d, "raw_status", str),
            state=state,
            result_url=_opt(d, "result_url", str),
            expires_at=float(exp) if exp is not None else None,
            output_duration=float(dur) if dur is not None else None,
            start_time=_opt(d, "start_time", str),
            end_time=_opt(d, "end_time", str),
            model_id=_opt(d, "model_id", str),
        )


@dataclass(frozen=True, slots=True)
class JobSpec:
    """The parameters of one video-to-video job (everything but the source video)."""

    model: int
    duration: int = 5
    resolution: str = "720p"
    seed: int = -1
    prompt: str | None = None

    def canonical(self) -> dict[str, Any]:
        """The parameters as a plain dict (stable keys; ``prompt`` is ``None`` when absent)."""
        return {
            "model": self.model,
            "duration": self.duration,
            "resolution": self.resolution,
            "seed": self.seed,
            "prompt": self.prompt,
        }

    def to_args(self, reference_video_url: str) -> dict[str, Any]:
        """The API's ``args`` object for ``POST /video2video/generate`` (prompt omitted if None)."""
        args: dict[str, Any] = {
            "model": self.model,
            "reference_video_url": reference_video_url,
            "duration": self.duration,
            "resolution": self.resolution,
            "seed": self.seed,
        }
        if self.prompt is not None:
            args["prompt"] = self.prompt
        return args

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (same as :meth:`canonical`)."""
        return self.canonical()

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> JobSpec:
        """Inverse of :meth:`to_json`. :raises ValueError: bad data."""
        return cls(
            model=_req(d, "model", int),
            duration=_req(d, "duration", int),
            resolution=_req(d, "resolution", str),
            seed=_req(d, "seed", int),
            prompt=_opt(d, "prompt", str),
        )
