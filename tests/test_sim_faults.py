# ruff: noqa: F811  (pytest fixtures imported from test_sim_support)
"""Every fault kind of `/sim/faults`, observed the way a client sees it (loopback HTTP)."""

from __future__ import annotations

import json
from typing import Any

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
    result_url,
    upload,
    wait_for,
)

TOKENS = "/api/v1/user/tokens"
GENERATE = "/api/v1/video2video/generate"
DETAIL = "/api/v1/jobs/detail"


@pytest.mark.parametrize(
    ("kind", "status", "msg"),
    [
        ("http_500", 500, "Server Error"),
        ("http_503", 503, "Service Unavailable"),
        ("http_429", 429, "Too Many Requests"),
    ],
)
def test_http_error_faults_are_one_shot_and_path_scoped(
    http: httpx.Client, sim: SimProcess, kind: str, status: int, msg: str
) -> None:
    sim.faults({"kind": kind, "path": TOKENS, "times": 2, "retry_after": 3})
    assert http.get("/api/v1/video2video/modellist").status_code == 200  # other path: untouched
    for _ in range(2):
        r = http.get(TOKENS)
        assert r.status_code == status
        assert r.json() == {"code": status, "msg": msg, "data": None}
    if kind != "http_500":
        assert r.headers["retry-after"] == "3"
    assert http.get(TOKENS).status_code == 200  # used up
    assert [q["status"] for q in sim.requests(TOKENS)] == [status, status, 200]


def test_http_429_default_retry_after(http: httpx.Client, sim: SimProcess) -> None:
    sim.faults({"kind": "http_429"})
    r = http.get(TOKENS)
    assert r.status_code == 429 and r.headers["retry-after"] == "1"


def test_refused_generate_creates_no_job(
    http: httpx.Client, sim: SimProcess, clip_url: str
) -> None:
    before = credits(http)
    sim.faults({"kind": "http_503", "path": GENERATE})
    r = http.post(GENERATE, json=gen_body(clip_url))
    assert r.status_code == 503
    assert credits(http) == before
    assert sim.generate_calls() == 1


def test_reset_drops_the_connection_without_a_response(http: httpx.Client, sim: SimProcess) -> None:
    sim.faults({"kind": "reset", "path": TOKENS})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.get(TOKENS)
    assert http.get(TOKENS).status_code == 200
    assert [q["status"] for q in sim.requests(TOKENS)] == [0, 200]


def test_reset_after_generate_ran_leaves_a_charged_job(
    http: httpx.Client, sim: SimProcess, clip_url: str
) -> None:
    """`after: true`: the job exists and was charged, but the client never got the id."""
    before = credits(http)
    sim.faults({"kind": "reset", "path": GENERATE, "after": True})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.post(GENERATE, json=gen_body(clip_url))
    assert credits(http) == before - 15
    assert sim.generate_calls() == 1


def test_slow_delays_the_answer(http: httpx.Client, sim: SimProcess) -> None:
    sim.faults({"kind": "slow", "path": TOKENS, "delay": 1.5})
    with pytest.raises(httpx.ReadTimeout):
        http.get(TOKENS, timeout=0.2)
    sim.faults({"kind": "slow", "path": TOKENS, "delay": 0.2})
    r = http.get(TOKENS, timeout=30)
    assert r.status_code == 200 and r.json()["code"] == 0  # slow, but a normal answer


def test_malformed_json(http: httpx.Client, sim: SimProcess) -> None:
    sim.faults({"kind": "malformed_json", "path": TOKENS})
    r = http.get(TOKENS)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        r.json()
    assert http.get(TOKENS).json()["code"] == 0


def test_faults_never_hit_the_control_api(http: httpx.Client, sim: SimProcess) -> None:
    sim.faults({"kind": "http_500"})  # no path: any API or download path
    assert http.get("/sim/config").status_code == 200
    assert http.get("/sim/health").status_code == 200
    assert http.get("/sim/faults").json()["faults"][0]["kind"] == "http_500"
    assert http.get(TOKENS).status_code == 500
    assert http.get("/sim/faults").json()["faults"] == []


def test_clear_faults(http: httpx.Client, sim: SimProcess) -> None:
    sim.faults({"kind": "http_500", "times": 5})
    sim.clear_faults()
    assert http.get(TOKENS).status_code == 200


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "nope"},
        {"kind": "reset", "times": 0},
        {"kind": "slow", "delay": -1},
        {"kind": "reset", "path": 3},
        {"kind": "reject_generate", "code": 0},
        "x",
    ],
)
def test_bad_fault_is_refused(http: httpx.Client, bad: Any) -> None:
    r = http.post("/sim/faults", json={"faults": [bad]})
    assert r.status_code == 400
    assert http.get("/sim/faults").json()["faults"] == []


def test_unknown_status_for_n_polls(http: httpx.Client, sim: SimProcess, clip_url: str) -> None:
    job = generate(http, clip_url)["img_uuid"]
    wait_for(http, job)
    sim.faults({"kind": "unknown_status", "status": "RENDERING_HQ", "times": 2})
    for _ in range(2):
        data = detail(http, job)["data"]
        assert data["status"] == "RENDERING_HQ"
    assert detail(http, job)["data"]["status"] == "success"


def test_unknown_status_targets_one_job(http: httpx.Client, sim: SimProcess, clip_url: str) -> None:
    a = generate(http, clip_url)["img_uuid"]
    b = generate(http, clip_url)["img_uuid"]
    wait_for(http, a)
    wait_for(http, b)
    sim.faults({"kind": "unknown_status", "img_uuid": b})
    assert detail(http, a)["data"]["status"] == "success"
    assert detail(http, b)["data"]["status"] == "mystery"


def test_lost_job(http: httpx.Client, sim: SimProcess, clip_url: str) -> None:
    job = generate(http, clip_url)["img_uuid"]
    sim.faults({"kind": "lost_job"})
    assert detail(http, job) == {"code": 404, "msg": "job not found", "data": None}
    assert detail(http, job)["code"] == 0


def test_expired_url(http: httpx.Client, sim: SimProcess, clip_url: str) -> None:
    job = generate(http, clip_url)["img_uuid"]
    sim.faults({"kind": "expired_url"})
    done = wait_for(http, job)  # the fault waits for the first URL handed out
    r = httpx.get(result_url(done))
    assert r.status_code == 403 and r.json()["code"] == 403
    fresh = result_url(detail(http, job)["data"])
    assert fresh != result_url(done)
    assert httpx.get(fresh).status_code == 200


def test_truncated_download_then_resume_with_range(
    http: httpx.Client, sim: SimProcess, clip_url: str
) -> None:
    url = result_url(wait_for(http, generate(http, clip_url)["img_uuid"]))
    full = httpx.get(url).content
    sim.faults({"kind": "truncated_download", "after_bytes": 5000})
    got = bytearray()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)), httpx.stream("GET", url) as r:
        assert r.headers["content-length"] == str(len(full))  # announces the whole file
        for chunk in r.iter_raw():
            got += chunk
    assert bytes(got) == full[:5000]
    rest = httpx.get(url, headers={"Range": f"bytes={len(got)}-"})
    assert rest.status_code == 206
    assert bytes(got) + rest.content == full


def test_truncated_download_on_files(http: httpx.Client, sim: SimProcess) -> None:
    data = bytes(range(256)) * 400
    url = upload(http, data, "blob.bin")
    sim.faults({"kind": "truncated_download", "path": "/sim/files/", "after_bytes": 1000})
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        httpx.get(url)
    assert httpx.get(url).content == data


def test_job_failed(http: httpx.Client, sim: SimProcess, clip_url: str) -> None:
    sim.faults({"kind": "job_failed"})
    bad = generate(http, clip_url)["img_uuid"]
    good = generate(http, clip_url)["img_uuid"]
    failed = wait_for(http, bad)
    assert failed["status"] == "failed" and failed["json"] is None and "end_time" in failed
    assert wait_for(http, good)["status"] == "success"


def test_reject_generate(http: httpx.Client, sim: SimProcess, clip_url: str) -> None:
    before = credits(http)
    sim.faults({"kind": "reject_generate", "code": 1005, "msg": "model busy"})
    r = http.post(GENERATE, json=gen_body(clip_url))
    assert r.status_code == 200
    assert r.json() == {"code": 1005, "msg": "model busy", "data": None}
    assert credits(http) == before
    assert generate(http, clip_url)["img_uuid"]
