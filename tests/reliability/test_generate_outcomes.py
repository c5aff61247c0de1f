"""Issue 12 points 1, 2, 4, 9, 11: the paid generate POST and the ledger, against the simulator.

Invariant for every case: generate calls == transformations asked for, unless the user asked to
pay again (``resume KEY --resubmit``); a possibly charged POST is never re-sent by a re-run,
``force=True`` or the status widget's Retry (DECISIONS 25).
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from workers.support import make_session, wait_until

from goenhance_nb._errors import (
    APIError,
    JobTimedOut,
    LedgerError,
    RateLimited,
)
from goenhance_nb._keys import hash_file
from goenhance_nb._ledger import Ledger
from goenhance_nb._session import Session
from goenhance_nb.widgets import StatusWidget

GENERATE = "/api/v1/video2video/generate"
DETAIL = "/api/v1/jobs/detail"
WAIT = 60


def _until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    return wait_until(cond, what, timeout, step=0.02)


def _generate_arrived(sim: Any) -> bool:
    return sim.generate_calls() >= 1


def _assert_clean(text: str, sim: Any) -> None:
    assert sim.api_key not in text
    assert "sig=" not in text and "exp=" not in text  # no signed URL query
    assert "resume None" not in text


@pytest.fixture
def slow_session(sim: Any, tmp_path: Path) -> Iterator[Session]:
    """A session whose requests give up after 0.5 s (read timeout on a slow generate)."""
    s = make_session(sim, tmp_path / "cache", request_timeout=0.5)
    yield s
    s.close()


@pytest.fixture
def no_widget_leftovers() -> Iterator[None]:
    """Close every widget (and its Layout/Style) a test made, so later scans see none."""
    from ipywidgets.widgets.widget import _instances

    before = set(_instances)
    yield
    for mid in set(_instances) - before:
        w = _instances.get(mid)
        if w is not None:
            w.close()


# -- point 1: an ambiguous generate outcome is an orphan, never failed, never re-sent ----------

AMBIGUOUS = [
    pytest.param({"kind": "http_500", "after": True}, id="500-after-job-created"),
    pytest.param({"kind": "reset", "after": True}, id="reset-after-job-created"),
    pytest.param({"kind": "malformed_json", "after": True}, id="malformed-json"),
    pytest.param({"kind": "no_job_id"}, id="success-envelope-without-img_uuid"),
    pytest.param({"kind": "slow", "delay": 1.5}, id="read-timeout"),
]


@pytest.mark.parametrize("fault", AMBIGUOUS)
def test_maybe_charged_generate_is_never_sent_again_without_resubmit(
    sim: Any,
    slow_session: Session,
    clip: Path,
    fault: dict[str, Any],
    no_widget_leftovers: None,
) -> None:
    s = slow_session
    sim.faults({**fault, "path": GENERATE})
    job = s.transform(clip, 2000, duration=3)
    with pytest.raises(LedgerError) as info:
        job.result(WAIT)
    ident = job.key[:12]
    line = str(info.value)
    assert f"%goenhance resume {ident} --resubmit" in line
    assert f"resume('{ident}', resubmit=True)" in line
    assert "\n" not in line
    _assert_clean(line, sim)
    entry = s.ledger.get(job.key)
    assert entry is not None and entry.state == "submitting" and entry.job_id is None
    assert entry.error  # the reason is kept
    assert sim.generate_calls() == 1
    # the possible charge counts as spend (pessimistic) and is labelled as such
    assert s.usage.spent == 30 and s.usage.snapshot().possible == 30

    # a plain re-run, --force and the widget's Retry all refuse with the same line
    for force in (False, True):
        with pytest.raises(LedgerError, match=f"resume {ident} --resubmit"):
            s.transform(clip, 2000, duration=3, force=force)
    w = StatusWidget(job, session=s)
    try:
        w.retry_button.click()
        w.flush()
        assert w.job is job
        assert f"resume {ident} --resubmit" in w.error.value
    finally:
        w.close()
    assert sim.generate_calls() == 1

    # paying again on purpose
    with pytest.warns(UserWarning, match="may charge twice"):
        again = s.resume(ident, resubmit=True)
        rec = again.result(WAIT)
    assert hash_file(rec.path) == rec.sha
    assert sim.generate_calls() == 2
    assert s.ledger.get(job.key).state == "done"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"kind": "http_503", "times": 10}, id="503-refused"),
        pytest.param({"kind": "http_429", "times": 10, "retry_after": 0}, id="429-refused"),
        pytest.param({"kind": "reject_generate", "code": 1234, "msg": "odd"}, id="envelope-code"),
    ],
)
def test_provably_refused_generate_is_failed_and_a_rerun_submits(
    sim: Any, tmp_path: Path, clip: Path, fault: dict[str, Any]
) -> None:
    s = make_session(sim, tmp_path / "cache", max_retries=1)
    try:
        sim.faults({**fault, "path": GENERATE})
        job = s.transform(clip, 2000, duration=3)
        with pytest.raises(APIError) as info:
            job.result(WAIT)
        assert not info.value.job_may_exist
        assert isinstance(info.value, RateLimited) or fault["kind"] != "http_429"
        entry = s.ledger.get(job.key)
        assert entry is not None and entry.state == "failed"
        assert s.usage.spent == 0
        calls = sim.generate_calls()
        sim.clear_faults()
        rec = s.transform(clip, 2000, duration=3).result(WAIT)
        assert rec.job_id is not None and sim.generate_calls() == calls + 1
    finally:
        s.close()


@pytest.mark.parametrize(
    ("status", "body", "may_exist"),
    [
        (502, None, True),
        (504, None, True),
        (500, {"code": 500, "msg": "Server Error", "data": None}, True),
        (200, {"code": 0, "msg": "Success", "data": {}}, True),
        (200, b"<html>oops</html>", True),
        (503, None, False),
        (429, None, False),
        (401, None, False),
        (403, None, False),
        (200, {"code": 7, "msg": "generation rejected", "data": None}, False),
    ],
)
def test_the_client_alone_decides_whether_a_job_may_exist(
    status: int, body: Any, may_exist: bool
) -> None:
    """Statuses the simulator cannot send (502, 504) through the client's one boundary."""
    import asyncio

    import httpx

    from goenhance_nb._client import AsyncClient
    from goenhance_nb._errors import GoEnhanceError
    from goenhance_nb._records import JobSpec
    from goenhance_nb._settings import SecretKey, Settings

    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(status, content=body)
        return httpx.Response(status, json=body) if body is not None else httpx.Response(status)

    async def go() -> GoEnhanceError:
        settings = Settings(base_url="http://127.0.0.1:1", rate_limit=0, max_retries=0)
        c = AsyncClient(
            settings,
            base_url="http://127.0.0.1:1",
            api_key=SecretKey("sk-" + "x" * 20),
            transport=httpx.MockTransport(handler),
        )
        try:
            await c.generate(
                JobSpec(model=2000, duration=3, resolution="540p", seed=1), "https://a/b.mp4"
            )
        except GoEnhanceError as exc:
            return exc
        finally:
            await c.aclose()
        raise AssertionError("generate did not fail")

    err = asyncio.run(go())
    assert err.job_may_exist is may_exist, err


# -- point 2: the ledger write after a successful POST fails --------------------------------


def test_ledger_write_failure_after_generate_keeps_the_job_id(
    sim: Any, tmp_path: Path, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The ledger database is locked by another connection (``BEGIN EXCLUSIVE``) while the
    POST is in flight: the id still reaches the handle, the log and the error, and
    ``resume(<id>)`` re-attaches by asking the API (no second generate)."""
    cache_dir = tmp_path / "cache"
    s = make_session(sim, cache_dir)
    s.ledger.close()
    s.ledger = s.engine.ledger = Ledger(cache_dir, timeout=0.3)
    holder = sqlite3.connect(str(cache_dir / "ledger" / "cache.db"), isolation_level=None)
    try:
        sim.config(pending_seconds=1.0)
        sim.faults({"kind": "slow", "delay": 1.0, "path": GENERATE})
        with caplog.at_level("INFO", logger="goenhance_nb.engine"):
            job = s.transform(clip, 2000, duration=3)
            _until(lambda: _generate_arrived(sim), what="the generate POST")
            holder.execute("BEGIN EXCLUSIVE")
            with pytest.raises(LedgerError) as info:
                job.result(WAIT)
        holder.execute("ROLLBACK")
        assert job.id is not None
        line = str(info.value)
        assert job.id in line and f"%goenhance resume {job.id}" in line
        assert "database is locked" in line
        _assert_clean(line, sim)
        assert any(job.id in r.getMessage() for r in caplog.records)
        entry = s.ledger.get(job.key)
        assert entry is not None and entry.job_id is None  # the write never landed
        # a re-run refuses (may have been charged) ...
        with pytest.raises(LedgerError, match="--resubmit"):
            s.transform(clip, 2000, duration=3)
        # ... and resume(<id>) asks the API and finishes the same job
        rec = s.resume(job.id).result(WAIT)
        assert rec.job_id == job.id and hash_file(rec.path) == rec.sha
        assert sim.generate_calls() == 1
        assert s.ledger.get(job.key).job_id == job.id  # type: ignore[union-attr]
        assert any(q["path"] == DETAIL for q in sim.requests(DETAIL))
    finally:
        holder.close()
        s.close()


def test_resume_of_an_id_nobody_knows_says_so(sim: Any, session: Session) -> None:
    with pytest.raises(LedgerError, match="API does not know it"):
        session.resume("00000000-0000-4000-8000-000000000000")
    assert sim.generate_calls() == 0


# -- point 4: a second request joins the live job under its own deadline ----------------------


def test_rerun_after_a_short_wait_joins_the_same_job(
    sim: Any, session: Session, clip: Path
) -> None:
    sim.config(pending_seconds=3.0)
    first = session.transform(clip, 2000, duration=3, timeout=2.0)
    with pytest.raises(TimeoutError):
        first.result(0.3)  # this caller's own wait ends; the job goes on
    again = session.transform(clip, 2000, duration=3)  # no timeout: the job's deadline extends
    assert again is first
    rec = again.result(WAIT)
    assert rec.job_id == first.id and sim.generate_calls() == 1
    assert not any(ev.kind == "timed_out" for ev in first.history)


def test_magic_wait_timeout_then_plain_rerun_waits_for_the_same_job(
    sim: Any, sim_env: dict[str, str], fresh_session: None, clip: Path
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "goenhance_nb")
        sim.config(pending_seconds=3.0)
        cmd = f"run {clip} --style 2000 --duration 3 --wait"
        with pytest.raises(JobTimedOut) as info:
            shell.run_line_magic("goenhance", cmd + " --timeout 1")
        assert "resume None" not in str(info.value) and "%goenhance resume " in str(info.value)
        job = shell.run_line_magic("goenhance", cmd)
        assert job.done() and job.record is not None
        assert sim.generate_calls() == 1
    finally:
        InteractiveShell.clear_instance()


def test_magic_maybe_charged_run_refuses_rerun_and_shows_possible_spend(
    sim: Any, sim_env: dict[str, str], fresh_session: None, clip: Path
) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "goenhance_nb")
        sim.faults({"kind": "http_500", "after": True, "path": GENERATE})
        cmd = f"run {clip} --style 2000 --duration 3 --wait"
        with pytest.raises(LedgerError) as info:
            shell.run_line_magic("goenhance", cmd)
        ident = str(info.value).split()[1].rstrip(":")
        assert f"%goenhance resume {ident} --resubmit" in str(info.value)
        for again in (cmd, cmd + " --force"):
            with pytest.raises(LedgerError, match="--resubmit"):
                shell.run_line_magic("goenhance", again)
        assert sim.generate_calls() == 1
        with capture_output() as cap:
            shell.run_line_magic("goenhance", "credits")
        text = "".join(o.data["text/plain"] for o in cap.outputs)
        assert "session spend 30 (incl. 30 possibly charged)" in text
        # inside a magic our warnings are one plain line (issue 12 point 15), not a warning block
        with capture_output() as cap:
            job = shell.run_line_magic("goenhance", f"resume {ident} --resubmit --wait")
        assert "GoEnhance warning: " in cap.stdout and "may charge twice" in cap.stdout
        assert job.done() and job.record is not None and sim.generate_calls() == 2
    finally:
        InteractiveShell.clear_instance()


def test_timed_out_before_a_job_id_names_the_key_not_none() -> None:
    err = JobTimedOut(None, key="abcdef0123456789")
    assert "resume abcdef012345" in str(err) and "None" not in str(err)


# -- point 9: a repair never pays for a transient error --------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        pytest.param([{"kind": "http_500", "path": DETAIL, "times": 20}], id="5xx-while-polling"),
        pytest.param(
            [{"kind": "http_500", "path": "/sim/results/", "times": 20}], id="5xx-downloading"
        ),
    ],
)
def test_repair_with_transient_errors_does_not_regenerate(
    sim: Any, tmp_path: Path, clip: Path, faults: list[dict[str, Any]]
) -> None:
    s = make_session(sim, tmp_path / "cache", max_retries=1)
    s.engine.max_poll_errors = 2
    try:
        rec = s.transform(clip, 2000, duration=3).result(WAIT)
        Path(rec.path).unlink()
        sim.faults(*faults)
        with pytest.warns(UserWarning, match="missing") as record:
            job = s.transform(clip, 2000, duration=3)
            with pytest.raises(APIError):
                job.result(WAIT)
        assert not any("generating it again" in str(w.message) for w in record)
        assert sim.generate_calls() == 1
        sim.clear_faults()
        with pytest.warns(UserWarning, match="missing"):  # the job is still known
            rec2 = s.transform(clip, 2000, duration=3).result(WAIT)
        assert rec2.job_id == rec.job_id and sim.generate_calls() == 1
    finally:
        s.close()


def test_repair_regenerates_only_a_lost_job_and_says_so(
    sim: Any, session: Session, clip: Path
) -> None:
    rec = session.transform(clip, 2000, duration=3).result(WAIT)
    Path(rec.path).unlink()
    sim.faults({"kind": "lost_job", "times": 3})
    with pytest.warns(UserWarning) as record:
        rec2 = session.transform(clip, 2000, duration=3).result(WAIT)
    texts = [str(w.message) for w in record]
    assert any("no longer knows its job" in t for t in texts)
    assert not any("URL expired" in t for t in texts)
    assert sim.generate_calls() == 2 and rec2.job_id != rec.job_id


# -- point 11: "Stop watching" during the POST ---------------------------------------------


def test_cancel_watch_during_the_post_keeps_the_job_id(
    sim: Any, session: Session, clip: Path
) -> None:
    sim.faults({"kind": "slow", "delay": 1.0, "path": GENERATE})
    job = session.transform(clip, 2000, duration=3)
    _until(lambda: _generate_arrived(sim), what="the generate POST")
    job.cancel_watch()
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(WAIT)
    entry = session.ledger.get(job.key)
    assert entry is not None and entry.job_id is not None and not entry.is_orphan
    assert entry.state == "watch_cancelled" and job.id == entry.job_id
    assert job.history[-1].kind == "watch_cancelled"
    rec = session.resume(entry.job_id).result(WAIT)
    assert rec.job_id == entry.job_id and sim.generate_calls() == 1


def test_a_failed_message_never_shows_a_signed_url_or_the_key(
    sim: Any, session: Session, clip: Path
) -> None:
    done = threading.Event()
    sim.faults({"kind": "job_failed"})
    job = session.transform(clip, 2000, duration=3)
    job.subscribe(lambda ev: ev.kind in ("failed", "timed_out") and done.set())
    with pytest.raises(Exception) as info:
        job.result(WAIT)
    assert done.wait(WAIT)
    _assert_clean(str(info.value), sim)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MB tmpfs (we are root in CI); skipped where mounting is not permitted."""
    import subprocess

    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(path: Path) -> None:
    """Write ``path`` until the file system is full (ENOSPC)."""
    import errno
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


def test_disk_full_during_the_ledger_write_keeps_the_job_id(
    sim: Any, small_disk: Path, clip: Path
) -> None:
    s = make_session(sim, small_disk / "cache")
    filler = small_disk / "filler"
    try:
        s.styles()
        sim.config(pending_seconds=1.0)
        sim.faults({"kind": "slow", "delay": 1.0, "path": GENERATE})
        job = s.transform(clip, 2000, duration=3)
        _until(lambda: _generate_arrived(sim), what="the generate POST")
        _fill(filler)
        with pytest.raises(LedgerError) as info:
            job.result(WAIT)
        line = str(info.value)
        assert job.id is not None and f"%goenhance resume {job.id}" in line
        assert "full" in line
        filler.unlink()
        rec = s.resume(job.id).result(WAIT)
        assert rec.job_id == job.id and hash_file(rec.path) == rec.sha
        assert sim.generate_calls() == 1
    finally:
        filler.unlink(missing_ok=True)
        s.close()
