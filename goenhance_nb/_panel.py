"""The GoEnhance panel: pick an input and a style, submit, watch jobs (core ipywidgets).

``goenhance_nb.panel()`` (and ``%goenhance panel``) returns a :class:`Panel`. It talks to the
:class:`~goenhance_nb._session.Session` only. Style thumbnails are fetched in Python
(:meth:`Session.style_preview <goenhance_nb._session.Session.style_preview>`, kept in the cache
dir) and shown as ``ipywidgets.Image`` bytes (the browser never fetches an authenticated URL);
when previews fail the gallery is plain text buttons. Uploaded clips
(``FileUpload``, small files only; DECISIONS 17) are copied at once to
``goenhance_uploads/<name>`` beside the notebook and the widget's value is cleared so the bytes
never reach saved widget state. Nothing from ``Settings`` goes into a widget trait.

Choosing a local input (Videos list, path field or upload) asks the session to inspect it
(:meth:`Session.inspect`): the duration becomes the input's length (rounded down, clamped to
3-30 s) and cannot be set longer; an upload the session refuses (it does not probe as an
MP4/MOV video) is deleted again and never listed. The cost estimate of the current settings
sits beside Submit. Jobs are listed newest first in a bounded, scrolling area; each row holds
its own result as a thumbnail player (*Larger* shows the full-size one); *Clear finished*
removes ended rows (never anything from the cache). The layout is flex with wrapping and
minimum widths, so nothing is clipped in a narrow (760 px) window.

Headless use (DECISIONS 22): ``Panel.submit(input, style, *, prompt, duration, ...)`` sets the
controls and submits exactly like the button; ``Panel.jobs`` lists the Jobs, ``Panel.rows``
the rows. DOM hooks: ARCHITECTURE.md section 4.

The panel uses only the typed contract of :class:`Session` (``backend``, ``cache_dir``,
``styles``, ``style_preview``, ``credits``, ``spend``, ``cost_estimate``, ``inspect``,
``transform``). The
file work is in module functions, not in the widget classes: :func:`save_upload` writes an
upload, :func:`find_videos` lists clips, :func:`_read_preview` reads a cached preview.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import functools
import html
import os
import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from goenhance_nb._errors import GoEnhanceError, InputError, redact_text
from goenhance_nb._inputs import MAX_DURATION, MIN_DURATION, RESOLUTIONS, default_duration
from goenhance_nb._outputs import write_new_file
from goenhance_nb._theme import ERROR, LABEL_SHAPE, SIMULATED, SUBMIT, TEXT, widget_style
from goenhance_nb.widgets import StatusWidget, backend_label, result_bundle
from goenhance_nb.widgets._panel_parts import (
    JOBS_MAX_HEIGHT,
    PANEL_CSS,
    Gallery,
    JobRow,
    no_shrink,
)

if TYPE_CHECKING:  # annotations only: the panel is imported lazily, these are loaded anyway
    from goenhance_nb._cache import ResultRecord
    from goenhance_nb._job import Job
    from goenhance_nb._records import Style
    from goenhance_nb._session import Session

__all__ = ["VIDEO_SUFFIXES", "Panel", "find_videos", "panel", "save_upload"]

VIDEO_SUFFIXES = (".mp4", ".mov")
UPLOADS_DIRNAME = "goenhance_uploads"
UPLOAD_WARN_BYTES = 10 * 1024 * 1024  # the server's websocket message limit is about 10 MiB
_SKIP_DIRS = {"goenhance_outputs", "node_modules", "__pycache__", "site-packages"}
#: the duration slider's value before an input is chosen (then: the input's length)
_DURATION_START = 5


class _Keep(enum.Enum):
    """``Panel.submit``'s default for a parameter: keep the control's current value."""

    KEEP = "keep"


_KEEP = _Keep.KEEP


def panel(session: Session | None = None) -> Panel:
    """Build the panel for ``session`` (default: :func:`goenhance_nb.get_session`).

    :raises GoEnhanceError: only for a broken session; model-list failures are shown in the
        panel's message line instead.
    """
    return Panel(session=session)


def find_videos(
    root: Path | str, *, max_depth: int = 3, limit: int = 200, exclude: tuple[Path, ...] = ()
) -> list[str]:
    """Video files (``.mp4``/``.mov``) under ``root``, as sorted paths relative to it.

    Hidden directories, ``goenhance_outputs``, virtualenv/package folders and the ``exclude``
    directories (e.g. the cache dir) are skipped.
    """
    root = Path(root)
    skip = {Path(p).resolve() for p in exclude}
    found: list[str] = []
    base_depth = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).parts) - base_depth
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in _SKIP_DIRS
            and not (Path(dirpath) / d / "pyvenv.cfg").exists()
            and (not skip or (Path(dirpath) / d).resolve() not in skip)
        )
        if depth >= max_depth:
            dirnames[:] = []
        for name in sorted(filenames):
            if name.lower().endswith(VIDEO_SUFFIXES) and not name.startswith("."):
                found.append((Path(dirpath) / name).relative_to(root).as_posix())
                if len(found) >= limit:
                    return sorted(found)
    return sorted(found)


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._") or "upload.mp4"
    return stem[:80]


def save_upload(root: Path, name: str, data: bytes) -> Path:
    """Write an uploaded clip to ``<root>/goenhance_uploads/<name>`` and return its path.

    ``root`` is the notebook directory (a path the notebook can name again; never the cache
    dir). ``name`` is reduced to ``[A-Za-z0-9._-]`` (at most 80 characters). The file is
    written through an ``O_EXCL`` temp file and ``os.replace`` (:func:`write_new_file`): it
    never writes through a symlink, and it replaces an earlier upload of the same name.

    :raises OSError: the folder or the file cannot be written.
    """
    dest_dir = root / UPLOADS_DIRNAME
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / _safe_name(name)
    write_new_file(dest, data)
    return dest


def _first_upload(value: Sequence[Mapping[str, Any]]) -> tuple[str, bytes]:
    """``(name, bytes)`` of the first file in a non-empty ``FileUpload`` value."""
    f = value[0]
    return str(f.get("name") or "upload.mp4"), bytes(f.get("content") or b"")


def _read_preview(path: Path | None) -> bytes | None:
    """The bytes of a preview file from :meth:`Session.style_preview`; ``None`` when there is
    none or it cannot be read (the style stays a text button)."""
    if path is None:
        return None
    try:
        return path.read_bytes() or None
    except OSError:
        return None


def _length_hint(name: str, length: float | None) -> str:
    """``clip.mp4 is 4.0 s`` (and why the duration is longer, for a clip under 3 s)."""
    if length is None:
        return ""
    if length < MIN_DURATION:
        return f"{name} is {length:.1f} s (shorter than the {MIN_DURATION} s minimum)"
    return f"{name} is {length:.1f} s"


class Panel(W.VBox):
    """Input picker, style gallery, parameters, Submit with its cost estimate, the jobs list and
    credits.

    Python API (headless, DECISIONS 22): :meth:`submit`, :attr:`jobs`, :attr:`rows`,
    :meth:`clear_finished`, :meth:`refresh_credits`, :meth:`load_previews`. Attributes expose
    the controls (``input_path``, ``browser``, ``upload``, ``gallery``, ``prompt``,
    ``duration``, ``resolution``, ``seed``, ``force``, ``submit_button``, ``estimate``,
    ``clear_button``, ``jobs_box``, ``credits``, ``message``).

    Choosing a local input (list, path or upload) sets the duration to the input's length
    (rounded down, clamped to 3-30 s) and caps the duration's maximum there, so a job never
    asks for more seconds than the clip has. The jobs list is newest first; each row holds its
    own result as a thumbnail player; the list scrolls inside a bounded area; *Clear finished*
    removes ended rows from the list (never from the cache; running jobs stay).
    """

    def __init__(
        self,
        session: Session | None = None,
        *,
        notebook_dir: Path | str | None = None,
        load_previews: bool = True,
        **kwargs: Any,
    ) -> None:
        if session is None:
            from goenhance_nb._session import get_session

            session = get_session()
        self._session: Session = session
        self._root = Path(notebook_dir) if notebook_dir is not None else Path.cwd()
        self._jobs: list[Job] = []
        self._rows: list[JobRow] = []
        self._uploads: list[dict[str, str | int]] = []  # name/type/size of kept uploads
        self._input_length: float | None = None
        self._input_problem = False  # the message line shows why the chosen input is unusable
        self._lock = threading.Lock()
        self._syncing_browser = False
        self._resetting_upload = False
        self.previews_ready = threading.Event()
        self.styles: list[Style] = []
        self._build_controls()
        super().__init__(self._layout(), **kwargs)
        self.add_class("goenhance-panel")

        self.refresh_files()
        self._load_styles()
        self.refresh_credits()
        if load_previews:
            threading.Thread(
                target=self.load_previews, name="goenhance-previews", daemon=True
            ).start()
        else:
            self.previews_ready.set()

    # -- building -------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        self._build_input()
        self._build_params()
        self.message = W.HTML("", _dom_classes=["goenhance-panel-message"])
        self.clear_button = W.Button(
            description="Clear finished",
            icon="trash",
            tooltip="remove ended jobs from this list (their results stay in the cache)",
            layout=no_shrink(),
            _dom_classes=["goenhance-clear"],
        )
        self.clear_button.on_click(lambda _b: self.clear_finished())
        self.jobs_box = W.VBox(
            [],
            layout=W.Layout(max_height=JOBS_MAX_HEIGHT, overflow="auto", width="100%"),
            _dom_classes=["goenhance-jobs"],
        )
        self.credits = W.Label("", layout=no_shrink(), _dom_classes=["goenhance-credits"])
        self.backend = W.Label(
            backend_label(self._session.backend),
            style={"font_weight": "bold"},
            layout=no_shrink(padding="0 4px"),
            _dom_classes=["goenhance-backend"],
        )
        if self.backend.value == "SIMULATED":  # dark text on yellow in either theme
            self.backend.style.background = SIMULATED.background
            self.backend.style.text_color = SIMULATED.text

    def _build_input(self) -> None:
        self.input_path = W.Text(
            placeholder="path/to/clip.mp4 or https://…",
            description="Input",
            layout=W.Layout(width="auto"),
            _dom_classes=["goenhance-input"],
        )
        self.input_path.observe(self._input_changed, names="value")
        self.browser = W.Select(
            options=[],
            rows=5,
            description="Videos",
            layout=W.Layout(width="auto"),
            _dom_classes=["goenhance-browser"],
        )
        self.browser.observe(self._browsed, names="value")
        self.refresh_button = W.Button(description="Refresh list", icon="sync", layout=no_shrink())
        self.refresh_button.on_click(lambda _b: self.refresh_files())
        self.upload = W.FileUpload(
            accept=",".join(VIDEO_SUFFIXES),
            multiple=False,
            description="Upload small clip",
            tooltip="copied to goenhance_uploads/ beside the notebook; the count is the clips "
            "uploaded here",
            layout=no_shrink(),
            _dom_classes=["goenhance-upload"],
        )
        self.upload.observe(self._uploaded, names="value")

    def _build_params(self) -> None:
        self.gallery = Gallery(self._style_changed)
        self.prompt = W.Textarea(
            placeholder="optional prompt (≤ 500 characters)",
            description="Prompt",
            layout=W.Layout(width="auto", max_width="640px"),
            _dom_classes=["goenhance-prompt"],
        )
        self.duration = W.BoundedIntText(
            value=_DURATION_START,
            min=MIN_DURATION,
            max=MAX_DURATION,
            description="Duration (s)",
            style={"description_width": "initial"},
            layout=W.Layout(width="150px", flex="0 0 auto"),
            _dom_classes=["goenhance-duration"],
        )
        self.duration_hint = W.Label(
            "", layout=no_shrink(margin="0 8px 0 0"), _dom_classes=["goenhance-duration-hint"]
        )
        self.resolution = W.Dropdown(
            options=list(RESOLUTIONS),
            value="720p",
            description="Resolution",
            layout=W.Layout(width="190px", flex="0 0 auto"),
            _dom_classes=["goenhance-resolution"],
        )
        self.seed = W.IntText(
            value=-1,
            description="Seed",
            layout=W.Layout(width="150px", flex="0 0 auto"),
            _dom_classes=["goenhance-seed"],
        )
        self.force = W.Checkbox(
            value=False,
            description="run again (ignore cache)",
            indent=False,
            layout=no_shrink(),
            _dom_classes=["goenhance-force"],
        )
        self.estimate = W.Label("", layout=no_shrink(), _dom_classes=["goenhance-estimate"])
        for w in (self.duration, self.resolution):
            w.observe(lambda _ch: self._update_estimate(), names="value")
        self.submit_button = W.Button(
            description="Submit",
            style=widget_style(SUBMIT, button=True),
            icon="play",
            layout=no_shrink(),
            _dom_classes=["goenhance-submit"],
        )
        self.submit_button.on_click(lambda _b: self._submit_clicked())

    def _layout(self) -> list[W.Widget]:
        wrap = {"flex_flow": "row wrap", "align_items": "center"}
        return [
            W.HTML(PANEL_CSS, layout=W.Layout(display="none")),
            W.HBox(
                [W.HTML("<b>GoEnhance</b>", layout=no_shrink()), self.backend, self.credits],
                layout=W.Layout(grid_gap="10px", **wrap),
            ),
            W.HBox(
                [
                    W.VBox(
                        [self.input_path, self.browser],
                        layout=W.Layout(flex="1 1 320px", min_width="240px", max_width="600px"),
                    ),
                    W.VBox([self.refresh_button, self.upload], layout=no_shrink()),
                ],
                layout=W.Layout(flex_flow="row wrap", align_items="flex-start"),
            ),
            W.HTML("<b>Style</b>"),
            self.gallery,
            self.prompt,
            W.HBox(
                [self.duration, self.duration_hint, self.resolution, self.seed, self.force],
                layout=W.Layout(**wrap),
            ),
            W.HBox([self.submit_button, self.estimate], layout=W.Layout(**wrap)),
            self.message,
            W.HBox(
                [W.HTML("<b>Jobs</b>", layout=no_shrink()), self.clear_button],
                layout=W.Layout(**wrap),
            ),
            self.jobs_box,
        ]

    # -- public API ---------------------------------------------------------------------------
    @property
    def session(self) -> Session:
        """The session the panel submits to."""
        return self._session

    @property
    def jobs(self) -> list[Job]:
        """The Jobs listed in the panel (a row's retries included), oldest first."""
        with self._lock:
            return list(self._jobs)

    @property
    def rows(self) -> list[JobRow]:
        """The job rows, oldest first (shown newest first); ``row.result`` holds its result."""
        with self._lock:
            return list(self._rows)

    @property
    def status_widgets(self) -> list[StatusWidget]:
        """The compact StatusWidget of each job row, oldest first."""
        return [row.status for row in self.rows]

    def submit(
        self,
        input: str | os.PathLike[str] | None = None,
        style: int | str | None = None,
        *,
        prompt: str | _Keep | None = _KEEP,
        duration: int | _Keep = _KEEP,
        resolution: str | _Keep = _KEEP,
        seed: int | _Keep = _KEEP,
        force: bool | _Keep = _KEEP,
    ) -> Job:
        """Set the controls, then submit exactly like the Submit button.

        Omitted values keep the controls' current values (``prompt=None`` clears the prompt; a
        new ``input`` sets the duration to its length, as choosing it in the panel does).

        :returns: the Job (already done and ``cached`` when the result was in the cache).
        :raises InputError: a bad input or parameter, or a ``duration`` longer than the input
            (also shown in the message line; nothing is sent).
        :raises GoEnhanceError: the session refuses the job (e.g. the budget).
        :raises TypeError: an unknown keyword parameter.
        """
        if input is not None:
            self.input_path.value = os.fspath(input)
        if style is not None:
            self.gallery.select(self._style_id(style))
        if not isinstance(prompt, _Keep):
            self.prompt.value = prompt or ""
        if not isinstance(duration, _Keep):
            self._set_duration(int(duration))
        if not isinstance(resolution, _Keep):
            self.resolution.value = resolution
        if not isinstance(seed, _Keep):
            self.seed.value = int(seed)
        if not isinstance(force, _Keep):
            self.force.value = bool(force)
        return self._submit_from_controls()

    def clear_finished(self) -> int:
        """Remove the rows whose job has ended (done, cached, failed, timed out, not watched)
        from the list; running jobs stay. Results stay in the cache and in
        ``goenhance_outputs/``. Returns how many rows were removed."""
        with self._lock:
            gone = [row for row in self._rows if row.finished]
            self._rows = [row for row in self._rows if row not in gone]
            dropped = {id(j) for row in gone for j in row.jobs}
            self._jobs = [j for j in self._jobs if id(j) not in dropped]
            rows = list(self._rows)
        self.jobs_box.children = tuple(reversed(rows))
        for row in gone:
            row.close()
        return len(gone)

    def refresh_files(self) -> None:
        """Re-list the video files under the notebook directory (the chosen input stays
        highlighted when it is listed)."""
        try:
            files = find_videos(self._root, exclude=(self._session.cache_dir,))
        except OSError:
            files = []
        self._syncing_browser = True
        try:
            self.browser.options = files
            self.browser.value = self._listed(self.input_path.value)
        finally:
            self._syncing_browser = False

    def refresh_credits(self) -> None:
        """Ask the session for the balance and show it with the session spend."""
        try:
            count: int | None = self._session.credits().count
        except GoEnhanceError as exc:
            count = None
            self._show_message(f"credits unavailable: {type(exc).__name__}: {exc}", error=True)
        self._render_credits(count)

    def load_previews(self) -> None:
        """Show every style's thumbnail: :meth:`Session.style_preview` fetches it once and keeps
        it in the cache dir; the bytes go to the ``Image``. A style without a preview stays a
        text button. :attr:`previews_ready` is set when done (also when this fails)."""
        try:
            for style in list(self.gallery.styles.values()):
                data = _read_preview(self._session.style_preview(style))
                self.gallery.set_preview(style.id, data)
        finally:
            self.previews_ready.set()

    def close(self) -> None:
        for row in self.rows:
            row.close()
        super().close()

    # -- internals: styles and estimate ---------------------------------------------------------
    def _load_styles(self) -> None:
        try:
            self.styles = list(self._session.styles())
        except GoEnhanceError as exc:
            self.styles = []
            self._show_message(f"could not load styles: {type(exc).__name__}: {exc}", error=True)
        self.gallery.set_styles(self.styles)
        if self.styles:
            self.gallery.select(self.styles[0].id)

    def _style_id(self, style: int | str) -> int:
        if isinstance(style, int) or (isinstance(style, str) and style.strip().isdigit()):
            sid = int(style)
            if sid in self.gallery.buttons:
                return sid
            raise InputError(f"unknown style id {sid}")
        want = str(style).strip().lower()
        for s in self.styles:
            if s.label.lower() == want:
                return s.id
        raise InputError(f"unknown style {style!r}")

    def _style_changed(self, _sid: int | None) -> None:
        self._update_estimate()

    def _update_estimate(self) -> None:
        sid = self.gallery.selected
        style = self.gallery.styles.get(sid) if sid is not None else None
        text = ""
        if style is not None:
            with contextlib.suppress(GoEnhanceError):  # no estimate shown when unreadable
                est = self._session.cost_estimate(
                    style, self.resolution.value, int(self.duration.value)
                )
                text = f"cost {est}"
        self.estimate.value = text

    # -- internals: the input -------------------------------------------------------------------
    def _listed(self, text: str) -> str | None:
        """The Videos-list entry naming the input ``text`` (relative or absolute), or None."""
        text = str(text).strip()
        if not text or is_url_text(text):
            return None
        if text in self.browser.options:
            return text
        p = Path(text).expanduser()
        with contextlib.suppress(ValueError, OSError):
            rel = p.resolve().relative_to(self._root.resolve()).as_posix()
            if rel in self.browser.options:
                return rel
        return None

    def _browsed(self, change: Mapping[str, Any]) -> None:
        if change["new"] and not self._syncing_browser:
            self.input_path.value = str(change["new"])

    def _input_changed(self, change: Mapping[str, Any]) -> None:
        text = str(change["new"])
        self._syncing_browser = True
        try:
            self.browser.value = self._listed(text)  # the chosen input is highlighted
        finally:
            self._syncing_browser = False
        self._apply_input_length(text)

    def _apply_input_length(self, text: str) -> None:
        """Default the duration to the chosen local input's length and cap its maximum there
        (URL inputs and unreadable files: the 3-30 s range, the value unchanged). Why a local
        file cannot be used is shown in the message line, and cleared once the input is good."""
        text = text.strip()
        length: float | None = None
        hint = ""
        problem = ""
        if text.lower().endswith(VIDEO_SUFFIXES) and not is_url_text(text):
            try:
                ref = self._session.inspect(self._resolve_input())
            except GoEnhanceError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                length = ref.duration
                hint = _length_hint(ref.name, length)
        if problem or self._input_problem:
            self._show_message(problem, error=True)
        self._input_problem = bool(problem)
        self._input_length = length
        cap = default_duration(length)
        with self.duration.hold_sync():
            self.duration.max = cap if cap is not None else MAX_DURATION
            if cap is not None:
                self.duration.value = cap
        self.duration_hint.value = hint

    def _set_duration(self, seconds: int) -> None:
        """Set the duration for :meth:`submit`; refuse one longer than the input."""
        if seconds > self.duration.max and self._input_length is not None:
            msg = (
                f"duration {seconds} s is longer than the input ({self._input_length:.1f} s): "
                f"choose at most {self.duration.max} s"
            )
            self._show_message(f"InputError: {msg}", error=True)
            raise InputError(msg)
        self.duration.value = seconds

    def _uploaded(self, change: Mapping[str, Any]) -> None:
        if not change["new"] or self._resetting_upload:
            return
        try:
            name, data = _first_upload(change["new"])
            dest = save_upload(self._root, name, data)
            problem = self._probe_upload(dest)
            if problem is not None:
                with contextlib.suppress(OSError):
                    dest.unlink()  # a broken upload is not kept, so it is never listed
                self._show_message(f"upload refused: {problem}", error=True)
                return
            self._uploads.append({"name": dest.name, "type": "video/mp4", "size": len(data)})
            self.refresh_files()
            self.input_path.value = dest.relative_to(self._root).as_posix()
            note = f"uploaded {dest.name} ({len(data) / 1e6:.1f} MB)"
            if len(data) > UPLOAD_WARN_BYTES:
                note += " — large files: use the path field or the file list instead"
            self._show_message(note)
        except OSError as exc:
            self._show_message(f"upload failed: {exc}", error=True)
        finally:
            # DECISIONS 17: the bytes never stay in the widget's (saved) state. The value keeps
            # one entry per kept upload (name and size, empty content), so the button's count
            # is the number of clips uploaded here.
            self._resetting_upload = True
            try:
                self.upload.value = tuple(
                    {**u, "content": memoryview(b""), "last_modified": _EPOCH}
                    for u in self._uploads
                )
            finally:
                self._resetting_upload = False

    def _probe_upload(self, path: Path) -> str | None:
        """None when the session accepts ``path`` as an input, else the one-line reason."""
        try:
            self._session.inspect(path)
        except GoEnhanceError as exc:
            return str(exc)
        return None

    def _resolve_input(self) -> str:
        text = str(self.input_path.value).strip()
        if not text:
            raise InputError("choose an input video (path, file list or upload)")
        if is_url_text(text):
            return text
        p = Path(text).expanduser()
        if not p.is_absolute():
            p = self._root / p
        return str(p)

    # -- internals: jobs ------------------------------------------------------------------------
    def _submit_from_controls(self) -> Job:
        try:
            source = self._resolve_input()
            sid = self.gallery.selected
            if sid is None:
                raise InputError("choose a style")
            prompt = self.prompt.value.strip() or None
            job = self._session.transform(
                source,
                sid,
                prompt=prompt,
                duration=int(self.duration.value),
                resolution=self.resolution.value,
                seed=int(self.seed.value),
                force=bool(self.force.value),
            )
        except GoEnhanceError as exc:
            self._show_message(f"{type(exc).__name__}: {exc}", error=True)
            raise
        self._show_message("")
        self._add_job(job, Path(source).name if "://" not in source else source.rsplit("/", 1)[-1])
        return job

    def _submit_clicked(self) -> None:
        with contextlib.suppress(GoEnhanceError):
            self._submit_from_controls()

    def _add_job(self, job: Job, input_name: str) -> None:
        style = self.gallery.styles.get(job.spec.model)
        label = style.label if style is not None else str(job.spec.model)
        sw = StatusWidget(job, session=self._session, compact=True)
        row = JobRow(job, f"{label} · {input_name}", sw)
        sw.on_retry(functools.partial(self._track_retry, row))
        with self._lock:
            self._jobs.append(job)
            self._rows.append(row)
            rows = list(self._rows)
        self.jobs_box.children = tuple(reversed(rows))  # newest first
        self._watch_result(job, row)

    def _track_retry(self, row: JobRow, new_job: Job) -> None:
        """A row's Retry submitted ``new_job``: list it and show its result in the same row."""
        with self._lock:
            self._jobs.append(new_job)
            row.jobs.append(new_job)
        row.clear_result()
        self._watch_result(new_job, row)

    def _watch_result(self, job: Job, row: JobRow) -> None:
        """Show ``job``'s result in ``row`` once, when it is ready.

        A job that is already finished (a cache hit is settled before ``submit`` returns) is
        shown right here, on the caller's thread, so its result is in place when ``submit``
        returns; otherwise the job's event carrying the result (``done``/``cached``) shows it
        (engine thread), with the cached look when the badge says ``cached``.
        """
        shown: set[str] = set()
        once = threading.Lock()

        def show(result: ResultRecord, cached: bool) -> None:
            with once:
                if result.key in shown:
                    return
                shown.add(result.key)
            self._show_result(row, result, cached=cached)
            self._render_credits_later()

        def finished(done: Job) -> None:  # engine thread, or here when already finished
            if done.record is not None:
                show(done.record, done.cached)

        if job.done():  # a cache hit settled in submit: in place before submit returns
            finished(job)
        job.on_finish(finished)  # shown once either way (``shown``)

    def _show_result(self, row: JobRow, result: ResultRecord, *, cached: bool) -> None:
        try:
            data, md = result_bundle(result, notebook_dir=self._root, cached=cached)
        except GoEnhanceError as exc:
            self._show_message(f"{type(exc).__name__}: {exc}", error=True)
            return
        row.show(data, md)

    # -- internals: credits and messages --------------------------------------------------------
    def _render_credits_later(self) -> None:
        # credits() is an HTTP call: never on the engine thread
        threading.Thread(target=self.refresh_credits, name="goenhance-credits", daemon=True).start()

    def _render_credits(self, count: int | None) -> None:
        spend = self._session.spend()
        parts = [f"credits {count}" if count is not None else "credits ?"]
        parts.append(f"session spend {spend}")
        if spend.budget is not None:
            parts.append(f"budget {spend.budget}")
        self.credits.value = " · ".join(parts)

    def _show_message(self, text: str, *, error: bool = False) -> None:
        text = redact_text(text)
        # readable in the light and the dark theme (_theme: contrast-checked swatches)
        style = f"{ERROR.css()};{LABEL_SHAPE}" if error else TEXT.css()
        self.message.value = f'<span style="{style}">{html.escape(text)}</span>' if text else ""


def is_url_text(text: str) -> bool:
    """True for an ``http(s)://`` input text."""
    return re.match(r"^https?://", text) is not None


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
