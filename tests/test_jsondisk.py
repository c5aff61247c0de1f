"""JsonDb: how the ledger and the result cache open their databases and word their failures."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import diskcache
import pytest

from goenhance_nb._errors import CacheError, LedgerError
from goenhance_nb._jsondisk import JsonDb, PickledRowError

LEDGER = JsonDb(LedgerError, "job ledger", "the job ledger at /x", translate_all=True)
CACHE = JsonDb(CacheError, "result cache index", "the result cache at /y")
DAMAGED = sqlite3.DatabaseError("database disk image is malformed")
LOCKED = sqlite3.OperationalError("database is locked")


@pytest.mark.parametrize(
    ("db", "raised", "message"),
    [
        (LEDGER, PickledRowError("refusing a pickled row"), "job ledger holds a non-JSON row"),
        (CACHE, PickledRowError("refusing"), "result cache index holds a non-JSON row: refusing"),
        (LEDGER, DAMAGED, "the job ledger at /x is damaged (database disk image is malformed)"),
        (CACHE, DAMAGED, "the result cache at /y is damaged (database disk image is malformed)"),
        (LEDGER, diskcache.Timeout(), "job ledger unavailable: database is locked"),
        (LEDGER, LOCKED, "job ledger unavailable: database is locked"),
        (LEDGER, OSError("disk full"), "job ledger unavailable: disk full"),
    ],
)
def test_guard_translates_into_one_line(db: JsonDb, raised: Exception, message: str) -> None:
    with pytest.raises(db.error) as info, db.guard():
        raise raised
    assert str(info.value).startswith(message)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("raised", [diskcache.Timeout(), LOCKED, OSError("disk full")])
def test_guard_without_translate_all_lets_other_failures_through(raised: Exception) -> None:
    with pytest.raises(type(raised)), CACHE.guard():
        raise raised


def test_open_is_unbounded_json_only_and_reports_failure_as_its_error(tmp_path: Path) -> None:
    cache = CACHE.open(tmp_path / "db")
    try:
        assert cache.eviction_policy == "none" and cache.size_limit == 2**62
        with pytest.raises(TypeError):
            cache.set(("not", "a", "str"), 1)
    finally:
        cache.close()
    (tmp_path / "file").write_text("a file, not a directory")
    with pytest.raises(CacheError, match=r"^cannot open the result cache index: "):
        CACHE.open(tmp_path / "file" / "db")
