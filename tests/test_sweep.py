"""Sweeps (issue 14 point 5, first part): plan, caps before anything is sent, no duplicates."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from workers.support import make_session

from goenhance_nb._errors import BudgetExceeded, InputError
from goenhance_nb._sweep import sweep


def _wait_for(pred: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


def test_dry_run_plans_and_caps_refuse_before_anything_is_sent(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    s = make_session(sim, tmp_path / "c")
    try:
        s.transform(clip, 2000, duration=3, resolution="540p", seed=1).result(timeout=120)
        sim.clear_requests()
        kw: dict[str, Any] = {
            "styles": ["Anime Style", 2006],
            "grid": {"seed": [1, 2]},
            "duration": 3,
            "resolution": "540p",
            "session": s,
        }
        plan = sweep(clip, dry_run=True, **kw)
        assert plan.counts() == {"cached": 1, "new": 3}
        assert plan.new_jobs == 3 and plan.estimated_credits == 3 * 15  # 3 s x 5/s at 540p
        assert "3 new jobs, about 45 credits" in str(plan)
        with pytest.raises(BudgetExceeded, match="max_jobs=2"):
            sweep(clip, max_jobs=2, **kw)
        with pytest.raises(BudgetExceeded, match="max_credits=44"):
            sweep(clip, max_credits=44, **kw)
        with pytest.raises(InputError, match="unknown grid key"):
            sweep(clip, styles=2000, grid={"colour": ["red"]}, session=s)
        assert sim.generate_calls() == 0
        done = sweep(clip, max_jobs=3, max_credits=45, **kw)
        assert sim.generate_calls() == 3
        rows = done.frame()
        rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
        assert [r["status"] for r in rows] == ["cached", "done", "done", "done"]
        assert [(r["style"], r["seed"]) for r in rows] == [
            ("Anime Style", 1),
            ("Anime Style", 2),
            ("Oil Painting", 1),
            ("Oil Painting", 2),
        ]
        assert all(Path(r["path"]).is_file() for r in rows)
        assert "goenhance-result" in str(done.grid()["text/html"])
    finally:
        s.close()


def test_an_interrupted_sweep_rerun_sends_no_duplicate_job(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    kw: dict[str, Any] = {"styles": [2000, 2007], "grid": {"seed": [3, 4]}, "duration": 3}
    a = make_session(sim, tmp_path / "c")
    try:
        first = sweep(clip, wait=False, session=a, resolution="540p", **kw)
        _wait_for(lambda: all(i.job is not None and i.job.id for i in first.items))
    finally:
        a.close()  # the kernel goes away half-way: jobs stay in the ledger
    b = make_session(sim, tmp_path / "c")
    try:
        again = sweep(clip, session=b, resolution="540p", **kw)
        assert {r["status"] for r in again.records()} <= {"done", "cached"}
    finally:
        b.close()
    assert sim.generate_calls() == 4


def test_sweep_magic_plans_refuses_and_runs(
    sim: Any, tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    from goenhance_nb._magics import GoEnhanceMagics, parse_line

    with pytest.raises(UsageError, match="KEY=V1,V2"):
        parse_line("sweep a.mp4 --style 2000 --grid seed")
    with pytest.raises(UsageError, match="required"):
        parse_line("sweep a.mp4")
    m = GoEnhanceMagics(shell=InteractiveShell.instance())
    s = make_session(sim, tmp_path / "c")
    m.set_session(s)
    line = f"sweep {clip} --style 2000 --grid seed=5,6 -d 3 -r 540p"
    try:
        plan = m.goenhance(f"{line} --dry-run")
        assert plan.counts() == {"new": 2}
        assert "2 new jobs, about 30 credits" in capsys.readouterr().out
        with pytest.raises(BudgetExceeded):
            m.goenhance(f"{line} --max-jobs 1")
        assert sim.generate_calls() == 0
        done = m.goenhance(line)
        assert done.counts() == {"done": 2}
        assert sim.generate_calls() == 2
    finally:
        s.close()
