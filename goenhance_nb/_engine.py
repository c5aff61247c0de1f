"""The job engine: one background thread with its own asyncio loop (DECISIONS 3).

Every job is a task on that loop. The caller holds a :class:`~goenhance_nb._job.Job` handle
(its own module: a read-only view with ``result()``, ``subscribe()``, ``on_finish()``); the
engine keeps what it needs to run the job in a private per-run object (:class:`_Run`: the
task, the local queue slot, the budget reservation, the deadline) and publishes state and
events on the handle, on the engine thread.

The life of a job (docs/ARCHITECTURE.md section 3, STYLE 9), one straight pipeline in
:meth:`JobEngine._drive`::

    cache hit (file present, right size)  -> "cached", "done"    (no HTTP at all)
    take the per-key file lock (another process on the same key -> wait, then re-check)
    ledger entry with an img_uuid         -> attach:  "submitted" (re-attached)
    ledger entry stuck in "submitting"    -> LedgerError (resume --resubmit), unless resubmit
    otherwise                             -> submit:  reserve budget, take a local queue slot
                                             (account queueLimit) -> "queued_locally",
                                             ledger "submitting" -> POST generate (once)
                                             -> ledger img_uuid -> "submitted"
    -> poll (slot released after) -> download -> verify (probe) -> store, cache, ledger "done"

A repair (the cached file is gone, its job known) whose job is definitely gone (the result URL
stays expired, or the API no longer knows the job) runs the submit pipeline once more.

The POST and the ledger write of its answer are shielded from "stop watching". An error the
client marks ``job_may_exist`` (the server may have made and charged a job) leaves the entry
"submitting" with the reason (an orphan: only ``resume --resubmit`` pays again); a provable
refusal marks it "failed" (DECISIONS 25).

Retries: only the transport re-sends a request (``max_retries``). Polling runs every
``poll_interval`` (a longer ``Retry-After`` wins) until the job's deadline (counted from
submission or re-attachment, not from local waiting; a joining request may extend it,
DECISIONS 27); ``max_poll_errors`` failed polls in a row end the watch (the job stays
resumable). At the deadline the job stays in the ledger as resumable and the handle raises
:class:`JobTimedOut`. Downloads stream into a per-key temp file (a dropped body is resumed with
Range by the client), are size-checked, probed, hashed and renamed into the store; an expired
result URL triggers a fresh ``jobs/detail`` for a new URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
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
from goenhance_nb._job import Job, JobRequest
from goenhance_nb._ledger import Ledger, LedgerEntry, orphan_error
from goenhance_nb._lifecycle import EventKind, JobState, LedgerState, known_raw_status
from goenhance_nb._records import JobDetail, JobSpec
from goenhance_nb._shared import Claim, ClaimInfo, SharedResult, SharedStore, SharedStoreDown
from goenhance_nb._store import ResultStore, StoredFile, probe_result
from goenhance_nb._usage import Estimate, Usage

if TYPE_CHECKING:
    from goenhance_nb._client import AsyncClient

__all__ = ["JobEngine"]

log = logging.getLogger("goenhance_nb.engine")
T = TypeVar("T")
Ending = tuple[EventKind, dict[str, Any]]


class _JobLost(JobFailed):
    """The API kept answering "job not found" for a job we submitted (a definite "gone")."""


def _bounded(raw: str | None, limit: int = 80) -> str | None:
    """An API status as shown and stored: verbatim, but at most ``limit`` characters on one line."""
    if raw is None:
        return None
    text = " ".join(str(raw).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Reservation:
    """The budget reservation of one run: open from the session's estimate (or :meth:`ensure`)
    until it is spent (:meth:`spend`), possibly spent (:meth:`possible`) or released. As a
    context manager it releases whatever is still open when the run ends."""

    def __init__(self, usage: Usage, estimate: Estimate | None) -> None:
        self._usage = usage
        self.estimate = estimate
        self.open = estimate is not None

    def __enter__(self) -> _Reservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def ensure(self, spec: JobSpec) -> Estimate:
        """The open estimate; when none is open (a charge the session did not foresee, e.g.
        regenerating a result whose job is gone) reserve a new one first.

        :raises BudgetExceeded: the new estimate does not fit the budget (nothing was sent).
        """
        if not self.open or self.estimate is None:
            est = self._usage.estimate(spec.model, spec.resolution, spec.duration)
            self._usage.reserve(est)
            self.estimate, self.open = est, True
        return self.estimate

    def _close(self) -> Estimate | None:
        est, was_open = self.estimate, self.open
        self.open = False
        return est if was_open else None

    def release(self) -> None:
        """Drop the reservation: nothing new is charged."""
        est = self._close()
        if est is not None:
            self._usage.release(est)

    def spend(self, cost: int | None, spec: JobSpec) -> None:
        """The API accepted the job: turn the reservation into spend (``cost`` as reported)."""
        est = self._close()
        if est is not None:
            self._usage.record(
                est, cost, model=spec.model, resolution=spec.resolution, duration=spec.duration
            )

    def possible(self) -> None:
        """The POST's outcome is unknown: count the estimate as a possible charge."""
        est = self._close()
        if est is not None:
            self._usage.record_possible(est)


def _entry_for(job: Job, state: LedgerState, **fields: Any) -> LedgerEntry:
    """A ledger entry for ``job``'s request in ``state`` (plus ``fields``)."""
    req = job.request
    return LedgerEntry(
        key=job.key,
        state=state,
        spec=req.spec.canonical(),
        backend=req.backend,
        input_hash=req.input.content_hash,
        model_version=req.model_version,
        style_label=req.style_label,
        **fields,
    )


@dataclass(eq=False)
class _Run:
    """The engine's private state for one job handle (the handle never sees it).

    ``budget``: seconds the job gets once it exists on the server (the longest of its
    joiners'); ``deadline``: engine clock time it must finish by, set when it starts existing
    on the server; ``task``: the asyncio task driving it; ``reservation``: its budget.
    """

    job: Job
    reservation: _Reservation
    budget: float
    deadline: float | None = None
    task: asyncio.Task[None] | None = None
    charged: bool = False  # this run's generate was accepted (the session spent its cost)
    claim: Claim | None = None  # our claim on the key in the shared store (issue 16)


class _PollFailures:
    """Failed polls in a row: all of them, and the "job not found" ones."""

    def __init__(self) -> None:
        self.errors = 0
        self.not_found = 0


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
                    EventKind.QUEUED_LOCALLY,
                    state=JobState.LOCAL_QUEUE,
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
    :param max_poll_errors: failed polls in a row (each already re-sent by the transport)
        tolerated before the watch ends with the last error (the job stays resumable).
    :param shared: the team's shared store (issue 16): a second cache tier looked up on a
        local miss, and a claim before any paid POST (see :meth:`_obtain_shared`).
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
        max_poll_errors: int = 3,
        lock_poll: float = 0.1,
        shared: SharedStore | None = None,
    ) -> None:
        self.client = client
        self.shared = shared
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
        self._queue_limit_known = queue_limit is not None
        self._queue_limit_task: asyncio.Future[None] | None = None
        self._queue.limit = queue_limit
        self._active: dict[str, _Run] = {}  # by key: the run a new request joins
        self._active_lock = threading.Lock()
        self._runs: set[_Run] = set()  # every run with a task (engine thread only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False

    # -- loop management -------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The engine's event loop (the thread starts on first use and registers the loop
        with ``_sync`` once, so ``run_sync`` from a foreign loop hands work to it)."""
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

        Safe from any thread; from the engine thread itself (a re-entrant call from a
        callback) the engine's own loop is driven in place (``_sync.run_reentrant``).
        """
        if self.on_engine_thread():
            return _sync.run_reentrant(self.loop, coro)
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
            tasks: list[asyncio.Future[None]] = [r.task for r in self._runs if r.task is not None]
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
            run = self._active.get(key)
        return run.job if run is not None and not run.job.done() else None

    def join(self, key: str, timeout: float | None = None) -> Job | None:
        """Join the unfinished job for ``key`` in this process, if any (DECISIONS 27).

        The job's deadline becomes the later of its own and now + ``timeout`` (the engine's
        ``job_timeout`` when None); ``timeout`` itself bounds only the caller's own wait
        (``job.result(timeout)``).
        """
        with self._active_lock:
            run = self._active.get(key)
            if run is None or run.job.done():
                return None
            self._extend(run, timeout)
            return run.job

    def _extend(self, run: _Run, timeout: float | None) -> None:
        """Give ``run`` at least ``timeout`` more seconds (caller holds ``_active_lock``)."""
        budget = timeout if timeout is not None else self.job_timeout
        if run.deadline is None:
            run.budget = max(run.budget, budget)
        else:
            run.deadline = max(run.deadline, self.clock() + budget)

    def _start_deadline(self, run: _Run) -> None:
        """The job exists on the server (submitted or re-attached): its deadline starts now."""
        with self._active_lock:
            run.deadline = max(run.deadline or 0.0, self.clock() + run.budget)

    def _deadline_passed(self, run: _Run) -> bool:
        """True once ``run``'s deadline passed; the run then leaves the active set at once, so
        a later request for its key starts a new handle (which re-attaches) instead of joining
        one that is timing out."""
        with self._active_lock:
            if run.deadline is None or self.clock() < run.deadline:
                return False
            self._forget(run)
            return True

    def _forget(self, run: _Run) -> None:
        """``run`` no longer takes joiners (caller holds ``_active_lock``)."""
        if self._active.get(run.job.key) is run:
            del self._active[run.job.key]

    def running(self) -> list[Job]:
        """The unfinished jobs this engine is driving (submitting, queued, polling, ...)."""
        with self._active_lock:
            runs = list(self._active.values())
        return [r.job for r in runs if not r.job.done()]

    def submit(self, request: JobRequest, *, hit: ResultRecord | None = None) -> Job:
        """Start (or join) the job for ``request.key`` and return its handle at once.

        A job for the same key already running in this process is returned instead of a new
        one; its deadline is extended as :meth:`join` says. Otherwise a usable cached result
        (not ``force``) is served right here: the returned handle is already done and
        ``cached`` (no task on the engine loop). ``hit``: that record when the caller has just
        found it usable (the cache is not asked again).
        """
        if request.force:
            hit = None
        elif hit is None:
            hit = self.cache.usable(request.key)
        with self._active_lock:
            existing = self._active.get(request.key)
            if existing is not None and not existing.job.done():
                if request.estimate is not None:
                    self.usage.release(request.estimate)
                self._extend(existing, request.timeout)
                return existing.job
            job = Job(self, request)
            budget = request.timeout if request.timeout is not None else self.job_timeout
            run = _Run(job, _Reservation(self.usage, request.estimate), budget)
            if hit is None:
                self._active[request.key] = run
        job._emit(EventKind.VALIDATED, message=f"validated {request.input.name}")
        if hit is not None:
            # A cache hit settles here, on the caller's thread: the handle is done on return
            # (no engine round trip, no live widget needed), with the same events as _run.
            with run.reservation:
                self._serve_hit(job, hit)
            job._resolve(hit)
            job._emit(EventKind.DONE, result=hit, message=str(hit.path))
            return job

        def _start() -> None:
            run.task = self.loop.create_task(self._run(run))
            self._runs.add(run)

        self.call_soon(_start)
        return job

    def stop_watching(self, job: Job) -> None:
        """Cancel the task driving ``job`` (engine thread; :meth:`Job.cancel_watch`)."""
        for run in self._runs:
            if run.job is job and run.task is not None and not run.task.done():
                run.task.cancel()

    # -- the job task ----------------------------------------------------------------------
    async def _run(self, run: _Run) -> None:
        # The handle settles (outcome set, no longer active) BEFORE the event that ends it is
        # emitted, so a listener that reacts to "failed" / "done" (e.g. a Retry button that
        # resubmits the same key) sees a finished job and never gets this one back.
        ending: Ending | None = None
        try:
            with run.reservation:
                ending = await self._settle(run)
        finally:
            self._runs.discard(run)
            with self._active_lock:
                self._forget(run)
            if ending is not None:
                run.job._emit(ending[0], **ending[1])

    async def _settle(self, run: _Run) -> Ending:
        """Drive the job to its end and settle the handle; return the event that ends it."""
        job = run.job
        try:
            record = await self._drive(run)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                entry = self.ledger.get(job.key)
                if entry is not None and entry.resumable:
                    self.ledger.update(job.key, state=LedgerState.WATCH_CANCELLED)
            job._abandon()
            resume = f"%goenhance resume {job.id or job.key[:12]}"
            message = f"stopped watching; the job stays resumable: {resume}"
            return EventKind.WATCH_CANCELLED, {"message": message}
        except GoEnhanceError as exc:
            return self._failed(job, exc)
        except Exception as exc:  # a bug: surface it, never leave the handle hanging
            log.exception("goenhance_nb: job %s crashed", job.key[:12])
            err = GoEnhanceError(
                f"internal error in job {job.key[:12]}: {type(exc).__name__}: {exc}"
            )
            return self._failed(job, err)
        job.state = JobState.DONE
        job._resolve(record)
        return EventKind.DONE, {"result": record, "message": str(record.path)}

    @staticmethod
    def _failed(job: Job, exc: GoEnhanceError) -> Ending:
        if isinstance(exc, JobTimedOut):
            kind = EventKind.TIMED_OUT
        else:
            kind = EventKind.FAILED
            job.state = JobState.FAILED
        job._reject(exc)
        return kind, {"error": exc, "message": str(exc)}

    async def _drive(self, run: _Run) -> ResultRecord:
        """cached -> (per-key lock) cached -> attach or submit -> poll -> download -> verify.

        A repair (the cached file is gone, its job known) whose job is definitely gone (the
        result URL stayed expired after fresh-URL retries, or the API no longer knows the job)
        submits once more; a transient 5xx / transport error is raised instead (the job stays
        known and resumable).
        """
        req = run.job.request
        rec, stale = self._cache_hit(run, warn=True)
        if rec is not None:
            return rec
        async with self._key_lock(run.job):
            rec, stale_now = self._cache_hit(run, warn=stale is None)
            if rec is None and not req.force:
                rec = await self._shared_hit(run)
            if rec is not None:
                return rec
            entry = self._known_entry(run.job, stale or stale_now)
            repair = (
                not req.force
                and entry is not None
                and entry.job_id is not None
                and entry.state == LedgerState.DONE
            )
            try:
                return await self._obtain(run, entry, submit=self._must_submit(run.job, entry))
            except (ResultExpired, _JobLost) as exc:
                if not repair:
                    raise
                self._warn_regenerating(run.job, exc)
                return await self._obtain(run, entry, submit=True)

    async def _obtain(self, run: _Run, entry: LedgerEntry | None, *, submit: bool) -> ResultRecord:
        """Attach to ``entry``'s job or submit a new one, poll it, download and verify. With a
        shared store, a submission goes through its claim first (:meth:`_obtain_shared`)."""
        if submit and self.shared is not None and self.shared.available():
            return await self._obtain_shared(run, entry, self.shared)
        return await self._obtain_here(run, entry, submit=submit)

    async def _obtain_here(
        self, run: _Run, entry: LedgerEntry | None, *, submit: bool
    ) -> ResultRecord:
        """:meth:`_obtain` without the shared store."""
        if submit:
            entry, detail = await self._submit_and_poll(run, entry)
        else:
            assert entry is not None and entry.job_id is not None
            self._attach(run, entry)
            self._start_deadline(run)
            detail = await self._poll(run, entry.job_id)
        return await self._download(run, entry, detail)

    def _known_entry(self, job: Job, stale: ResultRecord | None) -> LedgerEntry | None:
        """The ledger entry for ``job``; when there is none (or it has no job id) but the cache
        index knows the job that made a (now missing) file, an entry re-made from it."""
        entry = self.ledger.get(job.key)
        if stale is None or not stale.job_id or (entry is not None and entry.job_id is not None):
            return entry
        return self.ledger.put(
            _entry_for(
                job,
                LedgerState.DONE,
                source_name=stale.source_name,
                job_id=stale.job_id,
                cost=stale.cost,
                created=stale.created,
            )
        )

    @staticmethod
    def _must_submit(job: Job, entry: LedgerEntry | None) -> bool:
        """True when a new generate call is needed; False to attach to ``entry``'s job.

        :raises LedgerError: the entry is an orphan (the POST's outcome is unknown) and the
            request is not a resubmit (DECISIONS 25).
        """
        req = job.request
        if entry is None or entry.state == LedgerState.FAILED:
            return True
        if entry.state == LedgerState.DONE and req.force:
            return True
        if not entry.is_orphan and entry.job_id is not None:
            return False
        if not req.resubmit:
            raise orphan_error(job.key, entry.error)
        warnings.warn(
            f"resubmitting orphaned job {job.key[:12]}; this may charge twice",
            UserWarning,
            stacklevel=1,
        )
        return True

    @staticmethod
    def _warn_regenerating(job: Job, exc: GoEnhanceError) -> None:
        why = (
            "its result URL expired"
            if isinstance(exc, ResultExpired)
            else "the API no longer knows its job"
        )
        warnings.warn(
            f"cached result for {job.key[:12]} is gone and {why} ({exc}); generating it again",
            UserWarning,
            stacklevel=1,
        )

    @staticmethod
    def _serve_hit(job: Job, rec: ResultRecord) -> None:
        """Mark ``job`` as served from the cache by ``rec`` (state done, the ``cached`` event)."""
        job.cached = True
        job.id = rec.job_id
        job.cost = rec.cost
        job.state = JobState.DONE
        job._emit(EventKind.CACHED, result=rec, message="served from the cache")

    def _cache_hit(
        self, run: _Run, *, warn: bool
    ) -> tuple[ResultRecord | None, ResultRecord | None]:
        """Return ``(record, None)`` on a usable hit, ``(None, stale_record)`` when the record's
        file is missing/damaged (deleted if damaged), ``(None, None)`` when absent or when the
        request forces a new run."""
        job = run.job
        if job.request.force:
            return None, None
        rec, status = self.cache.lookup(job.key)
        if rec is not None and status == "ok":
            self._serve_hit(job, rec)
            run.reservation.release()
            return rec, None
        if rec is None:
            return None, None
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

    @contextlib.asynccontextmanager
    async def _key_lock(self, job: Job) -> AsyncIterator[None]:
        """Hold the per-key inter-process lock (waiting for another process on the same key)."""
        lock = self.ledger.lock(job.key)
        await self._acquire(lock, job)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                lock.release()

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
                        EventKind.STATUS,
                        message="another process is running the same "
                        "transformation; waiting for it",
                    )
                await asyncio.sleep(self.lock_poll)

    def _attach(self, run: _Run, entry: LedgerEntry) -> None:
        job = run.job
        if entry.submitted_at:
            # elapsed counts from the submission recorded in the ledger (maybe by an earlier
            # kernel), not from this handle; the deadline keeps its own base (re-attachment)
            job.started = self.clock() - max(0.0, time.time() - float(entry.submitted_at))
        job.id = entry.job_id
        job.raw_status = entry.raw_status
        job.cost = entry.cost
        run.reservation.release()
        job._emit(
            EventKind.SUBMITTED,
            job_id=entry.job_id,
            cost=entry.cost,
            message=f"re-attached to job {entry.job_id}",
        )

    # -- the shared store (issue 16) -------------------------------------------------------
    async def _shared_hit(self, run: _Run) -> ResultRecord | None:
        """A result from the shared store, fetched, verified and put in the local cache
        (served as cached: no API call); None on a miss, a bad entry (reported by the store)
        or an outage (said once by the store)."""
        shared = self.shared
        if shared is None or not shared.available():
            return None
        job = run.job
        max_duration = float(job.request.spec.duration)

        def probe(path: Path) -> float:
            return probe_result(path, max_duration=max_duration)

        try:
            found = await asyncio.to_thread(shared.lookup, job.key)
            if found is None:
                return None
            stored = await asyncio.to_thread(shared.fetch, found, self.store, probe)
        except SharedStoreDown:
            return None
        if stored is None:
            return None
        rec = self._shared_record(job, found, stored)
        self.cache.put(rec)
        job.cached = True
        job.id, job.cost, job.state = rec.job_id, rec.cost, JobState.DONE
        run.reservation.release()
        job._emit(EventKind.CACHED, result=rec, message="served from the shared store")
        return rec

    @staticmethod
    def _shared_record(job: Job, found: SharedResult, stored: StoredFile) -> ResultRecord:
        """The local cache record of a result fetched from the shared store: its provenance
        as published, this store's file, ``origin`` "shared"."""
        prov = dict(found.record)
        prov.update(
            key=job.key,
            path=str(stored.path),
            sha=stored.sha,
            size=stored.size,
            backend=job.request.backend,
            origin="shared",
        )
        prov.setdefault("model", job.request.spec.model)
        timings = prov.get("timings")
        prov["timings"] = {**(timings if isinstance(timings, dict) else {}), "fetched": time.time()}
        return ResultRecord.from_json(prov)

    async def _obtain_shared(
        self, run: _Run, entry: LedgerEntry | None, shared: SharedStore
    ) -> ResultRecord:
        """Submit only under our claim on the key; else take the job or result another
        machine made. An outage of the store: work here as without it (said once)."""
        try:
            got = await self._claim_or_join(run, shared)
        except SharedStoreDown:
            return await self._obtain_here(run, entry, submit=True)
        if isinstance(got, ResultRecord):
            return got
        if isinstance(got, LedgerEntry):
            return await self._obtain_here(run, got, submit=False)
        run.claim = got
        beat = asyncio.ensure_future(self._heartbeat(shared, got))
        try:
            rec = await self._obtain_here(run, entry, submit=True)
        except BaseException:
            if self._may_release(run.job.key):
                await asyncio.shield(self._shared_call(shared.release, got))
            raise
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
            run.claim = None
        await self._shared_call(shared.publish, rec)  # blob, then the index record
        await self._shared_call(shared.release, got)
        return rec

    async def _claim_or_join(
        self, run: _Run, shared: SharedStore
    ) -> Claim | LedgerEntry | ResultRecord:
        """Our claim on the key (we submit), a ledger entry holding another machine's job id
        (re-attach), or the result another machine published meanwhile. Waits (polling the
        claim and the index every ``poll_interval``) while a live owner has no job id yet.

        :raises LedgerError: the claim's owner died before the API answered it (DECISIONS 25:
            an orphan; only ``resume KEY --resubmit`` pays again).
        :raises SharedStoreDown: the store failed.
        """
        job = run.job
        waiting = False
        while True:
            got = await asyncio.to_thread(shared.claim, job.key)
            if isinstance(got, Claim):
                hit = await self._shared_hit(run)  # published between the look-up and now?
                if hit is None:
                    return got
                await self._shared_call(shared.release, got)
                return hit
            if got.job_id is not None:
                return self._adopt_claim(job, got)
            if got.stale(shared.clock(), shared.lease):
                if job.request.resubmit:
                    taken = await asyncio.to_thread(shared.take_over, got)
                    if isinstance(taken, Claim):
                        return taken
                    continue
                raise self._claim_orphan(job, got)
            if not waiting:
                waiting = True
                job._emit(
                    EventKind.STATUS,
                    message=f"{got.owner} is submitting the same transformation (shared "
                    "store); waiting for its job",
                )
            await self._sleep(self.poll_interval)
            hit = await self._shared_hit(run)
            if hit is not None:
                return hit

    def _adopt_claim(self, job: Job, info: ClaimInfo) -> LedgerEntry:
        """A ledger entry for the job another machine submitted (same account): re-attached
        by its id, never submitted again."""
        req = job.request
        log.info(
            "goenhance_nb: request %s is job %s of %s (shared store); re-attaching",
            job.key[:12],
            info.job_id,
            info.owner,
        )
        return self.ledger.put(
            _entry_for(
                job,
                LedgerState.SUBMITTED,
                source_name=req.source_name or req.input.name,
                job_id=info.job_id,
                cost=info.cost,
                created=time.time(),
                submitted_at=info.submitted_at,
                pid=os.getpid(),
                extra={"input": req.input.to_json(), "shared_owner": info.owner},
            )
        )

    def _claim_orphan(self, job: Job, info: ClaimInfo) -> LedgerError:
        """A stale claim without a job id: its owner may have made (and been charged for) a
        job nobody knows. Recorded here as an orphan ``submitting`` entry, so ``resume KEY
        --resubmit`` can pay again on purpose (DECISIONS 25)."""
        req = job.request
        reason = f"{info.owner} claimed it on the shared store and stopped before the API answered"
        old = self.ledger.get(job.key)
        with contextlib.suppress(LedgerError):
            self.ledger.put(
                _entry_for(
                    job,
                    LedgerState.SUBMITTING,
                    source_name=req.source_name or req.input.name,
                    reference_url=old.reference_url if old is not None else None,
                    error=reason,
                    created=time.time(),
                    pid=os.getpid(),
                    extra={"input": req.input.to_json(), "shared_owner": info.owner},
                )
            )
        return orphan_error(job.key, reason)

    def _may_release(self, key: str) -> bool:
        """Whether our claim may go after a run that ended without a result: only when no
        job exists or can exist (no POST sent, or provably refused, or the job failed). A
        job id (others re-attach to it) or an unknown POST outcome (an orphan) keeps it."""
        with contextlib.suppress(LedgerError):
            entry = self.ledger.get(key)
            if entry is None or entry.state == LedgerState.FAILED:
                return True
            return entry.job_id is None and entry.state != LedgerState.SUBMITTING
        return False

    async def _claim_job_id(self, claim: Claim, job_id: str, cost: int | None) -> None:
        """Write the API's job id into our claim at once (shielded from a cancel)."""
        shared = self.shared
        if shared is None:
            return
        write = asyncio.to_thread(shared.record_job_id, claim, job_id, cost, time.time())
        with contextlib.suppress(SharedStoreDown, asyncio.CancelledError):
            await asyncio.shield(asyncio.ensure_future(write))

    async def _heartbeat(self, shared: SharedStore, claim: Claim) -> None:
        """Renew ``claim`` every ``heartbeat_every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(shared.heartbeat_every)
            await self._shared_call(shared.heartbeat, claim)

    @staticmethod
    async def _shared_call(fn: Callable[..., Any], *args: Any) -> None:
        """One store call off the loop; an outage (said once by the store) is not the job's
        failure, nor is a local file error while publishing."""
        try:
            await asyncio.to_thread(fn, *args)
        except SharedStoreDown:
            pass
        except OSError as exc:
            log.warning("goenhance_nb: shared store call %s failed: %s", fn.__name__, exc)

    # -- the local queue -------------------------------------------------------------------
    @property
    def queue_limit(self) -> int | None:
        """Jobs the account may run at once (``queueLimit``) when known, else ``None``."""
        return self._queue.limit

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

    @contextlib.asynccontextmanager
    async def _queue_slot(self, job: Job) -> AsyncIterator[None]:
        """Hold one local queue slot (account queueLimit), waiting in FIFO order for it
        (``queued_locally`` events with the position); released on exit."""
        await self._ensure_queue_limit()
        if not self._queue.try_take():
            await self._wait_for_slot(job)
        try:
            yield
        finally:
            self._queue.release()

    async def _wait_for_slot(self, job: Job) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.waiters.append((job, fut))
        pos = len(self._queue.waiters)
        job.queue_position = pos
        job.state = JobState.LOCAL_QUEUE
        job._emit(
            EventKind.QUEUED_LOCALLY,
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

    # -- submit ----------------------------------------------------------------------------
    async def _submit_and_poll(
        self, run: _Run, old: LedgerEntry | None
    ) -> tuple[LedgerEntry, JobDetail]:
        """Reserve the budget, hold a queue slot while submitting and polling; return the
        ledger entry with its job id and the finished job's detail."""
        job = run.job
        req = job.request
        fallback_url = old.reference_url if old is not None else None
        if req.reference_url is None and not fallback_url:
            raise LedgerError(f"job {job.key[:12]} has no input URL to resubmit with")
        est = run.reservation.ensure(req.spec)  # still before any API call
        async with self._queue_slot(job):
            entry = await self._submit(run, est, old, fallback_url)
            assert entry.job_id is not None
            self._start_deadline(run)
            detail = await self._poll(run, entry.job_id)
        return entry, detail

    async def _submit(
        self, run: _Run, est: Estimate, old: LedgerEntry | None, fallback_url: str | None
    ) -> LedgerEntry:
        job = run.job
        req = job.request
        await self._check_balance(job, est)
        ref_url = await req.reference_url() if req.reference_url is not None else fallback_url
        assert ref_url is not None
        now = time.time()
        entry = _entry_for(
            job,
            LedgerState.SUBMITTING,
            source_name=req.source_name or req.input.name,
            reference_url=ref_url,
            created=old.created if old is not None else now,
            pid=os.getpid(),
            extra={"input": req.input.to_json()},
        )
        entry = self.ledger.put(entry)  # durable before the POST (STYLE 9)
        job.state = JobState.QUEUED
        job._emit(EventKind.SUBMITTING, message="submitting to the API")
        # The POST and the ledger write of its answer run shielded: "stop watching" (or
        # closing the engine) while they are in flight must not lose a paid job id. The
        # cancel is honoured once they are done (the job is then resumable by its id).
        post = asyncio.ensure_future(self._post(run, ref_url))
        try:
            entry = await asyncio.shield(post)
        except asyncio.CancelledError:
            while not post.done():  # asyncio.wait never cancels what it waits for
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({post})
            if not post.cancelled():
                post.exception()  # retrieved: its outcome is in the ledger already
            raise
        finally:
            if run.claim is not None and job.id is not None:
                await self._claim_job_id(run.claim, job.id, job.cost)
        job._emit(
            EventKind.SUBMITTED,
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

    async def _post(self, run: _Run, ref_url: str) -> LedgerEntry:
        """POST generate once and record its outcome in the ledger and the session's spend.

        The job id goes on the handle and into the log before any write that can fail.

        :raises LedgerError: the outcome is unknown (the server may have made and charged a
            job: the entry stays ``submitting`` with the reason; :func:`orphan_error`), or the
            ledger could not record a job the API accepted (the message names its id).
        :raises GoEnhanceError: the API provably made no job (entry ``failed``).
        """
        job = run.job
        req = job.request
        try:
            gr = await self.client.generate(req.spec, ref_url)
        except GoEnhanceError as exc:
            if not exc.job_may_exist:
                # Provably no job (connect error, 401/403, 429/503, an envelope error): a
                # re-run may submit normally.
                self.ledger.update(job.key, state=LedgerState.FAILED, error=str(exc))
                raise
            # Maybe charged (DECISIONS 25): the entry stays "submitting" with the reason; a
            # re-run, Retry or --force refuses; only resume --resubmit pays again.
            log.warning(
                "goenhance_nb: generate for %s may have created a job (%s); left 'submitting'",
                job.key[:12],
                exc,
            )
            run.reservation.possible()
            with contextlib.suppress(LedgerError):
                self.ledger.update(job.key, error=str(exc))
            raise orphan_error(job.key, str(exc)) from None
        job.id = gr.img_uuid
        job.cost = gr.cost
        log.info("goenhance_nb: request %s submitted as job %s", job.key[:12], gr.img_uuid)
        run.reservation.spend(gr.cost, req.spec)
        run.charged = True
        try:
            return self.ledger.update(
                job.key,
                job_id=gr.img_uuid,
                state=LedgerState.SUBMITTED,
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

    # -- poll ------------------------------------------------------------------------------
    async def _poll(self, run: _Run, job_id: str) -> JobDetail:
        """Poll ``jobs/detail`` every ``poll_interval`` until a terminal status or the run's
        deadline (which joiners may extend while this runs). A failed poll (the transport
        already re-sent it) waits the interval too (a longer ``Retry-After`` wins).

        :raises JobTimedOut: the deadline passed (ledger ``timed_out``, resumable).
        :raises JobFailed: the job failed; :class:`_JobLost` when the API kept saying it does
            not know the job.
        :raises APIError, TransportError: more than ``max_poll_errors`` polls in a row failed.
        """
        failures = _PollFailures()
        warned: set[str] = set()
        while True:
            self._check_deadline(run, job_id)
            try:
                detail = await self.client.job_detail(job_id)
            except (TransportError, APIError) as exc:
                await self._sleep(self._poll_failed(run, job_id, exc, failures))
                continue
            failures = _PollFailures()
            if self._observe(run, job_id, detail, warned):
                return detail
            await self._sleep(self.poll_interval)

    def _check_deadline(self, run: _Run, job_id: str) -> None:
        if self._deadline_passed(run):
            self.ledger.update(run.job.key, state=LedgerState.TIMED_OUT)
            raise JobTimedOut(
                job_id,
                f"job {job_id} did not finish before its deadline; it keeps running on the "
                f"server. Resume with %goenhance resume {job_id} or resume('{job_id}')",
            )

    def _poll_failed(
        self, run: _Run, job_id: str, exc: APIError | TransportError, failures: _PollFailures
    ) -> float:
        """Count a failed poll; raise when polling gives up, else return the delay before the
        next poll (the interval or a longer ``Retry-After``, never past the deadline)."""
        if isinstance(exc, (InsufficientCredits, InvalidParameters)):
            raise exc
        if isinstance(exc, APIError) and "not found" in (exc.msg or "").lower():
            failures.not_found += 1
            if failures.not_found >= 3:
                self.ledger.update(run.job.key, state=LedgerState.FAILED, error=str(exc))
                raise _JobLost(job_id, "the API no longer knows this job") from None
        failures.errors += 1
        if failures.errors > self.max_poll_errors:
            raise exc
        delay = self.poll_interval
        if isinstance(exc, RateLimited) and exc.retry_after:
            delay = max(delay, float(exc.retry_after))
        log.warning(
            "goenhance_nb: polling job %s failed (%s); next poll in %.1fs", job_id, exc, delay
        )
        left = (run.deadline or self.clock()) - self.clock()
        return min(delay, max(0.0, left))

    def _observe(self, run: _Run, job_id: str, detail: JobDetail, warned: set[str]) -> bool:
        """Publish a poll's answer (status event, ledger); True when the job is done.

        :raises JobFailed: the job failed (ledger ``failed``).
        """
        job = run.job
        raw = _bounded(detail.raw_status)
        low = (raw or "").strip().lower()
        if not known_raw_status(low) and low not in warned:
            warned.add(low)
            log.warning(
                "goenhance_nb: job %s reports an unknown status %r; treating it as running",
                job_id,
                raw,
            )
        # DONE is only shown once the file is stored; until then the job is "running".
        done = detail.state is JobState.DONE
        shown = JobState.RUNNING if done else detail.state
        if raw != job.raw_status or shown != job.state:
            job.raw_status = raw
            job.state = shown
            lstate = LedgerState.DOWNLOADING if done else LedgerState.for_job(detail.state)
            self.ledger.update(job.key, raw_status=raw, state=lstate)
            job._emit(EventKind.STATUS, message=f"status {raw}")
        if detail.state is JobState.FAILED:
            msg = ""
            if isinstance(detail.raw, dict):
                msg = str(detail.raw.get("msg") or detail.raw.get("error") or "")
            self.ledger.update(
                job.key, state=LedgerState.FAILED, error=msg or raw, finished_at=time.time()
            )
            if run.charged:  # the API does not say whether it refunds: "may be refunded"
                self.usage.record_failed(job.cost)
            raise JobFailed(job_id, msg or f"status {raw}")
        return done

    # -- download and verify ---------------------------------------------------------------
    async def _download(self, run: _Run, entry: LedgerEntry, detail: JobDetail) -> ResultRecord:
        """Download the finished job's result, verify it and record it (store, cache, ledger).

        The ledger entry keeps its job id whatever fails here, so the job stays resumable.
        """
        job = run.job
        assert entry.job_id is not None
        job.state = JobState.RUNNING
        self.ledger.update(job.key, state=LedgerState.DOWNLOADING)
        job._emit(EventKind.DOWNLOADING, message="downloading the result")
        stored = await self._fetch_verified(job, entry.job_id, detail.result_url)
        return self._record_result(job, entry, detail, stored)

    async def _fetch_verified(self, job: Job, job_id: str, url: str | None) -> StoredFile:
        """Fetch ``url`` into the job's part file and commit it to the store.

        DECISIONS 28: bytes enter the cache only after a size cap (checked as they arrive) and
        a probe (a playable video of the requested length). A refused file is deleted and
        fetched afresh (a fresh URL) once, then reported; a full disk is reported at once; an
        expired URL is replaced by a fresh one (twice at most). Request retries are the
        transport's and the client's (resuming a dropped body), never repeated here.

        :raises ResultExpired, DiskFull, TooLarge, CacheError, TransportError, APIError.
        """
        part = self.store.part_path(job.key, job_id)
        max_mb = self.client.settings.max_result_mb
        max_duration = float(job.request.spec.duration)

        def probe(path: Path) -> float:
            return probe_result(path, max_duration=max_duration)

        on_progress = self._progress_reporter(job)
        refreshes = refused = 0
        while True:
            if url is None:
                raise ResultExpired(f"job {job_id} finished without a result URL")
            try:
                total = await self.client.download(
                    url,
                    part,
                    resume=True,
                    on_progress=on_progress,
                    max_bytes=int(max_mb * 1_000_000),
                )
                return await asyncio.to_thread(
                    self.store.commit, part, expected_size=total, probe=probe
                )
            except ResultExpired:
                refreshes += 1
                if refreshes > 2:
                    raise
                log.info("goenhance_nb: result URL of %s expired; asking for a fresh one", job_id)
                url = (await self.client.job_detail(job_id)).result_url
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
                self._refused(job_id, exc, max_mb, again=refused <= 1)
                with contextlib.suppress(GoEnhanceError):
                    url = (await self.client.job_detail(job_id)).result_url or url

    @staticmethod
    def _refused(job_id: str, exc: TooLarge | CacheError, max_mb: float, *, again: bool) -> None:
        """A downloaded result was refused: log it when it is fetched ``again``, else raise.

        :raises TooLarge, CacheError: the second refusal (nothing cached; resumable).
        """
        reason = (
            f"{exc} (setting max_result_mb={max_mb:g})" if isinstance(exc, TooLarge) else str(exc)
        )
        if not again:
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

    @staticmethod
    def _progress_reporter(job: Job) -> Callable[[int, int | None], None]:
        """``on_progress`` for a download: updates ``job.progress``, emits at most 4 events/s."""
        last_emit = [0.0]

        def on_progress(done: int, total: int | None) -> None:
            job.progress = (done, total)
            now = time.monotonic()
            if now - last_emit[0] >= 0.25:
                last_emit[0] = now
                job._emit(EventKind.DOWNLOADING, progress=(done, total), message="downloading")

        return on_progress

    def _record_result(
        self, job: Job, entry: LedgerEntry, detail: JobDetail, stored: StoredFile
    ) -> ResultRecord:
        """Put the verified result in the cache and mark the ledger entry done."""
        req = job.request
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
            job_id=entry.job_id,
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
        self.ledger.update(
            job.key, state=LedgerState.DONE, finished_at=now, raw_status=detail.raw_status
        )
        job.state = JobState.DONE
        job.progress = (stored.size, stored.size)
        return record
