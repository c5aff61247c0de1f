"""The embedded simulator launcher: start detached, reuse a live one, replace a dead one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from workers.support import wait_until

from goenhance_nb._simproc import ensure_simulator, sim_paths


def _pid(cache_dir: Path) -> int:
    return int(json.loads(sim_paths(cache_dir)["port_file"].read_text())["pid"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours still "exists": reap it if it ended
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


@pytest.fixture
def cache_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "cache"
    # stop the simulator this test started (by its pid from the port file)
    if sim_paths(tmp_path / "cache")["port_file"].exists():
        pid = _pid(tmp_path / "cache")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not _alive(pid))


def test_starts_then_reuses_the_same_simulator(cache_dir: Path) -> None:
    base_url, key = ensure_simulator(cache_dir)
    pid = _pid(cache_dir)
    assert base_url.startswith("http://127.0.0.1:")
    r = httpx.get(f"{base_url}/api/v1/user/tokens", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200 and r.json()["code"] == 0
    assert stat.S_IMODE(sim_paths(cache_dir)["dir"].stat().st_mode) == 0o700
    # a second kernel (another process) finds the same one
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from goenhance_nb._simproc import ensure_simulator;"
            "print(*ensure_simulator(Path(sys.argv[1])))",
            str(cache_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.split() == [base_url, key]
    assert _pid(cache_dir) == pid


def test_dead_simulator_is_replaced_and_keeps_its_key(cache_dir: Path) -> None:
    _base_url, key = ensure_simulator(cache_dir)
    pid = _pid(cache_dir)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _alive(pid))
    base2, key2 = ensure_simulator(cache_dir)
    assert _pid(cache_dir) != pid
    assert key2 == key  # the test key persists in the state dir
    assert httpx.get(f"{base2}/sim/health").json()["ok"] is True
