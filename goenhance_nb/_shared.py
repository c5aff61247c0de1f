"""The shared team store: a second cache tier and cross-machine single flight (issue 16).

A :class:`SharedStore` lives on any fsspec URL (``s3://bucket/prefix`` through s3fs, ``gs://``,
a folder on a shared filesystem, ``memory://`` in tests). Everything sits under
``<url>/<backend slug>/``, so simulated and real results (or two API hosts) never meet::

    results/<request key>.json   index record (JSON): the ResultRecord's provenance + sha256, size
    blobs/<sha256>               the result's bytes (immutable, content-addressed)
    claims/<request key>.json    {owner, created, heartbeat, job_id, cost, submitted_at}

Publishing writes the blob first (a filesystem: a temp name, then a rename; S3: one PUT or a
completed multipart upload), then the index record with an exclusive create (S3
``If-None-Match: *`` through s3fs's ``"xb"`` mode; a filesystem: a hard link of a complete temp
file, which fails when the name exists). An identical record already there is fine; a different
one is never overwritten (one :class:`StorageWarning`). A fetch streams the blob into the local
store's temp dir, checks its sha256 and size and commits it through
:meth:`ResultStore.commit` (probe included); a mismatch is reported once per key and the entry
is never used; once this machine has made the result itself, its verified copy replaces that
entry. Index records never hold the API key or a URL (a :class:`ResultRecord` holds neither).

A claim is an exclusive create of ``claims/<key>.json`` before the paid POST. The owner writes
the job id into it as soon as the API answers and rewrites it (``heartbeat``) every
``heartbeat_every`` seconds while the job lives; a claim whose heartbeat is older than
``lease`` is stale (its owner died). Claim times are wall-clock (``time.time``): machines
sharing a store need clocks within a lease of each other.

Failures: any error of the store itself (unreachable, refused credentials, a timeout) raises
:class:`SharedStoreDown` and is said once per store object as a :class:`StorageWarning`
("shared store unreachable: working locally"); the store is then not asked again for
``retry_after`` seconds. fsspec is imported on first use only (``%load_ext`` stays cheap).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goenhance_nb._cache import ResultRecord
from goenhance_nb._errors import CacheError, DiskFull, GoEnhanceError, StorageWarning
from goenhance_nb._keys import sha256_file
from goenhance_nb._store import ResultStore, StoredFile

__all__ = ["Claim", "ClaimInfo", "SharedResult", "SharedStore", "SharedStoreDown", "backend_slug"]

log = logging.getLogger("goenhance_nb.shared")

#: Format of the index records and claims written here.
FORMAT = 1
_CHUNK = 1 << 20
#: The ResultRecord fields an index record carries (``path`` is local, ``sha`` is the blake3).
_PROVENANCE = (
    "key",
    "job_id",
    "model",
    "style_label",
    "model_version",
    "params",
    "input_hash",
    "cost",
    "backend",
    "created",
    "timings",
    "source_name",
)


class SharedStoreDown(GoEnhanceError):
    """The shared store could not be used (unreachable, auth, timeout): work locally."""


class _LocalWriteError(Exception):
    """Writing the local copy of a shared result failed (our disk, not the store)."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


def backend_slug(backend: str) -> str:
    """``"simulated"`` -> ``"simulated"``; an API host -> itself (``[A-Za-z0-9.-]`` only)."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "-", backend).strip("-.")
    return slug or "unknown"


@dataclass(frozen=True, slots=True)
class SharedResult:
    """An index record found in the store: the blob's ``sha256`` and ``size`` and the
    provenance fields of the ResultRecord that published it (``record``)."""

    key: str
    sha256: str
    size: int
    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ClaimInfo:
    """A claim as read from the store (someone else's, or ours)."""

    key: str
    owner: str
    created: float
    heartbeat: float
    job_id: str | None = None
    cost: int | None = None
    submitted_at: float | None = None

    def stale(self, now: float, lease: float) -> bool:
        """True when the owner died: it has not renewed the claim within ``lease`` seconds, or
        it ran on this host and its process is gone."""
        return now - self.heartbeat > lease or self._owner_gone()

    def _owner_gone(self) -> bool:
        host, _, rest = self.owner.partition("/")
        pid_text = rest.partition("/")[0]
        if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
            return False
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        except OSError:  # e.g. another user's process: alive
            return False
        return False


@dataclass(slots=True)
class Claim:
    """Our claim on a key (we may submit its job); :meth:`SharedStore.release` ends it."""

    key: str
    owner: str
    created: float
    job_id: str | None = None
    cost: int | None = None
    submitted_at: float | None = None


def _owner() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


class SharedStore:
    """A team's shared result store on an fsspec URL (see the module docstring).

    :param url: fsspec URL of the store's root (``s3://bucket/prefix``, a path, ...).
    :param backend: the session's backend identity; its slug prefixes every key.
    :param lease: seconds after the last heartbeat when a claim counts as stale.
    :param heartbeat_every: seconds between an owner's heartbeats.
    :param retry_after: seconds the store is left alone after an outage.
    :param storage_options: keyword arguments for the fsspec filesystem (fsspec's own
        ``FSSPEC_<PROTOCOL>_<OPTION>`` environment variables apply as well).
    """

    def __init__(
        self,
        url: str,
        backend: str,
        *,
        lease: float = 60.0,
        heartbeat_every: float = 15.0,
        retry_after: float = 60.0,
        storage_options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.backend = backend
        self.lease = lease
        self.heartbeat_every = heartbeat_every
        self.retry_after = retry_after
        self.clock = clock
        self._options = dict(storage_options or {})
        # one filesystem object per store: credentials and endpoints are read now, not reused
        # from another session's cached instance
        self._options.setdefault("skip_instance_cache", True)
        self._fs: Any = None
        self._root = ""
        self._local = False
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._said_down = False
        self._reported: set[str] = set()
        self._bad_blobs: set[str] = set()
        self._bad_keys: set[str] = set()  # index records whose blob failed its check here

    def __repr__(self) -> str:
        return f"<SharedStore {self.url!r} backend={self.backend!r}>"

    # -- plumbing --------------------------------------------------------------------------
    def available(self) -> bool:
        """False for ``retry_after`` seconds after an outage (the store is not asked then)."""
        return time.monotonic() >= self._down_until

    def _filesystem(self) -> tuple[Any, str]:
        with self._lock:
            if self._fs is None:
                import fsspec  # optional dependency (goenhance-nb[shared]); first use only

                fs, root = fsspec.core.url_to_fs(self.url, **self._options)
                self._local = "file" in (
                    fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
                )
                self._fs, self._root = fs, str(root).rstrip("/")
            return self._fs, self._root

    def _path(self, *parts: str) -> str:
        _, root = self._filesystem()
        return "/".join([root, backend_slug(self.backend), *parts])

    @contextlib.contextmanager
    def _io(self, what: str) -> Iterator[Any]:
        """Run one store operation; a store failure becomes :class:`SharedStoreDown` (said
        once). ``FileNotFoundError`` and ``FileExistsError`` are answers, not failures."""
        if not self.available():
            raise SharedStoreDown(f"shared store {self.url} is unreachable")
        try:
            fs, _ = self._filesystem()
            yield fs
        except (FileNotFoundError, FileExistsError, _LocalWriteError):
            raise
        except ImportError as exc:
            self._down(what, exc, hint=" (install goenhance-nb[shared])")
        except Exception as exc:  # botocore, aiohttp, OSError, timeouts: the store failed
            self._down(what, exc)

    def _down(self, what: str, exc: BaseException, hint: str = "") -> None:
        self._down_until = time.monotonic() + self.retry_after
        reason = f"{type(exc).__name__}: {str(exc)[:200]}"
        log.warning("goenhance_nb: shared store %s failed to %s (%s)", self.url, what, reason)
        if not self._said_down:
            self._said_down = True
            warnings.warn(
                f"shared store unreachable: working locally ({self.url}: cannot {what}: "
                f"{reason}{hint}); results are computed and paid here until it answers again",
                StorageWarning,
                stacklevel=2,
            )
        raise SharedStoreDown(f"shared store {self.url}: cannot {what} ({reason})") from None

    def _read_json(self, fs: Any, path: str) -> dict[str, Any] | None:
        """The JSON object at ``path``; None when absent or not a JSON object."""
        try:
            raw = fs.cat_file(path)
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    def _create(self, fs: Any, path: str, data: dict[str, Any]) -> None:
        """Create ``path`` holding ``data``, never over an existing name, never partly visible.

        :raises FileExistsError: the name exists.
        """
        body = json.dumps(data, sort_keys=True).encode()
        if not self._local:
            with fs.open(path, "xb") as fh:  # S3: a PUT with If-None-Match: *
                fh.write(body)
            return
        parent = path.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        fs.pipe_file(tmp, body)
        try:
            os.link(tmp, path)  # atomic, and fails when the name exists
        except FileExistsError:
            raise
        except OSError:  # no hard links here (some SMB mounts): O_EXCL, written in one call
            with open(path, "xb") as fh:
                fh.write(body)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _overwrite(self, fs: Any, path: str, data: dict[str, Any]) -> None:
        body = json.dumps(data, sort_keys=True).encode()
        if not self._local:
            fs.pipe_file(path, body)
            return
        tmp = f"{path.rsplit('/', 1)[0]}/.tmp-{uuid.uuid4().hex}"
        fs.pipe_file(tmp, body)
        os.replace(tmp, path)

    # -- results ---------------------------------------------------------------------------
    def lookup(self, key: str) -> SharedResult | None:
        """The index record for ``key``, or None (absent or unreadable).

        :raises SharedStoreDown: the store failed.
        """
        with self._io("read an index record") as fs:
            data = self._read_json(fs, self._path("results", f"{key}.json"))
        if data is None:
            return None
        sha256, size, record = data.get("sha256"), data.get("size"), data.get("record")
        if (
            not isinstance(sha256, str)
            or not re.fullmatch(r"[0-9a-f]{64}", sha256)
            or not isinstance(size, int)
            or isinstance(size, bool)
            or not isinstance(record, dict)
            or record.get("key") != key
            or not _readable_record(record)
        ):
            self._report(key, "its index record is malformed")
            return None
        return SharedResult(key, sha256, size, record)

    def fetch(
        self, found: SharedResult, store: ResultStore, probe: Callable[[Path], object] | None
    ) -> StoredFile | None:
        """Download ``found``'s blob into ``store`` (its temp dir, then :meth:`ResultStore.commit`
        with ``probe``), checking sha256 and size on the way. None when the blob is missing or
        does not match (reported once per key, never used).

        :raises SharedStoreDown: the store failed. :raises DiskFull, CacheError: local disk.
        """
        part = store.new_temp(f"shared-{found.key[:16]}-")
        try:
            try:
                with self._io("download a result") as fs:
                    digest, size = _copy_hashed(fs, self._path("blobs", found.sha256), part)
            except FileNotFoundError:
                self._report(found.key, "its blob is missing")
                return None
            except _LocalWriteError as exc:
                err = exc.error
                cls = (
                    DiskFull
                    if err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
                    else CacheError
                )
                raise cls(f"cannot save a shared result here: {err.strerror or err}") from None
            if digest != found.sha256 or size != found.size:
                self._bad_blobs.add(found.sha256)
                self._bad_keys.add(found.key)
                self._report(
                    found.key,
                    f"its blob does not match its record (sha256 {digest[:12]}, {size} bytes; "
                    f"recorded {found.sha256[:12]}, {found.size} bytes)",
                )
                return None
            try:
                return store.commit(part, expected_size=size, probe=probe)
            except DiskFull:
                raise
            except CacheError as exc:
                self._report(found.key, f"its file was refused ({exc})")
                return None
        finally:
            with contextlib.suppress(OSError):
                part.unlink()

    def _report(self, key: str, why: str) -> None:
        """A bad shared entry: one StorageWarning per key (it is ignored, never served)."""
        log.warning("goenhance_nb: shared result %s ignored: %s", key[:12], why)
        if key in self._reported:
            return
        self._reported.add(key)
        warnings.warn(
            f"shared store {self.url}: the result for {key[:12]} was ignored: {why}",
            StorageWarning,
            stacklevel=3,
        )

    def publish(self, record: ResultRecord) -> bool:
        """Publish ``record``'s file (blob first, then the index record). True when the index
        now holds this result; False when a different result was already published under the
        key (kept, reported once).

        :raises SharedStoreDown: the store failed. :raises OSError: the local file is gone.
        """
        sha256 = sha256_file(record.file)
        blob = self._path("blobs", sha256)
        with self._io("upload a result") as fs:
            if sha256 in self._bad_blobs or not fs.exists(blob):
                self._put_blob(fs, record.file, blob)
                self._bad_blobs.discard(sha256)
        prov = {k: v for k, v in record.to_json().items() if k in _PROVENANCE}
        data = {"format": FORMAT, "sha256": sha256, "size": record.size, "record": prov}
        path = self._path("results", f"{record.key}.json")
        with self._io("write an index record") as fs:
            try:
                self._create(fs, path, data)
                return True
            except FileExistsError:
                old = self._read_json(fs, path)
                if record.key in self._bad_keys:
                    # its blob failed the check here: our verified result replaces it
                    self._overwrite(fs, path, data)
                    self._bad_keys.discard(record.key)
                    log.warning("goenhance_nb: shared result %s replaced", record.key[:12])
                    return True
        if old is not None and old.get("sha256") == sha256:
            return True
        log.warning("goenhance_nb: shared store keeps another result for %s", record.key[:12])
        if record.key not in self._reported:
            self._reported.add(record.key)
            warnings.warn(
                f"shared store {self.url}: a different result is already published for "
                f"{record.key[:12]}; it is kept, this one stays in the local cache",
                StorageWarning,
                stacklevel=2,
            )
        return False

    def _put_blob(self, fs: Any, src: Path, blob: str) -> None:
        if not self._local:
            fs.put_file(str(src), blob)  # S3: visible only once the upload completes
            return
        parent = blob.rsplit("/", 1)[0]
        fs.makedirs(parent, exist_ok=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex}"
        fs.put_file(str(src), tmp)
        os.replace(tmp, blob)

    # -- claims ----------------------------------------------------------------------------
    def claim(self, key: str) -> Claim | ClaimInfo:
        """Claim ``key`` (exclusive create): our :class:`Claim`, or the :class:`ClaimInfo` of
        the claim already there.

        :raises SharedStoreDown: the store failed.
        """
        now = self.clock()
        mine = Claim(key, _owner(), now)
        path = self._path("claims", f"{key}.json")
        with self._io("claim a transformation") as fs:
            try:
                self._create(fs, path, self._claim_json(mine, now))
                return mine
            except FileExistsError:
                data = self._read_json(fs, path)
        info = _claim_info(key, data, now)
        if info is None:  # vanished meanwhile: try once more
            return self.claim(key)
        return info

    def read_claim(self, key: str) -> ClaimInfo | None:
        """The claim on ``key``, or None. :raises SharedStoreDown: the store failed."""
        with self._io("read a claim") as fs:
            data = self._read_json(fs, self._path("claims", f"{key}.json"))
        return _claim_info(key, data, self.clock()) if data is not None else None

    @staticmethod
    def _claim_json(claim: Claim, heartbeat: float) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "owner": claim.owner,
            "created": claim.created,
            "heartbeat": heartbeat,
            "job_id": claim.job_id,
            "cost": claim.cost,
            "submitted_at": claim.submitted_at,
        }

    def heartbeat(self, claim: Claim) -> None:
        """Renew our claim (with its job id when known). :raises SharedStoreDown."""
        with self._io("renew a claim") as fs:
            path = self._path("claims", f"{claim.key}.json")
            self._overwrite(fs, path, self._claim_json(claim, self.clock()))

    def record_job_id(
        self, claim: Claim, job_id: str, cost: int | None, submitted_at: float
    ) -> None:
        """Write the API's job id into our claim (others re-attach to it). :raises
        SharedStoreDown."""
        claim.job_id, claim.cost, claim.submitted_at = job_id, cost, submitted_at
        self.heartbeat(claim)

    def release(self, claim: Claim) -> None:
        """Remove our claim. :raises SharedStoreDown."""
        with self._io("release a claim") as fs, contextlib.suppress(FileNotFoundError):
            fs.rm_file(self._path("claims", f"{claim.key}.json"))

    def take_over(self, info: ClaimInfo) -> Claim | ClaimInfo:
        """Replace a stale claim by ours (only for an explicit resubmit); the claim found
        when another machine was quicker. :raises SharedStoreDown."""
        with self._io("take over a claim") as fs, contextlib.suppress(FileNotFoundError):
            fs.rm_file(self._path("claims", f"{info.key}.json"))
        return self.claim(info.key)


def _readable_record(record: dict[str, Any]) -> bool:
    """Whether the provenance of an index record makes a ResultRecord (with a local file)."""
    try:
        ResultRecord.from_json({**record, "path": "-", "sha": "-", "size": 0})
    except CacheError:
        return False
    return True


def _claim_info(key: str, data: dict[str, Any] | None, now: float) -> ClaimInfo | None:
    """A claim read from the store; an unreadable one counts as fresh and without a job id
    (its owner may be writing it)."""
    if data is None:
        return None

    def num(name: str, default: float | None) -> float | None:
        v = data.get(name)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    job_id, cost = data.get("job_id"), data.get("cost")
    return ClaimInfo(
        key=key,
        owner=str(data.get("owner") or "unknown"),
        created=num("created", now) or now,
        heartbeat=num("heartbeat", now) or now,
        job_id=job_id if isinstance(job_id, str) and job_id else None,
        cost=cost if isinstance(cost, int) and not isinstance(cost, bool) else None,
        submitted_at=num("submitted_at", None),
    )


def _copy_hashed(fs: Any, src: str, dest: Path) -> tuple[str, int]:
    """Stream ``src`` from the store into ``dest``; return its sha256 and size."""
    h = hashlib.sha256()
    size = 0
    try:
        out = dest.open("wb")
    except OSError as exc:
        raise _LocalWriteError(exc) from None
    with out, fs.open(src, "rb") as inp:
        while chunk := inp.read(_CHUNK):
            h.update(chunk)
            try:
                out.write(chunk)
            except OSError as exc:
                raise _LocalWriteError(exc) from None
            size += len(chunk)
    return h.hexdigest(), size
