"""The benchmark harness works (issue 15 point 4, DECISIONS 24): ``python -m bench --smoke``
runs every figure P1-P9 once with tiny sizes and writes its table to a temporary path.

This checks that each figure produced numbers and that the report was written, never the
numbers themselves (no timed asserts). P8 needs Chromium: without it the figure is reported as
unavailable, which is a skip locally and a failure with CI=true (as tests/browser does).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIGURES = [f"P{i}" for i in range(1, 10)]

pytestmark = pytest.mark.slow


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_smoke_run_produces_every_figure(tmp_path: Path) -> None:
    out, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOENHANCE_")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--json", str(raw)],
        cwd=str(REPO),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert raw.exists(), proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(raw.read_text())
    status = result["status"]
    failed = {f: s for f, s in status.items() if s.startswith("failed")}
    assert not failed, f"{failed}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, proc.stderr[-4000:]

    unavailable = {f: s for f, s in status.items() if s.startswith("unavailable")}
    assert set(unavailable) <= {"P8"}, unavailable  # only the browser figure may lack its tools
    measured = [f for f in FIGURES if f not in unavailable]
    assert [f for f in FIGURES if status.get(f) == "ok"] == measured
    rows = result["rows"]
    for fig in measured:
        mine = [r for r in rows if r["figure"] == fig]
        assert mine, f"{fig} produced no rows"
        for r in mine:
            assert r["ours"] and r["baseline"], r
            assert all(math.isfinite(x) for x in r["ours"] + r["baseline"]), r
            assert r["ok"] in (True, False), r  # a verdict was computed (its value is not checked)

    text = out.read_text()
    assert "## Machine" in text and "Load average" in text and "| Figure |" in text
    for fig in measured:
        assert f"| {fig} |" in text
    if unavailable:
        reason = unavailable["P8"]
        if _in_ci():
            pytest.fail(f"P8 cannot run in CI: {reason}", pytrace=False)
        pytest.skip(f"P8 skipped: {reason} (in CI this is a failure)")
