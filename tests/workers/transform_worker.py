"""Run one transformation in a separate process and report its events as JSON lines.

Usage: python transform_worker.py CACHE_DIR BASE_URL API_KEY CLIP STYLE DURATION [SEED]

Prints one JSON object per event on stdout (flushed), then ``{"kind": "exit", ...}``. Tests kill
this process at a chosen event to simulate a kernel dying mid-job.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from goenhance_nb._session import Session
from goenhance_nb._settings import Settings


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

    def report(ev: object) -> None:
        out = {
            "kind": ev.kind,
            "state": str(ev.state),
            "raw": ev.raw_status,  # type: ignore[attr-defined]
            "job_id": ev.job_id,
            "progress": ev.progress,
        }  # type: ignore[attr-defined]
        print(json.dumps(out), flush=True)

    try:
        job = session.transform(Path(clip), style, duration=int(duration), seed=seed)
        job.subscribe(report)
        rec = job.result(120)
        print(
            json.dumps(
                {"kind": "exit", "ok": True, "path": rec.path, "sha": rec.sha, "cached": job.cached}
            ),
            flush=True,
        )
        return 0
    except Exception as exc:  # report, for the test to assert on
        print(
            json.dumps(
                {"kind": "exit", "ok": False, "error": type(exc).__name__, "message": str(exc)}
            ),
            flush=True,
        )
        return 1
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())
