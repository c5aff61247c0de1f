"""Which backend a replay/offline session keys its cache with, and that leaving replay never
keeps a backend that was only assumed (issue 14 point 2; DECISIONS 7/26: simulated and real
results never share cache entries)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workers.support import make_session

from goenhance_nb._session import Session
from goenhance_nb._settings import Settings


def _lockfile(path: Path, backend: str) -> Path:
    path.write_text(json.dumps({"results": {"k" * 64: {"backend": backend}}}))
    return path


def test_leaving_replay_asks_the_server_again(sim: Any, tmp_path: Path) -> None:
    # A lockfile made on another backend; this base URL is in fact our simulator.
    lock = _lockfile(tmp_path / "goenhance.lock.json", "api.example.com")
    s = make_session(sim, tmp_path / "c", mode="replay", lockfile=lock)
    try:
        assert s.backend == "api.example.com"  # replay: taken from the lockfile, nothing asked
        s.set_mode("live")
        assert s.backend == "simulated"  # live: asked, and the server says it is a simulator
    finally:
        s.close()


def test_the_canonical_api_is_known_without_the_lockfile(tmp_path: Path) -> None:
    lock = _lockfile(tmp_path / "goenhance.lock.json", "simulated")
    settings = Settings.resolve(
        explicit={
            "api_key": "real-key-for-a-test",
            "cache_dir": tmp_path / "c",
            "mode": "replay",
            "lockfile": lock,
        },
        env={},
    )
    s = Session(settings)
    try:
        # a real key on the real API never serves results the lockfile says were simulated
        assert s.backend == "api.goenhance.ai"
        assert s.client.request_count == 0
    finally:
        s.close()
