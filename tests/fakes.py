"""Plain records for table tests that need no simulator (status view, status words)."""

from __future__ import annotations

from typing import Any

from goenhance_nb._cache import ResultRecord

T0 = 1_000_000.0  # when the fake job began


def fake_record(key: str, job_id: str = "job-uuid-1234", **kw: Any) -> ResultRecord:
    """A finished 3 s, 540p Anime Style result of 15 credits made at ``T0`` on the simulator."""
    base: dict[str, Any] = {
        "key": key,
        "path": "/store/x.mp4",
        "sha": "b3" * 32,
        "size": 10,
        "job_id": job_id,
        "model": 2000,
        "style_label": "Anime Style",
        "model_version": "v5",
        "params": {"duration": 3, "resolution": "540p"},
        "input_hash": "ab" * 32,
        "cost": 15,
        "backend": "simulated",
        "created": T0,
        "timings": {},
    }
    base.update(kw)
    return ResultRecord(**base)
