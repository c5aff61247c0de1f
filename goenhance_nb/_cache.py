"""The result cache: request key -> :class:`ResultRecord` (diskcache index, JSON rows only).

The index lives in ``<cache_dir>/index`` (a diskcache ``Cache`` with :class:`JSONOnlyDisk`); the
files it points at live in the content-addressed :class:`~goenhance_nb._store.ResultStore`.
A record is only served when its file exists and has the recorded size (``verify(full=True)``
also compares the content hash). The cache never deletes files outside its store, so files in
``goenhance_outputs/`` survive :meth:`ResultCache.clear` (DECISIONS 13).

A row that is not a JSON record (pickled, not an object, fields missing) is skipped by the
listings (:meth:`ResultCache.list`, :meth:`~ResultCache.find`, :meth:`~ResultCache.clear`) and
reported in one :class:`~goenhance_nb._errors.StorageWarning` line; ``clear`` also deletes such
rows when their key is readable. A damaged index or meta database is moved aside when the cache
opens (:func:`~goenhance_nb._jsondisk.open_json_cache`).
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from goenhance_nb._errors import CacheError
from goenhance_nb._jsondisk import JsonDb, private_dir, warn_unreadable
from goenhance_nb._records import Field, FieldError, dump_fields, read_fields
from goenhance_nb._store import ResultStore

__all__ = ["ResultCache", "ResultRecord"]

_RECORD_PREFIX = "r:"


@dataclass(frozen=True, slots=True)
class ResultRecord:
    """A finished transformation: where its file is and how it was made.

    ``path`` is absolute and inside the store; ``sha`` is the blake3 of the output file;
    ``params`` is the canonical parameter dict (``JobSpec.canonical()``); ``timings`` holds unix
    times ``submitted``, ``finished``, ``downloaded`` when known; ``origin`` is ``"shared"`` when
    the file came from the team's shared store (issue 16), else empty.
    """

    key: str
    path: str
    sha: str
    size: int
    job_id: str | None
    model: int
    style_label: str
    model_version: str
    params: dict[str, Any]
    input_hash: str
    cost: int | None
    backend: str
    created: float
    timings: dict[str, float] = field(default_factory=dict)
    source_name: str = ""
    origin: str = ""  # "" made by this machine; "shared": fetched from the shared store

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict of all fields."""
        return dump_fields(self, _RECORD_FIELDS)

    @classmethod
    def from_json(cls, d: object) -> ResultRecord:
        """Build a record from :meth:`to_json` output (fields an older version did not write
        take their defaults; unknown fields are ignored).

        :raises CacheError: when ``d`` is not an object, a required field is missing, or a
            value cannot be converted to its field's type.
        """
        try:
            return cls(**read_fields(d, _RECORD_FIELDS))
        except FieldError as exc:
            raise CacheError(f"malformed cache record ({exc})") from None

    @property
    def file(self) -> Path:
        """The stored result file as a :class:`~pathlib.Path`."""
        return Path(self.path)


def _float_values(timings: Any) -> dict[str, float]:
    return {str(k): float(v) for k, v in dict(timings).items()}


#: The JSON form of a :class:`ResultRecord`. The reader coerces (``str``, ``int``, ``float``)
#: rather than checking types, so a record can also be rebuilt from Python values (a ``Path``);
#: ``key``, ``path``, ``sha``, ``size`` and ``model`` are required, the others default when an
#: older version did not write them.
_RECORD_FIELDS: Mapping[str, Field] = {
    "key": Field(object, convert=str),
    "path": Field(object, convert=str),
    "sha": Field(object, convert=str),
    "size": Field(object, convert=int),
    "job_id": Field(object, None),
    "model": Field(object, convert=int),
    "style_label": Field(object, "", str),
    "model_version": Field(object, "", str),
    "params": Field(object, {}, dict),
    "input_hash": Field(object, "", str),
    "cost": Field(object, None, int),
    "backend": Field(object, "", str),
    "created": Field(object, 0.0, float),
    "timings": Field(object, {}, _float_values),
    "source_name": Field(object, "", str),
    "origin": Field(object, "", str),
}


class ResultCache:
    """Index of finished results, backed by diskcache in ``<cache_dir>/index``.

    Every method may raise :class:`CacheError` when the index holds a row that is not JSON (a
    pickled row is refused, never loaded) or the database cannot be opened.
    """

    def __init__(
        self, cache_dir: Path, store: ResultStore | None = None, *, size_limit: int | None = None
    ) -> None:
        """Open (creating, mode 0700) the index under ``cache_dir``.

        ``size_limit`` (bytes) bounds the store: :meth:`put` evicts least recently created
        results beyond it.
        """
        self.cache_dir = private_dir(Path(cache_dir))
        self.store = store if store is not None else ResultStore(self.cache_dir)
        self.size_limit = size_limit
        self.directory = self.cache_dir / "index"
        self._db_errors = JsonDb(
            CacheError, "result cache index", f"the result cache at {self.cache_dir}"
        )
        self._db = self._db_errors.open(self.directory)
        self._meta = self._db_errors.open(self.cache_dir / "meta", what="cache metadata store")

    # -- records ---------------------------------------------------------------------------
    def _guard(self) -> AbstractContextManager[None]:
        """Database failures as :class:`CacheError` (see :class:`JsonDb`)."""
        return self._db_errors.guard()

    def _scan(self) -> tuple[list[ResultRecord], list[Any]]:
        """All readable records (newest first) and the keys of unreadable record rows (an
        :class:`~goenhance_nb._jsondisk.UnreadableKey` for a refused key row). No warning."""
        out: list[ResultRecord] = []
        bad: list[Any] = []
        with self._guard():
            keys = list(self._db.iterkeys())
        for k in keys:
            if not isinstance(k, str):
                bad.append(k)
                continue
            if not k.startswith(_RECORD_PREFIX):
                continue
            try:
                with self._guard():
                    raw = self._db.get(k)
                if raw is not None:
                    out.append(ResultRecord.from_json(raw))
            except CacheError:
                bad.append(k)
        out.sort(key=lambda r: r.created, reverse=True)
        return out, bad

    def _report(self, bad: list[Any]) -> None:
        if bad:
            warn_unreadable(len(bad), "result cache index", self.directory)

    def get(self, key: str) -> ResultRecord | None:
        """Return the record for ``key`` without checking its file, or ``None``."""
        with self._guard():
            raw = self._db.get(_RECORD_PREFIX + key)
        return None if raw is None else ResultRecord.from_json(raw)

    def lookup(self, key: str) -> tuple[ResultRecord | None, str]:
        """Return ``(record, status)``: status ``"ok"``, ``"missing"`` (file gone),
        ``"damaged"`` (size differs) or ``"absent"`` (no record). Only ``"ok"`` may be served."""
        rec = self.get(key)
        if rec is None:
            return None, "absent"
        return rec, self.store.check(rec.file, size=rec.size)

    def usable(self, key: str) -> ResultRecord | None:
        """The record for ``key`` when it may be served as it is (:meth:`lookup` says
        ``"ok"``: file present, right size), else None."""
        rec, status = self.lookup(key)
        return rec if status == "ok" else None

    def put(self, record: ResultRecord) -> None:
        """Store ``record`` (replacing any previous one for its key), then apply the size limit."""
        with self._guard():
            self._db.set(_RECORD_PREFIX + record.key, record.to_json())
        if self.size_limit is not None:
            self.enforce_limit(keep=record.key)

    def verify(self, key: str, *, full: bool = False) -> bool:
        """Return whether the cached file for ``key`` is intact (size; with ``full`` also hash).

        :raises CacheError: when there is no record for ``key``.
        """
        rec = self.get(key)
        if rec is None:
            raise CacheError(f"no cached result for key {key[:12]}")
        return self.store.check(rec.file, size=rec.size, sha=rec.sha if full else None) == "ok"

    def list(self) -> list[ResultRecord]:
        """Return all readable records, newest first.

        Unreadable rows are skipped and reported in one
        :class:`~goenhance_nb._errors.StorageWarning` (how many, and where).
        """
        out, bad = self._scan()
        self._report(bad)
        return out

    def find(self, key_or_prefix: str) -> ResultRecord | None:
        """Return the record whose key (or job id) equals or starts with ``key_or_prefix``.

        :raises CacheError: when a prefix matches more than one record.
        """
        rec = self.get(key_or_prefix)
        if rec is not None:
            return rec
        records, bad = self._scan()
        self._report(bad)
        hits = [r for r in records if r.key.startswith(key_or_prefix) or r.job_id == key_or_prefix]
        if len(hits) > 1:
            raise CacheError(
                f"{key_or_prefix!r} matches {len(hits)} cached results; be more specific"
            )
        return hits[0] if hits else None

    def info(self, key_or_prefix: str) -> ResultRecord:
        """Return the record for a key, key prefix or job id.

        :raises CacheError: when none matches.
        """
        rec = self.find(key_or_prefix)
        if rec is None:
            raise CacheError(f"no cached result for {key_or_prefix!r}")
        return rec

    def remove(self, key: str) -> bool:
        """Delete the record for ``key`` and its stored file (unless another record shares it).

        Files in ``goenhance_outputs/`` are never touched. Returns whether a record existed.
        """
        rec = self.get(key)
        if rec is None:
            return False
        with self._guard():
            self._db.delete(_RECORD_PREFIX + key)
        if not any(r.sha == rec.sha for r in self._scan()[0]):
            self.store.remove(rec.file)
        return True

    def clear(self) -> int:
        """Delete every record and its stored file; return the number of records removed.

        Unreadable record rows whose key is readable are deleted too (never decoded); the
        others are reported (:class:`~goenhance_nb._errors.StorageWarning`). Only the store
        under the cache dir is emptied; ``goenhance_outputs/`` is left alone.
        """
        recs, bad = self._scan()
        for rec in recs:
            with self._guard():
                self._db.delete(_RECORD_PREFIX + rec.key)
            self.store.remove(rec.file)
        left = []
        for k in bad:
            if isinstance(k, str):
                with self._guard():
                    self._db.delete(k)
            else:
                left.append(k)
        self._report(left)
        return len(recs)

    def total_size(self) -> int:
        """Return the summed size in bytes of all readable cached results."""
        return sum(r.size for r in self._scan()[0])

    def enforce_limit(self, *, keep: str | None = None) -> builtins.list[str]:
        """Evict the oldest results until the total size is within ``size_limit``.

        ``keep`` is never evicted. Returns the evicted keys.
        """
        if self.size_limit is None:
            return []
        recs = sorted(self._scan()[0], key=lambda r: r.created)
        total = sum(r.size for r in recs)
        evicted: list[str] = []
        for rec in recs:
            if total <= self.size_limit:
                break
            if rec.key == keep:
                continue
            self.remove(rec.key)
            total -= rec.size
            evicted.append(rec.key)
        return evicted

    # -- small JSON metadata in <cache_dir>/meta (model list TTL cache, upload URLs, ...) ----
    def meta_get(
        self, name: str, *, max_age: float | None = None, now: float | None = None
    ) -> Any | None:
        """Return the value stored under ``name`` by :meth:`meta_set`, or ``None`` when absent
        or older than ``max_age`` seconds."""
        with self._guard():
            raw = self._meta.get(name)
        if not isinstance(raw, dict) or "v" not in raw:
            return None
        if max_age is not None:
            t = time.time() if now is None else now
            if t - float(raw.get("t", 0.0)) > max_age:
                return None
        return raw["v"]

    def meta_set(self, name: str, value: Any, *, now: float | None = None) -> None:
        """Store a JSON value under ``name`` with a timestamp."""
        with self._guard():
            self._meta.set(name, {"t": time.time() if now is None else now, "v": value})

    def close(self) -> None:
        """Close the index and meta databases."""
        self._db.close()
        self._meta.close()
