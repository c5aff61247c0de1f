"""Measurements that run in their own process (``python -m bench._worker KIND ...``).

Each prints one JSON object on its last stdout line. Settings come from the environment
(GOENHANCE_* set by the harness), as a user's process would get them.

- ``download URL DEST [--warm URL]``: ``AsyncClient.download`` of URL into DEST; seconds,
  bytes, and the peak-RSS growth during the download (VmHWM after minus VmRSS before, with the
  peak reset through /proc/self/clear_refs first when the kernel allows it).
- ``httpx URL DEST [READ_BYTES]``: the same with a bare ``httpx.Client`` stream (a diagnostic
  reference), at httpcore's own read size or at READ_BYTES.
- ``httpx-async URL DEST [READ_BYTES]``: the same with a bare ``httpx.AsyncClient`` stream.
- ``jobs N SEEDBASE INPUT``: ``Session.transform`` of N jobs (seeds SEEDBASE+i) and the wall
  time until every ``job.result()`` returned, plus each job's submit/done offsets.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def _download(url: str, dest: Path, warm: str | None) -> dict[str, Any]:
    from goenhance_nb._client import AsyncClient
    from goenhance_nb._settings import Settings

    settings = Settings.resolve()
    assert settings.base_url is not None
    client = AsyncClient(settings, base_url=settings.base_url, api_key=settings.api_key)
    try:
        if warm:  # first request: connection pool, TLS-free loopback, lazy imports
            await client.download(warm, dest.with_suffix(".warm"), resume=False)
            dest.with_suffix(".warm").unlink(missing_ok=True)
        reset = _reset_peak()
        rss0 = _status_kib("VmRSS")
        c0 = time.process_time()
        t0 = time.perf_counter()
        n = await client.download(url, dest, resume=False)
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        hwm = _status_kib("VmHWM")
    finally:
        await client.aclose()
    return {
        "seconds": dt,
        "cpu_seconds": cpu,
        "bytes": n,
        "rss_before_kib": rss0,
        "hwm_after_kib": hwm,
        "growth_kib": hwm - rss0,
        "peak_reset": reset,
        "read_bytes": _read_bytes("AsyncHTTP11Connection", None),
    }


def _read_bytes(cls_name: str, read_bytes: int | None) -> int:
    """httpcore's HTTP/1.1 read size for ``cls_name`` (set first when ``read_bytes``)."""
    import httpcore

    cls = getattr(httpcore, cls_name)
    if read_bytes:
        cls.READ_NUM_BYTES = read_bytes
    return int(cls.READ_NUM_BYTES)


def _plain_httpx(url: str, dest: Path, read_bytes: int | None = None) -> dict[str, Any]:
    """The same download with a bare ``httpx.Client`` stream (no retries, no rate limiter)."""
    import httpx

    read = _read_bytes("HTTP11Connection", read_bytes)
    with httpx.Client(timeout=60) as c:
        c0 = time.process_time()
        t0 = time.perf_counter()
        with c.stream("GET", url) as r, dest.open("wb") as f:
            r.raise_for_status()
            for chunk in r.iter_bytes():
                f.write(chunk)
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return {"seconds": dt, "cpu_seconds": cpu, "bytes": dest.stat().st_size, "read_bytes": read}


async def _plain_httpx_async(url: str, dest: Path, read_bytes: int | None) -> dict[str, Any]:
    """The same download with a bare ``httpx.AsyncClient`` stream, body written on the loop."""
    import httpx

    read = _read_bytes("AsyncHTTP11Connection", read_bytes)
    async with httpx.AsyncClient(timeout=60) as c:
        c0 = time.process_time()
        t0 = time.perf_counter()
        async with c.stream("GET", url) as r:
            r.raise_for_status()
            with dest.open("wb") as f:
                async for chunk in r.aiter_bytes():
                    f.write(chunk)
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
    return {"seconds": dt, "cpu_seconds": cpu, "bytes": dest.stat().st_size, "read_bytes": read}


def _jobs(n: int, seed_base: int, source: str) -> dict[str, Any]:
    from goenhance_nb import Session

    s = Session()
    try:
        t0 = time.perf_counter()
        jobs = [
            s.transform(source, "Anime Style", duration=3, resolution="540p", seed=seed_base + i)
            for i in range(n)
        ]
        submitted = time.perf_counter() - t0
        done: list[float] = []
        for j in jobs:
            j.result(timeout=600)
            done.append(time.perf_counter() - t0)
        total = time.perf_counter() - t0
        cached = sum(1 for j in jobs if j.cached)
    finally:
        s.close()
    return {"seconds": total, "submit_seconds": submitted, "done": done, "cached": cached}


def main(argv: list[str]) -> int:
    kind = argv[0]
    if kind == "download":
        warm = argv[argv.index("--warm") + 1] if "--warm" in argv else None
        out = asyncio.run(_download(argv[1], Path(argv[2]), warm))
    elif kind == "httpx":
        out = _plain_httpx(argv[1], Path(argv[2]), int(argv[3]) if len(argv) > 3 else None)
    elif kind == "httpx-async":
        read = int(argv[3]) if len(argv) > 3 else None
        out = asyncio.run(_plain_httpx_async(argv[1], Path(argv[2]), read))
    elif kind == "jobs":
        out = _jobs(int(argv[1]), int(argv[2]), argv[3])
    else:
        print(f"unknown worker {kind!r}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
