"""What a run leaves in the saved notebook (issue 17, points 5 and 6), in a real kernel.

A notebook with live (``--no-wait``) runs is executed by nbclient and saved; then:

- no output of an ended job is a widget view (``application/vnd.jupyter.widget-view+json``):
  the live widget was replaced by the static result (video + caption) or the failure line;
- each run left ONE output, plus a short plain-text value (no second Job repr);
- nbconvert's HTML export holds no widget repr (``StatusWidget(``, ``HBox(children=``).

The browser reopen check ("Error displaying widget: model not found") is the browser suite's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest

import goenhance_nb

pytestmark = pytest.mark.slow

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"

# Waits (polls with a deadline) until no StatusWidget is open in the kernel any more: the
# magic closes a run's widget right after replacing its output, so by then every
# update_display_data was sent while this cell ran (nbclient applies it to the saved output).
SETTLE = """
import time
from ipywidgets.widgets.widget import _instances
from goenhance_nb.widgets import StatusWidget
_deadline = time.monotonic() + 120
while any(isinstance(w, StatusWidget) for w in list(_instances.values())):
    assert time.monotonic() < _deadline, "a status widget is still open"
    time.sleep(0.05)
print("settled")
"""


def _outputs(nb: Any) -> list[list[dict[str, Any]]]:
    return [list(c.outputs) for c in nb.cells if c.cell_type == "code"]


def run_like_jupyterlab(cells: list[str], cwd: Path) -> Any:
    """Execute ``cells`` in a real kernel as JupyterLab does (``allow_stdin`` true, one cell
    after the other) and return the notebook as the frontend would save it: every IOPub output
    goes to the cell that sent it, and ``update_display_data`` replaces the outputs with its
    display id whichever cell sent it (nbclient ignores updates sent for an earlier cell)."""
    from jupyter_client.manager import KernelManager

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    by_display: dict[str, list[dict[str, Any]]] = {}
    km = KernelManager(kernel_name="python3")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "VSCODE_"))}
    env.pop("GOENHANCE_WAIT", None)
    km.start_kernel(env=env, cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        owner: dict[str, Any] = {}

        def on_output(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            display_id = content.get("transient", {}).get("display_id")
            if kind == "update_display_data":
                for out in by_display.get(display_id, []):
                    out["data"], out["metadata"] = content["data"], content["metadata"]
                return
            cell = owner.get(msg["parent_header"].get("msg_id", ""))
            if cell is None or kind not in ("display_data", "execute_result", "stream", "error"):
                return
            out = nbformat.v4.output_from_msg(msg)
            cell.outputs.append(out)
            if display_id:
                by_display.setdefault(display_id, []).append(out)

        for cell in nb.cells:
            msg_id = kc.execute(cell.source, allow_stdin=True)
            owner[msg_id] = cell
            while True:  # this cell's idle status ends it; others' outputs are applied too
                msg = kc.get_iopub_msg(timeout=180)
                if (
                    msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"
                    and msg["parent_header"].get("msg_id") == msg_id
                ):
                    break
                on_output(msg)
            reply = kc.get_shell_msg(timeout=60)
            assert reply["content"]["status"] == "ok", (cell.source, reply["content"])
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return nb


def test_ended_runs_leave_only_static_outputs_and_export_cleanly(
    tmp_path: Path, sim: Any, sim_env: dict[str, str]
) -> None:
    goenhance_nb.sample_clip(str(tmp_path / "sample.mp4"))
    sim.config(pending_seconds=0.5, processing_seconds=0.5)
    cells = [
        "%load_ext goenhance_nb",
        # live: the cell returns at once; the widget is replaced by the video when done
        "job = %goenhance run sample.mp4 --style 'Clay Style' -d 3 -r 540p --no-wait",
        # a failure in the background: replaced by one static failure line
        "from goenhance_nb import get_session\nget_session().simulator().fault('job_failed')",
        "bad = %goenhance run sample.mp4 --style 2004 -d 3 -r 540p --no-wait",
        SETTLE,
        # a cache hit re-run: the result at once, and a short value
        "%goenhance run sample.mp4 --style 'Clay Style' -d 3 -r 540p --wait",
    ]
    nb = run_like_jupyterlab(cells, tmp_path)
    nbformat.write(nb, tmp_path / "runs.ipynb")
    saved = nbformat.read(tmp_path / "runs.ipynb", as_version=4)  # what the file holds
    outs = _outputs(saved)

    every = [o for cell in outs for o in cell]
    assert not [o for o in every if WIDGET_VIEW in o.get("data", {})], "a widget view remained"
    for o in every:
        plain = str(o.get("data", {}).get("text/plain", ""))
        assert "StatusWidget(" not in plain and "HBox(children" not in plain, plain

    # the live run: one output (the video with its caption) and no Out value (assignment)
    run = outs[1]
    assert len(run) == 1, run
    html = str(run[0]["data"]["text/html"])
    assert 'class="goenhance-video"' in html and "goenhance_outputs/clay-style-" in html
    assert "request " not in str(run[0]["data"]["text/plain"])

    # the failed run: one static output, the error once, Retry's cost said
    failed = outs[3]
    assert len(failed) == 1, failed
    text = str(failed[0]["data"]["text/plain"])
    assert text.count("failed; the service gave no reason") == 1, text
    assert "may be refunded by the service" in text and "cost 15 credits" not in text
    assert "charged again, ~15 credits" in text

    # the cache hit with --wait: the result and nothing else (the job is the cell's value, but
    # its output above is the job: no second output, no Out[n])
    hit = outs[5]
    assert [o["output_type"] for o in hit] == ["display_data"], hit
    assert "cached, originally 23 credits" in str(hit[0]["data"]["text/plain"])

    # nbconvert's HTML export: the static outputs only, no widget repr
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(saved)
    assert "StatusWidget(" not in body and "HBox(children" not in body
    assert "goenhance-video" in body
    assert (tmp_path / "goenhance_outputs").is_dir()
