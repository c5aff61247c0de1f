"""Run one transformation in a separate process and report its events as JSON lines.

Usage: python transform_worker.py CACHE_DIR BASE_URL API_KEY CLIP STYLE DURATION [SEED]

Prints one JSON object per event on stdout (flushed), then ``{"kind": "exit", ...}``. Tests kill
this process at a chosen event to simulate a kernel dying mid-job.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from goenhance_nb._session import Session
from goenhance_nb._settings import Settings

_out = threading.Lock()
TERMINAL = {"done", "failed", "timed_out", "watch_cancelled"}


def emit(obj: dict[str, object]) -> None:
    """One whole JSON line per call: events come from the engine thread, the exit report from
    the main thread, and ``print`` writes text and newline separately (lines could interleave)."""
    with _out:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def main() -> int:
    cache_dir, base_url, api_key, clip, style, duration = sys.argv[1:7]
    seed = int(sys.argv[7]) if len(sys.argv) > 7 else -1
    settings = Settings.resolve(
        explicit={
            "api_key": api_key,
            "base_url": base_url,
            "cache_dir": Path(cache_dir),
            "poll_interval": 0.1,
        }
    )
    session = Session(settings)
    # The engine emits a job's terminal event just after its result is set: wait for it, so the
    # exit report is always the last line.
    ended = threading.Event()

    def report(ev: object) -> None:
        out = {
            "kind": ev.kind,
            "state": str(ev.state),
            "raw": ev.raw_status,  # type: ignore[attr-defined]
            "job_id": ev.job_id,
            "progress": ev.progress,
        }  # type: ignore[attr-defined]
        emit(out)
        if ev.kind in TERMINAL:  # type: ignore[attr-defined]
            ended.set()

    job = None
    try:
        job = session.transform(Path(clip), style, duration=int(duration), seed=seed)
        job.subscribe(report)
        rec = job.result(120)
        ended.wait(30)
        emit({"kind": "exit", "ok": True, "path": rec.path, "sha": rec.sha, "cached": job.cached})
        return 0
    except Exception as exc:  # report, for the test to assert on
        if job is not None:
            ended.wait(5)
        emit({"kind": "exit", "ok": False, "error": type(exc).__name__, "message": str(exc)})
        return 1
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())
