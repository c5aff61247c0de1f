"""The notebook layer on both kernel lines: ipykernel 7 (this venv) and 6.29 (the
``goenhance-ipykernel6`` kernelspec that ``make test`` builds in ``.venv-ipykernel6``).

- the quickstart notebook runs headless on each and leaves its videos;
- an interactive (``allow_stdin`` true) ``--no-wait`` run returns at once with ONE output, the
  status widget (with a display id): its comm updates keep arriving on IOPub after the cell's
  ``execute_reply``, and an ``update_display_data`` replaces it by the result when the job
  ends (issue 17, point 5: no widget of an ended job stays in the notebook).
"""

from __future__ import annotations

import os
import queue
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_client.manager import KernelManager

import goenhance_nb
from goenhance_nb._demo import NOTEBOOKS_DIR, execute_notebook

pytestmark = pytest.mark.slow

KERNEL6 = "goenhance-ipykernel6"


def _kernel_or_skip(name: str) -> str:
    if name == "python3":
        return name
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        pytest.skip(
            f"kernelspec {name!r} is not installed here (make .venv-ipykernel6/.installed "
            "builds it; `make test` does so)"
        )
    return name


KERNELS = [pytest.param("python3", id="ipykernel7"), pytest.param(KERNEL6, id="ipykernel6")]


@pytest.mark.parametrize("kernel", KERNELS)
def test_quickstart_runs_on_kernel(
    kernel: str, tmp_path: Path, sim: Any, sim_env: dict[str, str]
) -> None:
    name = _kernel_or_skip(kernel)
    # the quickstart plus one cell that names the kernel line actually used
    nb = nbformat.read(NOTEBOOKS_DIR / "01-quickstart.ipynb", as_version=4)
    nb.cells.append(
        nbformat.v4.new_code_cell("import ipykernel; print('ipykernel', ipykernel.__version__)")
    )
    src = tmp_path / "src" / "01-quickstart.ipynb"
    src.parent.mkdir()
    nbformat.write(nb, src)
    work = tmp_path / "work"
    nb, error = execute_notebook(src, work, kernel_name=name)
    assert error is None, error
    html = "".join(
        str(o.get("data", {}).get("text/html", ""))
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert 'src="goenhance_outputs/anime-style-' in html
    assert 'src="goenhance_outputs/pixar-style-' in html
    assert len(list((work / "goenhance_outputs").glob("*.mp4"))) == 2
    version = nb.cells[-1].outputs[0]["text"].split()[1]
    assert version.startswith("6.29.") if name == KERNEL6 else version.startswith("7."), version


def _collect_until(
    kc: Any, pred: Any, limit: int = 2000, timeout: float = 120
) -> list[dict[str, Any]]:
    """Read IOPub messages until ``pred(msgs)`` holds (bounded by message count and a generous
    per-message timeout; no assertion on timing)."""
    msgs: list[dict[str, Any]] = []
    for _ in range(limit):
        try:
            msg = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            break
        msgs.append(msg)
        if pred(msgs):
            break
    return msgs


@pytest.mark.parametrize("kernel", KERNELS)
def test_widget_updates_and_its_replacement_arrive_after_the_cell_returns(
    kernel: str, tmp_path: Path, sim: Any, sim_env: dict[str, str]
) -> None:
    name = _kernel_or_skip(kernel)
    # long enough that the job cannot finish before the cell returns
    sim.config(pending_seconds=1.5, processing_seconds=1.0)
    goenhance_nb.sample_clip(str(tmp_path / "sample.mp4"))
    km = KernelManager(kernel_name=name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "VSCODE_"))}
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        reply = kc.execute_interactive(
            "%load_ext goenhance_nb", allow_stdin=True, timeout=60, stdin_hook=lambda m: None
        )
        assert reply["content"]["status"] == "ok"
        # drain what is left of the setup cell
        while True:
            try:
                kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                break

        msg_id = kc.execute(
            'job = %goenhance run sample.mp4 --style "Clay Style" --duration 3 -r 540p --no-wait',
            allow_stdin=True,
        )
        reply = kc.get_shell_msg(timeout=60)
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["status"] == "ok", reply["content"]

        def cell_idle(msgs: list[dict[str, Any]]) -> bool:
            return any(
                m["msg_type"] == "status"
                and m["content"]["execution_state"] == "idle"
                and m["parent_header"].get("msg_id") == msg_id
                for m in msgs
            )

        during = _collect_until(kc, cell_idle)
        assert cell_idle(during)
        # during the cell: one output, the widget view, with a display id and a readable
        # plain-text form (no second "request ... running" line, no placeholder)
        shown = [m for m in during if m["msg_type"] == "display_data"]
        assert len(shown) == 1, shown
        data = shown[0]["content"]["data"]
        assert "application/vnd.jupyter.widget-view+json" in data
        assert data["text/plain"].startswith("GoEnhance job") and "HBox(" not in data["text/plain"]
        display_id = shown[0]["content"]["transient"]["display_id"]
        assert not [m for m in during if m["msg_type"] == "update_display_data"]

        def final_update(msgs: list[dict[str, Any]]) -> bool:
            return any(
                m["msg_type"] == "update_display_data"
                and m["content"]["transient"]["display_id"] == display_id
                for m in msgs
            )

        def closed(msgs: list[dict[str, Any]]) -> bool:
            return any(m["msg_type"] == "comm_close" for m in msgs)

        after = _collect_until(kc, lambda msgs: final_update(msgs) and closed(msgs))
        assert final_update(after) and closed(after)  # replaced, then the widgets closed
        updates = [
            m
            for m in after
            if m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "update"
        ]
        states = [m["content"]["data"]["state"] for m in updates]
        assert any("value" in s for s in states), states[-5:]  # live after the cell returned
        final = next(m for m in after if m["msg_type"] == "update_display_data")
        html = final["content"]["data"]["text/html"]
        assert 'class="goenhance-video"' in html and 'src="goenhance_outputs/clay-style-' in html
        assert final["content"]["metadata"]["goenhance_nb"]["style"] == "Clay Style"
        assert (tmp_path / "goenhance_outputs").is_dir()
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("kernel", KERNELS)
def test_interactive_validation_error_fails_the_cell_and_a_failure_replaces_the_widget(
    kernel: str, tmp_path: Path, sim: Any, sim_env: dict[str, str]
) -> None:
    name = _kernel_or_skip(kernel)
    goenhance_nb.sample_clip(str(tmp_path / "sample.mp4"))
    km = KernelManager(kernel_name=name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "VSCODE_"))}
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        errors: list[dict[str, Any]] = []
        kc.execute_interactive(
            "%load_ext goenhance_nb", allow_stdin=True, timeout=60, stdin_hook=lambda m: None
        )
        # interactive (allow_stdin true) and --no-wait: a bad input still fails the cell itself
        reply = kc.execute_interactive(
            "%goenhance run sample.mp4 --style 'No Such Style' --no-wait",
            allow_stdin=True,
            timeout=60,
            stdin_hook=lambda m: None,
            output_hook=lambda m: errors.append(m) if m["msg_type"] == "error" else None,
        )
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "InputError"
        assert len(errors) == 1 and len(errors[0]["content"]["traceback"]) == 1
        assert errors[0]["content"]["traceback"][0].startswith("InputError: unknown style")
        assert sim.generate_calls() == 0

        # a job that fails in the background: its widget is replaced by one static failure
        # line (the error said once, with what running the cell again is charged)
        sim.faults({"kind": "job_failed"})
        msg_id = kc.execute(
            "%goenhance run sample.mp4 --style 2004 -d 3 -r 540p --no-wait", allow_stdin=True
        )

        def failed_update(m: dict[str, Any]) -> bool:
            return m["msg_type"] == "update_display_data" and "failed" in m["content"]["data"].get(
                "text/plain", ""
            )

        msgs = _collect_until(kc, lambda ms: any(failed_update(m) for m in ms))
        widget = next(
            m
            for m in msgs
            if m["msg_type"] == "display_data" and m["parent_header"].get("msg_id") == msg_id
        )
        final = next(m for m in msgs if failed_update(m))
        assert (
            final["content"]["transient"]["display_id"]
            == (widget["content"]["transient"]["display_id"])
        )
        text = final["content"]["data"]["text/plain"]
        assert text.count("failed; the service gave no reason") == 1, text
        assert "charged again, ~15 credits" in text and "cost 15 credits" not in text
        assert "application/vnd.jupyter.widget-view+json" not in final["content"]["data"]
        assert sim.generate_calls() == 1
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_login_reads_the_key_over_stdin_and_never_echoes_it(
    tmp_path: Path, sim: Any, sim_env: dict[str, str]
) -> None:
    km = KernelManager(kernel_name="python3")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JPY_", "VSCODE_")) and k != "GOENHANCE_API_KEY"
    }
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    km.start_kernel(env=env, cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    seen: list[str] = []

    def hook(msg: dict[str, Any]) -> None:
        seen.append(repr(msg["content"]))

    try:
        kc.wait_for_ready(timeout=60)
        kc.execute_interactive(
            "%load_ext goenhance_nb", allow_stdin=True, timeout=60, stdin_hook=lambda m: None
        )
        # headless (allow_stdin false): refused with one line, nothing asked
        reply = kc.execute_interactive(
            "%goenhance login", allow_stdin=False, timeout=60, output_hook=hook
        )
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "UsageError"
        prompts: list[dict[str, Any]] = []

        def answer(msg: dict[str, Any]) -> None:
            prompts.append(msg["content"])
            kc.input(sim.api_key)

        reply = kc.execute_interactive(
            "%goenhance login --save",
            allow_stdin=True,
            timeout=60,
            stdin_hook=answer,
            output_hook=hook,
        )
        assert reply["content"]["status"] == "ok"
        assert prompts and prompts[0]["password"] is True  # getpass: not echoed by the frontend
        reply = kc.execute_interactive(
            "%goenhance credits",
            allow_stdin=True,
            timeout=60,
            stdin_hook=lambda m: None,
            output_hook=hook,
        )
        assert reply["content"]["status"] == "ok"
        assert any("Credits:" in s for s in seen)
        assert not any(sim.api_key in s for s in seen)
        key_file = tmp_path / "config" / "goenhance_nb" / "api_key"
        assert key_file.read_text().strip() == sim.api_key
        assert (key_file.stat().st_mode & 0o777) == 0o600
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
