"""The job ledger: durable JSON entries, find by id/prefix, pickles refused, per-key locks."""

from __future__ import annotations

from pathlib import Path

import diskcache
import pytest

from goenhance_nb._errors import LedgerError, StorageWarning
from goenhance_nb._ledger import Ledger, LedgerEntry


def _entry(key: str, **kw: object) -> LedgerEntry:
    return LedgerEntry(
        key=key,
        state=kw.pop("state", "submitting"),  # type: ignore[arg-type]
        spec={"model": 2000, "duration": 3, "resolution": "720p", "seed": -1, "prompt": None},
        backend="simulated",
        input_hash="ih",
        **kw,
    )  # type: ignore[arg-type]


def test_entries_survive_reopen_and_update(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.put(_entry("abcdef0123", created=1.0))
    led.update("abcdef0123", job_id="uuid-1", state="submitted")
    led.close()
    again = Ledger(tmp_path)
    e = again.get("abcdef0123")
    assert e is not None and e.job_id == "uuid-1" and e.state == "submitted"
    assert not e.is_orphan and e.resumable
    with pytest.raises(LedgerError, match="no ledger entry"):
        again.update("missing", state="done")


def test_find_by_job_id_and_prefix(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.put(_entry("abcdef0123", job_id="uuid-1"))
    led.put(_entry("abcdef9999", job_id="uuid-2"))
    assert led.find("uuid-2").key == "abcdef9999"  # type: ignore[union-attr]
    assert led.find("abcdef0").key == "abcdef0123"  # type: ignore[union-attr]
    with pytest.raises(LedgerError, match="matches 2"):
        led.find("abcdef")
    assert led.find("abc") is None  # prefixes shorter than 6 never match
    assert led.find("zzzzzzzz") is None


def test_orphan_flag(tmp_path: Path) -> None:
    e = _entry("k")
    assert e.is_orphan and not e.resumable


def test_pickled_row_is_refused(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    led.put(_entry("good"))
    led.close()
    with diskcache.Cache(str(tmp_path / "ledger")) as plain:
        plain.set("evil", {"state": "submitted"})  # pickled by the default Disk
    led = Ledger(tmp_path)
    with pytest.raises(LedgerError, match="non-JSON row"):
        led.get("evil")
    # a listing skips the refused row and says so in one line (issue 12)
    with pytest.warns(StorageWarning, match=r"skipped 1 unreadable row in the job ledger"):
        assert [e.key for e in led.entries()] == ["good"]
    assert led.get("good") is not None


def test_lock_is_per_key_and_exclusive_across_objects(tmp_path: Path) -> None:
    led = Ledger(tmp_path)
    other = Ledger(tmp_path)
    with led.lock("k1"):
        lock2 = other.lock("k1")
        import filelock

        with pytest.raises(filelock.Timeout):
            lock2.acquire(timeout=0)
        with other.lock("k2"):  # a different key is free
            pass


def test_entry_from_json_tolerates_old_and_new_writers() -> None:
    old = {"key": "k", "state": "done", "spec": {}, "backend": "simulated", "input_hash": "ih"}
    e = LedgerEntry.from_json({**old, "extra": None, "created": None, "added_later": 1})
    assert (e.extra, e.created, e.model_version, e.job_id) == ({}, 0.0, "", None)
    assert LedgerEntry.from_json(e.to_json()) == e


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "malformed ledger entry: a list, not an object"),
        ({"key": "k"}, "malformed ledger entry: missing field 'state'"),
        (
            {"key": "k", "state": "done", "spec": [], "backend": "b", "input_hash": "i"},
            "malformed ledger entry: field 'spec' has the wrong type (list)",
        ),
        (
            {
                "key": "k",
                "state": "done",
                "spec": {},
                "backend": "b",
                "input_hash": "i",
                "cost": True,
            },
            "malformed ledger entry: field 'cost' has the wrong type (bool)",
        ),
    ],
)
def test_malformed_entry_is_a_ledger_error_naming_the_field(data: object, message: str) -> None:
    with pytest.raises(LedgerError) as info:
        LedgerEntry.from_json(data)
    assert str(info.value) == message
