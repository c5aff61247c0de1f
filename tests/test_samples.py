"""sample_clip(): a decodable, deterministic, moving test pattern."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import av
import numpy as np
import pytest

import goenhance_nb._samples as samples
from goenhance_nb._samples import sample_clip


def _atoms(data: bytes) -> list[str]:
    names, i = [], 0
    while i + 8 <= len(data):
        size = int.from_bytes(data[i : i + 4], "big")
        names.append(data[i + 4 : i + 8].decode("latin-1"))
        if size < 8:
            break
        i += size
    return names


def test_sample_clip_is_browser_friendly_h264(tmp_path: Path) -> None:
    path = sample_clip(tmp_path / "a.mp4", seconds=2.0, width=320, height=240, fps=24)
    assert path == tmp_path / "a.mp4" and path.is_file()
    with av.open(str(path)) as c:
        vs = c.streams.video[0]
        assert vs.codec_context.name == "h264"
        assert vs.codec_context.pix_fmt == "yuv420p"
        assert (vs.codec_context.width, vs.codec_context.height) == (320, 240)
        assert float(vs.average_rate) == 24
        frames = [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(vs)]
    assert len(frames) == 48
    atoms = _atoms(path.read_bytes())
    assert atoms.index("moov") < atoms.index("mdat")
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temp file left behind


def test_sample_clip_moves_and_is_colourful(tmp_path: Path) -> None:
    path = sample_clip(tmp_path / "m.mp4", seconds=1.0, fps=10)
    with av.open(str(path)) as c:
        frames = [
            f.to_ndarray(format="rgb24").astype(np.int16)
            for f in itertools.islice(c.decode(video=0), 10)
        ]
    assert float(np.abs(frames[0] - frames[9]).mean()) > 10  # it moves
    first = frames[0]
    assert float(first.std()) > 40  # not flat
    assert float(np.abs(first[..., 0] - first[..., 2]).mean()) > 20  # not grey


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    a = sample_clip(tmp_path / "a.mp4", seconds=1.0)
    b = sample_clip(tmp_path / "b.mp4", seconds=1.0)
    c = sample_clip(tmp_path / "c.mp4", seconds=1.0, seed=1)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_same_arguments_identical_across_calls_and_processes(tmp_path: Path) -> None:
    """Notebooks write their clip with sample_clip on every execution: the bytes must not change,
    or every execution is a new (paid) transformation. Swscale in PyAV 18.1 made this flaky."""
    import hashlib
    import subprocess
    import sys

    def sha(p: Path) -> str:
        return hashlib.sha256(p.read_bytes()).hexdigest()

    in_process = {sha(sample_clip(tmp_path / f"in{i}.mp4")) for i in range(3)}
    code = (
        "import sys, hashlib; from goenhance_nb._samples import sample_clip; "
        "print(hashlib.sha256(sample_clip(sys.argv[1]).read_bytes()).hexdigest())"
    )
    across = {
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / f"p{i}.mp4")],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        for i in range(2)
    }
    assert len(in_process) == 1
    assert across == in_process


def test_existing_identical_clip_is_not_rewritten(tmp_path: Path) -> None:
    path = sample_clip(tmp_path / "clip.mp4", seconds=1.0)
    before = path.stat()
    again = sample_clip(tmp_path / "clip.mp4", seconds=1.0)
    after = again.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    sample_clip(tmp_path / "clip.mp4", seconds=1.0, seed=2)  # other content: replaced
    assert path.stat().st_ino != before.st_ino


def test_default_path_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(samples.tempfile, "gettempdir", lambda: str(tmp_path))
    p1 = sample_clip(seconds=0.5, width=64, height=48, fps=8)
    assert p1.parent == tmp_path / "goenhance_nb-samples"
    mtime = p1.stat().st_mtime_ns
    p2 = sample_clip(seconds=0.5, width=64, height=48, fps=8)
    assert p2 == p1 and p2.stat().st_mtime_ns == mtime
    assert sample_clip(seconds=0.5, width=64, height=48, fps=8, seed=3) != p1


@pytest.mark.parametrize("kw", [{"width": 321}, {"height": 0}, {"fps": 0}, {"seconds": 0}])
def test_bad_arguments(tmp_path: Path, kw: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        sample_clip(tmp_path / "x.mp4", **kw)
    assert not (tmp_path / "x.mp4").exists()


def test_samples_imports_only_av_numpy_and_stdlib() -> None:
    tree = ast.parse(Path(samples.__file__).read_text())
    mods = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    mods |= {
        n.module.split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module and not n.level
    }
    assert mods <= {
        "av",
        "numpy",
        "math",
        "os",
        "tempfile",
        "uuid",
        "fractions",
        "pathlib",
        "__future__",
    }
