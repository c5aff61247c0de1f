"""StatusWidget: a live, throttled view of one :class:`~goenhance_nb._engine.Job` (core ipywidgets).

The widget subscribes to the job's events (delivered on the engine's background thread), keeps
the newest facts in a small model under a lock, and renders them at most ``4`` times a second
(the last render always shows the newest state). Rendering sets traits directly inside
``hold_sync()``; the result video is appended to an ``Output`` by setting its ``outputs``
trait, never with ``with out:`` from a thread. A 1 s ticker keeps the elapsed time moving while
the job is active and stops when it ends.

Only display text reaches synced traits: never the API key, a signed result URL or anything
from ``Settings`` (widget state is saved into the ``.ipynb``).
"""

from __future__ import annotations

import contextlib
import html
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as W

from goenhance_nb._display import what_to_do
from goenhance_nb._errors import redact_text
from goenhance_nb.widgets._controls import (
    Throttle,
    append_bundle,
    backend_label,
    clear_outputs,
    fmt_seconds,
    normalise_state,
    result_bundle,
    set_badge,
    short_id,
    state_badge,
)

__all__ = ["StatusWidget", "estimate_runtime", "what_to_do"]

_TERMINAL = {"done", "cached", "failed", "timed out"}
_TERMINAL_KINDS = {"done", "cached", "failed", "timed_out"}


def estimate_runtime(session: Any, job: Any) -> tuple[float | None, int]:
    """An ETA in seconds from observed history: the median submitted->finished time of past
    results in the session's cache with the same backend, resolution and duration.

    Returns ``(None, 0)`` when there is no such history (then no ETA is shown). Never raises.
    """
    try:
        spec = getattr(job, "spec", None)
        backend = getattr(job, "backend", None)
        res = getattr(spec, "resolution", None)
        dur = getattr(spec, "duration", None)
        times: list[float] = []
        for rec in session.cache.list():
            t = rec.timings or {}
            if "submitted" not in t or "finished" not in t:
                continue
            if backend is not None and rec.backend != backend:
                continue
            p = rec.params or {}
            if res is not None and p.get("resolution") not in (None, res):
                continue
            if dur is not None and p.get("duration") not in (None, dur):
                continue
            runtime = float(t["finished"]) - float(t["submitted"])
            if runtime > 0:
                times.append(runtime)
        if not times:
            return None, 0
        return float(statistics.median(times)), len(times)
    except Exception:
        return None, 0


class _Model:
    """The newest facts about the followed job (guarded by StatusWidget._lock)."""

    def __init__(self) -> None:
        self.state = "queued"
        self.raw: str = ""
        self.job_id: str | None = None
        self.cost: int | None = None
        self.queue_position: int | None = None
        self.message: str = ""
        self.error: BaseException | None = None
        self.t0: float | None = None
        self.t_end: float | None = None
        self.final_elapsed: float | None = None
        self.result: Any = None
        self.cached = False
        self.watching = True
        self.terminal = False


class StatusWidget(W.VBox):
    """Live status of one job: badge, raw status, elapsed, queue, ETA estimate, id, cost, backend.

    ``StatusWidget(job, session=None)`` follows ``job`` (events from the engine thread). Buttons:
    *Stop watching* (``job.cancel_watch()``) and *Retry* (after a failure or timeout: submits the
    same transformation again through the session with ``force=True`` and follows the new job).
    When the job is done the result video is appended to :attr:`result` (an ``Output``) and a
    toast line reads ``Ready: <file>`` (``show_result=False`` keeps the video out of the widget,
    e.g. when the caller shows it as a regular output). ``compact=True`` gives a one-row view (no
    video) for lists.

    :attr:`settled` is a :class:`threading.Event` set once the terminal state has been rendered.
    """

    def __init__(
        self,
        job: Any,
        *,
        session: Any = None,
        compact: bool = False,
        show_result: bool = True,
        notebook_dir: Path | str | None = None,
        interval: float = 0.25,
        tick: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self._session = session
        self._compact = compact
        self._show_result = show_result and not compact
        self._notebook_dir = Path(notebook_dir) if notebook_dir is not None else None
        self._tick_interval = tick
        self._lock = threading.RLock()
        self._m = _Model()
        self._job: Any = None
        self._unsubscribe: Any = None
        self._ticker_stop: threading.Event | None = None
        self._shown_result: str | None = None
        self._result_problem = ""
        self._eta: float | None = None
        self._eta_n = 0
        self._closed = False
        self.settled = threading.Event()
        self.retries: list[Any] = []
        self._retry_callbacks: list[Any] = []

        self.badge = state_badge()
        self.raw_label = W.Label(
            "", layout=W.Layout(margin="0 8px 0 2px"), _dom_classes=["goenhance-raw-status"]
        )
        self.backend = W.Label(
            "",
            style={"font_weight": "bold"},
            layout=W.Layout(padding="0 6px"),
            _dom_classes=["goenhance-backend"],
        )
        self.job_id_label = W.Label(
            "—", layout=W.Layout(margin="0 6px"), _dom_classes=["goenhance-job-id"]
        )
        # the reproducibility mode in force (issue 14): shown when it is not plain "live"
        mode = str(session.mode) if session is not None else "live"
        self.mode_label = W.Label(
            f"mode: {mode}",
            layout=W.Layout(margin="0 6px", display=None if mode != "live" else "none"),
            _dom_classes=["goenhance-mode"],
        )
        self.info = W.Label("", _dom_classes=["goenhance-info"])
        self.timing = W.Label("", _dom_classes=["goenhance-elapsed"])
        self.progress = W.FloatProgress(
            value=0.0,
            min=0.0,
            max=1.0,
            description="estimate",
            bar_style="info",
            layout=W.Layout(display="none"),
        )
        self.error = W.HTML("", layout=W.Layout(display="none"), _dom_classes=["goenhance-error"])
        self.hint = W.Label("", layout=W.Layout(display="none"), _dom_classes=["goenhance-hint"])
        self.toast = W.Label("", layout=W.Layout(display="none"), _dom_classes=["goenhance-toast"])
        self.cancel_button = W.Button(
            description="Stop watching",
            icon="eye-slash",
            layout=W.Layout(width="auto"),
            _dom_classes=["goenhance-cancel"],
        )
        self.retry_button = W.Button(
            description="Retry",
            icon="redo",
            button_style="warning",
            layout=W.Layout(width="auto", display="none"),
            _dom_classes=["goenhance-retry"],
        )
        self.cancel_button.on_click(lambda _b: self.stop_watching())
        self.retry_button.on_click(lambda _b: self._retry_clicked())
        self.result = W.Output(
            layout=W.Layout(display=None if self._show_result else "none"),
            _dom_classes=["goenhance-status-result"],
        )

        head = W.HBox(
            [
                self.badge,
                W.Label("status:", layout=W.Layout(margin="0 0 0 8px")),
                self.raw_label,
                self.backend,
                self.mode_label,
                self.job_id_label,
                self.info,
            ],
            layout=W.Layout(align_items="center", flex_flow="row wrap"),
        )
        if compact:
            head.children = (
                *head.children,
                self.timing,
                self.error,
                self.cancel_button,
                self.retry_button,
                self.toast,
            )
            children: list[W.Widget] = [head]
        else:
            children = [
                head,
                W.HBox([self.timing, self.progress], layout=W.Layout(align_items="center")),
                self.error,
                self.hint,
                self.toast,
                W.HBox([self.cancel_button, self.retry_button]),
                self.result,
            ]
        super().__init__(children, **kwargs)
        self.add_class("goenhance-status")
        self._throttle = Throttle(self._render, interval)
        self.follow(job)

    # -- public -------------------------------------------------------------------------------
    @property
    def job(self) -> Any:
        """The job currently followed (a retry replaces it)."""
        return self._job

    @property
    def state(self) -> str:
        """The normalised state last received (badge text, possibly not rendered yet)."""
        with self._lock:
            return self._m.state

    def follow(self, job: Any) -> None:
        """Follow ``job`` from now on (drops the previous job's subscription and output)."""
        self._detach()
        with self._lock:
            self._job = job
            self._m = _Model()
            self._shown_result = None
            self._result_problem = ""
            self.settled.clear()
        self._eta, self._eta_n = estimate_runtime(self._get_session(required=False), job)
        clear_outputs(self.result)
        # Seed the model from what already happened, so the first view shows the job's real
        # state (e.g. "cached" with its job id) rather than "queued" until the subscription's
        # replay arrives from the engine loop. Model updates are idempotent, so that replay
        # of the latest event changes nothing.
        for ev in list(getattr(job, "history", None) or ()):
            self._on_event(ev, job)
        self._throttle.flush()
        with self._lock:
            terminal = self._m.terminal
        if not terminal:
            self._start_ticker()
        self._unsubscribe = job.subscribe(lambda ev, j=job: self._on_event(ev, j))

    def stop_watching(self) -> None:
        """Stop polling this job locally (``job.cancel_watch()``); it stays resumable."""
        job = self._job
        if job is not None:
            job.cancel_watch()
        with self._lock:
            if not self._m.terminal:
                self._m.watching = False
                self._m.message = "stopped watching"
        self._stop_ticker()
        self._throttle.request()

    def retry(self) -> Any:
        """Submit the same transformation again (``force=True``) and follow the new job.

        :returns: the new Job.
        :raises GoEnhanceError: when the session refuses the submission (bad input, budget).
        """
        old = self._job
        session = self._get_session(required=True)
        source, style, params = retry_arguments(old)
        new = session.transform(source, style, force=True, **params)
        self.retries.append(old)
        self.follow(new)
        for cb in list(self._retry_callbacks):
            cb(new)
        return new

    def on_retry(self, callback: Any) -> None:
        """Call ``callback(new_job)`` after each retry (e.g. the panel tracks the new job)."""
        self._retry_callbacks.append(callback)

    def flush(self) -> None:
        """Render the newest state now (tests and teardown)."""
        self._throttle.flush()

    def close(self) -> None:
        """Stop the ticker, unsubscribe and close all child widgets."""
        self._closed = True
        self._detach()
        self._throttle.cancel()
        for w in self._all_children():
            w.close()
        super().close()

    # -- event intake (engine thread) ---------------------------------------------------------
    def _on_event(self, ev: Any, source: Any = None) -> None:
        kind = getattr(ev, "kind", None)
        with self._lock:
            m = self._m
            job = self._job
            if source is not None and source is not job:
                return  # a late event of a job we no longer follow (a retry has the same key)
            now = time.time()
            ts = getattr(ev, "ts", None) or now
            elapsed = getattr(ev, "elapsed", None)
            if m.t0 is None:
                m.t0 = ts - elapsed if elapsed is not None else ts
            cached = kind == "cached" or m.cached or bool(getattr(job, "cached", False))
            state = normalise_state(kind, getattr(ev, "state", None), cached=cached)
            if state is not None and not m.terminal:
                m.state = state
            raw = getattr(ev, "raw_status", None)
            if raw:
                m.raw = str(raw)
            if getattr(ev, "job_id", None):
                m.job_id = str(ev.job_id)
            if getattr(ev, "cost", None) is not None:
                m.cost = int(ev.cost)
            m.queue_position = getattr(ev, "queue_position", None)
            msg = getattr(ev, "message", None) or ""
            progress = getattr(ev, "progress", None)
            if kind == "downloading" and progress and progress[1]:
                done_b, total_b = progress
                msg = f"downloading {100 * done_b // max(total_b, 1)}% of {total_b / 1e6:.1f} MB"
            if kind == "status" and msg.startswith("status "):
                msg = ""  # the raw status is shown verbatim beside the badge already
            if kind not in {"done", "cached"}:
                m.message = redact_text(msg)
            if getattr(ev, "error", None) is not None:
                m.error = ev.error
            if getattr(ev, "result", None) is not None:
                m.result = ev.result
            m.cached = m.cached or cached
            if kind == "watch_cancelled":
                m.watching = False
            # terminal only on the engine's terminal events (a "status" event may already
            # say failed/success before the error or the downloaded result is known)
            if kind in _TERMINAL_KINDS or kind == "watch_cancelled":
                m.terminal = m.terminal or kind in _TERMINAL_KINDS
                m.t_end = ts
                if elapsed is not None:
                    m.final_elapsed = float(elapsed)
                stop = True
            else:
                stop = False
        if stop:
            self._stop_ticker()
        self._throttle.request()

    # -- rendering (any thread, serialised by Throttle) ---------------------------------------
    def _render(self) -> None:
        if self._closed:
            return
        with self._lock:
            m = self._m
            job = self._job
            state, raw, job_id, cost = m.state, m.raw, m.job_id, m.cost
            terminal, watching, error, result = m.terminal, m.watching, m.error, m.result
            if m.t0 is None:
                elapsed = None
            elif m.final_elapsed is not None:
                elapsed = m.final_elapsed
            else:
                elapsed = (m.t_end or time.time()) - m.t0
            qpos, message, cached = m.queue_position, m.message, m.cached
        backend = getattr(job, "backend", None) or getattr(
            self._get_session(required=False), "backend", None
        )
        spec = getattr(job, "spec", None)

        # the result video goes into a regular display output inside the Output widget
        bundle = None
        toast = ""
        if result is not None and state in {"done", "cached"} and self._show_result:
            rkey = str(getattr(result, "key", id(result)))
            if self._shown_result != rkey:
                self._shown_result = rkey
                try:
                    bundle = result_bundle(result, notebook_dir=self._notebook_dir, cached=cached)
                except Exception as exc:  # e.g. the stored file vanished: say so, keep going
                    self._result_problem = redact_text(
                        f"could not show the result: {type(exc).__name__}: {exc}"
                    )
        if result is not None and state in {"done", "cached"}:
            toast = f"Ready: {_result_name(result, bundle)}"

        parts = []
        style = getattr(result, "style_label", None) or getattr(
            getattr(job, "request", None), "style_label", None
        )
        if style:
            parts.append(str(style))
        if spec is not None:
            parts.append(f"{getattr(spec, 'duration', '?')} s · {getattr(spec, 'resolution', '?')}")
        if state == "cached":
            parts.append("cost 0 (cached)")
        elif cost is not None:
            parts.append(f"cost {cost} credits")

        timing = [f"elapsed {fmt_seconds(elapsed)}"]
        if qpos is not None and not terminal:
            timing.append(f"local queue position {qpos}")
        show_bar = False
        if self._eta and not terminal and watching and elapsed is not None:
            left = self._eta - elapsed
            timing.append(
                f"ETA ~{fmt_seconds(max(left, 0))} (estimate from {self._eta_n} past "
                f"job{'s' if self._eta_n != 1 else ''})"
                if left > 0
                else "taking longer than the estimate"
            )
            show_bar = True
        if not watching and not terminal:
            timing.append(f"not watching — resume with %goenhance resume {job_id or '<id>'}")
        elif message and state not in _TERMINAL and message != raw:
            timing.append(message)
        if self._result_problem:
            timing.append(self._result_problem)

        err_text = ""
        hint = ""
        failed = terminal and state in {"failed", "timed out"}
        if failed:
            err = error
            err_text = (
                f"{type(err).__name__}: {err}"
                if err is not None
                else (message or f"job {job_id} {state}")
            )
            hint = what_to_do(err, job_id)

        widgets = self._all_children()
        with contextlib.ExitStack() as stack:
            for w in widgets:
                stack.enter_context(w.hold_sync())
            set_badge(self.badge, state)
            self.raw_label.value = raw
            self.backend.value = backend_label(backend)
            simulated = self.backend.value == "SIMULATED"
            self.backend.style.background = "#fdd835" if simulated else ""
            self.job_id_label.value = short_id(job_id)
            self.info.value = " · ".join(parts)
            self.timing.value = " · ".join(timing)
            self.progress.layout.display = None if show_bar else "none"
            if show_bar and self._eta:
                self.progress.value = min(max((elapsed or 0) / self._eta, 0.0), 0.99)
            self.error.value = (
                (f'<span style="color:#c62828">{html.escape(redact_text(err_text))}</span>')
                if err_text
                else ""
            )
            self.error.layout.display = None if err_text else "none"
            self.hint.value = hint
            self.hint.layout.display = None if hint else "none"
            self.toast.value = toast
            self.toast.layout.display = None if toast else "none"
            self.cancel_button.layout.display = "none" if (terminal or not watching) else None
            self.retry_button.layout.display = None if failed else "none"
            if bundle is not None:
                clear_outputs(self.result)
                append_bundle(self.result, *bundle)
                self.result.layout.display = None
        if terminal or not watching:
            self.settled.set()

    # -- helpers -------------------------------------------------------------------------------
    def _all_children(self) -> list[W.Widget]:
        return [
            self.badge,
            self.badge.style,
            self.raw_label,
            self.backend,
            self.backend.style,
            self.job_id_label,
            self.info,
            self.timing,
            self.progress,
            self.progress.layout,
            self.error,
            self.error.layout,
            self.hint,
            self.hint.layout,
            self.toast,
            self.toast.layout,
            self.cancel_button,
            self.cancel_button.layout,
            self.retry_button,
            self.retry_button.layout,
            self.result,
            self.result.layout,
        ]

    def _get_session(self, *, required: bool) -> Any:
        if self._session is not None:
            return self._session
        if not required:
            return None
        from goenhance_nb._session import get_session

        self._session = get_session()
        return self._session

    def _retry_clicked(self) -> None:
        try:
            self.retry()
        except Exception as exc:  # show, never raise into the comm handler
            with self._lock:
                self._m.message = redact_text(f"Retry refused: {type(exc).__name__}: {exc}")
                self._m.error = exc
            self._throttle.request()

    def _start_ticker(self) -> None:
        self._stop_ticker()
        stop = threading.Event()
        self._ticker_stop = stop

        def run() -> None:
            while not stop.wait(self._tick_interval):
                self._throttle.request()

        threading.Thread(target=run, name="goenhance-status-tick", daemon=True).start()

    def _stop_ticker(self) -> None:
        if self._ticker_stop is not None:
            self._ticker_stop.set()
            self._ticker_stop = None

    def _detach(self) -> None:
        self._stop_ticker()
        if self._unsubscribe is not None:
            with contextlib.suppress(Exception):
                self._unsubscribe()
            self._unsubscribe = None


def _result_name(result: Any, bundle: tuple[dict[str, Any], dict[str, Any]] | None) -> str:
    if bundle is not None:
        prov = (bundle[1] or {}).get("goenhance_nb") or {}
        for k in ("output", "outputs_path", "file", "path"):
            if prov.get(k):
                return Path(str(prov[k])).name
    try:  # the name _display gives the file beside the notebook
        from goenhance_nb._display import slugify

        return f"{slugify(result.style_label)}-{str(result.key)[:8]}.mp4"
    except Exception:
        return Path(str(getattr(result, "path", "result.mp4"))).name


def retry_arguments(job: Any) -> tuple[Any, Any, dict[str, Any]]:
    """``(source, style, params)`` to submit ``job``'s transformation again via
    ``Session.transform``. Uses the job's input reference and spec."""
    spec = job.spec
    inp: Any = getattr(job, "input", None)
    if getattr(inp, "kind", None) == "url" and getattr(inp, "url", None):
        source = inp.url
    else:
        source = getattr(inp, "path", None) or getattr(inp, "url", None) or inp
    params = {
        "prompt": getattr(spec, "prompt", None),
        "duration": spec.duration,
        "resolution": spec.resolution,
        "seed": spec.seed,
    }
    return source, spec.model, params
