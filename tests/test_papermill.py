"""notebooks/04 through papermill (issue 14 point 6), against the simulator.

Twice into one cache: the second run makes no generate call and leaves identical output files.
Then a collaborator: a fresh folder with the notebook, its lockfile and the bundle run 1
exported, an empty cache and an API that never answers, ``-p MODE replay -p BUNDLE ...``:
zero requests, identical output files."""

from __future__ import annotations

import hashlib
import select
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from goenhance_nb._demo import NOTEBOOKS_DIR

pytestmark = pytest.mark.slow

NOTEBOOK = NOTEBOOKS_DIR / "04-reproducible-research.ipynb"


@pytest.fixture
def headless_env(sim_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The kernel papermill starts inherits this process's environment: the simulator's, and
    no Jupyter session name or wait switch from outside (as execute_notebook does)."""
    for name in ("JPY_SESSION_NAME", "GOENHANCE_WAIT"):
        monkeypatch.delenv(name, raising=False)
    return sim_env


@pytest.fixture
def black_hole() -> Iterator[tuple[str, socket.socket]]:
    """A loopback port that listens but never answers (the API unreachable); a connection
    attempt stays queued in its backlog, so the test can tell whether anything tried."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}", s


def run_papermill(workdir: Path, **parameters: Any) -> Any:
    """Execute 04 with papermill in ``workdir`` (kernel cwd); returns the executed notebook."""
    import papermill

    out = workdir / NOTEBOOK.name
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(out),
        parameters=parameters,
        cwd=str(workdir),
        kernel_name="python3",
        progress_bar=False,
        execution_timeout=900,
    )
    return nbformat.read(out, as_version=4)


def outputs(workdir: Path) -> dict[str, str]:
    """sha256 of every file the notebook's results are: goenhance_outputs/* and the lockfile."""
    files = [*sorted((workdir / "goenhance_outputs").iterdir()), workdir / "goenhance.lock.json"]
    return {
        p.relative_to(workdir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files
    }


def printed(nb: Any) -> str:
    return "".join(
        str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )


def test_parameters_cell_is_tagged_and_documented() -> None:
    """papermill finds one tagged parameters cell and a help text for every parameter."""
    import papermill

    nb = nbformat.read(NOTEBOOK, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    params = papermill.inspect_notebook(str(NOTEBOOK))
    names = {"STYLE", "COMPARE_WITH", "SEED", "DURATION", "RESOLUTION", "MODE", "BUNDLE"}
    assert set(params) == names
    assert all(p["help"] for p in params.values())
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_papermill_twice_then_replay_from_a_bundle_on_an_empty_cache(
    tmp_path: Path,
    sim: Any,
    headless_env: dict[str, str],
    black_hole: tuple[str, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    one = tmp_path / "alice"
    one.mkdir()
    nb = run_papermill(one, STYLE="Oil Painting", DURATION=3, RESOLUTION="540p", MODE="record")
    assert "goenhance mode: record" in printed(nb)
    assert sim.generate_calls() == 2
    first = outputs(one)
    assert len(first) == 3  # two results and the lockfile
    assert "results.zip" in {p.name for p in one.iterdir()}

    sim.clear_requests()
    nb = run_papermill(one, STYLE="Oil Painting", DURATION=3, RESOLUTION="540p", MODE="record")
    assert sim.generate_calls() == 0
    assert sim.requests("/api/") == [], "the second run made API requests"
    assert outputs(one) == first
    assert "re-run: a cache hit" in printed(nb)

    # a collaborator: the notebook, its lockfile and the bundle; an empty cache; no API
    two = tmp_path / "bob"
    two.mkdir()
    shutil.copyfile(one / "goenhance.lock.json", two / "goenhance.lock.json")
    shutil.copyfile(one / "results.zip", two / "from-alice.zip")
    url, listener = black_hole
    monkeypatch.setenv("GOENHANCE_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("GOENHANCE_BASE_URL", url)
    sim.clear_requests()
    nb = run_papermill(two, MODE="replay", BUNDLE="from-alice.zip")
    text = printed(nb)
    assert "imported 2 result(s)" in text and "goenhance mode: replay" in text
    assert outputs(two) == first
    readable, _, _ = select.select([listener], [], [], 0)
    assert not readable, "the replay run tried to reach the API"
    assert sim.requests() == []
