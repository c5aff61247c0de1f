"""sample_clip(): a small, colourful, moving test-pattern mp4 made with PyAV.

Imports only PyAV and numpy (and the standard library).
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

__all__ = ["sample_clip"]


_LUT_SIZE = 1024
# One period of 0.5 + 0.5 * sin, as uint8, computed with scalar libm (math.sin): numpy's
# vectorised float sin may round the last bit differently depending on an array's memory
# alignment, which made the same arguments give different pixels from call to call.
_SIN8 = np.array(
    [
        round(255.0 * (0.5 + 0.5 * math.sin(2.0 * math.pi * k / _LUT_SIZE)))
        for k in range(_LUT_SIZE)
    ],
    dtype=np.uint8,
)


def _wave(
    pos: NDArray[np.int64], period: int, phase: float, *, cos: bool = False
) -> NDArray[np.uint8]:
    """``255 * (0.5 + 0.5 * sin(2 pi pos / period + phase))`` (or cos) from the table, in
    integer index arithmetic only."""
    shift = round((phase / (2.0 * math.pi) + (0.25 if cos else 0.0)) * _LUT_SIZE)
    idx = (pos * _LUT_SIZE // max(1, period) + shift) % _LUT_SIZE
    return _SIN8[idx]


def _frame(i: int, width: int, height: int, fps: int, rng_phase: float) -> NDArray[np.uint8]:
    """Frame `i`: moving diagonal gradient, a bouncing disc, a sliding square, counter bars.

    Deterministic to the bit: integer arithmetic and a sine table, no vectorised float
    transcendental functions (see :data:`_SIN8`).
    """
    t = i / fps
    x = np.arange(width, dtype=np.int64)[None, :]
    y = np.arange(height, dtype=np.int64)[:, None]
    phase = 2.0 * math.pi * (t / 4.0 + rng_phase)
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[..., 0] = _wave(x, width, phase)
    img[..., 1] = _wave(y, height, -phase * 0.7)
    img[..., 2] = _wave(x + y, width + height, phase * 1.3, cos=True)
    # bouncing disc (centre from scalar math; the mask is exact integer arithmetic)
    cx = round(width * (0.5 + 0.35 * math.sin(2.0 * math.pi * t / 3.0 + rng_phase * 6.0)))
    cy = round(height * (0.5 + 0.3 * math.cos(2.0 * math.pi * t / 2.2)))
    rad = int(min(width, height) * 0.16)
    img[((x - cx) ** 2 + (y - cy) ** 2) < rad * rad] = (255, 230, 26)
    # sliding square
    s = int(min(width, height) * 0.2)
    sx = int((t * width * 0.3 + rng_phase * width) % max(1, width - s))
    sy = int(height * 0.62)
    img[sy : sy + s, sx : sx + s] = (230, 26, 77)
    # frame-counter bars: 8 bits of the frame index as black/white blocks along the top
    bw = max(2, width // 16)
    bh = max(2, height // 16)
    for bit in range(8):
        on = (i >> bit) & 1
        img[0:bh, bit * bw : (bit + 1) * bw] = (255, 255, 255) if on else (0, 0, 0)
    return img


def _yuv420p(rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """RGB -> planar yuv420p (BT.601, limited range), in integer arithmetic.

    Done here rather than with ``VideoFrame.reformat``: swscale in PyAV 18.1 (FFmpeg 8) gave
    slightly different pixels from call to call in one process, so the same arguments made
    different files (and a notebook that writes its clip paid again on every execution).
    """
    r, g, b = (rgb[..., k].astype(np.int32) for k in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
    v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
    h, w = y.shape

    def sub(c: NDArray[np.int32]) -> NDArray[np.int32]:
        out: NDArray[np.int32] = (c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) + 2) >> 2
        return out

    planes = np.concatenate([y.ravel(), sub(u).ravel(), sub(v).ravel()])
    # numpy's stubs type this expression as Any. Left exactly as it was: sample_clip's byte
    # identity across calls is sensitive to allocation order (tests/test_samples.py).
    return np.clip(planes, 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)  # type: ignore[no-any-return]


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


def _default_path(seconds: float, width: int, height: int, fps: int, seed: int) -> Path:
    base = Path(tempfile.gettempdir()) / "goenhance_nb-samples"
    base.mkdir(parents=True, exist_ok=True)
    return base / f"sample-{seconds:g}s-{width}x{height}-{fps}fps-seed{seed}.mp4"


def sample_clip(
    path: str | os.PathLike[str] | None = None,
    *,
    seconds: float = 4.0,
    width: int = 320,
    height: int = 240,
    fps: int = 24,
    seed: int = 0,
) -> Path:
    """Write a colourful moving test-pattern clip and return its path.

    The clip is H.264 (libx264), yuv420p, `+faststart` mp4 with `round(seconds * fps)` frames.
    It is written to a temp file beside `path` and moved into place, so a reader never sees a
    half-written file. With `path=None` it goes to a per-argument file in the system temp dir
    (``<tmp>/goenhance_nb-samples/``), reused when it already exists. The same arguments give
    byte-identical files, in one process or across processes (colour conversion in integer
    numpy, single-threaded encoder, bit-exact muxing); an existing file with the same content
    is left untouched, so its mtime (and any hash memo keyed on it) stays valid.

    :raises ValueError: a size that is not a positive even number, `fps` < 1, or `seconds` <= 0.
    :raises OSError: the file cannot be written.
    """
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise ValueError("width and height must be positive even numbers")
    if fps < 1 or seconds <= 0:
        raise ValueError("fps must be >= 1 and seconds > 0")
    if path is None:
        dest = _default_path(seconds, width, height, fps, seed)
        if dest.exists() and dest.stat().st_size > 0:
            return dest
    else:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
    phase = (seed * 0.6180339887) % 1.0
    nframes = max(1, round(seconds * fps))
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with av.open(
            str(tmp),
            "w",
            format="mp4",
            options={"movflags": "+faststart", "fflags": "+bitexact"},
        ) as out:
            stream = out.add_stream("libx264", rate=fps)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuv420p"
            # Constant QP, one thread, no macroblock tree: with CRF rate control the x264 in
            # PyAV 18.1 gave different packets for identical frames from call to call in one
            # process (its lookahead/mbtree path); constant QP was bit-stable in every run.
            stream.options = {
                "preset": "veryfast",
                "qp": "23",
                "threads": "1",
                "x264-params": "mbtree=0",
            }
            stream.codec_context.flags |= av.codec.context.Flags.bitexact
            stream.codec_context.time_base = Fraction(1, fps)
            for i in range(nframes):
                vf = av.VideoFrame.from_ndarray(
                    _yuv420p(_frame(i, width, height, fps, phase)), format="yuv420p"
                )
                vf.pts = i
                vf.time_base = Fraction(1, fps)
                for packet in stream.encode(vf):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
        if not _same_file(tmp, dest):  # an identical clip stays untouched (mtime, inode)
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest
