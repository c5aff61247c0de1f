"""Content-addressed result store and the temp files downloads stream into.

Layout under the cache dir (docs/ARCHITECTURE.md section 3)::

    <cache_dir>/store/ab/<blake3>.mp4   finished results, named by content hash, read-only use
    <cache_dir>/tmp/<key>.<job>.part    an in-flight result download of one job (resumable)
    <cache_dir>/tmp/src-XXXX.part       an input URL download (unique name, never shared)

A result download streams into its job's ``.part`` file (so an interrupted download, even in
another process, can resume with a Range request; the engine holds the key's lock meanwhile, and
a different job's bytes never extend it), is size-checked, probed (:func:`probe_result`: a
playable video of the requested length, DECISIONS 28), hashed (streamed, flat memory), and
atomically renamed into the store with :meth:`ResultStore.commit`. Nothing that fails a check
enters the store: the part is deleted. The store never touches files outside its own directories
(``goenhance_outputs/`` belongs to the notebook, DECISIONS 13).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from goenhance_nb._errors import CacheError, DiskFull, GoEnhanceError
from goenhance_nb._fsutil import private_dir
from goenhance_nb._keys import hash_bytes, hash_file

__all__ = [
    "DURATION_TOLERANCE",
    "OUTPUTS_DIRNAME",
    "ResultStore",
    "StoredFile",
    "link_or_copy",
    "probe_result",
    "slugify",
]

#: A result may be this many seconds longer than requested (container rounding, last frame).
#: Shorter is fine: the API trims to the source, so a short source gives a short result.
DURATION_TOLERANCE = 1.0
_NO_SPACE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


#: The folder beside the notebook that holds its result files (DECISIONS 13).
OUTPUTS_DIRNAME = "goenhance_outputs"


def slugify(text: str, *, fallback: str = "result") -> str:
    """``"Oil Painting"`` -> ``"oil-painting"`` (lowercase ASCII letters, digits and dashes)."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return slug[:40].strip("-") or fallback


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file committed to the store: absolute ``path``, blake3 ``sha`` and ``size`` in bytes."""

    path: Path
    sha: str
    size: int


class ResultStore:
    """The content-addressed store of result files under ``<cache_dir>/store``."""

    def __init__(self, cache_dir: Path) -> None:
        """Create (mode 0700) ``store/`` and ``tmp/`` under ``cache_dir``.

        :raises OSError: when the directories cannot be created.
        """
        self.root = private_dir(Path(cache_dir) / "store")
        self.tmp_dir = private_dir(Path(cache_dir) / "tmp")

    def path_for(self, sha: str, suffix: str = ".mp4") -> Path:
        """Return where the file with content hash ``sha`` lives (it may not exist)."""
        return self.root / sha[:2] / f"{sha}{suffix}"

    def part_path(self, key: str, job_id: str | None = None) -> Path:
        """Return the temp file the result of ``job_id`` for request ``key`` streams into.

        Stable per (key, job), so a later run resumes it with Range; another job of the same
        key (after ``--force`` or a regeneration) gets another file.
        """
        if job_id is None:
            return self.tmp_dir / f"{key}.part"
        return self.tmp_dir / f"{key}.{hash_bytes(job_id.encode())[:16]}.part"

    def discard_part(self, key: str) -> None:
        """Delete every temp file of ``key`` (after a failed or unusable download)."""
        for part in self.tmp_dir.glob(f"{key}*.part"):
            with contextlib.suppress(OSError):
                part.unlink()

    def new_temp(self, prefix: str, suffix: str = ".part") -> Path:
        """Create an empty private file with a unique name in ``tmp/`` and return its path.

        Made with ``O_CREAT | O_EXCL`` (``tempfile.mkstemp``): two threads or processes never
        share it, and a symlink planted at the name is never followed. The caller deletes it.

        :raises DiskFull: no space left to create it. :raises CacheError: another OS error.
        """
        try:
            fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=self.tmp_dir)
        except OSError as exc:
            raise _os_error(exc, "create a temp file") from None
        os.close(fd)
        return Path(name)

    def commit(
        self,
        part: Path,
        *,
        expected_size: int | None = None,
        suffix: str = ".mp4",
        probe: Callable[[Path], object] | None = None,
    ) -> StoredFile:
        """Size-check, probe and hash ``part``, then atomically move it into the store.

        ``probe(part)`` (e.g. :func:`probe_result`) raises :class:`CacheError` when the file is
        unusable. An identical file already in the store is kept (the part is removed).

        :raises CacheError: when the part is missing, empty, its size differs from
            ``expected_size``, or ``probe`` refuses it (the part is deleted then, so nothing
            invalid is ever stored and the next try starts afresh).
        :raises DiskFull: the disk ran out while storing (the part is deleted).
        """
        try:
            size = part.stat().st_size
        except FileNotFoundError:
            raise CacheError(f"download temp file missing: {part.name}") from None
        try:
            if size == 0 or (expected_size is not None and size != expected_size):
                raise CacheError(
                    f"downloaded size {size} does not match the expected {expected_size} bytes"
                )
            if probe is not None:
                probe(part)
            with part.open("rb") as fh:
                os.fsync(fh.fileno())
            sha = hash_file(part)
            dest = self.path_for(sha, suffix)
            private_dir(dest.parent)
            os.chmod(part, 0o600)
            os.replace(part, dest)
        except OSError as exc:
            with contextlib.suppress(OSError):
                part.unlink()
            raise _os_error(exc, "store the download") from None
        except CacheError:
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        _fsync_dir(dest.parent)
        return StoredFile(dest, sha, size)

    def check(self, path: Path, *, size: int, sha: str | None = None) -> str:
        """Return ``"ok"``, ``"missing"`` or ``"damaged"`` for a stored file.

        The size is always compared; the full content hash only when ``sha`` is given.
        """
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            return "missing"
        if actual != size:
            return "damaged"
        if sha is not None and hash_file(path) != sha:
            return "damaged"
        return "ok"

    def remove(self, path: Path) -> bool:
        """Delete a file inside the store; return whether it existed.

        :raises CacheError: when ``path`` is not inside the store (never deletes outside it).
        """
        p = Path(path)
        try:
            p.resolve().relative_to(self.root.resolve())
        except ValueError:
            raise CacheError(f"refusing to delete a file outside the store: {p.name}") from None
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        return True

    def total_size(self) -> int:
        """Return the total size in bytes of the files in the store."""
        return sum(f.stat().st_size for f in self.root.glob("*/*") if f.is_file())


def video_duration(container: Any) -> float | None:
    """Seconds of an open PyAV ``container``: the container's duration, else its first video
    stream's, else ``None``."""
    if container.duration is not None:
        return float(container.duration / 1_000_000)
    vs = container.streams.video[0] if container.streams.video else None
    if vs is not None and vs.duration is not None and vs.time_base is not None:
        return float(vs.duration * vs.time_base)
    return None


def probe_result(path: Path, *, max_duration: float | None = None) -> float:
    """Check that ``path`` is a usable video and return its duration in seconds.

    The rule (DECISIONS 28): PyAV opens it; it has a video stream; its duration is known and
    ``0 < duration <= max_duration + DURATION_TOLERANCE`` (shorter than requested is accepted:
    the API trims to the source's length); every packet its index lists is present (a file cut
    short fails); its first video frame decodes. An HTML error page or a run of zeros fails
    the first step. PyAV is imported here only (``import goenhance_nb`` stays cheap).

    :raises CacheError: naming the first rule the file breaks.
    """
    import av  # heavy import, only when a download is checked

    try:
        container = av.open(str(path), mode="r")
    except Exception as exc:  # av.error.* (e.g. InvalidDataError) and OSError
        raise CacheError(f"not a video: PyAV cannot open it ({type(exc).__name__})") from None
    try:
        if not container.streams.video:
            raise CacheError("not a usable video: it has no video stream")
        vs = container.streams.video[0]
        duration = video_duration(container)
        if duration is None or duration <= 0:
            raise CacheError("not a usable video: its duration is unknown or zero")
        if max_duration is not None and duration > max_duration + DURATION_TOLERANCE:
            raise CacheError(
                f"not the requested video: it is {duration:.1f}s long, {max_duration:g}s were requested"
            )
        expected = vs.frames or 0
        packets = 0
        decoded = False
        try:
            for packet in container.demux(vs):
                if not packet.size:
                    continue  # the demuxer's final flush packet
                packets += 1
                if not decoded:
                    decoded = bool(packet.decode())
            if not decoded:
                decoded = bool(vs.codec_context.decode(None))
        except Exception as exc:  # av.error.*: damaged data
            raise CacheError(
                f"not a usable video: its data is damaged ({type(exc).__name__})"
            ) from None
        if expected and packets < expected:
            raise CacheError(
                f"not a complete video: {packets} of its {expected} frames are present"
            )
        if not decoded:
            raise CacheError("not a usable video: no frame in it decodes")
        return duration
    finally:
        container.close()


def _os_error(exc: OSError, doing: str) -> CacheError:
    if exc.errno in _NO_SPACE:
        return DiskFull(f"no space left on the disk to {doing} ({exc.strerror or exc})")
    return CacheError(f"cannot {doing}: {exc.strerror or exc}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# -- files beside the notebook (goenhance_outputs/): link or copy, never follow a symlink --
def link_or_copy(src: Path, dest: Path) -> Path:
    """Make ``dest`` hold the bytes of ``src``: a hard link when possible, else a copy.

    An existing regular file at ``dest`` that is already the same file (same inode, or same
    size and bytes) is kept. Writes through a new temp name in ``dest``'s folder (a hard link
    made under a fresh random name, or a copy into a file made with ``O_EXCL``), then
    ``os.replace``: a reader never sees half a file, and no symlink is ever followed: one
    planted at a temp name makes that name unusable, one at ``dest`` (dangling or not) is
    replaced by the file, its target left untouched.
    Raises :class:`GoEnhanceError` when ``src`` is missing or ``dest`` cannot be written.
    """
    src = Path(src)
    dest = Path(dest)
    try:
        if is_linked(src, dest) or (
            _is_regular_file(dest)
            and dest.stat().st_size == src.stat().st_size
            and _same_bytes(src, dest)
        ):
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = _link_temp(src, dest)
        if tmp is None:
            fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
            tmp = Path(name)
            try:
                with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
                    shutil.copyfileobj(inp, out, 1 << 20)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        _replace(tmp, dest)
    except FileNotFoundError as exc:
        raise GoEnhanceError(f"result file missing: {exc.filename}") from None
    except OSError as exc:
        raise GoEnhanceError(f"cannot write {dest}: {exc.strerror or exc}") from None
    return dest


def is_linked(src: Path, dest: Path) -> bool:
    """Whether ``dest`` is a regular file (never a symlink) that is ``src`` itself (the same
    inode): nothing to link or copy."""
    try:
        return _is_regular_file(dest) and os.path.samefile(src, dest)
    except OSError:
        return False


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _link_temp(src: Path, dest: Path) -> Path | None:
    """Hard-link ``src`` under a fresh random name beside ``dest``; None when linking is not
    possible here (another filesystem, no permission). ``link()`` never follows or replaces
    an existing name."""
    for _ in range(16):
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.tmp")
        try:
            os.link(src, tmp)
        except FileExistsError:
            continue
        except FileNotFoundError:
            raise
        except OSError:
            return None
        return tmp
    return None


def _replace(tmp: Path, dest: Path) -> None:
    """``os.replace(tmp, dest)``; ``tmp`` (our own random name) never outlives the call, also
    when ``dest`` was meanwhile made a link to the same inode (a racing ``link_or_copy`` of the
    same result): POSIX ``rename`` then does nothing and leaves both names."""
    try:
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _same_bytes(a: Path, b: Path, chunk: int = 1 << 20) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if x != y:
                return False
            if not x:
                return True
