"""Looks in a real JupyterLab (issue 17 points 12-14): contrast in the light and the dark theme,
``--compare`` side by side, the result grid's spacing and wrapping.

Contrast is measured from what the browser computed: for each element carrying one of our
``goenhance-*`` classes (and its descendants) that shows text, its ``color`` on the first
non-transparent background up the tree (translucent ones laid over the next), WCAG 2 ratio by
:func:`goenhance_nb._theme.contrast`. Screenshots: artifacts/browser/<test>-{light,dark}.png etc.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from browserkit import (
    ARTIFACTS,
    JOB_DONE_MS,
    LOAD_CELL,
    SETUP_CELL,
    JupyterServer,
    command,
    open_notebook,
    run_all_and_wait,
    screenshot,
    write_notebook,
)

from goenhance_nb._theme import MIN_CONTRAST, contrast, flatten

pytestmark = pytest.mark.browser

RUN = "%goenhance run clip.mp4 --style 2000 --duration 3 --resolution 540p"
GRID_CELL = (
    "jobs = [goenhance_nb.transform('clip.mp4', s, duration=3, resolution='540p')"
    " for s in (2000, 2004, 2007)]\n"
    "for j in jobs:\n"
    "    j.result(timeout=120)\n"
    "goenhance_nb.result_grid(jobs)"
)

PANEL_CELL = "goenhance_nb.panel()"
# the next job fails (the simulator's fault, set from the notebook), shown without --wait
FAIL_CELL = (
    "goenhance_nb.simulator().fault('job_failed')\n"
    "%goenhance run clip.mp4 --style 2004 --duration 3 --resolution 540p"
)
# a failed job in a status widget the user displays (it keeps its Retry button; the magic's
# own output of an ended job is static)
WIDGET_FAIL_CELL = (
    "goenhance_nb.simulator().fault('job_failed')\n"
    "fj = goenhance_nb.transform(clip, 2006, duration=3, resolution='540p')\n"
    "goenhance_nb.StatusWidget(fj)"
)

# Every text we draw is measured and must pass (the lead applied the theme list).
PENDING_LEAD: tuple[str, ...] = ()

# Every visible element under one of our classes with its own text: its colour and the
# background-colour stack up to the first opaque one.
JS_TEXT_COLOURS = """() => {
    const out = [];
    const ours = Array.from(document.querySelectorAll('.jp-Notebook [class*="goenhance-"]'));
    const seen = new Set();
    const owner = el => {
        for (let e = el; e; e = e.parentElement) {
            const c = Array.from(e.classList || []).filter(k => k.startsWith('goenhance-'));
            if (c.length) return c;
        }
        return [];
    };
    const chain = el => {
        const owners = [];
        for (let e = el; e; e = e.parentElement) {
            for (const k of (e.classList || [])) if (k.startsWith('goenhance-')) owners.push(k);
        }
        return owners;
    };
    for (const root of ours) {
        for (const el of [root, ...root.querySelectorAll('*')]) {
            if (seen.has(el)) continue;
            seen.add(el);
            const own = Array.from(el.childNodes)
                .filter(n => n.nodeType === 3).map(n => n.textContent.trim()).join(' ').trim();
            const value = (el.tagName === 'INPUT' || el.tagName === 'BUTTON')
                ? (el.value || el.innerText || '').trim() : own;
            if (!value) continue;
            const r = el.getBoundingClientRect();
            const cs = getComputedStyle(el);
            if (r.width === 0 || r.height === 0 || cs.visibility === 'hidden') continue;
            const bgs = [];
            for (let e = el; e; e = e.parentElement) {
                const b = getComputedStyle(e).backgroundColor;
                if (!b || b === 'transparent' || /rgba\\([^)]*,\\s*0\\)$/.test(b)) continue;
                bgs.push(b);
                if (!b.startsWith('rgba')) break;
            }
            out.push({text: value.slice(0, 60), tag: el.tagName, classes: owner(el),
                      chain: chain(el), color: cs.color, backgrounds: bgs});
        }
    }
    return out;
}"""


def _measure(page: Any) -> list[dict[str, Any]]:
    rows = []
    for item in page.evaluate(JS_TEXT_COLOURS):
        bg = flatten(item["backgrounds"])
        item["background"] = bg
        item["ratio"] = round(contrast(item["color"], bg), 2)
        rows.append(item)
    return rows


def _switch_theme(page: Any, theme: str) -> None:
    command(page, "apputils:change-theme", {"theme": theme})
    page.wait_for_function(
        "t => document.body.dataset.jpThemeName === t", arg=theme, timeout=30_000
    )
    # the theme's stylesheet applied: the notebook background follows it
    want_dark = "Dark" in theme
    page.wait_for_function(
        """dark => {
            const nb = document.querySelector('.jp-Notebook');
            const m = getComputedStyle(nb).backgroundColor.match(/\\d+/g).map(Number);
            return dark ? m[0] < 60 : m[0] > 200;
        }""",
        arg=want_dark,
        timeout=30_000,
    )


def _start(jupyter: Callable[..., JupyterServer], env: dict[str, str], cells: list[str]) -> Any:
    server = jupyter("lab", env=env)
    write_notebook(server.root / "looks.ipynb", cells)
    return server


def test_every_text_we_draw_meets_4_5_to_1_in_light_and_dark(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    # a finished job (widget + result), the same again (a cache hit: its result labelled
    # cached), the credits line, the panel, and a failed job
    cells = [
        SETUP_CELL,
        LOAD_CELL,
        RUN + " --wait",
        RUN,
        "%goenhance credits",
        PANEL_CELL,
        FAIL_CELL,
        WIDGET_FAIL_CELL,
    ]
    server = _start(jupyter, kernel_env, cells)
    open_notebook(page, server, "looks.ipynb")
    run_all_and_wait(page)
    page.wait_for_function(
        """() => Array.from(document.querySelectorAll('.goenhance-status .goenhance-state'))
            .map(e => e.textContent.trim()).join() === 'done,failed,failed'""",
        timeout=JOB_DONE_MS,
    )
    page.locator(".goenhance-result-error").last.wait_for(timeout=30_000)
    page.locator(".goenhance-status .goenhance-error").last.wait_for(timeout=30_000)
    page.locator(".goenhance-status .goenhance-retry").last.wait_for(timeout=30_000)
    page.locator(".jp-OutputArea .goenhance-result .goenhance-cached").wait_for(timeout=JOB_DONE_MS)
    page.locator(".goenhance-credits-line").wait_for(timeout=30_000)
    page.locator(".goenhance-panel .goenhance-submit").wait_for(timeout=30_000)

    failures: dict[str, list[dict[str, Any]]] = {"ours": [], "lead": []}
    report: dict[str, Any] = {}
    for theme in ("JupyterLab Light", "JupyterLab Dark"):
        _switch_theme(page, theme)
        rows = _measure(page)
        report[theme] = rows
        name = "light" if "Light" in theme else "dark"
        screenshot(page, f"{artifact_name}-{name}")
        texts = " ".join(r["text"] for r in rows)
        for must in ("SIMULATED", "done", "cached", "failed", "Retry", "Submit"):
            assert must in texts, f"{must!r} not measured in {theme}: {texts}"
        for r in rows:
            if r["ratio"] >= MIN_CONTRAST:
                continue
            r["theme"] = theme
            pending = any(k in PENDING_LEAD for k in r["chain"])
            failures["lead" if pending else "ours"].append(r)
    (ARTIFACTS / f"{artifact_name}.contrast.json").write_text(json.dumps(report, indent=1))

    # the badges, the result's SIMULATED / cached labels and caption, the credits line
    assert not failures["ours"], json.dumps(failures["ours"], indent=1)
    if failures["lead"]:
        pytest.xfail(
            "below 4.5:1 until the lead applies the theme list: "
            + "; ".join(
                f"{r['theme']} {r['chain'][0]} {r['text']!r} {r['ratio']}" for r in failures["lead"]
            )
        )


def test_compare_is_side_by_side_and_the_grid_has_room(
    jupyter: Callable[..., JupyterServer],
    page: Any,
    bsim: Any,
    kernel_env: dict[str, str],
    artifact_name: str,
) -> None:
    server = _start(
        jupyter, kernel_env, [SETUP_CELL, LOAD_CELL, RUN + " --wait --compare", GRID_CELL]
    )
    open_notebook(page, server, "looks.ipynb")
    command(page, "filebrowser:activate")  # the file browser open, as a person works
    page.locator(".jp-FileBrowser").first.wait_for(state="visible", timeout=30_000)
    run_all_and_wait(page, timeout=JOB_DONE_MS * 2)

    # -- compare at 1400 px: one row, both videos inside the output area, neither tiny
    compare = page.locator(".jp-OutputArea .goenhance-compare").first
    compare.wait_for(timeout=JOB_DONE_MS)
    compare.scroll_into_view_if_needed()
    area = compare.evaluate(
        "e => e.closest('.jp-OutputArea-output').getBoundingClientRect().toJSON()"
    )
    before = compare.locator("video.goenhance-source").bounding_box()
    after = compare.locator("video.goenhance-video").bounding_box()
    assert before and after
    assert abs(before["y"] - after["y"]) < 2, (before, after)  # side by side, not stacked
    assert after["x"] >= before["x"] + before["width"], (before, after)
    assert after["x"] + after["width"] <= area["right"] + 1, (after, area)  # scaled to fit
    for box in (before, after):
        assert box["width"] >= 0.4 * area["width"], (box, area)
    assert compare.evaluate("e => !!e.closest('.goenhance-result')")
    screenshot(page, f"{artifact_name}-1400")

    # -- the grid: gap between cells, videos with controls and not tiny, one row at 1400 px
    grid = page.locator(".jp-OutputArea .goenhance-grid").first
    grid.wait_for(timeout=JOB_DONE_MS)
    videos = grid.locator("video")
    assert videos.count() == 3
    assert all(videos.nth(i).get_attribute("controls") is not None for i in range(3))
    boxes = [videos.nth(i).bounding_box() for i in range(3)]
    assert all(b and b["width"] >= 200 for b in boxes), boxes
    assert len({round(b["y"]) for b in boxes if b}) == 1, boxes  # three per row when room
    gap = boxes[1]["x"] - (boxes[0]["x"] + boxes[0]["width"])  # type: ignore[index]
    assert gap >= 12, boxes
    caption = grid.locator(".goenhance-caption").first
    size = float(caption.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))
    assert size >= 12, size

    # -- narrow (760 px): the grid wraps, nothing tiny, the compare stays one row within its box
    page.set_viewport_size({"width": 760, "height": 1000})
    page.wait_for_function(
        """() => { const v = document.querySelectorAll('.goenhance-grid video');
                   return v.length === 3 && v[0].getBoundingClientRect().top
                                          !== v[2].getBoundingClientRect().top; }""",
        timeout=10_000,
    )
    narrow = [videos.nth(i).bounding_box() for i in range(3)]
    assert all(b and b["width"] >= 200 for b in narrow), narrow
    before = compare.locator("video.goenhance-source").bounding_box()
    after = compare.locator("video.goenhance-video").bounding_box()
    assert before and after and abs(before["y"] - after["y"]) < 2, (before, after)
    screenshot(page, f"{artifact_name}-760")
