"""Colours: every text we draw meets WCAG 4.5:1 on JupyterLab's light and dark theme (issue 17.12)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from goenhance_nb._lifecycle import Badge
from goenhance_nb._theme import (
    MIN_CONTRAST,
    MUTED,
    SIMULATED,
    SUBMIT,
    SWATCHES,
    THEMES,
    Swatch,
    compare_styles,
    contrast,
    flatten,
    grid_style,
    page_backgrounds,
    parse_colour,
    resolve,
    widget_style,
)


@pytest.mark.parametrize(
    ("text", "background", "expected"),
    [
        ("#000000", "#ffffff", 21.0),
        ("#ffffff", "#ffffff", 1.0),
        ("white", "#fdd835", 1.40),  # the old SIMULATED badge in the dark theme
        ("#767676", "#ffffff", 4.54),  # the classic lightest grey that passes on white
        ("rgba(0,0,0,.54)", "#ffffff", 4.59),  # translucent text is laid over its background
        ("rgba(255,255,255,.54)", "#111111", 6.03),
        ("#ffffff", "rgba(0,0,0,0)", 1.0),  # a transparent background shows the (white) page
    ],
)
def test_contrast_table(text: str, background: str, expected: float) -> None:
    assert contrast(text, background) == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize(
    ("value", "rgba"),
    [
        ("#fff", (255, 255, 255, 1)),
        ("#1565C0", (21, 101, 192, 1)),
        ("rgb(1, 2, 3)", (1, 2, 3, 1)),
        ("rgba(255, 255, 255, 0.87)", (255, 255, 255, 0.87)),
        ("rgb(0 0 0 / 54%)", (0, 0, 0, 0.54)),
        ("transparent", (0, 0, 0, 0)),
    ],
)
def test_parse_colour(value: str, rgba: tuple[float, ...]) -> None:
    assert parse_colour(value) == pytest.approx(rgba)


def test_flatten_lays_translucent_backgrounds_over_the_next() -> None:
    assert flatten([]) == "rgb(255.0, 255.0, 255.0)"
    assert flatten(["rgba(0, 0, 0, 0.5)", "rgb(17, 17, 17)"]) == "rgb(8.5, 8.5, 8.5)"
    assert flatten(["#fde68a", "rgb(17, 17, 17)"]) == "rgb(253.0, 230.0, 138.0)"


def test_parse_colour_refuses_what_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="not a colour"):
        parse_colour("var(--jp-ui-font-color1)")


def test_resolve_uses_the_theme_then_the_fallback() -> None:
    v = "var(--jp-ui-font-color2, #616161)"
    assert resolve(v, THEMES["light"]) == "rgba(0,0,0,.54)"
    assert resolve(v, THEMES["none"]) == "#616161"
    assert resolve("#123456", THEMES["dark"]) == "#123456"
    with pytest.raises(ValueError, match="no fallback"):
        resolve("var(--nope)", {})


def _cases() -> list[tuple[str, str, str, str]]:
    """(what, theme, text, background) for every badge, swatch and the SIMULATED label."""
    out = []
    for theme_name, theme in THEMES.items():
        for badge in Badge:
            bg, fg = badge.colours
            out.append((f"badge {badge.value}", theme_name, fg, bg))
        for name, sw in SWATCHES.items():
            bgs = [sw.background] if sw.background else list(page_backgrounds(theme))
            for bg in bgs:
                out.append((name, theme_name, resolve(sw.text, theme), resolve(bg, theme)))
    return out


@pytest.mark.parametrize(("what", "theme", "text", "background"), _cases())
def test_every_text_we_draw_meets_4_5_to_1(
    what: str, theme: str, text: str, background: str
) -> None:
    pages = page_backgrounds(THEMES[theme])
    for page in pages:  # a label's own background is opaque; the page only shows through alpha
        ratio = contrast(text, background, page)
        assert ratio >= MIN_CONTRAST, f"{what} on {theme}: {text} on {background} = {ratio:.2f}"


def test_simulated_label_is_dark_on_yellow_everywhere() -> None:
    for theme in THEMES.values():
        assert contrast(resolve(SIMULATED.text, theme), SIMULATED.background or "") >= 6.5


def test_swatch_css_writes_the_plain_colour_first_then_the_variable() -> None:
    css = Swatch("var(--jp-ui-font-color1, #212121)").css()
    assert css == "color:#212121;color:var(--jp-ui-font-color1, #212121)"
    assert SIMULATED.css() == "background:#fde68a;color:#713f12"


def test_widget_style_for_labels_and_buttons() -> None:
    assert widget_style(SIMULATED) == {"background": "#fde68a", "text_color": "#713f12"}
    assert widget_style(SUBMIT, button=True) == {"button_color": "#2e7d32", "text_color": "#ffffff"}
    assert widget_style(MUTED) == {"text_color": "var(--jp-ui-font-color2, #616161)"}


def test_layout_styles() -> None:
    row, fig, video = compare_styles()
    assert "flex-wrap:nowrap" in row and "max-width:50%" in fig and "width:100%" in video
    g = grid_style(3)
    assert "gap:16px" in g and "auto-fill" in g and "/ 3" in g and "240px" in g
    assert "/ 1" in grid_style(0)


# -- the palettes above are the installed JupyterLab's ---------------------------------------
def _theme_css(name: str) -> str:
    roots = [Path(sys.prefix) / "share/jupyter/lab/themes/@jupyterlab"]
    try:
        import jupyterlab

        roots.append(Path(jupyterlab.__file__).parent / "themes/@jupyterlab")
    except ImportError:
        pass
    for root in roots:
        p = root / f"theme-{name}-extension" / "index.css"
        if p.exists():
            return p.read_text()
    pytest.skip(f"JupyterLab's {name} theme CSS is not installed")


def _declared(css: str, var: str) -> str:
    m = re.search(re.escape(var) + r":\s*([^;}]+)", css)
    assert m, var
    value = m.group(1).strip()
    inner = re.match(r"var\(--md-[\w-]+,\s*([^)]+)\)$", value)  # var(--md-grey-900,#212121)
    return inner.group(1) if inner else value


@pytest.mark.parametrize("name", ["light", "dark"])
def test_palettes_match_the_installed_jupyterlab_themes(name: str) -> None:
    css = _theme_css(name)
    for var, ours in THEMES[name].items():
        theirs = _declared(css, var)
        assert parse_colour(theirs) == pytest.approx(parse_colour(ours)), (var, theirs, ours)
