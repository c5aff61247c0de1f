"""Issue 12 points 5, 13 and 14 (part): where the simulator is, bad input at the boundaries.

- The simulator is recognised by asking it (DECISIONS 26), never by a loopback host: a loopback
  server that is not our simulator is a real API (host = backend, no simulator uploads, no
  SIMULATED label, a local file without an uploader is refused before anything is sent).
- A key with a non-ASCII/control character is refused when set; one that slips through never
  reaches a traceback (``%xmode Verbose``); file names of any kind upload; a YAML alias bomb is
  refused quickly with bounded memory; values quoted in messages are truncated.
- A non-loopback ``http://`` base URL is refused (the key would travel in clear).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from goenhance_nb._display import publish_result
from goenhance_nb._errors import ConfigError, GoEnhanceError, InputError
from goenhance_nb._keys import request_key
from goenhance_nb._magics import parse_cell_body
from goenhance_nb._records import JobSpec
from goenhance_nb._session import Session
from goenhance_nb._settings import SecretKey, Settings, write_key_file
from goenhance_nb.widgets import backend_label

FAKE_KEY = "sk-fake-loopback-key-0001"


# -- a tiny loopback API that is NOT our simulator ----------------------------------------------
class FakeAPI:
    """http.server on 127.0.0.1 answering the API's JSON envelope (modellist, tokens, generate,
    detail) and serving ``/files/*.mp4``; records every request (method, path, headers)."""

    def __init__(self, clip: Path) -> None:
        self.clip_bytes = clip.read_bytes()
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _record(self) -> None:
                with fake.lock:
                    fake.requests.append(
                        {
                            "method": self.command,
                            "path": self.path.split("?", 1)[0],
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )

            def _json(self, body: Any, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._record()
                path = self.path.split("?", 1)[0]
                if path == "/api/v1/video2video/modellist":
                    self._json(
                        {
                            "code": 0,
                            "msg": "success",
                            "data": [
                                {
                                    "label": "Popular",
                                    "value": "default",
                                    "list": [
                                        {"label": "Anime Style", "value": 2000, "version": "v5"}
                                    ],
                                }
                            ],
                        }
                    )
                elif path == "/api/v1/user/tokens":
                    self._json({"code": 0, "msg": "success", "data": {"count": 900}})
                elif path == "/api/v1/jobs/detail":
                    self._json(
                        {
                            "code": 0,
                            "msg": "Success",
                            "data": {
                                "img_uuid": "fake-job-1",
                                "status": "success",
                                "json": [{"type": "video", "value": f"{fake.url}/files/out.mp4"}],
                            },
                        }
                    )
                elif path.startswith("/files/"):
                    self.send_response(200)
                    self.send_header("Content-Type", "video/mp4")
                    self.send_header("Content-Length", str(len(fake.clip_bytes)))
                    self.end_headers()
                    self.wfile.write(fake.clip_bytes)
                else:
                    self._json({"code": 404, "msg": "not found", "data": None}, status=404)

            def do_POST(self) -> None:
                self._record()
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if self.path == "/api/v1/video2video/generate":
                    self._json(
                        {
                            "code": 0,
                            "msg": "Success",
                            "data": {"img_uuid": "fake-job-1", "cost": 30},
                        }
                    )
                else:
                    self._json({"code": 404, "msg": "not found", "data": None}, status=404)

            do_PUT = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        with self.lock:
            return [r["path"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api(clip: Path) -> Iterator[FakeAPI]:
    fake = FakeAPI(clip)
    yield fake
    fake.close()


def _fake_session(fake: FakeAPI, cache_dir: Path, **kw: Any) -> Session:
    settings = Settings.resolve(
        explicit={
            "api_key": FAKE_KEY,
            "base_url": fake.url,
            "cache_dir": cache_dir,
            "poll_interval": 0.05,
        },
        env={},
    )
    return Session(settings, **kw)


# -- point 5: the simulator is recognised by asking it -----------------------------------------
def test_loopback_server_that_is_not_the_simulator_is_a_real_api(
    fake_api: FakeAPI, tmp_path: Path, clip: Path
) -> None:
    s = _fake_session(fake_api, tmp_path / "cache")
    try:
        assert s.backend == "127.0.0.1" and not s.is_simulated  # the host, never a port
        assert backend_label(s.backend) != "SIMULATED"
        # the identity probe is the only request so far, and it carried no API key
        assert fake_api.paths() == ["/sim/health"]
        assert "authorization" not in fake_api.requests[0]["headers"]
        with pytest.raises(InputError, match="uploader"):
            s.transform(clip, 2000, duration=3)
        with pytest.raises(InputError, match="uploader"):
            s.inspect(clip)
        # nothing was uploaded, nothing generated: a local file was refused before sending
        assert fake_api.paths() == ["/sim/health"]
        assert s.ledger_entries() == []
        # a URL input runs as a real-API job keyed by the host
        rec = s.transform(f"{fake_api.url}/files/clip.mp4", 2000, duration=3).result(60)
        spec = JobSpec(model=2000, duration=3, resolution="720p", seed=-1, prompt=None)
        assert rec.backend == "127.0.0.1"
        assert rec.key == request_key(rec.input_hash, spec, "v5", "127.0.0.1")
        assert fake_api.paths().count("/api/v1/video2video/generate") == 1
        assert "/sim/uploads" not in fake_api.paths()
        bundle = publish_result(rec, notebook_dir=tmp_path, frontend="lab")
        assert "SIMULATED" not in json.dumps(dict(bundle))
    finally:
        s.close()


def test_local_file_with_an_uploader_goes_to_the_uploader_not_the_server(
    fake_api: FakeAPI, tmp_path: Path, clip: Path
) -> None:
    uploaded: list[tuple[str, bytes]] = []

    def uploader(path: Path) -> str:
        # the uploader gets a private snapshot of exactly the hashed bytes (issue 12 point 8)
        uploaded.append((path.name, path.read_bytes()))
        return f"{fake_api.url}/files/uploaded.mp4"

    s = _fake_session(fake_api, tmp_path / "cache", uploader=uploader)
    try:
        rec = s.transform(clip, 2000, duration=3).result(60)
        assert rec.backend == "127.0.0.1" and uploaded == [(clip.name, clip.read_bytes())]
        assert "/sim/uploads" not in fake_api.paths()
    finally:
        s.close()


def test_the_real_simulator_given_as_base_url_is_still_simulated(
    sim: Any, sim_env: dict[str, str], tmp_path: Path, clip: Path
) -> None:
    s = Session()  # GOENHANCE_BASE_URL / GOENHANCE_API_KEY point at the test simulator
    try:
        assert s.backend == "simulated" and s.is_simulated
        assert sim.requests() == []  # the identity probe is not an API call
        rec = s.transform(clip, 2000, duration=3).result(60)
        assert rec.backend == "simulated"
        assert len([r for r in sim.requests("/sim/uploads") if r["method"] == "PUT"]) == 1
        assert backend_label(s.backend) == "SIMULATED"
        bundle = publish_result(rec, notebook_dir=tmp_path, frontend="lab")
        assert "SIMULATED" in bundle["text/html"]
    finally:
        s.close()


def test_the_simulator_identifies_itself(sim: Any) -> None:
    health = httpx.get(f"{sim.base_url}/sim/health")
    assert health.headers["X-GoEnhance-Simulator"] == "1"
    assert health.json()["ok"] is True and health.json()["service"] == "goenhance-simulator"
    api = httpx.get(f"{sim.base_url}/api/v1/user/tokens")  # even a 401 says who answers
    assert api.status_code == 401 and api.headers["X-GoEnhance-Simulator"] == "1"


def test_poll_floor_still_depends_on_the_host_alone(fake_api: FakeAPI, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no floor warning: loopback may poll faster
        s = _fake_session(fake_api, tmp_path / "cache")
    try:
        assert s.settings.poll_interval == 0.05 and not s.is_simulated
    finally:
        s.close()


# -- point 14 (part): plain http only on loopback ----------------------------------------------
@pytest.mark.parametrize(
    "url", ["http://10.0.0.5:8000", "http://api.example.com", "http://sim.example:80/"]
)
def test_plain_http_to_another_machine_is_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="https"):
        Settings(base_url=url)
    with pytest.raises(ConfigError, match="in clear"):
        Settings.resolve(
            env={"GOENHANCE_BASE_URL": url, "GOENHANCE_API_KEY": FAKE_KEY},
            key_file=tmp_path / "none",
        )


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8123", "http://localhost:1", "http://[::1]:9", "https://10.0.0.5:8443"],
)
def test_loopback_http_and_any_https_are_allowed(url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Settings(base_url=url).base_url == url


# -- point 13: keys --------------------------------------------------------------------------
BAD_KEYS = [
    "sk-ünïcode-SENTINEL-7f3a",
    "sk-line\nSENTINEL-7f3a",
    "sk-tab\tSENTINEL-7f3a",
    "sk-nul\x00SENTINEL-7f3a",
    "sk-space SENTINEL-7f3a",
]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_key_with_a_bad_character_is_refused_when_set(key: str, tmp_path: Path) -> None:
    attempts = [
        lambda: SecretKey(key),
        lambda: Settings(api_key=key),
        lambda: Settings.resolve(env={"GOENHANCE_API_KEY": key}, key_file=tmp_path / "none"),
        lambda: Settings.resolve(explicit={"api_key": key}, env={}, key_file=tmp_path / "none"),
    ]
    key_file = tmp_path / "cfg" / "api_key"
    key_file.parent.mkdir()
    key_file.write_text(key)
    key_file.chmod(0o600)
    attempts.append(lambda: Settings.resolve(env={}, key_file=key_file))
    for attempt in attempts:
        with pytest.raises(ConfigError, match="API key contains") as info:
            attempt()
        assert "SENTINEL" not in str(info.value) and "\n" not in str(info.value)
    # surrounding whitespace (a trailing newline in a key file) is still fine
    assert SecretKey("  sk-good-key-123\n").reveal() == "sk-good-key-123"
    assert write_key_file(SecretKey("sk-good-key-123"), tmp_path / "k").exists()


_VERBOSE_SCRIPT = textwrap.dedent(
    """
    import io, json, sys, contextlib
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("xmode", "Verbose")
    shell.user_ns["BASE"] = sys.argv[1]
    shell.user_ns["RAW"] = sys.argv[2]
    setup = '''
    from goenhance_nb._settings import SecretKey, Settings
    from goenhance_nb._sync import Client
    key = SecretKey.__new__(SecretKey)
    key._SecretKey__value = RAW  # slipped past the check (the boundary must still hold)
    client = Client(Settings(api_key=key, base_url=BASE, rate_limit=0, max_retries=0))
    '''
    assert shell.run_cell(setup).success
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        result = shell.run_cell("client.credits()")
    err = result.error_in_exec
    full = "\\n".join(
        shell.InteractiveTB.structured_traceback(type(err), err, err.__traceback__)
    )
    print(json.dumps({
        "shown": out.getvalue(),
        "verbose": full,
        "type": type(err).__name__,
        "mro": [c.__name__ for c in type(err).__mro__],
        "context": err.__context__ is not None or err.__cause__ is not None,
    }))
    """
)


@pytest.mark.parametrize("key", [BAD_KEYS[0], BAD_KEYS[1]])
def test_a_key_that_slips_through_never_reaches_a_verbose_traceback(sim: Any, key: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _VERBOSE_SCRIPT, sim.base_url, key],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "GoEnhanceError" in report["mro"], report["type"]
    assert report["type"] in ("ConfigError", "TransportError")
    assert not report["context"]  # no chained foreign exception
    for text in (report["shown"], report["verbose"]):
        assert "SENTINEL" not in text
        assert "7f3a" not in text
    assert len(report["shown"].strip().splitlines()) == 1  # one line, not a traceback


def test_file_names_of_any_kind_upload_to_the_simulator(
    sim: Any, session: Session, clip: Path, tmp_path: Path
) -> None:
    names = ["ünïcode clip.mp4"]
    try:
        probe = tmp_path / "a\nb"
        probe.write_bytes(b"")
        probe.unlink()
        names.append("clip ünï\ncode.mp4")
    except OSError:
        pass
    for i, name in enumerate(names):
        path = tmp_path / name
        shutil.copyfile(clip, path)
        job = session.transform(path, 2000, duration=3, seed=100 + i)
        rec = job.result(60)
        assert rec.source_name == name or rec.source_name
    puts = [r for r in sim.requests("/sim/uploads") if r["method"] == "PUT"]
    assert [r["status"] for r in puts] == [200]  # same bytes: uploaded once, memo for the rest
    assert sim.generate_calls() == len(names)


def test_file_name_header_is_percent_encoded(sim: Any, clip: Path, tmp_path: Path) -> None:
    from goenhance_nb._client import AsyncClient
    from goenhance_nb._sync import run_sync

    path = tmp_path / "x ünï.mov"
    shutil.copyfile(clip, path)
    client = AsyncClient(
        Settings(api_key=sim.api_key, base_url=sim.base_url, rate_limit=0),
        base_url=sim.base_url,
        api_key=SecretKey(sim.api_key),
    )

    async def go() -> str:
        try:
            return await client.sim_upload(path)
        finally:
            await client.aclose()

    url = run_sync(go())
    assert url.endswith(".mov")  # the simulator decoded the name and kept its extension


# -- point 13: YAML bombs and long values in messages ------------------------------------------
# "billion laughs": 9 levels of 9 aliases inside one allowed key (9**9 strings once expanded)
_LEVELS = ['&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'] + [
    f"&{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
]
_BOMB = "style: 2000\nprompt: [" + ", ".join(_LEVELS) + "]\n"

_BOMB_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    from goenhance_nb._magics import parse_cell_body
    body = sys.stdin.read()
    t0 = time.monotonic()
    try:
        parse_cell_body(body)
        out = {"type": None, "message": ""}
    except BaseException as exc:
        out = {"type": type(exc).__name__, "message": str(exc)[:2000], "len": len(str(exc))}
    out["seconds"] = time.monotonic() - t0
    out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(out))
    """
)


def test_yaml_alias_bomb_is_refused_quickly_with_bounded_memory() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _BOMB_SCRIPT],
        input=_BOMB,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["type"] == "UsageError", report
    assert report["seconds"] < 2.0, report
    assert report["len"] < 300 and "\n" not in report["message"]
    assert report["maxrss_kb"] < 400_000, report  # the interpreter + IPython, not the bomb


@pytest.mark.parametrize(
    "body",
    [
        "duration: " + "x" * 5000,
        "resolution: " + "9" * 5000,
        "wait: [" + ",".join(["1"] * 3000) + "]",
        "prompt: {" + ", ".join(f"k{i}: v" for i in range(3000)) + "}",
        "\n".join(f"unknown{i}_{'z' * 200}: 1" for i in range(50)),
        "x: &x [*x]\nprompt: *x",
        "prompt: " + "[" * 5000 + "]" * 5000,
    ],
)
def test_values_quoted_in_cell_body_errors_are_truncated(body: str) -> None:
    from IPython.core.error import UsageError

    with pytest.raises(UsageError) as info:
        parse_cell_body(body)
    message = str(info.value)
    assert len(message) < 400 and "\n" not in message, message


def test_values_quoted_in_settings_errors_are_truncated(tmp_path: Path) -> None:
    for env in (
        {"GOENHANCE_POLL_INTERVAL": "soon" * 2000},
        {"GOENHANCE_MAX_RETRIES": "many" * 2000},
        {"GOENHANCE_BASE_URL": "http://" + "h" * 3000 + ".example"},
    ):
        with pytest.raises(ConfigError) as info:
            Settings.resolve(env=env, key_file=tmp_path / "none")
        assert len(str(info.value)) < 300, str(info.value)
        assert "…" in str(info.value)
    assert len(str(GoEnhanceError("x " * 100_000))) <= 1000
