"""The job engine: one background thread with its own asyncio loop (DECISIONS 3).

Every job is a task on that loop. A :class:`Job` is a thread-safe handle on it:
``job.result(timeout)`` waits on a :class:`concurrent.futures.Future`, ``await job`` works in
any loop, and ``job.subscribe(cb)`` delivers :class:`JobEvent` s on the engine thread (a failing
listener is logged and skipped, STYLE 12).

The life of a job (docs/ARCHITECTURE.md section 3, STYLE 9)::

    cache hit (file present, right size)  -> "cached", "done"    (no HTTP at all)
    take the per-key file lock (another process on the same key -> wait, then re-check)
    ledger entry with an img_uuid         -> re-attach: poll, download
    ledger entry stuck in "submitting"    -> LedgerError (resume --resubmit), unless resubmit
    otherwise: wait for a local queue slot (account queueLimit) -> "queued_locally"
               ledger "submitting" -> POST generate (once) -> ledger img_uuid -> poll -> download

The POST and the ledger write of its answer are shielded from "stop watching". An error the
client marks ``job_may_exist`` (the server may have made and charged a job) leaves the entry
"submitting" with the reason (an orphan: only ``resume --resubmit`` pays again); a provable
refusal marks it "failed" (DECISIONS 25).

Polling runs every ``poll_interval`` until the job's deadline (counted from submission or
re-attachment, not from local waiting; a joining request may extend it, DECISIONS 27); at the
deadline the job stays in the ledger as resumable and the handle raises :class:`JobTimedOut`. Downloads stream into a
per-key temp file (resumed with Range), are size-checked, hashed and renamed into the store; an
expired result URL triggers a fresh ``jobs/detail`` for a new URL.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import filelock

from goenhance_nb import _sync
from goenhance_nb._cache import ResultCache, ResultRecord
from goenhance_nb._errors import (
    APIError,
    CacheError,
    DiskFull,
    GoEnhanceError,
    InsufficientCredits,
    InvalidParameters,
    JobFailed,
    JobTimedOut,
    LedgerError,
    RateLimited,
    ResultExpired,
    TooLarge,
    TransportError,
)
from goenhance_nb._inputs import InputRef
from goenhance_nb._ledger import Ledger, LedgerEntry, orphan_error
from goenhance_nb._lifecycle import JobState, known_raw_status
from goenhance_nb._records import JobDetail, JobSpec
from goenhance_nb._store import ResultStore, probe_result
from goenhance_nb._usage import Estimate, Usage

if TYPE_CHECKING:
    from goenhance_nb._client import AsyncClient

__all__ = ["EVENT_KINDS", "LOCAL_QUEUE", "Job", "JobEngine", "JobEvent", "JobRequest"]

log = logging.getLogger("goenhance_nb.engine")
T = TypeVar("T")

#: ``Job.state`` while the job waits for a local queue slot (not yet submitted).
LOCAL_QUEUE = "LOCAL_QUEUE"
#: ``Job.state`` before anything happened (validated, not yet looked up).
PENDING_LOCAL = "LOCAL"

EVENT_KINDS = frozenset(
    {
        "validated",
        "cached",
        "queued_locally",
        "submitting",
        "submitted",
        "status",
        "downloading",
        "done",
        "failed",
        "timed_out",
        "watch_cancelled",
    }
)


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One thing that happened to a job. ``kind`` is one of :data:`EVENT_KINDS`.

    ``state`` is the normalised state (a :class:`JobState` or ``"LOCAL_QUEUE"``/``"LOCAL"``),
    ``raw_status`` the API's status verbatim, ``elapsed`` seconds since the handle was made,
    ``queue_position`` the 1-based local queue position (``queued_locally`` only), ``result``
    the :class:`ResultRecord` (``done``/``cached``), ``error`` the exception (``failed``,
    ``timed_out``), ``progress`` ``(bytes, total)`` while downloading.
    """

    key: str
    kind: str
    state: JobState | str
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


class Job:
    """Handle on one transformation running on the engine. Thread-safe; non-blocking.

    Attributes: ``key`` (request key), ``id`` (img_uuid once known), ``state``, ``raw_status``,
    ``cached`` (served from cache), ``error``, ``history`` (events so far), ``spec``, ``input``,
    ``backend``, ``progress`` ``(bytes, total)`` of the download.
    """

    def __init__(self, engine: JobEngine, request: JobRequest) -> None:
        self._engine = engine
        self.request = request
        self.key = request.key
        self.spec = request.spec
        self.input = request.input
        self.backend = request.backend
        self.id: str | None = None
        self.state: JobState | str = PENDING_LOCAL
        self.raw_status: str | None = None
        self.cached = False
        self.error: GoEnhanceError | None = None
        self.cost: int | None = None
        self.progress: tuple[int, int | None] | None = None
        self.history: list[JobEvent] = []
        self.queue_position: int | None = None
        self._listeners: list[Callable[[JobEvent], Any]] = []
        self._lock = threading.Lock()
        self._future: concurrent.futures.Future[ResultRecord] = concurrent.futures.Future()
        self._task: asyncio.Task[None] | None = None
        self._reservation_open = request.estimate is not None
        self._extra_estimate: Estimate | None = None
        self._slot = False
        # The job's own deadline (engine clock), set when it exists on the server; until then
        # the budget (seconds) it will get: the longest of its joiners' (DECISIONS 27).
        self.deadline: float | None = None
        self._budget = request.timeout if request.timeout is not None else engine.job_timeout
        self.started = engine.clock()
        self.started_wall = time.time()

    # -- public face -----------------------------------------------------------------------
    def __repr__(self) -> str:
        jid = self.id or self.key[:12]
        return f"<Job {jid} {self.state} raw={self.raw_status!r}{' cached' if self.cached else ''}>"

    def done(self) -> bool:
        """True once the job finished (result, error, timeout or watch cancelled)."""
        return self._future.done()

    @property
    def path(self) -> Path | None:
        """The stored result file once done, else ``None``."""
        record = self.record
        return record.file if record is not None else None

    @property
    def record(self) -> ResultRecord | None:
        """The :class:`ResultRecord` once done, else ``None``."""
        if (
            self._future.done()
            and not self._future.cancelled()
            and self._future.exception() is None
        ):
            return self._future.result()
        return None

    def result(self, timeout: float | None = None) -> ResultRecord:
        """Block until the job finishes and return its :class:`ResultRecord`.

        :raises TimeoutError: ``timeout`` seconds passed first (the job keeps running).
        :raises JobFailed, JobTimedOut, LedgerError, APIError, ...: the job's own error.
        :raises concurrent.futures.CancelledError: after :meth:`cancel_watch`.
        """
        if self._engine.on_engine_thread() and not self._future.done():
            # Re-entrant call from a callback: drive the loop instead of deadlocking it.
            return self._engine.run(self._await_with_timeout(timeout))
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"job {self.id or self.key[:12]} still running after {timeout}s"
            ) from None

    def wait(self, timeout: float | None = None) -> ResultRecord:
        """Alias of :meth:`result`."""
        return self.result(timeout)

    async def _await_with_timeout(self, timeout: float | None) -> ResultRecord:
        return await asyncio.wait_for(asyncio.wrap_future(self._future), timeout)

    def __await__(self) -> Generator[Any, None, ResultRecord]:
        """``await job`` in any event loop -> :class:`ResultRecord` (same errors as result())."""
        return asyncio.wrap_future(self._future).__await__()

    def subscribe(self, callback: Callable[[JobEvent], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` on the engine thread for every event, starting with a replay
        of the latest one. Returns a function that unsubscribes."""

        def _attach() -> None:
            with self._lock:
                self._listeners.append(callback)
                latest = self.history[-1] if self.history else None
            if latest is not None:
                _deliver(callback, latest)

        self._engine.call_soon(_attach)

        def unsubscribe() -> None:
            def _detach() -> None:
                with self._lock, contextlib.suppress(ValueError):
                    self._listeners.remove(callback)

            self._engine.call_soon(_detach)

        return unsubscribe

    def cancel_watch(self) -> None:
        """Stop polling/downloading locally. The job stays in the ledger and can be resumed;
        ``result()`` then raises ``CancelledError``."""
        self._engine.call_soon(self._cancel_on_loop)

    def _cancel_on_loop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    # -- engine side -----------------------------------------------------------------------
    def _release_reservation(self) -> None:
        """Drop the budget reservation (the job will not cost anything new)."""
        est = self._extra_estimate or self.request.estimate
        if self._reservation_open and est is not None:
            self._reservation_open = False
            self._extra_estimate = None
            self._engine.usage.release(est)

    def _emit(self, kind: str, **kw: Any) -> JobEvent:
        ev = JobEvent(
            key=self.key,
            kind=kind,
            state=kw.pop("state", self.state),
            raw_status=kw.pop("raw_status", self.raw_status),
            elapsed=max(0.0, self._engine.clock() - self.started),
            job_id=kw.pop("job_id", self.id),
            ts=time.time(),
            **kw,
        )
        with self._lock:
            self.history.append(ev)
            listeners = list(self._listeners)
        for cb in listeners:
            _deliver(cb, ev)
        return ev


class _JobLost(JobFailed):
    """The API kept answering "job not found" for a job we submitted (a definite "gone")."""


def _bounded(raw: str | None, limit: int = 80) -> str | None:
    """An API status as shown and stored: verbatim, but at most ``limit`` characters on one line."""
    if raw is None:
        return None
    text = " ".join(str(raw).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _deliver(cb: Callable[[JobEvent], Any], ev: JobEvent) -> None:
    try:
        cb(ev)
    except Exception:  # a failing listener is logged and skipped
        log.exception("goenhance_nb: event listener %r failed on %s; skipped", cb, ev.kind)


class _LocalQueue:
    """FIFO of jobs waiting for one of ``limit`` server slots (account queueLimit)."""

    def __init__(self) -> None:
        self.limit: int | None = None
        self.used = 0
        self.waiters: list[tuple[Job, asyncio.Future[None]]] = []

    def try_take(self) -> bool:
        if self.limit is None or (self.used < self.limit and not self.waiters):
            self.used += 1
            return True
        return False

    def release(self) -> None:
        self.used = max(0, self.used - 1)
        self._wake()

    def _wake(self) -> None:
        while self.waiters and (self.limit is None or self.used < self.limit):
            job, fut = self.waiters.pop(0)
            if fut.done():
                continue
            self.used += 1
            fut.set_result(None)
        for i, (job, _) in enumerate(self.waiters):
            if job.queue_position != i + 1:
                job.queue_position = i + 1
                job._emit(
                    "queued_locally",
                    state=LOCAL_QUEUE,
                    queue_position=i + 1,
                    message=f"waiting locally for a free slot (position {i + 1})",
                )


class JobEngine:
    """Runs jobs as tasks on one background daemon thread with its own asyncio loop.

    :param client: the :class:`AsyncClient` (used only on the engine loop).
    :param poll_interval: seconds between ``jobs/detail`` polls.
    :param job_timeout: default wall-clock deadline per job, seconds.
    :param clock: monotonic clock used for deadlines and elapsed times (injectable).
    :param sleep: async sleep (injectable).
    :param queue_limit: concurrent server jobs; ``None`` = ask the account (``queueLimit``)
        on the first submission, default 3 if it does not say.
    """

    def __init__(
        self,
        client: AsyncClient,
        *,
        cache: ResultCache,
        ledger: Ledger,
        store: ResultStore,
        usage: Usage,
        poll_interval: float = 5.0,
        job_timeout: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        queue_limit: int | None = None,
        max_poll_errors: int = 8,
        lock_poll: float = 0.1,
    ) -> None:
        self.client = client
        self.cache = cache
        self.ledger = ledger
        self.store = store
        self.usage = usage
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self.clock = clock
        self._sleep = sleep
        self.max_poll_errors = max_poll_errors
        self.lock_poll = lock_poll
        self._queue = _LocalQueue()
        self._queue_limit_fixed = queue_limit
        self._queue_limit_known = queue_limit is not None
        self._queue_limit_task: asyncio.Future[None] | None = None
        self._queue.limit = queue_limit
        self._active: dict[str, Job] = {}
        self._active_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # -- loop management -------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The engine's event loop (the thread starts on first use)."""
        with self._start_lock:
            if self._loop is None:
                if self._closed:
                    raise GoEnhanceError("the job engine is closed")
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def _run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                t = threading.Thread(target=_run, name="goenhance-engine", daemon=True)
                t.start()
                ready.wait()
                self._loop, self._thread = loop, t
                _sync.register_engine_loop(loop)
            return self._loop

    def on_engine_thread(self) -> bool:
        """True when called from the engine's own thread."""
        return self._thread is not None and threading.current_thread() is self._thread

    def call_soon(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` on the engine thread (now, if already there)."""
        if self.on_engine_thread():
            fn()
        else:
            self.loop.call_soon_threadsafe(fn)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the engine loop and return its result (blocking the caller).

        Safe from any thread; from the engine thread itself it goes through ``_sync.run_sync``.
        """
        if self.on_engine_thread():
            # Make sure run_sync sees *this* loop as the engine loop (another Session's engine
            # may have registered later), so it nests instead of blocking this thread.
            _sync.register_engine_loop(self.loop)
            return _sync.run_sync(coro)
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop watching all jobs (they stay resumable), close the client and the engine
        thread's database handles, stop the loop and join the thread."""
        with self._start_lock:
            loop, self._closed = self._loop, True
        if loop is None:
            return

        async def _shutdown() -> None:
            tasks: list[asyncio.Future[None]] = [
                j._task for j in list(self._active.values()) if j._task is not None
            ]
            if self._queue_limit_task is not None and not self._queue_limit_task.done():
                tasks.append(self._queue_limit_task)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.client.aclose()
            # diskcache keeps one SQLite connection per thread: close this thread's handles
            # (the caller closes its own), so none outlives the engine.
            for db in (self.ledger, self.cache):
                with contextlib.suppress(Exception):
                    db.close()

        if not self.on_engine_thread():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_shutdown(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout)
        if _sync.engine_loop() is loop:
            _sync.register_engine_loop(None)
        if not loop.is_running():
            loop.close()

    # -- submission ------------------------------------------------------------------------
    def active(self, key: str) -> Job | None:
        """The unfinished job for ``key`` in this process, if any."""
        with self._active_lock:
            job = self._active.get(key)
        return job if job is not None and not job.done() else None

    def join(self, key: str, timeout: float | None = None) -> Job | None:
        """Join the unfinished job for ``key`` in this process, if any (DECISIONS 27).

        The job's deadline becomes the later of its own and now + ``timeout`` (the engine's
        ``job_timeout`` when None); ``timeout`` itself bounds only the caller's own wait
        (``job.result(timeout)``).
        """
        with self._active_lock:
            job = self._active.get(key)
            if job is None or job.done():
                return None
            self._extend(job, timeout)
            return job

    def _extend(self, job: Job, timeout: float | None) -> None:
        """Give ``job`` at least ``timeout`` more seconds (caller holds ``_active_lock``)."""
        budget = timeout if timeout is not None else self.job_timeout
        if job.deadline is None:
            job._budget = max(job._budget, budget)
        else:
            job.deadline = max(job.deadline, self.clock() + budget)

    def _start_deadline(self, job: Job) -> None:
        """The job exists on the server (submitted or re-attached): its deadline starts now."""
        with self._active_lock:
            job.deadline = max(job.deadline or 0.0, self.clock() + job._budget)

    def _deadline_passed(self, job: Job) -> bool:
        """True once ``job``'s deadline passed; the job then leaves the active set at once, so
        a later request for its key starts a new handle (which re-attaches) instead of joining
        one that is timing out."""
        with self._active_lock:
            if job.deadline is None or self.clock() < job.deadline:
                return False
            if self._active.get(job.key) is job:
                del self._active[job.key]
            return True

    def running(self) -> list[Job]:
        """The unfinished jobs this engine is driving (submitting, queued, polling, ...)."""
        with self._active_lock:
            jobs = list(self._active.values())
        return [j for j in jobs if not j.done()]

    def submit(self, request: JobRequest) -> Job:
        """Start (or join) the job for ``request.key`` and return its handle at once.

        A job for the same key already running in this process is returned instead of a new
        one; its deadline is extended as :meth:`join` says. Otherwise a usable cached result
        (not ``force``) is served right here: the returned handle is already done and
        ``cached`` (no task on the engine loop).
        """
        hit = None if request.force else self._usable_hit(request.key)
        with self._active_lock:
            existing = self._active.get(request.key)
            if existing is not None and not existing.done():
                if request.estimate is not None:
                    self.usage.release(request.estimate)
                self._extend(existing, request.timeout)
                return existing
            job = Job(self, request)
            if hit is None:
                self._active[request.key] = job
        job._emit("validated", message=f"validated {request.input.name}")
        if hit is not None:
            # A cache hit settles here, on the caller's thread: the handle is done on return
            # (no engine round trip, no live widget needed), with the same events as _run.
            self._serve_hit(job, hit)
            job._future.set_result(hit)
            job._emit("done", result=hit, message=str(hit.path))
            return job

        def _start() -> None:
            job._task = self.loop.create_task(self._run(job))

        self.call_soon(_start)
        return job

    # -- the job task ----------------------------------------------------------------------
    async def _run(self, job: Job) -> None:
        # The handle settles (future resolved, job no longer active) BEFORE the terminal event
        # is emitted, so a listener that reacts to "failed" / "done" (e.g. a Retry button that
        # resubmits the same key) sees a finished job and never gets this one back.
        terminal: tuple[str, dict[str, Any]] | None = None
        try:
            record = await self._drive(job)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                e = self.ledger.get(job.key)
                if e is not None and e.job_id is not None and e.state not in ("done", "failed"):
                    self.ledger.update(job.key, state="watch_cancelled")
            job._future.cancel()
            job._future.set_running_or_notify_cancel()
            terminal = (
                "watch_cancelled",
                {
                    "message": (
                        f"stopped watching; the job stays resumable: %goenhance resume {job.id or job.key[:12]}"
                    )
                },
            )
        except GoEnhanceError as exc:
            job.error = exc
            if isinstance(exc, JobTimedOut):
                terminal = ("timed_out", {"error": exc, "message": str(exc)})
            else:
                job.state = JobState.FAILED
                terminal = ("failed", {"error": exc, "message": str(exc)})
            job._future.set_exception(exc)
        except Exception as exc:  # a bug: surface it, never leave the handle hanging
            log.exception("goenhance_nb: job %s crashed", job.key[:12])
            err = GoEnhanceError(
                f"internal error in job {job.key[:12]}: {type(exc).__name__}: {exc}"
            )
            job.error = err
            job.state = JobState.FAILED
            terminal = ("failed", {"error": err, "message": str(err)})
            job._future.set_exception(err)
        else:
            job.state = JobState.DONE
            terminal = ("done", {"result": record, "message": str(record.path)})
            job._future.set_result(record)
        finally:
            job._release_reservation()
            with self._active_lock:
                if self._active.get(job.key) is job:
                    del self._active[job.key]
            if terminal is not None:
                job._emit(terminal[0], **terminal[1])

    async def _drive(self, job: Job) -> ResultRecord:
        req = job.request
        # The deadline runs from the moment the job exists on the server (submitted or
        # re-attached), not while it waits locally for a slot or for another process; joiners
        # may extend it (DECISIONS 27).

        stale: ResultRecord | None = None
        if not req.force:
            rec, stale = self._cache_hit(job, warn=True)
            if rec is not None:
                return rec

        lock = self.ledger.lock(job.key)
        await self._acquire(lock, job)
        try:
            if not req.force:
                rec, stale2 = self._cache_hit(job, warn=stale is None)
                if rec is not None:
                    return rec
                stale = stale or stale2
            entry = self.ledger.get(job.key)
            repair = False
            if stale is not None and stale.job_id and (entry is None or entry.job_id is None):
                # The index knows the job that made the (now missing) file: re-download from it.
                entry = self.ledger.put(
                    LedgerEntry(
                        key=job.key,
                        state="done",
                        spec=req.spec.canonical(),
                        backend=req.backend,
                        input_hash=req.input.content_hash,
                        model_version=req.model_version,
                        style_label=req.style_label,
                        source_name=stale.source_name,
                        job_id=stale.job_id,
                        cost=stale.cost,
                        created=stale.created,
                    )
                )
            if entry is not None and entry.job_id is not None and entry.state == "done":
                # Result recorded earlier but the cached file is missing or damaged.
                repair = not req.force
            if entry is None or entry.state == "failed" or (entry.state == "done" and req.force):
                entry = await self._submit(job, entry)
            elif entry.is_orphan or entry.job_id is None:
                if not req.resubmit:
                    raise orphan_error(job.key, entry.error)
                warnings.warn(
                    f"resubmitting orphaned job {job.key[:12]}; this may charge twice",
                    UserWarning,
                    stacklevel=1,
                )
                entry = await self._submit(job, entry)
            else:
                self._attach(job, entry)
            try:
                return await self._follow(job, entry)
            except (ResultExpired, _JobLost) as exc:
                if not repair:
                    raise
                # Only a definite "gone" may regenerate (and pay): the result URL stayed
                # expired after fresh-URL retries, or the API says it no longer knows the job.
                # A transient 5xx / transport error is raised instead: the job stays known.
                why = (
                    "its result URL expired"
                    if isinstance(exc, ResultExpired)
                    else "the API no longer knows its job"
                )
                warnings.warn(
                    f"cached result for {job.key[:12]} is gone and {why} ({exc}); "
                    "generating it again",
                    UserWarning,
                    stacklevel=1,
                )
                entry = await self._submit(job, entry)
                return await self._follow(job, entry)
        finally:
            with contextlib.suppress(Exception):
                lock.release()

    async def _follow(self, job: Job, entry: LedgerEntry) -> ResultRecord:
        """The job exists on the server: start its deadline, poll it, download its result."""
        self._start_deadline(job)
        detail = await self._poll(job, entry)
        return await self._download(job, entry, detail, job.deadline or self.clock())

    def _usable_hit(self, key: str) -> ResultRecord | None:
        """The cached record for ``key`` when it may be served as is (file present, right size);
        ``None`` otherwise (absent, missing or damaged: :meth:`_drive` deals with those)."""
        rec, status = self.cache.lookup(key)
        return rec if rec is not None and status == "ok" else None

    def _serve_hit(self, job: Job, rec: ResultRecord) -> None:
        """Mark ``job`` as served from the cache by ``rec`` (state done, the ``cached`` event)."""
        job.cached = True
        job.id = rec.job_id
        job.cost = rec.cost
        job.state = JobState.DONE
        job._emit("cached", result=rec, message="served from the cache")
        job._release_reservation()

    def _cache_hit(
        self, job: Job, *, warn: bool
    ) -> tuple[ResultRecord | None, ResultRecord | None]:
        """Return ``(record, None)`` on a usable hit, ``(None, stale_record)`` when the record's
        file is missing/damaged (deleted if damaged), ``(None, None)`` when absent."""
        rec, status = self.cache.lookup(job.key)
        if rec is not None and status == "ok":
            self._serve_hit(job, rec)
            return rec, None
        if rec is not None:
            if warn:
                warnings.warn(
                    f"cached result for {job.key[:12]} is {status}; fetching it again",
                    UserWarning,
                    stacklevel=1,
                )
                log.warning("goenhance_nb: cached result %s is %s; repairing", job.key[:12], status)
            if status == "damaged":
                with contextlib.suppress(CacheError, OSError):
                    self.store.remove(rec.file)
            return None, rec
        return None, None

    async def _acquire(self, lock: filelock.FileLock, job: Job) -> None:
        announced = False
        while True:
            try:
                lock.acquire(timeout=0)
                return
            except filelock.Timeout:
                if not announced:
                    announced = True
                    job._emit(
                        "status",
                        message="another process is running the same "
                        "transformation; waiting for it",
                    )
                await asyncio.sleep(self.lock_poll)

    def _attach(self, job: Job, entry: LedgerEntry) -> None:
        if entry.submitted_at:
            # elapsed counts from the submission recorded in the ledger (maybe by an earlier
            # kernel), not from this handle; the deadline keeps its own base (re-attachment)
            job.started = self.clock() - max(0.0, time.time() - float(entry.submitted_at))
        job.id = entry.job_id
        job.raw_status = entry.raw_status
        job.cost = entry.cost
        job._release_reservation()
        job._emit(
            "submitted",
            job_id=entry.job_id,
            cost=entry.cost,
            message=f"re-attached to job {entry.job_id}",
        )

    async def _ensure_queue_limit(self) -> None:
        """Learn the account's queueLimit once (one ``user/tokens`` call); concurrent callers
        wait for that one call, so no job slips past an unknown limit."""
        if self._queue_limit_known:
            return
        if self._queue_limit_task is None:
            self._queue_limit_task = asyncio.ensure_future(self._fetch_queue_limit())
        await asyncio.shield(self._queue_limit_task)

    async def _fetch_queue_limit(self) -> None:
        limit = 3
        try:
            cr = await self.client.credits()
            self.usage.last_credits = cr.count
            if cr.queue_limit is not None and cr.queue_limit > 0:
                limit = cr.queue_limit
        except GoEnhanceError as exc:
            log.warning("goenhance_nb: could not read the account's queue limit (%s); using 3", exc)
        self._queue.limit = limit
        self._queue_limit_known = True

    async def _take_slot(self, job: Job) -> None:
        await self._ensure_queue_limit()
        if self._queue.try_take():
            job._slot = True
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.waiters.append((job, fut))
        pos = len(self._queue.waiters)
        job.queue_position = pos
        job.state = LOCAL_QUEUE
        job._emit(
            "queued_locally",
            queue_position=pos,
            message=f"waiting locally for a free slot (position {pos})",
        )
        try:
            await fut
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._queue.waiters.remove((job, fut))
            if fut.done() and not fut.cancelled():
                self._queue.release()
            self._queue._wake()
            raise
        job.queue_position = None
        job._slot = True

    def _free_slot(self, job: Job) -> None:
        if job._slot:
            job._slot = False
            self._queue.release()

    async def _submit(self, job: Job, old: LedgerEntry | None) -> LedgerEntry:
        req = job.request
        if req.reference_url is None:
            if old is not None and old.reference_url:
                ref_url = old.reference_url
            else:
                raise LedgerError(f"job {job.key[:12]} has no input URL to resubmit with")
        est = req.estimate
        if not job._reservation_open:
            # A new charge the session did not foresee (e.g. regenerating a result whose job
            # is gone): check the budget here, still before any API call.
            est = self.usage.estimate(req.spec.model, req.spec.resolution, req.spec.duration)
            self.usage.reserve(est)
            job._reservation_open = True
            job._extra_estimate = est
        await self._take_slot(job)
        try:
            await self._check_balance(job, est)
            if req.reference_url is not None:
                ref_url = await req.reference_url()
            now = time.time()
            entry = LedgerEntry(
                key=job.key,
                state="submitting",
                spec=req.spec.canonical(),
                backend=req.backend,
                input_hash=req.input.content_hash,
                model_version=req.model_version,
                style_label=req.style_label,
                source_name=req.source_name or req.input.name,
                reference_url=ref_url,
                created=old.created if old is not None else now,
                pid=os.getpid(),
                extra={"input": req.input.to_json()},
            )
            entry = self.ledger.put(entry)  # durable before the POST (STYLE 9)
            job.state = JobState.QUEUED
            job._emit("submitting", message="submitting to the API")
            # The POST and the ledger write of its answer run shielded: "stop watching" (or
            # closing the engine) while they are in flight must not lose a paid job id. The
            # cancel is honoured once they are done (the job is then resumable by its id).
            post = asyncio.ensure_future(self._post(job, est, ref_url))
            try:
                entry = await asyncio.shield(post)
            except asyncio.CancelledError:
                while not post.done():  # asyncio.wait never cancels what it waits for
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait({post})
                if not post.cancelled():
                    post.exception()  # retrieved: its outcome is in the ledger already
                raise
        except BaseException:
            self._free_slot(job)
            raise
        job._emit(
            "submitted",
            job_id=job.id,
            cost=job.cost,
            message=f"submitted as job {job.id}"
            + (f" ({job.cost} credits)" if job.cost is not None else ""),
        )
        return entry

    async def _check_balance(self, job: Job, est: Estimate | None) -> None:
        """Refuse before the paid POST when the account provably cannot pay for the job.

        The balance seen last (``user/tokens``, read when the queue limit was learnt) is used
        when it suffices; a balance that looks too low is asked once more (it may have been
        topped up). "Too low" is 0 credits, or less than the estimate where the estimate is
        reliable (the simulator's published rates, or a rate observed on this account).

        :raises InsufficientCredits: nothing is sent, the ledger is not touched.
        """
        if est is None or self.usage.last_credits is None:
            return
        reliable = job.request.backend == "simulated" or est.basis == "observed"

        def short(have: int) -> bool:
            return have <= 0 or (reliable and have < est.credits)

        if not short(self.usage.last_credits):
            return
        with contextlib.suppress(GoEnhanceError):  # cannot ask: let the API decide
            self.usage.last_credits = (await self.client.credits()).count
        have = self.usage.last_credits
        if have is not None and short(have):
            raise InsufficientCredits(
                None,
                f"the account has {have} credits; this job needs {est}. Nothing was sent "
                "(top up, or pick a shorter duration or a lower resolution)",
            )

    async def _post(self, job: Job, est: Estimate | None, ref_url: str) -> LedgerEntry:
        """POST generate once and record its outcome in the ledger and the session's spend.

        The job id goes on the handle and into the log before any write that can fail.

        :raises LedgerError: the outcome is unknown (the server may have made and charged a
            job: the entry stays ``submitting`` with the reason; :func:`orphan_error`), or the
            ledger could not record a job the API accepted (the message names its id).
        :raises GoEnhanceError: the API provably made no job (entry ``failed``).
        """
        req = job.request
        try:
            gr = await self.client.generate(req.spec, ref_url)
        except GoEnhanceError as exc:
            if not exc.job_may_exist:
                # Provably no job (connect error, 401/403, 429/503, an envelope error): a
                # re-run may submit normally.
                self.ledger.update(job.key, state="failed", error=str(exc))
                raise
            # Maybe charged (DECISIONS 25): the entry stays "submitting" with the reason; a
            # re-run, Retry or --force refuses; only resume --resubmit pays again.
            log.warning(
                "goenhance_nb: generate for %s may have created a job (%s); left 'submitting'",
                job.key[:12],
                exc,
            )
            if est is not None and job._reservation_open:
                job._reservation_open = False
                job._extra_estimate = None
                self.usage.record_possible(est)
            with contextlib.suppress(LedgerError):
                self.ledger.update(job.key, error=str(exc))
            raise orphan_error(job.key, str(exc)) from None
        job.id = gr.img_uuid
        job.cost = gr.cost
        log.info("goenhance_nb: request %s submitted as job %s", job.key[:12], gr.img_uuid)
        if est is not None and job._reservation_open:
            job._reservation_open = False
            job._extra_estimate = None
            self.usage.record(
                est,
                gr.cost,
                model=req.spec.model,
                resolution=req.spec.resolution,
                duration=req.spec.duration,
            )
        try:
            return self.ledger.update(
                job.key,
                job_id=gr.img_uuid,
                state="submitted",
                cost=gr.cost,
                submitted_at=time.time(),
                error=None,
            )
        except LedgerError as exc:
            log.error(
                "goenhance_nb: job %s (request %s) was submitted but the ledger could not "
                "record it: %s",
                gr.img_uuid,
                job.key[:12],
                exc,
            )
            raise LedgerError(
                f"job {gr.img_uuid} was submitted but the ledger could not record it ({exc}); "
                f"it keeps running on the server: %goenhance resume {gr.img_uuid} or "
                f"resume('{gr.img_uuid}')"
            ) from None

    async def _poll(self, job: Job, entry: LedgerEntry) -> JobDetail:
        """Poll ``jobs/detail`` until a terminal status or ``job.deadline`` (which joiners may
        extend while this runs).

        :raises JobTimedOut: the deadline passed (ledger ``timed_out``, resumable).
        :raises JobFailed: the job failed; :class:`_JobLost` when the API kept saying it does
            not know the job.
        :raises APIError, TransportError: polling kept failing (``max_poll_errors``).
        """
        assert entry.job_id is not None
        job_id = entry.job_id
        errors = 0
        not_found = 0
        warned_unknown: set[str] = set()
        try:
            while True:
                if self._deadline_passed(job):
                    self.ledger.update(job.key, state="timed_out")
                    raise JobTimedOut(
                        job_id,
                        (
                            f"job {job_id} did not finish before its deadline; it keeps running on the "
                            f"server. Resume with %goenhance resume {job_id} or resume('{job_id}')"
                        ),
                    )
                try:
                    detail = await self.client.job_detail(job_id)
                except (TransportError, APIError) as exc:
                    if isinstance(exc, (InsufficientCredits, InvalidParameters)):
                        raise
                    if isinstance(exc, APIError) and "not found" in (exc.msg or "").lower():
                        not_found += 1
                        if not_found >= 3:
                            self.ledger.update(job.key, state="failed", error=str(exc))
                            raise _JobLost(job_id, "the API no longer knows this job") from None
                    errors += 1
                    if errors > self.max_poll_errors:
                        raise
                    delay = min(max(self.poll_interval, 0.05) * (2 ** min(errors, 6)), 60.0)
                    if isinstance(exc, RateLimited) and exc.retry_after:
                        delay = max(delay, float(exc.retry_after))
                    log.warning(
                        "goenhance_nb: polling job %s failed (%s); retrying in %.1fs",
                        job_id,
                        exc,
                        delay,
                    )
                    left = (job.deadline or self.clock()) - self.clock()
                    await self._sleep(min(delay, max(0.0, left)))
                    continue
                errors = 0
                not_found = 0
                raw = _bounded(detail.raw_status)
                low = (raw or "").strip().lower()
                if not known_raw_status(low) and low not in warned_unknown:
                    warned_unknown.add(low)
                    log.warning(
                        "goenhance_nb: job %s reports an unknown status %r; treating it as running",
                        job_id,
                        raw,
                    )
                # DONE is only shown once the file is stored; until then the job is "running".
                shown = JobState.RUNNING if detail.state is JobState.DONE else detail.state
                if raw != job.raw_status or shown != job.state:
                    job.raw_status = raw
                    job.state = shown
                    lstate = {
                        JobState.QUEUED: "queued",
                        JobState.RUNNING: "running",
                        JobState.DONE: "downloading",
                        JobState.FAILED: "failed",
                    }[detail.state]
                    self.ledger.update(job.key, raw_status=raw, state=lstate)
                    job._emit("status", message=f"status {raw}")
                if detail.state is JobState.FAILED:
                    msg = ""
                    if isinstance(detail.raw, dict):
                        msg = str(detail.raw.get("msg") or detail.raw.get("error") or "")
                    self.ledger.update(
                        job.key, state="failed", error=msg or raw, finished_at=time.time()
                    )
                    raise JobFailed(job_id, msg or f"status {raw}")
                if detail.state is JobState.DONE:
                    return detail
                await self._sleep(self.poll_interval)
        finally:
            self._free_slot(job)

    async def _download(
        self, job: Job, entry: LedgerEntry, detail: JobDetail, deadline: float
    ) -> ResultRecord:
        # DECISIONS 28: bytes enter the cache only after a size cap (checked as they arrive) and
        # a probe (a playable video of the requested length). A refused file is deleted and
        # fetched afresh (a fresh URL) once, then reported; a full disk is reported at once.
        # Either way the ledger entry keeps its job id, so the job stays resumable.
        req = job.request
        assert entry.job_id is not None
        job_id = entry.job_id
        job.state = JobState.RUNNING
        self.ledger.update(job.key, state="downloading")
        job._emit("downloading", message="downloading the result")
        part = self.store.part_path(job.key, job_id)
        max_mb = self.client.settings.max_result_mb
        max_bytes = int(max_mb * 1_000_000)
        max_duration = float(req.spec.duration)

        def probe(path: Path) -> float:
            return probe_result(path, max_duration=max_duration)

        refreshes = 0
        transport_errors = 0
        refused = 0
        last_emit = [0.0]

        def on_progress(done: int, total: int | None) -> None:
            job.progress = (done, total)
            now = time.monotonic()
            if now - last_emit[0] >= 0.25:
                last_emit[0] = now
                job._emit("downloading", progress=(done, total), message="downloading")

        url = detail.result_url
        while True:
            if url is None:
                raise ResultExpired(f"job {job_id} finished without a result URL")
            try:
                total = await self.client.download(
                    url, part, resume=True, on_progress=on_progress, max_bytes=max_bytes
                )
                stored = await asyncio.to_thread(
                    self.store.commit, part, expected_size=total, probe=probe
                )
                break
            except ResultExpired:
                refreshes += 1
                if refreshes > 2:
                    raise
                log.info("goenhance_nb: result URL of %s expired; asking for a fresh one", job_id)
                fresh = await self.client.job_detail(job_id)
                url = fresh.result_url
            except DiskFull as exc:
                self.store.discard_part(job.key)
                raise DiskFull(
                    f"disk full: the result of job {job_id} could not be saved ({exc}); the "
                    "partial download was removed and nothing was cached. Free some space, "
                    f"then run %goenhance resume {job_id}"
                ) from None
            except (TooLarge, CacheError) as exc:
                self.store.discard_part(job.key)
                refused += 1
                if isinstance(exc, TooLarge):
                    reason = f"{exc} (setting max_result_mb={max_mb:g})"
                else:
                    reason = str(exc)
                if refused > 1:
                    error = TooLarge if isinstance(exc, TooLarge) else CacheError
                    raise error(
                        f"the result of job {job_id} was refused, {reason}; nothing was cached. "
                        f"The job stays resumable: %goenhance resume {job_id}"
                    ) from None
                log.warning(
                    "goenhance_nb: the result of job %s was refused (%s); downloading it again",
                    job_id,
                    reason,
                )
                with contextlib.suppress(GoEnhanceError):
                    url = (await self.client.job_detail(job_id)).result_url or url
            except TransportError:
                transport_errors += 1
                if transport_errors > 4 or self.clock() >= deadline:
                    raise
                await self._sleep(min(self.poll_interval, 2.0))
        now = time.time()
        timings = {"downloaded": now}
        if entry.submitted_at:
            timings["submitted"] = float(entry.submitted_at)
        timings["finished"] = now
        record = ResultRecord(
            key=job.key,
            path=str(stored.path),
            sha=stored.sha,
            size=stored.size,
            job_id=job_id,
            model=req.spec.model,
            style_label=req.style_label,
            model_version=req.model_version,
            params=req.spec.canonical(),
            input_hash=req.input.content_hash,
            cost=entry.cost if entry.cost is not None else job.cost,
            backend=req.backend,
            created=now,
            timings=timings,
            source_name=req.source_name or req.input.name,
        )
        self.cache.put(record)
        self.ledger.update(job.key, state="done", finished_at=now, raw_status=detail.raw_status)
        job.state = JobState.DONE
        job.progress = (stored.size, stored.size)
        return record
