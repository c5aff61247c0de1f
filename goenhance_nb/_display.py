"""Show a finished result inline: the stored video as a regular notebook output.

The content-addressed store in the cache dir is the source of truth (DECISIONS 13). A notebook
shows a hard link (else a copy) of the stored file in ``goenhance_outputs/`` beside the notebook,
named ``<style-slug>-<key8>.mp4`` and referenced by a RELATIVE path, so the saved notebook and its
HTML export play it from disk and never hold a signed remote URL. Where the frontend cannot fetch
files beside the notebook (VS Code, Colab) the video is embedded as a base64 data URI under
``settings.embed_limit_mb``.

DOM hooks (docs/ARCHITECTURE.md section 4): ``div.goenhance-result`` holding
``video.goenhance-video``, ``span.goenhance-simulated`` ("SIMULATED") when simulated and
``span.goenhance-cached`` ("cached") for cache hits. Output metadata
``{"goenhance_nb": provenance}``. The ``text/plain`` part is one line for terminals.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from goenhance_nb._errors import (
    AuthError,
    BudgetExceeded,
    CacheError,
    DiskFull,
    InsufficientCredits,
    JobFailed,
    JobTimedOut,
    ResultExpired,
    TooLarge,
    TransportError,
    redact_text,
)
from goenhance_nb._frontend import notebook_dir
from goenhance_nb._store import OUTPUTS_DIRNAME, _replace, link_or_copy, slugify

__all__ = [
    "OUTPUTS_DIRNAME",
    "ResultBundle",
    "choose_media",
    "error_bundle",
    "link_or_copy",
    "notebook_dir",
    "outputs_path",
    "outputs_relpath",
    "placeholder_bundle",
    "provenance",
    "publish_result",
    "result_grid",
    "slugify",
    "what_to_do",
    "write_new_file",
]

_VIDEO_ATTRS = 'controls muted playsinline preload="metadata"'
_DEFAULT_EMBED_LIMIT_MB = 8.0


class ResultLike(Protocol):
    """What :func:`publish_result` reads from a result (``_cache.ResultRecord`` fits)."""

    key: str
    path: str
    sha: str
    job_id: str | None
    model: int
    style_label: str
    params: Mapping[str, Any]
    input_hash: str
    cost: int | None
    backend: str
    created: float


class ResultBundle(dict):  # type: ignore[type-arg]
    """A MIME bundle (``{mime: data}``) that also carries its output metadata.

    It is a plain ``dict`` of MIME data, and displays itself with the metadata through
    ``_repr_mimebundle_``, so ``display(bundle)``, ``handle.update(bundle)`` and
    ``Output.append_display_data(bundle)`` all keep the provenance metadata.
    """

    metadata: dict[str, Any]

    def __init__(self, data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> None:
        super().__init__(data)
        self.metadata = dict(metadata or {})

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(self), dict(self.metadata)

    def __repr__(self) -> str:
        return str(self.get("text/plain", "ResultBundle"))


# -- paths ------------------------------------------------------------------------------------
def _given_or_current(given: Path | str | None) -> Path:
    """``given`` as a Path, else :func:`notebook_dir` (for functions whose ``notebook_dir``
    parameter hides that function)."""
    return Path(given) if given is not None else notebook_dir()


def write_new_file(dest: Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` through a temp file made with ``O_EXCL`` (``mkstemp``) in
    ``dest``'s folder, then ``os.replace``. Never follows a symlink, at the temp name or at
    ``dest`` (a symlink there is replaced, its target untouched). The file is private (0600).

    :raises OSError: the folder cannot be written (the temp file is removed).
    """
    dest = Path(dest)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _replace(tmp, dest)
    return dest


def outputs_path(
    result: ResultLike, notebook_dir: Path | str, *, output_dir: Path | str | None = None
) -> Path:
    """Put the stored result beside the notebook and return the new path.

    The file is ``<output_dir or notebook_dir/goenhance_outputs>/<style-slug>-<key8>.mp4``, a hard
    link to the store file (else a copy). These files belong to the notebook: ``cache clear``
    never deletes them. Raises :class:`GoEnhanceError` if the stored file is gone.
    """
    base = Path(output_dir) if output_dir else Path(notebook_dir) / OUTPUTS_DIRNAME
    if not base.is_absolute():
        base = Path(notebook_dir) / base
    name = f"{slugify(result.style_label)}-{result.key[:8]}.mp4"
    return link_or_copy(Path(result.path), base / name)


def outputs_relpath(
    result: ResultLike,
    notebook_dir: Path | str | None = None,
    *,
    output_dir: Path | str | None = None,
) -> str | None:
    """The relative path :func:`outputs_path` uses for ``result``, if that file exists (no I/O
    besides a stat)."""
    nb = _given_or_current(notebook_dir)
    base = Path(output_dir) if output_dir else nb / OUTPUTS_DIRNAME
    if not base.is_absolute():
        base = nb / base
    path = base / f"{slugify(result.style_label)}-{result.key[:8]}.mp4"
    return _relative_src(path, nb) if path.is_file() else None


def _relative_src(path: Path, notebook_dir: Path) -> str:
    """``path`` relative to ``notebook_dir`` with forward slashes (a URL path)."""
    rel = os.path.relpath(Path(path).resolve(), Path(notebook_dir).resolve())
    return Path(rel).as_posix()


# -- media choice -----------------------------------------------------------------------------
def choose_media(
    frontend: str,
    size: int,
    *,
    embed: bool | None = None,
    embed_limit_mb: float = _DEFAULT_EMBED_LIMIT_MB,
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


def _data_uri(path: Path, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


# -- bundles ----------------------------------------------------------------------------------
def provenance(
    result: ResultLike, *, file: str | None = None, cached: bool = False
) -> dict[str, Any]:
    """The ``goenhance_nb`` output metadata of ``result`` (JSON-safe; no URLs, no key)."""
    params = getattr(result, "params", None)
    return {
        "input_hash": getattr(result, "input_hash", None),
        "params": dict(params) if isinstance(params, Mapping) else params,
        "job_id": getattr(result, "job_id", None),
        "model": getattr(result, "model", None),
        "model_version": getattr(result, "model_version", None),
        "style": getattr(result, "style_label", None),
        "backend": getattr(result, "backend", None),
        "output_sha": getattr(result, "sha", None),
        "key": getattr(result, "key", None),
        "cost": getattr(result, "cost", None),
        "created": getattr(result, "created", None),
        "source_name": getattr(result, "source_name", None),
        "file": file,
        "cached": bool(cached),
    }


def _is_simulated(result: ResultLike) -> bool:
    return str(getattr(result, "backend", "")) == "simulated"


def _caption(result: ResultLike, cached: bool) -> tuple[str, str]:
    """(html, text) caption: style, duration, resolution, job id, cost, labels."""
    params = getattr(result, "params", None) or {}
    bits = [str(result.style_label)]
    if isinstance(params, Mapping):
        if params.get("duration") is not None:
            bits.append(f"{params['duration']} s")
        if params.get("resolution"):
            bits.append(str(params["resolution"]))
    if result.job_id:
        bits.append(f"job {str(result.job_id)[:8]}")
    if result.cost is not None:
        bits.append(f"{result.cost} credits")
    text = " · ".join(bits)
    labels_html = ""
    labels_text = ""
    if _is_simulated(result):
        labels_html += (
            ' <span class="goenhance-simulated" style="background:#fde68a;color:#713f12;'
            'padding:0 4px;border-radius:3px;font-weight:600">SIMULATED</span>'
        )
        labels_text += " [SIMULATED]"
    if cached:
        labels_html += (
            ' <span class="goenhance-cached" style="background:#e0e7ff;color:#3730a3;'
            'padding:0 4px;border-radius:3px">cached</span>'
        )
        labels_text += " [cached]"
    return html.escape(text) + labels_html, text + labels_text


_SYNC_SCRIPT = """<script>(function(){var s=document.currentScript;if(!s)return;
var r=s.closest('.goenhance-result');if(!r)return;var v=r.querySelectorAll('video');if(v.length<2)return;
var a=v[0],b=v[1],busy=false;function f(x,y){['play','pause','seeked','ratechange'].forEach(function(e){
x.addEventListener(e,function(){if(busy)return;busy=true;try{if(Math.abs(y.currentTime-x.currentTime)>0.05)
{y.currentTime=x.currentTime;}y.playbackRate=x.playbackRate;if(e==='play'){y.play();}else if(e==='pause')
{y.pause();}}finally{busy=false;}});});}f(a,b);f(b,a);r.setAttribute('data-goenhance-synced','1');})();</script>"""


def publish_result(
    result: ResultLike,
    *,
    notebook_dir: Path | str | None = None,
    embed: bool | None = None,
    cached: bool = False,
    compare: bool = False,
    source: Path | str | None = None,
    frontend: str | None = None,
    output_dir: Path | str | None = None,
    embed_limit_mb: float = _DEFAULT_EMBED_LIMIT_MB,
    width: int = 480,
) -> ResultBundle:
    """Build the regular output for a finished result; returns a :class:`ResultBundle`.

    Links (else copies) the stored file into ``goenhance_outputs/`` (or ``output_dir``) and
    references it by a path relative to ``notebook_dir`` (default: :func:`notebook_dir`), or
    embeds it as a data URI per :func:`choose_media` (``frontend`` defaults to
    :func:`goenhance_nb._frontend.frontend`). ``compare=True`` with a ``source`` file shows the
    input and the result side by side, with a tiny script that syncs play/pause/seek when the
    frontend runs JavaScript (plain side-by-side players otherwise). The bundle holds
    ``text/html`` and a one-line ``text/plain`` (path and ``[SIMULATED]``), and the metadata
    ``{"goenhance_nb": provenance}``. Raises :class:`GoEnhanceError` if the stored file is gone.
    """
    if frontend is None:
        from goenhance_nb._frontend import frontend as _detect

        frontend = _detect()
    nb_dir = _given_or_current(notebook_dir)
    local = outputs_path(result, nb_dir, output_dir=output_dir)
    rel = _relative_src(local, nb_dir)
    size = local.stat().st_size
    mode = choose_media(frontend, size, embed=embed, embed_limit_mb=embed_limit_mb)
    src = _data_uri(local) if mode == "embed" else rel

    cap_html, cap_text = _caption(result, cached)
    key = html.escape(str(result.key))
    video = (
        f'<video class="goenhance-video" {_VIDEO_ATTRS} width="{width}" '
        f'src="{html.escape(src, quote=True)}"></video>'
    )
    link = (
        ""
        if mode == "embed"
        else (
            f' <a href="{html.escape(rel, quote=True)}" target="_blank" '
            f'class="goenhance-file">{html.escape(rel)}</a>'
        )
    )
    body: str
    src_rel: str | None = None
    if compare and source is not None and Path(source).is_file():
        src_path = Path(source)
        ext = src_path.suffix.lower() or ".mp4"
        ihash = str(getattr(result, "input_hash", "") or "")[:8] or slugify(src_path.stem)
        before_local = link_or_copy(
            src_path,
            (Path(output_dir) if output_dir else nb_dir / OUTPUTS_DIRNAME) / f"source-{ihash}{ext}",
        )
        src_rel = _relative_src(before_local, nb_dir)
        mime = "video/quicktime" if ext == ".mov" else "video/mp4"
        before_src = _data_uri(before_local, mime) if mode == "embed" else src_rel
        before = (
            f'<video class="goenhance-source" {_VIDEO_ATTRS} width="{width}" '
            f'src="{html.escape(before_src, quote=True)}"></video>'
        )
        fig = 'style="margin:0;display:flex;flex-direction:column;gap:2px"'
        body = (
            f'<div style="display:flex;gap:8px;flex-wrap:wrap">'
            f"<figure {fig}>{before}<figcaption>before</figcaption></figure>"
            f"<figure {fig}>{video}<figcaption>after</figcaption></figure></div>" + _SYNC_SCRIPT
        )
        klass = "goenhance-result goenhance-compare"
    else:
        body = video
        klass = "goenhance-result"
    html_out = (
        f'<div class="{klass}" data-goenhance-key="{key}">{body}'
        f'<div class="goenhance-caption" style="font-size:12px;margin-top:2px">'
        f"{cap_html}{link}</div></div>"
    )
    text = f"GoEnhance result: {rel} ({cap_text.split(' [', 1)[0]})"
    if _is_simulated(result):
        text += " [SIMULATED]"
    if cached:
        text += " [cached]"
    if src_rel:
        text += f" (before: {src_rel})"
    meta = provenance(result, file=rel, cached=cached)
    meta["embedded"] = mode == "embed"
    return ResultBundle({"text/html": html_out, "text/plain": text}, {"goenhance_nb": meta})


def placeholder_bundle(job_label: str, *, simulated: bool = False) -> ResultBundle:
    """The regular output shown while a job runs; replaced by the result via its display id."""
    label = ' <span class="goenhance-simulated">SIMULATED</span>' if simulated else ""
    text = f"GoEnhance: {job_label} running; the video will appear here when it is done."
    return ResultBundle(
        {
            "text/html": (
                f'<div class="goenhance-placeholder" style="font-size:12px;color:#666">'
                f"{html.escape(text)}{label}</div>"
            ),
            "text/plain": text + (" [SIMULATED]" if simulated else ""),
        }
    )


def what_to_do(
    error: BaseException | None, job_id: str | None, *, retry: str = "press Retry"
) -> str:
    """One short hint for the user after ``error``. ``retry`` names the way to run the same
    transformation again where the hint is shown (the live widget's button, or the cell)."""
    jid = job_id or "<id>"
    if isinstance(error, JobTimedOut):
        return f"The job may still finish: resume it with %goenhance resume {jid}, or {retry}."
    if isinstance(error, JobFailed):
        return f"To submit the same transformation again, {retry} (it is charged again)."
    if isinstance(error, AuthError):
        return f"Check GOENHANCE_API_KEY or run %goenhance login, then {retry}."
    if isinstance(error, InsufficientCredits):
        return f"Top up your credits (or lower duration/resolution), then {retry}."
    if isinstance(error, BudgetExceeded):
        return f"Raise the session budget or lower duration/resolution, then {retry}."
    if isinstance(error, ResultExpired):
        return f"The result link expired before it was downloaded: {retry}."
    if isinstance(error, DiskFull):
        return f"Free some disk space, then resume with %goenhance resume {jid} (no new charge)."
    if isinstance(error, TooLarge):
        return (
            "If a file this large is expected, raise max_result_mb (GOENHANCE_MAX_RESULT_MB), "
            f"then resume with %goenhance resume {jid}."
        )
    if isinstance(error, TransportError):
        return f"Check the connection; resume with %goenhance resume {jid}, or {retry}."
    if isinstance(error, CacheError) and job_id:
        return f"Nothing was cached; fetch the result again with %goenhance resume {jid}."
    return f"To try again, {retry}."


def error_bundle(error: BaseException, *, job_id: str | None = None) -> ResultBundle:
    """A regular output for a job that failed in the background (no traceback): the one-line
    error and what to do, phrased for a saved notebook (no widget buttons there)."""
    msg = f"{type(error).__name__}: {redact_text(error)}"
    hint = what_to_do(error, job_id, retry="run the cell again")
    return ResultBundle(
        {
            "text/html": (
                f'<div class="goenhance-result-error" style="color:#b91c1c;font-size:12px">'
                f"{html.escape(msg)}</div>"
                f'<div class="goenhance-result-hint" style="font-size:12px">{html.escape(hint)}</div>'
            ),
            "text/plain": f"{msg}\n{hint}",
        },
        {"goenhance_nb": {"job_id": job_id, "error": msg}},
    )


def result_grid(
    results: Any,
    *,
    notebook_dir: Path | str | None = None,
    columns: int = 3,
    frontend: str | None = None,
    embed: bool | None = None,
    output_dir: Path | str | None = None,
    embed_limit_mb: float = _DEFAULT_EMBED_LIMIT_MB,
) -> ResultBundle:
    """Several finished results (Jobs or records) in one grid output, ``columns`` per row.

    Each cell is the same ``div.goenhance-result`` as :func:`publish_result` (same files in
    ``goenhance_outputs/``). A Job that failed shows its one-line error instead. The metadata
    holds ``{"goenhance_nb": {"results": [provenance, ...]}}``.
    """
    cells_html: list[str] = []
    lines: list[str] = []
    provs: list[dict[str, Any]] = []
    for item in results:
        record, cached = item, False
        if hasattr(item, "done") and hasattr(item, "key") and callable(item.done):
            cached = bool(getattr(item, "cached", False))
            try:
                record = item.result(timeout=0) if item.done() else None
            except Exception as exc:
                err = error_bundle(exc, job_id=getattr(item, "id", None))
                cells_html.append(str(err["text/html"]))
                lines.append(str(err["text/plain"]))
                continue
            if record is None:
                cells_html.append("<div class='goenhance-placeholder'>still running</div>")
                lines.append(f"{getattr(item, 'id', None) or item.key[:8]}: still running")
                continue
        b = publish_result(
            record,
            notebook_dir=notebook_dir,
            cached=cached,
            frontend=frontend,
            embed=embed,
            output_dir=output_dir,
            embed_limit_mb=embed_limit_mb,
            width=260,
        )
        cells_html.append(str(b["text/html"]))
        lines.append(str(b["text/plain"]))
        provs.append(b.metadata["goenhance_nb"])
    grid = (
        f'<div class="goenhance-grid" style="display:grid;gap:8px;'
        f'grid-template-columns:repeat({max(1, int(columns))},minmax(0,1fr))">'
        + "".join(cells_html)
        + "</div>"
    )
    return ResultBundle(
        {"text/html": grid, "text/plain": "\n".join(lines)}, {"goenhance_nb": {"results": provs}}
    )
