"""The Job handle on its own (no engine, no simulator): events, on_finish, the outcome."""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from goenhance_nb._cache import ResultRecord
from goenhance_nb._errors import JobFailed
from goenhance_nb._inputs import InputRef
from goenhance_nb._job import Job, JobEvent, JobRequest
from goenhance_nb._lifecycle import EventKind, JobState
from goenhance_nb._records import JobSpec

T = TypeVar("T")


class FakeDriver:
    """Runs everything at once, as if called on the engine thread."""

    def __init__(self) -> None:
        self.now = 100.0
        self.stopped: list[Job] = []

    def clock(self) -> float:
        return self.now

    def on_engine_thread(self) -> bool:
        return False

    def call_soon(self, fn: Callable[[], Any]) -> None:
        fn()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        raise AssertionError("not used here")

    def stop_watching(self, job: Job) -> None:
        self.stopped.append(job)


def make_job(driver: FakeDriver | None = None) -> Job:
    request = JobRequest(
        key="k" * 64,
        spec=JobSpec(model=2000, duration=3),
        input=InputRef(kind="file", name="clip.mp4", content_hash="h" * 64, size=1),
        model_version="1",
        style_label="Anime",
        backend="simulated",
        reference_url=None,
    )
    return Job(driver or FakeDriver(), request)


def record(tmp_path: Path) -> ResultRecord:
    path = tmp_path / "r.mp4"
    path.write_bytes(b"x")
    return ResultRecord(
        key="k" * 64,
        path=str(path),
        sha="s",
        size=1,
        job_id="j1",
        model=2000,
        style_label="Anime",
        model_version="1",
        params={},
        input_hash="h" * 64,
        cost=30,
        backend="simulated",
        created=0.0,
    )


def end(job: Job, kind: EventKind, tmp_path: Path) -> None:
    """Settle ``job`` the way the engine does: outcome first, then the ending event."""
    if kind is EventKind.DONE:
        rec = record(tmp_path)
        job._resolve(rec)
        job._emit(kind, result=rec)
    elif kind is EventKind.WATCH_CANCELLED:
        job._abandon()
        job._emit(kind)
    else:
        err = JobFailed("j1", "boom")
        job._reject(err)
        job._emit(kind, error=err)


def test_a_new_handle_is_local_and_typed() -> None:
    job = make_job()
    assert job.state is JobState.LOCAL and not job.done() and job.record is None
    ev = job._emit(EventKind.QUEUED_LOCALLY, state=JobState.LOCAL_QUEUE, queue_position=2)
    assert isinstance(ev, JobEvent) and ev.kind is EventKind.QUEUED_LOCALLY
    assert ev.state is JobState.LOCAL_QUEUE and job.history == [ev]


@pytest.mark.parametrize(
    ("before", "kind", "finishes"),
    [
        ([EventKind.SUBMITTED, EventKind.STATUS], EventKind.DONE, True),
        ([EventKind.SUBMITTED], EventKind.FAILED, True),
        ([EventKind.SUBMITTED], EventKind.TIMED_OUT, True),
        ([EventKind.SUBMITTED], EventKind.WATCH_CANCELLED, True),
        ([EventKind.SUBMITTED, EventKind.STATUS, EventKind.DOWNLOADING], None, False),
    ],
)
def test_on_finish_runs_once_when_the_job_ends_for_this_session(
    tmp_path: Path, before: list[EventKind], kind: EventKind | None, finishes: bool
) -> None:
    job = make_job()
    seen: list[Job] = []
    job.on_finish(seen.append)
    for k in before:
        job._emit(k)
    assert seen == []
    if kind is not None:
        end(job, kind, tmp_path)
        job._emit(EventKind.STATUS)  # nothing after the end calls it again
    assert seen == ([job] if finishes else [])
    if finishes:
        assert job.final_event is not None and job.final_event.kind is kind


def test_a_cache_hit_finishes_on_its_done_with_the_record_set(tmp_path: Path) -> None:
    job = make_job()
    records: list[ResultRecord | None] = []
    job.on_finish(lambda j: records.append(j.record))
    rec = record(tmp_path)
    job._emit(EventKind.CACHED, result=rec)
    assert records == []  # "cached" is followed by "done"
    job._resolve(rec)
    job._emit(EventKind.DONE, result=rec)
    assert records == [rec]


def test_on_finish_after_the_end_runs_at_once_and_a_failing_callback_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = make_job()

    def broken(j: Job) -> None:
        raise RuntimeError("callback bug")

    seen: list[str] = []
    job.on_finish(broken)
    job.on_finish(lambda j: seen.append("early"))
    with caplog.at_level(logging.ERROR, logger="goenhance_nb.engine"):
        end(job, EventKind.FAILED, tmp_path)
        job.on_finish(broken)
    job.on_finish(lambda j: seen.append("late"))
    assert seen == ["early", "late"]
    assert sum("callback bug" in (r.exc_text or "") for r in caplog.records) == 2


def test_the_outcome_settles_before_the_ending_event(tmp_path: Path) -> None:
    job = make_job()
    done_at_event: list[bool] = []
    job.subscribe(lambda ev: done_at_event.append(job.done()) if ev.kind.ends_watch else None)
    end(job, EventKind.FAILED, tmp_path)
    assert done_at_event == [True]
    with pytest.raises(JobFailed):
        job.result(0)
    assert isinstance(job.error, JobFailed)


def test_cancel_watch_asks_the_driver_and_a_cancelled_outcome_raises(tmp_path: Path) -> None:
    driver = FakeDriver()
    job = make_job(driver)
    job.cancel_watch()
    assert driver.stopped == [job]
    end(job, EventKind.WATCH_CANCELLED, tmp_path)
    with pytest.raises(concurrent.futures.CancelledError):
        job.result(0)


def test_elapsed_counts_from_started() -> None:
    driver = FakeDriver()
    job = make_job(driver)
    driver.now += 7.5
    assert job._emit(EventKind.STATUS).elapsed == 7.5
