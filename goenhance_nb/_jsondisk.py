"""JSON-only serialisation for diskcache (STYLE 8, DECISIONS 12).

diskcache's default :class:`diskcache.Disk` pickles anything that is not a plain str/int/float/
bytes, and even its :class:`diskcache.JSONDisk` still *unpickles* a ``MODE_PICKLE`` row on
read. Loading a pickle can run code (CVE-2025-69872), and a cache directory may be shared.

:class:`JSONOnlyDisk` therefore:

* stores keys only as ``str`` (anything else is a :class:`TypeError` on write);
* stores values as compact JSON text inline in the SQLite row (``MODE_RAW``), never in a side
  file and never pickled;
* refuses, on read, any key stored pickled (``raw`` false) and any value row that is not a raw
  JSON string (pickled, binary or text-file rows), raising :class:`PickledRowError`.

Callers (the ledger and the result cache) translate :class:`PickledRowError` into their own
``LedgerError`` / ``CacheError``. Listings use :class:`ListingJSONDisk`, which yields an
:class:`UnreadableKey` marker for a refused key row instead of ending the iteration, so one bad
row can be skipped and counted (issue 12).

:func:`open_json_cache` is the one way our databases are opened: a database SQLite reports as
damaged is moved aside (``<dir>.damaged-<timestamp>``) and a fresh one starts, with one
:class:`~goenhance_nb._errors.StorageWarning` saying where the old one went.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache
import filelock
from diskcache import Disk
from diskcache.core import MODE_PICKLE, MODE_RAW, UNKNOWN

from goenhance_nb._errors import StorageWarning
from goenhance_nb._fsutil import private_dir

__all__ = [
    "UNBOUNDED",
    "JSONOnlyDisk",
    "JsonDb",
    "ListingJSONDisk",
    "PickledRowError",
    "UnreadableKey",
    "is_damage",
    "network_fs_type",
    "open_json_cache",
    "private_dir",
    "read_json",
    "warn_unreadable",
    "write_json_atomic",
]


class PickledRowError(ValueError):
    """A row in a diskcache database was not written as JSON (e.g. a pickle): refused."""


class JSONOnlyDisk(Disk):  # type: ignore[misc]  # diskcache is untyped: Disk is Any
    """A diskcache ``Disk`` that writes JSON only and refuses to read anything else."""

    def put(self, key: Any) -> tuple[Any, bool]:
        """Return the database form of ``key`` (a ``str``) and ``raw=True``.

        :raises TypeError: when ``key`` is not a ``str``.
        """
        if type(key) is not str:
            raise TypeError(f"JSONOnlyDisk keys must be str, not {type(key).__name__}")
        return key, True

    def get(self, key: Any, raw: bool) -> str:
        """Return the Python key for a database key.

        :raises PickledRowError: when the row's key was stored pickled or is not a string.
        """
        if not raw or type(key) is not str:
            raise PickledRowError("refusing a non-JSON (pickled or binary) key row")
        return key

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple[int, int, None, str]:
        """Serialise ``value`` to compact JSON stored inline in the row.

        :raises TypeError: when ``value`` is a file-like object or not JSON-serialisable.
        """
        if read:
            raise TypeError("JSONOnlyDisk does not store file-like values")
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return 0, MODE_RAW, None, text

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        """Decode a row written by :meth:`store`.

        :raises PickledRowError: for pickled rows, binary/text-file rows, or rows whose text
            is not valid JSON.
        """
        if mode == MODE_PICKLE:
            raise PickledRowError("refusing a pickled row (only JSON rows are accepted)")
        if mode != MODE_RAW or filename is not None or read:
            raise PickledRowError(f"refusing a non-JSON row (mode {mode})")
        if type(value) is sqlite3.Binary or isinstance(value, (bytes, bytearray, memoryview)):
            raise PickledRowError("refusing a binary row (only JSON text rows are accepted)")
        if not isinstance(value, str):
            # Plain ints/floats written by other tools: valid JSON scalars, but not ours.
            raise PickledRowError("refusing a non-text row (only JSON text rows are accepted)")
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise PickledRowError(f"refusing a row that is not valid JSON ({exc.msg})") from None


class UnreadableKey:
    """Stands for a key row :class:`JSONOnlyDisk` refuses (pickled or binary) in a listing.

    Never equal to a real key and never decoded; a listing skips and counts it.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unreadable key>"


class ListingJSONDisk(JSONOnlyDisk):
    """:class:`JSONOnlyDisk` whose key decoding yields :class:`UnreadableKey` for a refused key
    row instead of raising, so ``Cache.iterkeys()`` goes on past it. Values are still refused."""

    def get(self, key: Any, raw: bool) -> Any:
        """Return the key, or an :class:`UnreadableKey` for a refused (non-JSON) key row."""
        try:
            return super().get(key, raw)
        except PickledRowError:
            return UnreadableKey()


# -- opening databases; quarantine of a damaged one ---------------------------------------

_DB_FILE = "cache.db"  # diskcache's database file name inside its directory


def is_damage(exc: BaseException) -> bool:
    """True when ``exc`` is SQLite saying a database file is damaged or not a database
    (SQLITE_CORRUPT / SQLITE_NOTADB), as opposed to locked, read-only, full or unopenable."""
    return type(exc) is sqlite3.DatabaseError


def _check_integrity(db: Path) -> None:
    """Raise ``sqlite3.DatabaseError`` when ``db`` exists and SQLite's ``quick_check`` fails."""
    if not db.is_file():
        return
    con = sqlite3.connect(str(db), timeout=30)
    try:
        rows = con.execute("PRAGMA quick_check").fetchall()
    finally:
        con.close()
    if rows != [("ok",)]:
        detail = str(rows[0][0]) if rows and rows[0] else "integrity check failed"
        raise sqlite3.DatabaseError(f"database disk image is malformed ({detail[:120]})")


def _quarantine(directory: Path, what: str, reason: str) -> Path | None:
    """Move a damaged database directory aside (under an inter-process lock, re-checking first:
    another kernel may have done it already). Return where it went, or None if it was fine."""
    lock = filelock.FileLock(str(directory.parent / f".{directory.name}.quarantine.lock"))
    with lock:
        try:
            _check_integrity(directory / _DB_FILE)
            return None  # healthy now: another process replaced it
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = directory.with_name(f"{directory.name}.damaged-{stamp}")
        n = 1
        while dest.exists():
            dest = directory.with_name(f"{directory.name}.damaged-{stamp}-{n}")
            n += 1
        os.replace(directory, dest)
    warnings.warn(
        f"the {what} at {directory} was damaged ({reason}); it was moved to {dest} and a fresh "
        "one started",
        StorageWarning,
        stacklevel=4,
    )
    return dest


def open_json_cache(
    directory: Path, *, what: str, disk: type[Disk] = ListingJSONDisk, **settings: Any
) -> diskcache.Cache:
    """Open (creating, mode 0700) the diskcache database in ``directory`` with a JSON-only disk.

    Before opening, SQLite's ``PRAGMA quick_check`` runs on an existing file. A database SQLite
    reports as damaged (at that check or while opening: "database disk image is malformed",
    "file is not a database") is moved aside with its directory to
    ``<directory>.damaged-<YYYYmmdd-HHMMSS>`` — never deleted: it may hold a paid job's id — a
    fresh empty database starts in its place, and one :class:`StorageWarning` names ``what``
    and where the old one went. ``settings`` go to ``diskcache.Cache``.

    :raises sqlite3.Error: any other database error (locked, read-only, disk full), or a
        fresh database that cannot be opened either.
    :raises OSError: the directory cannot be created or moved.
    """
    directory = Path(directory)
    for attempt in (1, 2):
        try:
            _check_integrity(directory / _DB_FILE)
            return diskcache.Cache(str(private_dir(directory)), disk=disk, **settings)
        except sqlite3.DatabaseError as exc:
            if attempt == 2 or not is_damage(exc):
                raise
            reason = str(exc)
        _quarantine(directory, what, reason)
    raise AssertionError("unreachable")  # pragma: no cover


#: diskcache settings of a database that must never lose a row: no eviction, no size cull.
UNBOUNDED: Mapping[str, Any] = {"eviction_policy": "none", "size_limit": 2**62}


@dataclass(frozen=True, slots=True)
class JsonDb:
    """How one of our databases (the ledger, the result cache) is opened and how its failures
    read: as one-line errors of class ``error``.

    ``name`` names it in messages ("job ledger"); ``damaged`` is the subject of the message
    for a damaged database ("the job ledger at /path"). With ``translate_all``, a lock timeout
    and any other SQLite or OS error become ``error`` too ("<name> unavailable: ..."); without,
    they pass through unchanged.
    """

    error: type[Exception]
    name: str
    damaged: str
    translate_all: bool = False

    def open(self, directory: Path, *, what: str | None = None, **settings: Any) -> diskcache.Cache:
        """:func:`open_json_cache` with :data:`UNBOUNDED` (``settings`` override it) and
        ``what`` (default ``name``) naming the database in a quarantine warning; returns the
        ``diskcache.Cache``.

        :raises error: "cannot open the <name>: ..." for any failure (SQLite, permissions).
        """
        try:
            return open_json_cache(directory, what=what or self.name, **{**UNBOUNDED, **settings})
        except Exception as exc:
            raise self.error(f"cannot open the {self.name}: {exc}") from None

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Translate a failure of the database calls in the ``with`` block into ``error``.

        :raises error: a refused (non-JSON) row; a damaged database (a new session moves it
            aside); with ``translate_all`` also a lock timeout or another SQLite/OS error.
        """
        try:
            yield
        except PickledRowError as exc:
            raise self.error(f"{self.name} holds a non-JSON row: {exc}") from None
        except diskcache.Timeout:
            if not self.translate_all:
                raise
            raise self.error(f"{self.name} unavailable: database is locked") from None
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise self.error(
                    f"{self.damaged} is damaged ({exc}); a new session moves it aside and "
                    "starts a fresh one"
                ) from None
            if not self.translate_all:
                raise
            raise self.error(f"{self.name} unavailable: {exc}") from None
        except (sqlite3.Error, OSError) as exc:
            if not self.translate_all:
                raise
            raise self.error(f"{self.name} unavailable: {exc}") from None


def warn_unreadable(count: int, what: str, directory: Path) -> None:
    """Say, in one :class:`StorageWarning` line, that a listing skipped ``count`` unreadable rows
    of the ``what`` database in ``directory`` (left in place, never decoded)."""
    rows = "row" if count == 1 else "rows"
    warnings.warn(
        f"skipped {count} unreadable {rows} in the {what} at {directory} (not JSON or not "
        "written by goenhance_nb); the other rows are used",
        StorageWarning,
        stacklevel=3,
    )


# -- plain JSON files and private directories ----------------------------------------------


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` via a temp file in the same dir, fsync, ``os.replace``.

    :raises OSError: on I/O failure (the target is then unchanged).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, ensure_ascii=False, sort_keys=True, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any | None:
    """Return the JSON content of ``path``, or ``None`` when it is missing or not valid JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def network_fs_type(path: Path, mounts: Path = Path("/proc/mounts")) -> str | None:
    """Return the filesystem type when ``path`` lives on NFS/CIFS/SMB (per the longest matching
    mount point in ``mounts``), else None (also when ``mounts`` cannot be read)."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[int, str] = (-1, "")
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1].replace("\\040", " ")
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > best[0]:
            best = (len(mnt), parts[2])
    fstype = best[1].lower()
    if fstype.startswith(("nfs", "cifs", "smb")):
        return fstype
    return None
