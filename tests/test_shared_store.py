"""The team's shared store (issue 16), in one process: two sessions on two cache dirs share
one store on a real S3 protocol server on loopback (moto) or on a shared folder.

What is asserted is what users see (results, cached flags, warnings, errors) and what the
simulator's request log shows (``sim.generate_calls()``).
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from moto_s3 import CREDENTIALS, S3Server, s3_server  # noqa: F401 (fixture)
from workers.support import make_session, wait_until

from goenhance_nb._errors import LedgerError, StorageWarning
from goenhance_nb._lifecycle import PlanStatus
from goenhance_nb._session import Session
from goenhance_nb._settings import Settings
from goenhance_nb._shared import Claim, ClaimInfo, SharedStore
from goenhance_nb._store import probe_result

pytestmark = pytest.mark.slow

RUN: dict[str, Any] = {"duration": 3, "resolution": "540p"}
DETAIL = "/api/v1/jobs/detail"


@pytest.fixture(params=["s3", "folder"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh shared store: a prefix in the moto bucket, or a folder."""
    if request.param == "s3":
        server: S3Server = request.getfixturevalue("s3_server")
        return server.url()
    share = tmp_path / "team-share"
    share.mkdir()
    return str(share)


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["s3", "folder", "memory"])
def test_a_claim_is_an_exclusive_create(kind: str, request: pytest.FixtureRequest, tmp_path: Path):
    if kind == "s3":
        url = request.getfixturevalue("s3_server").url()
    elif kind == "folder":
        url = str(tmp_path / "share")
    else:
        url = f"memory://team-{tmp_path.name}"
    one, two = SharedStore(url, "simulated"), SharedStore(url, "simulated")
    mine = one.claim("k" * 64)
    assert isinstance(mine, Claim)
    theirs = two.claim("k" * 64)
    assert isinstance(theirs, ClaimInfo) and theirs.owner == mine.owner and theirs.job_id is None
    one.record_job_id(mine, "job-123", 15, time.time())
    seen = two.claim("k" * 64)
    assert isinstance(seen, ClaimInfo) and seen.job_id == "job-123" and seen.cost == 15
    # another backend never meets it
    assert isinstance(SharedStore(url, "api.goenhance.ai").claim("k" * 64), Claim)
    one.release(mine)
    assert isinstance(two.claim("k" * 64), Claim)


def test_a_second_cache_gets_the_result_from_the_store_with_no_job_call(
    sim: Any, tmp_path: Path, clip: Path, store_url: str
) -> None:
    a = make_session(sim, tmp_path / "a", shared_store=store_url)
    b = make_session(sim, tmp_path / "b", shared_store=store_url)
    try:
        ra = a.transform(clip, 2000, **RUN).result(60)
        assert sim.generate_calls() == 1
        polls = len(sim.requests(DETAIL))
        plan = b.plan(clip, 2000, **RUN)  # a sweep's plan counts it as cached, no charge
        assert plan.status == PlanStatus.CACHED and plan.estimate == 0
        jb = b.transform(clip, 2000, **RUN)
        rb = jb.result(60)
        assert jb.cached and rb.origin == "shared" and ra.origin == ""
        assert Path(rb.path).read_bytes() == Path(ra.path).read_bytes()
        assert rb.sha == ra.sha and rb.job_id == ra.job_id and rb.key == ra.key
        assert sim.generate_calls() == 1 and len(sim.requests(DETAIL)) == polls
        # the index record is JSON with provenance: no key, no URL
        rec_text = json.dumps(b.engine.shared.lookup(ra.key).record)  # type: ignore[union-attr]
        assert sim.api_key not in rec_text and "http" not in rec_text
        # the second cache serves it locally from now on
        assert b.transform(clip, 2000, **RUN).cached
    finally:
        a.close()
        b.close()


def test_a_tampered_result_is_ignored_and_reported(
    sim: Any, tmp_path: Path, clip: Path, store_url: str
) -> None:
    a = make_session(sim, tmp_path / "a", shared_store=store_url)
    b = make_session(sim, tmp_path / "b", shared_store=store_url)
    c = make_session(sim, tmp_path / "c", shared_store=store_url)
    try:
        ra = a.transform(clip, 2000, **RUN).result(60)
        shared = a.engine.shared
        assert shared is not None
        fs, _ = shared._filesystem()
        tampered = b"\x00\x00\x00\x18ftypmp42" + b"not the video" * 1000
        fs.pipe_file(shared._path("blobs", _sha256(ra.path)), tampered)
        with pytest.warns(StorageWarning, match=rf"result for {ra.key[:12]} was ignored"):
            jb = b.transform(clip, 2000, **RUN)
            rb = jb.result(60)
        assert not jb.cached and rb.origin == ""
        assert Path(rb.path).read_bytes() != tampered
        probe_result(Path(rb.path), max_duration=3)
        assert sim.generate_calls() == 2  # never served: computed (and paid) again
        # b's verified result repaired the shared entry: a third cache gets it, no job call
        jc = c.transform(clip, 2000, **RUN)
        rc = jc.result(60)
        assert jc.cached and rc.origin == "shared"
        assert Path(rc.path).read_bytes() == Path(rb.path).read_bytes()
        assert sim.generate_calls() == 2
    finally:
        a.close()
        b.close()
        c.close()


def test_a_malformed_index_record_is_ignored_and_reported(tmp_path: Path) -> None:
    store = SharedStore(str(tmp_path / "share"), "simulated")
    path = tmp_path / "share" / "simulated" / "results" / f"{'a' * 64}.json"
    path.parent.mkdir(parents=True)
    bad = {"sha256": "0" * 64, "size": 10, "record": {"key": "a" * 64, "model": "not a number"}}
    path.write_text(json.dumps(bad))
    with pytest.warns(StorageWarning, match="index record is malformed"):
        assert store.lookup("a" * 64) is None
    path.write_text("{not json")
    assert store.lookup("a" * 64) is None  # not JSON: counts as absent


def test_store_down_local_work_goes_on_with_one_warning(
    sim: Any, tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for k, v in {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(k, v)
    s = make_session(sim, tmp_path / "a", shared_store="s3://team-bucket/results")
    try:
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            r1 = s.transform(clip, 2000, **RUN).result(60)
            r2 = s.transform(clip, 2000, seed=7, **RUN).result(60)
        down = [w for w in got if "shared store unreachable: working locally" in str(w.message)]
        assert len(down) == 1 and issubclass(down[0].category, StorageWarning), [
            str(w.message) for w in got
        ]
        assert r1.key != r2.key and Path(r1.path).is_file() and Path(r2.path).is_file()
        assert sim.generate_calls() == 2
    finally:
        s.close()


def _hand_claim(share: Path, key: str, *, heartbeat: float, job_id: str | None = None) -> Path:
    path = share / "simulated" / "claims" / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"owner": "otherhost/4242/abcd", "created": heartbeat, "heartbeat": heartbeat}
    path.write_text(json.dumps({**body, "job_id": job_id}))
    return path


def test_a_stale_claim_without_a_job_id_is_an_orphan_never_resubmitted(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    share = tmp_path / "share"
    s = make_session(sim, tmp_path / "a", shared_store=str(share))
    try:
        key = s.plan(clip, 2000, **RUN).key
        _hand_claim(share, key, heartbeat=time.time() - 3600)
        job = s.transform(clip, 2000, **RUN)
        with pytest.raises(LedgerError, match=r"resume .*--resubmit") as err:
            job.result(30)
        assert key[:12] in str(err.value) and "otherhost/4242" in str(err.value)
        assert sim.generate_calls() == 0
        with pytest.raises(LedgerError, match="--resubmit"):  # a plain re-run refuses too
            s.transform(clip, 2000, **RUN)
        with pytest.warns(UserWarning, match="may charge twice"):
            rec = s.resume(key, resubmit=True).result(60)
        assert Path(rec.path).is_file() and sim.generate_calls() == 1
    finally:
        s.close()


def test_a_claim_of_a_dead_process_on_this_host_is_an_orphan_at_once(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    share = tmp_path / "share"
    s = make_session(sim, tmp_path / "a", shared_store=str(share))
    try:
        key = s.plan(clip, 2000, **RUN).key
        path = _hand_claim(share, key, heartbeat=time.time())  # fresh, but its process is gone
        body = json.loads(path.read_text())
        body["owner"] = f"{socket.gethostname()}/{gone.stdout.strip()}/dead"
        path.write_text(json.dumps(body))
        with pytest.raises(LedgerError, match="--resubmit"):
            s.transform(clip, 2000, **RUN).result(30)
        assert sim.generate_calls() == 0
    finally:
        s.close()


def test_a_live_claim_without_a_job_id_is_waited_for(sim: Any, tmp_path: Path, clip: Path) -> None:
    share = tmp_path / "share"
    s = make_session(sim, tmp_path / "a", shared_store=str(share))
    try:
        key = s.plan(clip, 2000, **RUN).key
        claim = _hand_claim(share, key, heartbeat=time.time())
        job = s.transform(clip, 2000, **RUN)
        wait_until(
            lambda: any("is submitting the same" in (e.message or "") for e in job.history),
            "the waiting status",
        )
        assert sim.generate_calls() == 0 and not job.done()
        claim.unlink()  # the owner gave up without a job (a provable refusal): we go on
        assert Path(job.result(60).path).is_file()
        assert sim.generate_calls() == 1
    finally:
        s.close()


def test_the_owner_renews_its_claim_while_the_job_lives(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    sim.config(pending_seconds=1.5)
    share = tmp_path / "share"
    settings = Settings.resolve(
        explicit={
            "api_key": sim.api_key,
            "base_url": sim.base_url,
            "cache_dir": tmp_path / "a",
            "poll_interval": 0.05,
        },
        env={},
    )
    s = Session(settings, shared_store=str(share))
    try:
        key = s.plan(clip, 2000, **RUN).key
        s._attach_shared_store()
        s.engine.shared = store = SharedStore(str(share), "simulated", heartbeat_every=0.1)
        job = s.transform(clip, 2000, **RUN)
        first = wait_until(lambda: store.read_claim(key), "the claim")
        renewed = wait_until(
            lambda: (
                (c := store.read_claim(key)) is not None
                and c.heartbeat > first.heartbeat
                and c.job_id is not None
                and c
            ),
            "a heartbeat with the job id",
        )
        assert renewed.job_id == job.result(60).job_id
        assert store.read_claim(key) is None  # released once published
        assert store.lookup(key) is not None
    finally:
        s.close()


def test_the_setting_comes_from_env_config_and_session() -> None:
    env = {"GOENHANCE_SHARED_STORE": "s3://team/goenhance"}
    assert Settings.resolve(env=env).shared_store == "s3://team/goenhance"
    assert Settings.resolve(config={"shared_store": "/mnt/team"}, env={}).shared_store == (
        "/mnt/team"
    )
    from goenhance_nb._magics._core import GoEnhanceMagics

    assert "shared_store" in GoEnhanceMagics.class_trait_names(config=True)
