"""Simulator configuration: defaults and validation of JSON patches (docs/ARCHITECTURE.md §1)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

DEFAULT_CONFIG: dict[str, Any] = {
    "pending_seconds": 2.0,
    "processing_seconds": 4.0,
    "processing_per_second": 0.5,
    "success_status": "success",
    "result_field": "json",
    "waiting_status": "WAITING",
    "queue_limit": 3,
    "url_ttl": 43200.0,
    "download_rate": None,
    "daily_cap": None,
    "refund_on_failure": True,
    "rates": {"540p": 5, "720p": 10},
    "vip_multiplier": 1.5,
    "credits": 5000,
}


class ConfigPatchError(ValueError):
    """A config patch names an unknown key or has a value of the wrong type/range."""


def _is_number(v: object) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: object) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _bad(key: str, expected: str) -> ConfigPatchError:
    return ConfigPatchError(f"bad value for {key}: expected {expected}")


def _choice(*options: str) -> Callable[[str, object], object]:
    def check(key: str, value: object) -> object:
        if value not in options:
            raise _bad(key, f"one of {list(options)}")
        return value

    return check


def _number(key: str, value: object) -> float:
    if not _is_number(value) or value < 0:
        raise _bad(key, "a number >= 0")
    return float(value)


def _optional_positive(key: str, value: object) -> float | None:
    if value is not None and (not _is_number(value) or value <= 0):
        raise _bad(key, "null or a number > 0")
    return value


def _optional_count(key: str, value: object) -> int | None:
    if value is not None and (not _is_int(value) or value < 0):
        raise _bad(key, "null or an integer >= 0")
    return value


def _count(key: str, value: object) -> int:
    if not _is_int(value) or value < 0:
        raise _bad(key, "an integer >= 0")
    return value


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _bad(key, "a boolean")
    return value


def _rates(key: str, value: object) -> dict[str, Any]:
    if (
        not isinstance(value, dict)
        or not value
        or not all(isinstance(k, str) and _is_number(v) and v >= 0 for k, v in value.items())
    ):
        raise _bad(key, "{resolution: number}")
    return dict(value)


#: Every config key -> its check, which returns the normalised value or raises
#: :class:`ConfigPatchError` naming the key.
_CHECKS: Mapping[str, Callable[[str, object], object]] = {
    "pending_seconds": _number,
    "processing_seconds": _number,
    "processing_per_second": _number,
    "success_status": _choice("success", "completed"),
    "result_field": _choice("json", "img_url", "output"),
    "waiting_status": _choice("WAITING", "queued"),
    "queue_limit": _count,
    "url_ttl": _number,
    "download_rate": _optional_positive,
    "daily_cap": _optional_count,
    "refund_on_failure": _boolean,
    "rates": _rates,
    "vip_multiplier": _number,
    "credits": _count,
}


def validate_patch(patch: object) -> dict[str, Any]:
    """Check a config patch and return a normalised copy.

    :raises ConfigPatchError: not an object, an unknown key, or a bad value (the message names
        the key).
    """
    if not isinstance(patch, dict):
        raise ConfigPatchError("config patch must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if key not in _CHECKS:
            raise ConfigPatchError(f"unknown config key: {key}")
        out[key] = _CHECKS[key](key, value)
    return out


def default_config() -> dict[str, Any]:
    """A fresh deep copy of the defaults."""
    return copy.deepcopy(DEFAULT_CONFIG)
