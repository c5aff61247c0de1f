"""The notebook layer calls the core's typed API and never probes it with ``getattr`` (issue 13).

``getattr`` stays allowed on objects that are not core objects: argparse namespaces, a YAML
error, dataclass fields read by name (RunArgs, Settings), and traitlets traits (``self``).
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "goenhance_nb"
NOTEBOOK_LAYER = [
    *sorted((PKG / "_magics").glob("*.py")),
    *sorted((PKG / "widgets").glob("*.py")),
    PKG / "_panel.py",
    PKG / "_display.py",
    PKG / "_outputs.py",
    PKG / "_progress.py",
    PKG / "_sweep.py",
]
#: receivers getattr may read from, and why
ALLOWED = {
    "self",  # traitlets traits by name
    "ns",  # argparse namespaces
    "exc",  # PyYAML's error fields (PyYAML ships no types)
    "line_args",  # RunArgs dataclass fields by name
    "defaults",  # RunArgs dataclass fields by name
    "settings",  # Settings dataclass fields by name (config table)
}


def test_no_getattr_probing_in_the_notebook_layer() -> None:
    probes = []
    for path in NOTEBOOK_LAYER:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr")
            ):
                target = node.args[0] if node.args else None
                name = target.id if isinstance(target, ast.Name) else ast.unparse(target or node)
                if name not in ALLOWED:
                    probes.append(
                        f"{path.relative_to(PKG.parent)}:{node.lineno} {node.func.id}({name}, ...)"
                    )
    assert not probes, "probing of core objects:\n" + "\n".join(probes)
