"""Small shared controls and helpers for the status widget and the panel (core ipywidgets only).

Nothing here does HTTP or file I/O, and nothing here reads :class:`Settings`: widget state is
saved into the ``.ipynb``, so only display text goes into synced traits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ipywidgets as W

from goenhance_nb._display import publish_result

__all__ = [
    "STATE_COLOURS",
    "Throttle",
    "append_bundle",
    "backend_label",
    "clear_outputs",
    "fmt_seconds",
    "normalise_state",
    "result_bundle",
    "short_id",
    "state_badge",
]

#: badge text -> (background, text colour)
STATE_COLOURS: dict[str, tuple[str, str]] = {
    "queued": ("#e0e0e0", "#333333"),
    "running": ("#1565c0", "#ffffff"),
    "done": ("#2e7d32", "#ffffff"),
    "cached": ("#00796b", "#ffffff"),
    "failed": ("#c62828", "#ffffff"),
    "timed out": ("#ef6c00", "#ffffff"),
}

_TERMINAL_KINDS = {"done", "cached", "failed", "timed_out"}


def normalise_state(kind: str | None, state: Any, *, cached: bool = False) -> str | None:
    """Map an engine event kind / JobState to the badge text (ARCHITECTURE.md section 4).

    Returns one of ``queued``, ``running``, ``done``, ``failed``, ``cached``, ``timed out``, or
    ``None`` when the event says nothing about the state (e.g. ``watch_cancelled``).
    """
    if kind == "cached" or (kind == "done" and cached):
        return "cached"
    if kind == "done":
        return "done"
    if kind == "failed":
        return "failed"
    if kind == "timed_out":
        return "timed out"
    if kind in {"validated", "queued_locally", "submitting", "submitted"}:
        return "queued" if kind != "submitted" or state is None else _from_state(state)
    if kind == "watch_cancelled":
        return None
    return _from_state(state)


def _from_state(state: Any) -> str | None:
    if state is None:
        return None
    text = str(getattr(state, "value", state)).strip().lower().replace("_", " ")
    if text in {"queued", "pending", "waiting", "local queue", "queued locally", "submitting"}:
        return "queued"
    if text in {"running", "processing", "downloading"}:
        return "running"
    if text in {"done", "success", "completed"}:
        return "done"
    if text in {"failed", "error"}:
        return "failed"
    if text in {"timed out", "timedout"}:
        return "timed out"
    if text == "cached":
        return "cached"
    return "running"


def short_id(job_id: str | None, n: int = 8) -> str:
    """The first ``n`` characters of a job id (``img_uuid``), or an em dash."""
    return job_id[:n] if job_id else "—"


def fmt_seconds(s: float | None) -> str:
    """``75.2`` -> ``"1:15"``; ``9.4`` -> ``"9 s"``."""
    if s is None:
        return "—"
    s = max(0.0, float(s))
    if s < 60:
        return f"{int(s)} s"
    m, sec = divmod(int(s), 60)
    if m < 60:
        return f"{m}:{sec:02d}"
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}"


def backend_label(backend: str | None) -> str:
    """``"simulated"`` -> ``"SIMULATED"``; a host stays as it is."""
    if not backend or backend == "simulated":
        return "SIMULATED"
    return str(backend)


def state_badge() -> W.Label:
    """A Label used as the normalised state badge (class ``goenhance-state``)."""
    badge = W.Label(
        "queued",
        style={
            "background": STATE_COLOURS["queued"][0],
            "text_color": STATE_COLOURS["queued"][1],
            "font_weight": "bold",
        },
        layout=W.Layout(padding="0 6px"),
        _dom_classes=["goenhance-state"],
    )
    return badge


def set_badge(badge: W.Label, text: str) -> None:
    """Set the badge text and its colours (call inside ``hold_sync``)."""
    bg, fg = STATE_COLOURS.get(text, STATE_COLOURS["running"])
    badge.value = text
    badge.style.background = bg
    badge.style.text_color = fg


def append_bundle(
    out: W.Output, data: dict[str, Any], metadata: dict[str, Any] | None = None
) -> None:
    """Append a display_data output (a mime bundle) to ``out`` by setting its ``outputs`` trait.

    Safe from any thread (no ``with out:``; PLATFORM-NOTES, nbclient issue 312). The
    read-modify-write of ``outputs`` runs under one lock, so appends from the engine thread and
    other threads never drop each other's output.
    """
    item = {"output_type": "display_data", "data": dict(data), "metadata": dict(metadata or {})}
    with _OUTPUTS_LOCK:
        out.outputs = (*out.outputs, item)


def clear_outputs(out: W.Output) -> None:
    """Clear ``out`` from any thread (``Output.clear_output`` uses ``with out:`` internally)."""
    with _OUTPUTS_LOCK:
        out.outputs = ()


_OUTPUTS_LOCK = threading.RLock()


def result_bundle(
    result: Any, *, notebook_dir: Path | None = None, cached: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The display bundle ``(data, metadata)`` for a finished :class:`ResultRecord`.

    Uses :func:`goenhance_nb._display.publish_result` (regular-output ``<video>`` with a path
    relative to the notebook, provenance metadata).
    """
    bundle = publish_result(result, notebook_dir=notebook_dir, cached=cached)
    return dict(bundle), dict(bundle.metadata)


class Throttle:
    """Run ``fn`` at most once per ``interval`` seconds; the latest request is always delivered.

    ``request()`` either runs ``fn`` now (when the last run is at least ``interval`` ago) or makes
    sure a timer will run it when the interval is over. ``fn`` always renders the newest state,
    so coalesced requests lose nothing but intermediate frames. Thread-safe; runs of ``fn`` never
    overlap.
    """

    def __init__(
        self,
        fn: Callable[[], None],
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fn = fn
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._last = float("-inf")
        self._timer: threading.Timer | None = None
        self.runs = 0

    def request(self) -> None:
        """Ask for a render: now if allowed, else once the interval has passed."""
        with self._lock:
            if self._timer is not None:
                return  # a render is already scheduled; it will show the newest state
            wait = self._last + self.interval - self._clock()
            if wait > 0:
                self._timer = threading.Timer(wait, self._fire)
                self._timer.daemon = True
                self._timer.start()
                return
            self._last = self._clock()
        self._run()

    def flush(self) -> None:
        """Render now (cancelling a scheduled render)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._last = self._clock()
        self._run()

    def cancel(self) -> None:
        """Drop a scheduled render (used when the widget is closed)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
            self._last = self._clock()
        self._run()

    def _run(self) -> None:
        with self._run_lock:
            self.runs += 1
            self._fn()
