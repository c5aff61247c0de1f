"""Simulator configuration: defaults and validation of JSON patches (docs/ARCHITECTURE.md §1)."""

from __future__ import annotations

import copy
from typing import Any

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

_CHOICES: dict[str, tuple[str, ...]] = {
    "success_status": ("success", "completed"),
    "result_field": ("json", "img_url", "output"),
    "waiting_status": ("WAITING", "queued"),
}
_NON_NEG_NUMBERS = (
    "pending_seconds",
    "processing_seconds",
    "processing_per_second",
    "url_ttl",
    "vip_multiplier",
)
_OPTIONAL_POSITIVE = ("download_rate",)
_OPTIONAL_NON_NEG_INT = ("daily_cap",)
_NON_NEG_INTS = ("queue_limit", "credits")


class ConfigPatchError(ValueError):
    """A config patch names an unknown key or has a value of the wrong type/range."""


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate_patch(patch: object) -> dict[str, Any]:
    """Check a config patch and return a normalised copy.

    :raises ConfigPatchError: not an object, an unknown key, or a bad value (the message names
        the key).
    """
    if not isinstance(patch, dict):
        raise ConfigPatchError("config patch must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in patch.items():
        if key not in DEFAULT_CONFIG:
            raise ConfigPatchError(f"unknown config key: {key}")
        if key in _CHOICES:
            if value not in _CHOICES[key]:
                raise ConfigPatchError(
                    f"bad value for {key}: expected one of {list(_CHOICES[key])}"
                )
        elif key in _NON_NEG_NUMBERS:
            if not _is_number(value) or value < 0:
                raise ConfigPatchError(f"bad value for {key}: expected a number >= 0")
            value = float(value)
        elif key in _OPTIONAL_POSITIVE:
            if value is not None and (not _is_number(value) or value <= 0):
                raise ConfigPatchError(f"bad value for {key}: expected null or a number > 0")
        elif key in _OPTIONAL_NON_NEG_INT:
            if value is not None and (not _is_int(value) or value < 0):
                raise ConfigPatchError(f"bad value for {key}: expected null or an integer >= 0")
        elif key in _NON_NEG_INTS:
            if not _is_int(value) or value < 0:
                raise ConfigPatchError(f"bad value for {key}: expected an integer >= 0")
        elif key == "refund_on_failure":
            if not isinstance(value, bool):
                raise ConfigPatchError("bad value for refund_on_failure: expected a boolean")
        elif key == "rates":
            if (
                not isinstance(value, dict)
                or not value
                or not all(
                    isinstance(k, str) and _is_number(v) and v >= 0 for k, v in value.items()
                )
            ):
                raise ConfigPatchError("bad value for rates: expected {resolution: number}")
            value = dict(value)
        out[key] = value
    return out


def default_config() -> dict[str, Any]:
    """A fresh deep copy of the defaults."""
    return copy.deepcopy(DEFAULT_CONFIG)
