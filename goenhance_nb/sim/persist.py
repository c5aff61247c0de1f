"""The simulator's state directory: atomic JSON files and the layout of `files/`.

JSON files are written atomically (temp file in the same directory, fsync, `os.replace`), so a
crash leaves either the old or the new content, never a torn file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json(path: Path, obj: Any, *, mode: int | None = None) -> None:
    """Write JSON atomically: a temp file in the same dir, fsync, then `os.replace`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default: Any) -> Any:
    """Read a JSON file, or return `default` when it is missing."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def files_path(state_dir: Path, name: str) -> Path | None:
    """The path of an uploaded file by its public name, or None for an unsafe name."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    return state_dir / "files" / name
