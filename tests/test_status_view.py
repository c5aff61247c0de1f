"""The status widget's pure parts, table-tested: no simulator, no kernel, no widgets.

``reduce(state, change) -> state`` folds job events (and the user's actions) into a
``StatusState``; ``view(state, now) -> StatusView`` says every text, colour and visibility the
widget shows. tests/test_widgets.py checks the same behaviour end to end against the simulator.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fakes import T0, fake_record

from goenhance_nb._cache import ResultRecord
from goenhance_nb._display import ResultBundle
from goenhance_nb._errors import JobFailed, JobTimedOut
from goenhance_nb._job import JobEvent
from goenhance_nb._lifecycle import Badge, EventKind, JobState
from goenhance_nb._records import JobSpec
from goenhance_nb._session import _runtime_of
from goenhance_nb.widgets._status import (
    Observed,
    OutputReady,
    RetryRefused,
    StatusState,
    StatusView,
    StoppedWatching,
    reduce,
    view,
)

KEY = "0123456789abcdef" * 4


def record(**kw: Any) -> ResultRecord:
    return fake_record(KEY, **kw)


def ev(kind: str, state: JobState | str = JobState.RUNNING, at: float = 1.0, **kw: Any) -> Observed:
    """An event ``at`` seconds into the job (the job began at T0)."""
    job_cached = kw.pop("job_cached", False)
    event = JobEvent(key=KEY, kind=kind, state=state, elapsed=at, ts=T0 + at, **kw)
    return Observed(event, job_cached=job_cached, now=T0 + at)


def run(*changes: Any, start: StatusState | None = None) -> StatusState:
    state = start or StatusState(backend="simulated", style="Anime Style", spec_text="3 s · 540p")
    for change in changes:
        state = reduce(state, change)
    return state


# -- the reducer ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "badge", "terminal", "watching"),
    [
        ([], Badge.QUEUED, False, True),
        ([ev("validated", JobState.LOCAL)], Badge.QUEUED, False, True),
        ([ev("queued_locally", JobState.LOCAL_QUEUE, queue_position=2)], Badge.QUEUED, False, True),
        ([ev("queued_locally", "LOCAL_QUEUE")], Badge.QUEUED, False, True),  # plain strings too
        ([ev("submitting", JobState.LOCAL)], Badge.QUEUED, False, True),
        ([ev("submitted", JobState.QUEUED, job_id="abc")], Badge.QUEUED, False, True),
        ([ev("status", JobState.RUNNING, raw_status="processing")], Badge.RUNNING, False, True),
        ([ev("downloading", JobState.RUNNING)], Badge.RUNNING, False, True),
        # a status event may say success before the result is downloaded: not terminal yet
        ([ev("status", JobState.DONE, raw_status="success")], Badge.DONE, False, True),
        ([ev("done", JobState.DONE, result=record())], Badge.DONE, True, True),
        ([ev("done", JobState.DONE, result=record(), job_cached=True)], Badge.CACHED, True, True),
        ([ev("cached", JobState.DONE, result=record())], Badge.CACHED, True, True),
        (
            [ev("cached", JobState.DONE, result=record()), ev("done", JobState.DONE)],
            Badge.CACHED,
            True,
            True,
        ),
        ([ev("failed", JobState.FAILED, error=JobFailed("j", "boom"))], Badge.FAILED, True, True),
        ([ev("timed_out", JobState.RUNNING)], Badge.TIMED_OUT, True, True),
        # stopping the watch: the badge says so (grey "not watching"), the job is not ended
        ([ev("status", JobState.RUNNING), ev("watch_cancelled")], Badge.NOT_WATCHING, False, False),
        # once terminal, later events never change the badge
        (
            [ev("done", JobState.DONE, result=record()), ev("status", JobState.RUNNING)],
            Badge.DONE,
            True,
            True,
        ),
    ],
)
def test_reducer_badge_terminal_and_watching(
    changes: list[Observed], badge: Badge, terminal: bool, watching: bool
) -> None:
    state = run(*changes)
    assert (state.badge, state.terminal, state.watching) == (badge, terminal, watching)


def test_reducer_keeps_ids_cost_and_raw_status_verbatim() -> None:
    state = run(
        ev("submitted", JobState.QUEUED, job_id="abc-123", cost=15),
        ev("status", JobState.QUEUED, raw_status="WAITING"),
        ev("status", JobState.RUNNING),  # no raw status: the last one stays
    )
    assert (state.job_id, state.cost, state.raw) == ("abc-123", 15, "WAITING")
    assert state.t0 == T0  # the job began `elapsed` seconds before its first event


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (ev("downloading", progress=(1_000_000, 2_000_000)), "downloading 50% of 2.0 MB"),
        (ev("downloading", progress=(5, None), message="fetching"), "fetching"),
        (ev("status", message="status processing"), ""),  # shown beside the badge already
        (ev("status", message="server busy"), "server busy"),
        (ev("failed", message="https://cdn.example/v.mp4?sig=abc123 failed"), None),
    ],
)
def test_reducer_messages(change: Observed, message: str | None) -> None:
    state = run(change)
    if message is None:
        assert "sig=abc123" not in state.message  # redacted
    else:
        assert state.message == message


def test_result_events_keep_the_previous_message() -> None:
    state = run(ev("status", message="server busy"), ev("done", JobState.DONE, result=record()))
    assert state.message == "server busy"


def test_replaying_the_latest_event_changes_nothing() -> None:
    seq = [ev("submitted", JobState.QUEUED, job_id="a"), ev("status", raw_status="processing")]
    once = run(*seq)
    assert reduce(once, seq[-1]) == once


def test_user_actions() -> None:
    running = run(ev("status", JobState.RUNNING))
    stopped = reduce(running, StoppedWatching(now=T0 + 7.0))
    assert (stopped.watching, stopped.badge, stopped.t_end) == (False, Badge.NOT_WATCHING, T0 + 7.0)
    finished = run(ev("done", JobState.DONE, result=record()))
    assert reduce(finished, StoppedWatching()) == finished  # nothing to stop
    refused = reduce(finished, RetryRefused(ValueError("budget")))
    assert refused.message == "Retry refused: ValueError: budget"
    ready = reduce(finished, OutputReady(ResultBundle({"text/html": "<video>"})))
    assert ready.output is not None and ready.output_problem == ""
    broken = reduce(finished, OutputReady(problem="could not show the result: gone"))
    assert broken.output is None and broken.output_problem.endswith("gone")


# -- the view ------------------------------------------------------------------------------------
def shown(*changes: Any, now: float = 5.0, **start: Any) -> StatusView:
    base = StatusState(backend="simulated", style="Anime Style", spec_text="3 s · 540p")
    return view(run(*changes, start=replace(base, **start)), T0 + now)


def test_view_of_a_running_job() -> None:
    v = shown(ev("submitted", JobState.QUEUED, job_id="0123456789", cost=15), now=75.2)
    assert (v.badge, v.badge_colours) == ("queued", Badge.QUEUED.colours)
    assert (v.backend, v.backend_colours) == ("SIMULATED", ("#fde68a", "#713f12"))
    assert v.job_id == "01234567"
    assert v.info == "Anime Style · 3 s · 540p · cost 15 credits"
    assert v.timing == "elapsed 1:15"
    assert v.bar is None and v.error_html == "" and v.hint == "" and v.toast == ""
    assert v.show_cancel and not v.show_retry and not v.settled


def test_view_of_a_real_host_has_no_simulated_colour() -> None:
    v = shown(backend="api.goenhance.ai")
    assert (v.backend, v.backend_colours) == ("api.goenhance.ai", ("", None))


@pytest.mark.parametrize(
    ("eta", "samples", "now", "timing", "bar"),
    [
        (None, 0, 3.0, "elapsed 3 s", None),  # no history: nothing invented
        (10.0, 3, 3.0, "elapsed 3 s · ETA ~7 s (from 3 similar past jobs)", 0.3),
        (10.0, 2, 3.0, "elapsed 3 s", None),  # too little history: nothing (issue 17, 15)
        (10.0, 1, 3.0, "elapsed 3 s", None),
        (10.0, 3, 12.0, "elapsed 12 s · taking longer than the estimate", 0.99),
    ],
)
def test_view_eta(
    eta: float | None, samples: int, now: float, timing: str, bar: float | None
) -> None:
    v = shown(ev("status", at=1.0), now=now, eta=eta, eta_samples=samples)
    assert v.timing == timing
    assert v.bar == pytest.approx(bar) if bar is not None else v.bar is None


def test_view_hides_the_eta_once_done_and_freezes_elapsed() -> None:
    v = shown(ev("done", JobState.DONE, at=4.0, result=record()), now=99.0, eta=10.0, eta_samples=2)
    assert v.timing == "elapsed 4 s" and v.bar is None


def test_view_local_queue_position_then_gone() -> None:
    queued = shown(ev("queued_locally", JobState.LOCAL_QUEUE, queue_position=1))
    assert "local queue position 1" in queued.timing
    ran = shown(ev("queued_locally", JobState.LOCAL_QUEUE, queue_position=1), ev("status"))
    assert "local queue" not in ran.timing


def test_view_message_unless_it_repeats_the_raw_status() -> None:
    assert shown(ev("status", message="server busy")).timing.endswith(" · server busy")
    v = shown(ev("status", raw_status="busy", message="busy"))
    assert v.timing == "elapsed 5 s"


def test_view_after_stop_watching() -> None:
    v = shown(ev("submitted", JobState.QUEUED, job_id="abcdef123456"), StoppedWatching(T0 + 3))
    assert v.timing == "elapsed 3 s · not watching: press Resume or run %goenhance resume abcdef12"
    assert not v.show_cancel and v.show_resume and v.settled and v.badge == "not watching"
    assert v.badge_colours == Badge.NOT_WATCHING.colours


@pytest.mark.parametrize(
    ("change", "badge", "hint_has"),
    [
        (
            ev("failed", JobState.FAILED, job_id="j1", error=JobFailed("j1", "boom")),
            "failed",
            "Retry",
        ),
        (
            ev("timed_out", JobState.RUNNING, job_id="j1", error=JobTimedOut("j1", "slow")),
            "timed out",
            "%goenhance resume j1",
        ),
        (ev("failed", JobState.FAILED, job_id="j1", message="it broke"), "failed", "Retry"),
    ],
)
def test_view_of_a_failure(change: Observed, badge: str, hint_has: str) -> None:
    v = shown(change)
    assert v.badge == badge and v.badge_colours == Badge(badge).colours
    assert (
        v.error_html.startswith('<span style="background:#fee2e2;color:#991b1b;')
        and "\n" not in v.error_html
    )
    assert hint_has in v.hint
    assert v.show_retry and not v.show_cancel and v.settled and v.toast == ""


def test_view_error_text_is_redacted_and_escaped() -> None:
    err = JobFailed("j1", "bad <tag> https://cdn.example/v.mp4?sig=SECRET")
    v = shown(ev("failed", JobState.FAILED, job_id="j1", error=err))
    assert "SECRET" not in v.error_html and "<tag>" not in v.error_html


def test_view_of_a_done_job_waits_for_its_output() -> None:
    done = ev("done", JobState.DONE, result=record(), raw_status="completed")
    waiting = shown(done)
    assert waiting.badge == "done" and waiting.raw == "completed"
    assert waiting.toast == "Ready: anime-style-01234567.mp4"
    assert not waiting.settled and waiting.output is None  # the video is not there yet
    out = ResultBundle({"text/html": "<video>"})
    ready = shown(done, OutputReady(out))
    assert ready.settled and ready.output is out
    failed = shown(done, OutputReady(problem="could not show the result: gone"))
    assert failed.settled and failed.timing.endswith("could not show the result: gone")
    # a widget that does not show the video is settled at once
    assert shown(done, show_result=False).settled


def test_view_of_a_cached_job() -> None:
    v = shown(ev("cached", JobState.DONE, result=record(), job_id="abcdef123456"))
    assert v.badge == "cached" and v.job_id == "abcdef12"
    assert v.info == "Anime Style · 3 s · 540p · cached, originally 15 credits"
    assert v.toast.startswith("Ready: ") and not v.show_cancel and not v.show_retry


def test_badge_texts_are_the_documented_words() -> None:
    # ARCHITECTURE.md section 4: the badge text the browser suite reads
    assert {b.value for b in Badge} - {"not watching"} == {
        "queued",
        "running",
        "done",
        "cached",
        "failed",
        "timed out",
    }
    assert all(EventKind(k.value) is k for k in EventKind)


# -- the runtime estimate's filter (Session.runtime_estimate) -----------------------------------
SPEC = JobSpec(model=2000, duration=3, resolution="540p")
RAN = {"submitted": T0, "finished": T0 + 12.5}


@pytest.mark.parametrize(
    ("rec", "expected"),
    [
        (record(timings=RAN), 12.5),
        (record(timings=RAN, params={}), None),  # not recorded: not comparable (issue 17)
        (record(timings={"submitted": T0}), None),  # never finished
        (record(timings=RAN, backend="api.goenhance.ai"), None),
        (record(timings=RAN, params={"resolution": "720p", "duration": 3}), None),
        (record(timings=RAN, params={"resolution": "540p", "duration": 5}), 12.5),  # bucket
        (record(timings=RAN, params={"resolution": "540p", "duration": 6}), None),
        (record(timings={"submitted": T0, "finished": T0}), None),  # no positive runtime
    ],
)
def test_runtime_of_a_past_result(rec: ResultRecord, expected: float | None) -> None:
    assert _runtime_of(rec, "simulated", SPEC) == expected


def test_a_cache_hit_says_no_elapsed_time() -> None:
    v = shown(ev("cached", JobState.DONE, result=record()), ev("done", JobState.DONE), now=9.0)
    assert v.badge == "cached" and "elapsed" not in v.timing
