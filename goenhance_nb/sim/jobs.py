"""The simulator's typed job record, its render state and the generate-body validation.

`JobRecord.to_json()` / `from_json()` keep the `jobs.json` format of earlier versions (a job is
a flat object; `render` holds only the keys that apply), so a state dir survives an upgrade.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, TypeGuard
from urllib.parse import urlsplit

from goenhance_nb.sim.catalog import MODELS_BY_ID, RESOLUTION_HEIGHT

RenderStatus = Literal["none", "running", "done", "failed"]
JobState = Literal["active", "success", "failed"]


class APIFailure(Exception):
    """A business error answered as HTTP 200 with a non-zero envelope code."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg


@dataclass(frozen=True)
class GenerateArgs:
    """The validated `args` of a generate body."""

    model: int
    reference_video_url: str
    duration: int
    resolution: str
    seed: int
    prompt: str | None


@dataclass
class Render:
    """Where a job's background render is: `none` (not started), `running`, `done` (with the
    output `duration`) or `failed` (with `error`); `done_at` is when it finished."""

    status: RenderStatus = "none"
    duration: float | None = None
    error: str | None = None
    done_at: float | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Render:
        """Read the `render` object of a `jobs.json` entry."""
        return cls(
            status=d["status"],
            duration=d.get("duration"),
            error=d.get("error"),
            done_at=d.get("done_at"),
        )

    def to_json(self) -> dict[str, Any]:
        """The `render` object: `status` plus only the fields that are set."""
        out: dict[str, Any] = {"status": self.status}
        if self.duration is not None:
            out["duration"] = self.duration
        if self.error is not None:
            out["error"] = self.error
        if self.done_at is not None:
            out["done_at"] = self.done_at
        return out


@dataclass
class JobRecord:
    """One generation job. Its lifecycle is derived from timestamps: it gets a queue slot at
    `slot_start`, is `pending` for `pending_s`, then `processing` for `processing_s`; it ends
    when that time has passed *and* its render has finished (or at once when `forced_fail`)."""

    id: str
    account: str
    args: GenerateArgs
    model_version: str
    cost: int
    submitted_at: float
    pending_s: float
    processing_s: float
    forced_fail: bool
    slot_start: float | None = None
    state: JobState = "active"
    end_time: float | None = None
    error: str | None = None
    refunded: bool = False
    render: Render = field(default_factory=Render)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobRecord:
        """Read one `jobs.json` value."""
        return cls(
            id=d["id"],
            account=d["account"],
            args=GenerateArgs(**{f.name: d[f.name] for f in fields(GenerateArgs)}),
            model_version=d["model_version"],
            cost=d["cost"],
            submitted_at=d["submitted_at"],
            pending_s=d["pending_s"],
            processing_s=d["processing_s"],
            forced_fail=d["forced_fail"],
            slot_start=d["slot_start"],
            state=d["state"],
            end_time=d["end_time"],
            error=d["error"],
            refunded=d["refunded"],
            render=Render.from_json(d["render"]),
        )

    def to_json(self) -> dict[str, Any]:
        """The `jobs.json` value: flat (the args beside the other fields), `render` as
        :meth:`Render.to_json`."""
        out = asdict(self)
        out.update(out.pop("args"))
        out["render"] = self.render.to_json()
        return out


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_url(url: object) -> TypeGuard[str]:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validate_body(body: object) -> GenerateArgs:
    """Check a generate body; return its normalised args.

    :raises APIFailure: code 400 `invalid params: <field>` or `invalid model` (the first bad
        field in the order type, args, model, reference_video_url, duration, resolution, seed,
        prompt).
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
    if not _is_int(model) or model not in MODELS_BY_ID:
        raise APIFailure(400, "invalid model")
    url = args.get("reference_video_url")
    if not _valid_url(url):
        raise APIFailure(400, "invalid params: reference_video_url")
    duration = args.get("duration")
    if not _is_int(duration) or not 3 <= duration <= 30:
        raise APIFailure(400, "invalid params: duration")
    resolution = args.get("resolution")
    if resolution not in RESOLUTION_HEIGHT:
        raise APIFailure(400, "invalid params: resolution")
    seed = args.get("seed", -1)
    if not _is_int(seed):
        raise APIFailure(400, "invalid params: seed")
    prompt = args.get("prompt")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > 500):
        raise APIFailure(400, "invalid params: prompt")
    return GenerateArgs(
        model=model,
        reference_video_url=url,
        duration=duration,
        resolution=resolution,
        seed=seed,
        prompt=prompt,
    )
