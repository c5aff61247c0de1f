"""Which frontend runs this kernel, and is anybody watching?

:func:`is_headless` decides the blocking default of the run magic (DECISIONS 4): nbclient and
papermill send every execute request with ``allow_stdin`` false, JupyterLab, Notebook 7 and
VS Code send true (PLATFORM-NOTES). :func:`frontend` names the frontend for the media choice in
:mod:`goenhance_nb._display` (embed where the frontend cannot fetch files beside the notebook).

Both functions are cheap, never raise, and read only the current execute request, the
environment and ``sys.modules``. Call them on the cell's thread: on ipykernel 7 the parent
header is a context variable of the shell thread.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Frontend",
    "allow_stdin",
    "frontend",
    "get_kernel",
    "is_headless",
    "notebook_dir",
    "wait_env",
]

Frontend = Literal["lab", "vscode", "colab", "terminal", "headless", "unknown"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _shell() -> Any | None:
    """The running IPython shell, or None outside IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    return get_ipython()


def get_kernel(shell: Any | None = None) -> Any | None:
    """The ipykernel ``Kernel`` behind ``shell`` (default: the running shell), or None.

    A plain terminal IPython or a bare ``InteractiveShell`` has no kernel.
    """
    shell = _shell() if shell is None else shell
    if shell is None:
        return None
    return getattr(shell, "kernel", None)


def _parent_header(kernel: Any) -> Mapping[str, Any] | None:
    """The current shell request of ``kernel`` (ipykernel 7 and 6.29), or None."""
    getter = getattr(kernel, "get_parent", None)
    if callable(getter):
        try:
            parent = getter("shell")
        except TypeError:  # very old signature without a channel argument
            parent = getter()
        except Exception:
            parent = None
        if isinstance(parent, Mapping) and parent:
            return parent
    # ipykernel < 6 kept it as a plain attribute (a deprecated property on 6.x and 7.x).
    parent = getattr(kernel, "__dict__", {}).get("_parent_header")
    if isinstance(parent, Mapping) and parent:
        return parent
    return None


def allow_stdin(shell: Any | None = None) -> bool | None:
    """``allow_stdin`` of the execute request being run, or None when unknown (no kernel)."""
    kernel = get_kernel(shell)
    if kernel is None:
        return None
    parent = _parent_header(kernel)
    if parent is not None:
        content = parent.get("content")
        if isinstance(content, Mapping) and "allow_stdin" in content:
            return bool(content["allow_stdin"])
    # ipykernel copies the flag onto the kernel for input() forwarding (6.x and 7.x).
    value = getattr(kernel, "_allow_stdin", None)
    return bool(value) if isinstance(value, bool) else None


def wait_env(env: Mapping[str, str] | None = None) -> bool | None:
    """``GOENHANCE_WAIT`` as a bool (1/true/yes/on or 0/false/no/off), None when unset/other."""
    env = os.environ if env is None else env
    raw = env.get("GOENHANCE_WAIT", "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    return None


def is_headless(shell: Any | None = None, env: Mapping[str, str] | None = None) -> bool:
    """True when nobody watches the output live, so a run should block by default.

    That is: ``GOENHANCE_WAIT=1`` in the environment, or the current execute request came with
    ``allow_stdin`` false (nbclient, papermill, ``jupyter nbconvert --execute``). A terminal
    IPython or a bare shell without a kernel is not headless (someone sits at the prompt).
    Never raises.
    """
    if wait_env(env):
        return True
    return allow_stdin(shell) is False


def frontend(
    shell: Any | None = None,
    env: Mapping[str, str] | None = None,
    modules: Mapping[str, object] | None = None,
) -> Frontend:
    """Name the frontend: ``"lab" | "vscode" | "colab" | "terminal" | "headless" | "unknown"``.

    Order: Colab (``google.colab`` imported) > no kernel (``"terminal"``) > headless execute
    request (``"headless"``) > VS Code (``VSCODE_PID`` / ``VSCODE_CWD`` or VS Code's
    ``__vsc_ipynb_file__``) > a Jupyter server kernel (``JPY_SESSION_NAME``, JupyterLab and
    Notebook 7 alike: ``"lab"``) > ``"unknown"``. ``env``/``modules`` default to the process's
    own (parameters for tests). Never raises.
    """
    env = os.environ if env is None else env
    modules = sys.modules if modules is None else modules
    if "google.colab" in modules:
        return "colab"
    shell = _shell() if shell is None else shell
    if get_kernel(shell) is None:
        return "terminal"
    if allow_stdin(shell) is False:
        return "headless"
    user_ns = getattr(shell, "user_ns", None) or {}
    if env.get("VSCODE_PID") or env.get("VSCODE_CWD") or "__vsc_ipynb_file__" in user_ns:
        return "vscode"
    if env.get("JPY_SESSION_NAME") or env.get("JPY_PARENT_PID"):
        return "lab"
    return "unknown"


def notebook_dir(
    output_dir: Path | str | None = None,
    *,
    shell: Any | None = None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """The folder relative output paths are resolved against (the notebook's folder).

    Order: VS Code's ``__vsc_ipynb_file__`` in the user namespace, then ``JPY_SESSION_NAME``'s
    folder when it names an existing folder, then the kernel's working directory.
    ``output_dir`` is not used here (it changes where files go, not what they are relative to).
    """
    env = os.environ if env is None else env
    if shell is None:
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:  # pragma: no cover
            shell = None
    vsc = (getattr(shell, "user_ns", None) or {}).get("__vsc_ipynb_file__")
    candidates = [vsc, env.get("JPY_SESSION_NAME")]
    for cand in candidates:
        if isinstance(cand, str) and cand:
            p = Path(cand).expanduser()
            if not p.is_absolute():
                p = Path.cwd() / p
            if p.parent.is_dir():
                return p.parent.resolve()
    if os.name == "posix":  # getcwd() is the resolved path already (no symlinks)
        return Path(os.getcwd())
    return Path.cwd().resolve()
