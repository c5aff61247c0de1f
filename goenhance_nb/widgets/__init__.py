"""Notebook widgets of goenhance_nb, built on core ipywidgets (DECISIONS 23).

- :class:`StatusWidget` — live, throttled status of one job (works in JupyterLab, Notebook 7,
  VS Code and Colab: no custom JavaScript).
- :class:`SweepProgress` — one live, throttled progress bar for a whole sweep.
- :func:`make_notifier` — the opt-in browser notification (``--notify``), an anywidget; None
  when anywidget is not installed (then the status widget's toast is the only notice).
- small controls shared with the panel (:func:`state_badge`, :func:`backend_label`, ...).
"""

from __future__ import annotations

from goenhance_nb.widgets._controls import (
    Throttle,
    append_bundle,
    backend_label,
    clear_outputs,
    result_bundle,
    short_id,
    state_badge,
)
from goenhance_nb.widgets._notify import job_notification, make_notifier
from goenhance_nb.widgets._status import StatusWidget, what_to_do
from goenhance_nb.widgets._sweep_progress import SweepProgress

__all__ = [
    "StatusWidget",
    "SweepProgress",
    "Throttle",
    "append_bundle",
    "backend_label",
    "clear_outputs",
    "job_notification",
    "make_notifier",
    "result_bundle",
    "short_id",
    "state_badge",
    "what_to_do",
]
