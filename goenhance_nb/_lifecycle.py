"""The job lifecycle vocabulary: one place for every state, event kind and raw-status mapping.

Everything that talks about where a job is in its life imports the names from here:

- :class:`JobState` — the normalised state of a job handle (``Job.state``): the API's states
  (queued, running, done, failed) plus the two local ones before anything was sent.
- :class:`EventKind` — what a :class:`~goenhance_nb._job.JobEvent` reports.
- :class:`LedgerState` — the durable state of a ledger entry.
- :func:`map_status` — the one table from the API's raw status to :class:`JobState`.
- :class:`Badge` and :func:`badge_for` — the word a user sees for a job (status widget, panel,
  ``%goenhance jobs``), with its colours.

All enums are ``str`` enums whose values are the strings used before this module existed, so
values stored in the ledger and shown to users do not change (``LedgerState("done")`` reads an
old entry). Pure: no I/O, no clock, no global state.
"""

from __future__ import annotations

import enum

__all__ = [
    "Badge",
    "EventKind",
    "JobState",
    "LedgerState",
    "PlanStatus",
    "badge_for",
    "map_status",
]


class _Word(str, enum.Enum):
    """A ``str`` enum that prints as its value (``f"{JobState.DONE}"`` is ``done``)."""

    def __str__(self) -> str:
        return str(self.value)


class JobState(_Word):
    """Normalised state of a job handle (the raw API status is kept separately).

    ``LOCAL``: made, nothing looked up yet; ``LOCAL_QUEUE``: waiting for a local queue slot
    (nothing sent); ``QUEUED``/``RUNNING``/``DONE``/``FAILED``: as the API reports it.
    """

    LOCAL = "LOCAL"
    LOCAL_QUEUE = "LOCAL_QUEUE"
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True for DONE and FAILED."""
        return self in (JobState.DONE, JobState.FAILED)

    @property
    def local(self) -> bool:
        """True while nothing has been sent to the API for this handle."""
        return self in (JobState.LOCAL, JobState.LOCAL_QUEUE)


class EventKind(_Word):
    """What a job event reports (``JobEvent.kind``)."""

    VALIDATED = "validated"
    CACHED = "cached"
    QUEUED_LOCALLY = "queued_locally"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    STATUS = "status"
    DOWNLOADING = "downloading"
    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    WATCH_CANCELLED = "watch_cancelled"

    @property
    def terminal(self) -> bool:
        """True when the job has ended for this session: done, cached, failed or timed out."""
        return self in _TERMINAL_KINDS

    @property
    def has_result(self) -> bool:
        """True for the kinds that carry a result record (done, cached)."""
        return self in (EventKind.DONE, EventKind.CACHED)

    @property
    def is_error(self) -> bool:
        """True for the kinds that carry an error (failed, timed out)."""
        return self in (EventKind.FAILED, EventKind.TIMED_OUT)

    @property
    def ends_watch(self) -> bool:
        """True when no further event follows in this session (terminal or watch cancelled)."""
        return self.terminal or self is EventKind.WATCH_CANCELLED


_TERMINAL_KINDS = frozenset(
    {EventKind.DONE, EventKind.CACHED, EventKind.FAILED, EventKind.TIMED_OUT}
)


class LedgerState(_Word):
    """Durable state of a ledger entry.

    ``SUBMITTING``: the paid POST may or may not have reached the API (no job id yet).
    ``TIMED_OUT``/``WATCH_CANCELLED``: this session stopped following the job; it may still run.
    """

    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    TIMED_OUT = "timed_out"
    WATCH_CANCELLED = "watch_cancelled"
    DONE = "done"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        """True for DONE and FAILED: nothing more will happen to this entry."""
        return self in (LedgerState.DONE, LedgerState.FAILED)

    @classmethod
    def for_job(cls, state: JobState) -> LedgerState:
        """The ledger state recorded while a submitted job is in ``state``."""
        return _LEDGER_FOR_JOB[state]


_LEDGER_FOR_JOB = {
    JobState.LOCAL: LedgerState.SUBMITTING,
    JobState.LOCAL_QUEUE: LedgerState.SUBMITTING,
    JobState.QUEUED: LedgerState.QUEUED,
    JobState.RUNNING: LedgerState.RUNNING,
    JobState.DONE: LedgerState.DONE,
    JobState.FAILED: LedgerState.FAILED,
}

#: The API's raw statuses (lower case) and what they mean; sources disagree on the finished
#: word, so both ``success`` and ``completed`` are accepted (goenhance-api.md).
RAW_STATUS: dict[str, JobState] = {
    "pending": JobState.QUEUED,
    "queued": JobState.QUEUED,
    "waiting": JobState.QUEUED,
    "processing": JobState.RUNNING,
    "running": JobState.RUNNING,
    "success": JobState.DONE,
    "completed": JobState.DONE,
    "failed": JobState.FAILED,
    "error": JobState.FAILED,
}


def map_status(raw: str | None, has_result: bool) -> JobState:
    """Normalise an API status (case-insensitive) through :data:`RAW_STATUS`.

    A finished status without a result URL is RUNNING (keep polling); an unknown or missing
    status is RUNNING.
    """
    state = RAW_STATUS.get((raw or "").strip().lower(), JobState.RUNNING)
    if state is JobState.DONE and not has_result:
        return JobState.RUNNING
    return state


def known_raw_status(raw: str | None) -> bool:
    """True when ``raw`` is one of the statuses in :data:`RAW_STATUS` (case-insensitive)."""
    return (raw or "").strip().lower() in RAW_STATUS


class Badge(_Word):
    """The word a user sees for a job, everywhere (widget badge, panel rows, jobs table)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    CACHED = "cached"
    FAILED = "failed"
    TIMED_OUT = "timed out"
    NOT_WATCHING = "not watching"

    @property
    def colours(self) -> tuple[str, str]:
        """``(background, text)`` colours of the badge."""
        return _BADGE_COLOURS[self]

    @property
    def terminal(self) -> bool:
        """True when the badge shows an ended job (done, cached, failed, timed out)."""
        return self in (Badge.DONE, Badge.CACHED, Badge.FAILED, Badge.TIMED_OUT)


# Fixed pairs, the same on every theme; each text/background contrast is at least 4.5:1
# (tests/test_theme.py computes it; goenhance_nb._theme holds the other colours).
_BADGE_COLOURS: dict[Badge, tuple[str, str]] = {
    Badge.QUEUED: ("#e0e0e0", "#333333"),
    Badge.RUNNING: ("#1565c0", "#ffffff"),
    Badge.DONE: ("#2e7d32", "#ffffff"),
    Badge.CACHED: ("#00796b", "#ffffff"),
    Badge.FAILED: ("#c62828", "#ffffff"),
    Badge.TIMED_OUT: ("#b45309", "#ffffff"),
    Badge.NOT_WATCHING: ("#616161", "#ffffff"),
}

_BADGE_FOR_KIND = {
    EventKind.CACHED: Badge.CACHED,
    EventKind.DONE: Badge.DONE,
    EventKind.FAILED: Badge.FAILED,
    EventKind.TIMED_OUT: Badge.TIMED_OUT,
    EventKind.WATCH_CANCELLED: Badge.NOT_WATCHING,
    EventKind.VALIDATED: Badge.QUEUED,
    EventKind.QUEUED_LOCALLY: Badge.QUEUED,
    EventKind.SUBMITTING: Badge.QUEUED,
}

_BADGE_FOR_STATE = {
    JobState.LOCAL: Badge.QUEUED,
    JobState.LOCAL_QUEUE: Badge.QUEUED,
    JobState.QUEUED: Badge.QUEUED,
    JobState.RUNNING: Badge.RUNNING,
    JobState.DONE: Badge.DONE,
    JobState.FAILED: Badge.FAILED,
}

_BADGE_FOR_LEDGER = {
    LedgerState.SUBMITTING: Badge.QUEUED,
    LedgerState.SUBMITTED: Badge.QUEUED,
    LedgerState.QUEUED: Badge.QUEUED,
    LedgerState.RUNNING: Badge.RUNNING,
    LedgerState.DOWNLOADING: Badge.RUNNING,
    LedgerState.TIMED_OUT: Badge.TIMED_OUT,
    LedgerState.WATCH_CANCELLED: Badge.NOT_WATCHING,
    LedgerState.DONE: Badge.DONE,
    LedgerState.FAILED: Badge.FAILED,
}


def badge_for(
    kind: EventKind | None = None,
    state: JobState | LedgerState | None = None,
    *,
    cached: bool = False,
) -> Badge:
    """The badge for an event kind and/or a state.

    The kind decides when it says something (a ``done`` event of a cached result -> CACHED;
    ``watch_cancelled`` -> NOT_WATCHING); ``submitted``, ``status`` and ``downloading`` defer to
    the state (``downloading`` without one is RUNNING). Without either -> QUEUED.
    """
    if kind is EventKind.DONE and cached:
        return Badge.CACHED
    if kind is not None and kind in _BADGE_FOR_KIND:
        return _BADGE_FOR_KIND[kind]
    if isinstance(state, LedgerState):
        return _BADGE_FOR_LEDGER[state]
    if isinstance(state, JobState):
        if state is JobState.DONE and cached:
            return Badge.CACHED
        return _BADGE_FOR_STATE[state]
    if kind is EventKind.DOWNLOADING:
        return Badge.RUNNING
    return Badge.QUEUED


class PlanStatus(_Word):
    """What a plan (``Session.plan``, a sweep item before it runs) says about one
    transformation, before anything is sent.

    ``CACHED``: served from the cache; ``RUNNING``: a known job would be re-attached; ``NEW``: a
    paid submission. After a sweep ran, its items end as :class:`Badge` ``DONE``, ``CACHED``
    or ``FAILED``.
    """

    CACHED = "cached"
    RUNNING = "running"
    NEW = "new"
