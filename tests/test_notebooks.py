"""Execute every notebook headless (nbclient, a real kernel, cwd = a temp copy) against the
simulator and check what a reader of the saved notebook sees: the video, its provenance, the
SIMULATED label, and no API key anywhere (plain, base64, URL-encoded; DECISIONS 18)."""

from __future__ import annotations

import base64
import re
import urllib.parse
from pathlib import Path
from typing import Any

import nbformat
import pytest

from goenhance_nb._demo import NOTEBOOKS_DIR, execute_notebook, export_html

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
VIDEO_RE = re.compile(r'<video class="goenhance-video"[^>]*\ssrc="([^"]+)"')


def secret_forms(secret: str) -> list[str]:
    """The forms a leaked key can take in a file: plain, URL-encoded, and base64 at each of the
    three byte alignments (the key embedded anywhere inside a base64 blob)."""
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    raw = secret.encode()
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw).decode()
        # drop the chars touched by the padding bytes and the possibly partial last group
        start = {0: 0, 1: 2, 2: 3}[pad]
        usable = (len(b"\0" * pad + raw) // 3) * 4
        forms.add(enc[start:usable][: max(8, usable - start)])
    return sorted(f for f in forms if len(f) >= 8)


def find_secret(text: str, secret: str) -> list[str]:
    """Which forms of ``secret`` occur in ``text`` (empty list = clean)."""
    return [f for f in secret_forms(secret) if f in text]


def outputs_of(nb: Any) -> list[dict[str, Any]]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def result_outputs(nb: Any) -> list[dict[str, Any]]:
    return [
        o
        for o in outputs_of(nb)
        if "goenhance-video" in str(o.get("data", {}).get("text/html", ""))
    ]


def test_scanner_catches_a_leaking_notebook(tmp_path: Path, sim_env: dict[str, str]) -> None:
    """Control case: a notebook that prints the key (plain and base64) must be caught."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(
                "import os, base64; k = os.environ['GOENHANCE_API_KEY']\n"
                "print('x' + base64.b64encode(('ab' + k).encode()).decode())"
            )
        ],
        metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
    )
    src = tmp_path / "leak.ipynb"
    nbformat.write(nb, src)
    _, error = execute_notebook(src, tmp_path / "run")
    assert error is None
    text = (tmp_path / "run" / "leak.ipynb").read_text()
    assert sim_env["GOENHANCE_API_KEY"] not in text  # not plain...
    assert find_secret(text, sim_env["GOENHANCE_API_KEY"])  # ...but caught in base64


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_headless_with_saved_video_and_provenance(
    name: str, tmp_path: Path, sim: Any, sim_env: dict[str, str]
) -> None:
    work = tmp_path / "work"
    nb, error = execute_notebook(NOTEBOOKS_DIR / name, work)
    assert error is None, f"{name} failed: {error}"
    saved = work / name
    results = result_outputs(nbformat.read(saved, as_version=4))
    assert results, f"{name}: no result video in the saved outputs"
    for out in results:
        html = out["data"]["text/html"]
        srcs = VIDEO_RE.findall(html)
        assert srcs
        for src in srcs:
            assert not src.startswith(("/", "http:", "https:", "data:")), src
            assert src.startswith("goenhance_outputs/") and (work / src).is_file(), src
        assert '<span class="goenhance-simulated"' in html
        meta = out.get("metadata", {}).get("goenhance_nb")
        assert meta, f"{name}: no provenance metadata"
        provs = meta.get("results", [meta])
        for p in provs:
            assert p["backend"] == "simulated" and p["input_hash"] and p["output_sha"]
            assert p["job_id"] and p["params"]["duration"] == 3 and p["key"]
    text = saved.read_text()
    html_text = export_html(saved).read_text()
    for blob in (text, html_text):
        assert not find_secret(blob, sim_env["GOENHANCE_API_KEY"])
        assert "sig=" not in blob and "/sim/results/" not in blob  # no signed result URLs
    errors = [o for o in outputs_of(nb) if o.get("output_type") == "error"]
    assert not errors


def test_quickstart_outputs_read_well(tmp_path: Path, sim: Any, sim_env: dict[str, str]) -> None:
    nb, error = execute_notebook(NOTEBOOKS_DIR / "01-quickstart.ipynb", tmp_path)
    assert error is None
    by_source = {c.source.splitlines()[0]: c.outputs for c in nb.cells if c.cell_type == "code"}
    styles = by_source["%goenhance styles"][0]["data"]
    assert "Anime Style" in styles["text/html"] and "SIMULATED" in styles["text/plain"]
    run_out = by_source[
        'job = %goenhance run sample.mp4 --style "Anime Style" --duration 3 --resolution 540p'
    ]
    assert [o for o in run_out if "goenhance-video" in o.get("data", {}).get("text/html", "")]
    job_repr = by_source["job"][0]["data"]
    assert "done" in job_repr["text/plain"] and "goenhance-video" in job_repr["text/html"]
    credits = by_source["%goenhance credits"][0]["data"]["text/plain"]
    assert "session spend 30" in credits
    jobs = by_source["%goenhance jobs"][0]["data"]["text/plain"]
    assert "2 jobs in the ledger" in jobs
    assert sim.generate_calls() == 2


def test_reproducible_notebook_second_run_makes_no_generate_call(
    tmp_path: Path, sim: Any, sim_env: dict[str, str]
) -> None:
    """04 records, verifies, exports, replays on an empty cache with the API unreachable, and
    sweeps; run again in the same folder and cache it makes no generate call."""
    src = NOTEBOOKS_DIR / "04-reproducible-research.ipynb"
    nb, error = execute_notebook(src, tmp_path)
    assert error is None, error
    assert sim.generate_calls() == 2  # the analysis + the sweep's second style
    printed = "".join(str(o.get("text", "")) for o in outputs_of(nb))
    assert "goenhance mode: record" in printed
    assert "re-run: a cache hit" in printed
    assert "sweep plan: 2 items (1 cached, 1 new); 1 new jobs, about 15 credits" in printed
    assert "goenhance.lock.json: 2 result(s) verified" in printed
    assert "replayed 2 results from the bundle: identical files, 0 API requests" in printed
    summary = [o for o in outputs_of(nb) if "goenhance-sweep-summary" in str(o.get("data", {}))]
    assert summary and "1 done, 0 running, 1 cached, 0 failed; 15 credits so far" in str(
        summary[0]["data"]["text/plain"]
    )
    grids = [o for o in result_outputs(nb) if "goenhance-grid" in o["data"]["text/html"]]
    assert len(grids) == 1 and len(VIDEO_RE.findall(grids[0]["data"]["text/html"])) == 2
    assert not [
        o
        for o in outputs_of(nb)
        if "application/vnd.jupyter.widget-view+json" in str(o.get("data", {}))
    ]  # headless: no widget in the saved notebook, only regular outputs
    sim.clear_requests()
    nb, error = execute_notebook(src, tmp_path)  # the same folder and cache: a re-run
    assert error is None, error
    assert sim.generate_calls() == 0
    shown = [o for o in result_outputs(nb) if "goenhance-grid" not in o["data"]["text/html"]]
    assert shown and all('<span class="goenhance-cached"' in o["data"]["text/html"] for o in shown)


def test_demo_runs_quickstart_on_the_embedded_simulator(tmp_path: Path) -> None:
    """`make demo`: no key, the package starts its own simulator (state inside the out dir),
    writes notebook + HTML + videos, lists them, stops its simulator, exits 0."""
    import json
    import os
    import subprocess
    import sys

    from workers.support import wait_until

    out = tmp_path / "demo-output"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOENHANCE_", "JPY_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "goenhance_nb._demo", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = dict(
        line.split(":", 1)
        for line in proc.stdout.splitlines()
        if ":" in line and line.split(":", 1)[0] in ("notebook", "html")
    )
    nb_path, html_path = Path(listed["notebook"].strip()), Path(listed["html"].strip())
    videos = [
        Path(line.split(":", 1)[1].strip())
        for line in proc.stdout.splitlines()
        if line.startswith("video:")
    ]
    assert nb_path.is_file() and html_path.is_file() and len(videos) == 2
    html = html_path.read_text()
    srcs = VIDEO_RE.findall(html)
    assert srcs and all((html_path.parent / s).is_file() for s in srcs)
    assert "SIMULATED" in html
    # the embedded simulator lived in the out dir and was stopped afterwards (SIGTERM: it
    # removes its port file on a clean shutdown)
    sim_dir = out / ".goenhance-cache" / "sim"
    assert (sim_dir / "state").is_dir() and (sim_dir / "sim.log").is_file()
    port_file = sim_dir / "port.json"
    try:
        wait_until(lambda: not port_file.exists(), "the demo's simulator to stop", timeout=10)
    except AssertionError:
        pid = json.loads(port_file.read_text())["pid"]
        pytest.fail(f"the demo left its simulator (pid {pid}) running")


def test_binder_start_hook_opens_quickstart_without_a_key(tmp_path: Path) -> None:
    import os
    import subprocess

    start = NOTEBOOKS_DIR.parent / "binder" / "start"
    env = {**os.environ, "GOENHANCE_API_KEY": "sk-should-be-dropped"}
    out = subprocess.run(
        [str(start), "sh", "-c", 'echo "key=${GOENHANCE_API_KEY:-none}" "$@"', "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "key=none" in out
    assert "--ServerApp.default_url=/lab/tree/notebooks/01-quickstart.ipynb" in out
    # a launch URL that names a page wins
    out = subprocess.run(
        [str(start), "echo", "--NotebookApp.default_url=/lab/tree/x.ipynb"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "01-quickstart" not in out
    reqs = (start.parent / "requirements.txt").read_text()
    assert (
        "jupyterlab" in reqs
        and "pip install --no-cache-dir ." in (start.parent / "postBuild").read_text()
    )


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.mark.browser
def test_html_export_videos_play_in_chromium(
    tmp_path: Path, sim: Any, sim_env: dict[str, str]
) -> None:
    """The HTML export (as `make demo` writes it) plays its videos from goenhance_outputs/."""
    import os

    if not Path(CHROMIUM).exists() or not _has_playwright():
        reason = f"{CHROMIUM} or playwright missing"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"cannot run in CI: {reason}", pytrace=False)
        pytest.skip(f"{reason} (in CI this is a failure)")
    from playwright.sync_api import sync_playwright

    _, error = execute_notebook(NOTEBOOKS_DIR / "01-quickstart.ipynb", tmp_path)
    assert error is None
    html_path = export_html(tmp_path / "01-quickstart.ipynb")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(html_path.as_uri())
            videos = page.locator("video.goenhance-video")
            assert videos.count() >= 2
            for i in range(videos.count()):
                v = videos.nth(i)
                v.scroll_into_view_if_needed()
                page.wait_for_function(
                    "v => v.readyState >= 2", arg=v.element_handle(), timeout=30_000
                )
                start = v.evaluate("v => v.currentTime")
                v.evaluate("v => v.play()")
                page.wait_for_function(
                    "([v, t]) => v.currentTime > t", arg=[v.element_handle(), start], timeout=30_000
                )
                size = v.evaluate("v => [v.videoWidth, v.videoHeight]")
                assert size == [720, 540]
        finally:
            browser.close()


def _has_playwright() -> bool:
    try:
        import playwright  # noqa: F401
    except ImportError:
        return False
    return True
