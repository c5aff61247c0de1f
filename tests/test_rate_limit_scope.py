"""The self-imposed request rate limit protects a remote API; like the 5 s poll floor
(DECISIONS 6) it does not apply to a loopback server unless set explicitly (issue 15, P5)."""

from __future__ import annotations

from goenhance_nb._client import AsyncClient
from goenhance_nb._settings import Settings


def test_default_limit_applies_to_a_remote_api_only() -> None:
    remote, local = "https://api.goenhance.ai", "http://127.0.0.1:8123"
    assert Settings().rate_limit_for(remote) == 5.0
    assert Settings().rate_limit_for(local) == 0.0  # the embedded simulator, a local server
    assert Settings().rate_limit_for("http://localhost:9") == 0.0
    # an explicit value applies everywhere, 0 switches it off everywhere
    assert Settings(rate_limit=5).rate_limit_for(local) == 5
    assert Settings(rate_limit=0).rate_limit_for(remote) == 0
    assert Settings.resolve(env={"GOENHANCE_RATE_LIMIT": "2"}).rate_limit_for(remote) == 2.0


def test_the_client_paces_only_where_the_limit_applies() -> None:
    remote = AsyncClient(Settings(), base_url="https://api.goenhance.ai", api_key=None)
    local = AsyncClient(Settings(), base_url="http://127.0.0.1:8123", api_key=None)
    try:
        assert remote.transport.rate_limiter is not None
        assert local.transport.rate_limiter is None
    finally:
        import asyncio

        asyncio.run(remote.aclose())
        asyncio.run(local.aclose())
