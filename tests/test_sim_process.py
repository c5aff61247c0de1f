"""The simulator as a process: CLI, port file, SIGTERM, restart persistence, accounts, and the
import rule (`goenhance_nb.sim` imports nothing else of ours, and nothing of ours imports it)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from simctl import FAST_CONFIG, start_sim
from test_sim_support import (
    client,
    credits,
    detail,
    generate,
    result_url,
    upload,
    wait_for,
)

import goenhance_nb
from goenhance_nb._samples import sample_clip

PKG = Path(goenhance_nb.__file__).parent


def test_port_file_stdout_and_sigterm(tmp_path: Path) -> None:
    sim = start_sim(tmp_path)
    try:
        info = json.loads(sim.port_file.read_text())
        assert set(info) == {"base_url", "api_key", "pid", "started_at", "version"}
        assert info["pid"] == sim.proc.pid and info["version"] == 1
        assert info["base_url"].startswith("http://127.0.0.1:")
        assert info["api_key"].startswith("sim-") and len(info["api_key"]) == 36
        assert stat.S_IMODE(sim.port_file.stat().st_mode) == 0o600
        assert httpx.get(info["base_url"] + "/sim/health").json()["pid"] == sim.proc.pid
    finally:
        sim.stop()
    assert sim.proc.returncode == 0
    assert not sim.port_file.exists()
    log = sim.log_path.read_text()
    assert f"GOENHANCE_BASE_URL={info['base_url']}\n" in log
    assert f"GOENHANCE_API_KEY={info['api_key']}\n" in log
    assert "Traceback" not in log


def test_restart_keeps_key_credits_uploads_and_jobs(tmp_path: Path) -> None:
    """A job submitted before a stop finishes after a restart on the same state dir."""
    slow = {**FAST_CONFIG, "pending_seconds": 0.5, "processing_seconds": 1.0}
    sim = start_sim(tmp_path, config=slow)
    try:
        with client(sim) as http:
            url = upload(http, sample_clip(seconds=1.0, width=160, height=120, fps=12).read_bytes())
            job = generate(http, url, duration=3)["img_uuid"]
            balance = credits(http)
            assert detail(http, job)["data"]["status"] in ("pending", "processing")
    finally:
        sim.stop()
    key = sim.api_key
    again = start_sim(tmp_path, config=slow)
    try:
        assert again.api_key == key
        assert again.base_url != "" and again.proc.pid != sim.proc.pid
        with client(again) as http:
            assert credits(http) == balance
            done = wait_for(http, job)
            assert done["status"] == "success"
            assert httpx.get(result_url(done)).status_code == 200
            assert httpx.get(url.replace(sim.base_url, again.base_url)).status_code == 200
            assert again.config()["processing_seconds"] == 1.0
    finally:
        again.stop()


def test_restart_mid_render_still_finishes(tmp_path: Path) -> None:
    """A render interrupted by SIGTERM is redone after the restart."""
    sim = start_sim(tmp_path)
    try:
        with client(sim) as http:
            clip = sample_clip(tmp_path / "c.mp4", seconds=3.0, width=320, height=240, fps=30)
            url = upload(http, clip.read_bytes())
            job = generate(http, url, duration=3, resolution="720p")["img_uuid"]
            wait_for(http, job, {"processing", "success"})
    finally:
        sim.stop()
    again = start_sim(tmp_path)
    try:
        with client(again) as http:
            done = wait_for(http, job)
            assert done["status"] == "success"
            assert httpx.get(result_url(done)).status_code == 200
    finally:
        again.stop()
    assert sim.proc.returncode == 0 and "Traceback" not in sim.log_path.read_text()


def test_extra_keys_are_separate_accounts(tmp_path: Path) -> None:
    sim = start_sim(tmp_path, keys=["sk-alice-123", "sk-bob-456"])
    try:
        with (
            client(sim, "sk-alice-123") as alice,
            client(sim, "sk-bob-456") as bob,
            client(sim) as default,
        ):
            url = upload(alice, b"\x00" * 1000)
            job = generate(alice, url)["img_uuid"]
            assert credits(alice) == 5000 - 15 and credits(bob) == 5000 == credits(default)
            wait_for(alice, job)
            assert detail(bob, job) == {"code": 404, "msg": "job not found", "data": None}
            assert detail(alice, job)["code"] == 0
            # the queue limit is per account: alice's second job waits, bob's first does not
            sim.config(queue_limit=1, pending_seconds=30)
            generate(alice, url)
            waiting = generate(alice, url)["img_uuid"]
            own = generate(bob, url)["img_uuid"]
            assert detail(alice, waiting)["data"]["status"] == "WAITING"
            assert detail(bob, own)["data"]["status"] == "pending"
            assert (
                alice.get("/api/v1/user/tokens").json()["data"]["user_id"]
                != bob.get("/api/v1/user/tokens").json()["data"]["user_id"]
            )
    finally:
        sim.stop()
    state = (tmp_path / "state").rglob("*.json")
    text = "".join(p.read_text() for p in state if p.name != "secret.json")
    assert "sk-alice-123" not in text and "sk-bob-456" not in text


def test_second_simulator_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    sim = start_sim(tmp_path)
    try:
        r = subprocess.run(
            [sys.executable, "-m", "goenhance_nb.sim", "--state-dir", str(tmp_path / "state")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 3 and "in use" in r.stderr
        assert httpx.get(sim.base_url + "/sim/health").json()["ok"] is True
    finally:
        sim.stop()


def test_state_files_are_json(tmp_path: Path) -> None:
    sim = start_sim(tmp_path)
    sim.stop()
    state = tmp_path / "state"
    for name in ("accounts.json", "jobs.json", "config.json", "secret.json"):
        json.loads((state / name).read_text())
    assert stat.S_IMODE((state / "secret.json").stat().st_mode) == 0o600


def test_bad_config_exits_with_a_message(tmp_path: Path) -> None:
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "goenhance_nb.sim",
            "--state-dir",
            str(tmp_path / "s"),
            "--config",
            json.dumps({"queue_limit": "many"}),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "queue_limit" in r.stderr


def test_console_script_exists() -> None:
    script = Path(sys.executable).parent / "goenhance-sim"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    r = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--state-dir" in r.stdout and "--port-file" in r.stdout


def test_no_state_dir_uses_a_temp_dir_and_cleans_up(tmp_path: Path) -> None:
    port_file = tmp_path / "port.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "goenhance_nb.sim", "--port-file", str(port_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("GOENHANCE_BASE_URL=http://127.0.0.1:")
        base = line.strip().split("=", 1)[1]
        assert httpx.get(base + "/sim/health").json()["ok"] is True
    finally:
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0 and not port_file.exists()


# -- import rule -------------------------------------------------------------------------------
def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = path.relative_to(PKG.parent).with_suffix("").parts[: -node.level]
                names.append(".".join([*parts, node.module or ""]).rstrip("."))
            elif node.module:
                names.append(node.module)
    return names


def test_sim_imports_nothing_else_of_ours() -> None:
    files = sorted((PKG / "sim").rglob("*.py"))
    assert files
    for f in files:
        for name in _imports(f):
            if name == "goenhance_nb" or name.startswith("goenhance_nb."):
                assert name.startswith("goenhance_nb.sim"), f"{f.name} imports {name}"


def test_nothing_of_ours_imports_the_sim() -> None:
    for f in PKG.rglob("*.py"):
        if (PKG / "sim") in f.parents:
            continue
        for name in _imports(f):
            assert not name.startswith("goenhance_nb.sim"), f"{f.name} imports {name}"


def test_import_rule_scanner_catches_a_violation(tmp_path: Path) -> None:
    """The scanner itself can fail: a planted bad import is reported."""
    bad = PKG / "sim" / "_planted_for_test.py"
    try:
        bad.write_text("from goenhance_nb import _errors\n")
        with pytest.raises(AssertionError):
            test_sim_imports_nothing_else_of_ours()
    finally:
        bad.unlink(missing_ok=True)
        shutil.rmtree(PKG / "sim" / "__pycache__" / "_planted_for_test", ignore_errors=True)
    assert os.path.exists(PKG / "sim" / "__init__.py")
