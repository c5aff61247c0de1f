"""Result files beside the notebook: their folder, their names, and putting them there.

The content-addressed store in the cache dir is the source of truth (DECISIONS 13). A notebook
shows a hard link (else a copy) of the stored file in ``goenhance_outputs/`` beside the notebook
(or ``output_dir``), named ``<style-slug>-<key8>.mp4`` and referenced by a path RELATIVE to the
notebook's folder, so the saved notebook and its HTML export play it from disk and never hold a
signed remote URL. Where the frontend cannot fetch files beside the notebook (VS Code, Colab)
the video is embedded as a base64 data URI instead (:func:`choose_media`).

This is the only module that names, links, copies or reads those files. :func:`publish` runs
once per finished result (from a job's finish callback or from the code that displays the
result) and returns a :class:`Published`; renderers (``_display``, the widgets) only turn a
:class:`Published` into output and never touch a file.
"""

from __future__ import annotations

import base64
import contextlib
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from goenhance_nb._frontend import notebook_dir
from goenhance_nb._store import OUTPUTS_DIRNAME, _replace, is_linked, link_or_copy, slugify

if TYPE_CHECKING:
    from goenhance_nb._cache import ResultRecord

__all__ = [
    "DEFAULT_EMBED_LIMIT_MB",
    "OUTPUTS_DIRNAME",
    "Published",
    "choose_media",
    "notebook_dir",
    "output_file",
    "output_name",
    "outputs_dir",
    "outputs_path",
    "outputs_relpath",
    "publish",
    "relative_src",
    "slugify",
    "write_new_file",
]

DEFAULT_EMBED_LIMIT_MB = 8.0


@dataclass(frozen=True, slots=True)
class Published:
    """A finished result put beside the notebook: everything a renderer needs, no I/O left.

    ``rel``: the file's path relative to the notebook folder (forward slashes); ``src``: what
    the ``<video>`` shows (``rel``, or a data URI when ``embedded``); ``source_rel`` and
    ``source_src``: the same for the input video when a before/after comparison was asked for
    (``None`` otherwise).
    """

    rel: str
    src: str
    embedded: bool
    source_rel: str | None = None
    source_src: str | None = None


# -- names (pure) -----------------------------------------------------------------------------
def output_name(style_label: str, key: str) -> str:
    """The file name a result gets beside the notebook: ``<style-slug>-<key8>.mp4``."""
    return f"{slugify(style_label)}-{key[:8]}.mp4"


def outputs_dir(nb_dir: Path | str, output_dir: Path | str | None = None) -> Path:
    """``output_dir`` (relative: to ``nb_dir``), else ``nb_dir/goenhance_outputs``."""
    base = Path(output_dir) if output_dir else Path(nb_dir) / OUTPUTS_DIRNAME
    return base if base.is_absolute() else Path(nb_dir) / base


def output_file(
    style_label: str, key: str, nb_dir: Path | str, output_dir: Path | str | None = None
) -> Path:
    """Where a result is shown beside the notebook:
    ``<output_dir or nb_dir/goenhance_outputs>/<style-slug>-<key8>.mp4`` (a relative
    ``output_dir`` is taken relative to ``nb_dir``)."""
    return outputs_dir(nb_dir, output_dir) / output_name(style_label, key)


def relative_src(path: Path, nb_dir: Path) -> str:
    """``path`` relative to ``nb_dir`` with forward slashes (a URL path): the path below
    ``nb_dir`` as written when it is there (the common case, no file-system calls), else
    relative between the resolved paths (symlinks followed)."""
    full, base = os.path.abspath(path), os.path.abspath(nb_dir)
    if full.startswith(base.rstrip(os.sep) + os.sep):
        return Path(full[len(base.rstrip(os.sep)) + 1 :]).as_posix()
    rel = os.path.relpath(Path(path).resolve(), Path(nb_dir).resolve())
    return Path(rel).as_posix()


def choose_media(
    frontend: str,
    size: int,
    *,
    embed: bool | None = None,
    embed_limit_mb: float = DEFAULT_EMBED_LIMIT_MB,
) -> str:
    """``"embed"`` (base64 data URI in the output) or ``"link"`` (relative file path).

    ``embed=True`` always embeds and ``embed=False`` never does. Otherwise (auto) embed only where
    the frontend cannot fetch a file beside the notebook (``vscode``, ``colab``) and only when
    the file is at most ``embed_limit_mb`` MiB (Colab caps an output at about 10 MB; base64 is
    1.33x). Lab, headless runs, terminals and unknown frontends link.
    """
    if embed is not None:
        return "embed" if embed else "link"
    if frontend in ("vscode", "colab") and size <= embed_limit_mb * 1024 * 1024:
        return "embed"
    return "link"


# -- files ------------------------------------------------------------------------------------
def write_new_file(dest: Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` through a temp file made with ``O_EXCL`` (``mkstemp``) in
    ``dest``'s folder, then ``os.replace``. Never follows a symlink, at the temp name or at
    ``dest`` (a symlink there is replaced, its target untouched). The file's mode follows the
    user's umask, like any file they save (``0o666 & ~umask``; issue 17, point 16).

    :raises OSError: the folder cannot be written (the temp file is removed).
    """
    dest = Path(dest)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), shared_mode())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _replace(tmp, dest)
    return dest


def outputs_path(
    result: ResultRecord, notebook_dir: Path | str, *, output_dir: Path | str | None = None
) -> Path:
    """Put the stored result beside the notebook and return the new path.

    The file is :func:`output_file`, a hard link to the store file (else a copy). These files
    belong to the notebook: ``cache clear`` never deletes them. Its mode follows the user's
    umask like any file they save (:func:`shared_mode`); for a hard link that is the store
    file's mode too, which stays private through the store's 0700 folder.

    :raises GoEnhanceError: the stored file is gone or the folder cannot be written.
    """
    dest = output_file(result.style_label, result.key, notebook_dir, output_dir)
    if is_linked(Path(result.path), dest):
        return dest  # shown before: its mode was set then (a later chmod is the user's)
    out = link_or_copy(Path(result.path), dest)
    with contextlib.suppress(OSError):  # a mode we cannot set is no reason to fail a result
        st = os.lstat(out)  # link_or_copy leaves a regular file there, never a symlink
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != shared_mode():
            os.chmod(out, shared_mode())
    return out


def shared_mode() -> int:
    """``0o666 & ~umask``: the mode a file the user saves gets (read from
    ``/proc/self/status`` where there is one, so the process umask is never changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it (briefly) and putting it back
    os.umask(mask)
    return 0o666 & ~mask


def outputs_relpath(
    result: ResultRecord,
    notebook_dir: Path | str | None = None,
    *,
    output_dir: Path | str | None = None,
) -> str | None:
    """The relative path :func:`outputs_path` uses for ``result`` if that file exists (a stat,
    nothing written). ``notebook_dir`` defaults to the current notebook's folder."""
    nb = _given_or_current(notebook_dir)
    path = output_file(result.style_label, result.key, nb, output_dir)
    return relative_src(path, nb) if path.is_file() else None


def publish(
    result: ResultRecord,
    *,
    notebook_dir: Path | str | None = None,
    output_dir: Path | str | None = None,
    frontend: str | None = None,
    embed: bool | None = None,
    embed_limit_mb: float = DEFAULT_EMBED_LIMIT_MB,
    source: Path | str | None = None,
) -> Published:
    """Put a finished result beside the notebook (once; repeating it is harmless) and say how
    it is to be shown.

    Links (else copies) the stored file into ``goenhance_outputs/`` (or ``output_dir``) under
    ``notebook_dir`` (default: the current notebook's folder), and reads it into a data URI
    when :func:`choose_media` says embed (``frontend`` defaults to the detected one). With a
    ``source`` file (a before/after comparison) the input is linked too, as
    ``source-<input-hash8><ext>``; a ``source`` that is not a file is ignored.

    :raises GoEnhanceError: the stored file is gone or the folder cannot be written.
    """
    if frontend is None:
        from goenhance_nb._frontend import frontend as _detect

        frontend = _detect()
    nb_dir = _given_or_current(notebook_dir)
    local = outputs_path(result, nb_dir, output_dir=output_dir)
    rel = relative_src(local, nb_dir)
    size = result.size if result.size else local.stat().st_size  # (the store checked it)
    mode = choose_media(frontend, size, embed=embed, embed_limit_mb=embed_limit_mb)
    embedded = mode == "embed"
    published = Published(rel=rel, src=_data_uri(local) if embedded else rel, embedded=embedded)
    if source is None or not Path(source).is_file():
        return published
    src_path = Path(source)
    ext = src_path.suffix.lower() or ".mp4"
    name = f"source-{(result.input_hash or '')[:8] or slugify(src_path.stem)}{ext}"
    before = link_or_copy(src_path, outputs_dir(nb_dir, output_dir) / name)
    before_rel = relative_src(before, nb_dir)
    mime = "video/quicktime" if ext == ".mov" else "video/mp4"
    return Published(
        rel=rel,
        src=published.src,
        embedded=embedded,
        source_rel=before_rel,
        source_src=_data_uri(before, mime) if embedded else before_rel,
    )


def _given_or_current(given: Path | str | None) -> Path:
    """``given`` as a Path, else :func:`notebook_dir` (for functions whose ``notebook_dir``
    parameter hides that function)."""
    return Path(given) if given is not None else notebook_dir()


def _data_uri(path: Path, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"
