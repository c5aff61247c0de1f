"""Issue 17 points 1 and 7 in a real kernel (ipykernel over ZMQ, as JupyterLab drives it):

- ``{undefined}`` in a magic line fails the cell with one UsageError line naming it, and
  nothing reaches the API; defined variables still expand;
- interrupting a ``--wait`` run (the kernel's interrupt, i.e. SIGINT) prints the one-line resume
  hint and no traceback: the cell ends without an error, the job keeps going.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager
from workers.support import wait_until

import goenhance_nb

pytestmark = pytest.mark.slow


@pytest.fixture
def kernel(tmp_path: Path, sim: Any, sim_env: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    goenhance_nb.sample_clip(str(tmp_path / "sample.mp4"))
    km = KernelManager(kernel_name="python3")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "VSCODE_"))}
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        run(kc, "%load_ext goenhance_nb")
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def collect(kc: Any, msg_id: str, timeout: float = 120) -> list[dict[str, Any]]:
    """The IOPub messages of one execute request, up to its ``idle`` status."""
    msgs: list[dict[str, Any]] = []
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return msgs
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append(msg)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return msgs


def reply_to(kc: Any, msg_id: str) -> dict[str, Any]:
    """The shell reply to ``msg_id`` (earlier replies skipped)."""
    while True:
        reply: dict[str, Any] = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def run(kc: Any, code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    msg_id = kc.execute(code, allow_stdin=True)
    msgs = collect(kc, msg_id)
    return reply_to(kc, msg_id)["content"], msgs


def shown(msgs: list[dict[str, Any]]) -> str:
    """Everything the cell shows as text: streams, plain-text outputs, error tracebacks."""
    parts: list[str] = []
    for m in msgs:
        c = m["content"]
        if m["msg_type"] == "stream":
            parts.append(c["text"])
        elif m["msg_type"] in ("display_data", "execute_result"):
            parts.append(str(c["data"].get("text/plain", "")))
        elif m["msg_type"] == "error":
            parts.append("\n".join(c["traceback"]))
    return "\n".join(parts)


def api_calls(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["path"].startswith(("/api/", "/sim/uploads"))]


def test_undefined_variable_is_one_line_and_defined_ones_expand(
    kernel: tuple[Any, Any], sim: Any
) -> None:
    _, kc = kernel
    reply, msgs = run(
        kc, '%goenhance run sample.mp4 --style 2000 --prompt "{undefined_var} light" --wait'
    )
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    lines = [ln for ln in shown(msgs).splitlines() if ln.strip()]  # IPython: one stderr line
    assert len(lines) == 1, lines
    assert lines[0].startswith("UsageError: %goenhance: name 'undefined_var' is not defined")
    assert api_calls(sim) == []

    reply, msgs = run(
        kc,
        'subject = "a cat"\n'
        'job = %goenhance run sample.mp4 --style 2000 -r 540p --prompt "{subject} {{x}}" --wait\n'
        "print(repr(job.spec.prompt), job.spec.duration)",
    )
    assert reply["status"] == "ok", reply
    assert "'a cat {x}' 4" in shown(msgs)
    assert sim.generate_calls() == 1


def test_interrupting_a_wait_run_prints_one_hint_and_no_traceback(
    kernel: tuple[Any, Any], sim: Any
) -> None:
    km, kc = kernel
    sim.config(pending_seconds=60)
    msg_id = kc.execute(
        "job = %goenhance run sample.mp4 --style 2000 -d 3 -r 540p --wait", allow_stdin=True
    )
    before: list[dict[str, Any]] = []
    while not any(  # the status widget is shown: the cell now waits for the job
        m["msg_type"] == "display_data"
        and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]
        for m in before
    ):
        msg = kc.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id:
            before.append(msg)
    wait_until(lambda: sim.generate_calls() == 1, timeout=60)  # submitted
    km.interrupt_kernel()
    msgs = before + collect(kc, msg_id)
    reply = reply_to(kc, msg_id)
    text = shown(msgs)
    assert reply["content"]["status"] == "ok", text
    assert not [m for m in msgs if m["msg_type"] == "error"]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    hints = [ln for ln in text.splitlines() if "Stopped waiting" in ln]
    assert len(hints) == 1 and "%goenhance resume " in hints[0], text
    # the job keeps going and stays resumable: nothing charged twice
    reply, msgs = run(kc, "print(job)")
    assert reply["status"] == "ok" and "None" in shown(msgs)
    assert sim.generate_calls() == 1
