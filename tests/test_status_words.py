"""Issue 17 (points 3, 7, 8, 15, 16): the words a user reads about money, stopping, failures,
the ETA and saved files, table-tested on the pure parts (no simulator, no kernel).
"""

from __future__ import annotations

import os
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fakes import T0, fake_record

from goenhance_nb._cache import ResultRecord
from goenhance_nb._display import (
    ResultBundle,
    error_bundle,
    failure_text,
    status_bundle,
    with_state_line,
)
from goenhance_nb._errors import JobFailed, JobTimedOut
from goenhance_nb._job import JobEvent
from goenhance_nb._lifecycle import Badge, JobState
from goenhance_nb._outputs import outputs_path, shared_mode, write_new_file
from goenhance_nb._usage import Estimate, Usage
from goenhance_nb.widgets._status import (
    Observed,
    StatusState,
    StoppedWatching,
    money_text,
    outcome_line,
    reduce,
    retry_label,
    summary,
    view,
)

KEY = "fedcba9876543210" * 4
JOB = "8da7f61d-1111-2222-3333-444455556666"


def record(**kw: Any) -> ResultRecord:
    return fake_record(KEY, JOB, **kw)


def ev(kind: str, state: JobState | str = JobState.RUNNING, at: float = 1.0, **kw: Any) -> Observed:
    event = JobEvent(key=KEY, kind=kind, state=state, elapsed=at, ts=T0 + at, **kw)
    return Observed(event, job_cached=kw.get("cached", False), now=T0 + at)


START = StatusState(backend="simulated", style="Anime Style", spec_text="3 s · 540p")


def run(*changes: Any, start: StatusState = START) -> StatusState:
    state = start
    for change in changes:
        state = reduce(state, change)
    return state


SUBMITTED = ev("submitted", JobState.QUEUED, job_id=JOB, cost=15)
REATTACHED = ev(
    "submitted", JobState.QUEUED, at=45.0, job_id=JOB, cost=15, message=f"re-attached to job {JOB}"
)


# -- point 3: money ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ([], ""),  # nothing known: nothing claimed
        ([SUBMITTED], "cost 15 credits"),
        ([SUBMITTED, ev("done", JobState.DONE, result=record())], "cost 15 credits"),
        ([ev("cached", JobState.DONE, result=record())], "cached, originally 15 credits"),
        ([ev("cached", JobState.DONE, result=record(cost=None))], "cached, not charged again"),
        (
            [REATTACHED],
            "re-attached to job 8da7f61d, submitted 45 s ago, not charged again",
        ),
        (
            [REATTACHED, ev("done", JobState.DONE, at=50.0, result=record())],
            "re-attached to job 8da7f61d, submitted 45 s ago, not charged again",
        ),
        (
            [SUBMITTED, ev("failed", JobState.FAILED, error=JobFailed(JOB, "status failed"))],
            "15 credits, may be refunded by the service",
        ),
    ],
)
def test_money_words(changes: list[Observed], words: str) -> None:
    state = run(*changes)
    assert money_text(state) == words
    shown = view(state, T0 + 60).info
    assert "cost 0" not in shown and (words in shown)
    if state.badge is Badge.FAILED:
        assert "cost 15" not in shown  # a failed job's charge is never stated as a cost


def test_the_reattach_message_is_not_repeated_in_the_timing_line() -> None:
    v = view(run(REATTACHED), T0 + 46)
    assert "re-attached" not in v.timing and v.info.count("re-attached") == 1


@pytest.mark.parametrize(
    ("cost", "label"),
    [(15, "Retry (charged again, ~15 credits)"), (None, "Retry (charged again)")],
)
def test_retry_says_it_charges(cost: int | None, label: str) -> None:
    assert retry_label(cost) == label
    failed = run(
        ev("failed", JobState.FAILED, job_id=JOB, error=JobFailed(JOB, "status failed")),
        start=replace(START, retry_cost=cost),
    )
    v = view(failed, T0 + 2)
    assert v.retry_label == label and v.show_retry
    assert ("~15 credits" in v.hint) is (cost is not None)


# -- point 7: stop watching --------------------------------------------------------------------
def test_stop_watching_turns_grey_stops_the_clock_and_offers_resume() -> None:
    stopped = run(SUBMITTED, StoppedWatching(now=T0 + 10))
    for now in (T0 + 10, T0 + 99):  # the clock stopped
        v = view(stopped, now)
        assert v.badge == "not watching" and v.badge_colours == Badge.NOT_WATCHING.colours
        assert (
            v.timing
            == "elapsed 10 s · not watching: press Resume or run %goenhance resume 8da7f61d"
        )
        assert v.show_resume and not v.show_cancel and not v.show_retry
    # the engine's watch_cancelled that follows changes nothing the user sees
    after = reduce(stopped, ev("watch_cancelled", at=10.5))
    assert view(after, T0 + 50) == view(stopped, T0 + 50)


def test_a_real_end_after_stop_watching_still_shows() -> None:
    stopped = run(SUBMITTED, StoppedWatching(now=T0 + 5))
    done = reduce(stopped, ev("done", JobState.DONE, at=6.0, result=record()))
    assert done.badge is Badge.DONE and not view(done, T0 + 7).show_resume


# -- point 8: the error once, with the reason --------------------------------------------------
@pytest.mark.parametrize(
    ("error", "text"),
    [
        (JobFailed(JOB, "status failed"), "job 8da7f61d failed; the service gave no reason"),
        (JobFailed(JOB, ""), "job 8da7f61d failed; the service gave no reason"),
        (JobFailed(JOB, "face not detected"), "job 8da7f61d failed: face not detected"),
        (JobFailed(None, "x"), "the job failed: x"),
        (JobTimedOut(JOB, "not finished"), "JobTimedOut: not finished"),
    ],
)
def test_failure_text(error: BaseException, text: str) -> None:
    assert failure_text(error) == text


def test_failed_widget_and_saved_output_say_the_error_once() -> None:
    err = JobFailed(JOB, "status failed")
    state = run(SUBMITTED, ev("failed", JobState.FAILED, error=err))
    v = view(state, T0 + 3)
    said = " ".join([v.info, v.timing, v.error_html, v.hint, v.toast])
    assert said.count("failed; the service gave no reason") == 1
    bundle = error_bundle(err, job_id=JOB, retry_cost=15, summary=outcome_line(state, T0 + 3))
    plain = bundle["text/plain"]
    assert plain.count("failed; the service gave no reason") == 1
    assert "run the cell again (charged again, ~15 credits)" in plain
    assert "%goenhance resume" not in plain and "Retry" not in plain


# -- point 15: the ETA -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("samples", "position", "limit", "now", "eta"),
    [
        (2, None, None, 3.0, None),  # too little history
        (3, None, None, 3.0, "ETA ~7 s (from 3 similar past jobs)"),
        # waiting in the local queue: jobs ahead x typical runtime / server slots
        (3, 1, 1, 3.0, "ETA ~17 s (from 3 similar past jobs)"),
        (3, 2, 1, 3.0, "ETA ~27 s (from 3 similar past jobs)"),
        (3, 2, 2, 3.0, "ETA ~17 s (from 3 similar past jobs)"),
    ],
)
def test_eta_needs_history_and_counts_the_queue(
    samples: int, position: int | None, limit: int | None, now: float, eta: str | None
) -> None:
    start = replace(START, eta=10.0, eta_samples=samples, queue_limit=limit)
    kind = "queued_locally" if position else "status"
    state = run(ev(kind, JobState.LOCAL_QUEUE, queue_position=position), start=start)
    timing = view(state, T0 + now).timing
    if eta is None:
        assert "ETA" not in timing and view(state, T0 + now).bar is None
    else:
        assert timing.endswith(eta), timing


# -- point 5/16: static lines ------------------------------------------------------------------
def test_summary_and_outcome_lines() -> None:
    done = run(SUBMITTED, ev("done", JobState.DONE, at=12.0, result=record()))
    assert summary(done) == (
        "GoEnhance job 8da7f61d: done · Anime Style · 3 s · 540p · cost 15 credits [SIMULATED]"
    )
    assert outcome_line(done, T0 + 99) == "job 8da7f61d · cost 15 credits · took 12 s"
    back = run(REATTACHED, ev("done", JobState.DONE, at=50.0, result=record()))
    assert outcome_line(back, T0 + 99) == (
        "re-attached to job 8da7f61d, submitted 45 s ago, not charged again · took 50 s"
    )
    assert (
        summary(START)
        == "GoEnhance job (not submitted yet): queued · Anime Style · 3 s · 540p [SIMULATED]"
    )


def test_static_state_line_keeps_the_widget_hooks() -> None:
    line = status_bundle("job 8da7f61d · took 3 s", badge=Badge.FAILED)
    assert 'class="goenhance-status goenhance-static"' in line["text/html"]
    assert (
        '<span class="goenhance-state"' in line["text/html"]
        and ">failed</span>" in line["text/html"]
    )
    result = ResultBundle({"text/html": "<video>", "text/plain": "GoEnhance result: x"}, {"k": 1})
    both = with_state_line(result, "job 8da7f61d", Badge.DONE)
    assert both["text/html"].endswith("<video>") and both.metadata == {"k": 1}
    assert both["text/plain"] == "done: job 8da7f61d\nGoEnhance result: x"


def test_no_empty_status_label() -> None:
    assert view(START, T0).raw == ""  # the widget hides "status:" with it
    assert view(run(ev("status", raw_status="processing")), T0 + 2).raw == "processing"


# -- money accounting: a failed job's charge -------------------------------------------------
def test_a_failed_jobs_charge_is_kept_but_marked_maybe_refunded() -> None:
    usage = Usage()
    est = Estimate(15, "default")
    usage.reserve(est)
    usage.record(est, 15, model=2000, resolution="540p", duration=3)
    usage.record_failed(15)
    usage.record_failed(None)
    snap = usage.snapshot()
    assert (snap.spent, snap.maybe_refunded, snap.jobs) == (15, 15, 1)
    usage.record_failed(99)  # never more than was spent
    assert usage.snapshot().maybe_refunded == 15


# -- files follow the umask --------------------------------------------------------------------
@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_output_files_follow_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        assert shared_mode() == 0o666 & ~mask
        store = tmp_path / "store"
        store.mkdir(mode=0o700)
        stored = store / "x.mp4"
        stored.write_bytes(b"video")
        os.chmod(stored, 0o600)  # as the store keeps it
        out = outputs_path(record(path=str(stored)), tmp_path / "nb")
        assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask
        upload = write_new_file(tmp_path / "up.bin", b"data")
        assert stat.S_IMODE(upload.stat().st_mode) == 0o666 & ~mask
    finally:
        os.umask(old)
