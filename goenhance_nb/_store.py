"""Content-addressed result store and the temp files downloads stream into.

Layout under the cache dir (docs/ARCHITECTURE.md section 3)::

    <cache_dir>/store/ab/<blake3>.mp4   finished results, named by content hash, read-only use
    <cache_dir>/tmp/<key>.part          an in-flight download for a request key (resumable)

A download streams into the key's ``.part`` file (so an interrupted download, even in another
process, can resume with a Range request), is size-checked, hashed (streamed, flat memory), and
atomically renamed into the store with :meth:`ResultStore.commit`. The store never touches files
outside its own directories (``goenhance_outputs/`` belongs to the notebook, DECISIONS 13).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from goenhance_nb._errors import CacheError
from goenhance_nb._jsondisk import private_dir
from goenhance_nb._keys import hash_file

__all__ = ["ResultStore", "StoredFile"]


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

    def part_path(self, key: str) -> Path:
        """Return the temp file a download for request ``key`` streams into (stable per key)."""
        return self.tmp_dir / f"{key}.part"

    def discard_part(self, key: str) -> None:
        """Delete the temp file of ``key`` if any (after a failed or unusable download)."""
        with contextlib.suppress(FileNotFoundError):
            self.part_path(key).unlink()

    def commit(
        self, part: Path, *, expected_size: int | None = None, suffix: str = ".mp4"
    ) -> StoredFile:
        """Size-check and hash ``part``, then atomically move it into the store.

        An identical file already in the store is kept (the part is removed).

        :raises CacheError: when the part is missing, empty, or its size differs from
            ``expected_size`` (the part is deleted then, so the next try starts afresh).
        """
        try:
            size = part.stat().st_size
        except FileNotFoundError:
            raise CacheError(f"download temp file missing: {part.name}") from None
        if size == 0 or (expected_size is not None and size != expected_size):
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
            raise CacheError(
                f"downloaded size {size} does not match the expected {expected_size} bytes"
            )
        with part.open("rb") as fh:
            os.fsync(fh.fileno())
        sha = hash_file(part)
        dest = self.path_for(sha, suffix)
        private_dir(dest.parent)
        os.chmod(part, 0o600)
        os.replace(part, dest)
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


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
