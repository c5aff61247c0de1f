"""Shared fixtures: a real simulator process over loopback HTTP, isolated cache dirs."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell
from simctl import FAST_CONFIG, SimProcess, start_sim
from workers.support import make_session

from goenhance_nb import _session
from goenhance_nb._samples import sample_clip
from goenhance_nb._session import Session


@pytest.fixture(scope="session")
def sim_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """One simulator process for the whole test session (fast lifecycle)."""
    sim = start_sim(tmp_path_factory.mktemp("sim"))
    yield sim
    sim.stop()


@pytest.fixture
def sim(sim_session: SimProcess) -> Iterator[SimProcess]:
    """The shared simulator, reset (faults, request log, config) around each test."""
    sim_session.reset()
    yield sim_session
    sim_session.reset()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s generated sample clip, shared by a test module (modules may define their own)."""
    return sample_clip(tmp_path_factory.mktemp("clips") / "clip.mp4", seconds=3.0)


@pytest.fixture
def session(sim: SimProcess, tmp_path: Path) -> Iterator[Session]:
    """A Session on the shared simulator with its own cache dir and a short poll interval."""
    s = make_session(sim, tmp_path / "cache")
    yield s
    s.close()


@pytest.fixture
def fresh_session(sim_env: dict[str, str]) -> Iterator[None]:
    """No process-wide session leaks between tests (each test has its own cache dir)."""
    _session._set_session(None)
    yield
    s = _session._session
    _session._set_session(None)
    if s is not None:
        s.close()


@pytest.fixture
def sim_env(sim: SimProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing goenhance_nb at the shared simulator with an isolated cache dir."""
    env = {
        "GOENHANCE_API_KEY": sim.api_key,
        "GOENHANCE_BASE_URL": sim.base_url,
        "GOENHANCE_CACHE_DIR": str(tmp_path / "cache"),
        "GOENHANCE_POLL_INTERVAL": "0.2",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture(autouse=True)
def _no_real_key_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see a developer's real key or config from the surrounding environment."""
    for name in list(os.environ):
        if name.startswith("GOENHANCE_"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        "XDG_CONFIG_HOME", os.environ.get("PYTEST_XDG_CONFIG_HOME", "/nonexistent-goenhance-config")
    )


__all__ = ["FAST_CONFIG", "SimProcess", "start_sim"]


@pytest.fixture(autouse=True)
def _no_leaked_running_loop(request: pytest.FixtureRequest) -> None:
    """Fail clearly when an earlier test left the main thread 'inside' an asyncio loop (e.g. a
    sync Playwright instance still started): every asyncio.run would fail with a confusing error."""
    if request.node.get_closest_marker("browser") is None and asyncio._get_running_loop():
        pytest.fail(
            "a running asyncio loop leaked into this test from an earlier one "
            "(is a sync Playwright instance still started?)"
        )


@pytest.fixture
def ip() -> Iterator[InteractiveShell]:
    """The IPython shell with the extension freshly loaded (a new magics instance, default
    traits); unloaded afterwards."""
    shell = InteractiveShell.instance()
    shell.run_line_magic("reload_ext", "goenhance_nb")
    yield shell
    shell.run_line_magic("unload_ext", "goenhance_nb")


@pytest.fixture
def cwd_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The README's 4 s sample clip as ``sample.mp4`` in a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    return sample_clip(tmp_path / "sample.mp4")
