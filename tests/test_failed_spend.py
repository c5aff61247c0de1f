"""A job that fails after it was charged: the spend says it may be refunded (issue 17 point 3).

The API says nothing about refunds, so the session keeps the charge in its spend (the budget
counts it) and reports it as ``maybe_refunded``; the credits line says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

import goenhance_nb
from goenhance_nb._errors import JobFailed
from goenhance_nb._session import Session


def test_a_failed_charged_job_is_reported_as_maybe_refunded(
    sim: Any, session: Session, clip: Path
) -> None:
    sim.faults({"kind": "job_failed"})
    job = session.transform(clip, 2000, duration=3, resolution="540p")
    with pytest.raises(JobFailed):
        job.result(60)
    spend = session.spend()
    assert job.cost == 15 and spend.spent == 15
    assert spend.maybe_refunded == 15
    ok = session.transform(clip, 2006, duration=3, resolution="540p")
    ok.result(60)
    spend = session.spend()
    assert spend.spent == 30 and spend.maybe_refunded == 15  # only the failed one


def test_the_credits_line_says_what_may_be_refunded(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    cwd_sample: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim.faults({"kind": "job_failed"})
    run = ip.run_cell("%goenhance run sample.mp4 --style 2000 -d 3 -r 540p --wait")
    assert isinstance(run.error_in_exec, goenhance_nb.JobFailed)
    capsys.readouterr()
    ip.run_line_magic("goenhance", "credits")
    out = capsys.readouterr().out
    assert "session spend 15 (incl. 15 on failed jobs, may be refunded)" in out, out


def test_the_session_knows_the_accounts_queue_limit_after_a_submission(
    sim: Any, session: Session, clip: Path
) -> None:
    """The status widget's ETA counts the local queue wait with it (issue 17 point 15)."""
    assert session.queue_limit is None  # nothing asked yet: no HTTP for this
    session.transform(clip, 2000, duration=3, resolution="540p").result(60)
    assert session.queue_limit == 3  # the simulator's queueLimit
