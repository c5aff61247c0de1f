"""Helpers for the real-browser suite: a JupyterLab / Notebook 7 server process and page actions.

Everything here drives real processes: `python -m jupyterlab` (or `python -m notebook`) on a
random loopback port with a random token, in a temporary root, with its own settings so no news
or update popup covers the page. Page helpers use what a person sees (DOM) and, for running
cells, the app's own command registry exposed with `expose_app_in_browser`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "browser"
# Debian's Chromium; BROWSER_TEST_CHROMIUM overrides it (e.g. to check the missing-browser path).
CHROMIUM = os.environ.get("BROWSER_TEST_CHROMIUM", "/usr/bin/chromium")
# PLATFORM-NOTES.md, "Browser tests": without the background-networking flags this machine's
# closed network refuses Chromium's own connections.
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
# A sentinel key: the only API key any browser-suite kernel ever gets (DECISIONS 18). Random per
# run, with characters that URL-encoding changes, so each scanned form is distinct.
SENTINEL = f"sentinel-{secrets.token_hex(12)}+Zk/{secrets.token_hex(4)}="
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# Generous waits (ms): a person would wait this long before calling it broken.
SERVER_START_S = 60.0
PAGE_LOAD_MS = 60_000
KERNEL_IDLE_MS = 60_000
JOB_DONE_MS = 90_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_notebook(path: Path, cells: Iterable[str | tuple[str, str]]) -> Path:
    """Write a notebook; a cell is code source, or ("markdown", text)."""
    nb_cells = []
    for c in cells:
        if isinstance(c, tuple):
            kind, text = c
            nb_cells.append(new_markdown_cell(text) if kind == "markdown" else new_code_cell(text))
        else:
            nb_cells.append(new_code_cell(c))
    nb = new_notebook(
        cells=nb_cells,
        metadata={"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"}},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


# ------------------------------------------------------------------------------------------
# Server process
# ------------------------------------------------------------------------------------------
@dataclass
class JupyterServer:
    """A running JupyterLab or Notebook 7 server (child process) rooted in a temp dir."""

    kind: str  # "lab" | "notebook"
    proc: subprocess.Popen[bytes]
    base_url: str
    token: str
    root: Path
    home: Path
    log_path: Path
    env: dict[str, str] = field(repr=False)
    _child_pids: set[int] = field(default_factory=set, repr=False)

    # -- URLs -----------------------------------------------------------------------------
    def notebook_url(self, name: str) -> str:
        quoted = urllib.parse.quote(name)
        if self.kind == "lab":
            return f"{self.base_url}/lab/tree/{quoted}?token={self.token}"
        return f"{self.base_url}/notebooks/{quoted}?token={self.token}"

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        with httpx.Client(
            base_url=self.base_url, timeout=30, headers={"Authorization": f"token {self.token}"}
        ) as c:
            return c.request(method, path, **kw)

    def kernels(self) -> list[dict[str, Any]]:
        return list(self.api("GET", "/api/kernels").json())

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- process tree ---------------------------------------------------------------------
    def _descendants(self) -> set[int]:
        """PIDs of every live descendant of the server process (kernels and their children)."""
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
        out: set[int] = set()
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            for c in children.get(pid, []):
                if c not in out:
                    out.add(c)
                    todo.append(c)
        return out

    def remember_children(self) -> None:
        self._child_pids |= self._descendants()

    def stop(self) -> None:
        """Stop the server and every process it started, by PID."""
        if self.proc.poll() is None:
            self.remember_children()
            with contextlib.suppress(httpx.HTTPError):
                self.api("POST", "/api/shutdown")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        deadline = time.monotonic() + 5
        for pid in sorted(self._child_pids):
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_server(
    workdir: Path,
    *,
    kind: str = "lab",
    env: Mapping[str, str] | None = None,
    save_widget_state: bool = True,
    debug_logs: bool = False,
) -> JupyterServer:
    """Start JupyterLab (kind="lab") or Notebook 7 (kind="notebook") on a random loopback port.

    `workdir/root` is the server root (put notebooks there), `workdir/home` holds the server's
    own config/settings/runtime dirs, `workdir/server.log` its (and its kernels') output.
    `env` is added to the server's environment and so reaches every kernel it starts.
    """
    root = workdir / "root"
    home = workdir / "home"
    root.mkdir(parents=True, exist_ok=True)
    for d in ("config", "settings", "workspaces", "runtime", "ipython", "xdg-config", "xdg-cache"):
        (home / d).mkdir(parents=True, exist_ok=True)
    # No news feed, no update check (server side) ...
    (home / "config" / "jupyter_server_config.json").write_text(
        json.dumps(
            {
                "LabApp": {
                    "news_url": None,
                    "check_for_updates_class": "jupyterlab.NeverCheckForUpdate",
                },
                "ServerApp": {"port_retries": 0},
            }
        )
    )
    # ... and the same in the user settings, so no "get notified about news?" toast appears.
    settings = home / "settings"
    _write_settings(
        settings,
        "@jupyterlab/apputils-extension",
        "notification",
        {"fetchNews": "false", "checkForUpdates": False},
    )
    # Save widget state into the .ipynb on save, so the secret scan sees it.
    _write_settings(
        settings, "@jupyter-widgets/jupyterlab-manager", "plugin", {"saveState": save_widget_state}
    )

    if debug_logs:
        # Kernels log every message they handle (comm/widget traffic included) to the server log.
        profile = home / "ipython" / "profile_default"
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "ipython_kernel_config.py").write_text(
            "c.IPKernelApp.log_level = 'DEBUG'\nc.Session.debug = False\n"
        )

    port = free_port()
    token = secrets.token_hex(24)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GOENHANCE_")}
    full_env.update(
        {
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "IPYTHONDIR": str(home / "ipython"),
            "XDG_CONFIG_HOME": str(home / "xdg-config"),
            "XDG_CACHE_HOME": str(home / "xdg-cache"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.update(env or {})
    module = "jupyterlab" if kind == "lab" else "notebook"
    cmd = [
        sys.executable,
        "-m",
        module,
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
    ]
    if debug_logs:
        cmd.append("--ServerApp.log_level=DEBUG")
    if kind == "lab":
        cmd.append("--LabApp.expose_app_in_browser=True")
    else:
        cmd.append("--JupyterNotebookApp.expose_app_in_browser=True")
    log_path = workdir / "server.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(root),
            start_new_session=True,
        )
    server = JupyterServer(
        kind, proc, f"http://127.0.0.1:{port}", token, root, home, log_path, full_env
    )
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{module} exited with {proc.returncode}:\n{server.log_text()}")
        try:
            if server.api("GET", "/api/status").status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"{module} did not answer in {SERVER_START_S}s:\n{server.log_text()}")


def _write_settings(settings_dir: Path, package: str, plugin: str, values: dict[str, Any]) -> None:
    p = settings_dir / package / f"{plugin}.jupyterlab-settings"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(values))


# ------------------------------------------------------------------------------------------
# Page actions (JupyterLab 4 and Notebook 7 share the notebook DOM)
# ------------------------------------------------------------------------------------------
# JS: is any code cell of the current notebook executing (a person sees "[*]")?
JS_BUSY_PROMPTS = """() => Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'))
    .some(e => e.textContent.includes('[*]'))"""

# JS: the kernel status a person sees. JupyterLab 4 / Notebook 7 render it in the notebook
# toolbar's execution indicator (data-status="idle"|"busy"|...); fall back to the session.
JS_KERNEL_STATUS = """() => {
    const ind = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator')
             || document.querySelector('.jp-Notebook-ExecutionIndicator');
    if (ind && ind.getAttribute('data-status')) return ind.getAttribute('data-status');
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    return (w && w.sessionContext) ? w.sessionContext.kernelDisplayStatus : 'unknown';
}"""


JS_SESSION_READY = """() => {
    const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    if (!w || !w.sessionContext) return false;
    const sc = w.sessionContext, k = sc.session && sc.session.kernel;
    return sc.isReady && !sc.hasNoKernel && !!k && k.connectionStatus === 'connected'
        && sc.kernelDisplayStatus === 'idle';
}"""


def open_notebook(page: Any, server: JupyterServer, name: str) -> None:
    """Open a notebook as a person would (URL), and wait until its kernel is connected and idle."""
    page.goto(server.notebook_url(name), timeout=PAGE_LOAD_MS)
    page.wait_for_function("() => !!window.jupyterapp", timeout=PAGE_LOAD_MS)
    page.locator(".jp-NotebookPanel .jp-Notebook").first.wait_for(timeout=PAGE_LOAD_MS)
    page.wait_for_function(JS_SESSION_READY, timeout=KERNEL_IDLE_MS)
    wait_kernel_idle(page)


def wait_kernel_idle(page: Any, timeout: int = KERNEL_IDLE_MS) -> None:
    """Wait until the kernel indicator says idle and no cell shows [*]."""
    page.wait_for_function(
        f"() => ({JS_KERNEL_STATUS})() === 'idle' && !({JS_BUSY_PROMPTS})()", timeout=timeout
    )


def command(page: Any, cmd: str, args: dict[str, Any] | None = None) -> None:
    """Start a command from the app's registry (exposed with expose_app_in_browser).

    Does not wait for the command's promise: some commands wait on a dialog a person answers.
    """
    page.evaluate("([c, a]) => { window.jupyterapp.commands.execute(c, a); }", [cmd, args or {}])


def accept_dialog_if_shown(page: Any, title_contains: str = "") -> bool:
    """Click the accept button of an open JupyterLab dialog (as a person would), if any."""
    dialog = page.locator(".jp-Dialog")
    if dialog.count() == 0:
        return False
    if title_contains and title_contains not in dialog.first.inner_text():
        return False
    dialog.first.locator("button.jp-mod-accept").click()
    return True


def run_all(page: Any) -> None:
    """Run all cells; returns when the request is sent (not when the cells finish)."""
    command(page, "notebook:run-all-cells")


JS_ALL_EXECUTED = """() => {
    const prompts = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt'));
    return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
}"""


def run_all_and_wait(page: Any, timeout: int = KERNEL_IDLE_MS) -> None:
    """Run all cells and wait until every code cell has an execution count and the kernel is idle."""
    run_all(page)
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(JS_ALL_EXECUTED):
        # JupyterLab may ask which kernel to use if the run races its session start-up.
        accept_dialog_if_shown(page, "Select Kernel")
        if time.monotonic() > deadline:
            raise AssertionError(
                f"cells did not all run within {timeout / 1000:.0f}s:\n{outputs_text(page)}"
            )
        time.sleep(0.2)
    wait_kernel_idle(page, timeout)


def outputs_text(page: Any) -> str:
    return str(
        page.evaluate(
            "() => Array.from(document.querySelectorAll('.jp-Notebook .jp-OutputArea')).map(e => e.innerText).join('\\n')"
        )
    )


CURRENT_PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def save_notebook(page: Any, server: JupyterServer, name: str) -> dict[str, Any]:
    """Save through the UI (select a cell, Ctrl+S), wait for the file on disk, return it parsed."""
    path = server.root / name
    before = path.stat().st_mtime_ns if path.exists() else 0
    page.locator(f"{CURRENT_PANEL} .jp-Cell .jp-InputPrompt").first.click()
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_mtime_ns != before:
            try:
                return dict(json.loads(path.read_text()))
            except json.JSONDecodeError:
                pass  # mid-write
        time.sleep(0.1)
    raise AssertionError(f"saving {name} through the UI did not change the file on disk")


def screenshot(page: Any, name: str) -> Path:
    """Save a screenshot of the whole current notebook under artifacts/browser/<name>.png.

    The notebook scrolls inside the page, so the viewport is grown to the notebook's height for
    the shot (capped), then restored.
    """
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = page.viewport_size or {"width": 1400, "height": 1000}
    extra = page.evaluate(f"""() => {{
        const o = document.querySelector('{CURRENT_PANEL} .jp-WindowedPanel-outer')
               || document.querySelector('{CURRENT_PANEL} .jp-Notebook');
        return o ? Math.max(0, o.scrollHeight - o.clientHeight) : 0;
    }}""")
    if extra > 0:
        page.set_viewport_size(
            {"width": size["width"], "height": min(size["height"] + extra + 40, 4000)}
        )
        page.evaluate(f"""() => {{
            const o = document.querySelector('{CURRENT_PANEL} .jp-WindowedPanel-outer');
            if (o) o.scrollTop = 0;
        }}""")
        page.wait_for_timeout(500)  # let the layout settle for the picture (not an assertion)
    try:
        page.screenshot(path=str(path), full_page=True)
    finally:
        if extra > 0:
            page.set_viewport_size(size)
    return path


def dom_snapshot(page: Any) -> str:
    """Everything a page holds that a person (or a script on it) could read."""
    return str(
        page.evaluate("""() => {
        const parts = [document.documentElement.outerHTML, document.body.innerText];
        document.querySelectorAll('input, textarea').forEach(e => parts.push(e.value || ''));
        parts.push(location.href, document.cookie, JSON.stringify(Object.assign({}, localStorage)));
        return parts.join('\\n');
    }""")
    )


# ------------------------------------------------------------------------------------------
# Secret scanner (DECISIONS 18): plain, base64 (any alignment), URL-encoded forms
# ------------------------------------------------------------------------------------------
def secret_forms(secret: str) -> dict[str, str]:
    """Needles for a secret: plain, URL-encoded, and base64 at each of the 3 byte alignments."""
    raw = secret.encode()
    forms = {
        "plain": secret,
        "url-encoded": urllib.parse.quote(secret, safe=""),
        "url-encoded-plus": urllib.parse.quote_plus(secret),
    }
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw).decode()
        # Drop chars that mix in the padding bytes or the (unknown) bytes after the secret.
        start = (pad * 4 + 2) // 3 if pad else 0
        usable_end = ((pad + len(raw)) // 3) * 4
        core = enc[start:usable_end]
        forms[f"base64@{pad}"] = core
        forms[f"base64url@{pad}"] = core.replace("+", "-").replace("/", "_")
    return forms


def find_secret(text: str, secret: str) -> list[str]:
    """Names of the forms of `secret` present in `text` (empty list = clean)."""
    return sorted(
        {
            name
            for name, needle in secret_forms(secret).items()
            if len(needle) >= 8 and needle in text
        }
    )


#: The first cells of most scenarios: a sample clip in the notebook's folder, the extension.
SETUP_CELL = 'import goenhance_nb\nclip = goenhance_nb.sample_clip("clip.mp4")'
LOAD_CELL = "%load_ext goenhance_nb"


def export_html(server: JupyterServer, name: str) -> str:
    """``jupyter nbconvert --to html`` of the saved notebook ``name``; returns the HTML."""
    out = server.root.parent / f"{Path(name).stem}.html"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nbconvert",
            "--to",
            "html",
            "--output",
            str(out),
            str(server.root / name),
        ],
        check=True,
        capture_output=True,
        timeout=120,
        env=server.env,
    )
    return out.read_text()
