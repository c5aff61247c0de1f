# ruff: noqa: F811  (pytest fixtures imported from test_sim_support)
"""The simulator's API surface over real loopback HTTP: auth, endpoints, validation table,
lifecycle and its switches, queue limit, credits, signed URLs, Range, uploads, control API."""

from __future__ import annotations

import hashlib
import json
import math
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from simctl import SimProcess
from test_sim_support import (  # noqa: F401  (fixtures)
    client,
    clip_bytes,
    clip_url,
    credits,
    detail,
    gen_body,
    generate,
    http,
    restore_credits,
    result_url,
    upload,
    wait_for,
)

API_GETS = [
    "/api/v1/video2video/modellist",
    "/api/v1/user/tokens",
    "/api/v1/jobs/detail?img_uuid=x",
]
UNAUTH = {"code": 401, "msg": "Unauthorized", "data": None}


# -- auth -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
    ],
)
def test_api_refuses_missing_or_bad_key_with_401_envelope(
    sim: SimProcess, headers: dict[str, str]
) -> None:
    with httpx.Client(base_url=sim.base_url, headers=headers) as c:
        for path in API_GETS:
            r = c.get(path)
            assert r.status_code == 401 and r.json() == UNAUTH, path
        r = c.post("/api/v1/video2video/generate", json=gen_body("http://x/y.mp4"))
        assert r.status_code == 401 and r.json() == UNAUTH
        for path in ("/sim/requests", "/sim/config", "/sim/faults"):
            assert c.get(path).status_code == 401
        assert c.put("/sim/uploads", content=b"abc").status_code == 401
    assert sim.generate_calls() == 1  # refused calls are still logged
    assert all(q["status"] == 401 for q in sim.requests("/api/"))


def test_health_needs_no_auth(sim: SimProcess) -> None:
    r = httpx.get(sim.base_url + "/sim/health")
    assert r.status_code == 200
    assert r.json() == {
        "ok": True,
        "service": "goenhance-simulator",
        "pid": sim.proc.pid,
        "version": 1,
    }
    assert r.headers["X-GoEnhance-Simulator"] == "1"  # the identity (DECISIONS 26)


def test_unknown_route_is_a_404_envelope(http: httpx.Client) -> None:
    r = http.get("/api/v1/nope")
    assert r.status_code == 404 and r.json()["code"] == 404


# -- model list, tokens ------------------------------------------------------------------------
def test_modellist_lists_the_styles_with_preview_urls(http: httpx.Client) -> None:
    env = http.get("/api/v1/video2video/modellist").json()
    assert env["code"] == 0 and env["msg"] == "Success"
    cats = env["data"]
    assert any(c["value"] == "default" for c in cats)
    models = {m["value"]: m for c in cats for m in c["list"]}
    want = {
        2000: "Anime Style",
        2004: "Pixar Style",
        2005: "Clay Style",
        2006: "Oil Painting",
        2007: "Watercolor",
        2008: "Cyberpunk",
        2012: "Pencil Sketch",
    }
    assert {k: models[k]["label"] for k in want} == want
    assert all(m["version"] == "v5" for m in models.values())
    assert models[2005]["isVip"] is True and models[2000]["isVip"] is False
    jpeg = httpx.get(models[2008]["url"])  # public, no auth
    assert jpeg.status_code == 200 and jpeg.headers["content-type"] == "image/jpeg"
    assert jpeg.content[:3] == b"\xff\xd8\xff"
    other = httpx.get(models[2012]["url"]).content
    assert other != jpeg.content
    assert httpx.get(models[2008]["url"].replace("2008", "9999")).status_code == 404


def test_tokens(http: httpx.Client, sim: SimProcess) -> None:
    sim.config(queue_limit=4)
    data = http.get("/api/v1/user/tokens").json()["data"]
    assert isinstance(data["count"], int) and data["queueLimit"] == 4
    assert data["user_id"].startswith("sim-user-")
    assert sim.api_key not in json.dumps(data)


# -- generate validation (spec §5.4) ----------------------------------------------------------
def _bad(url: str, **args: Any) -> dict[str, Any]:
    body = gen_body(url)
    body["args"].update(args)
    return body


@pytest.mark.parametrize(
    ("mutate", "code", "msg"),
    [
        (lambda u: {"args": gen_body(u)["args"]}, 400, "invalid params: type"),
        (lambda u: {"type": "mx-t2i", "args": gen_body(u)["args"]}, 400, "invalid params: type"),
        (lambda u: {"type": "mx-v2v"}, 400, "invalid params: args"),
        (lambda u: [1, 2], 400, "invalid params: body"),
        (lambda u: _bad(u, model=1), 400, "invalid model"),
        (lambda u: _bad(u, model="anime"), 400, "invalid model"),
        (
            lambda u: _bad(u, reference_video_url="ftp://x/y.mp4"),
            400,
            "invalid params: reference_video_url",
        ),
        (lambda u: _bad(u, reference_video_url=None), 400, "invalid params: reference_video_url"),
        (lambda u: _bad(u, duration=2), 400, "invalid params: duration"),
        (lambda u: _bad(u, duration=31), 400, "invalid params: duration"),
        (lambda u: _bad(u, duration="5"), 400, "invalid params: duration"),
        (lambda u: _bad(u, resolution="1080p"), 400, "invalid params: resolution"),
        (lambda u: _bad(u, seed="x"), 400, "invalid params: seed"),
        (lambda u: _bad(u, prompt="p" * 501), 400, "invalid params: prompt"),
    ],
)
def test_generate_validation_errors(
    http: httpx.Client, sim: SimProcess, clip_url: str, mutate: Any, code: int, msg: str
) -> None:
    before = credits(http)
    r = http.post("/api/v1/video2video/generate", json=mutate(clip_url))
    assert r.status_code == 200
    assert r.json() == {"code": code, "msg": msg, "data": None}
    assert credits(http) == before


def test_generate_malformed_json_body(http: httpx.Client) -> None:
    r = http.post(
        "/api/v1/video2video/generate",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200 and r.json()["code"] == 400
    assert r.json()["msg"].startswith("invalid params")


def test_prompt_of_500_chars_is_accepted(http: httpx.Client, clip_url: str) -> None:
    data = generate(http, clip_url, prompt="p" * 500)
    assert data["img_uuid"]


def test_jobs_detail_unknown_and_missing_id(http: httpx.Client) -> None:
    assert detail(http, "00000000-0000-4000-8000-000000000000") == {
        "code": 404,
        "msg": "job not found",
        "data": None,
    }
    r = http.get("/api/v1/jobs/detail")
    assert r.status_code == 200 and r.json()["code"] == 400


# -- lifecycle -------------------------------------------------------------------------------
def test_lifecycle_pending_processing_success(
    http: httpx.Client, sim: SimProcess, clip_url: str
) -> None:
    sim.config(pending_seconds=1.5, processing_seconds=1.5)
    data = generate(http, clip_url, duration=3, resolution="540p")
    job = data["img_uuid"]
    first = detail(http, job)["data"]
    assert first["status"] == "pending"
    assert first["json"] is None and "end_time" not in first
    assert first["type"] == first["job_type"] == "mx-v2v"
    assert first["model_id"] == "2000" and first["img_uuid"] == job
    assert first["start_time"].endswith("Z") and len(first["start_time"]) == 24
    seen: list[str] = ["pending"]
    done = wait_for(http, job, seen=seen)
    assert seen == ["pending", "processing", "success"]
    assert done["end_time"] > done["start_time"]
    (item,) = done["json"]
    assert item["type"] == "video" and item["duration"] == pytest.approx(3.0, abs=0.1)
    assert item["link_expired_at"].endswith("Z")
    url = item["value"]
    assert urlsplit(url).path == f"/sim/results/{job}/{job[:8]}_0.mp4"
    r = httpx.get(url)  # signed URL: no bearer needed
    assert r.status_code == 200 and r.headers["content-type"] == "video/mp4"
    assert int(r.headers["content-length"]) == len(r.content) > 1000
    # the URL stays the same on later polls (stable signature)
    assert result_url(detail(http, job)["data"]) == url


def test_completed_status_switch(http: httpx.Client, sim: SimProcess, clip_url: str) -> None:
    sim.config(success_status="completed")
    job = generate(http, clip_url)["img_uuid"]
    done = wait_for(http, job)
    assert done["status"] == "completed" and done["json"][0]["value"]


@pytest.mark.parametrize("field", ["img_url", "output"])
def test_result_field_switch(
    http: httpx.Client, sim: SimProcess, clip_url: str, field: str
) -> None:
    sim.config(result_field=field)
    job = generate(http, clip_url)["img_uuid"]
    done = wait_for(http, job)
    assert done["json"] is None
    if field == "img_url":
        url = done["img_url"]
        assert "output" not in done
    else:
        url = done["output"]["video_url"]
        assert "img_url" not in done
    assert httpx.get(url).status_code == 200


@pytest.mark.parametrize("waiting", ["WAITING", "queued"])
def test_jobs_over_the_queue_limit_wait(
    http: httpx.Client, sim: SimProcess, clip_url: str, waiting: str
) -> None:
    sim.config(queue_limit=1, waiting_status=waiting, pending_seconds=1.0, processing_seconds=0.3)
    a = generate(http, clip_url)["img_uuid"]
    b = generate(http, clip_url)["img_uuid"]
    assert detail(http, a)["data"]["status"] in ("pending", "processing")
    assert detail(http, b)["data"]["status"] == waiting
    assert detail(http, b)["data"]["json"] is None
    seen_b: list[str] = []
    done_a = wait_for(http, a)
    done_b = wait_for(http, b, seen=seen_b)
    assert done_a["status"] == done_b["status"] == "success"
    assert done_b["end_time"] > done_a["end_time"]  # b only ran after a freed the slot


# -- credits -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("model", "duration", "resolution", "cost"),
    [
        (2000, 3, "540p", 15),
        (2000, 5, "720p", 50),
        (2005, 5, "720p", 75),
        (2005, 3, "540p", 23),
    ],
)
def test_cost_is_deducted_at_submission(
    http: httpx.Client,
    clip_url: str,
    restore_credits: None,
    model: int,
    duration: int,
    resolution: str,
    cost: int,
) -> None:
    before = credits(http)
    data = generate(http, clip_url, model=model, duration=duration, resolution=resolution)
    assert (
        data["cost"]
        == cost
        == math.ceil(duration * {"540p": 5, "720p": 10}[resolution] * (1.5 if model == 2005 else 1))
    )
    assert credits(http) == before - cost


def test_rates_are_configurable(
    http: httpx.Client, sim: SimProcess, clip_url: str, restore_credits: None
) -> None:
    sim.config(rates={"540p": 1, "720p": 2}, vip_multiplier=2)
    assert generate(http, clip_url, model=2005, duration=4, resolution="720p")["cost"] == 16
    sim.config(rates={"540p": 5, "720p": 10}, vip_multiplier=1.5)


def test_insufficient_credits(
    http: httpx.Client, sim: SimProcess, clip_url: str, restore_credits: None
) -> None:
    sim.config(credits=14)
    r = http.post("/api/v1/video2video/generate", json=gen_body(clip_url, duration=3))
    assert r.json() == {"code": 402, "msg": "insufficient credits", "data": None}
    assert credits(http) == 14
    sim.config(credits=15)
    assert generate(http, clip_url, duration=3)["cost"] == 15
    assert credits(http) == 0


def test_refund_on_failure_flag(
    http: httpx.Client, sim: SimProcess, clip_url: str, restore_credits: None
) -> None:
    sim.config(credits=1000)
    sim.faults({"kind": "job_failed"})
    job = generate(http, clip_url, duration=3)["img_uuid"]
    assert credits(http) == 985
    failed = wait_for(http, job)
    assert failed["status"] == "failed" and failed["json"] is None and failed["end_time"]
    assert credits(http) == 1000  # refunded
    sim.config(refund_on_failure=False)
    sim.faults({"kind": "job_failed"})
    job = generate(http, clip_url, duration=3)["img_uuid"]
    assert wait_for(http, job)["status"] == "failed"
    assert credits(http) == 985  # kept


def test_daily_cap(http: httpx.Client, sim: SimProcess, clip_url: str) -> None:
    generate(http, clip_url)
    sim.config(daily_cap=0)
    r = http.post("/api/v1/video2video/generate", json=gen_body(clip_url))
    assert r.status_code == 200
    assert r.json() == {"code": 429, "msg": "daily limit exceeded", "data": None}
    sim.config(daily_cap=None)
    generate(http, clip_url)


# -- signed result URLs ------------------------------------------------------------------------
@pytest.fixture
def done_job(http: httpx.Client, clip_url: str) -> dict[str, Any]:
    """A finished 3 s 540p job's detail data."""
    return wait_for(http, generate(http, clip_url)["img_uuid"])


def test_result_url_bad_signature_is_403(done_job: dict[str, Any]) -> None:
    url = result_url(done_job)
    q = parse_qs(urlsplit(url).query)
    base = url.split("?")[0]
    for query in (
        f"exp={q['exp'][0]}&sig={'0' * 64}",
        f"exp={int(q['exp'][0]) + 1}&sig={q['sig'][0]}",
        f"exp={q['exp'][0]}",
        "",
    ):
        r = httpx.get(f"{base}?{query}")
        assert r.status_code == 403, query
        assert r.json()["code"] == 403
    other = base.replace("_0.mp4", "_1.mp4")  # signature is bound to the path
    assert httpx.get(f"{other}?{urlsplit(url).query}").status_code == 403


def test_result_url_expiry_follows_url_ttl(
    http: httpx.Client, sim: SimProcess, clip_url: str
) -> None:
    sim.config(url_ttl=0.5)
    done = wait_for(http, generate(http, clip_url)["img_uuid"])
    url = result_url(done)
    exp = int(parse_qs(urlsplit(url).query)["exp"][0])
    deadline = time.monotonic() + 10
    while time.time() <= exp + 0.05 and time.monotonic() < deadline:
        time.sleep(0.05)
    r = httpx.get(url)
    assert r.status_code == 403
    assert "expired" in r.json()["msg"]


def test_default_url_lifetime_is_12_hours(done_job: dict[str, Any]) -> None:
    exp = int(parse_qs(urlsplit(result_url(done_job)).query)["exp"][0])
    end = time.mktime(time.strptime(done_job["end_time"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert exp - end == pytest.approx(43200, abs=2)
    assert done_job["json"][0]["link_expired_at"][:19] == time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.gmtime(exp)
    )


# -- Range, uploads, files -----------------------------------------------------------------------
def test_range_requests_on_results(done_job: dict[str, Any]) -> None:
    url = result_url(done_job)
    full = httpx.get(url).content
    n = len(full)
    r = httpx.get(url, headers={"Range": "bytes=10-109"})
    assert r.status_code == 206 and r.content == full[10:110]
    assert (
        r.headers["content-range"] == f"bytes 10-109/{n}" and r.headers["content-length"] == "100"
    )
    r = httpx.get(url, headers={"Range": f"bytes={n - 50}-"})
    assert r.status_code == 206 and r.content == full[-50:]
    r = httpx.get(url, headers={"Range": "bytes=-20"})
    assert r.status_code == 206 and r.content == full[-20:]
    r = httpx.get(url, headers={"Range": f"bytes={n}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{n}"
    assert httpx.head(url).headers["content-length"] == str(n)


def test_upload_is_content_addressed_and_public(http: httpx.Client, sim: SimProcess) -> None:
    data = b"\x00\x01not really a video" * 100
    url = upload(http, data, filename="My Clip.MOV")
    sha = hashlib.sha256(data).hexdigest()
    assert urlsplit(url).path == f"/sim/files/{sha}.mov"
    assert upload(http, data, filename="My Clip.MOV") == url
    assert upload(http, data, filename="noext").endswith(f"{sha}.mp4")
    r = httpx.get(url)  # public, like a bucket URL
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "video/quicktime"
    r = httpx.get(url, headers={"Range": "bytes=5-9"})
    assert r.status_code == 206 and r.content == data[5:10]
    assert httpx.get(sim.base_url + "/sim/files/" + "0" * 64 + ".mp4").status_code == 404
    assert httpx.get(sim.base_url + "/sim/files/..%2Fsecret.json").status_code == 404
    assert http.put("/sim/uploads", content=b"").status_code == 400


def test_download_rate_throttles_result_downloads(
    http: httpx.Client, sim: SimProcess, done_job: dict[str, Any]
) -> None:
    url = result_url(done_job)
    size = int(httpx.head(url).headers["content-length"])
    assert size > 40_000
    sim.config(download_rate=20_000)
    with httpx.stream("GET", url) as r:
        it = r.iter_raw()
        got = len(next(it))
        # a throttled transfer is still in flight after its first bytes: a client can be killed
        assert got <= 2_000 < size
    part = httpx.get(url, headers={"Range": "bytes=0-5999"})
    assert part.status_code == 206 and len(part.content) == 6000
    sim.config(download_rate=None)
    assert len(httpx.get(url).content) == size


# -- control API -------------------------------------------------------------------------------
def test_request_log_never_stores_the_key(
    http: httpx.Client, sim: SimProcess, done_job: dict[str, Any]
) -> None:
    httpx.get(result_url(done_job))
    log = sim.requests()
    assert {tuple(sorted(q)) for q in log} == {("conn", "method", "path", "query", "status", "ts")}
    assert any(q["path"].startswith("/sim/results/") for q in log)
    assert any(q["path"] == "/api/v1/jobs/detail" and "img_uuid=" in q["query"] for q in log)
    text = http.get("/sim/requests").text
    assert sim.api_key not in text and "Bearer" not in text and "uthorization" not in text
    sim.clear_requests()
    assert sim.requests() == []


def test_config_get_patch_and_validation(http: httpx.Client, sim: SimProcess) -> None:
    cfg = sim.config()
    assert cfg["queue_limit"] == 3 and cfg["success_status"] == "success"
    assert set(cfg) >= {
        "pending_seconds",
        "processing_seconds",
        "processing_per_second",
        "result_field",
        "waiting_status",
        "url_ttl",
        "download_rate",
        "daily_cap",
        "refund_on_failure",
        "rates",
        "vip_multiplier",
        "credits",
    }
    assert sim.config(queue_limit=5)["queue_limit"] == 5
    for bad in (
        {"nope": 1},
        {"queue_limit": -1},
        {"success_status": "done"},
        {"result_field": "x"},
        {"download_rate": 0},
        {"refund_on_failure": "yes"},
    ):
        r = http.post("/sim/config", json=bad)
        assert r.status_code == 400, bad
    assert sim.config()["queue_limit"] == 5


def test_processing_time_grows_with_duration(
    http: httpx.Client, sim: SimProcess, clip_url: str
) -> None:
    """processing_per_second is frozen into a job at submission: a long one is still
    processing when a later, short one has finished."""
    sim.config(pending_seconds=0, processing_seconds=0, processing_per_second=20)
    slow = generate(http, clip_url, duration=3)["img_uuid"]
    sim.config(processing_per_second=0)
    fast = generate(http, clip_url, duration=3)["img_uuid"]
    assert wait_for(http, fast)["status"] == "success"
    assert detail(http, slow)["data"]["status"] == "processing"
