"""SweepProgress: one live, throttled progress bar for a whole sweep (core ipywidgets).

An ``HBox`` of an ``IntProgress`` (items finished out of all) and a ``Label`` (done / running /
cached / failed, credits so far: :meth:`Sweep.tally <goenhance_nb._sweep.Sweep.tally>`). It
subscribes to every job of the sweep; the events arrive on the engine thread and only request
a render, which a :class:`Throttle` runs at most 4 times a second (the last render always shows
the newest state), as the status widget does. Only counts reach synced traits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from goenhance_nb.widgets._controls import Throttle

if TYPE_CHECKING:  # annotations only
    from goenhance_nb._job import JobEvent
    from goenhance_nb._sweep import Sweep

__all__ = ["SweepProgress"]


class SweepProgress(W.HBox):
    """Live progress of ``sweep``: ``bar`` (``IntProgress``, finished items) and ``label``.

    :attr:`settled` is set once a render has shown every item finished. ``close()``
    unsubscribes from the jobs and closes every model the bar made (children, layouts,
    styles), so no widget state of it stays in a saved notebook.
    """

    def __init__(self, sweep: Sweep, *, interval: float = 0.25, **kwargs: Any) -> None:
        self._sweep = sweep
        self.settled = threading.Event()
        self.bar = W.IntProgress(
            value=0,
            min=0,
            max=max(1, len(sweep.items)),
            description="sweep",
            layout=W.Layout(width="40%"),
        )
        self.label = W.Label(value="")
        super().__init__([self.bar, self.label], **kwargs)
        self.add_class("goenhance-sweep-progress")
        self._throttle = Throttle(self._render, interval)
        self._unsubscribe: list[Callable[[], None]] = []
        self._render()
        for item in sweep.items:
            if item.job is not None:
                self._unsubscribe.append(item.job.subscribe(self._on_event))

    def flush(self) -> None:
        """Render the newest state now."""
        self._throttle.flush()

    def close(self) -> None:
        """Unsubscribe from the jobs, drop a scheduled render, close the children."""
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe.clear()
        self._throttle.cancel()
        for w in (self.bar, self.label):  # with their layout and style models: a saved
            w.layout.close()  # notebook keeps no state of a bar that is gone
            w.style.close()
            w.close()
        self.layout.close()
        super().close()

    def _on_event(self, ev: JobEvent) -> None:  # engine thread: only ask for a render
        self._throttle.request()

    def _render(self) -> None:
        t = self._sweep.tally()
        finished = t["done"] + t["cached"] + t["failed"]
        with self.bar.hold_sync():
            self.bar.value = finished
            if t["failed"]:
                self.bar.bar_style = "danger"
            elif finished == len(self._sweep.items):
                self.bar.bar_style = "success"
            else:
                self.bar.bar_style = ""
        self.label.value = self._sweep.progress_line()
        if finished == len(self._sweep.items):
            self.settled.set()
