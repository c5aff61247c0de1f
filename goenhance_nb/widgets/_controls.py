"""Small shared controls and helpers for the status widget and the panel (core ipywidgets only).

Nothing here does HTTP or file I/O (but :func:`result_bundle`, which has the result published
once by ``_outputs``), and nothing here reads :class:`Settings`: widget state is saved into the
``.ipynb``, so only display text goes into synced traits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from goenhance_nb._display import publish_result
from goenhance_nb._lifecycle import Badge

if TYPE_CHECKING:
    from goenhance_nb._cache import ResultRecord

__all__ = [
    "Throttle",
    "append_bundle",
    "backend_label",
    "clear_outputs",
    "descendants",
    "fmt_seconds",
    "result_bundle",
    "set_badge",
    "short_id",
    "state_badge",
]


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
    """A Label used as the state badge (class ``goenhance-state``), showing ``queued``."""
    bg, fg = Badge.QUEUED.colours
    return W.Label(
        Badge.QUEUED.value,
        style={"background": bg, "text_color": fg, "font_weight": "bold"},
        layout=W.Layout(padding="0 6px"),
        _dom_classes=["goenhance-state"],
    )


def set_badge(badge: W.Label, text: str, colours: tuple[str, str]) -> None:
    """Set the badge text and its ``(background, text)`` colours (call inside ``hold_sync``)."""
    badge.value = text
    badge.style.background, badge.style.text_color = colours


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
    result: ResultRecord, *, notebook_dir: Path | None = None, cached: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The display bundle ``(data, metadata)`` for a finished result, published beside the
    notebook by :func:`goenhance_nb._display.publish_result` (file work in ``_outputs``: call
    it once per result, never from a render).

    :raises GoEnhanceError: the stored file is gone or cannot be linked or copied.
    """
    # TODO(lead): only the panel uses this; point it at _display.publish_result and delete.
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


def descendants(root: W.Widget) -> list[W.Widget]:
    """Every widget reachable from ``root`` through its traits (children, layout, style, ...),
    deepest first, ``root`` excluded: what must be closed with it so no orphan model (whose
    children are closed) stays in the kernel's widget registry."""
    seen: set[int] = {id(root)}
    order: list[W.Widget] = []
    stack = [root]
    while stack:
        widget = stack.pop()
        for value in widget.trait_values().values():
            items = value if isinstance(value, (list, tuple)) else (value,)
            for item in items:
                if isinstance(item, W.Widget) and id(item) not in seen:
                    seen.add(id(item))
                    order.append(item)
                    stack.append(item)
    return order[::-1]
