"""The panel's parts (core ipywidgets): the style :class:`Gallery`, one :class:`JobRow` of the
jobs list, and the panel's scoped style rules (:data:`PANEL_CSS`). Views only: no HTTP, no file
I/O; :class:`goenhance_nb._panel.Panel` composes them and talks to the Session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from goenhance_nb._errors import InputError
from goenhance_nb.widgets._controls import append_bundle, clear_outputs

if TYPE_CHECKING:  # annotations only
    from goenhance_nb._job import Job
    from goenhance_nb._records import Style
    from goenhance_nb.widgets._status import StatusWidget

__all__ = ["JOBS_MAX_HEIGHT", "PANEL_CSS", "Gallery", "JobRow", "no_shrink"]


def no_shrink(**kw: str) -> W.Layout:
    """A layout for a control that keeps its natural width (its row wraps instead)."""
    return W.Layout(flex="0 0 auto", width="auto", **kw)


class Gallery(W.Box):
    """Style gallery: one ToggleButton per style (classes ``goenhance-style``,
    ``goenhance-style-<id>``) under an optional thumbnail ``Image``; exactly one selected at a
    time (radio-like: clicking the selected style keeps it)."""

    def __init__(self, on_change: Callable[[int | None], None]) -> None:
        super().__init__(layout=W.Layout(flex_flow="row wrap"))
        self.add_class("goenhance-gallery")
        self.buttons: dict[int, W.ToggleButton] = {}
        self.images: dict[int, W.Image] = {}
        self.styles: dict[int, Style] = {}
        self._on_change = on_change
        self._busy = False
        self.selected: int | None = None

    def set_styles(self, styles: Sequence[Style]) -> None:
        cards = []
        self.buttons.clear()
        self.images.clear()
        self.styles = {s.id: s for s in styles}
        for s in styles:
            label = f"{s.label} ★VIP" if s.is_vip else s.label
            btn = W.ToggleButton(
                description=label,
                tooltip=f"{s.label} (id {s.id}, {s.version})",
                layout=W.Layout(width="140px"),
                _dom_classes=["goenhance-style", f"goenhance-style-{s.id}"],
            )
            btn.observe(lambda ch, sid=s.id: self._toggled(sid, ch["new"]), names="value")
            img = W.Image(
                format="jpeg",
                layout=W.Layout(width="140px", height="79px", display="none"),
                _dom_classes=["goenhance-style-preview"],
            )
            self.buttons[s.id] = btn
            self.images[s.id] = img
            cards.append(W.VBox([img, btn], layout=W.Layout(width="146px", margin="0 6px 6px 0")))
        self.children = cards

    def set_preview(self, style_id: int, data: bytes | None) -> None:
        img = self.images.get(style_id)
        if img is None or not data:
            return
        with img.hold_sync(), img.layout.hold_sync():
            img.value = data
            img.layout.display = None

    def select(self, style_id: int | None) -> None:
        if style_id is not None and style_id not in self.buttons:
            raise InputError(f"unknown style id {style_id}")
        self._busy = True
        try:
            for sid, btn in self.buttons.items():
                btn.value = sid == style_id
                btn.button_style = "primary" if sid == style_id else ""
        finally:
            self._busy = False
        self.selected = style_id
        self._on_change(style_id)

    def _toggled(self, sid: int, value: bool) -> None:
        if self._busy:
            return
        if value:
            self.select(sid)
        elif self.selected == sid:
            self.select(sid)  # radio-like: clicking the selected style keeps it selected


#: The panel's own style rules, all under ``.goenhance-panel`` (shipped in one ``HTML``
#: widget). A job row's result is a small thumbnail player until the row's "Larger" button
#: adds ``goenhance-expanded`` to it; the backend label and the "Ready" toast of a row's
#: status are not repeated in the rows (the header shows the backend, the row its result).
PANEL_CSS = """<style>
.goenhance-panel .goenhance-job-result video { width: 160px; max-width: 100%; height: auto; }
.goenhance-panel .goenhance-job-result.goenhance-expanded video { width: 480px; }
.goenhance-panel .goenhance-job .goenhance-status .goenhance-backend,
.goenhance-panel .goenhance-job .goenhance-status .goenhance-toast { display: none !important; }
.goenhance-panel .goenhance-job { border-bottom: 1px solid var(--jp-border-color2, #e0e0e0); }
</style>"""
#: Height of the jobs area; more rows scroll inside it.
JOBS_MAX_HEIGHT = "420px"


class JobRow(W.VBox):
    """One job of the panel: ``Style · input`` and the compact :class:`StatusWidget` on one
    line, and below them the job's own result (a thumbnail player; ``expand_button`` toggles
    the full-size player). A Retry in the row follows the new job in the same row."""

    def __init__(self, job: Job, title: str, status: StatusWidget) -> None:
        self.jobs: list[Job] = [job]
        self.status = status
        self.title = W.Label(
            title,
            tooltip=title,
            layout=W.Layout(flex="0 1 auto", max_width="100%", margin="0 8px 0 0"),
            _dom_classes=["goenhance-job-title"],
        )
        status.layout.flex = "1 1 320px"  # beside the title, or below it when narrow
        status.layout.min_width = "0"
        self.result = W.Output(
            layout=W.Layout(display="none"),
            _dom_classes=["goenhance-panel-result", "goenhance-job-result"],
        )
        self.expand_button = W.ToggleButton(
            value=False,
            description="Larger",
            icon="expand",
            tooltip="show the full-size player",
            layout=W.Layout(width="auto", display="none"),
            _dom_classes=["goenhance-expand"],
        )
        self.expand_button.observe(lambda ch: self._expand(bool(ch["new"])), names="value")
        super().__init__(
            [
                W.HBox(
                    [self.title, status],
                    layout=W.Layout(align_items="center", flex_flow="row wrap", width="100%"),
                ),
                W.HBox(
                    [self.expand_button, self.result],
                    layout=W.Layout(align_items="flex-start", flex_flow="row wrap"),
                ),
            ],
            layout=W.Layout(padding="2px 0", flex="0 0 auto"),  # rows scroll, never squeeze
            _dom_classes=["goenhance-job"],
        )

    @property
    def finished(self) -> bool:
        """True when the job the row follows now has ended (its last retry, if any)."""
        job = self.status.job
        return job is not None and job.done()

    def show(self, data: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
        """Show one result in the row (replacing an earlier one: a retry's)."""
        clear_outputs(self.result)
        append_bundle(self.result, dict(data), dict(metadata))
        self.result.layout.display = None
        self.expand_button.layout.display = None

    def clear_result(self) -> None:
        clear_outputs(self.result)
        self.result.layout.display = "none"
        self.expand_button.layout.display = "none"

    def _expand(self, on: bool) -> None:
        if on:
            self.result.add_class("goenhance-expanded")
        else:
            self.result.remove_class("goenhance-expanded")
        self.expand_button.description = "Smaller" if on else "Larger"
        self.expand_button.icon = "compress" if on else "expand"

    def close(self) -> None:
        """Close the row's widgets (the jobs go on)."""
        self.status.close()
        super().close()
