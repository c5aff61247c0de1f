"""Shared helpers of the reliability suite (issue 12): run a transformation against the real
simulator over loopback, let it settle, and read back what the user, the ledger, the cache and
the simulator saw.

The fixtures of ``tests/conftest.py`` (``sim``, ``session``, ``clip``, ``sim_env``) apply here
unchanged. Helpers are plain functions, imported as ``from reliability.conftest import ...``.
"""

from __future__ import annotations

import base64
import concurrent.futures
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import pytest
from simctl import SimProcess, start_sim

from goenhance_nb._cache import ResultRecord
from goenhance_nb._errors import GoEnhanceError
from goenhance_nb._keys import hash_file
from goenhance_nb._ledger import LedgerEntry
from goenhance_nb._session import Session

GENERATE = "/api/v1/video2video/generate"
DETAIL = "/api/v1/jobs/detail"
MODELLIST = "/api/v1/video2video/modellist"
TOKENS = "/api/v1/user/tokens"
RESULTS = "/sim/results/"

#: Default request of the suite: short and small, so each case is fast.
RUN = {"style": 2000, "duration": 3, "resolution": "540p"}


@dataclass
class Settled:
    """What one transformation ended as, seen from every side."""

    record: ResultRecord | None  # the result the user got, or None
    error: BaseException | None  # the exception the user got (synchronous or from result())
    job_id: str | None  # the handle's job id (None when transform() itself raised)
    cached: bool  # served from the cache
    ledger: list[LedgerEntry] = field(default_factory=list)
    generate_statuses: list[int] = field(default_factory=list)  # POST statuses (0 = none sent)

    @property
    def outcome(self) -> str:
        """``done``, ``cached`` or the exception's class name."""
        if self.error is not None:
            return type(self.error).__name__
        return "cached" if self.cached else "done"

    @property
    def entry(self) -> LedgerEntry | None:
        """The single ledger entry (asserted unique when present)."""
        assert len(self.ledger) <= 1, self.ledger
        return self.ledger[0] if self.ledger else None


@pytest.fixture(scope="session")
def sim_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """The reliability suite's own simulator process (overrides tests/conftest.py's for this
    package): its faults, killed kernels, stalled input servers and throttled downloads may leave
    jobs that hold the account's queue slots for a while, which the main suite's queue-limit
    tests must not inherit."""
    sim = start_sim(tmp_path_factory.mktemp("sim-reliability"))
    yield sim
    sim.stop()


def generate_statuses(sim: Any) -> list[int]:
    """HTTP statuses of every generate POST the simulator logged (0 = no response sent)."""
    return [int(q["status"]) for q in sim.requests(GENERATE) if q["method"] == "POST"]


def statuses(sim: Any, prefix: str) -> list[int]:
    """HTTP statuses of every logged request whose path starts with ``prefix``."""
    return [int(q["status"]) for q in sim.requests(prefix)]


def run_and_settle(
    session: Session,
    sim: Any,
    source: Path | str,
    *,
    wait: float = 60.0,
    **kwargs: Any,
) -> Settled:
    """Run ``session.transform(source, **RUN | kwargs)``, wait up to ``wait`` s for the job to
    end (a guard against hangs, not a timing assertion) and return what every side saw."""
    params = {**RUN, **kwargs}
    style = params.pop("style")
    job = None
    record = None
    error: BaseException | None = None
    try:
        job = session.transform(source, style, **params)
        record = job.result(wait)
    except (GoEnhanceError, concurrent.futures.CancelledError, TimeoutError) as exc:
        error = exc
    return Settled(
        record=record,
        error=error,
        job_id=None if job is None else job.id,
        cached=bool(job is not None and job.cached and error is None),
        ledger=session.ledger.entries(),
        generate_statuses=generate_statuses(sim),
    )


def assert_one_line(exc: BaseException, *secrets: str) -> str:
    """The error's message is one non-empty line holding none of ``secrets`` nor a signed
    query; return it."""
    msg = str(exc)
    assert msg and "\n" not in msg, repr(msg)
    for s in secrets:
        assert s not in msg, msg
    assert "sig=" not in msg and "exp=" not in msg, msg
    return msg


def probe_video(path: Path) -> int:
    """Decode ``path`` with PyAV and return its video frame count (raises if it is no video)."""
    with av.open(str(path)) as c:
        assert c.streams.video, f"{path} has no video stream"
        return sum(1 for _ in c.decode(video=0))


def assert_cache_sound(session: Session) -> list[ResultRecord]:
    """No partial or invalid file is served from the cache: every record's file exists, has its
    recorded size and hash, and PyAV decodes video frames from it. Returns the records."""
    records = session.cache.list()
    for rec in records:
        p = Path(rec.path)
        assert p.is_file(), f"cached file missing: {p}"
        assert p.stat().st_size == rec.size, (p.stat().st_size, rec.size)
        assert hash_file(p) == rec.sha, f"cached file {p.name} does not match its hash"
        assert probe_video(p) > 0, f"cached file {p.name} has no frames"
    return records


def cache_state(cache_dir: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``cache_dir`` (relative path -> (size, mtime_ns)): compare before and
    after to prove nothing was written. Lock files are left out (taking a lock is no write)."""
    out: dict[str, tuple[int, int]] = {}
    if not cache_dir.exists():
        return out
    for p in sorted(cache_dir.rglob("*")):
        if p.is_file() and not p.name.endswith(".lock"):
            st = p.stat()
            out[str(p.relative_to(cache_dir))] = (st.st_size, st.st_mtime_ns)
    return out


def secret_forms(secret: str) -> list[str]:
    """The plain, base64 (standard and URL-safe, also of ``Bearer <key>``) and URL-encoded
    forms of ``secret`` a scanner must look for (DECISIONS 18)."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    for raw in (secret, f"Bearer {secret}"):
        b = raw.encode()
        for enc in (base64.b64encode(b), base64.urlsafe_b64encode(b)):
            forms.add(enc.decode().rstrip("="))
    return sorted(forms)


def find_secrets(blobs: Iterable[tuple[str, bytes | str]], secret: str) -> list[str]:
    """Return ``"<where>: <form>"`` for every form of ``secret`` found in the named blobs."""
    hits = []
    forms = secret_forms(secret)
    for where, blob in blobs:
        text = blob.decode("latin-1") if isinstance(blob, bytes) else blob
        hits.extend(f"{where}: {form}" for form in forms if form in text)
    return hits


def files_under(root: Path) -> list[tuple[str, bytes]]:
    """Every regular file under ``root`` as (relative path, bytes) for a secret scan."""
    return [
        (str(p.relative_to(root)), p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    ]


# -- real kernels ------------------------------------------------------------------------------
class Kernel:
    """A real IPython kernel (jupyter_client) started in ``cwd`` with ``env``; every IOPub
    message it sends while a cell runs is kept in :attr:`iopub`."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        import os

        from jupyter_client.manager import KernelManager

        self.km = KernelManager(kernel_name="python3")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "VSCODE_"))}
        self.km.start_kernel(env={**base, **env}, cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)
        self.iopub: list[dict[str, Any]] = []

    def run(self, code: str, *, timeout: float = 120, allow_stdin: bool = False) -> dict[str, Any]:
        """Execute ``code``; return its execute_reply content with ``outputs`` (the IOPub
        messages of this cell) added."""
        mine: list[dict[str, Any]] = []

        def hook(msg: dict[str, Any]) -> None:
            self.iopub.append(msg)
            mine.append(msg)

        reply = self.kc.execute_interactive(
            code,
            allow_stdin=allow_stdin,
            timeout=timeout,
            output_hook=hook,
            stdin_hook=lambda m: None,
        )
        return {**reply["content"], "outputs": mine}

    def start(self, code: str, *, allow_stdin: bool = False) -> str:
        """Send ``code`` without waiting; return the message id (see :meth:`collect`)."""
        return str(self.kc.execute(code, allow_stdin=allow_stdin))

    def collect(self, msg_id: str, *, timeout: float = 120) -> list[dict[str, Any]]:
        """IOPub messages of cell ``msg_id`` until it goes idle."""
        import queue
        import time

        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.kc.get_iopub_msg(timeout=1)
            except queue.Empty:
                continue
            self.iopub.append(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            out.append(msg)
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return out
        raise AssertionError(f"cell {msg_id} did not finish in {timeout}s")

    def pid(self) -> int:
        return int(self.km.provisioner.process.pid)  # type: ignore[union-attr]

    def sigkill(self) -> None:
        """SIGKILL the kernel process (no cleanup runs, like a crash)."""
        import os
        import signal

        os.kill(self.pid(), signal.SIGKILL)
        self.km.provisioner.process.wait()  # type: ignore[union-attr]
        self.close()

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):
            self.kc.stop_channels()
        with contextlib.suppress(Exception):
            self.km.shutdown_kernel(now=True)


def output_text(msgs: Iterable[dict[str, Any]]) -> str:
    """All text a cell showed: streams, display data (every mime type), errors."""
    import json

    parts = []
    for m in msgs:
        c = m["content"]
        if m["msg_type"] == "stream":
            parts.append(c["text"])
        elif m["msg_type"] in ("display_data", "execute_result", "update_display_data"):
            parts.append(json.dumps(c.get("data", {})))
        elif m["msg_type"] == "error":
            parts.append(f"{c['ename']}: {c['evalue']}")
    return "\n".join(parts)


def kernel_env(sim: Any, cache_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a kernel on the test simulator with its own cache dir."""
    return {
        "GOENHANCE_API_KEY": sim.api_key,
        "GOENHANCE_BASE_URL": sim.base_url,
        "GOENHANCE_CACHE_DIR": str(cache_dir),
        "GOENHANCE_POLL_INTERVAL": "0.1",
        **extra,
    }


class LateForwarder:
    """A loopback TCP port that refuses connections (nothing listens) until :meth:`open`, then
    forwards every connection to ``target`` (host, port): "connection refused, then recovered".
    """

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = int(probe.getsockname()[1])
        probe.close()  # nothing listens here until open(): connects are refused
        self._listener: Any = None
        self._threads: list[Any] = []
        self._closed = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        """Start listening and forwarding."""
        import socket
        import threading

        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(16)
        self._listener = ls
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        import socket
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                t = threading.Thread(target=self._pipe, args=(a, b), daemon=True)
                t.start()
                self._threads.append(t)

    @staticmethod
    def _pipe(src: Any, dst: Any) -> None:
        import contextlib
        import socket

        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.close()
