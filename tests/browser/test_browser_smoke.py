"""Smoke test of the browser harness itself: JupyterLab + a kernel + ipywidgets in Chromium."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from browserkit import (
    JupyterServer,
    open_notebook,
    outputs_text,
    run_all_and_wait,
    screenshot,
    write_notebook,
)

pytestmark = pytest.mark.browser


def test_lab_renders_widget_and_text(
    jupyter: Callable[..., JupyterServer], page: Any, artifact_name: str
) -> None:
    server = jupyter("lab")
    write_notebook(
        server.root / "smoke.ipynb",
        [
            "import ipywidgets as w\nslider = w.IntSlider(value=42, min=0, max=99, description='Knob')\n"
            "slider.add_class('smoke-slider')\nslider",
            "print('hello from the ' + 'kernel')",
        ],
    )
    open_notebook(page, server, "smoke.ipynb")
    run_all_and_wait(page)

    slider = page.locator(".smoke-slider")
    slider.wait_for(state="visible", timeout=30_000)
    # The rendered slider shows its description and its value (a widget view, not a repr).
    assert "Knob" in slider.inner_text()
    assert page.locator(".smoke-slider .widget-readout").inner_text().strip() == "42"
    assert "IntSlider(" not in outputs_text(page)
    assert "hello from the kernel" in outputs_text(page)
    screenshot(page, artifact_name)
