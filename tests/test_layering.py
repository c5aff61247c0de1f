"""Import rules from docs/ARCHITECTURE.md, checked on the source with ``ast``.

(a) ``goenhance_nb.sim`` is a separate world: nothing outside it imports it, and it imports
    nothing of ``goenhance_nb`` outside itself.
(b) only ``_client.py`` and ``_transport.py`` import ``httpx``.
(c) imports among the private modules point down the layer order below (the ARCHITECTURE.md
    layout, top to bottom). Modules that do not exist yet are skipped. Imports under
    ``if TYPE_CHECKING:`` are annotations only and are exempt from (c) (not from (a)/(b)).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "goenhance_nb"

# Top to bottom, as laid out in docs/ARCHITECTURE.md. A module may import only modules that
# come later in this list. A private module missing from the list counts as a top-level entry
# point (like ``_demo``): it may import anything, and no listed module may import it.
LAYERS: list[str] = [
    "__main__",
    "_demo",
    "_magics",
    "_panel",
    "_sweep",
    "_progress",
    "widgets",
    "_display",
    "_session",
    "_repro",
    "_outputs",
    "_frontend",
    "_simproc",
    "_simcontrol",
    "_engine",
    "_shared",
    "_job",
    "_inputs",
    "_cache",
    "_ledger",
    "_store",
    "_jsondisk",
    "_usage",
    "_sync",
    "_client",
    "_transport",
    "_keys",
    "_records",
    "_lifecycle",
    "_settings",
    "_errors",
    "_fsutil",
    "_samples",
    "_theme",
]
HTTPX_ALLOWED = {"goenhance_nb._client", "goenhance_nb._transport"}


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted target
    line: int
    type_only: bool


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path) -> list[Import]:
    """Every import in ``path`` as absolute module names (``from x import y`` gives x and x.y)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                out.append(Import(alias.name, node.lineno, type_only))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            out.append(Import(base, node.lineno, type_only))
            for alias in node.names:
                out.append(Import(f"{base}.{alias.name}", node.lineno, type_only))
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return out


def all_modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def layer_of(dotted: str) -> str | None:
    """``goenhance_nb._client`` -> ``_client``; ``goenhance_nb.widgets._status`` -> ``widgets``."""
    parts = dotted.split(".")
    if len(parts) < 2 or parts[0] != "goenhance_nb":
        return None
    return parts[1] if parts[1] in LAYERS else None


def test_the_package_is_found() -> None:
    names = {_module_name(p) for p in all_modules()}
    assert {"goenhance_nb._client", "goenhance_nb._errors"} <= names


def test_sim_is_a_separate_world() -> None:
    bad = []
    for path in all_modules():
        mod = _module_name(path)
        in_sim = mod == "goenhance_nb.sim" or mod.startswith("goenhance_nb.sim.")
        for imp in imports_of(path):
            target_ours = imp.module == "goenhance_nb" or imp.module.startswith("goenhance_nb.")
            target_sim = imp.module == "goenhance_nb.sim" or imp.module.startswith(
                "goenhance_nb.sim."
            )
            if in_sim and target_ours and not target_sim:
                bad.append(f"{mod}:{imp.line} imports {imp.module}")
            if not in_sim and target_sim:
                bad.append(f"{mod}:{imp.line} imports {imp.module}")
    assert not bad, "sim/ must stay separate:\n" + "\n".join(bad)


def test_only_client_and_transport_import_httpx() -> None:
    bad = [
        f"{_module_name(p)}:{imp.line}"
        for p in all_modules()
        if not _module_name(p).startswith("goenhance_nb.sim")
        for imp in imports_of(p)
        if (imp.module == "httpx" or imp.module.startswith("httpx."))
        and _module_name(p) not in HTTPX_ALLOWED
    ]
    assert not bad, "httpx imported outside _client/_transport: " + ", ".join(bad)


def test_imports_point_down() -> None:
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    checked = 0
    for path in all_modules():
        src = layer_of(_module_name(path))
        if src is None:
            continue
        checked += 1
        for imp in imports_of(path):
            if imp.type_only:
                continue
            dst = layer_of(imp.module)
            if dst is None or dst == src:
                continue
            if rank[dst] <= rank[src]:
                bad.append(
                    f"{_module_name(path)}:{imp.line} imports {imp.module} ({src} -> {dst} points up)"
                )
    assert checked >= 7
    assert not bad, "\n".join(sorted(set(bad)))


def test_nothing_imports_an_unlisted_module() -> None:
    unlisted = {p.stem for p in PKG.glob("_*.py")} - set(LAYERS) - {"__init__"}
    bad = [
        f"{_module_name(p)}:{imp.line} imports {imp.module}"
        for p in all_modules()
        if layer_of(_module_name(p)) is not None
        for imp in imports_of(p)
        if not imp.type_only
        and imp.module.split(".")[:2] in [["goenhance_nb", u] for u in unlisted]
    ]
    assert not bad, (
        "unlisted modules are top-level entry points; place them in LAYERS first:\n"
        + "\n".join(bad)
    )


@pytest.mark.parametrize(
    ("source", "expected_bad"),
    [
        ("from goenhance_nb._magics import x\n", True),
        ("from . import _engine\n", True),
        ("from ._errors import GoEnhanceError\n", False),
        ("import goenhance_nb.sim\n", True),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from goenhance_nb._engine import Job\n",
            False,
        ),
        ("def f():\n    from goenhance_nb._session import get_session\n", True),
    ],
)
def test_checker_catches_violations(
    tmp_path: Path, source: str, expected_bad: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checker itself can fail: a fake _client.py with an upward import is flagged."""
    fake_pkg = tmp_path / "goenhance_nb"
    fake_pkg.mkdir()
    (fake_pkg / "__init__.py").write_text("")
    (fake_pkg / "_client.py").write_text(source)
    monkeypatch.setattr(__import__(__name__), "PKG", fake_pkg)
    rank = {name: i for i, name in enumerate(LAYERS)}
    imps = [i for i in imports_of(fake_pkg / "_client.py") if not i.type_only]
    up = any(
        (d := layer_of(i.module)) is not None and d != "_client" and rank[d] <= rank["_client"]
        for i in imps
    )
    sim = any(i.module.startswith("goenhance_nb.sim") for i in imps)
    assert (up or sim) is expected_bad


def test_load_ext_stays_cheap() -> None:
    """`%load_ext goenhance_nb` imports the magics only: no HTTP client, no video library, no
    cache database (they load with the first session). Guards issue 15's P6 figure: a helper
    move once pulled diskcache + SQLite into `%load_ext` through the output-naming helpers."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from IPython.core.interactiveshell import InteractiveShell\n"
        "shell = InteractiveShell.instance()\n"
        "before = set(sys.modules)\n"
        "shell.run_line_magic('load_ext', 'goenhance_nb')\n"
        "heavy = {'httpx', 'av', 'numpy', 'diskcache', 'sqlite3', 'ipywidgets', 'yaml', 'fsspec', 's3fs'}\n"
        "print(sorted(heavy & (set(sys.modules) - before)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    ).stdout.strip()
    assert out.splitlines()[-1] == "[]", out
