"""Simulator state: accounts, jobs, lifecycle, credits, signed URLs, persistence.

All state lives in a state directory as JSON files written atomically (temp file +
`os.replace`): `secret.json` (default key + URL signing secret, mode 0600), `accounts.json`,
`jobs.json`, `config.json`; plus `files/` (uploads), `results/` (rendered videos),
`previews/` (style thumbnails) and `tmp/`. A job's lifecycle is derived from timestamps
(`slot_start` + its pending and processing times), so it continues across a restart.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from goenhance_nb.sim import media
from goenhance_nb.sim.config import default_config, validate_patch
from goenhance_nb.sim.faults import FaultQueue

#: The simulator's model list: (id, label, version, isVip, style, category).
MODELS: list[tuple[int, str, str, bool, str, str]] = [
    (2000, "Anime Style", "v5", False, "anime", "default"),
    (2004, "Pixar Style", "v5", False, "pixar", "default"),
    (2005, "Clay Style", "v5", True, "clay", "default"),
    (2006, "Oil Painting", "v5", False, "oil", "art"),
    (2007, "Watercolor", "v5", False, "watercolor", "art"),
    (2012, "Pencil Sketch", "v5", False, "pencil", "art"),
    (2008, "Cyberpunk", "v5", False, "cyberpunk", "scifi"),
]
CATEGORIES: list[tuple[str, str]] = [("Popular", "default"), ("Art", "art"), ("Sci-Fi", "scifi")]
MODELS_BY_ID = {m[0]: m for m in MODELS}

RESOLUTION_HEIGHT = {"540p": 540, "720p": 720}
MAX_SOURCE_BYTES = 200 * 1024 * 1024
MAX_LOG = 20000
#: Bump when the transforms change, so cached renders are not reused.
RENDER_VERSION = 1


class APIFailure(Exception):
    """A business error answered as HTTP 200 with a non-zero envelope code."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


def iso(ts: float) -> str:
    """UTC ISO-8601 with milliseconds and a `Z`, as the API's `start_time`."""
    d = dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def write_json(path: Path, obj: Any, *, mode: int | None = None) -> None:
    """Write JSON atomically: a temp file in the same dir, fsync, then `os.replace`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default: Any) -> Any:
    """Read a JSON file, or return `default` when it is missing."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def account_id(key: str) -> str:
    """Stable account id for a key (never the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


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
        self._url_secret = bytes.fromhex(secret["url_secret"])
        self.keys: dict[str, str] = {}  # key -> account id
        for k in [self.default_key, *(extra_keys or [])]:
            self.keys[k] = account_id(k)
        self.config = default_config()
        self.config.update(validate_patch(read_json(state_dir / "config.json", {})))
        if config:
            self.config.update(validate_patch(config))
        self.start_config = dict(default_config(), **validate_patch(config or {}))
        self.accounts: dict[str, dict[str, Any]] = read_json(state_dir / "accounts.json", {})
        for n, aid in enumerate(sorted(set(self.keys.values()))):
            self.accounts.setdefault(aid, self._new_account(aid, n))
        self.jobs: dict[str, dict[str, Any]] = read_json(state_dir / "jobs.json", {})
        for job in self.jobs.values():
            if job["render"]["status"] == "running":  # interrupted by a restart: redo it
                job["render"] = {"status": "none"}
        self.faults = FaultQueue()
        self.requests: list[dict[str, Any]] = []
        self.public_base = ""
        self.own_netlocs: set[str] = set()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sim-render")
        self._stopping = threading.Event()
        self._dirty = True
        self.save()

    # -- persistence --------------------------------------------------------------------------
    def _new_account(self, aid: str, n: int) -> dict[str, Any]:
        return {
            "user_id": f"sim-user-{aid[:8]}",
            "credits": int(self.config["credits"]),
            "day": "",
            "day_count": 0,
        }

    def save(self) -> None:
        """Persist accounts, jobs and config if anything changed."""
        with self.lock:
            if not self._dirty:
                return
            write_json(self.state_dir / "accounts.json", self.accounts)
            write_json(self.state_dir / "jobs.json", self.jobs)
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

    # -- auth, config ------------------------------------------------------------------------
    def account_for(self, key: str | None) -> str | None:
        """The account id for a bearer key, or None if it is not accepted."""
        if not key:
            return None
        for k, aid in self.keys.items():
            if hmac.compare_digest(k.encode(), key.encode()):
                return aid
        return None

    def patch_config(self, patch: object) -> dict[str, Any]:
        """Apply a validated config patch (`credits` also sets every balance) and return it."""
        clean = validate_patch(patch)
        with self.lock:
            self.config.update(clean)
            if "credits" in clean:
                for acc in self.accounts.values():
                    acc["credits"] = clean["credits"]
            self._dirty = True
            self.save()
            return dict(self.config)

    def reset_config(self) -> dict[str, Any]:
        """Restore the start config (defaults + `--config`) and set every balance to its
        `credits`; returns the config."""
        with self.lock:
            self.config = dict(self.start_config)
            for acc in self.accounts.values():
                acc["credits"] = int(self.config["credits"])
            self._dirty = True
            self.save()
            return dict(self.config)

    def log_request(self, method: str, path: str, query: str, status: int) -> dict[str, Any]:
        """Append one entry to the request log (never headers) and return it (mutable, so the
        HTTP layer can fill in the status once the response starts)."""
        entry = {
            "method": method,
            "path": path,
            "query": query,
            "status": status,
            "ts": self.clock(),
        }
        with self.lock:
            self.requests.append(entry)
            if len(self.requests) > MAX_LOG:
                del self.requests[: len(self.requests) - MAX_LOG]
        return entry

    # -- API: models, tokens -----------------------------------------------------------------
    def model_list(self) -> list[dict[str, Any]]:
        """The modellist `data`: categories with their models."""
        cats = []
        for label, value in CATEGORIES:
            items = [
                {
                    "label": m[1],
                    "value": m[0],
                    "version": m[2],
                    "isVip": m[3],
                    "url": f"{self.public_base}/sim/previews/{m[0]}.jpg",
                }
                for m in MODELS
                if m[5] == value
            ]
            cats.append({"label": label, "value": value, "list": items})
        return cats

    def tokens(self, aid: str) -> dict[str, Any]:
        """The user/tokens `data` for an account."""
        with self.lock:
            acc = self.accounts[aid]
            return {
                "count": acc["credits"],
                "queueLimit": self.config["queue_limit"],
                "user_id": acc["user_id"],
            }

    def cost(self, model: int, duration: int, resolution: str) -> int:
        """ceil(duration) x rate(resolution), x vip_multiplier for VIP models (rounded up)."""
        rate = float(self.config["rates"].get(resolution, 0))
        c = math.ceil(duration) * rate
        if MODELS_BY_ID[model][3]:
            c *= float(self.config["vip_multiplier"])
        return math.ceil(c - 1e-9)

    # -- API: generate -----------------------------------------------------------------------
    @staticmethod
    def validate_body(body: object) -> dict[str, Any]:
        """Check a generate body; return the normalised args.

        :raises APIFailure: code 400 `invalid params: <field>` or `invalid model`.
        """
        if not isinstance(body, dict):
            raise APIFailure(400, "invalid params: body")
        if body.get("type") != "mx-v2v":
            raise APIFailure(400, "invalid params: type")
        args = body.get("args")
        if not isinstance(args, dict):
            raise APIFailure(400, "invalid params: args")
        model = args.get("model")
        if isinstance(model, str) and model.isdigit():
            model = int(model)
        if not isinstance(model, int) or isinstance(model, bool) or model not in MODELS_BY_ID:
            raise APIFailure(400, "invalid model")
        url = args.get("reference_video_url")
        if (
            not isinstance(url, str)
            or urlsplit(url).scheme not in ("http", "https")
            or not urlsplit(url).netloc
        ):
            raise APIFailure(400, "invalid params: reference_video_url")
        duration = args.get("duration")
        if not isinstance(duration, int) or isinstance(duration, bool) or not 3 <= duration <= 30:
            raise APIFailure(400, "invalid params: duration")
        resolution = args.get("resolution")
        if resolution not in RESOLUTION_HEIGHT:
            raise APIFailure(400, "invalid params: resolution")
        seed = args.get("seed", -1)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise APIFailure(400, "invalid params: seed")
        prompt = args.get("prompt")
        if prompt is not None and (not isinstance(prompt, str) or len(prompt) > 500):
            raise APIFailure(400, "invalid params: prompt")
        return {
            "model": model,
            "reference_video_url": url,
            "duration": duration,
            "resolution": resolution,
            "seed": seed,
            "prompt": prompt,
        }

    def generate(self, aid: str, body: object, *, fail: bool = False) -> dict[str, Any]:
        """Create a job for `aid` and return `{"img_uuid", "cost"}`; deducts credits.

        :raises APIFailure: validation (400), daily cap (429), insufficient credits (402).
        """
        args = self.validate_body(body)
        now = self.clock()
        with self.lock:
            acc = self.accounts[aid]
            cap = self.config["daily_cap"]
            today = dt.datetime.fromtimestamp(now, tz=dt.timezone.utc).strftime("%Y-%m-%d")
            if acc["day"] != today:
                acc["day"], acc["day_count"] = today, 0
            if cap is not None and acc["day_count"] >= cap:
                raise APIFailure(429, "daily limit exceeded")
            cost = self.cost(args["model"], args["duration"], args["resolution"])
            if acc["credits"] < cost:
                raise APIFailure(402, "insufficient credits")
            acc["credits"] -= cost
            acc["day_count"] += 1
            cfg = self.config
            job_id = str(uuid.uuid4())
            self.jobs[job_id] = {
                "id": job_id,
                "account": aid,
                **args,
                "model_version": MODELS_BY_ID[args["model"]][2],
                "cost": cost,
                "submitted_at": now,
                "slot_start": None,
                "pending_s": float(cfg["pending_seconds"]),
                "processing_s": float(cfg["processing_seconds"])
                + float(cfg["processing_per_second"]) * args["duration"],
                "forced_fail": fail,
                "state": "active",
                "end_time": None,
                "error": None,
                "refunded": False,
                "render": {"status": "none"},
            }
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
                for job in sorted(self.jobs.values(), key=lambda j: j["submitted_at"]):
                    if job["state"] != "active" or job["slot_start"] is None:
                        continue
                    changed |= self._advance(job, now)
                changed |= self._assign_slots(now)
                if not changed:
                    break
                self._dirty = True
            self.save()

    def _advance(self, job: dict[str, Any], now: float) -> bool:
        proc_start = job["slot_start"] + job["pending_s"]
        if now < proc_start:
            return False
        planned_end = proc_start + job["processing_s"]
        if job["forced_fail"]:
            if now >= planned_end:
                self._finish(job, "failed", planned_end, "generation failed")
                return True
            return False
        render = job["render"]
        if render["status"] == "none":
            self._start_render(job)
            return True
        if now >= planned_end and render["status"] in ("done", "failed"):
            end = max(planned_end, render["done_at"])
            if render["status"] == "done":
                self._finish(job, "success", end, None)
            else:
                self._finish(job, "failed", end, render.get("error") or "generation failed")
            return True
        return False

    def _finish(self, job: dict[str, Any], state: str, end: float, error: str | None) -> None:
        job["state"], job["end_time"], job["error"] = state, end, error
        if state == "failed" and self.config["refund_on_failure"] and not job["refunded"]:
            self.accounts[job["account"]]["credits"] += job["cost"]
            job["refunded"] = True

    def _assign_slots(self, now: float) -> bool:
        limit = max(1, int(self.config["queue_limit"]))
        changed = False
        by_acc: dict[str, list[dict[str, Any]]] = {}
        for job in self.jobs.values():
            if job["state"] == "active":
                by_acc.setdefault(job["account"], []).append(job)
        for aid, jobs in by_acc.items():
            active = sum(1 for j in jobs if j["slot_start"] is not None)
            waiting = sorted(
                (j for j in jobs if j["slot_start"] is None), key=lambda j: j["submitted_at"]
            )
            if not waiting or active >= limit:
                continue
            ends = [
                j["end_time"]
                for j in self.jobs.values()
                if j["account"] == aid and j["end_time"] is not None and j["slot_start"] is not None
            ]
            last_free = max(ends) if ends else 0.0
            for job in waiting[: limit - active]:
                job["slot_start"] = min(now, max(job["submitted_at"], last_free))
                changed = True
        return changed

    # -- rendering ---------------------------------------------------------------------------
    def result_path(self, job_id: str) -> Path:
        """Where the rendered output of a job lives."""
        return self.state_dir / "results" / f"{job_id}.mp4"

    def _start_render(self, job: dict[str, Any]) -> None:
        job["render"] = {"status": "running"}
        spec = {k: job[k] for k in ("id", "model", "reference_video_url", "duration", "resolution")}
        try:
            self._pool.submit(self._render_job, spec)
        except RuntimeError:  # pool shut down
            job["render"] = {"status": "none"}

    def _render_job(self, spec: dict[str, Any]) -> None:
        job_id = spec["id"]
        src = self.state_dir / "tmp" / f"src-{job_id}"
        result: dict[str, Any]
        try:
            path = self._fetch_source(spec["reference_video_url"], src)
            out_dur = self._render_cached(
                path,
                self.result_path(job_id),
                style=MODELS_BY_ID[spec["model"]][4],
                duration=float(spec["duration"]),
                height=RESOLUTION_HEIGHT[spec["resolution"]],
            )
            result = {"status": "done", "duration": out_dur}
        except media.Cancelled:
            return  # shutting down: stays "running" on disk, reset to "none" at the next start
        except media.MediaError as exc:
            result = {"status": "failed", "error": str(exc)}
        except SourceError as exc:
            result = {"status": "failed", "error": str(exc)}
        except Exception as exc:  # never leave a job stuck in `processing`
            result = {"status": "failed", "error": f"internal error: {type(exc).__name__}"}
        finally:
            src.unlink(missing_ok=True)
        result["done_at"] = self.clock()
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None:
                job["render"] = result
                self._dirty = True
                self.save()

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
                cancel=self._stopping.is_set,
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

    def _fetch_source(self, url: str, dest: Path) -> Path:
        """Our own `/sim/files/<name>` (also under an earlier run's loopback port) is read from
        disk; anything else is fetched over HTTP with httpx.

        :raises SourceError: not found, HTTP status other than 200, transport error, too large.
        """
        parts = urlsplit(url)
        if parts.path.startswith("/sim/files/"):
            # content-addressed: our copy is the same bytes even when the URL names the port of
            # an earlier run of this simulator (a restart picks a new port)
            local = self.files_path(parts.path.removeprefix("/sim/files/"))
            loopback = (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")
            if (
                local is not None
                and local.is_file()
                and (loopback or parts.netloc in self.own_netlocs)
            ):
                return local
            if parts.netloc in self.own_netlocs:
                raise SourceError("source video not found")
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

    # -- files ---------------------------------------------------------------------------------
    def files_path(self, name: str) -> Path | None:
        """The path of an uploaded file by its public name, or None for an unsafe name."""
        if not name or "/" in name or "\\" in name or name.startswith("."):
            return None
        return self.state_dir / "files" / name

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
        return hmac.new(self._url_secret, f"{path}\n{exp}".encode(), hashlib.sha256).hexdigest()

    def verify(self, path: str, exp: str | None, sig: str | None) -> bool:
        """True when the signature matches and `exp` is in the future."""
        if not exp or not sig or not exp.isdigit():
            return False
        if not hmac.compare_digest(self.sign(path, int(exp)), sig):
            return False
        return int(exp) > self.clock()

    @staticmethod
    def result_url_path(job_id: str) -> str:
        """The public path of a job's result file."""
        return f"/sim/results/{job_id}/{job_id[:8]}_0.mp4"

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
            if job is None or job["account"] != aid:
                raise APIFailure(404, "job not found")
            cfg = self.config
            now = self.clock()
            data: dict[str, Any] = {
                "img_uuid": job_id,
                "type": "mx-v2v",
                "job_type": "mx-v2v",
                "model_id": str(job["model"]),
                "start_time": iso(job["submitted_at"]),
                "json": None,
            }
            if job["state"] == "success":
                status = cfg["success_status"]
            elif job["state"] == "failed":
                status = "failed"
            elif job["slot_start"] is None:
                status = cfg["waiting_status"]
            elif now < job["slot_start"] + job["pending_s"]:
                status = "pending"
            else:
                status = "processing"
            if job["state"] != "active":
                data["end_time"] = iso(job["end_time"])
            if job["state"] == "success":
                exp = int(now) - 1 if expired_url else math.ceil(job["end_time"] + cfg["url_ttl"])
                path = self.result_url_path(job_id)
                url = f"{self.public_base}{path}?exp={exp}&sig={self.sign(path, exp)}"
                field = cfg["result_field"]
                if field == "json":
                    data["json"] = [
                        {
                            "type": "video",
                            "value": url,
                            "duration": float(job["render"].get("duration") or job["duration"]),
                            "link_expired_at": iso(exp),
                        }
                    ]
                elif field == "img_url":
                    data["img_url"] = url
                else:
                    data["output"] = {"video_url": url}
            data["status"] = status_override if status_override is not None else status
            return data

    def job_exists(self, aid: str, job_id: str) -> bool:
        """True when the job exists and belongs to the account."""
        with self.lock:
            job = self.jobs.get(job_id)
            return job is not None and job["account"] == aid

    def result_file_for(self, job_id: str) -> Path | None:
        """The rendered file of a successful job, or None."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job["state"] != "success":
                return None
        p = self.result_path(job_id)
        return p if p.is_file() else None

    # -- previews --------------------------------------------------------------------------------
    def preview(self, model: int) -> bytes | None:
        """The cached JPEG preview of a style (rendered on first use), or None if unknown."""
        m = MODELS_BY_ID.get(model)
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


class SourceError(Exception):
    """The source video could not be fetched."""
