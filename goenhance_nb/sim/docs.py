"""What every simulator setting and fault kind means (``goenhance-sim --help``, the README).

Kept next to the simulator so a new setting or fault kind without a description fails
tests/test_simcontrol.py.
"""

from __future__ import annotations

__all__ = ["CONFIG_HELP", "FAULT_HELP", "help_epilog"]

#: Config key -> meaning (defaults: ``goenhance_nb.sim.config.DEFAULT_CONFIG``).
CONFIG_HELP: dict[str, str] = {
    "pending_seconds": "seconds a new job reports `pending` before it starts processing",
    "processing_seconds": "fixed seconds of `processing` per job",
    "processing_per_second": "extra seconds of processing per second of requested duration",
    "success_status": "the finished status the API reports: `success` or `completed`",
    "result_field": "where the result URL is given: `json` list, `img_url` or `output.video_url`",
    "waiting_status": "status of a job beyond the account's queue limit: `WAITING` or `queued`",
    "queue_limit": "jobs an account may run at once (reported as queueLimit)",
    "url_ttl": "seconds a signed result URL stays valid",
    "download_rate": "result/file download speed in bytes/s (null: unthrottled)",
    "daily_cap": "generate calls an account may make per day (null: no cap)",
    "refund_on_failure": "give the credits back when a job fails",
    "rates": 'credits per second of video by resolution, e.g. {"540p": 5, "720p": 10}',
    "vip_multiplier": "price factor of VIP styles",
    "credits": "set every account's balance to this many credits",
}

#: Fault kind -> meaning (a fault is one-shot; ``times`` repeats it; ``path`` limits it).
FAULT_HELP: dict[str, str] = {
    "http_500": "answer HTTP 500 (with after=true: run the request first, then answer 500)",
    "http_502": "answer HTTP 502 (after=true as for http_500)",
    "http_503": "answer HTTP 503",
    "http_504": "answer HTTP 504 (after=true as for http_500)",
    "http_429": "answer HTTP 429 Too Many Requests (retry_after=SECONDS)",
    "reset": "drop the connection without an answer (after=true: after running the request)",
    "slow": "wait delay=SECONDS before answering",
    "malformed_json": "answer 200 with a broken JSON body (after=true: after running it)",
    "oversize_json": "answer a valid success envelope of size=BYTES (default 8 MiB)",
    "no_job_id": "run a generate (it is charged) and answer code 0 without an img_uuid",
    "unknown_status": "the job reports status=STRING for `times` polls",
    "lost_job": "jobs/detail answers `job not found` for the job",
    "expired_url": "the next result URL handed out is already expired",
    "truncated_download": "close a download after after_bytes=N bytes",
    "short_download": "a server that ignores Range: 200 from byte 0, closes after after_bytes",
    "html_download": "serve an HTML error page (200 text/html) instead of the video",
    "zeros_download": "serve size=BYTES zero bytes as video/mp4",
    "oversize_download": "serve size=BYTES (default 64 MiB) of zeros; length=false: chunked",
    "job_failed": "the next generated job ends `failed` (refunded if refund_on_failure)",
    "reject_generate": "answer a generate with a non-zero envelope code=N and msg=TEXT",
}


def help_epilog(defaults: dict[str, object]) -> str:
    """The ``--help`` epilog: every config key with its default and meaning, every fault kind."""
    width = max(len(k) for k in CONFIG_HELP)
    lines = ["settings (--config JSON, POST /sim/config, goenhance_nb.simulator().configure):"]
    for key, text in CONFIG_HELP.items():
        lines.append(f"  {key:<{width}}  {text} (default {defaults.get(key)!r})")
    fwidth = max(len(k) for k in FAULT_HELP)
    lines.append("")
    lines.append("faults (POST /sim/faults, goenhance_nb.simulator().fault(KIND, ...)):")
    for kind, text in FAULT_HELP.items():
        lines.append(f"  {kind:<{fwidth}}  {text}")
    lines.append("")
    lines.append("control endpoints need the bearer key the simulator prints (and writes to")
    lines.append("its --port-file); from a notebook, goenhance_nb.simulator() finds it for you.")
    return "\n".join(lines)
