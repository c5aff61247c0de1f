"""No function in the package is more complex than radon's grade C (cyclomatic complexity
<= 20), outside the simulator's render kernels in ``sim/media.py`` (issue 13)."""

from __future__ import annotations

from pathlib import Path

from radon.complexity import cc_visit

PKG = Path(__file__).resolve().parent.parent / "goenhance_nb"
LIMIT = 20
EXEMPT = {PKG / "sim" / "media.py"}


def test_no_function_above_grade_c() -> None:
    too_complex = []
    for path in sorted(PKG.rglob("*.py")):
        if path in EXEMPT:
            continue
        for block in cc_visit(path.read_text(encoding="utf-8")):
            if not hasattr(block, "methods") and block.complexity > LIMIT:
                rel = path.relative_to(PKG.parent)
                too_complex.append(f"{rel}:{block.lineno} {block.fullname} ({block.complexity})")
    assert not too_complex, "cyclomatic complexity above 20:\n" + "\n".join(too_complex)
