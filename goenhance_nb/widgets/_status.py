"""StatusWidget: a live, throttled view of one :class:`~goenhance_nb._job.Job` (core ipywidgets).

Three parts, so the logic is tested without a kernel (tests/test_status_view.py):

- :func:`reduce` ``(state, change) -> state``: pure. A change is a job event as the widget saw
  it (:class:`Observed`), the user stopping the watch (:class:`StoppedWatching`), the result
  output being ready (:class:`OutputReady`) or a refused retry (:class:`RetryRefused`).
- :func:`view` ``(state, now) -> StatusView``: pure; every text, colour and visibility shown.
- :class:`StatusWidget`: subscribes to the job (events arrive on the engine thread), keeps the
  newest :class:`StatusState` under a lock and applies its view to the child widgets inside
  ``hold_sync()`` at most 4 times a second (:class:`Throttle`; the last render always shows the
  newest state). A 1 s ticker keeps the elapsed time moving while the job is active.

Rendering never touches a file: the result is put beside the notebook once, when the job
finishes (:func:`goenhance_nb._outputs.publish` from the job's finish callback), and its output
appended to :attr:`StatusWidget.result` by setting the ``outputs`` trait (never ``with out:``
from a thread). Only display text reaches synced traits: never the API key, a signed result URL
or anything from ``Settings`` (widget state is saved into the ``.ipynb``).
"""

from __future__ import annotations

import contextlib
import functools
import html
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from goenhance_nb._display import ResultBundle, failure_text, render_result, what_to_do
from goenhance_nb._errors import redact_text
from goenhance_nb._lifecycle import Badge, EventKind, JobState, badge_for
from goenhance_nb._outputs import output_name, publish
from goenhance_nb._theme import ERROR, LABEL_SHAPE, RETRY, SIMULATED, widget_style
from goenhance_nb.widgets._controls import (
    Throttle,
    append_bundle,
    backend_label,
    clear_outputs,
    descendants,
    fmt_seconds,
    set_badge,
    short_id,
    state_badge,
)

if TYPE_CHECKING:
    from goenhance_nb._cache import ResultRecord
    from goenhance_nb._job import Job, JobEvent
    from goenhance_nb._session import Session

__all__ = [
    "Observed",
    "OutputReady",
    "RetryRefused",
    "StatusState",
    "StatusView",
    "StatusWidget",
    "StoppedWatching",
    "reduce",
    "view",
    "what_to_do",
]


# -- state and changes ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StatusState:
    """What the widget knows about the followed job (replaced, never mutated).

    The first group is fixed when the job is followed: ``backend``, ``style`` (the request's
    style label), ``spec_text`` (``"3 s · 540p"``), the runtime estimate ``eta`` from
    ``eta_samples`` past results, ``queue_limit`` (server slots, for the local queue wait),
    ``retry_cost`` (what Retry would be charged, estimated) and ``show_result`` (the widget
    shows the video itself). The rest comes from the job's events; ``output`` is the result's
    rendered output once published, ``output_problem`` says why it could not be;
    ``reattached_after`` is set when this session re-attached to a job submitted earlier
    (seconds between the submission and the re-attachment: nothing was charged again).
    """

    backend: str = ""
    style: str = ""
    spec_text: str = ""
    eta: float | None = None
    eta_samples: int = 0
    queue_limit: int | None = None
    retry_cost: int | None = None
    show_result: bool = True
    badge: Badge = Badge.QUEUED
    raw: str = ""
    job_id: str | None = None
    cost: int | None = None
    queue_position: int | None = None
    message: str = ""
    error: BaseException | None = None
    t0: float | None = None
    t_end: float | None = None
    final_elapsed: float | None = None
    result: ResultRecord | None = None
    cached: bool = False
    watching: bool = True
    terminal: bool = False
    output: ResultBundle | None = None
    output_problem: str = ""
    reattached_after: float | None = None


@dataclass(frozen=True, slots=True)
class Observed:
    """A job event as the widget received it: ``job_cached`` is the handle's ``cached`` flag
    then, ``now`` the wall time (used when the event carries no time stamp)."""

    event: JobEvent
    job_cached: bool = False
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class StoppedWatching:
    """The user pressed *Stop watching* at wall time ``now`` (the elapsed clock stops there)."""

    now: float = 0.0


@dataclass(frozen=True, slots=True)
class OutputReady:
    """The finished result was published: its ``output``, or the ``problem`` that stopped it."""

    output: ResultBundle | None = None
    problem: str = ""


@dataclass(frozen=True, slots=True)
class RetryRefused:
    """The session refused the retry with ``error``."""

    error: BaseException


Change = Observed | StoppedWatching | OutputReady | RetryRefused


# -- the reducer (pure) ------------------------------------------------------------------------
def reduce(state: StatusState, change: Change) -> StatusState:
    """The state after ``change``. Pure: no clock, no I/O."""
    if isinstance(change, Observed):
        return _observe(state, change)
    if isinstance(change, StoppedWatching):
        if state.terminal or not state.watching:
            return state
        t_end = change.now if state.t0 is not None and change.now else None
        return replace(state, watching=False, badge=Badge.NOT_WATCHING, message="", t_end=t_end)
    if isinstance(change, OutputReady):
        return replace(state, output=change.output, output_problem=change.problem)
    err = change.error
    return replace(
        state, message=redact_text(f"Retry refused: {type(err).__name__}: {err}"), error=err
    )


def _observe(state: StatusState, seen: Observed) -> StatusState:
    """Fold one job event in. The badge is frozen once terminal; terminal only on the engine's
    terminal events (a ``status`` event may already say failed/success before the error or the
    downloaded result is known)."""
    ev = seen.event
    kind = EventKind(ev.kind)
    ts = ev.ts or seen.now
    cached = kind is EventKind.CACHED or state.cached or seen.job_cached
    ends = kind.ends_watch and not (kind is EventKind.WATCH_CANCELLED and state.t_end is not None)
    t0 = state.t0 if state.t0 is not None else ts - ev.elapsed
    return replace(
        state,
        t0=t0,
        reattached_after=_reattached_after(state, kind, ev, ts),
        badge=_badge_after(state, kind, ev.state, cached),
        raw=str(ev.raw_status) if ev.raw_status else state.raw,
        job_id=str(ev.job_id) if ev.job_id else state.job_id,
        cost=int(ev.cost) if ev.cost is not None else state.cost,
        queue_position=ev.queue_position,
        message=_next_message(state, kind, ev),
        error=ev.error if ev.error is not None else state.error,
        result=ev.result if ev.result is not None else state.result,
        cached=cached,
        watching=state.watching and kind is not EventKind.WATCH_CANCELLED,
        terminal=state.terminal or kind.terminal,
        t_end=ts if ends else state.t_end,
        final_elapsed=float(ev.elapsed) if ends else state.final_elapsed,
    )


def _badge_after(
    state: StatusState, kind: EventKind, job_state: JobState | str, cached: bool
) -> Badge:
    if state.terminal or (not state.watching and not kind.terminal):
        return state.badge  # frozen once ended, or once the user stopped watching
    return badge_for(kind, _job_state(job_state), cached=cached and kind is EventKind.DONE)


#: the engine's message when it re-attaches to a job from the ledger (``_engine._attach``)
_REATTACHED = "re-attached to job "


def _reattached_after(state: StatusState, kind: EventKind, ev: JobEvent, ts: float) -> float | None:
    """Seconds between the job's submission and this session re-attaching to it (the elapsed
    time of the ``submitted`` event the engine sends on re-attachment), else the old value."""
    if kind is EventKind.SUBMITTED and (ev.message or "").startswith(_REATTACHED):
        return max(0.0, float(ev.elapsed))
    return state.reattached_after


def _next_message(state: StatusState, kind: EventKind, ev: JobEvent) -> str:
    if kind.has_result or kind is EventKind.WATCH_CANCELLED:
        return state.message
    if kind is EventKind.SUBMITTED and (ev.message or "").startswith(_REATTACHED):
        return ""  # said by the info line ("re-attached to job X, ...")
    return redact_text(_message_of(kind, ev))


def _job_state(value: JobState | str) -> JobState | None:
    if isinstance(value, JobState):
        return value
    try:
        return JobState(value)
    except ValueError:
        return None


def _message_of(kind: EventKind, ev: JobEvent) -> str:
    """The event's message as the widget shows it (download progress spelled out; a bare
    ``status ...`` dropped, the raw status is shown beside the badge already)."""
    msg = ev.message or ""
    total = ev.progress[1] if ev.progress else None
    if kind is EventKind.DOWNLOADING and ev.progress and total:
        done_b = ev.progress[0]
        return f"downloading {100 * done_b // max(total, 1)}% of {total / 1e6:.1f} MB"
    if kind is EventKind.STATUS and msg.startswith("status "):
        return ""
    return msg


# -- the view (pure) ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StatusView:
    """Everything the widget shows. ``raw`` is the API's status verbatim, shown after a
    ``status:`` label, both hidden while it is empty;
    ``bar`` is the estimate bar's value (None: hidden); ``error_html`` is empty when no error
    shows; ``retry_label`` says whether Retry charges; ``show_resume`` after *Stop watching*;
    ``settled`` says the terminal state (and the result output, when the widget shows it) is
    on screen."""

    badge: str
    badge_colours: tuple[str, str]
    raw: str
    backend: str
    backend_colours: tuple[str, str | None]  # (background, text); None: the theme's
    job_id: str
    info: str
    timing: str
    bar: float | None
    error_html: str
    hint: str
    toast: str
    show_cancel: bool
    show_retry: bool
    retry_label: str
    show_resume: bool
    output: ResultBundle | None
    settled: bool
    summary: str


def view(state: StatusState, now: float) -> StatusView:
    """What ``state`` looks like at wall time ``now``. Pure."""
    elapsed = _elapsed(state, now)
    failed = state.terminal and state.badge in (Badge.FAILED, Badge.TIMED_OUT)
    backend = backend_label(state.backend)
    return StatusView(
        badge=state.badge.value,
        badge_colours=state.badge.colours,
        raw=state.raw,
        backend=backend,
        backend_colours=(
            (SIMULATED.background or "", SIMULATED.text) if backend == "SIMULATED" else ("", None)
        ),
        job_id=short_id(state.job_id),
        info=_info(state),
        timing=_timing(state, elapsed),
        bar=_bar(state, elapsed),
        error_html=_error_html(state) if failed else "",
        hint=_hint(state) if failed else "",
        toast=_toast(state),
        show_cancel=state.watching and not state.terminal,
        show_retry=failed,
        retry_label=retry_label(state.retry_cost or state.cost),
        show_resume=not state.watching and not state.terminal,
        output=state.output,
        settled=(state.terminal or not state.watching) and not _awaiting_output(state),
        summary=summary(state),
    )


def outcome_line(state: StatusState, now: float) -> str:
    """The short static line kept in the notebook beside the badge when the job ended (the
    result's caption says style and parameters): ``job 8da7f61d · cost 15 credits · took
    12 s``, with the money words of :func:`money_text`."""
    named = state.reattached_after is not None  # the money words name the job already
    ident = f"job {short_id(state.job_id)}" if state.job_id and not named else ""
    elapsed = _elapsed(state, now)
    took = f"took {fmt_seconds(elapsed)}" if elapsed is not None and state.terminal else ""
    return " · ".join(p for p in (ident, money_text(state), took) if p)


def summary(state: StatusState) -> str:
    """The job in one static line (the widget's plain-text form, and what a saved notebook
    keeps): ``GoEnhance job 8da7f61d: done · Anime Style · 3 s · 540p · cost 15 credits``
    (+ `` [SIMULATED]``). The job id once the API gave one, else the request key's prefix."""
    ident = f"job {short_id(state.job_id)}" if state.job_id else "job (not submitted yet)"
    parts = [state.badge.value, _info(state)]  # the error has its own line, said once
    sim = " [SIMULATED]" if backend_label(state.backend) == "SIMULATED" else ""
    return f"GoEnhance {ident}: {' · '.join(p for p in parts if p)}{sim}"


def _elapsed(state: StatusState, now: float) -> float | None:
    if state.t0 is None:
        return None
    if state.final_elapsed is not None:
        return state.final_elapsed
    return (state.t_end or now) - state.t0


def _info(state: StatusState) -> str:
    parts = []
    style = (state.result.style_label if state.result is not None else "") or state.style
    if style:
        parts.append(style)
    if state.spec_text:
        parts.append(state.spec_text)
    money = money_text(state)
    if money:
        parts.append(money)
    return " · ".join(parts)


def money_text(state: StatusState) -> str:
    """What the job costs, in words that never misstate a charge (README "Credits"):

    - a cached result: ``cached, originally 15 credits`` (nothing charged now);
    - a re-attached job: ``re-attached to job 8da7f61d, submitted 45 s ago, not charged again``;
    - a failed job: ``15 credits, may be refunded by the service`` (the API does not say
      whether it refunds a failed job, so we never claim either way);
    - otherwise ``cost 15 credits`` once the API reported the cost, else nothing.
    """
    cost = state.result.cost if state.result is not None and state.result.cost else state.cost
    if state.badge is Badge.CACHED:
        return f"cached, originally {cost} credits" if cost else "cached, not charged again"
    if state.reattached_after is not None:
        return (
            f"re-attached to job {short_id(state.job_id)}, submitted "
            f"{fmt_seconds(state.reattached_after)} ago, not charged again"
        )
    if cost is None:
        return ""
    if state.badge is Badge.FAILED:
        return f"{cost} credits, may be refunded by the service"
    return f"cost {cost} credits"


def retry_label(cost: int | None) -> str:
    """The Retry button's text: Retry submits again with ``force=True``, which is charged."""
    return f"Retry (charged again, ~{cost} credits)" if cost else "Retry (charged again)"


def _hint(state: StatusState) -> str:
    charge = state.retry_cost or state.cost
    cost = f", ~{charge} credits" if charge else ""
    return what_to_do(state.error, short_id(state.job_id), retry=f"press Retry{cost}")


def _timing(state: StatusState, elapsed: float | None) -> str:
    # a cache hit took no time worth saying (its row stays short: issue 17 points 9, 16)
    parts = [] if state.badge is Badge.CACHED else [f"elapsed {fmt_seconds(elapsed)}"]
    if state.queue_position is not None and not state.terminal:
        parts.append(f"local queue position {state.queue_position}")
    eta = _eta_text(state, elapsed)
    if eta:
        parts.append(eta)
    if not state.watching and not state.terminal:
        ident = short_id(state.job_id) if state.job_id else "<id>"
        parts.append(f"not watching: press Resume or run %goenhance resume {ident}")
    elif state.message and not state.badge.terminal and state.message != state.raw:
        parts.append(state.message)
    if state.output_problem:
        parts.append(state.output_problem)
    return " · ".join(parts)


#: an ETA is shown only from at least this many comparable past jobs (issue 17, point 15)
MIN_ETA_SAMPLES = 3


def _eta_shown(state: StatusState, elapsed: float | None) -> bool:
    return (
        bool(state.eta)
        and state.eta_samples >= MIN_ETA_SAMPLES
        and not state.terminal
        and state.watching
        and elapsed is not None
    )


def _expected_total(state: StatusState) -> float:
    """Seconds the whole job is expected to take from its start: the typical runtime, plus,
    while it waits in the local queue, the jobs ahead x typical runtime / server slots."""
    runtime = state.eta or 0.0
    ahead = state.queue_position or 0  # set only while the job waits for a local slot
    slots = max(state.queue_limit or 1, 1)
    return runtime + ahead * runtime / slots


def _eta_text(state: StatusState, elapsed: float | None) -> str:
    if not _eta_shown(state, elapsed) or elapsed is None:
        return ""
    left = _expected_total(state) - elapsed
    if left <= 0:
        return "taking longer than the estimate"
    n = state.eta_samples
    return f"ETA ~{fmt_seconds(left)} (from {n} similar past jobs)"


def _bar(state: StatusState, elapsed: float | None) -> float | None:
    if not _eta_shown(state, elapsed):
        return None
    return min(max((elapsed or 0) / _expected_total(state), 0.0), 0.99)


def _error_html(state: StatusState) -> str:
    err = state.error
    if err is not None:
        text = failure_text(err)
    else:
        text = state.message or f"job {short_id(state.job_id)} {state.badge.value}"
    style = f"{ERROR.css()};{LABEL_SHAPE}"
    return f'<span style="{style}">{html.escape(redact_text(text))}</span>'


def _finished_with_result(state: StatusState) -> bool:
    return state.result is not None and state.badge in (Badge.DONE, Badge.CACHED)


def _toast(state: StatusState) -> str:
    if state.result is None or not _finished_with_result(state):
        return ""
    return f"Ready: {output_name(state.result.style_label, state.result.key)}"


def _awaiting_output(state: StatusState) -> bool:
    """True while the widget waits for the result it shows to be published."""
    return (
        state.show_result
        and _finished_with_result(state)
        and state.output is None
        and not state.output_problem
    )


# -- the widget ------------------------------------------------------------------------------------
class StatusWidget(W.VBox):
    """Live status of one job: badge, raw status, elapsed, queue, ETA estimate, id, cost, backend.

    ``StatusWidget(job, session=None)`` follows ``job`` (events from the engine thread). Buttons:
    *Stop watching* (``job.cancel_watch()``) and *Retry* (after a failure or timeout:
    :meth:`Session.retry` submits the same transformation again with ``force=True``, and the
    widget follows the new job). When the job is done the result video is appended to
    :attr:`result` (an ``Output``) and a toast line reads ``Ready: <file>`` (``show_result=False``
    keeps the video out of the widget, e.g. when the caller shows it as a regular output).
    ``compact=True`` gives a one-row view (no video) for lists.

    :attr:`settled` is a :class:`threading.Event` set once the terminal state (and the video,
    when the widget shows it) has been rendered.
    """

    def __init__(
        self,
        job: Job,
        *,
        session: Session | None = None,
        compact: bool = False,
        show_result: bool = True,
        notebook_dir: Path | str | None = None,
        interval: float = 0.25,
        tick: float = 1.0,
        **kwargs: Any,
    ) -> None:
        self._session = session
        self._show_result = show_result and not compact
        self._notebook_dir = Path(notebook_dir) if notebook_dir is not None else None
        self._tick_interval = tick
        self._lock = threading.RLock()
        self._state = StatusState()
        self._job: Job | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._ticker_stop: threading.Event | None = None
        self._shown_output: ResultBundle | None = None
        self._closed = False
        self.settled = threading.Event()
        self.retries: list[Job] = []
        self._retry_callbacks: list[Callable[[Job], Any]] = []
        self._build(compact, str(session.mode) if session is not None else "live")
        super().__init__(self._layout(compact), **kwargs)
        self.add_class("goenhance-status")
        self._throttle = Throttle(self._render, interval)
        self.follow(job)

    # -- public -------------------------------------------------------------------------------
    @property
    def job(self) -> Job | None:
        """The job currently followed (a retry replaces it)."""
        return self._job

    @property
    def state(self) -> str:
        """The badge text last received (possibly not rendered yet)."""
        with self._lock:
            return self._state.badge.value

    def follow(self, job: Job) -> None:
        """Follow ``job`` from now on (drops the previous job's subscription and output)."""
        self._detach()
        start = self._start_state(job)
        with self._lock:
            self._job = job
            self._state = start
            self._shown_output = None
            self.settled.clear()
            # Seed from what already happened, so the first view shows the job's real state
            # (e.g. "cached" with its job id) rather than "queued" until the subscription's
            # replay arrives from the engine loop. The reducer is idempotent for that replay.
            seeded = list(job.history)
            for ev in seeded:
                self._state = reduce(self._state, self._observed(ev, job))
            terminal = self._state.terminal
        clear_outputs(self.result)
        self._throttle.flush()
        if not terminal:
            self._start_ticker()
        self._unsubscribe = job.subscribe(functools.partial(self._on_event, source=job))
        # the subscription replays only the latest event: catch up on any that came between
        # the seeding and the subscription (e.g. a re-attachment's "submitted" and a status)
        with self._lock:
            for ev in list(job.history)[len(seeded) :]:
                self._state = reduce(self._state, self._observed(ev, job))
        self._throttle.request()
        if self._show_result:
            job.on_finish(self._publish)

    def stop_watching(self) -> None:
        """Stop polling this job locally (``job.cancel_watch()``); it stays resumable: the
        badge turns grey "not watching", the elapsed clock stops and *Resume* is offered."""
        if self._job is not None:
            self._job.cancel_watch()
        self._dispatch(StoppedWatching(now=time.time()))
        self._stop_ticker()

    def resume(self) -> Job:
        """Re-attach to the job after *Stop watching* (:meth:`Session.resume`, no new charge)
        and follow it; the callbacks of :meth:`on_retry` get the new handle.

        :returns: the new Job.
        :raises GoEnhanceError: the session could not re-attach (see :meth:`Session.resume`).
        """
        old = self._job
        if old is None:
            raise RuntimeError("StatusWidget.resume: no job is followed")
        new = self._require_session().resume(old.id or old.key)
        self.follow(new)
        for cb in list(self._retry_callbacks):
            cb(new)
        return new

    def retry(self) -> Job:
        """Submit the same transformation again (:meth:`Session.retry`) and follow the new job.

        :returns: the new Job.
        :raises GoEnhanceError: when the session refuses the submission (bad input, budget).
        """
        old = self._job
        if old is None:
            raise RuntimeError("StatusWidget.retry: no job is followed")
        new = self._require_session().retry(old)
        self.retries.append(old)
        self.follow(new)
        for cb in list(self._retry_callbacks):
            cb(new)
        return new

    def on_retry(self, callback: Callable[[Job], Any]) -> None:
        """Call ``callback(new_job)`` after each retry or resume (e.g. the panel tracks the
        new job)."""
        self._retry_callbacks.append(callback)

    def flush(self) -> None:
        """Render the newest state now (tests and teardown)."""
        self._throttle.flush()

    def outcome(self) -> tuple[Badge, str]:
        """The badge and :func:`outcome_line` of the state now (what the notebook keeps)."""
        with self._lock:
            state = self._state
        return state.badge, outcome_line(state, time.time())

    def __repr__(self) -> str:
        """One readable line (:func:`summary`): the ``text/plain`` of the widget's mime bundle,
        which viewers without widgets (HTML export, a repository page) show."""
        with self._lock:
            state = self._state
        return summary(state)

    def close(self) -> None:
        """Stop the ticker, unsubscribe and close all child widgets."""
        self._closed = True
        self._detach()
        self._throttle.cancel()
        for w in descendants(self):  # the boxes too: no orphan model keeps closed children
            w.close()
        super().close()

    # -- changes in (engine thread, ticker, buttons) ---------------------------------------------
    def _start_state(self, job: Job) -> StatusState:
        session = self._session
        estimate = session.runtime_estimate(job.spec) if session is not None else None
        backend = job.backend or (session.backend if session is not None else "")
        charge = job.request.estimate
        return StatusState(
            backend=backend,
            style=job.request.style_label,
            spec_text=f"{job.spec.duration} s · {job.spec.resolution}",
            eta=float(estimate) if estimate is not None else None,
            eta_samples=estimate.samples if estimate is not None else 0,
            queue_limit=session.queue_limit if session is not None else None,
            retry_cost=charge.credits if charge is not None else None,
            show_result=self._show_result,
        )

    @staticmethod
    def _observed(ev: JobEvent, job: Job) -> Observed:
        return Observed(ev, job_cached=bool(job.cached), now=time.time())

    def _on_event(self, ev: JobEvent, source: Job) -> None:
        self._dispatch(self._observed(ev, source), source)
        if EventKind(ev.kind).ends_watch:
            self._stop_ticker()

    def _dispatch(self, change: Change, source: Job | None = None) -> None:
        """Fold ``change`` into the state (ignored when it comes from a job no longer followed:
        a retry has the same key) and ask for a render."""
        with self._lock:
            if source is not None and source is not self._job:
                return
            self._state = reduce(self._state, change)
        self._throttle.request()

    def _publish(self, job: Job) -> None:
        """Once, when ``job`` has finished (engine thread, or here if it already had): put its
        result beside the notebook and hand the rendered output to the state."""
        record = job.record
        if record is None:
            return
        try:
            published = publish(record, notebook_dir=self._notebook_dir)
            change = OutputReady(render_result(record, published, cached=bool(job.cached)))
        except Exception as exc:  # e.g. the stored file vanished: say so, keep going
            problem = f"could not show the result: {type(exc).__name__}: {exc}"
            change = OutputReady(problem=redact_text(problem))
        self._dispatch(change, job)

    def _retry_clicked(self) -> None:
        try:
            self.retry()
        except Exception as exc:  # show, never raise into the comm handler
            self._dispatch(RetryRefused(exc))

    def _resume_clicked(self) -> None:
        try:
            self.resume()
        except Exception as exc:  # show, never raise into the comm handler
            self._dispatch(RetryRefused(exc))

    # -- rendering (any thread, serialised by Throttle) ---------------------------------------
    def _render(self) -> None:
        if self._closed:
            return
        with self._lock:
            state = self._state
        shown = view(state, time.time())
        self._apply(shown)
        if shown.settled:
            self.settled.set()

    def _apply(self, v: StatusView) -> None:
        """Set the child widgets' traits to ``v`` in one batch per widget."""
        with self._held():
            set_badge(self.badge, v.badge, v.badge_colours)
            self.raw_label.value = v.raw
            _show(self.raw_label, bool(v.raw))
            _show(self.raw_prefix, bool(v.raw))
            self.backend.value = v.backend
            self.backend.style.background, self.backend.style.text_color = v.backend_colours
            self.job_id_label.value = v.job_id
            self.info.value = v.info
            self.timing.value = v.timing
            _show(self.progress, v.bar is not None)
            if v.bar is not None:
                self.progress.value = v.bar
            self.error.value = v.error_html
            _show(self.error, bool(v.error_html))
            self.hint.value = v.hint
            _show(self.hint, bool(v.hint))
            self.toast.value = v.toast
            _show(self.toast, bool(v.toast))
            _show(self.cancel_button, v.show_cancel)
            _show(self.retry_button, v.show_retry)
            self.retry_button.description = v.retry_label
            _show(self.resume_button, v.show_resume)
            if v.output is not None and v.output is not self._shown_output:
                self._shown_output = v.output
                clear_outputs(self.result)
                append_bundle(self.result, dict(v.output), v.output.metadata)
                _show(self.result, True)

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for w in descendants(self):
                stack.enter_context(w.hold_sync())
            yield

    # -- building -------------------------------------------------------------------------------
    def _build(self, compact: bool, mode: str) -> None:
        self.badge = state_badge()
        # "status: <API status>", both hidden while there is none (never an empty "status:")
        self.raw_prefix = W.Label("status:", layout=W.Layout(margin="0 0 0 8px", display="none"))
        self.raw_label = W.Label(
            "",
            layout=W.Layout(margin="0 8px 0 4px", display="none"),
            _dom_classes=["goenhance-raw-status"],
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
        self.mode_label = W.Label(
            f"mode: {mode}",
            layout=W.Layout(margin="0 6px", display=None if mode != "live" else "none"),
            _dom_classes=["goenhance-mode"],
        )
        self.info = W.Label("", _dom_classes=["goenhance-info"])
        # its own gap: in a compact row it follows the info text on the same line
        self.timing = W.Label(
            "", layout=W.Layout(margin="0 0 0 10px"), _dom_classes=["goenhance-elapsed"]
        )
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
        self.toast = W.Label(
            "",
            layout=W.Layout(display="none", margin="0 0 0 12px"),
            _dom_classes=["goenhance-toast"],
        )
        self.cancel_button = W.Button(
            description="Stop watching",
            icon="eye-slash",
            layout=W.Layout(width="auto"),
            _dom_classes=["goenhance-cancel"],
        )
        self.retry_button = W.Button(
            description="Retry",
            icon="redo",
            style=widget_style(RETRY, button=True),
            layout=W.Layout(width="auto", display="none"),
            _dom_classes=["goenhance-retry"],
        )
        self.resume_button = W.Button(
            description="Resume",
            icon="play",
            tooltip="Watch this job again (no new charge)",
            layout=W.Layout(width="auto", display="none"),
            _dom_classes=["goenhance-resume"],
        )
        self.cancel_button.on_click(lambda _b: self.stop_watching())
        self.retry_button.on_click(lambda _b: self._retry_clicked())
        self.resume_button.on_click(lambda _b: self._resume_clicked())
        self.result = W.Output(
            layout=W.Layout(display=None if self._show_result else "none"),
            _dom_classes=["goenhance-status-result"],
        )

    def _layout(self, compact: bool) -> list[W.Widget]:
        head = W.HBox(
            [
                self.badge,
                self.raw_prefix,
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
                self.resume_button,
                self.toast,
            )
            return [head]
        return [
            head,
            W.HBox([self.timing, self.progress], layout=W.Layout(align_items="center")),
            self.error,
            self.hint,
            self.toast,
            W.HBox([self.cancel_button, self.retry_button, self.resume_button]),
            self.result,
        ]

    # -- helpers -------------------------------------------------------------------------------
    def _require_session(self) -> Session:
        if self._session is None:
            from goenhance_nb._session import get_session

            self._session = get_session()
        return self._session

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


def _show(widget: W.Widget, visible: bool) -> None:
    widget.layout.display = None if visible else "none"
