"""Job presentation: how a :class:`~goenhance_nb._job.Job` is shown in a cell.

:func:`present_job` shows a job as the magics do (``run``, ``resume``), given a
:class:`Presentation` (wait or not, frontend, embed, compare, notify). A run leaves ONE output:
the live status widget (the browser notifier inside it), shown with a display id and replaced,
when the job ends, by a static output — the video with its caption (style, duration,
resolution, job id, cost), or the one-line summary and error — so a saved or exported notebook
holds no widget of an ended job. A job already done (a cache hit) shows the static output at
once; a headless run shows a status line that the result replaces; a terminal gets a status
line per change. :func:`status_line` and :func:`job_label` name a job in one line (the job id
once the API gave one, the request key only before); :class:`Presented` remembers which jobs
the current cell already showed, so the Job's display step shows nothing more there (the
job is the cell's value, in ``_`` and ``Out``, without a second output); elsewhere it shows
:func:`job_bundle`.

Listeners run on the engine thread and never raise into it. Failures of the job itself are
raised only where the caller blocks (``wait`` or an already finished job), so the cell fails.
"""

from __future__ import annotations

import contextlib
import html
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from goenhance_nb import _display, _frontend
from goenhance_nb._errors import JobTimedOut, redact_text
from goenhance_nb._lifecycle import Badge, EventKind, JobState
from goenhance_nb._magics._cells import Presented

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import DisplayHandle

    from goenhance_nb._cache import ResultRecord
    from goenhance_nb._job import Job, JobEvent
    from goenhance_nb._session import Session
    from goenhance_nb._settings import Settings
    from goenhance_nb.widgets import StatusWidget

__all__ = [
    "Presentation",
    "Presented",
    "job_bundle",
    "job_label",
    "present_job",
    "state_text",
    "status_line",
]


@dataclass(frozen=True, slots=True)
class Presentation:
    """How to show a job.

    ``wait``: block until it ends (``timeout`` seconds at most); ``frontend``: as
    :func:`goenhance_nb._frontend.frontend` names it; ``embed``/``compare``/``source``: passed to
    :func:`goenhance_nb._display.publish_result`; ``notify``: also show the browser notifier
    beside the live widget and notify when the job ends.
    """

    wait: bool
    frontend: str
    timeout: float | None = None
    embed: bool | None = None
    compare: bool = False
    source: Path | None = None
    notify: bool = False


class _Notifier(Protocol):
    def notify(self, title: str, body: str = "") -> None: ...


def display_obj(obj: object, **kw: Any) -> DisplayHandle | None:
    """IPython's ``display`` (imported when first used). A :class:`~goenhance_nb._display.
    ResultBundle` shown once (no display id) is published as it is, without asking IPython's
    formatters what it already says (a cache hit's whole output)."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display, publish_display_data

    if isinstance(obj, _display.ResultBundle) and not kw and InteractiveShell.initialized():
        publish_display_data(dict(obj), metadata=obj.metadata)
        return None
    handle: DisplayHandle | None = display(obj, **kw)
    return handle


# -- one-line names ---------------------------------------------------------------------------
def job_label(job: Job) -> str:
    """``job <id8>`` once the API gave an id, else ``request <key8>`` (the cache key)."""
    return f"job {job.id[:8]}" if job.id else f"request {job.key[:8]}"


def job_ref(job: Job) -> str:
    """What ``%goenhance resume`` takes, short: the job id's first 8 characters once the API
    gave one (the ledger finds a job by a prefix of 6 or more), else the key's first 12."""
    return job.id[:8] if job.id else job.key[:12]


def state_text(state: JobState | str) -> str:
    """The words for a job state in a status line (``starting``, ``running``, ...)."""
    try:
        st = JobState(state)
    except ValueError:
        return str(state).lower()
    if st is JobState.LOCAL:
        return "starting"
    if st is JobState.LOCAL_QUEUE:
        return "waiting for a local queue slot"
    return str(st)


def status_line(job: Job) -> str:
    """``GoEnhance: job <id8> running [SIMULATED]``."""
    text = "cached" if job.cached else state_text(job.state)
    sim = " [SIMULATED]" if job.backend == "simulated" else ""
    return f"GoEnhance: {job_label(job)} {text}{sim}"


# -- final outputs ----------------------------------------------------------------------------
def _publish(
    result: ResultRecord,
    how: Presentation,
    *,
    cached: bool,
    settings: Settings | None,
    nb_dir: Path,
) -> _display.ResultBundle:
    return _display.publish_result(
        result,
        notebook_dir=nb_dir,
        embed=how.embed,
        cached=cached,
        compare=how.compare,
        source=how.source,
        frontend=how.frontend,
        output_dir=settings.output_dir if settings is not None else None,
        embed_limit_mb=(settings.embed_limit_mb if settings is not None else 0.0) or 8.0,
    )


Publish = Callable[["ResultRecord"], _display.ResultBundle]


def present_job(
    job: Job, how: Presentation, session: Session, shell: InteractiveShell | None
) -> None:
    """Show ``job``: a final output (blocking or already done) or a live widget + placeholder.

    :raises GoEnhanceError: (blocking or already finished) the job's own error, so the cell fails.
    :raises JobTimedOut: ``how.timeout`` passed while blocking (the job stays resumable).
    """
    nb_dir = _display.notebook_dir(shell=shell)

    def make_publish(j: Job) -> Publish:
        return lambda result: _publish(
            result, how, cached=j.cached, settings=session.settings, nb_dir=nb_dir
        )

    if job.done():
        result = job.result(timeout=0)  # raises the job's error: the cell fails
        display_obj(make_publish(job)(result))
    elif how.wait:
        _present_blocking(job, how, session, make_publish(job))
    elif how.frontend == "terminal":
        _watch_text(job, make_publish(job))
        print(status_line(job), flush=True)
    else:
        _present_live(job, how, session, make_publish)


def _present_blocking(job: Job, how: Presentation, session: Session, publish: Publish) -> None:
    """Block until ``job`` ends; its one output (a status line, or the live widget) is replaced
    by the result, or by the job's summary when it failed (the raised error says why)."""
    live = None
    if how.frontend not in ("terminal", "headless"):
        live = _show_live(job, session, notify=how.notify)
    handle = live.handle if live is not None else None
    if handle is None:
        handle = display_obj(_display.status_bundle(status_line(job)), display_id=True)
    try:
        result = job.result(timeout=how.timeout)
    except TimeoutError:
        raise JobTimedOut(job.id, key=job.key) from None
    except KeyboardInterrupt:
        print(
            f"Stopped waiting; the job keeps going. Resume with %goenhance resume {job_ref(job)}",
            file=sys.stderr,
        )
        raise
    except BaseException:
        if live is not None:
            badge, line = live.outcome()
            live.end(_display.status_bundle(line or status_line(job), badge=badge))
        raise
    bundle = publish(result)
    if live is not None:
        badge, line = live.outcome()
        live.end(_display.with_state_line(bundle, line, badge))
    elif handle is not None:
        handle.update(bundle)
    else:
        display_obj(bundle)


def _present_live(
    job: Job, how: Presentation, session: Session, make_publish: Callable[[Job], Publish]
) -> None:
    """The live widget (one output), replaced by the static outcome when the followed job
    ends; without ipywidgets, a placeholder line that the outcome replaces."""
    live = _show_live(job, session, notify=how.notify and how.frontend != "headless")
    if live is not None:
        live.on_end(lambda j: _final_bundle(j, make_publish(j), *live.outcome()))
        return
    simulated = job.backend == "simulated"
    handle = display_obj(
        _display.placeholder_bundle(job_label(job), simulated=simulated), display_id=True
    )
    if handle is not None:
        _watch_update(job, handle, make_publish(job))


def _final_bundle(
    job: Job, publish: Publish, badge: Badge, line: str
) -> _display.ResultBundle | None:
    """The static output that replaces the live widget when ``job`` ended: its state line
    (``badge`` and ``line``: job id, money, time taken) over the published result, or over the
    error and what to do; None after *Stop watching* (the widget stays, offering Resume)."""
    record = job.record
    if record is not None:
        return _display.with_state_line(publish(record), line, badge)
    if job.error is not None:
        estimate = job.request.estimate
        return _display.error_bundle(
            job.error,
            job_id=job.id,
            retry_cost=estimate.credits if estimate is not None else job.cost,
            summary=line or status_line(job),
            badge=badge,
        )
    return None


# -- widgets ----------------------------------------------------------------------------------
def _status_class() -> type[StatusWidget]:
    """StatusWidget (imported when first used).

    :raises ImportError: ipywidgets is not installed.
    """
    from goenhance_nb.widgets import StatusWidget

    return StatusWidget


class _Live:
    """A displayed live widget and its display handle: :meth:`end` replaces the widget output
    by a static bundle and closes the status widget (so no widget of an ended job is saved)."""

    def __init__(
        self, widget: StatusWidget, handle: DisplayHandle | None, notifier: _Notifier | None
    ) -> None:
        self.widget = widget
        self.handle = handle
        self.notifier = notifier
        self._ended = threading.Event()

    def outcome(self) -> tuple[Badge, str]:
        """The widget's badge and short static line now (:meth:`StatusWidget.outcome`)."""
        return self.widget.outcome()

    def end(self, bundle: _display.ResultBundle) -> None:
        """Replace the widget by ``bundle`` (once) and close the widgets."""
        if self._ended.is_set():
            return
        self._ended.set()
        if self.handle is not None:
            self.handle.update(bundle)
        else:
            display_obj(bundle)
        if self.notifier is not None:  # it stays open: its page side may still be notifying
            notifier = self.notifier
            self.widget.children = tuple(c for c in self.widget.children if c is not notifier)
        self.widget.close()  # with every box and label it holds

    def on_end(self, final: Callable[[Job], _display.ResultBundle | None]) -> None:
        """When the job the widget follows ends (after a Retry or Resume: the new one), notify
        and :meth:`end` with ``final(job)``; an end that ``final`` maps to None (stopped
        watching) leaves the widget live."""

        def watch(job: Job) -> None:
            job.on_finish(finished)

        def finished(job: Job) -> None:
            if job is not self.widget.job or self._ended.is_set():
                return  # a Retry or Resume followed another job since
            try:
                if self.notifier is not None:
                    _notify_end(job, self.notifier)
                bundle = final(job)
                if bundle is not None:
                    self.end(bundle)
            except Exception as exc:  # a listener never raises into the engine
                with contextlib.suppress(Exception):
                    self.end(_display.error_bundle(exc, job_id=job.id))

        self.widget.on_retry(watch)  # called after each Retry and Resume
        job = self.widget.job
        if job is not None:
            watch(job)


def _show_live(job: Job, session: Session, *, notify: bool) -> _Live | None:
    """Display the live (compact) status widget of ``job`` as one output (the notifier inside
    it when ``notify``); None when ipywidgets is missing (nothing displayed)."""
    try:
        cls = _status_class()
    except ImportError:
        return None
    widget = cls(job, session=session, compact=True)
    notifier = _make_notifier() if notify else None
    if notifier is not None:
        widget.children = (*widget.children, notifier)
    handle = display_obj(widget, display_id=True)
    return _Live(widget, handle, notifier)


def _make_notifier() -> _Notifier | None:
    """A browser notifier ("Notify me"); None without anywidget (toast only)."""
    try:
        from goenhance_nb.widgets import make_notifier

        notifier: _Notifier | None = make_notifier()
    except ImportError:
        return None
    return notifier


# -- listeners (engine thread) ----------------------------------------------------------------
def _end_kind(job: Job) -> EventKind:
    """The terminal kind of a finished job: done, failed, timed out or watch cancelled."""
    if job.record is not None:
        return EventKind.DONE
    if isinstance(job.error, JobTimedOut):
        return EventKind.TIMED_OUT
    if job.error is not None:
        return EventKind.FAILED
    return EventKind.WATCH_CANCELLED


def _notify_end(job: Job, notifier: _Notifier) -> None:
    """One browser notification for an ended ``job`` (ready or failed; nothing after *Stop
    watching*). A custom message (``notifier.notify``), never a synced trait: not saved."""
    from goenhance_nb.widgets import job_notification

    with contextlib.suppress(Exception):  # a listener never raises into the engine
        note = job_notification(_end_kind(job), result=job.record, error=job.error)
        if note is not None:
            notifier.notify(*note)


def _watch_update(job: Job, handle: DisplayHandle, publish: Publish) -> None:
    """Replace the placeholder with the result, a one-line error or a "stopped watching" line."""

    def on_finish(job: Job) -> None:
        try:
            record = job.record
            if record is not None:
                handle.update(publish(record))
            elif job.error is not None:
                handle.update(_display.error_bundle(job.error, job_id=job.id))
            else:
                ref = job_ref(job)
                text = f"GoEnhance: stopped watching {job_label(job)}; %goenhance resume {ref}"
                handle.update(_display.status_bundle(text))
        except Exception as exc:  # a listener never raises into the engine
            with contextlib.suppress(Exception):
                handle.update(_display.error_bundle(exc, job_id=job.id))

    job.on_finish(on_finish)


def _watch_text(job: Job, publish: Publish) -> None:
    """Terminal: print one line per state change and the result path when done."""
    last: list[JobState | str | None] = [None]

    def on_event(event: JobEvent) -> None:
        if EventKind(event.kind).terminal:  # the end is printed by on_finish
            return
        if event.state != last[0]:
            last[0] = event.state
            raw = f" ({event.raw_status})" if event.raw_status else ""
            print(f"\nGoEnhance: {job_label(job)} {state_text(event.state)}{raw}", flush=True)

    def on_finish(job: Job) -> None:
        record, kind = job.record, _end_kind(job)
        if record is not None:
            with contextlib.suppress(Exception):
                print(f"\n{publish(record)['text/plain']}", flush=True)
        elif kind.is_error:
            print(f"\nGoEnhance: {job_label(job)} {kind}: {redact_text(job.error)}", flush=True)

    job.subscribe(on_event)
    job.on_finish(on_finish)


# -- a bare Job as a cell's value -------------------------------------------------------------
def job_text(job: Job) -> str:
    """The status line of a job, with its result file or its error."""
    line = status_line(job)
    record = job.record
    if record is not None:
        shown = None
        with contextlib.suppress(Exception):
            shown = _display.outputs_relpath(record)
        line += f" · {record.style_label} -> {shown or record.path}"
    if job.cached:
        line += " [cached]"
    if job.error is not None:
        line += f": {type(job.error).__name__}: {redact_text(job.error)}"
    return line


def job_bundle(job: Job) -> tuple[dict[str, object], dict[str, object]]:
    """The display of a bare ``job`` (a later cell's value, ``display(job)``): the result video
    (+ provenance metadata) when done, else a status line."""
    text = job_text(job)
    if job.done() and job.error is None:
        with contextlib.suppress(Exception):
            settings = None
            with contextlib.suppress(Exception):
                from goenhance_nb._session import get_session

                settings = get_session().settings
            how = Presentation(wait=False, frontend=_frontend.frontend())
            bundle = _publish(
                job.result(timeout=0),
                how,
                cached=job.cached,
                settings=settings,
                nb_dir=_display.notebook_dir(),
            )
            return {"text/html": bundle["text/html"], "text/plain": text}, dict(bundle.metadata)
    return (
        {
            "text/html": f"<div class='goenhance-job-repr' style='font-size:12px'>"
            f"{html.escape(text)}</div>",
            "text/plain": text,
        },
        {},
    )
