"""Real-browser scenarios: what a person sees in JupyterLab (and Notebook 7) with goenhance_nb.

Each test starts its own JupyterLab / Notebook 7 server (random port and token, temp root),
whose kernels talk to the suite's simulator with the sentinel key and a per-test cache dir.
DOM hooks: docs/ARCHITECTURE.md section 4. End-state screenshots: artifacts/browser/.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from browserkit import (
    ARTIFACTS,
    JOB_DONE_MS,
    JS_BUSY_PROMPTS,
    JS_KERNEL_STATUS,
    LOAD_CELL,
    REPO,
    SENTINEL,
    SETUP_CELL,
    JupyterServer,
    accept_dialog_if_shown,
    command,
    dom_snapshot,
    export_html,
    find_secret,
    open_notebook,
    outputs_text,
    run_all_and_wait,
    save_notebook,
    screenshot,
    wait_kernel_idle,
    write_notebook,
)

pytestmark = pytest.mark.browser

RUN_CELL = "%goenhance run clip.mp4 --style 2000 --duration 3 --resolution 540p"
QUICKSTART_CELLS = [SETUP_CELL, LOAD_CELL, RUN_CELL]

# Slow enough that a person (and the test) sees queued -> running -> done after the cell returned.
VISIBLE_LIFECYCLE = {
    "pending_seconds": 2.0,
    "processing_seconds": 3.0,
    "processing_per_second": 0.0,
}

# Records every change of the status badges with what the page showed at that moment:
# whether any cell showed [*] and the kernel indicator's status.
JS_INSTALL_STATE_RECORDER = f"""() => {{
    const busyPrompts = {JS_BUSY_PROMPTS};
    const kernelStatus = {JS_KERNEL_STATUS};
    window.__geStates = [];
    const snap = () => {{
        const states = Array.from(document.querySelectorAll('.goenhance-status .goenhance-state'))
            .map(e => e.textContent.trim());
        const key = JSON.stringify(states);
        const log = window.__geStates;
        if (log.length && log[log.length - 1].key === key) return;
        log.push({{key, states, busy: busyPrompts(), kernel: kernelStatus(), t: performance.now()}});
    }};
    new MutationObserver(snap).observe(document.body,
        {{subtree: true, childList: true, characterData: true, attributes: true}});
    snap();
}}"""


def _state_log(page: Any) -> list[dict[str, Any]]:
    return list(page.evaluate("() => window.__geStates"))


def _start(
    jupyter: Callable[..., JupyterServer],
    env: dict[str, str],
    name: str,
    cells: list[str],
    kind: str = "lab",
) -> JupyterServer:
    server = jupyter(kind, env=env)
    write_notebook(server.root / name, cells)
    return server


def _wait_state(
    page: Any,
    wanted: tuple[str, ...],
    *,
    selector: str = ".goenhance-status",
    timeout: int = JOB_DONE_MS,
) -> str:
    """Wait until the last status widget's badge shows one of `wanted`; return the text."""
    page.wait_for_function(
        """([sel, wanted]) => {
            const all = document.querySelectorAll(sel + ' .goenhance-state');
            if (!all.length) return false;
            return wanted.includes(all[all.length - 1].textContent.trim());
        }""",
        arg=[selector, list(wanted)],
        timeout=timeout,
    )
    return str(page.locator(f"{selector} .goenhance-state").last.inner_text()).strip()


def _assert_video_plays(page: Any, video: Any) -> dict[str, Any]:
    """The <video> has decodable data (readyState >= 2) and its playhead moves when played."""
    video.wait_for(state="attached", timeout=JOB_DONE_MS)
    video.scroll_into_view_if_needed()
    handle = video.element_handle()
    page.wait_for_function("v => v.readyState >= 2 || v.error", arg=handle, timeout=JOB_DONE_MS)
    info = handle.evaluate(
        "v => ({ready: v.readyState, error: v.error && v.error.code, "
        "src: v.currentSrc, w: v.videoWidth, h: v.videoHeight, d: v.duration})"
    )
    assert info["error"] is None, f"the video failed to load: {info}"
    assert info["ready"] >= 2 and info["w"] > 0 and info["h"] > 0, info
    handle.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function("v => v.currentTime > 0.3 && !v.paused", arg=handle, timeout=30_000)
    handle.evaluate("v => v.pause()")
    return dict(info)


def _shot(page: Any, name: str) -> None:
    screenshot(page, name)


# ------------------------------------------------------------------------------------------
# quickstart (JupyterLab and Notebook 7)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lab", "notebook"])
def test_quickstart_background_updates_and_video(
    kind: str,
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    bsim.config(**VISIBLE_LIFECYCLE)
    server = _start(jupyter, kernel_env, "quickstart.ipynb", QUICKSTART_CELLS, kind)
    open_notebook(page, server, "quickstart.ipynb")
    page.evaluate(JS_INSTALL_STATE_RECORDER)

    run_all_and_wait(page)  # every cell has a number, kernel idle: the magic returned at once
    status = page.locator(".goenhance-status").last
    status.wait_for(state="visible", timeout=30_000)
    assert status.locator(".goenhance-backend").inner_text().strip() == "SIMULATED"

    final = _wait_state(page, ("done", "failed", "timed out", "cached"))
    assert final == "done", f"job ended {final!r}: {status.inner_text()}"
    log = _state_log(page)
    (ARTIFACTS / f"{artifact_name}.states.json").write_text(json.dumps(log, indent=1))
    seen = [e["states"][-1] for e in log if e["states"]]
    assert any(s in ("queued", "running") for s in seen), f"never showed queued/running: {log}"
    first_done = next(e for e in log if e["states"] and e["states"][-1] == "done")
    # The badge turned "done" while no cell was executing: a background update.
    assert not first_done["busy"], f"a cell showed [*] when the badge turned done: {log}"
    assert first_done["kernel"] == "idle", f"kernel not idle when the badge turned done: {log}"
    changes_while_idle = [e for e in log if e["states"] and not e["busy"] and e["kernel"] == "idle"]
    assert len({e["states"][-1] for e in changes_while_idle}) >= 2, log

    # The placeholder was replaced by the result: a playing video labelled SIMULATED.
    result = page.locator(".jp-OutputArea .goenhance-result").last
    result.wait_for(state="visible", timeout=JOB_DONE_MS)
    assert result.locator(".goenhance-simulated").is_visible()
    assert result.locator(".goenhance-simulated").inner_text().strip() == "SIMULATED"
    assert page.locator(".goenhance-placeholder").count() == 0
    info = _assert_video_plays(page, result.locator("video.goenhance-video"))
    assert "goenhance_outputs/" in info["src"], info
    assert bsim.generate_calls() == 1
    _shot(page, artifact_name)


# ------------------------------------------------------------------------------------------
# panel
# ------------------------------------------------------------------------------------------
def test_panel_submit_then_cached(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    bsim.config(**VISIBLE_LIFECYCLE)
    server = _start(
        jupyter,
        kernel_env,
        "panel.ipynb",
        [
            SETUP_CELL,
            "p = goenhance_nb.panel()\np",
        ],
    )
    open_notebook(page, server, "panel.ipynb")
    run_all_and_wait(page)
    panel = page.locator(".goenhance-panel")
    panel.wait_for(state="visible", timeout=30_000)

    # Choose the sample clip from the panel's video list, a style from the gallery, and
    # a short, small job.
    panel.locator(".goenhance-browser select").select_option("clip.mp4")
    page.wait_for_function(
        "() => document.querySelector('.goenhance-input input').value === 'clip.mp4'",
        timeout=30_000,
    )
    # (the panel preselects the first style; a person picks another one)
    style = panel.locator(".goenhance-style-2004")
    style.click()
    page.wait_for_function(
        "() => document.querySelector('.goenhance-style-2004').classList.contains('mod-active')"
        " && !document.querySelector('.goenhance-style-2000').classList.contains('mod-active')",
        timeout=30_000,
    )
    duration = panel.locator(".goenhance-duration input")
    duration.fill("3")
    duration.press("Enter")
    panel.locator(".goenhance-resolution select").select_option("540p")
    assert bsim.generate_calls() == 0

    page.evaluate(JS_INSTALL_STATE_RECORDER)
    panel.locator(".goenhance-submit").click()
    jobs = panel.locator(".goenhance-jobs")
    jobs.locator(".goenhance-job").first.wait_for(state="visible", timeout=30_000)
    _wait_state(page, ("done", "failed", "timed out", "cached"), selector=".goenhance-jobs")
    row = jobs.locator(".goenhance-job").first
    assert row.locator(".goenhance-state").inner_text().strip() == "done", row.inner_text()
    # The jobs list updated live: the row showed the job queued/running before done.
    seen = [e["states"][0] for e in _state_log(page) if e["states"]]
    assert seen[-1] == "done" and {"queued", "running"} & set(seen[:-1]), seen
    first = panel.locator(".goenhance-panel-result .goenhance-result").first
    first.wait_for(state="visible", timeout=JOB_DONE_MS)
    _assert_video_plays(page, first.locator("video.goenhance-video"))
    assert first.locator(".goenhance-cached").count() == 0
    assert bsim.generate_calls() == 1
    polls_before = len(bsim.requests("/api/v1/jobs/detail"))

    # The same again: the result appears from the cache, marked cached, no new job.
    panel.locator(".goenhance-submit").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.goenhance-jobs .goenhance-job').length === 2",
        timeout=30_000,
    )
    newest = jobs.locator(".goenhance-job").first  # newest first
    page.wait_for_function(
        """() => document.querySelectorAll('.goenhance-panel-result .goenhance-result').length === 2""",
        timeout=30_000,
    )
    second = panel.locator(".goenhance-panel-result .goenhance-result").first  # newest first
    assert second.locator(".goenhance-cached").is_visible()
    assert second.locator(".goenhance-cached").inner_text().strip() == "cached"
    # The row's badge settles on "cached" (it may show "queued" for one throttled render first).
    page.wait_for_function(
        """() => { const b = document.querySelector('.goenhance-jobs .goenhance-job .goenhance-state');
                   return b && ['done', 'cached', 'failed', 'timed out'].includes(b.textContent.trim()); }""",
        timeout=30_000,
    )
    assert newest.locator(".goenhance-state").inner_text().strip() == "cached"
    _assert_video_plays(page, second.locator("video.goenhance-video"))
    assert bsim.generate_calls() == 1, bsim.requests("/api/v1/video2video/generate")
    assert len(bsim.requests("/api/v1/jobs/detail")) == polls_before
    _shot(page, artifact_name)


# ------------------------------------------------------------------------------------------
# failure, then the cell run again
# ------------------------------------------------------------------------------------------
def test_failed_job_shows_one_line_error_and_running_again_succeeds(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    bsim.faults({"kind": "job_failed"})
    server = _start(jupyter, kernel_env, "failure.ipynb", QUICKSTART_CELLS)
    open_notebook(page, server, "failure.ipynb")
    run_all_and_wait(page)

    # issue 17: the ended job's widget was replaced by a static output: the state line (same
    # DOM hooks), the error once with the service's reason (none here), what running the cell
    # again costs; no widget buttons left in the output
    assert _wait_state(page, ("done", "failed", "timed out", "cached")) == "failed"
    error = page.locator(".goenhance-result-error").last
    error.wait_for(state="visible", timeout=30_000)
    text = error.inner_text().strip()
    assert text.endswith("failed; the service gave no reason"), f"error: {text!r}"
    assert outputs_text(page).count("failed; the service gave no reason") == 1
    assert "Traceback" not in outputs_text(page)
    hint = page.locator(".goenhance-result-hint").last
    assert "run the cell again (charged again, ~15 credits)" in hint.inner_text()
    assert "may be refunded by the service" in outputs_text(page)
    assert "cost 15 credits" not in outputs_text(page)
    assert page.locator(".jp-OutputArea .goenhance-retry").count() == 0
    assert page.locator(".jp-OutputArea .jupyter-widgets.goenhance-status").count() == 0
    assert bsim.generate_calls() == 1
    _shot(page, f"{artifact_name}-failed")

    run_all_and_wait(page)  # what the hint says: run the cell again (charged again)
    assert _wait_state(page, ("done", "failed", "timed out", "cached")) == "done"
    result = page.locator(".jp-OutputArea .goenhance-result").last
    result.wait_for(state="visible", timeout=JOB_DONE_MS)
    _assert_video_plays(page, result.locator("video.goenhance-video"))
    assert page.locator(".goenhance-result-error").count() == 0
    assert bsim.generate_calls() == 2
    _shot(page, artifact_name)


# ------------------------------------------------------------------------------------------
# opt-in browser notification (--notify)
# ------------------------------------------------------------------------------------------
# Replaces the page's Notification API before any script runs: permission "granted", and each
# `new Notification(title, options)` is recorded in window.__notes (nothing pops up).
JS_NOTIFICATION_RECORDER = """(() => {
    window.__notes = [];
    class RecordingNotification {
        constructor(title, options) {
            window.__notes.push({title: String(title), options: Object.assign({}, options || {})});
        }
        static get permission() { return "granted"; }
        static requestPermission() { return Promise.resolve("granted"); }
    }
    window.Notification = RecordingNotification;
})();"""


def test_notify_shows_one_browser_notification_when_done(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    bsim.config(**VISIBLE_LIFECYCLE)
    server = _start(
        jupyter,
        kernel_env,
        "notify.ipynb",
        [
            'import goenhance_nb\nclip = goenhance_nb.sample_clip("sample.mp4")',
            LOAD_CELL,
            "%goenhance run sample.mp4 --style 2000 --duration 3 --resolution 540p --notify",
        ],
    )
    page.context.grant_permissions(["notifications"], origin=server.base_url)
    page.add_init_script(JS_NOTIFICATION_RECORDER)
    open_notebook(page, server, "notify.ipynb")
    run_all_and_wait(page)

    # The notifier sits in the status widget and says what will happen (issue 17): with the
    # permission already granted there is nothing to click.
    notifier = page.locator(".goenhance-notify").last
    notifier.wait_for(state="visible", timeout=30_000)
    permission = notifier.locator(".goenhance-notify-permission")
    assert permission.inner_text().strip() == "a browser notification will show when the job ends"
    assert permission.get_attribute("data-permission") == "granted"
    assert not notifier.locator(".goenhance-notify-button").is_visible()
    assert page.evaluate("() => window.__notes.length") == 0  # nothing before the job ends

    assert _wait_state(page, ("done", "failed", "timed out", "cached")) == "done"
    result = page.locator(".jp-OutputArea .goenhance-result").last
    result.wait_for(state="visible", timeout=JOB_DONE_MS)
    page.wait_for_function("() => window.__notes.length >= 1", timeout=30_000)
    page.wait_for_timeout(1500)  # a second (duplicate) notification would arrive by now
    notes = page.evaluate("() => window.__notes")
    assert len(notes) == 1, notes
    assert notes[0]["title"] == "GoEnhance: ready", notes
    src = str(result.locator("video.goenhance-video").get_attribute("src"))
    body = notes[0]["options"]["body"]
    file_name = src.split("?", 1)[0].rsplit("/", 1)[-1]  # JupyterLab adds ?_xsrf=... to src
    assert body == f"Anime Style · {file_name}", (body, src)

    # The notification text went as a message, not as widget state: the saved notebook
    # (widget state included, whether or not the notifier's model is still open when the
    # job's output has turned static) does not hold it.
    saved = json.dumps(save_notebook(page, server, "notify.ipynb"))
    assert "GoEnhance: ready" not in saved
    assert bsim.generate_calls() == 1
    _shot(page, artifact_name)


# ------------------------------------------------------------------------------------------
# kernel restart while a job runs
# ------------------------------------------------------------------------------------------
def test_kernel_restart_reattaches_to_running_job(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    bsim.config(pending_seconds=2.0, processing_seconds=20.0, processing_per_second=0.0)
    server = _start(jupyter, kernel_env, "restart.ipynb", QUICKSTART_CELLS)
    open_notebook(page, server, "restart.ipynb")
    run_all_and_wait(page)
    _wait_state(page, ("running",))
    job_id = page.locator(".goenhance-status .goenhance-job-id").last.inner_text().strip()
    assert job_id and job_id != "—"
    assert bsim.generate_calls() == 1
    kernels_before = {k["id"]: k for k in server.kernels()}

    # Restart as a person would: the command asks, the person confirms.
    page.evaluate(
        "() => document.querySelectorAll('.goenhance-status')"
        ".forEach(e => e.setAttribute('data-test-old', '1'))"
    )
    command(page, "notebook:restart-kernel")
    page.locator(".jp-Dialog").wait_for(state="visible", timeout=30_000)
    assert accept_dialog_if_shown(page, "Restart")
    page.locator(".jp-Dialog").wait_for(state="detached", timeout=30_000)
    wait_kernel_idle(page)
    assert _job_status_in_sim(bsim, job_id) in ("processing", "pending"), (
        "the job finished before the restart; the scenario needs a running job"
    )

    run_all_and_wait(page)
    fresh = page.locator(".goenhance-status:not([data-test-old])").last
    fresh.wait_for(state="visible", timeout=30_000)
    page.wait_for_function(
        "() => { const e = document.querySelectorAll('.goenhance-status:not([data-test-old]) .goenhance-job-id');"
        " return e.length && e[e.length - 1].textContent.trim() !== '—'; }",
        timeout=30_000,
    )
    assert fresh.locator(".goenhance-job-id").inner_text().strip() == job_id
    assert bsim.generate_calls() == 1, "re-running the cell submitted a new job"
    # same kernel id, new process: the restart really happened
    assert set(kernels_before) == {k["id"] for k in server.kernels()}
    assert (
        _wait_state(
            page,
            ("done", "failed", "timed out", "cached"),
            selector=".goenhance-status:not([data-test-old])",
        )
        == "done"
    )
    result = page.locator(".jp-OutputArea .goenhance-result").last
    result.wait_for(state="visible", timeout=JOB_DONE_MS)
    _assert_video_plays(page, result.locator("video.goenhance-video"))
    assert bsim.generate_calls() == 1
    _shot(page, artifact_name)


def _job_status_in_sim(bsim: Any, short: str) -> str | None:
    """The simulator's current status of the job whose id starts with `short` (or None)."""
    ids = set()
    for q in bsim.requests("/api/v1/jobs/detail"):
        query = q.get("query") or ""
        if isinstance(query, dict):
            ids.add(str(query.get("img_uuid", "")))
        elif "img_uuid=" in query:
            ids.add(query.split("img_uuid=", 1)[1].split("&", 1)[0])
    for full in ids:
        if full.startswith(short):
            r = httpx.get(
                f"{bsim.base_url}/api/v1/jobs/detail",
                params={"img_uuid": full},
                headers={"Authorization": f"Bearer {SENTINEL}"},
                timeout=30,
            )
            return str(r.json()["data"]["status"])
    return None


# ------------------------------------------------------------------------------------------
# secret: the sentinel key never reaches the page, the saved notebook, widget state or logs
# ------------------------------------------------------------------------------------------
def test_sentinel_key_leaves_no_trace(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    tmp_path: Path,
    artifact_name: str,
) -> None:
    assert kernel_env["GOENHANCE_API_KEY"] == SENTINEL
    dump = tmp_path / "widget-state.json"
    control_dump = tmp_path / "control-widget-state.json"
    server = jupyter("lab", env=kernel_env, debug_logs=True)
    write_notebook(
        server.root / "secret.ipynb",
        [
            *QUICKSTART_CELLS[:2],
            "job = " + RUN_CELL,
            "record = job.wait(timeout=300)\nprint(record.style_label, record.backend)",
            "%goenhance config",
            "%goenhance credits",
            "%goenhance jobs",
            "p = goenhance_nb.panel()\np",
            _dump_widget_state_cell(dump),
        ],
    )
    write_notebook(
        server.root / "control-leak.ipynb",
        [
            "import os, base64, urllib.parse\n"
            "k = os.environ['GOENHANCE_API_KEY']\n"
            "print('leak:', k)\n"
            "print('leak-b64:', base64.b64encode(b'x' + k.encode()).decode())\n"
            "print('leak-url:', urllib.parse.quote(k, safe=''))\n"
            "_ = os.write(2, f'leak-log: {k}\\n'.encode())",
            "import ipywidgets\nipywidgets.Password(value=k, description='key')",
            _dump_widget_state_cell(control_dump),
        ],
    )
    open_notebook(page, server, "secret.ipynb")
    run_all_and_wait(page, timeout=180_000)
    page.locator(".jp-OutputArea .goenhance-result").last.wait_for(
        state="visible", timeout=JOB_DONE_MS
    )
    page.locator(".goenhance-panel").wait_for(state="visible", timeout=30_000)
    assert "widgets" in outputs_text(page)
    assert bsim.generate_calls() == 1  # the key really was used against the simulator

    saved = save_notebook(page, server, "secret.ipynb")
    saved_text = json.dumps(saved)
    assert "application/vnd.jupyter.widget-state+json" in saved_text, (
        "widget state was not saved into the notebook"
    )
    html_export = export_html(server, "secret.ipynb")
    surfaces = {
        "page DOM": dom_snapshot(page),
        "saved .ipynb": (server.root / "secret.ipynb").read_text(),
        "HTML export": html_export,
        "widget state (kernel)": dump.read_text(),
        "server + kernel log (DEBUG)": server.log_text(),
        "cache dir + goenhance_outputs": _files_text(
            Path(kernel_env["GOENHANCE_CACHE_DIR"]), server.root / "goenhance_outputs"
        ),
    }
    leaks = {name: find_secret(text, SENTINEL) for name, text in surfaces.items()}
    # Each surface really holds the scenario (so a clean scan means something).
    assert "SIMULATED" in surfaces["page DOM"]
    assert "goenhance-result" in surfaces["saved .ipynb"]
    assert "goenhance-result" in surfaces["HTML export"]
    assert "goenhance-status" in surfaces["widget state (kernel)"]
    assert "Kernel started" in surfaces["server + kernel log (DEBUG)"]
    assert "comm_msg" in surfaces["server + kernel log (DEBUG)"]  # kernel messages are logged
    assert "ledger" in surfaces["cache dir + goenhance_outputs"]
    _shot(page, artifact_name)
    assert not any(leaks.values()), f"the key leaked: {leaks}"

    # Control: a cell that prints the key (plain, base64, URL-encoded) and writes it to the
    # kernel's stderr. The same scanner must catch it on every surface it reaches.
    command(page, "docmanager:open", {"path": "control-leak.ipynb"})
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget && "
        "window.jupyterapp.shell.currentWidget.context && "
        "window.jupyterapp.shell.currentWidget.context.path === 'control-leak.ipynb'",
        timeout=30_000,
    )
    page.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget; const k = w.sessionContext.session"
        " && w.sessionContext.session.kernel; return k && k.connectionStatus === 'connected'"
        " && w.sessionContext.kernelDisplayStatus === 'idle'; }",
        timeout=60_000,
    )
    run_all_and_wait(page)
    page.get_by_text("leak-url:").first.wait_for(timeout=30_000)
    save_notebook(page, server, "control-leak.ipynb")
    caught = {
        "page DOM": find_secret(dom_snapshot(page), SENTINEL),
        "saved .ipynb": find_secret((server.root / "control-leak.ipynb").read_text(), SENTINEL),
        "HTML export": find_secret(export_html(server, "control-leak.ipynb"), SENTINEL),
        "server + kernel log": find_secret(_wait_log(server, "leak-log:"), SENTINEL),
        "widget state (kernel)": find_secret(control_dump.read_text(), SENTINEL),
    }
    _shot(page, f"{artifact_name}-control")
    for surface in ("page DOM", "saved .ipynb", "HTML export"):
        assert {"plain", "url-encoded", "base64@1"} <= set(caught[surface]), (surface, caught)
    assert "plain" in caught["server + kernel log"], caught
    assert "plain" in caught["widget state (kernel)"], caught


def _files_text(*roots: Path) -> str:
    """Every file under `roots` (names and bytes, latin-1 decoded) as one text to scan."""
    parts = []
    for root in roots:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                parts.append(f"== {f.relative_to(root.parent)}\n")
                parts.append(f.read_bytes().decode("latin-1"))
    return "".join(parts)


def _dump_widget_state_cell(path: Path) -> str:
    """A cell that writes every live widget's state (what the kernel syncs) to `path`."""
    return (
        "import base64, json, time, ipywidgets\n"
        "time.sleep(1)  # let throttled widget renders land\n"
        "def _enc(o):\n"
        "    if isinstance(o, (bytes, bytearray, memoryview)):\n"
        "        return base64.b64encode(bytes(o)).decode()\n"
        "    return repr(o)\n"
        "state = {mid: w.get_state() for mid, w in list(ipywidgets.Widget.widgets.items())}\n"
        f"_ = open({str(path)!r}, 'w').write(json.dumps(state, default=_enc))\n"
        "print(len(state), 'widgets')"
    )


def _wait_log(server: JupyterServer, needle: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log_text()
        if needle in text:
            return text
        time.sleep(0.2)
    return server.log_text()


# ------------------------------------------------------------------------------------------
# the scanner itself (no browser): each form is found, and only where it is
# ------------------------------------------------------------------------------------------
def test_secret_scanner_finds_each_form() -> None:
    import urllib.parse

    key = SENTINEL
    assert find_secret("nothing here " * 50, key) == []
    assert find_secret(f"x{key}y", key) == ["plain"]
    assert "url-encoded" in find_secret(f"a={urllib.parse.quote(key, safe='')}&b", key)
    for prefix in (b"", b"a", b"ab", b"abc", b'{"k": "'):
        blob = base64.b64encode(prefix + key.encode() + b'"}').decode()
        found = find_secret(f"data:{blob}", key)
        assert any(f.startswith("base64@") for f in found), (prefix, found)
        assert "plain" not in found


# ------------------------------------------------------------------------------------------
# the shipped notebooks, as a person runs them in JupyterLab
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("notebook", "videos"), [("01-quickstart.ipynb", 2), ("02-panel.ipynb", 1)]
)
def test_shipped_notebook_runs_in_lab(
    notebook: str,
    videos: int,
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    source = REPO / "notebooks" / notebook
    if not source.exists():
        pytest.fail(f"{source} is missing")
    server = jupyter("lab", env=kernel_env)
    shutil.copy(source, server.root / notebook)
    open_notebook(page, server, notebook)
    run_all_and_wait(page, timeout=300_000)
    # The result videos: loaded and playable, labelled SIMULATED.
    page.wait_for_function(
        "n => document.querySelectorAll('.goenhance-result video.goenhance-video').length >= n",
        arg=videos,
        timeout=JOB_DONE_MS,
    )
    for video in page.locator(".goenhance-result video.goenhance-video").all()[:videos]:
        _assert_video_plays(page, video)
    assert page.locator(".goenhance-result .goenhance-simulated").first.is_visible()
    saved = save_notebook(page, server, notebook)
    errors = [
        (i, o.get("ename"), o.get("evalue"))
        for i, cell in enumerate(saved["cells"])
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors, f"cells failed: {errors}"
    assert "Traceback" not in outputs_text(page)
    _shot(page, artifact_name)
