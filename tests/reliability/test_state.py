"""Issue 12 points 8, 10, 12, 15: state that must stay true across files changing under us,
sessions being replaced, damaged ledger/index databases, and warnings reaching the notebook.

Every test runs the real simulator over loopback; corruptions are written for real (sqlite3 rows,
bytes overwritten in the database file).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from workers.support import wait_until

import goenhance_nb
from goenhance_nb import _session
from goenhance_nb._errors import BudgetExceeded, InputError
from goenhance_nb._magics import GoEnhanceMagics
from goenhance_nb._samples import sample_clip
from goenhance_nb._session import Session
from goenhance_nb._settings import Settings

MODE_RAW, MODE_PICKLE = 1, 4  # diskcache's row modes


# -- helpers -----------------------------------------------------------------------------------
def _settings(sim: Any, cache_dir: Path, **kw: Any) -> Settings:
    explicit = {
        "api_key": sim.api_key,
        "base_url": sim.base_url,
        "cache_dir": cache_dir,
        "poll_interval": 0.05,
        **kw,
    }
    return Settings.resolve(explicit=explicit, env={})


def _until(pred: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    wait_until(pred, what, timeout, step=0.02)


def _uploads(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.requests("/sim/uploads") if r["method"] == "PUT"]


def _db_fds(cache_dir: Path) -> set[int]:
    """This process's open file descriptors on SQLite files under ``cache_dir``."""
    out: set[int] = set()
    root = str(cache_dir.resolve())
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
        if target.startswith(root) and target.endswith((".db", ".db-wal", ".db-shm")):
            out.add(int(name))
    return out


def _engine_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "goenhance-engine"}


@pytest.fixture
def ip() -> Iterator[InteractiveShell]:
    """The shared shell with the extension freshly loaded and no %config left from other tests
    (%config also stores its values in the shell's config, which a new magics instance reads)."""
    shell = InteractiveShell.instance()
    shell.config.pop("GoEnhanceMagics", None)
    shell.run_line_magic("reload_ext", "goenhance_nb")
    yield shell
    shell.run_line_magic("unload_ext", "goenhance_nb")
    shell.config.pop("GoEnhanceMagics", None)


def magics(ip: InteractiveShell) -> GoEnhanceMagics:
    return next(c for c in ip.configurables if isinstance(c, GoEnhanceMagics))


@pytest.fixture
def nb_clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 3 s clip beside the "notebook" (the working directory)."""
    monkeypatch.chdir(tmp_path)
    return sample_clip(tmp_path / "sample.mp4", seconds=3.0)


# -- point 8: the bytes uploaded are the bytes hashed -------------------------------------------
@pytest.mark.slow
def test_file_replaced_before_its_upload_is_refused_before_generate(
    sim: Any, tmp_path: Path
) -> None:
    first = sample_clip(tmp_path / "first.mp4", seconds=3.0, seed=1)
    target = sample_clip(tmp_path / "target.mp4", seconds=3.0, seed=2)
    replacement = sample_clip(tmp_path / "other.mp4", seconds=3.0, seed=3).read_bytes()
    sim.config(pending_seconds=600)  # the first job holds the only local slot until released
    s = Session(_settings(sim, tmp_path / "cache"), queue_limit=1)
    try:
        holder = s.transform(first, 2000, duration=3, resolution="540p")
        _until(lambda: holder.id is not None, "the first job's id")
        job = s.transform(target, 2000, duration=3, resolution="540p")  # validated + hashed
        _until(lambda: str(job.state) == "LOCAL_QUEUE", "the second job to wait for a slot")
        target.write_bytes(replacement)  # replaced after hashing, before its upload
        holder.cancel_watch()  # frees the slot: the second job now uploads
        with pytest.raises(InputError) as info:
            job.result(30)
        msg = str(info.value)
        assert "target.mp4" in msg and "changed" in msg and "\n" not in msg
        assert sim.generate_calls() == 1  # only the first job: nothing sent, nothing charged
        assert len(_uploads(sim)) == 1  # the changed bytes were never uploaded
        assert s.ledger.get(job.key) is None and s.cache.list() == []

        # running it again validates the new content and uploads exactly those bytes
        sim.config(pending_seconds=0.3)
        again = s.transform(target, 2000, duration=3, resolution="540p")
        assert again.key != job.key
        again.result(120)
        entry = s.ledger.get(again.key)
        assert entry is not None and entry.reference_url is not None
        name = entry.reference_url.rsplit("/", 1)[1]
        assert name.split(".")[0] == hashlib.sha256(replacement).hexdigest()
        assert sim.generate_calls() == 2
    finally:
        s.close()


@pytest.mark.slow
def test_upload_memos_expire_and_a_legacy_memo_is_not_trusted(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    from goenhance_nb._inputs import UPLOAD_MEMO_TTL

    other = sample_clip(tmp_path / "other.mp4", seconds=3.0, seed=9)
    s = Session(_settings(sim, tmp_path / "cache"))
    try:
        wrong_url = s.engine.run(s.client.sim_upload(other))  # a URL holding other bytes
        ref = s.inspect(clip)
        name = f"upload:{s.base_url}:{ref.content_hash}"
        s.cache.meta_set(name, wrong_url)  # the old memo format: a bare URL, unverifiable
        sim.clear_requests()
        s.transform(clip, 2000, duration=3, resolution="540p").result(120)
        assert len(_uploads(sim)) == 1  # re-uploaded instead of trusting the bare memo
        (entry,) = s.ledger_entries()
        want = hashlib.sha256(clip.read_bytes()).hexdigest()
        assert entry.reference_url is not None and want in entry.reference_url

        # a fresh memo is reused; an expired one is not
        s.transform(clip, 2004, duration=3, resolution="540p").result(120)
        assert len(_uploads(sim)) == 1
        memo = s.cache.meta_get(name)
        s.cache.meta_set(name, memo, now=time.time() - UPLOAD_MEMO_TTL - 1)
        s.transform(clip, 2006, duration=3, resolution="540p").result(120)
        assert len(_uploads(sim)) == 2
    finally:
        s.close()


# -- point 10: settings changes keep spend and budget, close the old session -------------------
@pytest.mark.slow
def test_config_change_closes_the_old_session_and_keeps_spend_and_budget(
    ip: InteractiveShell,
    sim: Any,
    sim_env: dict[str, str],
    fresh_session: None,
    nb_clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GOENHANCE_BUDGET", "20")
    ip.run_line_magic("goenhance", "run sample.mp4 --style 2000 -d 3 -r 540p --wait")
    m = magics(ip)
    old = m.session()
    assert old.usage.spent == 15
    threads = _engine_threads()
    assert threads and _db_fds(old.cache_dir)

    ip.run_line_magic("config", "GoEnhanceMagics.poll_interval = 0.1")

    new = m.session()
    assert new is not old and new.settings.poll_interval == 0.1
    assert goenhance_nb.get_session() is new
    assert not any(t.is_alive() for t in threads)  # the old engine thread stopped
    assert new.usage.spent == 15 and new.usage.budget == 20
    with pytest.raises(BudgetExceeded):  # 15 spent + 15 more would exceed 20
        ip.run_line_magic("goenhance", "run sample.mp4 --style 2004 -d 3 -r 540p --wait")
    assert sim.generate_calls() == 1
    new.close()
    # no SQLite handle of either session is left open (the old one's would stay: it was
    # never closed, and its engine thread's connections are kept alive by reference cycles)
    assert _db_fds(old.cache_dir) == set()


@pytest.mark.slow
def test_config_change_is_refused_while_a_job_runs_and_the_job_stays_resumable(
    ip: InteractiveShell,
    sim: Any,
    sim_env: dict[str, str],
    fresh_session: None,
    nb_clip: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim.config(pending_seconds=5)  # long enough to try the change while it runs
    job = ip.run_line_magic("goenhance", "run sample.mp4 --style 2000 -d 3 -r 540p --no-wait")
    _until(lambda: job.id is not None, "the job id")
    m = magics(ip)
    old = m.session()

    ip.run_line_magic("config", "GoEnhanceMagics.poll_interval = 0.1")

    assert "still running" in caplog.text and job.id[:8] in caplog.text
    assert m.poll_interval is None and m.session() is old  # nothing changed
    assert not job.done()

    job.cancel_watch()  # the user stops watching: the job stays resumable
    _until(job.done, "the watch to stop")
    ip.run_line_magic("config", "GoEnhanceMagics.poll_interval = 0.1")
    assert m.session() is not old and m.poll_interval == 0.1
    resumed = ip.run_line_magic("goenhance", f"resume {job.id} --wait")
    assert resumed.id == job.id and resumed.path is not None
    assert sim.generate_calls() == 1


@pytest.mark.slow
def test_login_keeps_spend_and_the_budget(
    ip: InteractiveShell,
    sim: Any,
    sim_env: dict[str, str],
    fresh_session: None,
    nb_clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    m = magics(ip)
    first = Session(Settings.resolve().with_(budget=20))
    m.set_session(first)
    _session._set_session(first)
    ip.run_line_magic("goenhance", "run sample.mp4 --style 2000 -d 3 -r 540p --wait")
    threads = _engine_threads()
    monkeypatch.setattr("getpass.getpass", lambda prompt="": sim.api_key)
    ip.run_line_magic("goenhance", "login")
    new = m.session()
    assert new is not first and new.usage.spent == 15 and new.usage.budget == 20
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(BudgetExceeded):
        ip.run_line_magic("goenhance", "run sample.mp4 --style 2004 -d 3 -r 540p --wait")
    assert sim.generate_calls() == 1


# -- point 12: bad rows are skipped and reported; a damaged database is quarantined ------------
def _insert_rows(db: Path, rows: list[tuple[str, int, Any]]) -> None:
    con = sqlite3.connect(str(db))
    try:
        with con:
            for key, mode, value in rows:
                con.execute(
                    "INSERT INTO Cache (key, raw, store_time, expire_time, access_time, tag, "
                    "size, mode, filename, value) VALUES (?, 1, ?, NULL, ?, NULL, 0, ?, NULL, ?)",
                    (key, time.time(), time.time(), mode, value),
                )
    finally:
        con.close()


def _bad_rows(prefix: str) -> list[tuple[str, int, Any]]:
    return [
        (f"{prefix}bad-list", MODE_RAW, "[1, 2, 3]"),  # JSON, not an object
        (f"{prefix}bad-fields", MODE_RAW, json.dumps({"state": "done"})),  # fields missing
        (f"{prefix}bad-pickle", MODE_PICKLE, pickle.dumps({"key": "x"})),  # refused by the disk
    ]


@pytest.mark.slow
def test_malformed_rows_are_skipped_and_reported_once(
    ip: InteractiveShell,
    sim: Any,
    sim_env: dict[str, str],
    fresh_session: None,
    nb_clip: Path,
) -> None:
    job = ip.run_line_magic("goenhance", "run sample.mp4 --style 2000 -d 3 -r 540p --wait")
    cache_dir = Path(sim_env["GOENHANCE_CACHE_DIR"])
    _insert_rows(cache_dir / "ledger" / "cache.db", _bad_rows(""))
    _insert_rows(cache_dir / "index" / "cache.db", _bad_rows("r:"))

    def run(line: str) -> tuple[Any, str]:
        with capture_output() as cap:
            value = ip.run_line_magic("goenhance", line)
        text = cap.stdout + "".join(o.data.get("text/plain", "") for o in cap.outputs)
        return value, text + cap.stderr

    _, text = run("jobs")
    assert "1 jobs in the ledger" in text and job.id[:12] in text
    notes = [ln for ln in text.splitlines() if "unreadable" in ln]
    assert len(notes) == 1 and "3 unreadable rows" in notes[0]
    assert str(cache_dir / "ledger") in notes[0]

    _, text = run("cache list")
    assert "1 cached results" in text
    notes = [ln for ln in text.splitlines() if "unreadable" in ln]
    assert len(notes) == 1 and str(cache_dir / "index") in notes[0]

    resumed, text = run(f"resume {job.id} --wait")
    assert resumed.id == job.id and resumed.path is not None

    _, text = run(f"cache remove {job.key[:12]} --yes")
    assert f"Removed {job.key[:12]}" in text
    _, text = run("cache clear --yes")
    assert "Cache cleared" in text
    assert sim.generate_calls() == 1


def _damage(db: Path) -> None:
    """Overwrite the middle third of ``db`` with garbage and check SQLite now calls it damaged."""
    data = bytearray(db.read_bytes())
    rnd = random.Random(12)
    lo, hi = len(data) // 3, 2 * len(data) // 3
    data[lo:hi] = bytes(rnd.randrange(256) for _ in range(hi - lo))
    db.write_bytes(bytes(data))
    con = sqlite3.connect(str(db))
    try:
        result = con.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError:
        return
    finally:
        con.close()
    assert result != [("ok",)], "the overwrite did not damage the database"


@pytest.mark.slow
def test_damaged_ledger_and_index_are_quarantined_and_a_fresh_session_works(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    cache_dir = tmp_path / "cache"
    s = Session(_settings(sim, cache_dir))
    from goenhance_nb._ledger import LedgerEntry

    for i in range(300):  # a ledger of many pages, so the damage lands inside its b-tree
        s.ledger.put(
            LedgerEntry(
                key=f"k{i:04d}",
                state="done",
                spec={"model": 2000},
                backend="simulated",
                input_hash="x" * 64,
                extra={"pad": "p" * 200},
            )
        )
    s.close()
    _damage(cache_dir / "ledger" / "cache.db")
    (cache_dir / "index" / "cache.db").write_bytes(b"this is not a database\n" * 400)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = Session(_settings(sim, cache_dir))
    try:
        lines = [
            str(w.message) for w in caught if issubclass(w.category, goenhance_nb.StorageWarning)
        ]
        assert len(lines) == 2, lines
        moved = sorted(p for p in cache_dir.iterdir() if ".damaged-" in p.name)
        assert [p.name.split(".damaged-")[0] for p in moved] == ["index", "ledger"]
        for p in moved:
            assert any(str(p) in ln for ln in lines)  # says where the old one went
            assert (p / "cache.db").is_file()
        assert all("\n" not in ln for ln in lines)
        assert s.ledger_entries() == []
        rec = s.transform(clip, 2000, duration=3, resolution="540p").result(120)
        assert Path(rec.path).is_file() and len(s.ledger_entries()) == 1
    finally:
        s.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # told once: the fresh databases open silently
        Session(_settings(sim, cache_dir)).close()


# -- point 15: input warnings are one plain line in the notebook -------------------------------
@pytest.mark.slow
def test_input_warning_is_one_plain_line_beside_the_status(
    ip: InteractiveShell,
    sim: Any,
    sim_env: dict[str, str],
    fresh_session: None,
    nb_clip: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def to_stderr(
        message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
    ) -> None:  # what a kernel does with a warning: stderr
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    monkeypatch.setattr(warnings, "showwarning", to_stderr)
    # (issue 17: a duration longer than the input is refused now; an input longer than the
    # API's 30 s maximum is the input warning a run still gives)
    sample_clip(nb_clip.parent / "long.mp4", seconds=31.0, width=64, height=64, fps=4)
    result = ip.run_cell("%goenhance run long.mp4 --style 2000 -r 540p --wait")
    assert result.error_in_exec is None
    out = capsys.readouterr()
    lines = [ln for ln in (out.out + out.err).splitlines() if "31.0 s long" in ln]
    assert len(lines) == 1, out
    assert lines[0] in out.out.splitlines()  # plain output, not the stderr block
    assert ".py" not in lines[0] and "warn" not in lines[0].lower().replace("warning:", "")
    assert "long.mp4 is 31.0 s long; the duration defaults to 30 s" in lines[0]
    assert "_inputs" not in out.err and "warnings.warn" not in out.err

    # the Python API keeps a normal, filterable warning category
    s = goenhance_nb.get_session()
    with pytest.warns(goenhance_nb.InputWarning, match="shorter than the requested duration"):
        s.inspect(nb_clip, duration=5)
    assert issubclass(goenhance_nb.InputWarning, UserWarning)
