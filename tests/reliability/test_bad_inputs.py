"""Bad inputs (issue 12, "The suite"): each gives ONE line, makes no paid call, and writes
nothing to the cache.

- Python API: an error of our tree (``GoEnhanceError`` subclass) raised by
  ``Session.transform`` / ``Session(...)`` before the call returns.
- Magics: through a real ``InteractiveShell`` with the extension loaded; the cell fails with
  ``UsageError`` (bad arguments) or one of our errors, rendered as one line (no traceback).
- No API call: the simulator logged no generate POST; validation errors make no ``/api/``
  call at all except the model list (needed to check a style).
- Nothing written: the cache index, the ledger, the store and ``tmp/`` are unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from workers.support import make_session

from goenhance_nb import _session
from goenhance_nb._errors import (
    AuthError,
    BudgetExceeded,
    ConfigError,
    GoEnhanceError,
    InputError,
    InsufficientCredits,
)
from goenhance_nb._session import Session
from reliability.conftest import GENERATE, MODELLIST, assert_one_line

GOOD = {"style": 2000, "duration": 3, "resolution": "540p"}


def _audio_only(path: Path) -> Path:
    """A 1 s MP4 holding only an AAC audio stream (no video)."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(44):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 44100
            frame.pts = i * 1024
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode(None):
            out.mux(pkt)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> dict[str, Path]:
    """Bad local inputs, made once per module."""
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "text.mp4").write_text("this is not a video\n" * 100)
    (d / "random.mp4").write_bytes(os.urandom(64 * 1024))
    data = clip.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 3])
    (d / "folder.mp4").mkdir()
    return {
        "missing": d / "missing.mp4",
        "empty": d / "empty.mp4",
        "text": d / "text.mp4",
        "random": d / "random.mp4",
        "truncated": d / "truncated.mp4",
        "directory": d / "folder.mp4",
        "audio_only": _audio_only(d / "audio.mp4"),
        "name_too_long": d / ("x" * 300 + ".mp4"),
        "nul_in_name": Path(str(d / "a\x00b.mp4")),
    }


def _snapshot(session: Session) -> tuple[Any, ...]:
    """The cache index, the ledger, and every file in the store and tmp/."""
    files = sorted(
        str(p.relative_to(session.cache_dir))
        for sub in ("store", "tmp")
        for p in (session.cache_dir / sub).rglob("*")
        if p.is_file()
    )
    return (
        [r.to_json() for r in session.cache.list()],
        [e.to_json() for e in session.ledger.entries()],
        files,
    )


def _api_calls(sim: Any) -> list[str]:
    return [f"{q['method']} {q['path']}" for q in sim.requests("/api/")]


# -- the Python API ------------------------------------------------------------------------
# (id, how to call: a function of (files, sim) -> (source, kwargs), expected error class)
Call = Callable[[dict[str, Path], Any], tuple[Any, dict[str, Any]]]


def _file(name: str) -> Call:
    return lambda files, sim: (files[name], {})


def _param(**kw: Any) -> Call:
    return lambda files, sim: (None, kw)


def _url(make: Callable[[Any], str]) -> Call:
    return lambda files, sim: (make(sim), {})


PY_CASES = [
    # files
    pytest.param(_file("missing"), InputError, id="file-missing"),
    pytest.param(_file("empty"), InputError, id="file-empty"),
    pytest.param(_file("text"), InputError, id="file-not-a-video"),
    pytest.param(_file("random"), InputError, id="file-random-bytes"),
    pytest.param(_file("directory"), InputError, id="file-is-a-directory"),
    pytest.param(_file("audio_only"), InputError, id="file-audio-only"),
    pytest.param(_file("name_too_long"), InputError, id="file-name-too-long"),
    pytest.param(_file("nul_in_name"), InputError, id="file-nul-in-name"),
    # parameters
    pytest.param(_param(duration=2), InputError, id="duration-2"),
    pytest.param(_param(duration=31), InputError, id="duration-31"),
    pytest.param(_param(duration="x"), InputError, id="duration-x"),
    pytest.param(_param(duration=0), InputError, id="duration-0"),
    pytest.param(_param(duration=-5), InputError, id="duration-negative"),
    pytest.param(_param(duration=3.5), InputError, id="duration-float"),
    pytest.param(_param(duration=True), InputError, id="duration-bool"),
    pytest.param(_param(resolution="4k"), InputError, id="resolution-4k"),
    pytest.param(_param(resolution=""), InputError, id="resolution-empty"),
    pytest.param(_param(prompt="p" * 501), InputError, id="prompt-501-chars"),
    pytest.param(_param(prompt=123), InputError, id="prompt-not-text"),
    pytest.param(_param(style=9999), InputError, id="style-unknown-id"),
    pytest.param(_param(style="No Such Style"), InputError, id="style-unknown-label"),
    pytest.param(_param(style=""), InputError, id="style-empty"),
    pytest.param(_param(style=-1), InputError, id="style-negative"),
    pytest.param(_param(seed="x"), InputError, id="seed-x"),
    pytest.param(_param(seed=1.5), InputError, id="seed-float"),
    pytest.param(_param(timeout=-1), InputError, id="timeout-negative"),
    pytest.param(_param(timeout="soon"), InputError, id="timeout-text"),
    # URLs
    pytest.param(_url(lambda sim: "ftp://example.com/a.mp4"), InputError, id="url-ftp"),
    pytest.param(_url(lambda sim: "http://"), InputError, id="url-no-host"),
    pytest.param(_url(lambda sim: "https:///clip.mp4"), InputError, id="url-empty-host"),
    pytest.param(_url(lambda sim: "file:///etc/passwd"), InputError, id="url-file-scheme"),
    pytest.param(
        _url(lambda sim: sim.base_url + "/sim/files/no-such-file.mp4"), InputError, id="url-404"
    ),
    pytest.param(_url(lambda sim: sim.base_url + "/sim/health"), InputError, id="url-not-a-video"),
]


@pytest.mark.parametrize(("call", "error"), PY_CASES)
def test_bad_input_from_python(
    call: Call,
    error: type[GoEnhanceError],
    session: Session,
    sim: Any,
    clip: Path,
    bad_files: dict[str, Path],
) -> None:
    session.styles()  # the model list may be read and cached before we look
    sim.clear_requests()
    before = _snapshot(session)
    source, kw = call(bad_files, sim)
    with pytest.raises(GoEnhanceError) as info:
        session.transform(clip if source is None else source, **{**GOOD, **kw})
    assert isinstance(info.value, error), f"{type(info.value).__name__}: {info.value}"
    assert_one_line(info.value, sim.api_key)
    assert sim.generate_calls() == 0
    allowed = {f"GET {MODELLIST}"}
    assert set(_api_calls(sim)) <= allowed, _api_calls(sim)
    assert _snapshot(session) == before


# -- keys, credits, budget (they need their own session) ------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        pytest.param("", id="key-empty"),
        pytest.param("   ", id="key-blank"),
        pytest.param("sk-caf\u00e9-123456", id="key-non-ascii"),
        pytest.param("sk-abc\ndef", id="key-newline"),
    ],
)
def test_bad_key_is_one_line_before_any_call(
    key: str, sim: Any, tmp_path: Path, clip: Path
) -> None:
    sim.clear_requests()
    with pytest.raises(GoEnhanceError) as info:
        s = make_session(sim, tmp_path / "cache", api_key=key)
        try:
            s.transform(clip, **GOOD).result(30)
        finally:
            s.close()
    # no key at all may read as "not signed in" (AuthError); a malformed one is a ConfigError
    expected = (ConfigError, AuthError) if not key.strip() else ConfigError
    assert isinstance(info.value, expected), f"{type(info.value).__name__}: {info.value}"
    msg = assert_one_line(info.value)
    if key.strip():
        assert key not in msg and "caf\u00e9" not in msg, msg
    assert _api_calls(sim) == []


def test_account_with_no_credits_is_refused_before_generate(
    sim: Any, tmp_path: Path, clip: Path
) -> None:
    sim.config(credits=0)
    s = make_session(sim, tmp_path / "cache")
    try:
        s.styles()
        sim.clear_requests()
        before = _snapshot(s)
        with pytest.raises(GoEnhanceError) as info:
            s.transform(clip, **GOOD).result(30)
        assert isinstance(info.value, InsufficientCredits), type(info.value).__name__
        assert_one_line(info.value, sim.api_key)
        assert sim.generate_calls() == 0, "the paid POST was sent to an account with 0 credits"
        assert _snapshot(s) == before
    finally:
        s.close()


def test_budget_smaller_than_the_estimate(sim: Any, tmp_path: Path, clip: Path) -> None:
    s = make_session(sim, tmp_path / "cache", budget=5)
    try:
        s.styles()
        sim.clear_requests()
        before = _snapshot(s)
        with pytest.raises(BudgetExceeded) as info:
            s.transform(clip, **GOOD)
        msg = assert_one_line(info.value, sim.api_key)
        assert "5" in msg and "estimate" in msg, msg
        assert set(_api_calls(sim)) <= {f"GET {MODELLIST}"}
        assert _snapshot(s) == before
    finally:
        s.close()


# -- the magics ------------------------------------------------------------------------------
@pytest.fixture
def ip(sim_env: dict[str, str], fresh_session: None) -> Iterator[InteractiveShell]:
    shell = InteractiveShell.instance()
    shell.run_line_magic("reload_ext", "goenhance_nb")
    yield shell
    shell.run_line_magic("unload_ext", "goenhance_nb")


@pytest.fixture
def in_dir(tmp_path: Path, clip: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding ``clip.mp4`` and ``text.mp4``."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "clip.mp4").write_bytes(clip.read_bytes())
    (work / "text.mp4").write_text("not a video")
    monkeypatch.chdir(work)
    return work


RUN = "run clip.mp4 --style 2000 -d 3 -r 540p --wait"
MAGIC_CASES = [
    pytest.param(("line", "run missing.mp4 --style 2000 -d 3 --wait"), id="magic-missing-file"),
    pytest.param(("line", "run text.mp4 --style 2000 -d 3 --wait"), id="magic-not-a-video"),
    pytest.param(("line", "run clip.mp4 --style 2000 -d 2 --wait"), id="magic-duration-2"),
    pytest.param(("line", "run clip.mp4 --style 2000 -d x --wait"), id="magic-duration-x"),
    pytest.param(("line", "run clip.mp4 --style 2000 -d 3 -r 4k"), id="magic-resolution-4k"),
    pytest.param(("line", "run clip.mp4 --style 9999 -d 3 --wait"), id="magic-style-unknown"),
    pytest.param(("line", "run clip.mp4 --style 2000 --seed x"), id="magic-seed-x"),
    pytest.param(("line", "run clip.mp4 --style 2000 --timeout -3"), id="magic-timeout-negative"),
    pytest.param(("line", "run ftp://example.com/a.mp4 --style 2000"), id="magic-url-ftp"),
    pytest.param(("line", "run clip.mp4 --style 2000 --bogus"), id="magic-unknown-option"),
    pytest.param(("cell", "colour: red\n"), id="cell-unknown-key"),
    pytest.param(("cell", "prompt: [a\n"), id="cell-bad-yaml"),
    pytest.param(("cell", "- a\n- list\n"), id="cell-list-not-mapping"),
    pytest.param(("cell", "prompt: " + "p" * 501 + "\n"), id="cell-prompt-501"),
    pytest.param(("cell", "duration: 31\n"), id="cell-duration-31"),
]


@pytest.mark.parametrize("case", MAGIC_CASES)
def test_bad_input_from_a_magic(
    case: tuple[str, str],
    ip: InteractiveShell,
    in_dir: Path,
    sim: Any,
    sim_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    kind, text = case
    code = f"%goenhance {text}" if kind == "line" else f"%%goenhance clip.mp4 --style 2000\n{text}"
    sim.clear_requests()
    cache_dir = Path(sim_env["GOENHANCE_CACHE_DIR"])
    result = ip.run_cell(code)
    err = result.error_in_exec
    assert isinstance(err, (UsageError, GoEnhanceError)), repr(err)
    out = capsys.readouterr()
    shown = out.out + out.err
    assert "Traceback" not in shown, shown
    lines = [ln for ln in shown.splitlines() if re.match(r"^\w*(Error|Exceeded)\b", ln)]
    assert len(lines) == 1, shown
    assert sim.api_key not in shown
    assert sim.generate_calls() == 0
    assert set(_api_calls(sim)) <= {f"GET {MODELLIST}"}, _api_calls(sim)
    for sub in ("store", "tmp"):
        assert not [p for p in (cache_dir / sub).rglob("*") if p.is_file()]
    if (cache_dir / "ledger").exists():
        s = _session.get_session()
        assert s.ledger.entries() == [] and s.cache.list() == []


def test_budget_from_the_environment_refuses_in_one_line(
    ip: InteractiveShell,
    in_dir: Path,
    sim: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GOENHANCE_BUDGET", "5")
    sim.clear_requests()
    result = ip.run_cell(f"%goenhance {RUN}")
    assert isinstance(result.error_in_exec, BudgetExceeded), repr(result.error_in_exec)
    shown = capsys.readouterr()
    assert "Traceback" not in shown.out + shown.err
    assert sim.generate_calls() == 0
    assert GENERATE not in " ".join(_api_calls(sim))
