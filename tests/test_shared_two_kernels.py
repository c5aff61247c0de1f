"""Issue 16 "done when": two real kernels (ipykernel over ZMQ, as JupyterLab drives them) on
two separate cache dirs sharing one store on a real S3 protocol server (moto on loopback) pay
once for the same transformation typed as a magic; one kernel sets the store through
``%config GoEnhanceMagics.shared_store``, the other through ``GOENHANCE_SHARED_STORE``."""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import KernelManager
from moto_s3 import S3Server, s3_server  # noqa: F401 (fixture)

import goenhance_nb

pytestmark = pytest.mark.slow

RUN = "%goenhance run sample.mp4 --style 2000 --duration 3 --resolution 540p --wait"
SHA = "print(goenhance_nb.get_session().cached_results()[0].sha)"


def _kernel(cwd: Path, env: dict[str, str]) -> tuple[Any, Any]:
    km = KernelManager(kernel_name="python3")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "VSCODE_"))}
    km.start_kernel(env={**base, **env}, cwd=str(cwd))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def _outputs(kc: Any, msg_id: str, timeout: float = 180) -> tuple[str, str]:
    """(stdout text, error name or "") of one execute request, up to its idle status."""
    out, err = [], ""
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=timeout)
        except queue.Empty:
            return "".join(out), "timeout"
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            err = content["ename"]
        elif kind == "status" and content["execution_state"] == "idle":
            return "".join(out), err


@pytest.fixture
def two_kernels(
    tmp_path: Path,
    sim: Any,
    s3_server: S3Server,  # noqa: F811 (fixture)
) -> Iterator[list[tuple[Any, Any]]]:
    store = s3_server.url("two-kernels")
    common = {
        **s3_server.env,
        "GOENHANCE_API_KEY": sim.api_key,
        "GOENHANCE_BASE_URL": sim.base_url,
        "GOENHANCE_POLL_INTERVAL": "0.2",
    }
    kernels = []
    for name, via_env in (("a", True), ("b", False)):
        work = tmp_path / name
        work.mkdir()
        goenhance_nb.sample_clip(str(work / "sample.mp4"))
        env = {**common, "GOENHANCE_CACHE_DIR": str(work / "cache")}
        if via_env:
            env["GOENHANCE_SHARED_STORE"] = store
        km, kc = _kernel(work, env)
        kernels.append((km, kc))
        setup = "import goenhance_nb\n%load_ext goenhance_nb"
        if not via_env:
            setup += f"\n%config GoEnhanceMagics.shared_store = {store!r}"
        assert _outputs(kc, kc.execute(setup))[1] == ""
    try:
        yield kernels
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            km.shutdown_kernel(now=True)


def test_two_kernels_sharing_a_store_pay_once(sim: Any, two_kernels: list[tuple[Any, Any]]) -> None:
    sim.config(download_rate=400_000)  # the two runs overlap for a while
    ids = [kc.execute(RUN) for _, kc in two_kernels]  # both at once
    for (_, kc), msg_id in zip(two_kernels, ids, strict=True):
        assert _outputs(kc, msg_id)[1] == ""
    assert sim.generate_calls() == 1  # one charge for the team
    shas = [_outputs(kc, kc.execute(SHA))[0].strip() for _, kc in two_kernels]
    assert shas[0] == shas[1] and len(shas[0]) >= 32  # the same bytes in both caches
