"""``wait_all(jobs)``: one progress display for a list of jobs (issue 17 point 14).

Table tests of the pure tally and line (no simulator), the live bar against the simulator,
the headless summary line, and a real kernel where the bar ends as a static output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from workers.support import make_session

from goenhance_nb._errors import JobFailed
from goenhance_nb._progress import JobsTally, progress_line, tally_jobs, wait_all


@dataclass
class _FakeJob:
    """Only what the tally reads: done(), record, cached, error, cost."""

    finished: bool
    record: object = None
    cached: bool = False
    error: BaseException | None = None
    cost: int | None = None

    def done(self) -> bool:
        return self.finished


RESULT = object()


@pytest.mark.parametrize(
    ("job", "want"),
    [
        (_FakeJob(False), JobsTally(running=1)),
        (_FakeJob(False, cost=30), JobsTally(running=1, credits=30)),  # charged, not done
        (_FakeJob(True, RESULT, cost=15), JobsTally(done=1, credits=15)),
        (_FakeJob(True, RESULT, cached=True, cost=15), JobsTally(cached=1)),  # not charged now
        (_FakeJob(True, error=JobFailed("x"), cost=15), JobsTally(failed=1, credits=15)),
        (_FakeJob(True), JobsTally(stopped=1)),  # finished without result or error
    ],
)
def test_tally_counts_each_kind_of_job(job: _FakeJob, want: JobsTally) -> None:
    assert tally_jobs([job]) == want  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("tally", "line"),
    [
        (JobsTally(), "0/0 finished: 0 done, 0 running, 0 cached, 0 failed; 0 credits so far"),
        (
            JobsTally(done=2, running=1, cached=1, credits=30),
            "3/4 finished: 2 done, 1 running, 1 cached, 0 failed; 30 credits so far",
        ),
        (
            JobsTally(failed=1, stopped=2),
            "3/3 finished: 0 done, 0 running, 0 cached, 1 failed, 2 not watching; 0 credits so far",
        ),
    ],
)
def test_progress_line(tally: JobsTally, line: str) -> None:
    assert progress_line(tally) == line


def test_an_empty_list_is_finished_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert wait_all([]) == []
    assert capsys.readouterr().out == (
        "done, 0/0 finished: 0 done, 0 running, 0 cached, 0 failed; 0 credits so far\n"
    )


def test_live_bar_follows_the_jobs_and_ends_as_one_summary_line(
    sim: Any, tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``progress=True`` (no kernel here: forced): the bar is a JobsProgress driven by the
    jobs' events; once the wait ends it is closed and one summary line is shown instead."""
    from goenhance_nb.widgets import _sweep_progress

    made: list[Any] = []
    real = _sweep_progress.JobsProgress

    def spy(*args: Any, **kwargs: Any) -> Any:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(_sweep_progress, "JobsProgress", spy)
    shown: list[Any] = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    s = make_session(sim, tmp_path / "c")
    try:
        s.transform(clip, 2000, duration=3, resolution="540p", seed=31).result(timeout=120)
        jobs = [
            s.transform(clip, 2000, duration=3, resolution="540p", seed=seed)
            for seed in (31, 32, 33)
        ]
        out = wait_all(jobs, progress=True)
        assert out == jobs and all(j.done() for j in jobs)
        (bar,) = made
        assert bar.settled.is_set()
        assert bar.bar.value == 3 and bar.bar.max == 3 and bar.bar.bar_style == "success"
        assert bar.label.value == (
            "3/3 finished: 2 done, 0 running, 1 cached, 0 failed; 30 credits so far"
        )
        assert bar._unsubscribe == []  # closed: no listener left on the jobs
    finally:
        s.close()


def test_headless_wait_all_prints_one_line_and_a_failure_does_not_stop_it(
    sim: Any, tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = make_session(sim, tmp_path / "c")
    try:
        sim.faults({"kind": "job_failed"})
        bad = s.transform(clip, 2000, duration=3, resolution="540p", seed=41)
        with pytest.raises(JobFailed):
            bad.result(timeout=120)
        good = s.transform(clip, 2006, duration=3, resolution="540p", seed=41)
        assert wait_all([bad, good]) == [bad, good]
        assert capsys.readouterr().out.splitlines() == [
            "done, 2/2 finished: 1 done, 0 running, 0 cached, 1 failed; 30 credits so far"
        ]
        assert wait_all([good], progress=False) == [good]
        assert capsys.readouterr().out == ""
    finally:
        s.close()


def test_timeout_is_for_the_whole_list_and_says_what_still_runs(
    sim: Any, tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = make_session(sim, tmp_path / "c")
    try:
        sim.config(processing_seconds=30)
        job = s.transform(clip, 2000, duration=3, resolution="540p", seed=51)
        with pytest.raises(TimeoutError, match="1 of 1 jobs still running"):
            wait_all([job], timeout=0.2)
        assert capsys.readouterr().out.startswith("timed out, 0/1 finished: 0 done, 1 running")
        job.cancel_watch()
    finally:
        s.close()


@pytest.mark.slow
def test_live_bar_in_a_kernel_ends_as_a_static_summary_line(
    sim: Any, sim_env: dict[str, str], clip: Path, tmp_path: Path
) -> None:
    """A real kernel with the bar on (as where someone watches): the saved notebook keeps no
    widget view, only the summary line that replaced the bar."""
    import nbformat

    from goenhance_nb._demo import execute_notebook

    work = tmp_path / "work"
    work.mkdir()
    (work / "clip.mp4").write_bytes(clip.read_bytes())
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import goenhance_nb\n"
                "from goenhance_nb import wait_all\n"
                "jobs = [goenhance_nb.transform('clip.mp4', s, duration=3, resolution='540p')"
                " for s in (2000, 2006)]\n"
                "done = wait_all(jobs, progress=True)\n"
                "len(done)"
            )
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(nb, tmp_path / "w.ipynb")
    nb, err = execute_notebook(tmp_path / "w.ipynb", work)
    assert err is None, err
    outs = nb.cells[0].outputs
    assert not [o for o in outs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    summary = [o for o in outs if "goenhance-jobs-summary" in str(o.get("data", {}))]
    assert len(summary) == 1, outs
    assert summary[0]["data"]["text/plain"] == (
        "done, 2/2 finished: 2 done, 0 running, 0 cached, 0 failed; 30 credits so far"
    )
    assert [o["data"]["text/plain"] for o in outs if o["output_type"] == "execute_result"] == ["2"]
