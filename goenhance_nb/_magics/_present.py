"""Job presentation: how a :class:`~goenhance_nb._job.Job` is shown in a cell.

:func:`present_job` shows a job as the magics do (``run``, ``resume``), given a
:class:`Presentation` (wait or not, frontend, embed, compare, notify): a final output when the
job is already done or the caller blocks; else the live status widget and a placeholder that
the finished video replaces (a status line per change in a terminal). :func:`status_line` and
:func:`job_label` name a job in one line; :class:`Presented` remembers which jobs the current
cell already showed, so the Job formatter (:func:`job_bundle`) does not show a video twice.

Listeners run on the engine thread and never raise into it. Failures of the job itself are
raised only where the caller blocks (``wait`` or an already finished job), so the cell fails.
"""

from __future__ import annotations

import contextlib
import functools
import html
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from goenhance_nb import _display, _frontend
from goenhance_nb._errors import JobTimedOut, redact_text
from goenhance_nb._lifecycle import EventKind, JobState

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
    "when_finished",
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


@dataclass
class Presented:
    """The keys of the jobs shown in the most recent cell (by execution count).

    Bounded: only the latest cell's keys are kept (a new execution count starts afresh), which
    is all :func:`job_bundle` asks ("was this job shown in the cell now running?").
    """

    count: int | None = None
    keys: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, key: str, count: int | None) -> None:
        """Note that ``key`` was shown in the cell ``count``."""
        with self._lock:
            if count != self.count:
                self.count, self.keys = count, set()
            self.keys.add(key)

    def shown(self, key: str, count: int | None) -> bool:
        """True when ``key`` was shown in the cell ``count``."""
        with self._lock:
            return count == self.count and key in self.keys


class _Notifier(Protocol):
    def notify(self, title: str, body: str = "") -> None: ...


def execution_count(shell: InteractiveShell | None) -> int | None:
    """The shell's execution count (None without a shell)."""
    count = shell.execution_count if shell is not None else None
    return count if isinstance(count, int) else None


def display_obj(obj: object, **kw: Any) -> DisplayHandle | None:
    """IPython's ``display`` (imported when first used)."""
    from IPython.display import display

    handle: DisplayHandle | None = display(obj, **kw)
    return handle


# -- one-line names ---------------------------------------------------------------------------
def job_label(job: Job) -> str:
    """``job <id8>`` once the API gave an id, else ``request <key8>`` (the cache key)."""
    return f"job {job.id[:8]}" if job.id else f"request {job.key[:8]}"


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
    if how.frontend in ("terminal", "headless"):
        print(status_line(job), flush=True)
    else:
        _show_widget(job, session)
        if how.notify:
            notifier = _show_notifier()
            if notifier is not None:
                _watch_notify(job, notifier)
    try:
        result = job.result(timeout=how.timeout)
    except TimeoutError:
        raise JobTimedOut(job.id, key=job.key) from None
    except KeyboardInterrupt:
        print(
            f"Stopped waiting; the job keeps going. Resume with %goenhance resume "
            f"{job.id or job.key}",
            file=sys.stderr,
        )
        raise
    display_obj(publish(result))


def _present_live(
    job: Job, how: Presentation, session: Session, make_publish: Callable[[Job], Publish]
) -> None:
    simulated = job.backend == "simulated"
    handle: DisplayHandle | None = None
    notifier: _Notifier | None = None

    def on_follow(new_job: Job) -> None:
        # the widget's Retry button follows a new job: the placeholder follows it too
        if handle is None or new_job is job:
            return
        handle.update(_display.placeholder_bundle(job_label(new_job), simulated=simulated))
        _watch_update(new_job, handle, make_publish(new_job))
        if notifier is not None:
            _watch_notify(new_job, notifier)

    _show_widget(job, session, on_follow=on_follow)
    if how.notify and how.frontend != "headless":
        notifier = _show_notifier()
        if notifier is not None:
            _watch_notify(job, notifier)
    handle = display_obj(
        _display.placeholder_bundle(job_label(job), simulated=simulated), display_id=True
    )
    if handle is not None:
        _watch_update(job, handle, make_publish(job))


# -- widgets ----------------------------------------------------------------------------------
@functools.cache
def _status_class() -> type[StatusWidget]:
    """StatusWidget, extended with a hook called whenever it follows a job (Retry).

    :raises ImportError: ipywidgets is not installed.
    """
    from goenhance_nb.widgets import StatusWidget

    class MagicStatusWidget(StatusWidget):
        """The magic's compact status widget; ``on_follow(job)`` runs after each follow."""

        _on_follow: Callable[[Job], None] | None = None

        def follow(self, job: Job) -> None:
            super().follow(job)
            cb = self._on_follow
            if cb is not None:
                cb(job)

    return MagicStatusWidget


def _show_widget(
    job: Job, session: Session, on_follow: Callable[[Job], None] | None = None
) -> None:
    """Display the live (compact) status widget of ``job``; text line if widgets are missing."""
    try:
        cls = _status_class()
    except ImportError:
        print(status_line(job), flush=True)
        return
    widget = cls(job, session=session, compact=True)
    widget._on_follow = on_follow
    display_obj(widget)


def _show_notifier() -> _Notifier | None:
    """Display the browser notifier ("Notify me"); None without anywidget (toast only)."""
    try:
        from goenhance_nb.widgets import make_notifier

        notifier: _Notifier | None = make_notifier()
    except ImportError:
        return None
    if notifier is not None:
        display_obj(notifier)
    return notifier


# -- listeners (engine thread) ----------------------------------------------------------------
def when_finished(job: Job, fn: Callable[[Job], None]) -> None:
    """Call ``fn(job)`` once, on the engine thread, when ``job`` has ended (result, error or
    watch cancelled) and its handle is settled (``job.done()``)."""
    # TODO(lead): on_finish: this is the one subscribe-based terminal listener; becomes
    # ``job.on_finish(fn)`` when Job.on_finish lands.
    fired = threading.Event()

    def on_event(event: JobEvent) -> None:
        # "cached" comes before the handle settles; the "done" that follows finds it settled
        if fired.is_set() or not EventKind(event.kind).ends_watch or not job.done():
            return
        fired.set()
        fn(job)

    job.subscribe(on_event)


def _end_kind(job: Job) -> EventKind:
    """The terminal kind of a finished job: done, failed, timed out or watch cancelled."""
    if job.record is not None:
        return EventKind.DONE
    if isinstance(job.error, JobTimedOut):
        return EventKind.TIMED_OUT
    if job.error is not None:
        return EventKind.FAILED
    return EventKind.WATCH_CANCELLED


def _watch_notify(job: Job, notifier: _Notifier) -> None:
    """One browser notification when ``job`` ends (ready or failed).

    A custom message (``notifier.notify``), never a synced trait: the text is not saved.
    """
    from goenhance_nb.widgets import job_notification

    def on_finish(job: Job) -> None:
        with contextlib.suppress(Exception):  # a listener never raises into the engine
            note = job_notification(_end_kind(job), result=job.record, error=job.error)
            if note is not None:
                notifier.notify(*note)

    when_finished(job, on_finish)


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
                jid = job.id or job.key[:12]
                text = f"GoEnhance: stopped watching {jid}; %goenhance resume {jid}"
                handle.update(_display.ResultBundle({"text/plain": text}))
        except Exception as exc:  # a listener never raises into the engine
            with contextlib.suppress(Exception):
                handle.update(_display.error_bundle(exc, job_id=job.id))

    when_finished(job, on_finish)


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
    when_finished(job, on_finish)


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


def job_bundle(job: Job, *, same_cell: bool) -> tuple[dict[str, object], dict[str, object]]:
    """The display of a bare ``job``: the result video (+ provenance metadata) when done, else
    a status line. ``same_cell``: the magic of the running cell already showed the job, so only
    the status line (no second video)."""
    text = job_text(job)
    if job.done() and job.error is None and not same_cell:
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
    if same_cell and not job.done():
        text = f"<Job: {job_label(job)}> (live status above; the video replaces the placeholder)"
    return (
        {
            "text/html": f"<div class='goenhance-job-repr' style='font-size:12px'>"
            f"{html.escape(text)}</div>",
            "text/plain": text,
        },
        {},
    )
