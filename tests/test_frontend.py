"""Frontend detection (headless? VS Code? Colab? terminal?) inside real kernels, and the media
choice per frontend (DECISIONS 22: VS Code and Colab cannot run here, so their detection and the
embed decision are unit-tested)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from goenhance_nb._frontend import allow_stdin, frontend, is_headless, wait_env
from goenhance_nb._outputs import choose_media

PROBE = (
    "import json; from goenhance_nb._frontend import frontend, is_headless, allow_stdin; "
    "print(json.dumps([frontend(), is_headless(), allow_stdin()]))"
)


def _kernel_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VSCODE_", "JPY_", "GOENHANCE_"))
    }
    env.update(extra)
    return env


class Kernel:
    """A real ipykernel started with jupyter_client; ``probe`` runs code and returns stdout."""

    def __init__(self, env: dict[str, str], kernel_name: str = "python3") -> None:
        self.km = KernelManager(kernel_name=kernel_name)
        self.km.start_kernel(env=env, cwd=str(Path(__file__).parent))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, *, allow_stdin: bool) -> str:
        out: list[str] = []

        def hook(msg: dict) -> None:
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))

        # allow_stdin=True needs a stdin channel handler; nothing here reads stdin
        reply = self.kc.execute_interactive(
            code, allow_stdin=allow_stdin, timeout=60, output_hook=hook, stdin_hook=lambda m: None
        )
        assert reply["content"]["status"] == "ok", "".join(out)
        return "".join(out)

    def probe(self, *, allow_stdin: bool) -> list:
        return json.loads(self.run(PROBE, allow_stdin=allow_stdin).strip().splitlines()[-1])

    def stop(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def lab_kernel() -> Iterator[Kernel]:
    k = Kernel(_kernel_env(JPY_SESSION_NAME=str(Path(__file__).parent / "x.ipynb")))
    yield k
    k.stop()


@pytest.mark.slow
def test_execute_request_allow_stdin_decides_headless(lab_kernel: Kernel) -> None:
    # nbclient/papermill send allow_stdin false: headless, the run magic will block
    assert lab_kernel.probe(allow_stdin=False) == ["headless", True, False]
    # JupyterLab / Notebook 7 send allow_stdin true: interactive, run returns at once
    assert lab_kernel.probe(allow_stdin=True) == ["lab", False, True]


@pytest.mark.slow
def test_goenhance_wait_env_makes_interactive_run_headless(lab_kernel: Kernel) -> None:
    lab_kernel.run("import os; os.environ['GOENHANCE_WAIT'] = '1'", allow_stdin=False)
    try:
        assert lab_kernel.probe(allow_stdin=True)[1] is True
    finally:
        lab_kernel.run("import os; os.environ.pop('GOENHANCE_WAIT')", allow_stdin=False)
    assert lab_kernel.probe(allow_stdin=True)[1] is False


@pytest.mark.slow
def test_colab_detected_by_module() -> None:
    k = Kernel(_kernel_env())
    try:
        k.run(
            "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')",
            allow_stdin=True,
        )
        assert k.probe(allow_stdin=True)[0] == "colab"
    finally:
        k.stop()


@pytest.mark.slow
def test_vscode_detected_by_environment() -> None:
    k = Kernel(_kernel_env(VSCODE_PID="4242"))
    try:
        assert k.probe(allow_stdin=True)[0] == "vscode"
        # a headless run inside VS Code's terminal is still headless
        assert k.probe(allow_stdin=False)[0] == "headless"
    finally:
        k.stop()


def test_no_kernel_is_terminal_and_not_headless() -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    assert frontend(shell) == "terminal"
    assert allow_stdin(shell) is None
    assert is_headless(shell, env={}) is False
    assert is_headless(shell, env={"GOENHANCE_WAIT": "1"}) is True
    # Colab wins even without a kernel object we recognise
    assert frontend(shell, modules={**sys.modules, "google.colab": object()}) == "colab"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("0", False),
        ("off", False),
        ("", None),
        ("maybe", None),
    ],
)
def test_wait_env_values(raw: str, expected: bool | None) -> None:
    assert wait_env({"GOENHANCE_WAIT": raw}) is expected


MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("fe", "size", "embed", "expected"),
    [
        ("lab", 1 * MIB, None, "link"),  # Lab fetches files beside the notebook
        ("headless", 1 * MIB, None, "link"),  # saved notebook + HTML export reference the file
        ("unknown", 1 * MIB, None, "link"),
        ("terminal", 1 * MIB, None, "link"),
        ("vscode", 1 * MIB, None, "embed"),  # VS Code's renderer cannot fetch relative files
        ("colab", 1 * MIB, None, "embed"),  # Colab neither
        ("colab", 9 * MIB, None, "link"),  # over the embed budget (Colab caps ~10 MB)
        ("vscode", 9 * MIB, None, "link"),
        ("lab", 1 * MIB, True, "embed"),  # --embed always wins
        ("colab", 1 * MIB, False, "link"),  # --no-embed always wins
    ],
)
def test_media_choice_per_frontend(fe: str, size: int, embed: bool | None, expected: str) -> None:
    assert choose_media(fe, size, embed=embed, embed_limit_mb=8.0) == expected
