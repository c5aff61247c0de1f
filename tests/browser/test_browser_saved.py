"""Real-browser scenarios of issue 17, points 5 and 7: what stays in the notebook, Stop watching.

Point 5: a finished `--no-wait` run leaves one static output (state line + video); after saving,
"Close and Shut Down" and reopening, JupyterLab shows no widget error, the state line still reads
"done" and the video loads; the HTML export holds no widget repr.
Point 7: "Stop watching" turns the badge grey "not watching", freezes the clock, offers Resume and
prints one hint with the short job id; Resume watches the same job again without a new charge.
DOM hooks: docs/ARCHITECTURE.md section 4. Screenshots: artifacts/browser/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from browserkit import (
    JOB_DONE_MS,
    LOAD_CELL,
    SETUP_CELL,
    JupyterServer,
    accept_dialog_if_shown,
    command,
    export_html,
    open_notebook,
    outputs_text,
    run_all_and_wait,
    save_notebook,
    screenshot,
    write_notebook,
)

pytestmark = pytest.mark.browser

RUN_NO_WAIT = "%goenhance run clip.mp4 --style 2000 --duration 3 --resolution 540p --no-wait"
CELLS = [SETUP_CELL, LOAD_CELL, RUN_NO_WAIT]
NAME = "saved.ipynb"

# The raw reprs a viewer without widgets showed before issue 17 (point 5).
WIDGET_REPRS = ("StatusWidget(", "HBox(children", "MagicStatusWidget")
WIDGET_ERRORS = ("Error displaying widget", "model not found")
# A full job id (UUID, with or without dashes): the hint must use the 8-char short id only.
FULL_UUID = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.I)


def _start(jupyter: Callable[..., JupyterServer], env: dict[str, str]) -> JupyterServer:
    server = jupyter("lab", env=env)
    write_notebook(server.root / NAME, CELLS)
    return server


def _run_cell_output(page: Any) -> Any:
    """The output area of the notebook's last code cell (the `%goenhance run` cell)."""
    return page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell").last.locator(
        ".jp-OutputArea"
    )


def _wait_badge(page: Any, wanted: tuple[str, ...], scope: str, timeout: int = JOB_DONE_MS) -> str:
    """Wait until the last `.goenhance-state` under `scope` reads one of `wanted`."""
    page.wait_for_function(
        """([scope, wanted]) => {
            const all = document.querySelectorAll(scope + ' .goenhance-state');
            return all.length > 0 && wanted.includes(all[all.length - 1].textContent.trim());
        }""",
        arg=[scope, list(wanted)],
        timeout=timeout,
    )
    return str(page.locator(f"{scope} .goenhance-state").last.inner_text()).strip()


def _video_loads(page: Any, video: Any) -> dict[str, Any]:
    """The <video> gets metadata (readyState >= 1) with no media error; returns what it shows."""
    video.wait_for(state="attached", timeout=JOB_DONE_MS)
    video.scroll_into_view_if_needed()
    handle = video.element_handle()
    page.wait_for_function("v => v.readyState >= 1 || v.error", arg=handle, timeout=JOB_DONE_MS)
    info = dict(
        handle.evaluate(
            "v => ({ready: v.readyState, error: v.error && v.error.code, src: v.currentSrc,"
            " w: v.videoWidth, h: v.videoHeight})"
        )
    )
    assert info["error"] is None and info["ready"] >= 1, f"the video did not load: {info}"
    assert info["w"] > 0 and info["h"] > 0, info
    return info


# ------------------------------------------------------------------------------------------
# point 5: saved, shut down, reopened; exported to HTML
# ------------------------------------------------------------------------------------------
def test_reopened_after_shutdown_shows_static_result_and_html_has_no_widget_repr(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    server = _start(jupyter, kernel_env)
    open_notebook(page, server, NAME)
    run_all_and_wait(page)  # --no-wait: the cell returns at once, the widget follows the job

    # When the job ends, the live widget is replaced by one static output: state line + video.
    assert _wait_badge(page, ("done", "failed", "timed out", "cached"), ".goenhance-static") == (
        "done"
    ), outputs_text(page)
    _video_loads(page, _run_cell_output(page).locator("video.goenhance-video").last)
    assert page.locator(".jp-OutputArea .jupyter-widgets.goenhance-status").count() == 0
    assert bsim.generate_calls() == 1

    saved = save_notebook(page, server, NAME)
    run_cell = saved["cells"][-1]
    saved_text = str(run_cell["outputs"])
    assert "goenhance-static" in saved_text and "goenhance-video" in saved_text, saved_text
    assert "application/vnd.jupyter.widget-view+json" not in saved_text, run_cell["outputs"]
    n_outputs = sum(len(c.get("outputs", [])) for c in saved["cells"])

    # "Close and Shut Down" as a person does it: the command asks, the person confirms.
    command(page, "notebook:close-and-shutdown")
    page.locator(".jp-Dialog").wait_for(state="visible", timeout=30_000)
    assert accept_dialog_if_shown(page, "Shut down")
    page.locator(".jp-Dialog").wait_for(state="detached", timeout=30_000)
    deadline = time.monotonic() + 30
    while server.kernels() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert server.kernels() == [], "the kernel was not shut down"
    page.locator(".jp-NotebookPanel").wait_for(state="detached", timeout=30_000)

    # Reopen: a fresh kernel, no widget models; the saved outputs must stand on their own.
    open_notebook(page, server, NAME)
    out = _run_cell_output(page)
    out.locator(".goenhance-static .goenhance-state").first.wait_for(
        state="visible", timeout=30_000
    )
    video = out.locator("video.goenhance-video").last
    info = _video_loads(page, video)
    assert "goenhance_outputs/" in info["src"], info
    # every saved output is rendered (a widget view that cannot find its model renders as an
    # output holding "Error displaying widget"; the saved file above holds no widget view)
    page.wait_for_function(
        "n => document.querySelectorAll('.jp-Notebook .jp-OutputArea-output').length === n",
        arg=n_outputs,
        timeout=30_000,
    )
    body = str(page.evaluate("() => document.body.innerText"))
    for needle in WIDGET_ERRORS:
        assert needle not in body, f"{needle!r} on the reopened page:\n{outputs_text(page)}"
    assert out.locator(".goenhance-static .goenhance-state").last.inner_text().strip() == "done"
    for needle in WIDGET_REPRS:
        assert needle not in body, (needle, outputs_text(page))
    screenshot(page, f"{artifact_name}-reopened")

    # The HTML export (a viewer without widgets): the video, no widget repr.
    html = export_html(server, NAME)
    for needle in WIDGET_REPRS:
        assert needle not in html, f"{needle!r} in the HTML export"
    video_tag = re.search(r'<video class="[^"]*goenhance-video[^"]*"[^>]*>', html)
    assert video_tag, "no goenhance video tag in the HTML export"
    assert 'src="goenhance_outputs/' in video_tag.group(0), video_tag.group(0)
    assert "goenhance-static" in html
    assert bsim.generate_calls() == 1


# ------------------------------------------------------------------------------------------
# point 7: Stop watching, then Resume
# ------------------------------------------------------------------------------------------
JS_BADGE_BG = """() => {
    const all = document.querySelectorAll('.goenhance-status .goenhance-state');
    const b = all[all.length - 1];
    return getComputedStyle(b).backgroundColor;
}"""


def _rgb(css: str) -> tuple[int, int, int]:
    m = re.match(r"rgba?\((\d+),\s*(\d+),\s*(\d+)", css)
    assert m, css
    r, g, b = (int(x) for x in m.groups())
    return r, g, b


def test_stop_watching_is_grey_with_one_short_hint_and_resume_does_not_charge(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    # A slow job (the bsim fixture resets the simulator's config after the test).
    bsim.config(pending_seconds=1.0, processing_seconds=30.0, processing_per_second=0.0)
    server = _start(jupyter, kernel_env)
    open_notebook(page, server, NAME)
    run_all_and_wait(page)
    status = ".goenhance-status"
    _wait_badge(page, ("running",), status, timeout=60_000)
    widget = page.locator(status).last
    elapsed = widget.locator(".goenhance-elapsed")
    # Control: while watching, the clock moves (so a frozen clock later means something).
    first = elapsed.inner_text().strip()
    page.wait_for_function(
        "t => { const e = document.querySelectorAll('.goenhance-status .goenhance-elapsed');"
        " return e.length && e[e.length - 1].textContent.trim() !== t; }",
        arg=first,
        timeout=10_000,
    )
    assert bsim.generate_calls() == 1

    widget.locator(".goenhance-cancel").click()
    assert _wait_badge(page, ("not watching",), status, timeout=30_000) == "not watching"
    # grey, not the running blue (#1565c0)
    r, g, b = _rgb(page.evaluate(JS_BADGE_BG))
    assert max(r, g, b) - min(r, g, b) <= 16, f"badge not grey: rgb({r}, {g}, {b})"
    assert (r, g, b) != (0x15, 0x65, 0xC0)
    resume = widget.locator(".goenhance-resume")
    resume.wait_for(state="visible", timeout=10_000)
    assert not widget.locator(".goenhance-cancel").is_visible()

    # The clock stopped: the widget ticks every second, so 2.5 s spans at least two ticks.
    stopped_at = elapsed.inner_text().strip()
    page.wait_for_timeout(2500)
    assert elapsed.inner_text().strip() == stopped_at, (stopped_at, elapsed.inner_text())

    # One hint, with the short id, nowhere the full UUID.
    job_id = widget.locator(".goenhance-job-id").inner_text().strip()
    assert re.fullmatch(r"[0-9a-f]{8}", job_id), job_id
    cell_text = str(_run_cell_output(page).inner_text())
    assert cell_text.count("%goenhance resume") == 1, cell_text
    assert f"%goenhance resume {job_id}" in cell_text, cell_text
    assert not FULL_UUID.search(cell_text), cell_text
    screenshot(page, f"{artifact_name}-stopped")

    # Resume: the badge leaves "not watching"; the same job, no new charge.
    resume.click()
    page.wait_for_function(
        "() => { const all = document.querySelectorAll('.goenhance-status .goenhance-state');"
        " return all.length && all[all.length - 1].textContent.trim() !== 'not watching'; }",
        timeout=30_000,
    )
    badge = page.locator(f"{status} .goenhance-state").last.inner_text().strip()
    assert badge in ("queued", "running", "done"), badge
    assert bsim.generate_calls() == 1, "Resume submitted a new job"
    # the widget follows the re-attached handle: the same job id once the first poll lands
    page.wait_for_function(
        "id => { const e = document.querySelectorAll('.goenhance-status .goenhance-job-id');"
        " return e.length && e[e.length - 1].textContent.trim() === id; }",
        arg=job_id,
        timeout=30_000,
    )
    # ... and it is watched again: the simulator still processes it, the badge says so
    assert _wait_badge(page, ("running",), status, timeout=30_000) == "running"
    assert widget.locator(".goenhance-cancel").is_visible()
    assert not widget.locator(".goenhance-resume").is_visible()
    assert bsim.generate_calls() == 1
    screenshot(page, f"{artifact_name}-resumed")
