"""The fault matrix of issue 12: one transformation per case against the real simulator over
loopback, with faults injected on one endpoint, asserting what the user sees, the ledger state,
the simulator's request log and the cache.

Expected outcomes come from DECISIONS 15, 25, 27 and 28 (not from the code as it was):

- ``done``: the video arrives; the ledger says ``done``; exactly one job was charged; a re-run
  is a cache hit with no request to generate.
- ``orphan``: the generate POST may have reached the server (5xx other than 503, a reset or a
  read timeout after sending, malformed JSON, a success envelope without ``img_uuid``). The user
  gets one line; the entry stays ``submitting`` with the reason; the session's spend counts the
  possible charge; a plain re-run and ``force=True`` refuse with one line naming
  ``%goenhance resume KEY --resubmit``; nothing is re-sent.
- ``refused``: the server provably made no job (429/503 after the retries, an envelope with a
  non-zero code): one line, ledger ``failed``, nothing spent, nothing charged.
- ``job_failed``: the job ran and failed (or the API lost it): ``JobFailed`` naming the job.
- ``download_error``: the job succeeded but no valid file could be had: one line, the entry keeps
  its job id and stays resumable, nothing enters the cache; ``resume(job_id)`` later completes
  with no new charge.
- ``timeout``: ``--timeout`` ran out: ``JobTimedOut`` naming the job id and the resume command;
  the entry is ``timed_out``; the same request without a timeout re-attaches to the same job.

Invariant for every case: at most one job is charged per transformation (the account balance
says so, not only the request log), and every cache record is a whole, valid video.

``http_502`` and ``http_504`` are added to the simulator on this branch, beside ``http_500``.
Fault kinds not in this branch's simulator yet (added by other helpers; names as the issue
describes them, the lead aligns them when merging; until then those cases fail at
``sim.faults`` with HTTP 400):
- ``no_job_id`` (generate-no_job_id: a 200 envelope, code 0, without ``img_uuid``),
- ``short_download`` (body shorter than its Content-Length), ``html_download`` (an HTML page
  with status 200), ``zeros_download`` (a body of zeros), ``oversize_download`` (a body over
  the result size cap): the download-* cases with those names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from workers.support import make_session

from goenhance_nb._errors import JobFailed, JobTimedOut, LedgerError
from reliability.conftest import (
    DETAIL,
    GENERATE,
    MODELLIST,
    RESULTS,
    TOKENS,
    LateForwarder,
    Settled,
    assert_cache_sound,
    assert_one_line,
    generate_statuses,
    run_and_settle,
    statuses,
)

COST = 15  # 3 s at 540p, 5 credits/s (simulator rates)


@dataclass(frozen=True)
class Case:
    """One row of the matrix (docs/reliability.md has the same table)."""

    faults: tuple[dict[str, Any], ...]
    expect: str  # done | orphan | refused | job_failed | download_error | timeout
    charged: int | None = 1  # jobs the account paid for (None: either 0 or 1 is correct)
    gen: tuple[int, ...] | None = (200,)  # statuses of the generate POSTs in the request log
    log: tuple[str, tuple[int, ...]] | None = None  # (path prefix, statuses) to check too
    error: str | None = None  # a fragment the user's error line must hold
    config: dict[str, Any] = field(default_factory=dict)  # simulator config for the case
    settings: dict[str, Any] = field(default_factory=dict)  # Settings overrides
    run: dict[str, Any] = field(default_factory=dict)  # transform() overrides


def f(kind: str, path: str, times: int = 1, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "path": path, "times": times, **extra}


def burst(code: int, path: str, times: int = 2, **extra: Any) -> tuple[dict[str, Any], ...]:
    return (f(f"http_{code}", path, times, **extra),)


FAST_FAIL = {"max_retries": 1}
SHORT_TIMEOUT = {"request_timeout": 1.0}

CASES = [
    # -- the model list (read before anything is sent) ----------------------------------------
    *[
        pytest.param(Case(burst(c, MODELLIST), "done"), id=f"modellist-{c}-burst")
        for c in (500, 502, 503, 504)
    ],
    pytest.param(Case((f("malformed_json", MODELLIST),), "done"), id="modellist-malformed_json"),
    # -- the paid POST ------------------------------------------------------------------------
    pytest.param(Case(burst(500, GENERATE, 1), "orphan", charged=0, gen=(500,)), id="generate-500"),
    pytest.param(Case(burst(502, GENERATE, 1), "orphan", charged=0, gen=(502,)), id="generate-502"),
    pytest.param(Case(burst(504, GENERATE, 1), "orphan", charged=0, gen=(504,)), id="generate-504"),
    pytest.param(
        Case(burst(500, GENERATE, 1, after=True), "orphan", charged=1, gen=(500,)),
        id="generate-500-after-job-created",
    ),
    pytest.param(
        Case(burst(502, GENERATE, 1, after=True), "orphan", charged=1, gen=(502,)),
        id="generate-502-after-job-created",
    ),
    pytest.param(
        Case(burst(504, GENERATE, 1, after=True), "orphan", charged=1, gen=(504,)),
        id="generate-504-after-job-created",
    ),
    pytest.param(
        Case(burst(503, GENERATE, 2), "done", gen=(503, 503, 200)),
        id="generate-503-refused-then-recovered",
    ),
    pytest.param(
        Case(burst(503, GENERATE, 5), "refused", charged=0, gen=(503, 503), settings=FAST_FAIL),
        id="generate-503-refused-for-good",
    ),
    pytest.param(
        Case(burst(429, GENERATE, 1, retry_after=1), "done", gen=(429, 200)),
        id="generate-429-retry-after",
    ),
    pytest.param(
        Case(
            (f("reject_generate", GENERATE, code=4001, msg="daily limit reached"),),
            "refused",
            charged=0,
            gen=(200,),
            error="daily limit reached",
        ),
        id="generate-envelope-refusal",
    ),
    pytest.param(Case((f("reset", GENERATE),), "orphan", charged=0, gen=(0,)), id="generate-reset"),
    pytest.param(
        Case((f("reset", GENERATE, after=True),), "orphan", charged=1, gen=(0,)),
        id="generate-reset-after-job-created",
    ),
    pytest.param(
        Case(
            (f("slow", GENERATE, delay=2.0),),
            "orphan",
            charged=None,
            gen=None,
            settings=SHORT_TIMEOUT,
        ),
        id="generate-read-timeout",
    ),
    pytest.param(
        Case((f("malformed_json", GENERATE),), "orphan", charged=0, gen=(200,)),
        id="generate-malformed_json",
    ),
    pytest.param(
        Case((f("malformed_json", GENERATE, after=True),), "orphan", charged=1, gen=(200,)),
        id="generate-malformed_json-after-job-created",
    ),
    pytest.param(
        Case((f("no_job_id", GENERATE),), "orphan", charged=None, gen=(200,)),
        id="generate-no_job_id",
    ),
    # -- polling ---------------------------------------------------------------------------
    *[
        pytest.param(Case(burst(c, DETAIL), "done"), id=f"detail-{c}-burst")
        for c in (500, 502, 503, 504)
    ],
    pytest.param(Case(burst(500, DETAIL, 1, after=True), "done"), id="detail-500-after"),
    pytest.param(Case(burst(429, DETAIL, 1, retry_after=1), "done"), id="detail-429-retry-after"),
    pytest.param(Case((f("reset", DETAIL),), "done"), id="detail-reset"),
    pytest.param(
        Case((f("slow", DETAIL, delay=1.6),), "done", settings=SHORT_TIMEOUT),
        id="detail-read-timeout",
    ),
    pytest.param(Case((f("malformed_json", DETAIL),), "done"), id="detail-malformed_json"),
    pytest.param(
        Case((f("unknown_status", DETAIL, 3, status="mystery"),), "done"),
        id="detail-unknown-status",
    ),
    pytest.param(
        Case((f("lost_job", DETAIL, 20),), "job_failed", error="no longer knows"),
        id="detail-lost-job",
    ),
    pytest.param(
        Case((f("job_failed", GENERATE),), "job_failed", charged=0), id="job-failed-refunded"
    ),
    # -- the account (queue limit) ---------------------------------------------------------
    *[
        pytest.param(Case(burst(c, TOKENS), "done"), id=f"tokens-{c}-burst")
        for c in (500, 502, 503, 504)
    ],
    pytest.param(Case((f("reset", TOKENS),), "done"), id="tokens-reset"),
    # -- the result download -----------------------------------------------------------------
    *[
        pytest.param(Case(burst(c, RESULTS), "done"), id=f"download-{c}-burst")
        for c in (500, 502, 503, 504)
    ],
    pytest.param(Case((f("reset", RESULTS),), "done"), id="download-reset"),
    pytest.param(
        Case((f("expired_url", DETAIL),), "done", log=(RESULTS, (403, 200))),
        id="download-url-expired",
    ),
    pytest.param(
        Case(
            (f("truncated_download", RESULTS, after_bytes=4096),), "done", log=(RESULTS, (200, 206))
        ),
        id="download-truncated-resumed",
    ),
    pytest.param(Case((f("short_download", RESULTS),), "done"), id="download-short-by-length"),
    pytest.param(Case((f("html_download", RESULTS),), "done"), id="download-html-once"),
    pytest.param(Case((f("zeros_download", RESULTS),), "done"), id="download-zeros-once"),
    pytest.param(Case((f("oversize_download", RESULTS),), "done"), id="download-oversize-once"),
    pytest.param(
        Case((f("html_download", RESULTS, 50),), "download_error"), id="download-html-always"
    ),
    pytest.param(
        Case((f("zeros_download", RESULTS, 50),), "download_error"), id="download-zeros-always"
    ),
    pytest.param(Case((), "done", config={"download_rate": 400_000}), id="download-slow-throttled"),
    pytest.param(Case((f("slow", RESULTS, delay=0.5),), "done"), id="download-slow-first-byte"),
    # -- the job deadline ---------------------------------------------------------------------
    pytest.param(
        Case((), "timeout", config={"pending_seconds": 2.5}, run={"timeout": 0.5}),
        id="job-timeout-then-rerun",
    ),
]


def _balance(sim: Any) -> int:
    return int(sim._http.get(TOKENS).json()["data"]["count"])


@pytest.mark.parametrize("case", CASES)
def test_fault_matrix(case: Case, sim: Any, tmp_path: Path, clip: Path) -> None:
    if case.config:
        sim.config(**case.config)
    start = _balance(sim)
    sim.clear_requests()
    session = make_session(sim, tmp_path / "cache", **case.settings)
    try:
        if case.faults:
            sim.faults(*case.faults)
        got = run_and_settle(session, sim, clip, **case.run)
        if case.gen is not None:
            assert tuple(got.generate_statuses) == case.gen, got.generate_statuses
        if case.log is not None:
            prefix, expected = case.log
            assert tuple(statuses(sim, prefix)) == expected, statuses(sim, prefix)
        sim.clear_faults()
        CHECKS[case.expect](case, got, session, sim, clip)
        assert_cache_sound(session)
        charged = (start - _balance(sim)) // COST
        assert charged <= 1, f"{charged} jobs charged for one transformation"
        if case.charged is not None:
            assert charged == case.charged, (charged, case.charged)
    finally:
        session.close()


def _check_done(case: Case, got: Settled, session: Any, sim: Any, clip: Path) -> None:
    """The video arrives, the ledger says done, and a re-run is a cache hit with no POST."""
    assert got.error is None, f"{type(got.error).__name__}: {got.error}"
    assert got.record is not None and got.job_id is not None
    entry = got.entry
    assert entry is not None and entry.state == "done" and entry.job_id == got.job_id
    assert [r.key for r in assert_cache_sound(session)] == [got.record.key]
    posts = len(generate_statuses(sim))
    rerun = run_and_settle(session, sim, clip)
    assert rerun.outcome == "cached", rerun.outcome
    assert rerun.record is not None and rerun.record.sha == got.record.sha
    assert len(rerun.generate_statuses) == posts


def _check_orphan(case: Case, got: Settled, session: Any, sim: Any, clip: Path) -> None:
    """One line now; the entry stays 'submitting' with its reason and the possible charge is
    counted; re-runs (plain and force) refuse naming --resubmit and send nothing."""
    assert got.error is not None, "an ambiguous generate outcome was reported as success"
    assert_one_line(got.error, sim.api_key)
    entry = got.entry
    assert entry is not None
    assert entry.state == "submitting" and entry.job_id is None, (entry.state, entry.job_id)
    assert entry.error, "the orphan entry does not say why"
    assert session.usage.snapshot().spent > 0, "the possible charge is not counted"
    assert session.cache.list() == []
    posts = len(generate_statuses(sim))
    for kw in ({}, {"force": True}):
        rerun = run_and_settle(session, sim, clip, **kw)
        assert isinstance(rerun.error, LedgerError), rerun.outcome
        msg = assert_one_line(rerun.error, sim.api_key)
        assert "--resubmit" in msg and entry.key[:12] in msg, msg
        assert len(rerun.generate_statuses) == posts, "a re-run sent the paid POST again"
        assert rerun.entry is not None and rerun.entry.state == "submitting"


def _check_refused(case: Case, got: Settled, session: Any, sim: Any, clip: Path) -> None:
    """The API refused before work: one line, ledger failed, nothing spent or cached."""
    assert got.error is not None, "a refused generate was reported as success"
    msg = assert_one_line(got.error, sim.api_key)
    if case.error:
        assert case.error in msg, msg
    assert not isinstance(got.error, LedgerError), msg
    entry = got.entry
    assert entry is not None and entry.state == "failed" and entry.job_id is None
    assert session.usage.snapshot().spent == 0
    assert session.cache.list() == []


def _check_job_failed(case: Case, got: Settled, session: Any, sim: Any, clip: Path) -> None:
    """The job ran and failed (or was lost): JobFailed naming it; ledger failed; no file."""
    assert isinstance(got.error, JobFailed), got.outcome
    msg = assert_one_line(got.error, sim.api_key)
    assert got.job_id is not None and got.job_id in msg, msg
    if case.error:
        assert case.error in msg, msg
    entry = got.entry
    assert entry is not None and entry.state == "failed" and entry.job_id == got.job_id
    assert session.cache.list() == []


def _check_download_error(case: Case, got: Settled, session: Any, sim: Any, clip: Path) -> None:
    """No valid file could be had: one line, nothing cached, the job stays resumable, and a
    later resume completes without a new charge."""
    assert got.error is not None, "an invalid download was served as the result"
    msg = assert_one_line(got.error, sim.api_key)
    entry = got.entry
    assert entry is not None and entry.job_id == got.job_id and entry.job_id is not None
    assert entry.state not in ("done", "failed"), entry.state
    assert entry.job_id in msg and "resume" in msg, msg
    assert session.cache.list() == []
    posts = len(generate_statuses(sim))
    rec = session.resume(entry.job_id).result(60)
    assert rec.job_id == entry.job_id
    assert len(generate_statuses(sim)) == posts
    assert session.ledger.get(entry.key).state == "done"


def _check_timeout(case: Case, got: Settled, session: Any, sim: Any, clip: Path) -> None:
    """--timeout ran out: JobTimedOut naming the job and the resume command; the same request
    without a timeout waits for the same job under its own deadline (DECISIONS 27)."""
    assert isinstance(got.error, JobTimedOut), got.outcome
    msg = assert_one_line(got.error, sim.api_key)
    assert got.job_id is not None and f"resume {got.job_id}" in msg and "None" not in msg, msg
    entry = got.entry
    assert entry is not None and entry.job_id == got.job_id
    assert entry.state not in ("done", "failed"), entry.state
    rerun = run_and_settle(session, sim, clip)
    assert rerun.error is None, f"{rerun.outcome}: {rerun.error}"
    assert rerun.record is not None and rerun.record.job_id == got.job_id
    assert len(rerun.generate_statuses) == 1


CHECKS = {
    "done": _check_done,
    "orphan": _check_orphan,
    "refused": _check_refused,
    "job_failed": _check_job_failed,
    "download_error": _check_download_error,
    "timeout": _check_timeout,
}


def test_resubmitting_an_orphan_pays_again_only_when_asked(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    """The one way to pay twice: the user names --resubmit (resume(..., resubmit=True))."""
    session = make_session(sim, tmp_path / "cache")
    try:
        sim.faults({"kind": "http_500", "path": GENERATE, "after": True})
        got = run_and_settle(session, sim, clip)
        assert got.error is not None
        key = session.ledger.entries()[0].key
        assert len(generate_statuses(sim)) == 1
        with pytest.warns(UserWarning, match="may charge twice"):
            rec = session.resume(key[:12], resubmit=True).result(60)
        assert len(generate_statuses(sim)) == 2
        assert session.ledger.get(key).state == "done"
        assert [r.key for r in assert_cache_sound(session)] == [rec.key]
    finally:
        session.close()


def test_connection_refused_then_recovered(sim: Any, tmp_path: Path, clip: Path) -> None:
    """Nothing listens at the API's address at first (connection refused: the request never
    left), then the server comes up: the run completes with one job and one generate POST."""
    import threading
    from urllib.parse import urlsplit

    target = urlsplit(sim.base_url)
    fwd = LateForwarder((target.hostname or "127.0.0.1", int(target.port or 80)))
    start = _balance(sim)
    sim.clear_requests()
    session = make_session(sim, tmp_path / "cache", base_url=fwd.url)
    try:
        # the injected backoff sleep runs only after an attempt failed and another one will
        # follow: the positive signal that a refused connection did not end the run
        transport = session.client.transport
        backoff, refused = transport.sleep, threading.Event()

        async def sleep_after_refusal(delay: float) -> None:
            refused.set()
            await backoff(delay)

        transport.sleep = sleep_after_refusal
        box: dict[str, Settled] = {}
        t = threading.Thread(target=lambda: box.update(got=run_and_settle(session, sim, clip)))
        t.start()
        assert refused.wait(30), "no attempt was refused (or none was tried again)"
        assert t.is_alive(), "the run ended while the API address refused connections"
        fwd.open()
        t.join(90)
        got = box["got"]
        _check_done(Case((), "done"), got, session, sim, clip)
        assert got.generate_statuses == [200]
        assert (start - _balance(sim)) // COST == 1
    finally:
        session.close()
        fwd.close()
