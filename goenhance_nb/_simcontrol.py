"""Simulator controls for notebooks: slow it down, inject a fault, read its request log.

``goenhance_nb.simulator()`` (or ``Session.simulator()``) returns a :class:`SimulatorControl`
bound to the simulator the session talks to; it refuses a session on the real API. The bearer
key travels inside the session's client as for every request: it is never returned, printed or
stored here. Settings and fault kinds: ``goenhance-sim --help`` and the README.

The embedded simulator is shared by every kernel on the machine that uses the same cache dir,
so a setting or a fault reaches their jobs too; :meth:`SimulatorControl.reset` puts everything
back (and resets every account's balance).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from goenhance_nb._errors import redact_url

if TYPE_CHECKING:
    from goenhance_nb._client import AsyncClient

__all__ = ["SimulatorControl"]


class SimulatorControl:
    """Controls of one simulator (docs: README "Slowing the simulator, injecting faults").

    Every method makes one request to the simulator's control routes (never an API call, never
    charged) and raises our error types (``ConfigError`` for a setting or fault it refuses).
    """

    def __init__(
        self,
        client: AsyncClient,
        run: Callable[[Coroutine[Any, Any, Any]], Any],
        base_url: str,
    ) -> None:
        self._client = client
        self._run = run
        self._base_url = base_url

    def __repr__(self) -> str:
        return f"<SimulatorControl {redact_url(self._base_url)}>"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self._run(self._client.sim_control(method, path, body))

    def config(self) -> dict[str, Any]:
        """The simulator's current settings."""
        answer = self._call("GET", "/sim/config")
        return dict(answer) if isinstance(answer, dict) else {}

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings, e.g. ``configure(processing_seconds=30)``; returns all settings.

        :raises ConfigError: an unknown setting or a bad value (nothing is changed).
        """
        answer = self._call("POST", "/sim/config", settings)
        return dict(answer) if isinstance(answer, dict) else {}

    def fault(self, kind: str, *, times: int = 1, path: str | None = None, **options: Any) -> None:
        """Queue a one-shot fault, e.g. ``fault("http_500", path="/api/v1/jobs/detail")``.

        ``times`` repeats it; ``path`` limits it to requests whose path starts with it; other
        options are the kind's own (``delay``, ``retry_after``, ``after_bytes``, ...).

        :raises ConfigError: an unknown kind or a bad option.
        """
        spec: dict[str, Any] = {"kind": kind, "times": times, **options}
        if path is not None:
            spec["path"] = path
        self._call("POST", "/sim/faults", {"faults": [spec]})

    def faults(self) -> list[dict[str, Any]]:
        """The faults still queued."""
        answer = self._call("GET", "/sim/faults")
        items = answer.get("faults") if isinstance(answer, dict) else None
        return [dict(f) for f in items or () if isinstance(f, dict)]

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self._call("DELETE", "/sim/faults")

    def requests(self) -> list[dict[str, Any]]:
        """The simulator's log of API calls and downloads (method, path, status, time)."""
        answer = self._call("GET", "/sim/requests")
        items = answer.get("requests") if isinstance(answer, dict) else None
        return [dict(r) for r in items or () if isinstance(r, dict)]

    def reset(self) -> None:
        """Clear faults and the request log; restore the start settings and every balance."""
        self._call("DELETE", "/sim/faults")
        self._call("DELETE", "/sim/requests")
        self._call("DELETE", "/sim/config")
