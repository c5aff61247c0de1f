"""What the magics remember between cells, kept light (imported by ``%load_ext``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

__all__ = ["Presented", "execution_count"]


@dataclass
class Presented:
    """The keys of the jobs shown in the most recent cell (by execution count).

    Bounded: only the latest cell's keys are kept (a new execution count starts afresh), which
    is all the Job's display step asks ("was this job shown in the cell now running?").
    """

    count: int | None = None
    keys: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, key: str, count: int | None) -> None:
        """Note that ``key`` was shown in the cell ``count``."""
        with self._lock:
            if count != self.count:
                self.count, self.keys = count, set()
            self.keys.add(key)

    def shown(self, key: str, count: int | None) -> bool:
        """True when ``key`` was shown in the cell ``count``."""
        with self._lock:
            return count == self.count and key in self.keys


def execution_count(shell: InteractiveShell | None) -> int | None:
    """The shell's execution count (None without a shell)."""
    count = shell.execution_count if shell is not None else None
    return count if isinstance(count, int) else None
