"""Frozen, slotted records that cross tasks and disk, each with ``to_json``/``from_json``.

Every record that is written to disk (these, :class:`~goenhance_nb._cache.ResultRecord`,
:class:`~goenhance_nb._ledger.LedgerEntry`, :class:`~goenhance_nb._inputs.InputRef`) describes
its JSON form in one table, field name -> :class:`Field`, and reads and writes it with
:func:`read_fields` / :func:`dump_fields`. ``from_json`` raises :class:`FieldError` (a
``ValueError`` naming the field) on a missing or ill-typed field; callers that read disk
translate it into ``CacheError``/``LedgerError``.
"""

from __future__ import annotations

import copy
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from goenhance_nb._lifecycle import JobState

__all__ = [
    "NUMBER",
    "REQUIRED",
    "Credits",
    "Field",
    "FieldError",
    "GenerateResult",
    "JobDetail",
    "JobSpec",
    "Style",
    "dump_fields",
    "read_fields",
]


class FieldError(ValueError):
    """A JSON record is not an object, or one of its fields is missing, of the wrong JSON type
    or has a value its field cannot take. The message names the field."""


class _Required(enum.Enum):
    REQUIRED = "required"


#: :attr:`Field.default` of a field that must be present and not null.
REQUIRED = _Required.REQUIRED
#: The JSON types of a number field (a ``bool`` never counts as a number).
NUMBER: tuple[type, ...] = (int, float)


@dataclass(frozen=True, slots=True)
class Field:
    """How one field of a record is read from JSON.

    ``types``: the JSON types accepted (``object``: any value; a ``bool`` only where ``bool``
    is named). ``default``: the value when the field is absent or null (:data:`REQUIRED`: it
    must be there). ``convert``: applied to a non-null value (also a default) after the type
    check, e.g. ``float`` or an enum; a ``ValueError``/``TypeError`` from it is a bad value.
    """

    types: type | tuple[type, ...] = object
    default: Any = REQUIRED
    convert: Callable[[Any], Any] | None = None

    def read(self, name: str, value: Any) -> Any:
        """Check and convert ``value`` (``None``: absent) for the field ``name``.

        :raises FieldError: missing, wrong JSON type, or a value ``convert`` refuses.
        """
        if value is None:
            if self.default is REQUIRED:
                raise FieldError(f"missing field {name!r}")
            value = self.default
        elif not _has_type(value, self.types):
            raise FieldError(f"field {name!r} has the wrong type ({type(value).__name__})")
        if value is None or self.convert is None:
            return value
        try:
            return self.convert(value)
        except (TypeError, ValueError) as exc:
            raise FieldError(f"field {name!r} has a bad value ({exc})") from None


def _has_type(value: Any, types: type | tuple[type, ...]) -> bool:
    """``isinstance`` where a ``bool`` is not a number (only a field naming ``bool`` or
    ``object`` takes one)."""
    if isinstance(value, bool):
        allowed = types if isinstance(types, tuple) else (types,)
        return bool in allowed or object in allowed
    return isinstance(value, types)


def read_fields(d: object, table: Mapping[str, Field]) -> dict[str, Any]:
    """Read the fields of ``table`` from the JSON object ``d``, in table order; other keys in
    ``d`` are ignored (old and newer writers stay readable).

    :raises FieldError: ``d`` is not an object, or a field is bad (see :meth:`Field.read`).
    """
    if not isinstance(d, Mapping):
        raise FieldError(f"a {type(d).__name__}, not an object")
    return {name: f.read(name, d.get(name)) for name, f in table.items()}


def dump_fields(record: object, table: Mapping[str, Field]) -> dict[str, Any]:
    """The JSON-ready dict of ``record``'s fields named in ``table`` (an enum as its value;
    dicts and lists copied, so the result shares nothing with the frozen record)."""
    return {name: _plain(getattr(record, name)) for name in table}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (dict, list)):
        return copy.deepcopy(value)
    return value


_STYLE: Mapping[str, Field] = {
    "id": Field(int),
    "label": Field(str),
    "version": Field(str),
    "category": Field(str),
    "is_vip": Field(object, False, bool),
    "preview_url": Field(str, None),
}


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
        return dump_fields(self, _STYLE)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Style:
        """Inverse of :meth:`to_json` (``is_vip`` is any truthy value). :raises FieldError:
        bad data."""
        return cls(**read_fields(d, _STYLE))


_CREDITS: Mapping[str, Field] = {
    "count": Field(int),
    "queue_limit": Field(int, None),
    "user_id": Field(str, None),
}


@dataclass(frozen=True, slots=True)
class Credits:
    """Account balance from ``/api/v1/user/tokens``."""

    count: int
    queue_limit: int | None = None
    user_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dump_fields(self, _CREDITS)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Credits:
        """Inverse of :meth:`to_json`. :raises FieldError: bad data."""
        return cls(**read_fields(d, _CREDITS))


_GENERATE_RESULT: Mapping[str, Field] = {"img_uuid": Field(str), "cost": Field(int, None)}


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """What ``generate`` returns: the job id and the credits charged (if reported)."""

    img_uuid: str
    cost: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dump_fields(self, _GENERATE_RESULT)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> GenerateResult:
        """Inverse of :meth:`to_json`. :raises FieldError: bad data."""
        return cls(**read_fields(d, _GENERATE_RESULT))


_JOB_DETAIL: Mapping[str, Field] = {
    "img_uuid": Field(str),
    "raw_status": Field(str),
    "state": Field(str, convert=JobState),
    "result_url": Field(str, None),
    "expires_at": Field(NUMBER, None, float),
    "output_duration": Field(NUMBER, None, float),
    "start_time": Field(str, None),
    "end_time": Field(str, None),
    "model_id": Field(str, None),
}


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
        return dump_fields(self, _JOB_DETAIL)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> JobDetail:
        """Inverse of :meth:`to_json` (``raw`` comes back empty). :raises FieldError: bad data
        (also a ``state`` that is not a :class:`JobState` value)."""
        return cls(**read_fields(d, _JOB_DETAIL))


_JOB_SPEC: Mapping[str, Field] = {
    "model": Field(int),
    "duration": Field(int),
    "resolution": Field(str),
    "seed": Field(int),
    "prompt": Field(str, None),
}


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
        return dump_fields(self, _JOB_SPEC)

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
        """Inverse of :meth:`to_json`. :raises FieldError: bad data."""
        return cls(**read_fields(d, _JOB_SPEC))
