"""Render a finished result as a regular notebook output; no file work here.

A result is first put beside the notebook by :mod:`goenhance_nb._outputs` (``publish``: hard
link or copy into ``goenhance_outputs/``, or a data URI where the frontend cannot fetch files);
this module turns the resulting :class:`~goenhance_nb._outputs.Published` into a MIME bundle
(:func:`render_result`, :func:`render_grid`) and never touches a file. :func:`publish_result`
and :func:`result_grid` are the two-step shortcut (publish, then render) for code that shows a
result where it already is on the right thread (the magics, sweeps).

DOM hooks (docs/ARCHITECTURE.md section 4): ``div.goenhance-result`` holding
``video.goenhance-video``, ``span.goenhance-simulated`` ("SIMULATED") when simulated and
``span.goenhance-cached`` ("cached") for cache hits. Output metadata
``{"goenhance_nb": provenance}``. The ``text/plain`` part is one line for terminals.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from goenhance_nb._lifecycle import Badge
from goenhance_nb._outputs import (
    DEFAULT_EMBED_LIMIT_MB,
    Published,
    notebook_dir,
    outputs_relpath,
    publish,
    write_new_file,
)
from goenhance_nb._theme import (
    CACHED,
    CAPTION_STYLE,
    ERROR,
    LABEL_SHAPE,
    MUTED,
    SIMULATED_LABEL,
    compare_styles,
    grid_style,
)

if TYPE_CHECKING:
    from goenhance_nb._cache import ResultRecord
    from goenhance_nb._job import Job

__all__ = [
    "ResultBundle",
    "error_bundle",
    "failure_text",
    "notebook_dir",
    "outputs_relpath",
    "placeholder_bundle",
    "provenance",
    "publish_result",
    "render_grid",
    "render_result",
    "result_grid",
    "state_line_html",
    "status_bundle",
    "what_to_do",
    "with_state_line",
    "write_new_file",
]
# TODO(lead): notebook_dir, outputs_relpath and write_new_file live in _outputs; they are
# re-exported here only for _magics and _panel (other helpers' files) until they import them
# from _outputs.

_VIDEO_ATTRS = 'controls muted playsinline preload="metadata"'
# never wider than its box (a narrow window, a grid cell); the width attribute stays the
# preferred size, and what viewers that drop styles show
_VIDEO_STYLE = "max-width:100%;height:auto"
_ERROR_SHAPE = "padding:2px 6px;border-radius:3px;display:inline-block"
_CACHED_LABEL = (
    f' <span class="goenhance-cached" style="{CACHED.css()};{LABEL_SHAPE}">cached</span>'
)


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


# -- bundles ----------------------------------------------------------------------------------
def provenance(
    result: ResultRecord, *, file: str | None = None, cached: bool = False
) -> dict[str, Any]:
    """The ``goenhance_nb`` output metadata of ``result`` (JSON-safe; no URLs, no key)."""
    return {
        "input_hash": result.input_hash,
        "params": dict(result.params),
        "job_id": result.job_id,
        "model": result.model,
        "model_version": result.model_version,
        "style": result.style_label,
        "backend": result.backend,
        "output_sha": result.sha,
        "key": result.key,
        "cost": result.cost,
        "created": result.created,
        "source_name": result.source_name,
        "file": file,
        "cached": bool(cached),
    }


def _is_simulated(result: ResultRecord) -> bool:
    return str(result.backend) == "simulated"


def _caption(result: ResultRecord, cached: bool) -> tuple[str, str]:
    """(html, text) caption: style, duration, resolution, job id, cost, labels."""
    params: Mapping[str, Any] = result.params or {}
    bits = [str(result.style_label)]
    if params.get("duration") is not None:
        bits.append(f"{params['duration']} s")
    if params.get("resolution"):
        bits.append(str(params["resolution"]))
    if result.job_id:
        bits.append(f"job {str(result.job_id)[:8]}")
    if result.cost is not None and not cached:
        bits.append(f"{result.cost} credits")
    text = " · ".join(bits)
    labels_html = ""
    labels_text = ""
    if _is_simulated(result):
        labels_html += SIMULATED_LABEL
        labels_text += " [SIMULATED]"
    if cached:  # said once: "cached, originally 15 credits"
        originally = f", originally {result.cost} credits" if result.cost else ""
        labels_html += _CACHED_LABEL + html.escape(originally)
        labels_text += f" [cached{originally}]"
    return html.escape(text) + labels_html, text + labels_text


_SYNC_SCRIPT = """<script>(function(){var s=document.currentScript;if(!s)return;
var r=s.closest('.goenhance-result');if(!r)return;var v=r.querySelectorAll('video');if(v.length<2)return;
var a=v[0],b=v[1],busy=false;function f(x,y){['play','pause','seeked','ratechange'].forEach(function(e){
x.addEventListener(e,function(){if(busy)return;busy=true;try{if(Math.abs(y.currentTime-x.currentTime)>0.05)
{y.currentTime=x.currentTime;}y.playbackRate=x.playbackRate;if(e==='play'){y.play();}else if(e==='pause')
{y.pause();}}finally{busy=false;}});});}f(a,b);f(b,a);r.setAttribute('data-goenhance-synced','1');})();</script>"""


def render_result(
    result: ResultRecord, published: Published, *, cached: bool = False, width: int = 480
) -> ResultBundle:
    """The regular output for a result already put beside the notebook (no I/O).

    A ``<video>`` of ``published.src`` (a relative path, with a link to the file, or a data
    URI), captioned with style, duration, resolution, job id, cost and the SIMULATED/cached
    labels. With ``published.source_src`` the input and the result are shown side by side, with
    a tiny script that syncs play/pause/seek when the frontend runs JavaScript (plain
    side-by-side players otherwise). The bundle holds ``text/html`` and a one-line
    ``text/plain`` (path and ``[SIMULATED]``), and the metadata ``{"goenhance_nb": provenance}``.
    """
    rel = published.rel
    video = _video_tag("goenhance-video", published.src, width)
    link = (
        ""
        if published.embedded
        else (
            f' <a href="{html.escape(rel, quote=True)}" target="_blank" '
            f'class="goenhance-file">{html.escape(rel)}</a>'
        )
    )
    if published.source_src is not None:
        body, klass = (
            _compare_body(published.source_src, published.src, width),
            "goenhance-result goenhance-compare",
        )
    else:
        body, klass = video, "goenhance-result"
    cap_html, cap_text = _caption(result, cached)
    html_out = (
        f'<div class="{klass}" data-goenhance-key="{html.escape(str(result.key))}">{body}'
        f'<div class="goenhance-caption" style="{CAPTION_STYLE}">'
        f"{cap_html}{link}</div></div>"
    )
    main = cap_text.split(" [", 1)[0]
    text = f"GoEnhance result: {rel} ({main}){cap_text[len(main) :]}"  # + [SIMULATED] [cached..]
    if published.source_rel:
        text += f" (before: {published.source_rel})"
    meta = provenance(result, file=rel, cached=cached)
    meta["embedded"] = published.embedded
    return ResultBundle({"text/html": html_out, "text/plain": text}, {"goenhance_nb": meta})


def _video_tag(klass: str, src: str, width: int, style: str = _VIDEO_STYLE) -> str:
    return (
        f'<video class="{klass}" {_VIDEO_ATTRS} width="{width}" style="{style}" '
        f'src="{html.escape(src, quote=True)}"></video>'
    )


def _compare_body(before_src: str, after_src: str, width: int) -> str:
    """Before and after in one row, each at most half of it and scaled to fit its half
    (``goenhance_nb._theme.compare_styles``), never stacked; synced by ``_SYNC_SCRIPT``."""
    row, fig, fluid = compare_styles()
    before = _video_tag("goenhance-source", before_src, width, fluid)
    after = _video_tag("goenhance-video", after_src, width, fluid)
    return (
        f'<div class="goenhance-compare-row" style="{row}">'
        f'<figure class="goenhance-compare-side" style="{fig}">{before}'
        f'<figcaption style="{CAPTION_STYLE}">before</figcaption></figure>'
        f'<figure class="goenhance-compare-side" style="{fig}">{after}'
        f'<figcaption style="{CAPTION_STYLE}">after</figcaption></figure></div>' + _SYNC_SCRIPT
    )


def publish_result(
    result: ResultRecord,
    *,
    notebook_dir: Path | str | None = None,
    embed: bool | None = None,
    cached: bool = False,
    compare: bool = False,
    source: Path | str | None = None,
    frontend: str | None = None,
    output_dir: Path | str | None = None,
    embed_limit_mb: float = DEFAULT_EMBED_LIMIT_MB,
    width: int = 480,
) -> ResultBundle:
    """Publish ``result`` (:func:`goenhance_nb._outputs.publish`), then :func:`render_result`.

    ``compare=True`` with a ``source`` file shows the input beside the result. The file work
    happens in ``_outputs``; call this where the result is shown once (never from a render
    timer). :raises GoEnhanceError: the stored file is gone or cannot be linked or copied.
    """
    published = publish(
        result,
        notebook_dir=notebook_dir,
        output_dir=output_dir,
        frontend=frontend,
        embed=embed,
        embed_limit_mb=embed_limit_mb,
        source=source if compare else None,
    )
    return render_result(result, published, cached=cached, width=width)


def placeholder_bundle(job_label: str, *, simulated: bool = False) -> ResultBundle:
    """The regular output shown while a job runs; replaced by the result via its display id."""
    label = SIMULATED_LABEL if simulated else ""
    text = f"GoEnhance: {job_label} running; the video will appear here when it is done."
    return ResultBundle(
        {
            "text/html": (
                f'<div class="goenhance-placeholder" style="font-size:12px;{MUTED.css()}">'
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
        charged = "" if "charged" in retry else " (it is charged again)"
        return f"To submit the same transformation again, {retry}{charged}."
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


def failure_text(error: BaseException) -> str:
    """One line for a job's error, said once: ``job 8da7f61d failed: <the service's reason>``
    when the API gave a reason, ``job 8da7f61d failed; the service gave no reason`` when it
    only said ``failed``; ``<ErrorType>: <message>`` for any other error. Redacted."""
    if isinstance(error, JobFailed):
        jid = f"job {str(error.job_id)[:8]}" if error.job_id else "the job"
        reason = error.msg.strip()
        if not reason or reason.startswith("status "):  # only the raw status, no reason
            return f"{jid} failed; the service gave no reason"
        return redact_text(f"{jid} failed: {reason}")
    return redact_text(f"{type(error).__name__}: {error}")


def error_bundle(
    error: BaseException,
    *,
    job_id: str | None = None,
    retry_cost: int | None = None,
    summary: str = "",
    badge: Badge | None = None,
) -> ResultBundle:
    """A regular output for a job that failed in the background (no traceback): the job's
    ``summary`` line when given, the one-line error (:func:`failure_text`) and what to do,
    phrased for a saved notebook (no widget buttons there; ``retry_cost`` says what running
    the cell again is charged)."""
    msg = failure_text(error)
    again = f"run the cell again (charged again, ~{retry_cost} credits)" if retry_cost else ""
    hint = what_to_do(error, job_id[:8] if job_id else None, retry=again or "run the cell again")
    head = state_line_html(summary, badge) if summary else ""
    return ResultBundle(
        {
            "text/html": (
                f"{head}"
                f'<div class="goenhance-result-error" style="{ERROR.css()};{_ERROR_SHAPE};'
                f'font-size:12px">{html.escape(msg)}</div>'
                f'<div class="goenhance-result-hint" style="font-size:12px">{html.escape(hint)}</div>'
            ),
            "text/plain": "\n".join(line for line in (summary, msg, hint) if line),
        },
        {"goenhance_nb": {"job_id": job_id, "error": msg}},
    )


def status_bundle(text: str, *, badge: Badge | None = None) -> ResultBundle:
    """A static one-line output (``text/html`` and ``text/plain``): a job's status or summary
    where no widget is shown, or where an ended job's widget was (then with its ``badge``)."""
    return ResultBundle({"text/html": state_line_html(text, badge), "text/plain": text})


def state_line_html(text: str, badge: Badge | None = None) -> str:
    """``text`` as one static line, after the job's ``badge`` when given: the same DOM hooks
    as the live widget (``goenhance-status`` root, ``goenhance-state`` badge), so a page reads
    the state of an ended job the same way."""
    head = ""
    if badge is not None:
        bg, fg = badge.colours
        head = (
            f'<span class="goenhance-state" style="background:{bg};color:{fg};padding:0 6px;'
            f'font-weight:bold;margin-right:6px">{html.escape(str(badge))}</span>'
        )
    return (
        f'<div class="goenhance-status goenhance-static" style="font-size:12px;margin:2px 0">'
        f'{head}<span class="goenhance-summary">{html.escape(text)}</span></div>'
    )


def with_state_line(bundle: ResultBundle, text: str, badge: Badge) -> ResultBundle:
    """``bundle`` (a rendered result) under a static state line (:func:`state_line_html`)."""
    return ResultBundle(
        {
            **bundle,
            "text/html": state_line_html(text, badge) + str(bundle["text/html"]),
            "text/plain": f"{badge}: {text}\n{bundle['text/plain']}"
            if text
            else bundle["text/plain"],
        },
        bundle.metadata,
    )


def render_grid(
    cells: Iterable[ResultBundle | tuple[str, str]], *, columns: int = 3
) -> ResultBundle:
    """Several outputs in one grid, at most ``columns`` per row (fewer on narrow widths, each
    cell at least 240 px, 16 px apart: ``goenhance_nb._theme.grid_style``); each video fills
    its cell with its own controls. A cell is a rendered result (its provenance goes into
    ``{"goenhance_nb": {"results": [...]}}``) or ``(html, text)`` for a job that failed or
    still runs."""
    cells_html: list[str] = []
    lines: list[str] = []
    provs: list[dict[str, Any]] = []
    for cell in cells:
        if isinstance(cell, ResultBundle):
            cells_html.append(str(cell["text/html"]))
            lines.append(str(cell["text/plain"]))
            provs.append(cell.metadata["goenhance_nb"])
        else:
            cells_html.append(cell[0])
            lines.append(cell[1])
    grid = (
        f'<div class="goenhance-grid" style="{grid_style(columns)}">'
        + "".join(
            f'<div class="goenhance-grid-cell" style="min-width:0">{c}</div>' for c in cells_html
        )
        + "</div>"
    )
    return ResultBundle(
        {"text/html": grid, "text/plain": "\n".join(lines)}, {"goenhance_nb": {"results": provs}}
    )


def result_grid(
    results: Iterable[Job | ResultRecord],
    *,
    notebook_dir: Path | str | None = None,
    columns: int = 3,
    frontend: str | None = None,
    embed: bool | None = None,
    output_dir: Path | str | None = None,
    embed_limit_mb: float = DEFAULT_EMBED_LIMIT_MB,
) -> ResultBundle:
    """Several finished results (Jobs or records) in one grid output, ``columns`` per row.

    Each finished result is published (:func:`goenhance_nb._outputs.publish`, same files in
    ``goenhance_outputs/``) and rendered as the same ``div.goenhance-result`` as
    :func:`render_result`; a Job that failed shows its one-line error instead, one still running
    says so. The metadata holds ``{"goenhance_nb": {"results": [provenance, ...]}}``.

    :raises GoEnhanceError: a finished result's stored file is gone.
    """
    kw: dict[str, Any] = {
        "notebook_dir": notebook_dir,
        "output_dir": output_dir,
        "frontend": frontend,
        "embed": embed,
        "embed_limit_mb": embed_limit_mb,
    }
    return render_grid((_grid_cell(item, kw) for item in results), columns=columns)


_GRID_VIDEO_PX = 480  # the preferred size; max-width:100% fits it to its cell


def _grid_cell(item: Job | ResultRecord, kw: dict[str, Any]) -> ResultBundle | tuple[str, str]:
    """One grid cell: the published result, or ``(html, text)`` for a failed or running Job."""
    from goenhance_nb._job import Job

    if not isinstance(item, Job):
        return render_result(item, publish(item, **kw), width=_GRID_VIDEO_PX)
    try:
        record = item.result(timeout=0) if item.done() else None
    except Exception as exc:
        err = error_bundle(exc, job_id=item.id)
        return str(err["text/html"]), str(err["text/plain"])
    if record is None:
        running = f"{item.id or item.key[:8]}: still running"
        return "<div class='goenhance-placeholder'>still running</div>", running
    return render_result(
        record, publish(record, **kw), cached=bool(item.cached), width=_GRID_VIDEO_PX
    )
