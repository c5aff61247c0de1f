"""The job ledger: durable, JSON-only record of every submitted (or being submitted) job.

Exactly-once submission comes from here (STYLE 9): the engine writes an entry in state
``submitting`` *before* the generate POST, records the ``img_uuid`` as soon as the POST returns,
then every state change. Any later run with the same request key re-attaches to the job in the
ledger instead of submitting again, across kernel restarts and processes; a per-key file lock
(:meth:`Ledger.lock`) makes two processes racing on one key produce one API call.

Entries live in ``<cache_dir>/ledger`` (diskcache, :class:`JSONOnlyDisk`, SQLite
``synchronous=FULL``). Result URLs are never stored (they are short-lived and signed).

Damage is contained (issue 12): a row that is not a JSON entry (pickled, not an object, fields
missing or of the wrong type) is skipped by :meth:`Ledger.entries` / :meth:`Ledger.find` and
reported in one :class:`~goenhance_nb._errors.StorageWarning` line; it is never deleted (it may
be a paid job). A database SQLite calls damaged is moved aside when the ledger opens
(:func:`~goenhance_nb._jsondisk.open_json_cache`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import filelock

from goenhance_nb._errors import LedgerError
from goenhance_nb._jsondisk import JsonDb, private_dir, warn_unreadable
from goenhance_nb._lifecycle import LedgerState
from goenhance_nb._records import NUMBER, Field, FieldError, dump_fields, read_fields

__all__ = ["Ledger", "LedgerEntry", "orphan_error"]

#: The ledger states that end an entry (derived from :class:`LedgerState`, never redefined).
_TERMINAL = frozenset(s for s in LedgerState if s.terminal)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One job as the ledger knows it.

    ``state`` is a :class:`~goenhance_nb._lifecycle.LedgerState` value (stored as its
    string). ``spec`` is ``JobSpec.canonical()``; ``reference_url`` is
    the public input URL sent to generate (needed to resubmit); ``result_key`` equals ``key``
    once a result is cached.
    """

    key: str
    state: str
    spec: dict[str, Any]
    backend: str
    input_hash: str
    model_version: str = ""
    style_label: str = ""
    source_name: str = ""
    reference_url: str | None = None
    job_id: str | None = None
    raw_status: str | None = None
    cost: int | None = None
    error: str | None = None
    created: float = 0.0
    updated: float = 0.0
    submitted_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict of all fields."""
        return dump_fields(self, _ENTRY_FIELDS)

    @classmethod
    def from_json(cls, d: object) -> LedgerEntry:
        """Build an entry from :meth:`to_json` output (unknown fields are ignored; fields an
        older version did not write, or wrote as null, take their defaults).

        :raises LedgerError: when ``d`` is not an object, a required field is missing, or a
            field has the wrong JSON type.
        """
        try:
            return cls(**read_fields(d, _ENTRY_FIELDS))
        except FieldError as exc:
            raise LedgerError(f"malformed ledger entry: {exc}") from None

    def with_(self, **changes: Any) -> LedgerEntry:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    @property
    def is_orphan(self) -> bool:
        """True for an entry stuck in ``submitting`` (the POST's outcome is unknown)."""
        return self.state == LedgerState.SUBMITTING and self.job_id is None

    @property
    def resumable(self) -> bool:
        """True when the job has an id and is not finished: polling can pick it up again."""
        return self.job_id is not None and self.state not in _TERMINAL


#: The JSON form of a :class:`LedgerEntry`: ``key``, ``state``, ``spec``, ``backend`` and
#: ``input_hash`` are required; ``object`` marks a field whose value is kept as written.
_ENTRY_FIELDS: Mapping[str, Field] = {
    "key": Field(str),
    "state": Field(str),
    "spec": Field(dict),
    "backend": Field(str),
    "input_hash": Field(str),
    "model_version": Field(object, ""),
    "style_label": Field(object, ""),
    "source_name": Field(object, ""),
    "reference_url": Field(str, None),
    "job_id": Field(str, None),
    "raw_status": Field(object, None),
    "cost": Field(int, None),
    "error": Field(object, None),
    "created": Field(NUMBER, 0.0),
    "updated": Field(NUMBER, 0.0),
    "submitted_at": Field(NUMBER, None),
    "finished_at": Field(object, None),
    "pid": Field(object, None),
    "extra": Field(dict, {}, dict),
}


def orphan_error(key: str, reason: str | None = None) -> LedgerError:
    """The one-line error for an entry left in ``submitting``: the generate POST's outcome is
    unknown, so the API may have made (and charged) a job. ``reason`` is what happened to the
    POST (the entry's ``error``); without one, the run stopped before the API answered.

    The line names the only way to pay again on purpose (DECISIONS 8, 25):
    ``%goenhance resume KEY --resubmit`` or ``resume('KEY', resubmit=True)``.
    """
    ident = key[:12]
    if reason:
        what = (
            f"job {ident}: the generate request may have created (and charged) a job, but no "
            f"job id came back ({reason})"
        )
    else:
        what = (
            f"job {ident} was left 'submitting' by an earlier run that stopped before the API "
            "answered; it may or may not have been charged"
        )
    return LedgerError(
        f"{what}. A re-run will not submit it again; to submit it again on purpose (may charge "
        f"twice): %goenhance resume {ident} --resubmit or resume('{ident}', resubmit=True)"
    )


class Ledger:
    """Durable job ledger under ``<cache_dir>/ledger`` plus per-key locks in ``locks/``.

    Every read may raise :class:`LedgerError` when the database holds a non-JSON (e.g.
    pickled) row: it is refused, never loaded.
    """

    def __init__(self, cache_dir: Path, *, timeout: float = 60.0) -> None:
        """Open (creating, mode 0700) the ledger database and lock directory.

        ``timeout``: seconds a write waits for a database locked by another connection
        before it fails with :class:`LedgerError` ("database is locked").

        :raises LedgerError: when the database cannot be opened.
        """
        self.cache_dir = private_dir(Path(cache_dir))
        self.lock_dir = private_dir(self.cache_dir / "locks")
        self.directory = self.cache_dir / "ledger"
        self._db_errors = JsonDb(
            LedgerError, "job ledger", f"the job ledger at {self.directory}", translate_all=True
        )
        self._db = self._db_errors.open(self.directory, sqlite_synchronous=2, timeout=timeout)

    def _guard(self) -> AbstractContextManager[None]:
        """Database failures as :class:`LedgerError` (one line; see :class:`JsonDb`)."""
        return self._db_errors.guard()

    def lock(self, key: str) -> filelock.FileLock:
        """Return the inter-process lock for request ``key`` (``<cache_dir>/locks/<key>.lock``).

        The lock is not thread-bound (the engine may take and release it from its own thread).
        """
        return filelock.FileLock(str(self.lock_dir / f"{key}.lock"), thread_local=False)

    def check_orphan(self, key: str) -> None:
        """Raise if ``key``'s entry is an orphaned ``submitting`` entry nobody is working on
        (its lock is free).

        :raises LedgerError: see :func:`orphan_error`.
        """
        entry = self.get(key)
        if entry is None or not entry.is_orphan:
            return
        lock = self.lock(key)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return  # another process is submitting it right now
        try:
            entry = self.get(key)
        finally:
            lock.release()
        if entry is not None and entry.is_orphan:
            raise orphan_error(key, entry.error)

    def get(self, key: str) -> LedgerEntry | None:
        """Return the entry for ``key`` or ``None``."""
        with self._guard():
            raw = self._db.get(key)
        if raw is None:
            return None
        return LedgerEntry.from_json(raw)

    def put(self, entry: LedgerEntry) -> LedgerEntry:
        """Write ``entry`` durably (SQLite commit with synchronous=FULL); return it with
        ``updated`` set to now."""
        entry = entry.with_(updated=time.time())
        with self._guard():
            self._db.set(entry.key, entry.to_json())
        return entry

    def update(self, key: str, **changes: Any) -> LedgerEntry:
        """Apply ``changes`` to the entry for ``key`` and write it.

        :raises LedgerError: when there is no entry for ``key``.
        """
        with self._guard(), self._db.transact():
            cur = self.get(key)
            if cur is None:
                raise LedgerError(f"no ledger entry for key {key[:12]}")
            return self.put(cur.with_(**changes))

    def remove(self, key: str) -> bool:
        """Delete the entry for ``key``; return whether it existed."""
        with self._guard():
            return bool(self._db.delete(key))

    def entries(self) -> list[LedgerEntry]:
        """Return all readable entries, newest first.

        Unreadable rows (pickled, not JSON, not an entry) are skipped, left in place, and
        reported in one :class:`~goenhance_nb._errors.StorageWarning` naming how many and where.

        :raises LedgerError: the database itself cannot be read.
        """
        out: list[LedgerEntry] = []
        bad = 0
        with self._guard():
            keys = list(self._db.iterkeys())
        for k in keys:
            if not isinstance(k, str):
                bad += 1
                continue
            try:
                e = self.get(k)
            except LedgerError:
                bad += 1
                continue
            if e is not None:
                out.append(e)
        if bad:
            warn_unreadable(bad, "job ledger", self.directory)
        out.sort(key=lambda e: e.created, reverse=True)
        return out

    def find(self, ident: str) -> LedgerEntry | None:
        """Return the entry whose key or job id equals ``ident``, or whose key / job id starts
        with it (at least 6 characters).

        :raises LedgerError: when a prefix is ambiguous.
        """
        e = self.get(ident)
        if e is not None:
            return e
        all_ = self.entries()
        exact = [x for x in all_ if x.job_id == ident]
        if exact:
            return exact[0]
        if len(ident) < 6:
            return None
        hits = [x for x in all_ if x.key.startswith(ident) or (x.job_id or "").startswith(ident)]
        if len(hits) > 1:
            raise LedgerError(f"{ident!r} matches {len(hits)} ledger entries; be more specific")
        return hits[0] if hits else None

    def close(self) -> None:
        """Close the database."""
        self._db.close()
