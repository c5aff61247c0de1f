"""The panel at scale in JupyterLab (issue 17 points 2, 9, 10, 11), at 760 px and 1400 px.

A person picks the sample clip (4 s) in the Videos list: the list highlights it and the
duration becomes 4 s, capped there; the cost estimate beside Submit follows. Submit, then the
same again (a cache hit): each row holds its own small result player, newest first, and the
cache hit grows the panel by far less than a 480 px video. No labelled control is clipped and
nothing leaves the panel, at 760 px and at 1400 px. "Clear finished" empties the list.
Screenshots of the panel at both widths go to artifacts/browser/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from browserkit import (
    ARTIFACTS,
    JOB_DONE_MS,
    SETUP_CELL,
    JupyterServer,
    open_notebook,
    run_all_and_wait,
    screenshot,
    write_notebook,
)

pytestmark = pytest.mark.browser


# Every visible labelled control of the panel: clipped (its text wider than its box) or
# reaching outside the panel's box. Returns a list of problems (empty: none).
JS_CLIPPED = """() => {
    const panel = document.querySelector('.goenhance-panel');
    const pr = panel.getBoundingClientRect();
    const sel = ['button', 'label.widget-label', '.goenhance-credits', '.goenhance-estimate',
                 '.goenhance-duration-hint', '.goenhance-backend', '.goenhance-state',
                 '.goenhance-info', '.goenhance-elapsed', '.goenhance-job-id',
                 '.goenhance-job-title', '.goenhance-raw-status', 'select', 'input',
                 'textarea', 'video'].join(', ');
    const bad = [];
    for (const el of panel.querySelectorAll(sel)) {
        if (!el.offsetParent) continue;  // not shown
        const r = el.getBoundingClientRect();
        if (r.width === 0) continue;
        const name = ((el.textContent || el.value || '').trim().slice(0, 40)) || el.className;
        const text = !['SELECT', 'INPUT', 'TEXTAREA', 'VIDEO'].includes(el.tagName);
        if (text && el.scrollWidth > el.clientWidth + 1)
            bad.push(`clipped: ${name} (${el.scrollWidth} > ${el.clientWidth})`);
        if (r.left < pr.left - 1 || r.right > pr.right + 1)
            bad.push(`outside the panel: ${name} (${r.left}-${r.right} vs ${pr.left}-${pr.right})`);
    }
    return bad;
}"""

# Height (px) of each job row's first line block (names + status), newest first.
JS_ROW_HEADS = """() => Array.from(document.querySelectorAll('.goenhance-jobs .goenhance-job'))
    .map(r => r.firstElementChild.getBoundingClientRect().height)"""


# Contrast (WCAG) of the panel's own texts against the background they sit on.
JS_CONTRAST = """() => {
    const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
        const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const bg = el => {
        for (let a = el; a; a = a.parentElement) {
            const c = rgb(getComputedStyle(a).backgroundColor);
            if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c;
        }
        return [255, 255, 255];
    };
    const sel = ['.goenhance-panel > .widget-hbox .goenhance-backend', '.goenhance-credits',
                 '.goenhance-estimate', '.goenhance-duration-hint',
                 '.goenhance-panel-message span', '.goenhance-job-title'].join(', ');
    const out = [];
    for (const el of document.querySelectorAll(sel)) {
        if (!el.offsetParent || !el.textContent.trim()) continue;
        const a = lum(rgb(getComputedStyle(el).color)), b = lum(bg(el));
        const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        out.push([el.textContent.trim().slice(0, 30), Math.round(ratio * 10) / 10]);
    }
    return out;
}"""


def _panel_shot(page: Any, name: str) -> None:
    """The whole panel (the window is made tall enough for it, then restored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    panel = page.locator(".goenhance-panel")
    tall = int(panel.bounding_box()["height"]) + 400
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], tall)})
    try:
        panel.scroll_into_view_if_needed()
        page.wait_for_timeout(300)  # let the layout settle for the picture (not an assertion)
        panel.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    finally:
        page.set_viewport_size(size)


def _choose_file(page: Any, button: Any, name: str, data: bytes) -> None:
    """Click the upload button and pick one file in the file chooser, as a person does."""
    with page.expect_file_chooser() as chooser:
        button.click()
    chooser.value.set_files(files=[{"name": name, "mimeType": "video/mp4", "buffer": data}])


def _assert_nothing_clipped(page: Any, width: int) -> None:
    page.set_viewport_size({"width": width, "height": 1000})
    page.wait_for_function(  # the layout follows the window (no fixed-width box is wider)
        "w => document.querySelector('.goenhance-panel').getBoundingClientRect().right <= w",
        arg=width,
        timeout=10_000,
    )
    problems = page.evaluate(JS_CLIPPED)
    assert problems == [], f"at {width} px: {problems}"
    heads = page.evaluate(JS_ROW_HEADS)
    print(f"at {width} px: job row heads {heads} px")  # in the log of a -s run
    # a row's names + status take at most three lines (about 30 px each), never six
    assert heads and max(heads) <= 100, f"at {width} px the job rows are {heads} px tall"


def test_panel_rows_results_and_layout_at_760_and_1400(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    page.set_viewport_size({"width": 760, "height": 1000})
    server = jupyter("lab", env=kernel_env)
    write_notebook(server.root / "panel.ipynb", [SETUP_CELL, "p = goenhance_nb.panel()\np"])
    open_notebook(page, server, "panel.ipynb")
    run_all_and_wait(page)
    panel = page.locator(".goenhance-panel")
    panel.wait_for(state="visible", timeout=30_000)

    # choosing the clip: highlighted in the list, duration = its length (4 s), capped there
    panel.locator(".goenhance-browser select").select_option("clip.mp4")
    page.wait_for_function(
        "() => document.querySelector('.goenhance-duration input').value === '4'",
        timeout=30_000,
    )
    assert panel.locator(".goenhance-browser select").input_value() == "clip.mp4"
    assert panel.locator(".goenhance-duration input").get_attribute("max") == "4"
    assert "clip.mp4 is 4.0 s" in panel.locator(".goenhance-duration-hint").inner_text()
    panel.locator(".goenhance-resolution select").select_option("540p")
    page.wait_for_function(
        "() => document.querySelector('.goenhance-estimate').textContent.includes('~20 credits')",
        timeout=30_000,
    )  # 4 s x 5 credits/s at 540p, updated when the resolution changed

    panel.locator(".goenhance-submit").click()
    row = panel.locator(".goenhance-jobs .goenhance-job").first
    row.locator(".goenhance-job-result video.goenhance-video").wait_for(
        state="visible", timeout=JOB_DONE_MS
    )
    page.wait_for_function(  # the badge is rendered by a throttle: it may trail the video
        "() => document.querySelector('.goenhance-jobs .goenhance-state').textContent.trim()"
        " === 'done'",
        timeout=30_000,
    )
    height_one = panel.bounding_box()["height"]

    # the same again: a cache hit, in its own row at the top, with a small player
    panel.locator(".goenhance-submit").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.goenhance-jobs .goenhance-job-result video').length"
        " === 2",
        timeout=JOB_DONE_MS,
    )
    newest = panel.locator(".goenhance-jobs .goenhance-job").first
    newest.locator(".goenhance-cached").wait_for(state="visible", timeout=30_000)
    thumb = newest.locator("video.goenhance-video").bounding_box()
    assert thumb["width"] <= 170, thumb  # a thumbnail, not a 480 px player
    grown = panel.bounding_box()["height"] - height_one
    print(f"a cache-hit Submit grew the panel by {grown} px (thumbnail {thumb['width']} px)")
    assert grown < 240, f"a cache hit grew the panel by {grown} px"
    assert bsim.generate_calls() == 1

    _assert_nothing_clipped(page, 760)
    _panel_shot(page, f"{artifact_name}-760")
    _assert_nothing_clipped(page, 1400)
    _panel_shot(page, f"{artifact_name}-1400")

    # uploads: a clip is kept, listed, highlighted and counted; a file that does not probe as
    # a video is refused with the reason, removed, not listed and not counted
    upload = panel.locator(".goenhance-upload")
    assert upload.inner_text().strip().endswith("(0)")
    clip = (server.root / "clip.mp4").read_bytes()
    _choose_file(page, upload, "my clip.mp4", clip)
    page.wait_for_function(
        "() => document.querySelector('.goenhance-upload').textContent.trim().endsWith('(1)')",
        timeout=30_000,
    )
    browser = panel.locator(".goenhance-browser select")
    page.wait_for_function(  # the new clip is listed and highlighted (the list redraws async)
        "() => document.querySelector('.goenhance-browser select').value"
        " === 'goenhance_uploads/my_clip.mp4'",
        timeout=30_000,
    )
    assert panel.locator(".goenhance-input input").input_value() == browser.input_value()
    _choose_file(page, upload, "broken.mp4", b"not a video" * 50)
    message = panel.locator(".goenhance-panel-message")
    page.wait_for_function(
        "() => document.querySelector('.goenhance-panel-message').textContent"
        ".includes('upload refused')",
        timeout=30_000,
    )
    assert "broken.mp4" in message.inner_text()
    assert upload.inner_text().strip().endswith("(1)")
    options = browser.locator("option").all_inner_texts()
    assert "goenhance_uploads/broken.mp4" not in options, options
    assert not (server.root / "goenhance_uploads" / "broken.mp4").exists()
    _panel_shot(page, f"{artifact_name}-upload")

    # the panel's own texts are readable (4.5:1) in the light and the dark theme
    for theme in ("JupyterLab Dark", "JupyterLab Light"):
        page.evaluate(
            "t => window.jupyterapp.commands.execute('apputils:change-theme', {theme: t})",
            theme,
        )
        page.wait_for_function(
            "t => document.body.dataset.jpThemeName === t", arg=theme, timeout=30_000
        )
        page.wait_for_timeout(300)  # the theme's stylesheet applies (not an assertion)
        ratios = page.evaluate(JS_CONTRAST)
        print(f"{theme}: {ratios}")
        assert len(ratios) >= 5 and all(r >= 4.5 for _, r in ratios), (theme, ratios)
        if theme == "JupyterLab Dark":
            _panel_shot(page, f"{artifact_name}-dark")

    # "Larger" shows the full-size player in the row; "Clear finished" empties the list
    newest.locator(".goenhance-expand").click()
    page.wait_for_function(
        "() => document.querySelector('.goenhance-jobs .goenhance-job video')"
        ".getBoundingClientRect().width > 400",
        timeout=10_000,
    )
    _panel_shot(page, f"{artifact_name}-expanded")
    panel.locator(".goenhance-clear").click()
    page.wait_for_function(
        "() => document.querySelectorAll('.goenhance-jobs .goenhance-job').length === 0",
        timeout=10_000,
    )
    screenshot(page, artifact_name)
