"""``python -m goenhance_nb._demo --out demo-output`` (``make demo``).

Copies ``notebooks/01-quickstart.ipynb`` into the out dir, executes it headless with nbclient
against the embedded simulator (no key: the package starts its own simulator, DECISIONS 1; the
cache dir, and so the simulator's state, live inside the out dir), writes the executed notebook
and an HTML export beside it (the videos are referenced by the same relative
``goenhance_outputs/`` paths, which sit beside both), prints the path of everything written and
exits non-zero if the notebook failed.

:func:`execute_notebook` is also what the notebook tests use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["NOTEBOOKS_DIR", "execute_notebook", "export_html", "main", "stop_embedded_simulator"]

#: The repository's notebooks (present in a source checkout / editable install).
NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"


@contextlib.contextmanager
def _patched_environ(env: Mapping[str, str | None]) -> Iterator[None]:
    """Set (str) or remove (None) environment variables for the kernels started inside."""
    old = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_notebook(
    src: Path | str,
    workdir: Path | str,
    *,
    env: Mapping[str, str | None] | None = None,
    kernel_name: str | None = None,
    timeout: int = 900,
    name: str | None = None,
) -> tuple[Any, BaseException | None]:
    """Copy ``src`` into ``workdir`` and execute the copy headless (nbclient, ``allow_stdin``
    false) with the kernel's cwd = ``workdir``; the executed notebook is written back there.

    ``env`` entries are set (or removed, for None) in the kernel's environment. Returns
    ``(notebook, error)``: ``error`` is the ``CellExecutionError`` (or other failure) when a
    cell failed, else None; the notebook holds the outputs up to the failure either way.
    """
    import nbformat
    from nbclient import NotebookClient

    src = Path(src)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dest = workdir / (name or src.name)
    if src.resolve() != dest.resolve():
        shutil.copyfile(src, dest)
    nb = nbformat.read(dest, as_version=4)
    kernel = kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=kernel,
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
        record_timing=False,
    )
    error: BaseException | None = None
    base_env: dict[str, str | None] = {"JPY_SESSION_NAME": None, "GOENHANCE_WAIT": None}
    with _patched_environ({**base_env, **dict(env or {})}):
        try:
            client.execute()
        except Exception as exc:  # CellExecutionError, DeadKernelError, timeouts
            error = exc
    nbformat.write(nb, dest)
    return nb, error


def export_html(notebook_path: Path | str) -> Path:
    """Write ``<name>.html`` beside the executed notebook (nbconvert, outputs kept as they are:
    the ``<video src="goenhance_outputs/...">`` paths stay relative). Returns its path."""
    import nbformat
    from nbconvert import HTMLExporter

    path = Path(notebook_path)
    nb = nbformat.read(path, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    out = path.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


def stop_embedded_simulator(cache_dir: Path) -> int | None:
    """SIGTERM the embedded simulator that runs for ``cache_dir`` (by the pid in its port file).

    Returns the pid signalled, or None when there was none. Only the simulator of this cache
    dir is touched.
    """
    port_file = Path(cache_dir) / "sim" / "port.json"
    try:
        info = json.loads(port_file.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
        return pid
    return None


def _videos(workdir: Path) -> list[Path]:
    out = workdir / "goenhance_outputs"
    return sorted(out.glob("*.mp4")) if out.is_dir() else []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the exit status (0 ok, 1 notebook failed, 2 setup problem)."""
    ap = argparse.ArgumentParser(
        prog="python -m goenhance_nb._demo", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--out", default="demo-output", help="output folder (default: demo-output)")
    ap.add_argument(
        "--notebook",
        default=str(NOTEBOOKS_DIR / "01-quickstart.ipynb"),
        help="notebook to run (default: notebooks/01-quickstart.ipynb)",
    )
    ap.add_argument("--kernel", default=None, help="kernelspec name (default: the notebook's)")
    ap.add_argument(
        "--keep-simulator",
        action="store_true",
        help="leave the embedded simulator running afterwards",
    )
    args = ap.parse_args(argv)

    src = Path(args.notebook)
    if not src.is_file():
        print(f"demo: notebook not found: {src}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = out / ".goenhance-cache"
    env: dict[str, str | None] = {
        # the embedded simulator: no key, no base URL; its state lives in the out dir
        "GOENHANCE_API_KEY": None,
        "GOENHANCE_BASE_URL": None,
        "GOENHANCE_CACHE_DIR": str(cache_dir),
        "GOENHANCE_POLL_INTERVAL": os.environ.get("GOENHANCE_POLL_INTERVAL", "1"),
    }
    print(
        f"demo: executing {src.name} headless in {out} (embedded simulator, no API key)", flush=True
    )
    try:
        _nb, error = execute_notebook(src, out, env=env, kernel_name=args.kernel)
    finally:
        if not args.keep_simulator:
            stop_embedded_simulator(cache_dir)
    nb_path = out / src.name
    html_path = export_html(nb_path)
    print(f"notebook: {nb_path}")
    print(f"html:     {html_path}")
    for v in _videos(out):
        print(f"video:    {v}")
    if error is not None:
        first = str(error).strip().splitlines()
        print(
            f"demo: the notebook failed: {first[-1] if first else type(error).__name__}",
            file=sys.stderr,
        )
        return 1
    if not _videos(out):
        print("demo: the notebook ran but wrote no video", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
