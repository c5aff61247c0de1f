"""The job engine against the real simulator over loopback: cache, expiry, repair, queue,
budget, deadlines, failures, events."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from workers.support import make_session

from goenhance_nb._errors import (
    APIError,
    BudgetExceeded,
    JobFailed,
    JobTimedOut,
    TransportError,
)
from goenhance_nb._job import JobEvent
from goenhance_nb._keys import hash_file
from goenhance_nb._lifecycle import JobState
from goenhance_nb._session import Session


def api_requests(sim: Any) -> list[dict[str, Any]]:
    return sim.requests("/api/")


def test_first_run_generates_once_and_a_cache_hit_makes_zero_requests(
    sim: Any, session: Session, clip: Path, tmp_path: Path
) -> None:
    job = session.transform(clip, "Anime Style", duration=3)
    rec = job.result(60)
    assert Path(rec.path).is_file() and hash_file(rec.path) == rec.sha
    assert rec.job_id == job.id and rec.cost == 30 and rec.backend == "simulated"
    assert sim.generate_calls() == 1
    session.close()

    sim.clear_requests()
    again = make_session(sim, tmp_path / "cache")  # a new kernel on the same cache dir
    try:
        job2 = again.transform(clip, "2000", duration=3)
        rec2 = job2.result(10)
        assert job2.cached and rec2.path == rec.path
        assert [e.kind for e in job2.history] == ["validated", "cached", "done"]
        assert sim.requests() == []  # not even the model list: it is cached on disk
    finally:
        again.close()


def test_expired_result_url_is_refreshed(sim: Any, session: Session, clip: Path) -> None:
    sim.faults({"kind": "expired_url"})
    rec = session.transform(clip, 2000, duration=3).result(60)
    assert hash_file(rec.path) == rec.sha
    downloads = sim.requests("/sim/results/")
    assert next(d["status"] for d in downloads) == 403
    assert downloads[-1]["status"] == 200
    assert sim.generate_calls() == 1


def test_corrupted_cached_file_is_detected_and_repaired(
    sim: Any, session: Session, clip: Path
) -> None:
    rec = session.transform(clip, 2000, duration=3).result(60)
    Path(rec.path).write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="damaged"):
        job = session.transform(clip, 2000, duration=3)
        rec2 = job.result(60)
    assert not job.cached
    assert rec2.sha == rec.sha and hash_file(rec2.path) == rec.sha
    assert session.cache.verify(rec.key, full=True)
    assert sim.generate_calls() == 1  # re-downloaded from the same job, not regenerated

    Path(rec.path).unlink()
    with pytest.warns(UserWarning, match="missing"):
        rec3 = session.transform(clip, 2000, duration=3).result(60)
    assert hash_file(rec3.path) == rec.sha and sim.generate_calls() == 1


def test_damaged_file_whose_job_is_gone_is_regenerated(
    sim: Any, session: Session, clip: Path
) -> None:
    rec = session.transform(clip, 2000, duration=3).result(60)
    Path(rec.path).write_bytes(b"x")
    sim.faults({"kind": "lost_job", "times": 3})
    with pytest.warns(UserWarning):
        rec2 = session.transform(clip, 2000, duration=3).result(60)
    assert sim.generate_calls() == 2
    assert hash_file(rec2.path) == rec2.sha
    assert session.usage.spent == 60  # the regeneration is counted as spend too


def test_queue_limit_is_respected_with_local_queue_positions(
    sim: Any, session: Session, clip: Path
) -> None:
    sim.config(queue_limit=1)
    events: dict[int, list[JobEvent]] = {0: [], 1: [], 2: []}
    jobs = []
    for seed in range(3):
        job = session.transform(clip, 2000, duration=3, seed=seed)
        job.subscribe(events[seed].append)
        jobs.append(job)
    for job in jobs:
        job.result(120)
    raw_seen = {e.raw_status for evs in events.values() for e in evs}
    assert "WAITING" not in raw_seen  # the server never had to queue: we never exceeded it
    positions = [
        e.queue_position for evs in events.values() for e in evs if e.kind == "queued_locally"
    ]
    assert 2 in positions and 1 in positions
    assert any(e.state == JobState.LOCAL_QUEUE for evs in events.values() for e in evs)
    # server-side intervals (submitting .. success seen) never overlap
    spans = []
    for evs in events.values():
        start = next(e.ts for e in evs if e.kind == "submitting")
        end = next(e.ts for e in evs if e.kind == "status" and e.raw_status == "success")
        spans.append((start, end))
    spans.sort()
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end
    assert sim.generate_calls() == 3


def test_next_queued_job_is_submitted_when_the_previous_is_seen_done_not_downloaded(
    sim: Any, session: Session, clip: Path
) -> None:
    """The server frees its slot when a job finishes, so the local slot goes back as soon as a
    poll sees the terminal status: the next job's paid POST does not wait for the download."""
    sim.config(queue_limit=1, download_rate=40_000)  # a result takes seconds to download
    events: dict[int, list[JobEvent]] = {0: [], 1: []}
    jobs = []
    for seed in range(2):
        job = session.transform(clip, 2000, duration=3, seed=100 + seed)
        job.subscribe(events[seed].append)
        jobs.append(job)
    for job in jobs:
        job.result(120)
    first, second = events[0], events[1]
    seen_done = next(e.ts for e in first if e.kind == "status" and e.raw_status == "success")
    downloaded = next(e.ts for e in first if e.kind == "done")
    submitting = next(e.ts for e in second if e.kind == "submitting")
    assert downloaded - seen_done > 0.5  # the throttle made the first download slow
    assert seen_done <= submitting < downloaded
    raw_seen = {e.raw_status for evs in events.values() for e in evs}
    assert "WAITING" not in raw_seen  # never over the account's queue limit on the server
    assert sim.generate_calls() == 2


def test_budget_refusal_makes_no_http_call(sim: Any, tmp_path: Path, clip: Path) -> None:
    s = make_session(sim, tmp_path / "cache", budget=20)
    try:
        s.styles()  # warm the model list cache
        sim.clear_requests()
        with pytest.raises(BudgetExceeded, match="estimate"):
            s.transform(clip, 2000, duration=3, resolution="720p")  # 3 s x 10/s = 30 > 20
        assert sim.requests() == []
        job = s.transform(clip, 2000, duration=3, resolution="540p")  # 15 <= 20
        with pytest.raises(BudgetExceeded):  # 15 pending + 15 > 20
            s.transform(clip, 2000, duration=3, resolution="540p", seed=7)
        assert job.result(60).cost == 15
        assert s.usage.spent == 15
        assert sim.generate_calls() == 1
    finally:
        s.close()


def test_deadline_raises_timed_out_and_job_stays_resumable(
    sim: Any, session: Session, clip: Path
) -> None:
    sim.config(pending_seconds=3.0)
    job = session.transform(clip, 2000, duration=3, timeout=0.3)
    with pytest.raises(JobTimedOut) as info:
        job.result(30)
    assert info.value.job_id == job.id is not None
    assert f"resume {job.id}" in str(info.value)
    assert job.history[-1].kind == "timed_out"
    entry = session.ledger.get(job.key)
    assert entry is not None and entry.state == "timed_out" and entry.resumable
    sim.config(pending_seconds=0.3)
    rec = session.resume(job.id).result(60)  # type: ignore[arg-type]
    assert hash_file(rec.path) == rec.sha
    assert sim.generate_calls() == 1


def test_rerun_after_timeout_reattaches(sim: Any, session: Session, clip: Path) -> None:
    sim.config(pending_seconds=2.0)
    with pytest.raises(JobTimedOut):
        session.transform(clip, 2000, duration=3, timeout=0.2).result(30)
    rec = session.transform(clip, 2000, duration=3).result(60)
    assert rec.job_id is not None and sim.generate_calls() == 1


def test_failed_job_raises_and_rerun_submits_again(sim: Any, session: Session, clip: Path) -> None:
    sim.faults({"kind": "job_failed"})
    job = session.transform(clip, 2000, duration=3)
    with pytest.raises(JobFailed) as info:
        job.result(60)
    assert info.value.job_id == job.id
    assert job.state is JobState.FAILED and job.history[-1].kind == "failed"
    assert session.ledger.get(job.key).state == "failed"  # type: ignore[union-attr]
    with pytest.raises(JobFailed):
        session.resume(job.id)  # type: ignore[arg-type]
    rec = session.transform(clip, 2000, duration=3).result(60)
    assert hash_file(rec.path) == rec.sha and sim.generate_calls() == 2


def test_terminal_events_arrive_after_the_handle_settles(
    sim: Any, session: Session, clip: Path
) -> None:
    """A listener reacting to "failed" (the widget's Retry) gets a NEW job from transform(),
    and a listener reacting to "done" finds the handle finished with its result."""
    sim.faults({"kind": "job_failed"})
    job = session.transform(clip, 2000, duration=3)
    seen: dict[str, Any] = {}
    retried: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def on_event(ev: JobEvent) -> None:
        if ev.kind == "failed" and not retried.done():
            seen["done_at_failed"] = job.done()
            retried.set_result(session.transform(clip, 2000, duration=3, force=True))

    job.subscribe(on_event)
    again = retried.result(60)
    assert seen["done_at_failed"] is True
    assert again is not job

    def on_done(ev: JobEvent) -> None:
        if ev.kind == "done":
            seen["done_at_done"] = again.done()
            seen["path_at_done"] = again.path

    again.subscribe(on_done)
    rec = again.result(60)
    assert seen.get("done_at_done") is True and seen.get("path_at_done") == Path(rec.path)
    assert sim.generate_calls() == 2


def test_reattached_job_counts_elapsed_from_its_submission(
    sim: Any, session: Session, clip: Path
) -> None:
    sim.config(processing_seconds=4.0)
    job = session.transform(clip, 2000, duration=3)
    submitted = threading.Event()
    job.subscribe(lambda ev: ev.kind == "submitted" and submitted.set())
    assert submitted.wait(30)
    job.cancel_watch()
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(30)
    time.sleep(1.0)
    again = session.resume(job.id)  # type: ignore[arg-type]
    rec = again.result(60)
    reattached = next(ev for ev in again.history if ev.kind == "submitted")
    assert reattached.job_id == job.id and rec.job_id == job.id
    assert reattached.elapsed >= 1.0  # the time since submission, not since resume()
    assert sim.generate_calls() == 1


def test_generate_that_never_left_is_not_an_orphan(sim: Any, tmp_path: Path, clip: Path) -> None:
    """A connect error on the generate POST proves nothing was sent: the entry is marked failed
    (a re-run submits normally) instead of an orphan that needs --resubmit."""
    import httpx
    from simctl import start_sim

    with httpx.Client(headers={"Authorization": f"Bearer {sim.api_key}"}) as http:
        url = http.put(f"{sim.base_url}/sim/uploads", content=clip.read_bytes()).json()["url"]
    gone = start_sim(tmp_path / "gone")
    cache_dir = tmp_path / "cache"
    first = make_session(gone, cache_dir, max_retries=1)
    try:
        first.styles()  # cached on disk: transform() validates without the server
        gone.stop()  # nothing listens on its port any more
        job = first.transform(url, 2000, duration=3)
        with pytest.raises(TransportError, match="cannot connect") as info:
            job.result(60)
        assert info.value.sent is False and "may have been submitted" not in str(info.value)
        assert first.ledger.get(job.key).state == "failed"  # type: ignore[union-attr]
    finally:
        first.close()
    second = make_session(sim, cache_dir)  # same backend identity ("simulated"), same key
    try:
        rec = second.transform(url, 2000, duration=3).result(60)
    finally:
        second.close()
    assert rec.job_id is not None and sim.generate_calls() == 1


def test_rejected_generate_is_an_error_not_an_orphan(
    sim: Any, session: Session, clip: Path
) -> None:
    sim.faults({"kind": "reject_generate", "code": 429, "msg": "daily limit exceeded"})
    job = session.transform(clip, 2000, duration=3)
    with pytest.raises(APIError, match="daily limit"):
        job.result(60)
    entry = session.ledger.get(job.key)
    assert entry is not None and entry.state == "failed" and not entry.is_orphan
    assert sim.generate_calls() == 1


def test_unknown_status_is_shown_and_polling_goes_on(
    sim: Any, session: Session, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim.faults({"kind": "unknown_status", "status": "Rendering-Phase-2", "times": 2})
    with caplog.at_level(logging.WARNING, logger="goenhance_nb.engine"):
        job = session.transform(clip, 2000, duration=3)
        job.result(60)
    raws = [e.raw_status for e in job.history if e.kind == "status"]
    assert "Rendering-Phase-2" in raws and raws[-1] == "success"
    assert sum("unknown status" in r.message for r in caplog.records) == 1


def test_poll_errors_back_off_and_recover(sim: Any, session: Session, clip: Path) -> None:
    sim.faults(
        {"kind": "http_500", "path": "/api/v1/jobs/detail", "times": 3},
        {"kind": "malformed_json", "path": "/api/v1/jobs/detail", "times": 1},
    )
    rec = session.transform(clip, 2000, duration=3).result(120)
    assert hash_file(rec.path) == rec.sha and sim.generate_calls() == 1


def test_events_reach_listeners_and_a_failing_listener_is_skipped(
    sim: Any, session: Session, clip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    def broken(ev: JobEvent) -> None:
        raise RuntimeError("listener bug")

    with caplog.at_level(logging.ERROR, logger="goenhance_nb.engine"):
        job = session.transform(clip, 2000, duration=3)
        job.subscribe(broken)
        job.subscribe(lambda ev: seen.append(ev.kind))
        job.result(60)
        late: list[str] = []
        job.subscribe(lambda ev: late.append(ev.kind))
        session.engine.run(asyncio.sleep(0))  # let the replay run on the engine thread
    assert {"submitting", "submitted", "status", "downloading", "done"} <= set(seen)
    assert seen[-1] == "done" and late == ["done"]
    assert any("listener" in r.message for r in caplog.records)


def test_await_job_in_another_loop(sim: Any, session: Session, clip: Path) -> None:
    job = session.transform(clip, 2000, duration=3)

    async def main() -> str:
        rec = await job
        return rec.sha

    assert asyncio.run(main()) == job.result().sha


def test_cancel_watch_leaves_the_job_resumable(sim: Any, session: Session, clip: Path) -> None:
    sim.config(pending_seconds=2.0)
    job = session.transform(clip, 2000, duration=3)
    job.subscribe(lambda ev: job.cancel_watch() if ev.job_id is not None else None)
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(30)
    assert job.history[-1].kind == "watch_cancelled"
    assert session.ledger.get(job.key).state == "watch_cancelled"  # type: ignore[union-attr]
    sim.config(pending_seconds=0.3)
    rec = session.resume(job.key[:12]).result(60)
    assert hash_file(rec.path) == rec.sha and sim.generate_calls() == 1


def test_same_key_twice_in_one_process_is_one_job(sim: Any, session: Session, clip: Path) -> None:
    a = session.transform(clip, 2000, duration=3)
    b = session.transform(clip, 2000, duration=3)
    assert a is b
    a.result(60)
    assert sim.generate_calls() == 1


@pytest.mark.parametrize("second_session", [False, True])
def test_blocking_calls_from_an_engine_callback_do_not_deadlock(
    sim: Any, session: Session, clip: Path, tmp_path: Path, second_session: bool
) -> None:
    """A listener runs on the engine thread; a blocking result()/credits() there is re-entrant,
    also when another Session's engine started later."""
    if second_session:
        other = make_session(sim, tmp_path / "other")
        session.engine.loop  # noqa: B018 - start ours first
        other.engine.loop  # noqa: B018 - then another engine registers its loop
    out: dict[str, Any] = {}
    done = concurrent.futures.Future()  # type: ignore[var-annotated]

    def on_event(ev: JobEvent) -> None:
        if ev.kind == "done" and not done.done():
            try:
                inner = session.transform(clip, 2004, duration=3)
                out["path"] = inner.result(60).path
                out["credits"] = session.credits().count
                done.set_result(True)
            except BaseException as exc:  # report to the test thread
                done.set_exception(exc)

    job = session.transform(clip, 2000, duration=3)
    job.subscribe(on_event)
    job.result(60)
    assert done.result(90) is True
    assert Path(out["path"]).is_file() and out["credits"] >= 0
    assert sim.generate_calls() == 2
    if second_session:
        other.close()


def test_deadline_uses_the_injected_clock(sim: Any, session: Session, clip: Path) -> None:
    """The deadline is measured on the engine's clock: advancing a fake clock times the job out
    without waiting in real time."""
    now = [1000.0]
    session.engine.clock = lambda: now[0]
    sim.config(pending_seconds=30.0)

    jumped: list[bool] = []

    def jump(ev: JobEvent) -> None:
        if ev.kind == "status" and not jumped:  # once polling (and its deadline) started
            jumped.append(True)
            now[0] += 601.0  # ten minutes "later"

    job = session.transform(clip, 2000, duration=3, timeout=600)
    job.subscribe(jump)
    with pytest.raises(JobTimedOut):
        job.result(60)
    assert job.history[-1].elapsed >= 601.0
    assert session.ledger.get(job.key).resumable  # type: ignore[union-attr]


def test_truncated_download_is_resumed_with_range(sim: Any, session: Session, clip: Path) -> None:
    sim.faults({"kind": "truncated_download", "after_bytes": 50_000})
    rec = session.transform(clip, 2000, duration=3).result(60)
    assert hash_file(rec.path) == rec.sha
    statuses = [d["status"] for d in sim.requests("/sim/results/")]
    assert statuses[0] == 200 and 206 in statuses[1:]


def test_waiting_in_the_local_queue_does_not_use_up_the_deadline(
    sim: Any, session: Session, clip: Path
) -> None:
    now = [0.0]
    session.engine.clock = lambda: now[0]
    sim.config(queue_limit=1)
    first = session.transform(clip, 2000, duration=3, seed=11)
    second = session.transform(clip, 2000, duration=3, seed=12, timeout=600)

    def on_event(ev: JobEvent) -> None:
        if ev.kind == "queued_locally":
            now[0] += 1000.0  # a long local wait (on the engine's clock)

    second.subscribe(on_event)
    first.result(60)
    rec = second.result(60)
    assert any(e.kind == "queued_locally" for e in second.history)
    assert hash_file(rec.path) == rec.sha


def test_a_huge_unknown_status_is_bounded_for_display(
    sim: Any, session: Session, clip: Path
) -> None:
    sim.faults({"kind": "unknown_status", "status": "Z" * 5000 + "\nline2", "times": 1})
    job = session.transform(clip, 2000, duration=3)
    job.result(60)
    odd = [e.raw_status for e in job.history if e.raw_status and e.raw_status.startswith("Z")]
    assert odd and all(len(r) <= 80 and "\n" not in r for r in odd)


# -- issue 13 point 4: per-request retries only in the transport ----------------------------
DETAIL = "/api/v1/jobs/detail"
RESULTS = "/sim/results/"


@pytest.mark.parametrize(
    ("fault", "path", "polls"),
    [
        pytest.param({"kind": "http_500", "path": DETAIL}, DETAIL, True, id="polls-keep-failing"),
        pytest.param({"kind": "reset", "path": RESULTS}, RESULTS, False, id="download-drops"),
        pytest.param(
            {"kind": "short_download", "path": RESULTS, "after_bytes": 20_000},
            RESULTS,
            False,
            id="download-keeps-truncating",
        ),
    ],
)
def test_a_failing_host_costs_a_bounded_number_of_requests_per_job(
    sim: Any, tmp_path: Path, clip: Path, fault: dict[str, Any], path: str, polls: bool
) -> None:
    # Only the transport re-sends a request (max_retries + 1 attempts); a download resumes a
    # dropped body at most max_retries times; the poll loop gives up after max_poll_errors + 1
    # failed polls. Nothing stacks on top: before issue 13 these cost 45, 25 and 25 requests.
    s = make_session(sim, tmp_path / "cache")  # the default max_retries (4)
    s.client.transport.backoff_base = 0.001  # the transport's backoff, not its count, is faster
    attempts = s.settings.max_retries + 1
    try:
        sim.faults({**fault, "times": 1000})
        job = s.transform(clip, 2000, duration=3)
        with pytest.raises((APIError, TransportError)):
            job.result(120)
        sent = len(sim.requests(path))
        expected = (s.engine.max_poll_errors + 1) * attempts if polls else attempts
        assert sent == expected == (20 if polls else 5)  # with the default settings
        assert sim.generate_calls() == 1
        entry = s.ledger.get(job.key)
        assert entry is not None and entry.resumable  # the job stays resumable
    finally:
        s.close()


def test_run_from_the_engine_thread_leaves_the_registered_loop_alone(
    sim: Any, session: Session, tmp_path: Path
) -> None:
    from goenhance_nb import _sync

    assert session.engine.loop is not None
    other = make_session(sim, tmp_path / "other")
    try:
        registered = other.engine.loop  # started last: the loop run_sync hands work to
        assert _sync.engine_loop() is registered

        async def inner() -> int:
            return 42

        async def outer() -> int:  # on session's engine thread: a re-entrant run
            return session.engine.run(inner())

        assert session.engine.run(outer()) == 42
        assert _sync.engine_loop() is registered
    finally:
        other.close()
