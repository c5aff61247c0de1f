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
``LedgerError`` / ``CacheError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import tempfile
from pathlib import Path
from typing import Any

from diskcache import Disk
from diskcache.core import MODE_PICKLE, MODE_RAW, UNKNOWN

__all__ = [
    "JSONOnlyDisk",
    "PickledRowError",
    "network_fs_type",
    "private_dir",
    "read_json",
    "write_json_atomic",
]


class PickledRowError(ValueError):
    """A row in a diskcache database was not written as JSON (e.g. a pickle): refused."""


class JSONOnlyDisk(Disk):
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


# -- plain JSON files and private directories ----------------------------------------------


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it mode 0700; return it.

    :raises OSError: when the directory cannot be created.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if stat.S_IMODE(path.stat().st_mode) != 0o700:
            path.chmod(0o700)
    except PermissionError:  # not ours (e.g. a shared dir): leave it
        pass
    return path


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
