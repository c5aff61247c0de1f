"""Helpers shared by the engine/session tests (imported as ``workers.support``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from goenhance_nb._session import Session
from goenhance_nb._settings import Settings

WORKER = Path(__file__).with_name("transform_worker.py")
T = TypeVar("T")


def make_session(sim: Any, cache_dir: Path, **settings: Any) -> Session:
    """A Session on the test simulator with a short poll interval and its own cache dir."""
    explicit = {
        "api_key": sim.api_key,
        "base_url": sim.base_url,
        "cache_dir": cache_dir,
        "poll_interval": 0.05,
        **settings,
    }
    return Session(Settings.resolve(explicit=explicit, env={}), **{})


class Worker:
    """A real subprocess running tests/workers/transform_worker.py; events arrive as JSON lines."""

    def __init__(
        self,
        sim: Any,
        cache_dir: Path,
        clip: Path,
        style: str = "2000",
        duration: int = 3,
        seed: int = -1,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GOENHANCE_")}
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(WORKER),
                str(cache_dir),
                sim.base_url,
                sim.api_key,
                str(clip),
                style,
                str(duration),
                str(seed),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.events: list[dict[str, Any]] = []

    def wait_for(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Read events until one matches ``pred``; fail if the worker exits first."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            ev = json.loads(line)
            self.events.append(ev)
            if pred(ev):
                return ev
            if ev["kind"] == "exit":
                break
        raise AssertionError(
            f"worker ended without the expected event: {self.events}\n"
            f"{self.proc.stderr.read() if self.proc.stderr else ''}"
        )

    def finish(self, timeout: float = 120) -> dict[str, Any]:
        """Wait for the worker's exit report."""
        ev = self.wait_for(lambda e: e["kind"] == "exit")
        self.proc.wait(timeout)
        return ev

    def kill(self) -> None:
        """SIGKILL the worker (no cleanup runs: like a kernel dying)."""
        self.proc.kill()
        self.proc.wait(30)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def wait_until(
    pred: Callable[[], T], what: str = "condition", timeout: float = 60.0, step: float = 0.05
) -> T:
    """Poll ``pred`` until it returns a true value and return that value: the one way tests wait
    for something (a guard against hangs with a generous ``timeout``, never a timing assertion).

    :raises AssertionError: ``timed out waiting for <what>`` when ``timeout`` passed first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what} ({timeout:g} s)")
        time.sleep(step)
