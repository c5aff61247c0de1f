"""One place for the colours and CSS of everything goenhance_nb draws (pure; no I/O).

Text we draw on the page takes JupyterLab's theme variables (``var(--jp-ui-font-color1)``,
``var(--jp-error-color1)`` ...) so it follows the light and the dark theme, each with a plain
fallback for viewers without them (GitHub, nbviewer, an HTML export: white page, dark text).
Labels that carry their own background (the state badges, SIMULATED, cached, notices) use a
fixed pair of colours whose contrast is computed here, so they read the same on any page.

:func:`contrast` is the WCAG 2 contrast ratio; :data:`THEMES` holds the JupyterLab 4 light and
dark theme values a check needs (read from ``jupyterlab/themes/@jupyterlab/theme-*-extension/
index.css``; tests/test_theme.py compares them with the installed files). Every :class:`Swatch`
here and every :class:`~goenhance_nb._lifecycle.Badge` meets 4.5:1 on both themes
(tests/test_theme.py, and tests/browser/test_browser_theme.py from the browser's computed
styles).

Inline styles are written twice, plain colour first and the theme variable second
(:meth:`Swatch.css`): a sanitizer that drops ``var()`` (a notebook opened untrusted) keeps the
plain one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "CACHED",
    "CAPTION_STYLE",
    "DARK",
    "ERROR",
    "LIGHT",
    "MIN_CONTRAST",
    "MUTED",
    "NOTICE",
    "RETRY",
    "SIMULATED",
    "SIMULATED_LABEL",
    "SUBMIT",
    "SWATCHES",
    "TEXT",
    "THEMES",
    "Swatch",
    "compare_styles",
    "contrast",
    "flatten",
    "grid_style",
    "page_backgrounds",
    "parse_colour",
    "resolve",
    "widget_style",
]

MIN_CONTRAST = 4.5
"""WCAG 2 AA for normal text."""

# JupyterLab 4 theme values (theme-light-extension / theme-dark-extension index.css).
LIGHT: Mapping[str, str] = {
    "--jp-layout-color0": "#ffffff",
    "--jp-layout-color1": "#ffffff",
    "--jp-layout-color2": "#eeeeee",
    "--jp-ui-font-color0": "#000000",
    "--jp-ui-font-color1": "rgba(0,0,0,.87)",
    "--jp-ui-font-color2": "rgba(0,0,0,.54)",
    "--jp-content-font-color1": "rgba(0,0,0,.87)",
    "--jp-error-color1": "#d32f2f",
    "--jp-warn-color0": "#e65100",
    "--jp-brand-color1": "#1976d2",
}
DARK: Mapping[str, str] = {
    "--jp-layout-color0": "#111111",
    "--jp-layout-color1": "#212121",
    "--jp-layout-color2": "#424242",
    "--jp-ui-font-color0": "#ffffff",
    "--jp-ui-font-color1": "rgba(255,255,255,.87)",
    "--jp-ui-font-color2": "rgba(255,255,255,.54)",
    "--jp-content-font-color1": "#ffffff",
    "--jp-error-color1": "#f44336",
    "--jp-warn-color0": "#f57c00",
    "--jp-brand-color1": "#2196f3",
}
THEMES: Mapping[str, Mapping[str, str]] = {"light": LIGHT, "dark": DARK, "none": {}}
"""``none``: a viewer without JupyterLab's variables (the fallbacks apply, on a white page)."""

_PAGE_VARS = ("--jp-layout-color0", "--jp-layout-color1")


def page_backgrounds(theme: Mapping[str, str]) -> tuple[str, ...]:
    """The backgrounds our outputs sit on in ``theme`` (notebook and panel); white without one."""
    return tuple(theme.get(v, "#ffffff") for v in _PAGE_VARS)


@dataclass(frozen=True)
class Swatch:
    """A text colour, on its own ``background`` or (None) on the page; CSS values, which may be
    ``var(--jp-..., fallback)``."""

    text: str
    background: str | None = None

    def css(self) -> str:
        """Inline declarations: the plain fallback first, then the theme variable."""
        out = []
        for prop, value in (("background", self.background), ("color", self.text)):
            if value is None:
                continue
            plain = resolve(value, {})
            out.append(f"{prop}:{plain}")
            if plain != value:
                out.append(f"{prop}:{value}")
        return ";".join(out)


def _var(name: str, fallback: str) -> str:
    return f"var({name}, {fallback})"


TEXT = Swatch(_var("--jp-ui-font-color1", "#212121"))
"""Body text of our outputs (captions, hints)."""
MUTED = Swatch(_var("--jp-ui-font-color2", "#616161"))
"""Secondary text (placeholders, permission state, panel status line)."""
ERROR = Swatch("#991b1b", "#fee2e2")
"""An error message, on its own pale red (``--jp-error-color1`` text is 4.4:1 on the dark
theme's ``--jp-layout-color1``)."""
SIMULATED = Swatch("#713f12", "#fde68a")
"""The SIMULATED label (dark brown on pale yellow, on every theme)."""
CACHED = Swatch("#3730a3", "#e0e7ff")
"""The cached label."""
NOTICE = Swatch("#7c2d12", "#ffedd5")
"""A warning notice label (``--jp-warn-color0`` text is 3.8:1 on white: not used for text)."""

SUBMIT = Swatch("#ffffff", "#2e7d32")
"""A button that starts something (JupyterLab's ``success`` green with white is 4.1:1 in light,
2.8:1 in dark)."""
RETRY = Swatch("#ffffff", "#b45309")
"""A retry button (``warning`` orange with white is 2.7:1 in light)."""

SWATCHES: Mapping[str, Swatch] = {
    "text": TEXT,
    "muted": MUTED,
    "error": ERROR,
    "simulated": SIMULATED,
    "cached": CACHED,
    "notice": NOTICE,
    "submit": SUBMIT,
    "retry": RETRY,
}
"""Every named swatch (the names the lead's literal -> theme list uses)."""


def widget_style(swatch: Swatch, *, button: bool = False) -> dict[str, str]:
    """The ipywidgets ``style`` for ``swatch``: ``{"background"|"button_color", "text_color"}``
    (a Label/HTML, or a Button with ``button=True``; no ``button_style`` with it)."""
    out = {"text_color": swatch.text}
    if swatch.background is not None:
        out["button_color" if button else "background"] = swatch.background
    return out


LABEL_SHAPE = "padding:0 4px;border-radius:3px"


def compare_styles() -> tuple[str, str, str]:
    """``(row, figure, video)`` inline styles of the before/after view: one row, each side at
    most half of it, each video the full width of its side (scaled to fit, never stacked)."""
    row = "display:flex;flex-wrap:nowrap;gap:8px;align-items:flex-start;width:100%"
    figure = "margin:0;flex:1 1 0;min-width:0;max-width:50%;display:flex;flex-direction:column"
    video = "width:100%;height:auto;display:block"
    return row, figure, video


GRID_MIN_CELL_PX = 240
GRID_GAP_PX = 16


def grid_style(columns: int) -> str:
    """The grid: at most ``columns`` per row, each cell at least :data:`GRID_MIN_CELL_PX` wide
    (fewer per row, down to one, on narrow widths), :data:`GRID_GAP_PX` apart."""
    n = max(1, int(columns))
    gap = GRID_GAP_PX
    cell = f"max({GRID_MIN_CELL_PX}px, calc((100% - {(n - 1) * gap}px) / {n}))"
    return (
        f"display:grid;gap:{gap}px;align-items:start;"
        f"grid-template-columns:repeat(auto-fill, minmax(min(100%, {cell}), 1fr))"
    )


# -- contrast ---------------------------------------------------------------------------------
_VAR = re.compile(r"^var\(\s*(--[\w-]+)\s*(?:,\s*(.+))?\)$")
_NAMED = {"white": "#ffffff", "black": "#000000"}


def resolve(value: str, theme: Mapping[str, str]) -> str:
    """``value`` with ``var(--x, fallback)`` replaced by the theme's ``--x`` (or the fallback).

    :raises ValueError: a variable the theme lacks and that has no fallback.
    """
    value = value.strip()
    m = _VAR.match(value)
    if m is None:
        return value
    name, fallback = m.group(1), m.group(2)
    if name in theme:
        return resolve(theme[name], theme)
    if fallback is None:
        raise ValueError(f"{name} is not set and has no fallback")
    return resolve(fallback, theme)


RGBA = tuple[float, float, float, float]


def parse_colour(value: str) -> RGBA:
    """``#rgb``, ``#rrggbb``, ``rgb()``, ``rgba()``, white/black/transparent -> (r, g, b, a), each
    channel 0-255, alpha 0-1. :raises ValueError: anything else."""
    v = _NAMED.get(value.strip().lower(), value.strip().lower())
    if v == "transparent":
        return (0.0, 0.0, 0.0, 0.0)
    if v.startswith("#") and len(v) in (4, 7):
        h = v[1:] if len(v) == 7 else "".join(c * 2 for c in v[1:])
        return (float(int(h[0:2], 16)), float(int(h[2:4], 16)), float(int(h[4:6], 16)), 1.0)
    m = re.match(r"^rgba?\(([^)]*)\)$", v)
    if m:
        parts = [p for p in re.split(r"[\s,/]+", m.group(1)) if p]
        if len(parts) in (3, 4):
            r, g, b = (float(p) for p in parts[:3])
            alpha = parts[3] if len(parts) == 4 else "1"
            a = float(alpha.rstrip("%")) / (100 if alpha.endswith("%") else 1)
            return (r, g, b, a)
    raise ValueError(f"not a colour: {value!r}")


def _over(top: RGBA, bottom: RGBA) -> RGBA:
    a = top[3]
    return (
        top[0] * a + bottom[0] * (1 - a),
        top[1] * a + bottom[1] * (1 - a),
        top[2] * a + bottom[2] * (1 - a),
        1.0,
    )


def _luminance(c: RGBA) -> float:
    def lin(ch: float) -> float:
        s = ch / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    return 0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])


def flatten(layers: list[str], page: str = "#ffffff") -> str:
    """The opaque colour seen through ``layers`` (CSS background colours, the topmost first)
    laid over ``page``, as ``rgb(r, g, b)``."""
    colour = parse_colour(page)
    for layer in reversed(layers):
        colour = _over(parse_colour(layer), colour)
    return f"rgb({colour[0]:.1f}, {colour[1]:.1f}, {colour[2]:.1f})"


def contrast(text: str, background: str, page: str = "#ffffff") -> float:
    """WCAG 2 contrast ratio (1-21) of ``text`` on ``background``; a translucent background is
    laid over ``page``, translucent text over the result. CSS colour strings (no ``var()``)."""
    bg = _over(parse_colour(background), parse_colour(page))
    fg = _over(parse_colour(text), bg)
    hi, lo = sorted((_luminance(fg), _luminance(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


# -- styles built from the swatches (after resolve(), which they use) ----------------------
SIMULATED_LABEL = (
    f' <span class="goenhance-simulated" style="{SIMULATED.css()};{LABEL_SHAPE};'
    'font-weight:600">SIMULATED</span>'
)
"""The SIMULATED label in HTML outputs (result caption, placeholder, credits and styles lines)."""
CAPTION_STYLE = (
    "font-size:var(--jp-ui-font-size1, 13px);line-height:1.4;margin-top:4px;"
    "overflow-wrap:anywhere;" + TEXT.css()
)
"""The caption under a result video."""
