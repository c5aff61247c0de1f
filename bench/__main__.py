"""``python -m bench [--smoke] [--only P1,P3] [--out PATH] [--json PATH] [--note TEXT]``.

Runs the figures in order, each in its own work directory (removed afterwards), and writes the
report (default: BENCHMARKS.md at the repository root; a smoke run defaults to
artifacts/bench-smoke.md). A figure that cannot run is reported as not measured; the exit
status is 1 when a figure failed (a missed goal is a result, not a failure), 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from bench._common import REPO, Mode, Row, read_loadavg, speed_probe, steal_seconds
from bench.figures import FIGURES, Unavailable, cleanup
from bench.report import machine_info, render


def _sample_load(samples: list[float], stop: threading.Event) -> None:
    while not stop.wait(10.0):
        samples.append(read_loadavg()[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="each figure once, tiny sizes")
    ap.add_argument("--only", default="", help="comma-separated figures, e.g. P1,P3")
    ap.add_argument("--out", type=Path, default=None, help="where to write the Markdown")
    ap.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    ap.add_argument("--note", default=None, help="a line added to the machine block")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)

    mode = Mode.tiny() if args.smoke else Mode.full()
    only = [f.strip().upper() for f in args.only.split(",") if f.strip()]
    unknown = [f for f in only if f not in FIGURES]
    if unknown:
        ap.error(f"unknown figure(s): {', '.join(unknown)}")
    chosen = only or list(FIGURES)
    out = args.out or (REPO / ("artifacts/bench-smoke.md" if args.smoke else "BENCHMARKS.md"))

    info = machine_info()
    samples: list[float] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample_load, args=(samples, stop), daemon=True)
    sampler.start()
    root = Path(tempfile.mkdtemp(prefix="goenhance-bench-"))
    rows: list[Row] = []
    status: dict[str, str] = {}
    timings: dict[str, float] = {}
    t_all = time.monotonic()
    try:
        for fig in chosen:
            t0 = time.monotonic()
            print(f"[bench] {fig} ...", flush=True)
            work = root / fig
            work.mkdir()
            try:
                got = FIGURES[fig](work, mode)
                rows += got
                status[fig] = "ok"
                if not got:
                    status[fig] = "failed: no rows"
            except Unavailable as exc:
                status[fig] = f"unavailable: {exc}"
            except Exception as exc:
                status[fig] = f"failed: {type(exc).__name__}: {str(exc)[:300]}"
                traceback.print_exc()
            finally:
                if not args.keep:
                    cleanup(work)
            timings[fig] = time.monotonic() - t0
            print(f"[bench] {fig} {status[fig]} in {timings[fig]:.1f} s", flush=True)
            for r in rows:
                if r.figure == fig:
                    print(f"[bench]   {r.what}: ratio {r.ratio} ok={r.ok}", flush=True)
    finally:
        stop.set()
        if not args.keep:
            cleanup(root)
    seconds = time.monotonic() - t_all
    info["loadavg_end"] = read_loadavg()
    info["speed_end_ms"] = speed_probe()
    info["steal_end_s"] = steal_seconds()
    info["loadavg_samples"] = samples
    text = render(rows, info, status, smoke=mode.smoke, seconds=seconds, note=args.note)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "smoke": mode.smoke,
                    "seconds": seconds,
                    "status": status,
                    "timings": timings,
                    "machine": info,
                    "rows": [r.to_json() for r in rows],
                },
                indent=1,
            )
        )
    print(f"[bench] wrote {out} ({seconds:.0f} s)", flush=True)
    return 1 if any(s.startswith("failed") for s in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
