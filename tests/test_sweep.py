"""Sweeps (issue 14 point 5, first part): plan, caps before anything is sent, no duplicates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from workers.support import make_session, wait_until

from goenhance_nb._errors import BudgetExceeded, InputError
from goenhance_nb._sweep import sweep


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
        wait_until(lambda: all(i.job is not None and i.job.id for i in first.items), "job ids")
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


def test_one_progress_bar_follows_the_jobs_events(sim: Any, tmp_path: Path, clip: Path) -> None:
    """The live bar (no kernel here: forced) is driven by the jobs' events through the throttle:
    it reaches every item finished without anyone calling flush, counts cached and done apart,
    adds up the credits charged, and ends 'success'."""
    from goenhance_nb.widgets._sweep_progress import SweepProgress

    s = make_session(sim, tmp_path / "c")
    try:
        s.transform(clip, 2000, duration=3, resolution="540p", seed=11).result(timeout=120)
        kw: dict[str, Any] = {"duration": 3, "resolution": "540p", "session": s}
        run = sweep(clip, styles=2000, grid={"seed": [11, 12, 13]}, wait=False, **kw)
        bar = SweepProgress(run, interval=0.05)
        try:
            assert bar.bar.max == 3
            wait_until(bar.settled.is_set, "the bar to settle", timeout=120)
            assert bar.bar.value == 3 and bar.bar.bar_style == "success"
            assert run.tally() == {
                "done": 2,
                "running": 0,
                "cached": 1,
                "failed": 0,
                "planned": 0,
                "credits": 30,
            }
            assert bar.label.value == (
                "3/3 finished: 2 done, 0 running, 1 cached, 0 failed; 30 credits so far"
            )
            assert bar._throttle.runs >= 2  # rendered from events, not only at creation
        finally:
            bar.close()
    finally:
        s.close()


def test_a_failed_item_turns_the_bar_red(sim: Any, tmp_path: Path, clip: Path) -> None:
    from goenhance_nb.widgets._sweep_progress import SweepProgress

    s = make_session(sim, tmp_path / "c")
    try:
        sim.faults({"kind": "job_failed"})
        run = sweep(clip, styles=2000, grid={"seed": [21]}, duration=3, wait=False, session=s)
        bar = SweepProgress(run, interval=0.05)
        try:
            wait_until(bar.settled.is_set, "the bar to settle", timeout=120)
            assert bar.bar.bar_style == "danger" and "1 failed" in bar.label.value
        finally:
            bar.close()
    finally:
        s.close()


def test_headless_sweep_prints_one_summary_line(
    sim: Any, tmp_path: Path, clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Outside a kernel (as in a terminal; nbclient runs are covered by the notebook test) the
    progress display is one static line at the end, and no widget is made."""
    s = make_session(sim, tmp_path / "c")
    try:
        sweep(clip, styles=[2000, 2006], duration=3, resolution="540p", session=s)
        out = capsys.readouterr().out
        assert out.splitlines() == [
            "sweep done, 2/2 finished: 2 done, 0 running, 0 cached, 0 failed; 30 credits so far"
        ]
        sweep(clip, styles=[2000, 2006], duration=3, resolution="540p", session=s, progress=False)
        assert capsys.readouterr().out == ""
    finally:
        s.close()


@pytest.mark.slow
def test_live_bar_in_a_kernel_leaves_a_summary_line_and_the_grid_as_regular_outputs(
    sim: Any, sim_env: dict[str, str], clip: Path, tmp_path: Path
) -> None:
    """A real kernel with the bar on (``progress=True``, as where someone watches): the bar is
    a widget while the sweep runs; the saved notebook keeps no widget view, only the summary
    line that replaced it and the grid as HTML with relative video paths."""
    import nbformat

    from goenhance_nb._demo import execute_notebook

    work = tmp_path / "work"
    work.mkdir()
    (work / "clip.mp4").write_bytes(clip.read_bytes())
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import goenhance_nb\n"
                "s = goenhance_nb.sweep('clip.mp4', styles=[2000, 2006], duration=3,"
                " resolution='540p', progress=True)\n"
                "s.grid()"
            )
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    nbformat.write(nb, tmp_path / "s.ipynb")
    nb, err = execute_notebook(tmp_path / "s.ipynb", work)
    assert err is None, err
    outs = nb.cells[0].outputs
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    bars = [m["state"] for m in state["state"].values() if m["model_name"] == "IntProgressModel"]
    assert [(b["value"], b["max"], b["bar_style"]) for b in bars] == [(2, 2, "success")]
    assert not [o for o in outs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    summary = [o for o in outs if "goenhance-sweep-summary" in str(o.get("data", {}))]
    assert len(summary) == 1
    assert summary[0]["data"]["text/plain"] == (
        "sweep done, 2/2 finished: 2 done, 0 running, 0 cached, 0 failed; 30 credits so far"
    )
    grid = [o for o in outs if "goenhance-grid" in str(o.get("data", {}).get("text/html", ""))]
    assert len(grid) == 1 and 'src="goenhance_outputs/' in grid[0]["data"]["text/html"]
