"""A sweep's table: a pandas DataFrame when pandas is installed, else a list of records."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from workers.support import make_session

from goenhance_nb._sweep import sweep


def test_frame_is_a_dataframe_with_pandas_and_records_without(
    sim: Any, tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = make_session(sim, tmp_path / "c")
    try:
        plan = sweep(
            clip,
            styles=[2000, 2006],
            grid={"seed": [1, 2]},
            duration=3,
            resolution="540p",
            dry_run=True,
            session=s,
        )
        frame = plan.frame()
        assert isinstance(frame, pd.DataFrame)
        assert list(frame["seed"]) == [1, 2, 1, 2]
        assert list(frame["status"]) == ["new"] * 4
        assert frame["estimate"].sum() == plan.estimated_credits == 4 * 15
        monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
        rows = plan.frame()
        assert isinstance(rows, list) and rows == plan.records()
        assert sim.generate_calls() == 0
    finally:
        s.close()
