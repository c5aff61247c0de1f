"""Reproducible notebooks (issue 14): lockfile, modes, verify, bundles; against the simulator."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from workers.support import make_session, wait_until

from goenhance_nb._errors import BundleError, ConfigError, ReplayMiss
from goenhance_nb._repro import (
    LOCKFILE_NAME,
    Lockfile,
    find_lockfile,
    sha256_file,
    verify,
)
from goenhance_nb._session import Session
from goenhance_nb._settings import Settings

REPO = Path(__file__).resolve().parent.parent


def _dead_base_url() -> str:
    """A loopback URL nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _record(sim: Any, cache: Path, nb: Path, clip: Path, seeds: tuple[int, ...] = (7,)) -> Any:
    """Run ``clip`` through Anime Style in record mode; return the finished jobs."""
    s = make_session(sim, cache, mode="record", lockfile=nb / LOCKFILE_NAME)
    try:
        jobs = [s.transform(clip, "Anime Style", duration=3, seed=seed) for seed in seeds]
        for job in jobs:
            job.result(timeout=120)
        lock = Lockfile(nb / LOCKFILE_NAME)
        wait_until(lambda: len(lock.entries()) == len(seeds), "the lockfile entries", 30)
        return jobs
    finally:
        s.close()


@pytest.fixture
def recorded(sim: Any, tmp_path: Path, clip: Path) -> dict[str, Any]:
    nb = tmp_path / "nb"
    nb.mkdir()
    jobs = _record(sim, tmp_path / "cache-a", nb, clip, seeds=(7, 8))
    return {"nb": nb, "jobs": jobs, "cache": tmp_path / "cache-a"}


def test_record_writes_one_entry_per_transformation(
    sim: Any, recorded: dict[str, Any], clip: Path
) -> None:
    nb: Path = recorded["nb"]
    path = nb / LOCKFILE_NAME
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    # stable formatting: indent 2, sorted keys, trailing newline; entries ordered by key
    assert text == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert list(data["results"]) == sorted(data["results"])
    assert len(data["results"]) == 2
    for job in recorded["jobs"]:
        e = data["results"][job.key]
        rec = job.record
        assert e["key"] == job.key
        assert e["input"] == {"name": "clip.mp4", "blake3": rec.input_hash}
        assert e["params"] == rec.params and e["params"]["duration"] == 3
        assert e["model"] == {"id": 2000, "label": "Anime Style", "version": rec.model_version}
        assert e["backend"] == "simulated"
        assert e["job_id"] == job.id and job.id
        assert e["output"]["path"] == f"goenhance_outputs/anime-style-{job.key[:8]}.mp4"
        out = nb / e["output"]["path"]
        assert e["output"]["sha256"] == sha256_file(out) == sha256_file(rec.file)
        assert e["output"]["size"] == out.stat().st_size
        assert isinstance(e["cost"], int) and e["cost"] > 0
        assert {"created", "submitted", "finished", "downloaded"} <= set(e["timestamps"])
        assert e["package"]["name"] == "goenhance_nb" and e["package"]["version"]
    # never the key, never a URL (the signed result URLs the simulator handed out included)
    key = sim.api_key
    for form in (key, base64.b64encode(key.encode()).decode(), key[4:20]):
        assert form not in text
    results = [r["path"] for r in sim.requests("/sim/results/")]
    assert results, "the simulator served the result downloads"
    assert "http" not in text and "sig=" not in text and "exp=" not in text
    for served in results:
        assert served not in text


def test_a_cached_rerun_in_record_mode_keeps_the_file_identical(
    sim: Any, recorded: dict[str, Any], clip: Path
) -> None:
    path = recorded["nb"] / LOCKFILE_NAME
    before = path.read_bytes()
    sim.clear_requests()
    _record(sim, recorded["cache"], recorded["nb"], clip, seeds=(7, 8))
    assert sim.generate_calls() == 0
    assert path.read_bytes() == before


def test_verify_names_tampered_missing_and_extra_files(recorded: dict[str, Any]) -> None:
    nb: Path = recorded["nb"]
    report = verify(nb)
    assert report.ok and report.checked == 2
    assert _cli_verify(nb).returncode == 0
    j1, j2 = recorded["jobs"]
    changed = f"goenhance_outputs/anime-style-{j1.key[:8]}.mp4"
    missing = f"goenhance_outputs/anime-style-{j2.key[:8]}.mp4"
    (nb / changed).unlink()  # a hard link into the store: replace it, never edit the store
    (nb / changed).write_bytes(b"tampered")
    (nb / missing).unlink()
    (nb / "goenhance_outputs" / "stray.mp4").write_bytes(b"x")
    report = verify(nb / "analysis.ipynb")
    assert report.changed == (changed,)
    assert report.missing == (missing,)
    assert report.extra == ("goenhance_outputs/stray.mp4",)
    assert not report.ok
    proc = _cli_verify(nb)
    assert proc.returncode == 1
    assert changed in proc.stdout and missing in proc.stdout and "stray.mp4" in proc.stdout
    assert _cli_verify(nb / "nowhere").returncode == 2


def _cli_verify(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "goenhance_nb", "verify", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _replay_session(cache: Path, nb: Path, mode: str = "replay", **extra: Any) -> Session:
    settings = Settings.resolve(
        explicit={
            "api_key": "sentinel-key-0123456789",
            "base_url": _dead_base_url(),
            "cache_dir": cache,
            "poll_interval": 0.05,
            "max_retries": 0,
            "mode": mode,
            "lockfile": nb / LOCKFILE_NAME,
            **extra,
        },
        env={},
    )
    return Session(settings)


@pytest.mark.parametrize("mode", ["replay", "offline"])
def test_export_import_replay_with_the_api_unreachable(
    sim: Any, recorded: dict[str, Any], clip: Path, tmp_path: Path, mode: str
) -> None:
    nb: Path = recorded["nb"]
    src = make_session(sim, recorded["cache"], lockfile=nb / LOCKFILE_NAME)
    try:
        bundle = src.export(tmp_path / "bundle.zip")
    finally:
        src.close()
    names = zipfile.ZipFile(bundle).namelist()
    assert LOCKFILE_NAME in names
    shas = {e["output"]["sha256"] for e in Lockfile(nb / LOCKFILE_NAME).entries().values()}
    assert {n for n in names if n.startswith("results/")} == {f"results/{h}.mp4" for h in shas}
    originals = {j.key: j.record.file.read_bytes() for j in recorded["jobs"]}

    sim.clear_requests()
    s = _replay_session(tmp_path / "cache-b", nb, mode)
    try:
        assert s.backend == "simulated"  # from the lockfile, nobody asked
        report = s.import_bundle(bundle)
        assert len(report.added) == 2
        for seed, job in zip((7, 8), recorded["jobs"], strict=True):
            again = s.transform(clip, "Anime Style", duration=3, seed=seed)
            rec = again.result(timeout=30)
            assert again.cached
            assert rec.file.read_bytes() == originals[job.key]
        assert s.client.request_count == 0
    finally:
        s.close()
    assert sim.requests() == []


def test_replay_miss_fails_naming_the_transformation(
    sim: Any, recorded: dict[str, Any], clip: Path, tmp_path: Path
) -> None:
    """A bundle imported into an empty cache with one result then missing: replay serves the
    other, and the missing one fails naming it, with zero generate calls."""
    nb: Path = recorded["nb"]
    src = make_session(sim, recorded["cache"], lockfile=nb / LOCKFILE_NAME)
    try:
        bundle = src.export(tmp_path / "bundle.zip")
    finally:
        src.close()
    sim.clear_requests()
    s = make_session(sim, tmp_path / "cache-b", mode="replay", lockfile=nb / LOCKFILE_NAME)
    try:
        s.import_bundle(bundle)
        assert s.cache.remove(recorded["jobs"][1].key)
        assert s.transform(clip, "Anime Style", duration=3, seed=7).result(timeout=30)
        with pytest.raises(ReplayMiss, match=r"clip\.mp4 -> Anime Style \(3 s, 720p, seed 8"):
            s.transform(clip, "Anime Style", duration=3, seed=8)
        with pytest.raises(ReplayMiss, match="seed 99"):
            s.transform(clip, "Anime Style", duration=3, seed=99)
    finally:
        s.close()
    assert sim.generate_calls() == 0
    # the styles came from the bundle: not even the model list was asked for
    assert [r for r in sim.requests() if r["path"].startswith("/api/")] == []


def test_offline_without_a_known_backend_says_what_to_do(tmp_path: Path) -> None:
    s = _replay_session(tmp_path / "c", tmp_path, "offline")
    try:
        with pytest.raises(ConfigError, match="GOENHANCE_REPLAY_BACKEND"):
            s.backend  # noqa: B018
        with pytest.raises(ConfigError, match="GOENHANCE_REPLAY_BACKEND"):
            s.set_mode("offline")
        assert s.client.request_count == 0
    finally:
        s.close()


def test_offline_without_a_cached_model_list_says_what_to_do(tmp_path: Path, clip: Path) -> None:
    s = _replay_session(tmp_path / "empty", tmp_path, "offline", replay_backend="simulated")
    try:
        with pytest.raises(ConfigError, match=r"no cached model list.*import a bundle"):
            s.transform(clip, "Anime Style", duration=3)
        assert s.client.request_count == 0
    finally:
        s.close()


def test_headless_with_a_lockfile_defaults_to_replay(
    recorded: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOENHANCE_WAIT", "1")  # headless, as in an nbclient run
    monkeypatch.chdir(recorded["nb"])
    s = Session(
        Settings.resolve(
            explicit={"cache_dir": tmp_path / "c", "replay_backend": "simulated"},
            env={
                "GOENHANCE_API_KEY": "sentinel-key-0123456789",
                "GOENHANCE_BASE_URL": _dead_base_url(),
            },
        )
    )
    try:
        assert s.mode == "replay" and s.backend == "simulated"
        assert s.lockfile.path == (recorded["nb"] / LOCKFILE_NAME).resolve()
        assert find_lockfile(None) == s.lockfile.path
    finally:
        s.close()


# -- bundles that must be refused --------------------------------------------------------------
def _good_bundle(recorded: dict[str, Any], sim: Any, tmp_path: Path) -> Path:
    src = make_session(sim, recorded["cache"], lockfile=recorded["nb"] / LOCKFILE_NAME)
    try:
        return src.export(tmp_path / "good.zip")
    finally:
        src.close()


def _rewrite_zip(good: Path, dest: Path, edit: Any) -> Path:
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            out = edit(info, data, zout)
            if out is not None:
                zout.writestr(info, out)
    return dest


def _assert_untouched(cache_dir: Path) -> None:
    s = _replay_session(cache_dir, cache_dir, "offline", replay_backend="simulated")
    try:
        assert s.cache.list() == []
        assert s.cache.meta_get("styles:simulated") is None
        store = cache_dir / "store"
        assert not store.exists() or not [p for p in store.rglob("*") if p.is_file()]
        tmp = cache_dir / "tmp"
        assert not tmp.exists() or not list(tmp.iterdir())
    finally:
        s.close()


def _traversal(info: zipfile.ZipInfo, data: bytes, zout: zipfile.ZipFile) -> bytes:
    if info.filename.startswith("results/"):
        zout.writestr("../evil.mp4", data)
    return data


def _symlink(info: zipfile.ZipInfo, data: bytes, zout: zipfile.ZipFile) -> bytes:
    if info.filename == "goenhance-bundle.json":
        link = zipfile.ZipInfo("results/" + "0" * 64 + ".mp4")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zout.writestr(link, "/etc/passwd")
    return data


def _wrong_hash(info: zipfile.ZipInfo, data: bytes, zout: zipfile.ZipFile) -> bytes:
    if info.filename.startswith("results/"):
        return data[:-16] + bytes(16)
    return data


def _absolute(info: zipfile.ZipInfo, data: bytes, zout: zipfile.ZipFile) -> bytes:
    if info.filename == LOCKFILE_NAME:
        zout.writestr("/tmp/goenhance-abs.mp4", b"x")
    return data


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_traversal, "path traversal"),
        (_symlink, "symlink"),
        (_wrong_hash, "wrong hash"),
        (_absolute, "unsafe name"),
    ],
)
def test_bad_bundles_are_refused_and_the_cache_is_untouched(
    sim: Any, recorded: dict[str, Any], tmp_path: Path, edit: Any, message: str
) -> None:
    good = _good_bundle(recorded, sim, tmp_path)
    bad = _rewrite_zip(good, tmp_path / "bad.zip", edit)
    cache_dir = tmp_path / "victim"
    s = _replay_session(cache_dir, recorded["nb"], "offline")
    try:
        with pytest.raises(BundleError, match=message):
            s.import_bundle(bad)
    finally:
        s.close()
    _assert_untouched(cache_dir)
    assert not (tmp_path / "evil.mp4").exists()


def test_tar_bundles_with_links_or_oversize_members_are_refused(
    sim: Any, recorded: dict[str, Any], tmp_path: Path
) -> None:
    good = _good_bundle(recorded, sim, tmp_path)
    members = {n: zipfile.ZipFile(good).read(n) for n in zipfile.ZipFile(good).namelist()}

    def tar_with(extra: tarfile.TarInfo | None) -> Path:
        dest = tmp_path / f"b{len(list(tmp_path.glob('b*.tar')))}.tar"
        with tarfile.open(dest, "w") as tf:
            for name, data in members.items():
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            if extra is not None:
                tf.addfile(extra)
        return dest

    hard = tarfile.TarInfo("results/" + "1" * 64 + ".mp4")
    hard.type = tarfile.LNKTYPE
    hard.linkname = LOCKFILE_NAME
    sym = tarfile.TarInfo("results/" + "2" * 64 + ".mp4")
    sym.type = tarfile.SYMTYPE
    sym.linkname = "/etc/passwd"
    cache_dir = tmp_path / "victim"
    s = _replay_session(cache_dir, recorded["nb"], "offline", max_result_mb=0.01)
    try:
        for bundle, message in (
            (tar_with(hard), "is a link"),
            (tar_with(sym), "is a link"),
            (tar_with(None), "cap"),  # results are larger than the 10 kB cap here
        ):
            with pytest.raises(BundleError, match=message):
                s.import_bundle(bundle)
    finally:
        s.close()
    _assert_untouched(cache_dir)


def test_import_never_overwrites_a_different_result_under_the_same_key(
    sim: Any, recorded: dict[str, Any], tmp_path: Path
) -> None:
    good = _good_bundle(recorded, sim, tmp_path)
    s = _replay_session(tmp_path / "other", recorded["nb"], "offline")
    try:
        s.import_bundle(good)
        job = recorded["jobs"][0]
        rec = s.cache.get(job.key)
        assert rec is not None
        # another result under the first key (e.g. recorded elsewhere with --force)
        part = s.store.new_temp("other-")
        part.write_bytes(b"another result")
        other = s.store.commit(part)
        swapped = {**rec.to_json(), "sha": other.sha, "path": other.path, "size": other.size}
        s.cache.put(type(rec).from_json(swapped))
        with pytest.raises(BundleError, match="different result is already cached"):
            s.import_bundle(good)
        assert s.cache.get(job.key).sha == other.sha  # untouched
        # a second import of the same bundle into a matching cache is a no-op
        s.cache.put(rec)
        assert len(s.import_bundle(good).present) == 2
    finally:
        s.close()


# -- magics --------------------------------------------------------------------------------------
def test_magic_subcommands(
    sim: Any, recorded: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell

    from goenhance_nb._magics import GoEnhanceMagics, parse_line

    for sub in ("mode", "verify", "export", "import"):
        assert parse_line(f"{sub} --help") is None
        assert sub in capsys.readouterr().out
    with pytest.raises(UsageError, match="invalid choice"):
        parse_line("mode fast")
    with pytest.raises(UsageError, match="required"):
        parse_line("export")

    shell = InteractiveShell.instance()
    m = GoEnhanceMagics(shell=shell)
    s = make_session(sim, recorded["cache"], lockfile=recorded["nb"] / LOCKFILE_NAME)
    m.set_session(s)
    try:
        m.goenhance("mode record")
        assert s.mode == "record"
        assert "goenhance mode: record" in capsys.readouterr().out
        m.goenhance("config")
        out = capsys.readouterr().out
        assert "mode" in out and "record" in out
        m.goenhance("verify")
        assert "2 result(s) verified" in capsys.readouterr().out
        m.goenhance(f"export {tmp_path / 'm.zip'}")
        assert (tmp_path / "m.zip").is_file()
        m.goenhance(f"import {tmp_path / 'm.zip'}")
        assert "2 already cached" in capsys.readouterr().out
        (recorded["nb"] / "goenhance_outputs" / "stray.mp4").write_bytes(b"x")
        with pytest.raises(UsageError, match="drift: 0 missing, 0 changed, 1 extra"):
            m.goenhance("verify")
    finally:
        s.close()


def test_export_with_inputs_lets_a_collaborator_replay_from_the_bundle_alone(
    sim: Any, recorded: dict[str, Any], clip: Path, tmp_path: Path
) -> None:
    nb: Path = recorded["nb"]
    src = make_session(sim, recorded["cache"], lockfile=nb / LOCKFILE_NAME)
    try:
        bundle = src.export(tmp_path / "with-inputs.zip", inputs=True)
    finally:
        src.close()
    assert any(n.startswith("inputs/") for n in zipfile.ZipFile(bundle).namelist())
    other_nb = tmp_path / "collaborator"
    other_nb.mkdir()
    (other_nb / LOCKFILE_NAME).write_bytes((nb / LOCKFILE_NAME).read_bytes())
    sim.clear_requests()
    s = _replay_session(tmp_path / "cache-c", other_nb, "offline")
    try:
        report = s.import_bundle(bundle)
        copied = other_nb / "goenhance_inputs" / "clip.mp4"
        assert report.inputs == (str(copied),)
        assert copied.read_bytes() == clip.read_bytes()
        rec = s.transform(copied, "Anime Style", duration=3, seed=7).result(timeout=30)
        assert rec.file.read_bytes() == recorded["jobs"][0].record.file.read_bytes()
        assert s.client.request_count == 0
    finally:
        s.close()
    assert sim.requests() == []


@pytest.mark.slow
def test_headless_kernel_records_then_replays_by_default(
    sim: Any, sim_env: dict[str, str], clip: Path, tmp_path: Path
) -> None:
    """A real kernel under nbclient: GOENHANCE_MODE=record writes the lockfile beside the
    notebook (the kernel's cwd); the next headless run defaults to replay (no generate call),
    and a transformation the lockfile lacks fails its cell naming it, still without a call."""
    import nbformat

    from goenhance_nb._demo import execute_notebook

    work = tmp_path / "work"
    work.mkdir()
    (work / "clip.mp4").write_bytes(clip.read_bytes())

    def notebook(seed: int) -> Path:
        nb = nbformat.v4.new_notebook(
            cells=[
                nbformat.v4.new_code_cell("%load_ext goenhance_nb"),
                nbformat.v4.new_code_cell("%goenhance mode"),
                nbformat.v4.new_code_cell(
                    f"job = %goenhance run clip.mp4 --style 2000 -d 3 -r 540p --seed {seed}\n"
                    "print('cached:', job.cached)"
                ),
            ]
        )
        path = tmp_path / f"nb{seed}.ipynb"
        nbformat.write(nb, path)
        return path

    def text_of(nb: Any) -> str:
        return "".join(
            str(o.get("text", "")) + str(o.get("ename", "")) + str(o.get("evalue", ""))
            for c in nb.cells
            for o in c.get("outputs", [])
        )

    nb, err = execute_notebook(notebook(1), work, env={"GOENHANCE_MODE": "record"}, name="a.ipynb")
    assert err is None, err
    assert "goenhance mode: record" in text_of(nb)
    assert len(Lockfile(work / LOCKFILE_NAME).entries()) == 1
    assert verify(work / "a.ipynb").ok
    calls = sim.generate_calls()
    assert calls == 1

    nb, err = execute_notebook(notebook(1), work, name="a.ipynb")
    assert err is None, err
    assert "goenhance mode: replay" in text_of(nb) and "cached: True" in text_of(nb)
    nb, err = execute_notebook(notebook(2), work, name="b.ipynb")
    assert err is not None
    assert "ReplayMiss" in text_of(nb) and "clip.mp4 -> Anime Style (3 s, 540p, seed 2" in text_of(
        nb
    )
    assert sim.generate_calls() == calls


def test_a_lockfile_key_that_is_a_path_is_refused(
    sim: Any, recorded: dict[str, Any], tmp_path: Path
) -> None:
    good = _good_bundle(recorded, sim, tmp_path)

    def evil_key(info: zipfile.ZipInfo, data: bytes, zout: zipfile.ZipFile) -> bytes:
        if info.filename != LOCKFILE_NAME:
            return data
        lock = json.loads(data)
        entry = next(iter(lock["results"].values()))
        lock["results"] = {"../../../escaped": entry}
        return json.dumps(lock).encode()

    bad = _rewrite_zip(good, tmp_path / "bad.zip", evil_key)
    s = _replay_session(tmp_path / "victim", recorded["nb"], "offline")
    try:
        with pytest.raises(BundleError, match="malformed key"):
            s.import_bundle(bad)
    finally:
        s.close()
    _assert_untouched(tmp_path / "victim")
    assert not list(tmp_path.rglob("escaped*"))
