"""Simulated accounts: API keys, credit balances and the daily generation cap."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import asdict, dataclass
from typing import Any

from goenhance_nb.sim.jobs import APIFailure


def account_id(key: str) -> str:
    """Stable account id for a key (never the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Account:
    """One account as persisted in `accounts.json`."""

    user_id: str
    credits: int
    day: str = ""
    """UTC date (`YYYY-MM-DD`) that `day_count` counts."""
    day_count: int = 0

    @classmethod
    def new(cls, aid: str, credits: int) -> Account:
        """A fresh account with `credits`."""
        return cls(user_id=f"sim-user-{aid[:8]}", credits=credits)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Account:
        """Read one `accounts.json` value."""
        return cls(
            user_id=d["user_id"], credits=d["credits"], day=d["day"], day_count=d["day_count"]
        )

    def to_json(self) -> dict[str, Any]:
        """The `accounts.json` value."""
        return asdict(self)

    def charge(self, cost: int, now: float, daily_cap: int | None) -> None:
        """Count one generation today and deduct `cost`.

        :raises APIFailure: 429 `daily limit exceeded`, 402 `insufficient credits` (nothing
            deducted).
        """
        today = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).strftime("%Y-%m-%d")
        if self.day != today:
            self.day, self.day_count = today, 0
        if daily_cap is not None and self.day_count >= daily_cap:
            raise APIFailure(429, "daily limit exceeded")
        if self.credits < cost:
            raise APIFailure(402, "insufficient credits")
        self.credits -= cost
        self.day_count += 1


def key_matches(keys: dict[str, str], key: str | None) -> str | None:
    """The account id for a bearer key among `keys` (key -> account id), compared in constant
    time, or None if it is not accepted."""
    if not key:
        return None
    for k, aid in keys.items():
        if hmac.compare_digest(k.encode(), key.encode()):
            return aid
    return None
