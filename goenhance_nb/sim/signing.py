"""Signed result URLs: HMAC-SHA256 over the path and an expiry, with the state dir's secret."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable


def result_url_path(job_id: str) -> str:
    """The public path of a job's result file."""
    return f"/sim/results/{job_id}/{job_id[:8]}_0.mp4"


class UrlSigner:
    """Signs and verifies `?exp=&sig=` pairs; `clock` decides whether `exp` has passed."""

    def __init__(self, secret: bytes, clock: Callable[[], float]) -> None:
        self._secret = secret
        self._clock = clock

    def sign(self, path: str, exp: int) -> str:
        """HMAC-SHA256 over `path` and `exp` with the secret."""
        return hmac.new(self._secret, f"{path}\n{exp}".encode(), hashlib.sha256).hexdigest()

    def verify(self, path: str, exp: str | None, sig: str | None) -> bool:
        """True when the signature matches and `exp` is in the future."""
        if not exp or not sig or not exp.isdigit():
            return False
        if not hmac.compare_digest(self.sign(path, int(exp)), sig):
            return False
        return int(exp) > self._clock()
