"""The README's Python API example runs as written, against the simulator."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_api_block() -> str:
    text = README.read_text()
    m = re.search(r"### Python API\n\n```python\n(.*?)```", text, re.S)
    assert m, "README has no Python API example"
    return m.group(1)


def test_readme_python_api_example_runs(sim, sim_env, tmp_path: Path) -> None:
    code = python_api_block()
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "submitted" in out and "done" in out  # events reached the subscriber
    assert "simulated" in out and "Style(id=2000" in out and "Credits(count=" in out
    assert sim.generate_calls() == 1  # resume re-attached; nothing was submitted twice
    assert (tmp_path / "sample.mp4").is_file()
    assert sim.api_key not in out and sim.api_key not in proc.stderr


def test_readme_simulator_controls_block_runs(sim, sim_env, tmp_path: Path) -> None:
    text = README.read_text()
    m = re.search(r"## Slowing the simulator, injecting faults\n.*?```python\n(.*?)```", text, re.S)
    assert m, "README has no simulator-controls example"
    code = m.group(1) + "\nprint(sim.config()['processing_seconds'], sim.faults())\n"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = sim.config()["processing_seconds"]
    assert proc.stdout.split()[-2:] == [str(start), "[]"]  # reset() undid the example
    assert sim.api_key not in proc.stdout and sim.api_key not in proc.stderr
