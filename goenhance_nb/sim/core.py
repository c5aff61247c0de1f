"""Simulator state: the `Simulator` that ties accounts, jobs, lifecycle, rendering, signed URLs
and persistence together under one lock.

The concerns live in their own modules: `catalog` (models, prices), `accounts` (keys, credits,
daily cap), `jobs` (the typed `JobRecord`, body validation), `schedule` (queue slots and the
lifecycle as functions of time), `render` (source fetch + transform on a thread pool),
`signing` (result URLs), `persist` (atomic JSON files).

All state lives in a state directory as JSON files written atomically (temp file +
`os.replace`): `secret.json` (default key + URL signing secret, mode 0600), `accounts.json`,
`jobs.json`, `config.json`; plus `files/` (uploads), `results/` (rendered videos),
`previews/` (style thumbnails) and `tmp/`. A job's lifecycle is derived from timestamps
(`slot_start` + its pending and processing times), so it continues across a restart.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from goenhance_nb.sim import catalog, media, schedule
from goenhance_nb.sim.accounts import Account, account_id, key_matches
from goenhance_nb.sim.config import default_config, validate_patch
from goenhance_nb.sim.faults import FaultQueue
from goenhance_nb.sim.jobs import APIFailure, GenerateArgs, JobRecord, Render, validate_body
from goenhance_nb.sim.persist import files_path, read_json, write_json
from goenhance_nb.sim.render import Renderer
from goenhance_nb.sim.signing import UrlSigner, result_url_path

__all__ = ["APIFailure", "Simulator", "iso", "write_json"]

MAX_LOG = 20000


def iso(ts: float) -> str:
    """UTC ISO-8601 with milliseconds and a `Z`, as the API's `start_time`."""
    d = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


class Simulator:
    """The simulated GoEnhance backend (transport-independent; the HTTP layer is `app.py`).

    Thread-safe: one re-entrant lock guards all state; renders run on a small thread pool.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        extra_keys: list[str] | None = None,
        config: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state_dir = state_dir
        self.clock = clock
        self.lock = threading.RLock()
        for sub in ("files", "results", "previews", "tmp"):
            (state_dir / sub).mkdir(parents=True, exist_ok=True)
        secret = read_json(state_dir / "secret.json", None)
        if not secret:
            secret = {
                "default_key": "sim-" + secrets.token_hex(16),
                "url_secret": secrets.token_hex(32),
            }
            write_json(state_dir / "secret.json", secret, mode=0o600)
        self.default_key: str = secret["default_key"]
        self.signer = UrlSigner(bytes.fromhex(secret["url_secret"]), clock)
        self.keys: dict[str, str] = {}  # key -> account id
        for k in [self.default_key, *(extra_keys or [])]:
            self.keys[k] = account_id(k)
        self.config = default_config()
        self.config.update(validate_patch(read_json(state_dir / "config.json", {})))
        if config:
            self.config.update(validate_patch(config))
        self.start_config = dict(default_config(), **validate_patch(config or {}))
        self.accounts: dict[str, Account] = {
            aid: Account.from_json(d)
            for aid, d in read_json(state_dir / "accounts.json", {}).items()
        }
        for aid in sorted(set(self.keys.values())):
            self.accounts.setdefault(aid, Account.new(aid, int(self.config["credits"])))
        self.jobs: dict[str, JobRecord] = {
            jid: JobRecord.from_json(d) for jid, d in read_json(state_dir / "jobs.json", {}).items()
        }
        for job in self.jobs.values():
            if job.render.status == "running":  # interrupted by a restart: redo it
                job.render = Render()
        self.faults = FaultQueue()
        self.requests: list[dict[str, Any]] = []
        self.public_base = ""
        self.own_netlocs: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sim-render")
        self._stopping = threading.Event()
        self.renderer = Renderer(state_dir, clock=clock, stopping=self._stopping)
        self._dirty = True
        self.save()

    # -- persistence --------------------------------------------------------------------------
    def save(self) -> None:
        """Persist accounts, jobs and config if anything changed."""
        with self.lock:
            if not self._dirty:
                return
            accounts = {aid: acc.to_json() for aid, acc in self.accounts.items()}
            write_json(self.state_dir / "accounts.json", accounts)
            write_json(self.state_dir / "jobs.json", {j: r.to_json() for j, r in self.jobs.items()})
            write_json(self.state_dir / "config.json", self.config)
            self._dirty = False

    def close(self) -> None:
        """Cancel running renders (they are redone after a restart) and persist."""
        self._stopping.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self.lock:
            self._dirty = True
            self.save()

    def set_public_base(self, base_url: str) -> None:
        """Record the URL clients use, for absolute URLs and spotting our own file URLs."""
        self.public_base = base_url.rstrip("/")
        netloc = urlsplit(self.public_base).netloc
        port = netloc.rsplit(":", 1)[-1]
        self.own_netlocs = {netloc, f"127.0.0.1:{port}", f"localhost:{port}"}
        self.renderer.own_netlocs = self.own_netlocs

    # -- auth, config ------------------------------------------------------------------------
    def account_for(self, key: str | None) -> str | None:
        """The account id for a bearer key, or None if it is not accepted."""
        return key_matches(self.keys, key)

    def _set_all_credits(self, credits: int) -> None:
        for acc in self.accounts.values():
            acc.credits = credits

    def patch_config(self, patch: object) -> dict[str, Any]:
        """Apply a validated config patch (`credits` also sets every balance) and return it."""
        clean = validate_patch(patch)
        with self.lock:
            self.config.update(clean)
            if "credits" in clean:
                self._set_all_credits(clean["credits"])
            self._dirty = True
            self.save()
            return dict(self.config)

    def reset_config(self) -> dict[str, Any]:
        """Restore the start config (defaults + `--config`) and set every balance to its
        `credits`; returns the config."""
        with self.lock:
            self.config = dict(self.start_config)
            self._set_all_credits(int(self.config["credits"]))
            self._dirty = True
            self.save()
            return dict(self.config)

    def log_request(
        self, method: str, path: str, query: str, status: int, conn: int | None = None
    ) -> dict[str, Any]:
        """Append one entry to the request log (never headers) and return it (mutable, so the
        HTTP layer can fill in the status once the response starts). ``conn`` is the client's
        port: requests with the same one came over the same (kept-alive) connection."""
        entry = {
            "method": method,
            "path": path,
            "query": query,
            "status": status,
            "ts": self.clock(),
            "conn": conn,
        }
        with self.lock:
            self.requests.append(entry)
            if len(self.requests) > MAX_LOG:
                del self.requests[: len(self.requests) - MAX_LOG]
        return entry

    # -- API: models, tokens -----------------------------------------------------------------
    def model_list(self) -> list[dict[str, Any]]:
        """The modellist `data`: categories with their models."""
        return catalog.model_list(self.public_base)

    def tokens(self, aid: str) -> dict[str, Any]:
        """The user/tokens `data` for an account."""
        with self.lock:
            acc = self.accounts[aid]
            return {
                "count": acc.credits,
                "queueLimit": self.config["queue_limit"],
                "user_id": acc.user_id,
            }

    def cost(self, model: int, duration: int, resolution: str) -> int:
        """ceil(duration) x rate(resolution), x vip_multiplier for VIP models (rounded up)."""
        return catalog.cost(self.config, model, duration, resolution)

    # -- API: generate -----------------------------------------------------------------------
    @staticmethod
    def validate_body(body: object) -> GenerateArgs:
        """Check a generate body; return the normalised args.

        :raises APIFailure: code 400 `invalid params: <field>` or `invalid model`.
        """
        return validate_body(body)

    def generate(self, aid: str, body: object, *, fail: bool = False) -> dict[str, Any]:
        """Create a job for `aid` and return `{"img_uuid", "cost"}`; deducts credits.

        :raises APIFailure: validation (400), daily cap (429), insufficient credits (402).
        """
        args = validate_body(body)
        now = self.clock()
        with self.lock:
            cost = self.cost(args.model, args.duration, args.resolution)
            self.accounts[aid].charge(cost, now, self.config["daily_cap"])
            cfg = self.config
            job_id = str(uuid.uuid4())
            self.jobs[job_id] = JobRecord(
                id=job_id,
                account=aid,
                args=args,
                model_version=catalog.MODELS_BY_ID[args.model][2],
                cost=cost,
                submitted_at=now,
                pending_s=float(cfg["pending_seconds"]),
                processing_s=float(cfg["processing_seconds"])
                + float(cfg["processing_per_second"]) * args.duration,
                forced_fail=fail,
            )
            self._dirty = True
            self.tick()
            return {"img_uuid": job_id, "cost": cost}

    # -- lifecycle ---------------------------------------------------------------------------
    def tick(self) -> None:
        """Advance every job to what its timestamps say now; start renders that are due;
        give free queue slots to waiting jobs. Persists when anything changed."""
        with self.lock:
            now = self.clock()
            for _ in range(50):  # cascade: slots freed in the past can finish waiting jobs too
                changed = False
                for job in sorted(self.jobs.values(), key=lambda j: j.submitted_at):
                    if job.state != "active" or job.slot_start is None:
                        continue
                    changed |= self._advance(job, now)
                limit = int(self.config["queue_limit"])
                changed |= schedule.assign_slots(self.jobs.values(), now, limit)
                if not changed:
                    break
                self._dirty = True
            self.save()

    def _advance(self, job: JobRecord, now: float) -> bool:
        step = schedule.next_step(job, now)
        if step == "wait":
            return False
        if step == "render":
            self._start_render(job)
        else:
            self._finish(job, step)
        return True

    def _finish(self, job: JobRecord, finish: schedule.Finish) -> None:
        job.state, job.end_time, job.error = finish.state, finish.end, finish.error
        if finish.state == "failed" and self.config["refund_on_failure"] and not job.refunded:
            self.accounts[job.account].credits += job.cost
            job.refunded = True

    # -- rendering ---------------------------------------------------------------------------
    def result_path(self, job_id: str) -> Path:
        """Where the rendered output of a job lives."""
        return self.renderer.result_path(job_id)

    def _start_render(self, job: JobRecord) -> None:
        job.render = Render("running")
        try:
            self._pool.submit(
                self._render_job,
                job.id,
                model=job.args.model,
                source_url=job.args.reference_video_url,
                duration=job.args.duration,
                resolution=job.args.resolution,
            )
        except RuntimeError:  # pool shut down
            job.render = Render()

    def _render_job(
        self, job_id: str, *, model: int, source_url: str, duration: int, resolution: str
    ) -> None:
        try:
            result = self.renderer.render(
                job_id, model=model, source_url=source_url, duration=duration, resolution=resolution
            )
        except media.Cancelled:
            return  # shutting down: stays "running" on disk, reset to "none" at the next start
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None:
                job.render = result
                self._dirty = True
                self.save()

    # -- files ---------------------------------------------------------------------------------
    def files_path(self, name: str) -> Path | None:
        """The path of an uploaded file by its public name, or None for an unsafe name."""
        return files_path(self.state_dir, name)

    def store_upload(self, tmp: Path, sha: str, filename: str | None) -> str:
        """Move a received upload into `files/` as `<sha256>.<ext>`; return its public URL."""
        ext = "mp4"
        if filename and "." in filename:
            cand = filename.rsplit(".", 1)[1].lower()
            if cand.isalnum() and len(cand) <= 5:
                ext = cand
        name = f"{sha}.{ext}"
        dest = self.state_dir / "files" / name
        if dest.exists():
            tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, dest)
        return f"{self.public_base}/sim/files/{name}"

    def new_tmp(self) -> Path:
        """A fresh temp file path inside the state dir."""
        return self.state_dir / "tmp" / f"up-{uuid.uuid4().hex}"

    # -- signed result URLs --------------------------------------------------------------------
    def sign(self, path: str, exp: int) -> str:
        """HMAC-SHA256 over `path` and `exp` with the state dir's secret."""
        return self.signer.sign(path, exp)

    def verify(self, path: str, exp: str | None, sig: str | None) -> bool:
        """True when the signature matches and `exp` is in the future."""
        return self.signer.verify(path, exp, sig)

    @staticmethod
    def result_url_path(job_id: str) -> str:
        """The public path of a job's result file."""
        return result_url_path(job_id)

    # -- API: job detail -------------------------------------------------------------------------
    def job_detail(
        self,
        aid: str,
        job_id: str,
        *,
        status_override: str | None = None,
        expired_url: bool = False,
    ) -> dict[str, Any]:
        """The jobs/detail `data` for a job of this account.

        :raises APIFailure: 404 `job not found` (unknown id or another account's job).
        """
        self.tick()
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.account != aid:
                raise APIFailure(404, "job not found")
            cfg = self.config
            now = self.clock()
            data: dict[str, Any] = {
                "img_uuid": job_id,
                "type": "mx-v2v",
                "job_type": "mx-v2v",
                "model_id": str(job.args.model),
                "start_time": iso(job.submitted_at),
                "json": None,
            }
            status = schedule.api_status(
                job,
                now,
                waiting_status=cfg["waiting_status"],
                success_status=cfg["success_status"],
            )
            if job.state != "active" and job.end_time is not None:
                data["end_time"] = iso(job.end_time)
            if job.state == "success" and job.end_time is not None:
                data.update(self._result_fields(job, job.end_time, now, expired_url=expired_url))
            data["status"] = status_override if status_override is not None else status
            return data

    def _result_fields(
        self, job: JobRecord, end_time: float, now: float, *, expired_url: bool
    ) -> dict[str, Any]:
        """The result URL of a successful job, signed, in the configured `result_field`."""
        cfg = self.config
        exp = int(now) - 1 if expired_url else math.ceil(end_time + cfg["url_ttl"])
        path = result_url_path(job.id)
        url = f"{self.public_base}{path}?exp={exp}&sig={self.sign(path, exp)}"
        field = cfg["result_field"]
        if field == "json":
            item = {
                "type": "video",
                "value": url,
                "duration": float(job.render.duration or job.args.duration),
                "link_expired_at": iso(exp),
            }
            return {"json": [item]}
        if field == "img_url":
            return {"img_url": url}
        return {"output": {"video_url": url}}

    def job_exists(self, aid: str, job_id: str) -> bool:
        """True when the job exists and belongs to the account."""
        with self.lock:
            job = self.jobs.get(job_id)
            return job is not None and job.account == aid

    def result_file_for(self, job_id: str) -> Path | None:
        """The rendered file of a successful job, or None."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.state != "success":
                return None
        p = self.result_path(job_id)
        return p if p.is_file() else None

    # -- previews --------------------------------------------------------------------------------
    def preview(self, model: int) -> bytes | None:
        """The cached JPEG preview of a style (rendered on first use), or None if unknown."""
        m = catalog.MODELS_BY_ID.get(model)
        if m is None:
            return None
        p = self.state_dir / "previews" / f"{model}.jpg"
        if p.is_file():
            return p.read_bytes()
        data = media.preview_jpeg(m[4])
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, p)
        return data

    def wipe_tmp(self) -> None:
        """Remove leftovers in `tmp/` (called at start)."""
        shutil.rmtree(self.state_dir / "tmp", ignore_errors=True)
        (self.state_dir / "tmp").mkdir(parents=True, exist_ok=True)
