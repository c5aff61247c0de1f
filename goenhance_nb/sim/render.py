"""Background rendering of a job's result: fetch the source, transform it, cache the render.

Runs on the simulator's render threads without its lock: :meth:`Renderer.render` takes the
job's parameters and returns the finished :class:`~goenhance_nb.sim.jobs.Render`; the caller
stores it on the job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from goenhance_nb.sim import media
from goenhance_nb.sim.catalog import MODELS_BY_ID, RESOLUTION_HEIGHT
from goenhance_nb.sim.jobs import Render
from goenhance_nb.sim.persist import files_path, read_json, write_json

MAX_SOURCE_BYTES = 200 * 1024 * 1024
#: Bump when the transforms change, so cached renders are not reused.
RENDER_VERSION = 1


class SourceError(Exception):
    """The source video could not be fetched."""


class Renderer:
    """Renders into `<state_dir>/results/`, reusing `<state_dir>/render-cache/`.

    `own_netlocs` (host:port forms under which this simulator is reached) is kept current by
    the simulator; `stopping` cancels renders in progress.
    """

    def __init__(
        self, state_dir: Path, *, clock: Callable[[], float], stopping: threading.Event
    ) -> None:
        self.state_dir = state_dir
        self.clock = clock
        self.stopping = stopping
        self.own_netlocs: set[str] = set()

    def result_path(self, job_id: str) -> Path:
        """Where the rendered output of a job lives."""
        return self.state_dir / "results" / f"{job_id}.mp4"

    def render(
        self, job_id: str, *, model: int, source_url: str, duration: int, resolution: str
    ) -> Render:
        """Fetch and transform the source of job `job_id`; return the finished render state
        (`done` with the output duration, or `failed` with a one-line reason; never raises
        for a bad source or an internal error).

        :raises media.Cancelled: the simulator is stopping (the job is rendered again after
            a restart).
        """
        src = self.state_dir / "tmp" / f"src-{job_id}"
        result: Render
        try:
            path = self._fetch_source(source_url, src)
            out_dur = self._render_cached(
                path,
                self.result_path(job_id),
                style=MODELS_BY_ID[model][4],
                duration=float(duration),
                height=RESOLUTION_HEIGHT[resolution],
            )
            result = Render("done", duration=out_dur)
        except media.Cancelled:
            raise
        except (media.MediaError, SourceError) as exc:
            result = Render("failed", error=str(exc))
        except Exception as exc:  # never leave a job stuck in `processing`
            result = Render("failed", error=f"internal error: {type(exc).__name__}")
        finally:
            src.unlink(missing_ok=True)
        result.done_at = self.clock()
        return result

    def _render_cached(
        self, src: Path, dest: Path, *, style: str, duration: float, height: int
    ) -> float:
        """Render, or reuse an earlier render of the same source bytes and parameters (the
        transform is deterministic), hard-linked (else copied) to `dest`; returns its duration.

        :raises media.MediaError: the source cannot be transformed.
        """
        h = hashlib.sha256()
        with src.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        key = hashlib.sha256(
            f"{RENDER_VERSION}:{h.hexdigest()}:{style}:{duration}:{height}".encode()
        ).hexdigest()
        cache_dir = self.state_dir / "render-cache"
        cache_dir.mkdir(exist_ok=True)
        cached, meta = cache_dir / f"{key}.mp4", cache_dir / f"{key}.json"
        info = read_json(meta, None)
        if info is None or not cached.is_file():
            out_dur = media.render_video(
                src,
                cached,
                style=style,
                duration=duration,
                height=height,
                cancel=self.stopping.is_set,
            )
            write_json(meta, {"duration": out_dur})
        else:
            out_dur = float(info["duration"])
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            os.link(cached, tmp)
        except OSError:
            shutil.copyfile(cached, tmp)
        os.replace(tmp, dest)
        return out_dur

    def _own_file(self, url: str) -> Path | None:
        """Our own `/sim/files/<name>` on disk when `url` names it (content-addressed: the same
        bytes even under the loopback port of an earlier run; a restart picks a new port).

        :raises SourceError: the URL names this simulator but no such file exists.
        """
        parts = urlsplit(url)
        if not parts.path.startswith("/sim/files/"):
            return None
        local = files_path(self.state_dir, parts.path.removeprefix("/sim/files/"))
        loopback = (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")
        ours = parts.netloc in self.own_netlocs
        if local is not None and local.is_file() and (loopback or ours):
            return local
        if ours:
            raise SourceError("source video not found")
        return None

    def _fetch_source(self, url: str, dest: Path) -> Path:
        """Our own `/sim/files/<name>` is read from disk; anything else is fetched over HTTP
        with httpx into `dest`.

        :raises SourceError: not found, HTTP status other than 200, transport error, too large.
        """
        local = self._own_file(url)
        if local is not None:
            return local
        try:
            with (
                httpx.Client(timeout=30, follow_redirects=True) as client,
                client.stream("GET", url) as resp,
            ):
                if resp.status_code != 200:
                    raise SourceError(f"source video fetch failed: HTTP {resp.status_code}")
                n = 0
                with dest.open("wb") as f:
                    for chunk in resp.iter_bytes(1 << 16):
                        n += len(chunk)
                        if n > MAX_SOURCE_BYTES:
                            raise SourceError("source video too large")
                        f.write(chunk)
        except httpx.HTTPError as exc:
            raise SourceError(f"source video fetch failed: {type(exc).__name__}") from exc
        return dest
