"""Shared pieces of the benchmark harness: result rows, a simulator process, a kernel driver.

Nothing here asserts a number: it measures and records. Every process the harness starts is
stopped by its own handle (PID), never by name.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]


class BenchError(RuntimeError):
    """A benchmark could not be run (a process failed, a cell raised, a deadline passed)."""


@dataclass(frozen=True)
class Mode:
    """Sizes and repeat counts of one harness run (full or smoke)."""

    smoke: bool
    runs: int  # repeats per measurement (>= 5 in a full run)
    p1_runs: int  # P1's alternated re-runs (a cell takes ~6 ms: more runs, a steadier median)
    big_bytes: int  # P2/P3 file size
    rss_bytes: int  # P3 peak-RSS download size
    p4_jobs: int
    p4_window_s: float  # total measured window with the jobs polling
    p4_subwindows: int
    p4_idle_s: float  # total idle (baseline) window
    p4_rtt_runs: int
    p5_jobs: int
    p5_job_s: float  # fixed simulated job time (pending + processing)
    p8_runs: int

    @classmethod
    def full(cls) -> Mode:
        return cls(
            smoke=False,
            runs=5,
            p1_runs=40,
            big_bytes=512 << 20,
            rss_bytes=1 << 30,
            p4_jobs=100,
            p4_window_s=60.0,
            p4_subwindows=6,
            p4_idle_s=15.0,
            p4_rtt_runs=20,
            p5_jobs=20,
            p5_job_s=2.0,
            p8_runs=5,
        )

    @classmethod
    def tiny(cls) -> Mode:
        return cls(
            smoke=True,
            runs=1,
            p1_runs=1,
            big_bytes=4 << 20,
            rss_bytes=8 << 20,
            p4_jobs=5,
            p4_window_s=3.0,
            p4_subwindows=1,
            p4_idle_s=1.0,
            p4_rtt_runs=3,
            p5_jobs=5,
            p5_job_s=0.6,
            p8_runs=1,
        )


@dataclass
class Row:
    """One line of the table: a measurement of ours against a baseline, with its goal.

    ``ok`` is True (goal met), False (missed) or None (no verdict, e.g. a failed figure).
    ``found`` holds generated sentences (from measurements) explaining a miss.
    """

    figure: str
    what: str
    unit: str
    ours: list[float]
    baseline_what: str
    baseline: list[float]
    ratio: float | None
    ratio_note: str
    goal: str
    ok: bool | None
    found: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "what": self.what,
            "unit": self.unit,
            "ours": self.ours,
            "baseline_what": self.baseline_what,
            "baseline": self.baseline,
            "ratio": self.ratio,
            "ratio_note": self.ratio_note,
            "goal": self.goal,
            "ok": self.ok,
            "found": self.found,
            "extra": self.extra,
        }


def med(xs: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(xs))


def stats_text(xs: list[float], fmt: str = "{:.1f}") -> str:
    """``median (min-max, n=N)`` of a list (an en dash between min and max), or a dash."""
    if not xs:
        return "—"
    if len(xs) == 1:
        return f"{fmt.format(xs[0])} (n=1)"
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))}, n={len(xs)})"


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process: this repo first on PYTHONPATH, no inherited
    GOENHANCE_* settings or Jupyter session hints, plus ``extra``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("GOENHANCE_", "JPY_", "VSCODE_"))
    }
    old = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + old if old else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def make_file(path: Path, size: int, block: int = 16 << 20) -> Path:
    """Write ``size`` bytes of incompressible data (a random block repeated) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = os.urandom(min(block, size))
    with path.open("wb") as f:
        left = size
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    return path


def speed_probe() -> float:
    """Milliseconds a fixed pure-Python loop takes here (best of 3): a machine-speed reading to
    compare runs by (a host that slows every figure alike shows here too)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i & 7
        best = min(best, time.perf_counter() - t0)
    return best * 1000


def steal_seconds() -> float:
    """CPU time the hypervisor took from this machine since boot (``steal`` in /proc/stat)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


def read_loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages from /proc/loadavg."""
    parts = Path("/proc/loadavg").read_text().split()
    return float(parts[0]), float(parts[1]), float(parts[2])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------------
# Simulator process
# ------------------------------------------------------------------------------------------
@dataclass
class Sim:
    """A running ``python -m goenhance_nb.sim`` child and an HTTP handle on its control API."""

    proc: subprocess.Popen[bytes]
    base_url: str
    api_key: str
    state_dir: Path  # the simulator's --state-dir (files/, results/, jobs.json)
    log_path: Path

    def http(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {self.api_key}"},
            timeout=60,
        )

    def config(self, **patch: Any) -> dict[str, Any]:
        with self.http() as c:
            r = c.post("/sim/config", json=patch)
            r.raise_for_status()
            return dict(r.json())

    def requests(self) -> list[dict[str, Any]]:
        with self.http() as c:
            r = c.get("/sim/requests")
            r.raise_for_status()
            return list(r.json()["requests"])

    def clear_requests(self) -> None:
        with self.http() as c:
            c.delete("/sim/requests").raise_for_status()

    def upload(self, path: Path) -> str:
        """PUT a file to /sim/uploads; return its public /sim/files URL."""
        with self.http() as c, path.open("rb") as f:
            r = c.put("/sim/uploads", content=f.read(), headers={"X-Filename": path.name})
            r.raise_for_status()
            return str(r.json()["url"])

    def job_detail(self, img_uuid: str) -> dict[str, Any]:
        with self.http() as c:
            r = c.get("/api/v1/jobs/detail", params={"img_uuid": img_uuid})
            r.raise_for_status()
            return dict(r.json()["data"])

    def jobs(self) -> dict[str, Any]:
        """The simulator's persisted jobs (``jobs.json``: submitted_at, end_time, ... as floats)."""
        p = self.state_dir / "jobs.json"
        return dict(json.loads(p.read_text())) if p.exists() else {}

    def env(self, cache_dir: Path, **extra: str) -> dict[str, str]:
        """GOENHANCE_* settings that point a kernel or worker at this simulator."""
        return {
            "GOENHANCE_API_KEY": self.api_key,
            "GOENHANCE_BASE_URL": self.base_url,
            "GOENHANCE_CACHE_DIR": str(cache_dir),
            **extra,
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_sim(workdir: Path, config: dict[str, Any], timeout: float = 60.0) -> Sim:
    """Start a simulator on a random loopback port with ``config``; wait for its port file."""
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "port.json"
    log_path = workdir / "sim.log"
    state = workdir / "state"
    cmd = [
        sys.executable,
        "-m",
        "goenhance_nb.sim",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--state-dir",
        str(state),
        "--port-file",
        str(port_file),
        "--config",
        json.dumps(config),
    ]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"simulator exited with {proc.returncode}: {log_path.read_text()}")
        if port_file.exists():
            try:
                info = json.loads(port_file.read_text())
            except json.JSONDecodeError:
                info = None
            if info:
                return Sim(proc, info["base_url"], info["api_key"], state, log_path)
        time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise BenchError(f"simulator did not start in {timeout:.0f}s")


# ------------------------------------------------------------------------------------------
# Kernel driver (jupyter_client)
# ------------------------------------------------------------------------------------------
@dataclass
class Execution:
    """One executed cell: client-side round trip (request sent -> kernel idle), its outputs."""

    seconds: float
    outputs: list[dict[str, Any]]

    def text(self) -> str:
        """Everything the cell printed or displayed as text (stream, text/plain, text/html)."""
        parts: list[str] = []
        for o in self.outputs:
            if "text" in o:
                parts.append(str(o["text"]))
            data = o.get("data") or {}
            for mime in ("text/plain", "text/html"):
                if mime in data:
                    parts.append(str(data[mime]))
        return "\n".join(parts)

    def stdout(self) -> str:
        return "".join(str(o.get("text", "")) for o in self.outputs if o.get("name") == "stdout")


class Kernel:
    """A fresh kernel (``python3`` spec of this venv) started with ``env`` in ``cwd``."""

    def __init__(self, cwd: Path, env: dict[str, str], name: str = "python3") -> None:
        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name=name)
        self.km.start_kernel(env=child_env(env), cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        try:
            self.kc.wait_for_ready(timeout=120)
        except RuntimeError as exc:
            self.stop()
            raise BenchError(f"kernel did not become ready: {exc}") from None
        self._pid: int | None = None

    def _drain(self) -> None:
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                return

    def run(self, code: str, *, allow_stdin: bool = True, timeout: float = 300.0) -> Execution:
        """Execute ``code`` and wait for its idle status; raise BenchError if the cell failed.

        ``allow_stdin`` true is what JupyterLab sends (an interactive frontend).
        """
        self._drain()
        t0 = time.perf_counter()
        msg_id = self.kc.execute(code, allow_stdin=allow_stdin)
        outputs: list[dict[str, Any]] = []
        error: str | None = None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"cell did not finish in {timeout:.0f}s: {code[:80]!r}")
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except queue.Empty:
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            content = msg["content"]
            if kind == "status" and content.get("execution_state") == "idle":
                elapsed = time.perf_counter() - t0
                break
            if kind in ("stream", "display_data", "execute_result", "update_display_data"):
                outputs.append(dict(content, output_type=kind))
            elif kind == "error":
                error = f"{content.get('ename')}: {content.get('evalue')}"
        reply = self.kc.get_shell_msg(timeout=60)
        while reply.get("parent_header", {}).get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=60)
        if error is None and reply["content"].get("status") != "ok":
            error = f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"
        if error is not None:
            raise BenchError(f"cell {code[:80]!r} failed: {error}")
        return Execution(elapsed, outputs)

    def value(self, expr: str) -> Any:
        """Evaluate ``expr`` in the kernel and return it (it must be JSON-serialisable)."""
        out = self.run(f"import json as _bj; print(_bj.dumps({expr}))").stdout()
        return json.loads(out.strip().splitlines()[-1])

    @property
    def pid(self) -> int:
        if self._pid is None:
            self._pid = int(self.value("__import__('os').getpid()"))
        return self._pid

    def stop(self) -> None:
        try:
            self.kc.stop_channels()
        finally:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=False)
