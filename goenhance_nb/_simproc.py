"""Find or start the embedded simulator process (DECISIONS 1).

Every kernel on the machine shares one simulator per cache dir: its URL and test key are
published in ``<cache_dir>/sim/port.json`` (written by the simulator), guarded by the file lock
``<cache_dir>/sim/port.json.lock``. This module never imports ``goenhance_nb.sim``; it only runs
``python -m goenhance_nb.sim`` and reads the port file, and talks to ``/sim/health`` with the
standard library (only ``_client``/``_transport`` import httpx).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import filelock

from goenhance_nb._errors import ConfigError
from goenhance_nb._jsondisk import private_dir, read_json

__all__ = ["ensure_simulator", "sim_paths"]


def sim_paths(cache_dir: Path) -> dict[str, Path]:
    """Return the simulator's paths under ``cache_dir``: ``dir``, ``port_file``, ``lock``,
    ``state``, ``log``."""
    d = Path(cache_dir) / "sim"
    return {
        "dir": d,
        "port_file": d / "port.json",
        "lock": d / "port.json.lock",
        "state": d / "state",
        "log": d / "sim.log",
    }


# Loopback only: never route the health check through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(info: dict[str, object], timeout: float = 2.0) -> bool:
    """True when the port file's simulator answers /sim/health with the same pid."""
    base = info.get("base_url")
    if not isinstance(base, str) or not base.startswith("http://127.0.0.1:"):
        return False
    try:
        with _OPENER.open(f"{base}/sim/health", timeout=timeout) as resp:
            body = json.loads(resp.read().decode("utf-8"))
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return bool(body.get("ok")) and body.get("pid") == info.get("pid")


def ensure_simulator(cache_dir: Path, *, timeout: float = 60.0) -> tuple[str, str]:
    """Return ``(base_url, api_key)`` of a live embedded simulator, starting one if needed.

    Under the port-file lock: reuse the simulator named in the port file when ``/sim/health``
    answers with the same pid; otherwise start ``python -m goenhance_nb.sim --state-dir
    <cache_dir>/sim/state --port-file <cache_dir>/sim/port.json`` detached (its own session,
    output to ``sim.log``) and wait for its port file.

    :raises ConfigError: when the simulator does not start within ``timeout`` seconds (the
        message points at ``sim.log``).
    """
    paths = sim_paths(cache_dir)
    private_dir(paths["dir"])
    with filelock.FileLock(str(paths["lock"]), timeout=timeout + 10):
        info = read_json(paths["port_file"])
        if isinstance(info, dict) and _healthy(info):
            return str(info["base_url"]), str(info["api_key"])
        paths["port_file"].unlink(missing_ok=True)
        private_dir(paths["state"])
        log = paths["log"].open("ab")
        try:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "goenhance_nb.sim",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--state-dir",
                    str(paths["state"]),
                    "--port-file",
                    str(paths["port_file"]),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                env={k: v for k, v in os.environ.items() if k != "GOENHANCE_API_KEY"},
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = read_json(paths["port_file"])
            if isinstance(info, dict) and info.get("pid") == proc.pid and _healthy(info):
                return str(info["base_url"]), str(info["api_key"])
            if proc.poll() is not None:
                raise ConfigError(
                    f"the embedded simulator exited with code {proc.returncode}; see {paths['log']}"
                )
            time.sleep(0.05)
        proc.kill()
        raise ConfigError(
            f"the embedded simulator did not start in {timeout:.0f}s; see {paths['log']}"
        )
