"""The Job handle: what the caller holds while the engine runs one transformation.

A :class:`Job` is a read-only, thread-safe view of one run on the
:class:`~goenhance_nb._engine.JobEngine`: its key and job id, its state (a
:class:`~goenhance_nb._lifecycle.JobState`, never a plain string), the API's raw status, the
events so far, and the outcome (``result(timeout)``, ``await job``, ``done()``). It never
decides anything: the engine owns the run (queue slot, budget reservation, task, deadline) in a
private per-run object and publishes here what the caller may see, on the engine thread:

- the published fields (``id``, ``state``, ``raw_status``, ``cached``, ``cost``, ``error``,
  ``progress``, ``queue_position``, ``started``), written only by the engine;
- events, through :meth:`Job._emit` (delivered to :meth:`subscribe` listeners);
- the outcome, through :meth:`Job._resolve` / :meth:`Job._reject` / :meth:`Job._abandon`,
  always before the event that ends the job is emitted (so a listener reacting to ``failed``
  sees a finished handle).

A job *ends for this session* with its first event whose kind ``ends_watch``: ``done``,
``cached`` (followed by its ``done``), ``failed``, ``timed_out`` or ``watch_cancelled``.
:meth:`Job.on_finish` callbacks run once, right after the event that ends the job reached the
listeners (the ``done`` after ``cached``, so ``record`` is set by then). Callbacks and listeners
run on the engine thread; a failing one is logged and skipped (STYLE 12).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from goenhance_nb._lifecycle import EventKind, JobState

if TYPE_CHECKING:
    from goenhance_nb._cache import ResultRecord
    from goenhance_nb._errors import GoEnhanceError
    from goenhance_nb._inputs import InputRef
    from goenhance_nb._records import JobSpec
    from goenhance_nb._usage import Estimate

__all__ = ["Job", "JobDriver", "JobEvent", "JobRequest"]

log = logging.getLogger("goenhance_nb.engine")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One thing that happened to a job.

    ``state`` is the job's normalised state then, ``raw_status`` the API's status verbatim,
    ``elapsed`` seconds since the handle was made (or since the recorded submission, when
    re-attached), ``queue_position`` the 1-based local queue position (``queued_locally``
    only), ``result`` the :class:`ResultRecord` (``done``/``cached``), ``error`` the exception
    (``failed``, ``timed_out``), ``progress`` ``(bytes, total)`` while downloading.
    """

    key: str
    kind: EventKind
    state: JobState
    raw_status: str | None = None
    message: str = ""
    elapsed: float = 0.0
    queue_position: int | None = None
    job_id: str | None = None
    cost: int | None = None
    result: ResultRecord | None = None
    error: BaseException | None = None
    ts: float = 0.0
    progress: tuple[int, int | None] | None = None


@dataclass
class JobRequest:
    """Everything the engine needs to run (or re-attach to) one transformation.

    ``reference_url`` is an async callable returning the public input URL (uploading on first
    use); it is only awaited when a new generate call is needed. ``estimate`` is the budget
    reservation made by the session (released or turned into spend by the engine). ``timeout``
    is this request's share of the job's deadline: seconds from submission (``job_timeout``
    when None); a job joined by several requests keeps the latest of their deadlines.
    """

    key: str
    spec: JobSpec
    input: InputRef
    model_version: str
    style_label: str
    backend: str
    reference_url: Callable[[], Awaitable[str]] | None
    timeout: float | None = None
    force: bool = False
    resubmit: bool = False
    estimate: Estimate | None = None
    source_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class JobDriver(Protocol):
    """What a handle needs from the engine that runs it (the engine implements this)."""

    clock: Callable[[], float]

    def on_engine_thread(self) -> bool:
        """True when called from the engine's own thread."""
        ...

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on the engine thread."""
        ...

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the engine loop and return its result."""
        ...

    def stop_watching(self, job: Job) -> None:
        """Stop polling/downloading ``job`` locally (called on the engine thread)."""
        ...


class Job:
    """Handle on one transformation running on the engine. Thread-safe; non-blocking.

    Attributes (read them; only the engine writes them): ``key`` (request key), ``id``
    (img_uuid once known), ``state`` (:class:`JobState`), ``raw_status``, ``cached`` (served
    from cache), ``cost``, ``error``, ``history`` (events so far), ``spec``, ``input``,
    ``backend``, ``request``, ``progress`` ``(bytes, total)`` of the download,
    ``queue_position`` (local queue), ``started`` (engine clock at which ``elapsed`` is 0),
    ``started_wall``.
    """

    def __init__(self, driver: JobDriver, request: JobRequest) -> None:
        self._driver = driver
        self.request = request
        self.key = request.key
        self.spec = request.spec
        self.input = request.input
        self.backend = request.backend
        self.id: str | None = None
        self.state = JobState.LOCAL
        self.raw_status: str | None = None
        self.cached = False
        self.error: GoEnhanceError | None = None
        self.cost: int | None = None
        self.progress: tuple[int, int | None] | None = None
        self.history: list[JobEvent] = []
        self.queue_position: int | None = None
        self.started = driver.clock()
        self.started_wall = time.time()
        self._listeners: list[Callable[[JobEvent], Any]] = []
        self._finish_callbacks: list[Callable[[Job], None]] | None = []  # None once finished
        self._final: JobEvent | None = None
        self._lock = threading.Lock()
        self._outcome: concurrent.futures.Future[ResultRecord] = concurrent.futures.Future()

    # -- reading ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        jid = self.id or self.key[:12]
        return f"<Job {jid} {self.state} raw={self.raw_status!r}{' cached' if self.cached else ''}>"

    def done(self) -> bool:
        """True once the job finished (result, error, timeout or watch cancelled)."""
        return self._outcome.done()

    @property
    def final_event(self) -> JobEvent | None:
        """The event that ended the job for this session (its kind ``ends_watch``; after a
        cache hit the ``done`` that follows ``cached``), else ``None``."""
        return self._final

    @property
    def path(self) -> Path | None:
        """The stored result file once done, else ``None``."""
        record = self.record
        return record.file if record is not None else None

    @property
    def record(self) -> ResultRecord | None:
        """The :class:`ResultRecord` once done, else ``None``."""
        out = self._outcome
        if out.done() and not out.cancelled() and out.exception() is None:
            return out.result()
        return None

    def result(self, timeout: float | None = None) -> ResultRecord:
        """Block until the job finishes and return its :class:`ResultRecord`.

        :raises TimeoutError: ``timeout`` seconds passed first (the job keeps running).
        :raises JobFailed, JobTimedOut, LedgerError, APIError, ...: the job's own error.
        :raises concurrent.futures.CancelledError: after :meth:`cancel_watch`.
        """
        if self._driver.on_engine_thread() and not self._outcome.done():
            # Re-entrant call from a callback: drive the loop instead of deadlocking it.
            return self._driver.run(self._await_with_timeout(timeout))
        try:
            return self._outcome.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"job {self.id or self.key[:12]} still running after {timeout}s"
            ) from None

    def wait(self, timeout: float | None = None) -> ResultRecord:
        """Alias of :meth:`result`."""
        return self.result(timeout)

    async def _await_with_timeout(self, timeout: float | None) -> ResultRecord:
        return await asyncio.wait_for(asyncio.wrap_future(self._outcome), timeout)

    def __await__(self) -> Generator[Any, None, ResultRecord]:
        """``await job`` in any event loop -> :class:`ResultRecord` (same errors as result())."""
        return asyncio.wrap_future(self._outcome).__await__()

    # -- following -------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[JobEvent], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` on the engine thread for every event, starting with a replay
        of the latest one. Returns a function that unsubscribes."""

        def _attach() -> None:
            with self._lock:
                self._listeners.append(callback)
                latest = self.history[-1] if self.history else None
            if latest is not None:
                _deliver(callback, latest)

        self._driver.call_soon(_attach)

        def unsubscribe() -> None:
            def _detach() -> None:
                with self._lock, contextlib.suppress(ValueError):
                    self._listeners.remove(callback)

            self._driver.call_soon(_detach)

        return unsubscribe

    def on_finish(self, callback: Callable[[Job], None]) -> None:
        """Call ``callback(job)`` exactly once, on the engine thread, when the job ends for this
        session: done (also from the cache), failed, timed out, or watch cancelled (see
        :attr:`final_event` for which; ``record``/``error`` are set by then). Immediately (on the
        engine thread) when it already ended. A failing callback is logged and skipped."""

        def _attach() -> None:
            with self._lock:
                pending = self._finish_callbacks
                if pending is not None:
                    pending.append(callback)
                    return
            _call_finish(callback, self)

        self._driver.call_soon(_attach)

    def cancel_watch(self) -> None:
        """Stop polling/downloading locally. The job stays in the ledger and can be resumed;
        ``result()`` then raises ``CancelledError``."""
        self._driver.call_soon(lambda: self._driver.stop_watching(self))

    # -- publishing (engine side, on the engine thread) ------------------------------------
    def _emit(self, kind: EventKind, **kw: Any) -> JobEvent:
        """Append an event to ``history`` and deliver it to the listeners; an event that ends
        the job (after a cache hit: its ``done``) then runs the ``on_finish`` callbacks."""
        ev = JobEvent(
            key=self.key,
            kind=kind,
            state=kw.pop("state", self.state),
            raw_status=kw.pop("raw_status", self.raw_status),
            elapsed=max(0.0, self._driver.clock() - self.started),
            job_id=kw.pop("job_id", self.id),
            ts=time.time(),
            **kw,
        )
        with self._lock:
            self.history.append(ev)
            listeners = list(self._listeners)
        for cb in listeners:
            _deliver(cb, ev)
        if kind.ends_watch and kind is not EventKind.CACHED:
            self._finish(ev)
        return ev

    def _finish(self, ev: JobEvent) -> None:
        with self._lock:
            callbacks, self._finish_callbacks = self._finish_callbacks, None
            if callbacks is None:
                return
            self._final = ev
        for cb in callbacks:
            _call_finish(cb, self)

    def _resolve(self, record: ResultRecord) -> None:
        """Settle the outcome with a result (before the ``done`` event)."""
        self._outcome.set_result(record)

    def _reject(self, error: GoEnhanceError) -> None:
        """Settle the outcome with ``error`` (before the ``failed``/``timed_out`` event)."""
        self.error = error
        self._outcome.set_exception(error)

    def _abandon(self) -> None:
        """Settle the outcome as cancelled (before the ``watch_cancelled`` event)."""
        self._outcome.cancel()
        self._outcome.set_running_or_notify_cancel()


def _deliver(cb: Callable[[JobEvent], Any], ev: JobEvent) -> None:
    try:
        cb(ev)
    except Exception:  # a failing listener is logged and skipped
        log.exception("goenhance_nb: event listener %r failed on %s; skipped", cb, ev.kind)


def _call_finish(cb: Callable[[Job], None], job: Job) -> None:
    try:
        cb(job)
    except Exception:  # a failing callback is logged and skipped
        log.exception("goenhance_nb: on_finish callback %r failed for %s; skipped", cb, job.key)
