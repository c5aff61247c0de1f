"""Video transforms for the simulator: numpy style filters, PyAV decode/encode, JPEG previews.

Everything here is synchronous and CPU-bound; the server calls it from worker threads.
Styles are simple numpy filters on float32 RGB frames in [0, 1]; each is visibly different
from the input and from the others (DECISIONS 19).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

Frame = NDArray[np.float32]

#: Filtering happens at this height at most (then swscale resizes to the output height).
WORK_HEIGHT = 240
#: Highest output frame rate; faster sources are decimated.
MAX_FPS = 30


class MediaError(Exception):
    """The source could not be decoded or the output could not be written."""


class Cancelled(Exception):
    """A render was stopped by its `cancel` callback (the simulator is shutting down)."""


# -- small numpy filters -------------------------------------------------------------------
def box_blur(img: Frame, radius: int) -> Frame:
    """Separable box blur (edge-clamped) of an HxW or HxWxC float32 array; radius 0 returns it.

    Sums 2r+1 shifted views per axis (cheaper than cumulative sums for the small radii used).
    """
    if radius <= 0:
        return img
    out = img
    k = 2 * radius + 1
    for axis in (0, 1):
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        view = [slice(None)] * out.ndim
        view[axis] = slice(0, n)
        acc = padded[tuple(view)].copy()
        for shift in range(1, k):
            view[axis] = slice(shift, shift + n)
            acc += padded[tuple(view)]
        acc *= np.float32(1.0 / k)
        out = acc
    return out


def luma(img: Frame) -> Frame:
    """Rec.601 luminance of an RGB frame (HxW)."""
    result: Frame = (img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114).astype(
        np.float32
    )
    return result


def edges(gray: Frame) -> Frame:
    """Gradient magnitude (HxW, roughly 0..1) by central differences."""
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[:, 1:-1] = gray[:, 2:] - gray[:, :-2]
    gy[1:-1, :] = gray[2:, :] - gray[:-2, :]
    return np.sqrt(gx * gx + gy * gy)


def posterize(img: Frame, levels: int) -> Frame:
    """Quantise every channel to `levels` evenly spaced values."""
    q = np.float32(levels - 1)
    result: Frame = np.round(img * q) / q
    return result


def saturate(img: Frame, amount: float) -> Frame:
    """Scale the distance from grey by `amount` (1 = unchanged)."""
    g = luma(img)[..., None]
    result: Frame = g + (img - g) * np.float32(amount)
    return result


def contrast(img: Frame, amount: float, pivot: float = 0.5) -> Frame:
    """Scale the distance from `pivot` by `amount`."""
    result: Frame = (img - np.float32(pivot)) * np.float32(amount) + np.float32(pivot)
    return result


def _paper(h: int, w: int) -> Frame:
    """A fixed, deterministic paper texture (HxW, around 1.0)."""
    rng = np.random.default_rng(12345)
    noise = rng.random((h, w), dtype=np.float32)
    return (0.94 + 0.06 * box_blur(noise, 1)).astype(np.float32)


# -- the styles ------------------------------------------------------------------------------
def style_anime(img: Frame) -> Frame:
    """Flat colour bands with dark outlines (posterize + edge lines)."""
    soft = box_blur(img, 1)
    base = posterize(saturate(soft, 1.3), 5)
    e = edges(luma(soft))
    line = np.clip((e - 0.08) * 8.0, 0.0, 1.0)[..., None]
    result: Frame = base * (1.0 - line)
    return result


def style_pixar(img: Frame) -> Frame:
    """Smooth, saturated, slightly brightened."""
    out = saturate(box_blur(img, 3), 1.6)
    return out * 0.9 + 0.12


def style_clay(img: Frame) -> Frame:
    """Posterized, soft, warm tones."""
    out = box_blur(posterize(img, 4), 2)
    warm = np.array([1.15, 0.98, 0.72], dtype=np.float32)
    result: Frame = out * warm + np.float32(0.03)
    return result


def style_oil(img: Frame) -> Frame:
    """Heavy box blur quantised to few colours, with a contrast boost."""
    return contrast(posterize(box_blur(img, 4), 6), 1.25)


def style_watercolor(img: Frame) -> Frame:
    """Blurred, washed out towards white, on a beige paper tint."""
    h, w = img.shape[:2]
    out = box_blur(img, 3) * 0.6 + 0.4
    tint = np.array([1.0, 0.96, 0.86], dtype=np.float32)
    return out * tint * _paper(h, w)[..., None]


def style_cyberpunk(img: Frame) -> Frame:
    """Tone-mapped between cyan shadows and magenta highlights, high contrast."""
    y = luma(img)[..., None]
    cyan = np.array([0.0, 0.9, 1.0], dtype=np.float32)
    magenta = np.array([1.0, 0.1, 0.85], dtype=np.float32)
    mapped = cyan * (1.0 - y) + magenta * y
    return contrast(mapped * 0.7 + img * 0.3, 1.5, 0.45)


def style_pencil(img: Frame) -> Frame:
    """Grayscale dodge-burn sketch: gray / (1 - blur(inverted gray)), plus edge strokes."""
    g = luma(img)
    inv_blur = box_blur(1.0 - g, 4)
    dodge = np.clip(g / np.maximum(1.0 - inv_blur, 1e-3), 0.0, 1.0)
    e = np.clip(edges(g) * 3.0, 0.0, 1.0)
    sketch = np.clip(dodge - e * 0.6, 0.0, 1.0) * 0.92
    return np.repeat(sketch[..., None], 3, axis=2)


STYLES: dict[str, Callable[[Frame], Frame]] = {
    "anime": style_anime,
    "pixar": style_pixar,
    "clay": style_clay,
    "oil": style_oil,
    "watercolor": style_watercolor,
    "cyberpunk": style_cyberpunk,
    "pencil": style_pencil,
}


def apply_style(style: str, rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Apply a named style to an HxWx3 uint8 RGB frame; raises KeyError for an unknown style."""
    fn = STYLES[style]
    img = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    out = fn(img)
    result: NDArray[np.uint8] = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return result


# -- geometry --------------------------------------------------------------------------------
def output_size(src_w: int, src_h: int, height: int) -> tuple[int, int]:
    """Even (width, height) with the given height and the source aspect ratio."""
    if src_w <= 0 or src_h <= 0:
        raise MediaError("source has no frame size")
    w = max(2, round(height * src_w / src_h / 2) * 2)
    return w, height


def _work_size(src_w: int, src_h: int) -> tuple[int, int]:
    h = min(WORK_HEIGHT, src_h)
    h = max(2, h - h % 2)
    w = max(2, round(h * src_w / src_h / 2) * 2)
    return w, h


# -- render ----------------------------------------------------------------------------------
def render_video(
    src: Path,
    dest: Path,
    *,
    style: str,
    duration: float,
    height: int,
    cancel: Callable[[], bool] | None = None,
) -> float:
    """Transform `src` into an H.264 mp4 at `dest` and return its duration in seconds.

    Output: libx264 (ultrafast, crf 28), yuv420p, even width, the given height with the source
    aspect ratio, `+faststart`, the source frame rate capped at 30 fps, trimmed to `duration`
    seconds (a shorter source is used whole). Written to a temp file and moved into place.
    `cancel` is checked before each frame.

    :raises Cancelled: `cancel()` returned true (nothing is written to `dest`).
    :raises MediaError: the source cannot be opened, has no video stream or no decodable frame,
        or encoding fails.
    """
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        n = _render(src, tmp, style=style, duration=duration, height=height, cancel=cancel)
        os.replace(tmp, dest)
        return n
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(f"cannot transform video: {type(exc).__name__}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _render(
    src: Path,
    dest: Path,
    *,
    style: str,
    duration: float,
    height: int,
    cancel: Callable[[], bool] | None,
) -> float:
    with av.open(str(src)) as inp:
        if not inp.streams.video:
            raise MediaError("source has no video stream")
        vs = inp.streams.video[0]
        vs.thread_type = "AUTO"
        rate = vs.average_rate or vs.guessed_rate or Fraction(25)
        fps = Fraction(rate)
        if fps > MAX_FPS or fps <= 0:
            fps = Fraction(MAX_FPS)
        out_fps = fps.limit_denominator(1001)
        frame_dt = 1.0 / float(out_fps)
        out = None
        ostream = None
        count = 0
        next_t = 0.0
        first_t: float | None = None
        try:
            for frame in inp.decode(vs):
                if cancel is not None and cancel():
                    raise Cancelled("render cancelled")
                t = float(frame.time) if frame.time is not None else count * frame_dt
                if first_t is None:
                    first_t = t
                t -= first_t
                if t >= duration - 1e-6:
                    break
                if t + 1e-6 < next_t:
                    continue  # decimate to out_fps
                if out is None:
                    ow, oh = output_size(frame.width, frame.height, height)
                    ww, wh = _work_size(frame.width, frame.height)
                    out = av.open(str(dest), "w", format="mp4", options={"movflags": "+faststart"})
                    ostream = out.add_stream("libx264", rate=out_fps)
                    ostream.width, ostream.height = ow, oh
                    ostream.pix_fmt = "yuv420p"
                    ostream.options = {"preset": "ultrafast", "crf": "28"}
                    ostream.codec_context.time_base = Fraction(1, 1) / out_fps
                assert ostream is not None  # opened together with `out` above
                rgb = frame.to_ndarray(width=ww, height=wh, format="rgb24")
                styled = apply_style(style, rgb)
                vf = av.VideoFrame.from_ndarray(styled, format="rgb24")
                vf = vf.reformat(width=ow, height=oh, format="yuv420p")
                vf.pts = count
                vf.time_base = ostream.codec_context.time_base
                for packet in ostream.encode(vf):
                    out.mux(packet)
                count += 1
                next_t = count * frame_dt
            if out is None or ostream is None:  # nothing written (count == 0)
                raise MediaError("source has no decodable video frame")
            for packet in ostream.encode(None):
                out.mux(packet)
        finally:
            if out is not None:
                out.close()
    return round(count * frame_dt, 3)


# -- previews --------------------------------------------------------------------------------
def test_frame(width: int = 320, height: int = 180) -> NDArray[np.uint8]:
    """A fixed colourful frame (gradient, disc, bars) used for style previews."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    r = x / width
    g = y / height
    b = 1.0 - (x + y) / (width + height)
    img = np.stack([r, g, b], axis=2)
    cx, cy, rad = width * 0.35, height * 0.5, height * 0.3
    disc = ((x - cx) ** 2 + (y - cy) ** 2) < rad**2
    img[disc] = (1.0, 0.85, 0.2)
    bars = (x > width * 0.65) & (x < width * 0.9) & (y > height * 0.2) & (y < height * 0.8)
    img[bars & ((x // 8) % 2 == 0)] = (0.1, 0.1, 0.1)
    img[bars & ((x // 8) % 2 == 1)] = (0.95, 0.95, 0.95)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def preview_jpeg(style: str) -> bytes:
    """The style applied to `test_frame()`, encoded as a small JPEG."""
    styled = apply_style(style, test_frame())
    frame = av.VideoFrame.from_ndarray(styled, format="rgb24").reformat(format="yuvj420p")
    cc = av.CodecContext.create("mjpeg", "w")
    cc.width, cc.height = frame.width, frame.height
    cc.pix_fmt = "yuvj420p"
    cc.time_base = Fraction(1, 25)
    frame.pts = 0
    data = b"".join(bytes(p) for p in cc.encode(frame))
    data += b"".join(bytes(p) for p in cc.encode(None))
    return data
