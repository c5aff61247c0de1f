"""Validate and hash inputs -> :class:`InputRef`; the :data:`Uploader` protocol (DECISIONS 10).

Local validation happens before any HTTP call: parameters (duration 3-30 or None, resolution
540p/720p, prompt <= 500 characters) and the source file (exists, PyAV opens it, has a video
stream, is MP4 or MOV, and is at most ``max_upload_mb`` for the real API). The duration of a
job is settled by :func:`resolve_duration` from the probed length of the input: None means the
input's length (rounded down, 3-30); a duration longer than the input, or an input shorter than
3 s, is refused (:class:`~goenhance_nb._errors.InputError`) before anything is sent. File hashes (blake3, streamed) and PyAV probes are memoised by ``(device,
inode, size, mtime_ns)`` in ``<cache_dir>/hashes`` so re-running on a large file neither re-reads
nor re-opens it.

The bytes uploaded are the bytes hashed (issue 12, point 8): :func:`snapshot_for_upload` copies
the file into a private temp dir while hashing the copy, and refuses with an
:class:`~goenhance_nb._errors.InputError` when the copy's hash is not the one validated (the file
changed after ``transform`` hashed it). Only that copy is uploaded. Upload URLs are reused for
the same content for at most :data:`UPLOAD_MEMO_TTL` seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import stat
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from goenhance_nb._errors import InputError, InputWarning, brief
from goenhance_nb._jsondisk import JSONOnlyDisk, PickledRowError, open_json_cache, private_dir
from goenhance_nb._keys import hash_file
from goenhance_nb._records import Field, dump_fields, read_fields
from goenhance_nb._store import video_duration

__all__ = [
    "DEFAULT_RESOLUTION",
    "DURATION_SLACK",
    "MAX_DURATION",
    "MIN_DURATION",
    "RESOLUTIONS",
    "UPLOAD_MEMO_TTL",
    "HashMemo",
    "InputRef",
    "Snapshot",
    "Uploader",
    "default_duration",
    "inspect_file",
    "is_url",
    "probe_video",
    "resolve_duration",
    "sim_url_matches",
    "snapshot_for_upload",
    "upload_memo_url",
    "validate_params",
    "warn_if_short",
]

#: ``fn(path) -> public https URL`` that makes a local file reachable by the real API. ``path``
#: is a private copy of the validated file (same file name) that is deleted after the call; the
#: URL must stay readable while the API may fetch it. A URL is reused for the same content for
#: at most :data:`UPLOAD_MEMO_TTL` seconds.
Uploader = Callable[[Path], str]

#: Seconds an upload URL is reused for the same content (URLs an uploader returns may be
#: temporary, e.g. presigned; a re-upload costs far less than a job whose input URL expired).
UPLOAD_MEMO_TTL = 900.0

RESOLUTIONS = ("540p", "720p")
MIN_DURATION, MAX_DURATION = 3, 30
MAX_PROMPT = 500
#: The resolution used when none is given (magic, ``transform``, panel).
DEFAULT_RESOLUTION = "720p"
#: Seconds an input may fall short of a whole second and still count as it (a 4 s clip often
#: probes as 3.96 s: frame and container rounding).
DURATION_SLACK = 0.05


@dataclass(frozen=True, slots=True)
class InputRef:
    """A validated input: ``kind`` is ``"file"`` or ``"url"``; ``content_hash`` is blake3 hex of
    the bytes; ``name`` is a display name (file name, never a URL query); ``path`` the local file
    (for ``url`` inputs, the downloaded copy if kept); ``url`` the original URL for url inputs."""

    kind: str
    name: str
    content_hash: str
    size: int
    path: str | None = None
    url: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    container: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict of all fields."""
        return dump_fields(self, _INPUT_REF_FIELDS)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> InputRef:
        """Build from :meth:`to_json` output: every field as written, ``None`` when absent
        (unknown fields are ignored). Unchecked on purpose: it is a side record of a ledger
        entry, and a resume must not fail on it.

        :raises FieldError: ``d`` is not an object.
        """
        return cls(**read_fields(d, _INPUT_REF_FIELDS))


#: The JSON form of an :class:`InputRef` (values kept as written; see ``from_json``).
_INPUT_REF_FIELDS: Mapping[str, Field] = {
    name: Field(object, None)
    for name in (
        "kind",
        "name",
        "content_hash",
        "size",
        "path",
        "url",
        "duration",
        "width",
        "height",
        "container",
    )
}


def is_url(source: object) -> bool:
    """True when ``source`` is an ``http``/``https`` URL string."""
    return isinstance(source, str) and urlsplit(source).scheme in ("http", "https")


def validate_params(*, duration: object, resolution: object, prompt: object, seed: object) -> None:
    """Check generate parameters locally (``duration`` None: the input's length, settled later
    by :func:`resolve_duration`).

    :raises InputError: duration neither None nor an int in 3-30, resolution not 540p/720p,
        prompt not a string of at most 500 characters, seed not an int.
    """
    if duration is None:
        pass
    elif isinstance(duration, bool) or not isinstance(duration, int):
        raise InputError(f"duration must be a whole number of seconds, got {duration!r}")
    elif not MIN_DURATION <= duration <= MAX_DURATION:
        raise InputError(
            f"duration must be between {MIN_DURATION} and {MAX_DURATION} seconds, got {duration}"
        )
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT:
            raise InputError(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer (-1 = random), got {seed!r}")


def default_duration(length: float | None) -> int | None:
    """The duration a job gets when none is given: the input's ``length`` in seconds, rounded
    down (within :data:`DURATION_SLACK` of the next second counts as it), clamped to
    ``MIN_DURATION``-``MAX_DURATION``; None when the length is unknown."""
    if length is None:
        return None
    return max(MIN_DURATION, min(MAX_DURATION, int(length + DURATION_SLACK)))


def resolve_duration(name: str, length: float | None, duration: int | None) -> int:
    """The duration to send for an input ``name`` of ``length`` seconds (None: unknown).

    ``duration`` None -> :func:`default_duration`; for an input longer than ``MAX_DURATION``
    that is the maximum, said in an :class:`~goenhance_nb._errors.InputWarning`. An explicit
    ``duration`` longer than the input is refused, not clamped: the API charges the seconds
    asked for and returns a video as long as the input.

    :raises InputError: the input is shorter than ``MIN_DURATION``; ``duration`` is longer
        than the input; no ``duration`` and the input's length is unknown.
    """
    if length is not None and length + DURATION_SLACK < MIN_DURATION:
        raise InputError(
            f"{name} is {length:.1f} s long; the API transforms at least {MIN_DURATION} s, "
            "so use a longer input"
        )
    if duration is None:
        resolved = default_duration(length)
        if resolved is None:
            raise InputError(
                f"cannot tell how long {name} is; give the duration "
                f"({MIN_DURATION}-{MAX_DURATION} seconds)"
            )
        if length is not None and length >= MAX_DURATION + 1:
            warnings.warn(
                f"{name} is {length:.1f} s long; the duration defaults to {MAX_DURATION} s, the "
                "API's maximum",
                InputWarning,
                stacklevel=4,
            )
        return resolved
    if length is not None and duration > length + DURATION_SLACK:
        fits = default_duration(length)
        give = (
            f"give {fits} or less"
            if fits is not None and fits > MIN_DURATION
            else (f"give {MIN_DURATION}")
        )
        raise InputError(
            f"duration {duration} is longer than the input {name} ({length:.1f} s); {give}, "
            "or leave it out to use the input's length"
        )
    return duration


def probe_video(path: Path) -> dict[str, Any]:
    """Open ``path`` with PyAV and return ``{"duration", "width", "height", "container"}``.

    :raises InputError: when PyAV cannot open it, it has no video stream, or it is not MP4/MOV.
    """
    import av  # heavy import, only when validating

    try:
        container = av.open(str(path), mode="r")
    except Exception as exc:  # av.error.* and OSError
        raise InputError(f"cannot open {path.name} as a video ({type(exc).__name__})") from None
    try:
        fmt = container.format.name or ""
        if not {"mp4", "mov"} & set(fmt.split(",")):
            raise InputError(f"{path.name} is a {fmt or 'unknown'} file; MP4 or MOV is required")
        if not container.streams.video:
            raise InputError(f"{path.name} has no video stream")
        vs = container.streams.video[0]
        duration = video_duration(container)
        return {
            "duration": duration,
            "width": vs.codec_context.width,
            "height": vs.codec_context.height,
            "container": fmt,
        }
    finally:
        container.close()


#: Memo rows holding ``{"sha", "probe"}``: a hash with its :func:`probe_video` result (the
#: bare memo key holds the hash alone, for :meth:`HashMemo.hash`).
_PROBE_PREFIX = "probe:"
_RECENT_MAX = 256  # HashMemo's in-process inspect() entries
_PROBE_FIELDS = {"duration", "width", "height", "container"}


class HashMemo:
    """blake3 file hashes and PyAV probes memoised by ``(device, inode, size, mtime_ns)`` in
    ``<cache_dir>/hashes``."""

    def __init__(self, cache_dir: Path) -> None:
        """Open the memo (a damaged one is moved aside, see ``open_json_cache``).

        :raises InputError: the memo database cannot be opened.
        """
        try:
            self._db = open_json_cache(
                Path(cache_dir) / "hashes",
                what="file-hash memo",
                disk=JSONOnlyDisk,
                size_limit=2**26,
                cull_limit=10,
            )
        except (sqlite3.Error, OSError) as exc:
            raise InputError(f"cannot open the file-hash memo: {exc}") from None
        self.reads = 0  # number of full reads performed (for tests / metrics)
        self.probes = 0  # number of PyAV probes performed (for tests / metrics)
        # what inspect() read or wrote lately, by the same (device, inode, size, mtime_ns):
        # a repeat in this process skips the database read (bounded, oldest dropped first)
        self._recent: dict[str, tuple[str, dict[str, Any]]] = {}
        self._recent_lock = threading.Lock()

    @staticmethod
    def _memo_key(path: Path, st: os.stat_result | None = None) -> str:
        if st is None:
            try:
                st = os.stat(path)
            except OSError as exc:
                raise InputError(f"cannot read {Path(path).name}: {exc.strerror}") from None
        return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"

    def inspect(self, path: Path, st: os.stat_result | None = None) -> tuple[str, dict[str, Any]]:
        """Return ``(blake3 hex, probe_video info)`` of ``path``: one ``stat`` and one memo read
        when the file is unchanged; otherwise it is probed (PyAV), hashed (:meth:`hash`) and
        both are remembered together under the same ``(device, inode, size, mtime_ns)``.

        The pair is remembered only when the file did not change while it was probed and
        hashed; a failed probe is never remembered (it raises again next time).

        ``st``: the caller's ``os.stat(path)`` made just now (saves a second one).

        :raises InputError: the file cannot be read, or see :func:`probe_video`.
        """
        memo_key = self._memo_key(path, st)
        with self._recent_lock:
            seen = self._recent.get(memo_key)
        if seen is not None:
            return seen[0], dict(seen[1])
        try:
            cached = self._db.get(_PROBE_PREFIX + memo_key)
        except PickledRowError:
            cached = None
        if isinstance(cached, dict):
            digest, info = cached.get("sha"), cached.get("probe")
            if isinstance(digest, str) and isinstance(info, dict) and set(info) == _PROBE_FIELDS:
                self._remember(memo_key, digest, info)
                return digest, info
        self.probes += 1
        info = probe_video(Path(path))
        digest = self.hash(path)
        if self._memo_key(path) == memo_key:
            self._db.set(_PROBE_PREFIX + memo_key, {"sha": digest, "probe": info})
            self._remember(memo_key, digest, info)
        return digest, info

    def _remember(self, memo_key: str, digest: str, info: dict[str, Any]) -> None:
        with self._recent_lock:
            self._recent[memo_key] = (digest, dict(info))
            while len(self._recent) > _RECENT_MAX:
                del self._recent[next(iter(self._recent))]

    def forget(self, path: Path) -> None:
        """Drop the memoised hash for ``path`` as it is now (its content changed unseen).

        Closes the calling thread's database handle afterwards (it may be a worker thread);
        the memo reopens one lazily where it is used next.
        """
        with contextlib.suppress(OSError, InputError, PickledRowError, sqlite3.Error):
            memo_key = self._memo_key(path)
            with self._recent_lock:
                self._recent.pop(memo_key, None)
            self._db.delete(memo_key)
            self._db.delete(_PROBE_PREFIX + memo_key)
        self._db.close()

    def hash(self, path: Path) -> str:
        """Return the blake3 hex of ``path``, reading it only if unseen or changed.

        :raises InputError: when the file cannot be read, or changed while it was read.
        """
        memo_key = self._memo_key(path)
        try:
            cached = self._db.get(memo_key)
        except (PickledRowError, sqlite3.DatabaseError):
            cached = None
        if isinstance(cached, str):
            return cached
        try:
            digest = hash_file(Path(path))
        except OSError as exc:
            raise InputError(f"cannot read {Path(path).name}: {exc.strerror}") from None
        self.reads += 1
        if self._memo_key(path) == memo_key:  # not replaced (renamed over) while it was read
            with contextlib.suppress(sqlite3.DatabaseError):  # a memo only: never fails a run
                self._db.set(memo_key, digest)
        return digest

    def close(self) -> None:
        """Close the memo database."""
        self._db.close()


def warn_if_short(
    label: str, src_dur: float | None, duration: int | None, *, stacklevel: int = 4
) -> None:
    """Warn (:class:`InputWarning`) when the source is shorter than the requested ``duration``."""
    if duration is not None and src_dur is not None and src_dur + 0.05 < duration:
        warnings.warn(
            f"{label} is {src_dur:.1f}s long, shorter than the requested duration {duration}s",
            InputWarning,
            stacklevel=stacklevel,
        )


def inspect_file(
    path: Path,
    memo: HashMemo | None,
    *,
    duration: int | None = None,
    max_bytes: int | None = None,
    kind: str = "file",
    url: str | None = None,
    name: str | None = None,
) -> InputRef:
    """Validate a local video file and return its :class:`InputRef`.

    Warns (:class:`~goenhance_nb._errors.InputWarning`, a ``UserWarning``) when the source is
    shorter than ``duration``. ``memo`` None hashes the file afresh without remembering it (for
    a temp copy that is deleted afterwards).

    :raises InputError: file missing / not a regular file / unreadable, larger than
        ``max_bytes``, not openable by PyAV, without a video stream, or not MP4/MOV.
    """
    p = Path(path).expanduser()
    label = name or p.name
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"input file not found: {brief(str(p), quote=False)}") from None
    except (OSError, ValueError) as exc:  # e.g. ENAMETOOLONG, ELOOP, a NUL in the name
        reason = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise InputError(f"cannot open the input {brief(str(p), quote=False)}: {reason}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"input is not a regular file: {brief(str(p), quote=False)}")
    size = st.st_size
    if max_bytes is not None and size > max_bytes:
        raise InputError(
            f"{label} is {size / 1e6:.1f} MB; the API accepts at most {max_bytes / 1e6:.0f} MB "
            "(raise Settings.max_upload_mb if your plan allows more)"
        )
    if memo is not None:
        digest, info = memo.inspect(p, st)
    else:
        info = probe_video(p)
        try:
            digest = hash_file(p)
        except OSError as exc:
            raise InputError(f"cannot read {label}: {exc.strerror}") from None
    src_dur = info["duration"]
    warn_if_short(label, src_dur, duration, stacklevel=4)
    return InputRef(
        kind=kind,
        name=label,
        content_hash=digest,
        size=size,
        # absolute (lexically, no file-system calls) unless ".." could go through a symlink
        path=str(p.resolve()) if ".." in p.parts else os.path.abspath(p),
        url=url,
        duration=src_dur,
        width=info["width"],
        height=info["height"],
        container=info["container"],
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A private copy of a validated input: ``path`` (same file name as the source, in its own
    temp dir), the ``sha256`` and ``size`` of exactly those bytes."""

    path: Path
    sha256: str
    size: int

    def discard(self) -> None:
        """Delete the copy and its temp dir."""
        shutil.rmtree(self.path.parent, ignore_errors=True)


def snapshot_for_upload(source: Path, expected_hash: str, tmp_dir: Path) -> Snapshot:
    """Copy ``source`` into a new private dir under ``tmp_dir`` while hashing the copied bytes.

    Returns the copy only when its blake3 equals ``expected_hash`` (the hash the request key was
    made from), so the bytes uploaded are the bytes hashed; the caller uploads ``path`` and then
    calls :meth:`Snapshot.discard`. The copy is made with ``mkdtemp`` (mode 0700, no symlink
    followed), in one pass of :func:`~goenhance_nb._keys.hash_file` (which also refuses a
    source that changes while it is read).

    :raises InputError: the file is gone or unreadable, or its content changed since it was
        validated (nothing is uploaded; the caller sends no generate request).
    """
    src = Path(source)
    folder = Path(tempfile.mkdtemp(prefix="upload-", dir=private_dir(Path(tmp_dir))))
    dest = folder / (src.name or "input.mp4")
    sha = hashlib.sha256()
    try:
        with open(dest, "xb") as fout:
            digest = hash_file(src, sha.update, fout.write)
            size = fout.tell()
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(f"cannot read {src.name} for upload: {exc.strerror}") from None
    if digest != expected_hash:
        shutil.rmtree(folder, ignore_errors=True)
        raise InputError(
            f"{src.name} changed after it was validated; nothing was uploaded or charged. "
            "Run it again to transform the new content"
        )
    return Snapshot(dest, sha.hexdigest(), size)


def upload_memo_url(memo: object, *, simulated: bool) -> str | None:
    """The URL of an upload memo ``{"url", "sha256", "size"}`` if it can be trusted, else None.

    A bare URL string (the old memo format, which could map a hash to other bytes) is not
    trusted. For the simulator the URL's file name carries the sha256 of the stored bytes, so
    it must name the memo's ``sha256``.
    """
    if not isinstance(memo, dict):
        return None
    url, sha = memo.get("url"), memo.get("sha256")
    if not is_url(url) or not isinstance(sha, str) or not sha:
        return None
    assert isinstance(url, str)
    if simulated and not sim_url_matches(url, sha):
        return None
    return url


def sim_url_matches(url: str, sha256: str) -> bool:
    """True when a simulator upload URL (``.../sim/files/<sha256>.<ext>``) names ``sha256``."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    return name.split(".", 1)[0] == sha256
