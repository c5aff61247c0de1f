"""Small filesystem helpers with no dependencies beyond the standard library.

Kept apart so that modules the notebook layer imports at ``%load_ext`` (output naming and
linking) do not pull in diskcache and SQLite.
"""

from __future__ import annotations

import stat
from pathlib import Path

__all__ = ["private_dir"]


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
