"""Fixtures for the real-browser suite (Playwright + Debian Chromium + JupyterLab/Notebook 7).

DECISIONS 21: with CI=true a missing Chromium (or Playwright) is a failure; locally a skip
with the reason. Every fixture that starts a process stops it by PID at teardown.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from browserkit import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, SENTINEL, JupyterServer, start_server


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"browser suite cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"browser suite skipped: {reason} (in CI this is a failure)")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


@pytest.fixture(scope="module")
def playwright_browser() -> Iterator[Any]:
    """One Chromium per test module (Debian's; Playwright's own download does not work here).

    Module scope, not session: while the sync Playwright API is started, the main thread counts
    as running an asyncio loop (its greenlet dispatcher), so every later test's ``asyncio.run``
    would fail; it must stop when the browser modules are done. (``package`` scope would act as
    session scope here: tests/browser has no ``__init__.py``.)"""
    if not Path(CHROMIUM).exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - dev extra installs it
        _unavailable(f"playwright is not importable ({exc})")
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except Exception as exc:
        pw.stop()
        _unavailable(f"Chromium at {CHROMIUM} did not launch: {exc}")
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture
def artifact_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)


@pytest.fixture
def page(
    playwright_browser: Any, request: pytest.FixtureRequest, artifact_name: str
) -> Iterator[Any]:
    """A fresh browser context and page; console output and a failure screenshot to artifacts/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob(f"{artifact_name}-*"):  # a previous run's failure evidence
        stale.unlink()
    context = playwright_browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    console: list[str] = []
    pg.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    pg.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    yield pg
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        with contextlib.suppress(Exception):
            pg.screenshot(path=str(ARTIFACTS / f"{artifact_name}-FAILED.png"), full_page=True)
    (ARTIFACTS / f"{artifact_name}.console.log").write_text("\n".join(console))
    context.close()


@pytest.fixture
def jupyter(
    tmp_path: Path, request: pytest.FixtureRequest, artifact_name: str
) -> Iterator[Callable[..., JupyterServer]]:
    """Factory: start a JupyterLab / Notebook 7 server in tmp_path; stopped by PID at teardown.

    `jupyter(kind="lab", env={...})`; notebooks go into `server.root`.
    """
    servers: list[JupyterServer] = []

    def make(kind: str = "lab", env: Mapping[str, str] | None = None, **kw: Any) -> JupyterServer:
        s = start_server(tmp_path / f"{kind}{len(servers)}", kind=kind, env=env, **kw)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()
        # Keep the server (and kernel) log of a failing test next to its screenshot.
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / f"{artifact_name}-{s.kind}.server.log").write_text(s.log_text())


@pytest.fixture(scope="session")
def browser_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A simulator for the browser suite that accepts the sentinel key (DECISIONS 18)."""
    try:
        import goenhance_nb.sim  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the simulator is not importable yet: {exc}")
    from simctl import start_sim

    sim = start_sim(tmp_path_factory.mktemp("browser-sim"), keys=[SENTINEL])
    yield sim
    sim.stop()


@pytest.fixture
def bsim(browser_sim: Any) -> Iterator[Any]:
    """The browser suite's simulator, reset (faults, request log, config) around each test."""
    browser_sim.reset()
    yield browser_sim
    browser_sim.reset()


@pytest.fixture
def kernel_env(bsim: Any, tmp_path: Path) -> dict[str, str]:
    """What a kernel needs to talk to the simulator with the sentinel key and its own cache."""
    return {
        "GOENHANCE_BASE_URL": bsim.base_url,
        "GOENHANCE_API_KEY": SENTINEL,
        "GOENHANCE_CACHE_DIR": str(tmp_path / "cache"),
        "GOENHANCE_POLL_INTERVAL": "0.5",
    }
