"""One live, throttled progress bar for a list of jobs: a sweep, or ``wait_all(jobs)``.

:class:`JobsProgress` is an ``HBox`` of an ``IntProgress`` (items finished out of all) and a
``Label`` (one line: done / running / cached / failed, credits so far). What it shows comes
from a ``snapshot`` callable returning a :class:`ProgressView` (the caller counts; the widget
only renders). It subscribes to every job; the events arrive on the engine thread and only
request a render, which a :class:`Throttle` runs at most 4 times a second (the last render
always shows the newest state), as the status widget does. Only counts and the line reach
synced traits.

:class:`SweepProgress` is the bar of a :class:`~goenhance_nb._sweep.Sweep` (its ``tally`` and
``progress_line``); :func:`goenhance_nb._progress.wait_all` builds a :class:`JobsProgress`
for any list of jobs.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from goenhance_nb.widgets._controls import Throttle

if TYPE_CHECKING:  # annotations only
    from goenhance_nb._job import Job, JobEvent
    from goenhance_nb._sweep import Sweep

__all__ = ["JobsProgress", "ProgressView", "SweepProgress"]


@dataclass(frozen=True, slots=True)
class ProgressView:
    """What the bar shows: ``finished`` of ``total`` items, whether any ``failed`` (the bar
    turns red), and the one-line summary ``line``."""

    finished: int
    total: int
    failed: int
    line: str

    @property
    def bar_style(self) -> str:
        """``danger`` once an item failed, ``success`` when all finished, else ``""``."""
        if self.failed:
            return "danger"
        return "success" if self.finished >= self.total else ""


class JobsProgress(W.HBox):
    """Live progress of ``jobs``: ``bar`` (``IntProgress``, finished items) and ``label``.

    ``snapshot()`` is called on each render (any thread) and returns the :class:`ProgressView`
    to show; ``description`` is the bar's label. :attr:`settled` is set once a render has shown
    every item finished. ``close()`` unsubscribes from the jobs and closes every model the bar
    made (children, layouts, styles), so no widget state of it stays in a saved notebook.
    """

    def __init__(
        self,
        jobs: Sequence[Job],
        snapshot: Callable[[], ProgressView],
        *,
        description: str = "jobs",
        interval: float = 0.25,
        **kwargs: Any,
    ) -> None:
        self._snapshot = snapshot
        self.settled = threading.Event()
        first = snapshot()
        self.bar = W.IntProgress(
            value=0,
            min=0,
            max=max(1, first.total),
            description=description,
            layout=W.Layout(width="40%", min_width="160px"),
        )
        self.label = W.Label(value="", layout=W.Layout(flex="1 1 auto"))
        super().__init__([self.bar, self.label], layout=W.Layout(flex_flow="row wrap"), **kwargs)
        self.add_class("goenhance-sweep-progress")
        self.add_class("goenhance-jobs-progress")
        self._throttle = Throttle(self._render, interval)
        self._unsubscribe: list[Callable[[], None]] = []
        self._render()
        for job in jobs:
            self._unsubscribe.append(job.subscribe(self._on_event))

    def flush(self) -> None:
        """Render the newest state now."""
        self._throttle.flush()

    def close(self) -> None:
        """Unsubscribe from the jobs, drop a scheduled render, close the children."""
        for unsubscribe in self._unsubscribe:
            with contextlib.suppress(RuntimeError):  # the session (its loop) closed first
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
        view = self._snapshot()
        with self.bar.hold_sync():
            self.bar.max = max(1, view.total)
            self.bar.value = view.finished
            self.bar.bar_style = view.bar_style
        self.label.value = view.line
        if view.finished >= view.total:
            self.settled.set()


def sweep_view(sweep: Sweep) -> ProgressView:
    """The :class:`ProgressView` of ``sweep`` now (its live ``tally`` and ``progress_line``)."""
    t = sweep.tally()
    finished = t["done"] + t["cached"] + t["failed"]
    return ProgressView(finished, len(sweep.items), t["failed"], sweep.progress_line())


class SweepProgress(JobsProgress):
    """Live progress of ``sweep`` (a :class:`JobsProgress` over its submitted jobs)."""

    def __init__(self, sweep: Sweep, *, interval: float = 0.25, **kwargs: Any) -> None:
        self._sweep = sweep
        jobs = [item.job for item in sweep.items if item.job is not None]
        super().__init__(
            jobs, lambda: sweep_view(sweep), description="sweep", interval=interval, **kwargs
        )
