"""Start and drive a real simulator process for tests (loopback HTTP, no mocks).

Used by tests/conftest.py fixtures. Talks to the simulator only over HTTP, as documented in
docs/ARCHITECTURE.md section 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

# Fast lifecycle for tests; the real defaults are slower (see docs/ARCHITECTURE.md).
FAST_CONFIG: dict[str, Any] = {
    "pending_seconds": 0.3,
    "processing_seconds": 0.5,
    "processing_per_second": 0.0,
}


@dataclass
class SimProcess:
    """A running `python -m goenhance_nb.sim` child process and an HTTP handle on it."""

    proc: subprocess.Popen[bytes]
    base_url: str
    api_key: str
    state_dir: Path
    port_file: Path
    log_path: Path
    _http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )

    # -- control API --------------------------------------------------------------------
    def requests(self, path_prefix: str = "") -> list[dict[str, Any]]:
        """The simulator's request log (optionally filtered by path prefix)."""
        r = self._http.get("/sim/requests")
        r.raise_for_status()
        return [q for q in r.json()["requests"] if q["path"].startswith(path_prefix)]

    def generate_calls(self) -> int:
        return sum(
            1 for q in self.requests("/api/v1/video2video/generate") if q["method"] == "POST"
        )

    def clear_requests(self) -> None:
        self._http.delete("/sim/requests").raise_for_status()

    def config(self, **patch: Any) -> dict[str, Any]:
        r = self._http.post("/sim/config", json=patch) if patch else self._http.get("/sim/config")
        r.raise_for_status()
        return r.json()

    def faults(self, *faults: dict[str, Any]) -> None:
        self._http.post("/sim/faults", json={"faults": list(faults)}).raise_for_status()

    def clear_faults(self) -> None:
        self._http.delete("/sim/faults").raise_for_status()

    def reset(self, config: dict[str, Any] | None = None) -> None:
        """Clear faults and the request log, restore the start config (every switch and every
        account's balance), then apply ``config`` if given (test isolation)."""
        self.clear_faults()
        self.clear_requests()
        self._http.delete("/sim/config").raise_for_status()
        if config:
            self.config(**config)

    def stop(self) -> None:
        self._http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_sim(
    state_dir: Path,
    *,
    config: dict[str, Any] | None = None,
    keys: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> SimProcess:
    """Start a simulator on a random loopback port and wait until its port file is written."""
    state_dir.mkdir(parents=True, exist_ok=True)
    port_file = state_dir / "port.json"
    log_path = state_dir / "sim.log"
    port_file.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "goenhance_nb.sim",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--state-dir",
        str(state_dir / "state"),
        "--port-file",
        str(port_file),
        "--config",
        json.dumps(config if config is not None else FAST_CONFIG),
    ]
    for k in keys or []:
        cmd += ["--key", k]
    log = log_path.open("ab")
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}:\n{log_path.read_text()}")
        if port_file.exists():
            try:
                info = json.loads(port_file.read_text())
            except json.JSONDecodeError:
                info = None
            if info:
                return SimProcess(
                    proc, info["base_url"], info["api_key"], state_dir, port_file, log_path
                )
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"simulator did not start in {timeout}s:\n{log_path.read_text()}")
