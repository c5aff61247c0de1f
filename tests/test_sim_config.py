"""Simulator config patches: one check per key, messages naming the key (no simulator needed)."""

from __future__ import annotations

from typing import Any

import pytest

from goenhance_nb.sim.config import DEFAULT_CONFIG, ConfigPatchError, default_config, validate_patch


def test_every_default_key_has_a_check_and_its_default_passes() -> None:
    assert validate_patch(default_config()) == DEFAULT_CONFIG


@pytest.mark.parametrize(
    ("patch", "normalised"),
    [
        ({"pending_seconds": 1}, {"pending_seconds": 1.0}),
        ({"success_status": "completed"}, {"success_status": "completed"}),
        ({"download_rate": None}, {"download_rate": None}),
        ({"download_rate": 20_000}, {"download_rate": 20_000}),
        ({"daily_cap": 0}, {"daily_cap": 0}),
        ({"credits": 14, "queue_limit": 1}, {"credits": 14, "queue_limit": 1}),
        ({"refund_on_failure": False}, {"refund_on_failure": False}),
        ({"rates": {"540p": 1, "720p": 2.5}}, {"rates": {"540p": 1, "720p": 2.5}}),
    ],
)
def test_good_patches_are_normalised(patch: dict[str, Any], normalised: dict[str, Any]) -> None:
    out = validate_patch(patch)
    assert out == normalised
    assert [type(v) for v in out.values()] == [type(v) for v in normalised.values()]


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ([], "config patch must be a JSON object"),
        ({"bogus": 1}, "unknown config key: bogus"),
        ({"pending_seconds": -1}, "bad value for pending_seconds: expected a number >= 0"),
        ({"url_ttl": True}, "bad value for url_ttl: expected a number >= 0"),
        (
            {"result_field": "html"},
            "bad value for result_field: expected one of ['json', 'img_url', 'output']",
        ),
        ({"download_rate": 0}, "bad value for download_rate: expected null or a number > 0"),
        ({"daily_cap": 1.5}, "bad value for daily_cap: expected null or an integer >= 0"),
        ({"credits": -1}, "bad value for credits: expected an integer >= 0"),
        ({"refund_on_failure": 1}, "bad value for refund_on_failure: expected a boolean"),
        ({"rates": {}}, "bad value for rates: expected {resolution: number}"),
        ({"rates": {"540p": -1}}, "bad value for rates: expected {resolution: number}"),
    ],
)
def test_bad_patches_name_the_key(patch: Any, message: str) -> None:
    with pytest.raises(ConfigPatchError) as info:
        validate_patch(patch)
    assert str(info.value) == message
