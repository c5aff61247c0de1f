"""Result display: goenhance_outputs/ hard links, relative <video> src, embed, compare, metadata."""

from __future__ import annotations

import base64
import os
import re
import time
from pathlib import Path

import pytest

from goenhance_nb._cache import ResultRecord
from goenhance_nb._display import (
    ResultBundle,
    error_bundle,
    placeholder_bundle,
    publish_result,
)
from goenhance_nb._outputs import notebook_dir, outputs_path

KEY = "0123456789abcdef" * 4
VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42" + os.urandom(4096)


def make_record(
    store: Path, *, backend: str = "simulated", style: str = "Anime Style", key: str = KEY
) -> ResultRecord:
    store.mkdir(parents=True, exist_ok=True)
    path = store / f"{key}.mp4"
    path.write_bytes(VIDEO_BYTES)
    return ResultRecord(
        key=key,
        path=str(path),
        sha="b3" * 32,
        size=len(VIDEO_BYTES),
        job_id="job-uuid-1234",
        model=2000,
        style_label=style,
        model_version="v5",
        params={"duration": 3, "resolution": "540p", "seed": -1, "model": 2000},
        input_hash="ab" * 32,
        cost=15,
        backend=backend,
        created=time.time(),
        source_name="sample.mp4",
    )


def video_src(html: str) -> str:
    m = re.search(r'<video class="goenhance-video"[^>]*\ssrc="([^"]+)"', html)
    assert m, html
    return m.group(1)


def test_link_mode_hard_links_into_outputs_and_uses_relative_src(tmp_path: Path) -> None:
    rec = make_record(tmp_path / "cache" / "store")
    nb = tmp_path / "nb"
    nb.mkdir()
    bundle = publish_result(rec, notebook_dir=nb, frontend="lab")
    html = bundle["text/html"]
    src = video_src(html)
    assert src == "goenhance_outputs/anime-style-01234567.mp4"
    local = nb / src
    assert local.read_bytes() == VIDEO_BYTES
    assert os.path.samefile(local, rec.path), "a hard link to the store file"
    assert 'class="goenhance-result"' in html
    assert "controls muted playsinline" in html and 'preload="metadata"' in html
    assert '<span class="goenhance-simulated"' in html and ">SIMULATED</span>" in html
    assert "goenhance-cached" not in html
    assert bundle["text/plain"].startswith(
        "GoEnhance result: goenhance_outputs/anime-style-01234567.mp4"
    )
    assert "[SIMULATED]" in bundle["text/plain"]
    meta = bundle.metadata["goenhance_nb"]
    assert meta["key"] == KEY and meta["job_id"] == "job-uuid-1234"
    assert meta["input_hash"] == "ab" * 32 and meta["output_sha"] == "b3" * 32
    assert meta["params"]["duration"] == 3 and meta["model"] == 2000
    assert meta["style"] == "Anime Style" and meta["backend"] == "simulated"
    assert meta["cost"] == 15 and meta["created"] == rec.created
    assert meta["file"] == src


def test_a_symlinked_outputs_folder_keeps_the_src_the_server_serves(tmp_path: Path) -> None:
    # goenhance_outputs/ a symlink to another disk: the browser asks the server for the path
    # below the notebook's folder; the symlink's target may be outside what it serves
    rec = make_record(tmp_path / "cache" / "store")
    nb, elsewhere = tmp_path / "nb", tmp_path / "big-disk" / "videos"
    nb.mkdir()
    elsewhere.mkdir(parents=True)
    (nb / "goenhance_outputs").symlink_to(elsewhere, target_is_directory=True)
    src = video_src(publish_result(rec, notebook_dir=nb, frontend="lab")["text/html"])
    assert src == "goenhance_outputs/anime-style-01234567.mp4"
    assert (elsewhere / "anime-style-01234567.mp4").read_bytes() == VIDEO_BYTES
    # an output folder outside the notebook's: relative between the real paths, as before
    out = publish_result(rec, notebook_dir=nb, frontend="lab", output_dir=tmp_path / "out")
    assert video_src(out["text/html"]) == "../out/anime-style-01234567.mp4"


def test_real_backend_has_no_simulated_label_and_cached_label_shows(tmp_path: Path) -> None:
    rec = make_record(tmp_path / "store", backend="api.goenhance.ai", style="Oil Painting")
    bundle = publish_result(rec, notebook_dir=tmp_path, frontend="lab", cached=True)
    assert "SIMULATED" not in bundle["text/html"] and "SIMULATED" not in bundle["text/plain"]
    assert '<span class="goenhance-cached"' in bundle["text/html"]
    assert video_src(bundle["text/html"]).startswith("goenhance_outputs/oil-painting-")


def test_republish_keeps_the_same_file_and_survives_store_deletion(tmp_path: Path) -> None:
    rec = make_record(tmp_path / "store")
    first = publish_result(rec, notebook_dir=tmp_path, frontend="lab")
    second = publish_result(rec, notebook_dir=tmp_path, frontend="lab")
    assert video_src(first["text/html"]) == video_src(second["text/html"])
    Path(rec.path).unlink()  # cache cleared: the notebook's file stays
    assert (tmp_path / video_src(first["text/html"])).read_bytes() == VIDEO_BYTES


def test_copy_when_hard_link_is_impossible(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to force a cross-device copy")
    store = shm / f"goenhance-test-{os.getpid()}"
    try:
        rec = make_record(store)
        local = outputs_path(rec, tmp_path)
        assert local.read_bytes() == VIDEO_BYTES
        assert not os.path.samefile(local, rec.path)
    finally:
        for p in store.glob("*"):
            p.unlink()
        store.rmdir()


def test_embed_inlines_base64_and_still_writes_the_file(tmp_path: Path) -> None:
    rec = make_record(tmp_path / "store")
    bundle = publish_result(rec, notebook_dir=tmp_path, frontend="vscode")  # auto-embed
    src = video_src(bundle["text/html"])
    assert src.startswith("data:video/mp4;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == VIDEO_BYTES
    assert bundle.metadata["goenhance_nb"]["embedded"] is True
    assert (tmp_path / "goenhance_outputs" / "anime-style-01234567.mp4").exists()
    # over the budget: link instead, even in VS Code
    small = publish_result(rec, notebook_dir=tmp_path, frontend="vscode", embed_limit_mb=0.001)
    assert video_src(small["text/html"]) == "goenhance_outputs/anime-style-01234567.mp4"


def test_compare_shows_before_and_after_with_sync_script(tmp_path: Path) -> None:
    rec = make_record(tmp_path / "store")
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"source-bytes")
    bundle = publish_result(rec, notebook_dir=tmp_path, frontend="lab", compare=True, source=source)
    html = bundle["text/html"]
    assert "goenhance-compare" in html and html.count("<video") == 2
    m = re.search(r'<video class="goenhance-source"[^>]*\ssrc="([^"]+)"', html)
    assert m and (tmp_path / m.group(1)).read_bytes() == b"source-bytes"
    assert "<script>" in html and "currentTime" in html  # synced when JS runs
    assert "before" in html and "after" in html


def test_output_dir_setting_and_notebook_dir_from_session_name(tmp_path: Path) -> None:
    rec = make_record(tmp_path / "store")
    nbdir = tmp_path / "project" / "notebooks"
    nbdir.mkdir(parents=True)
    assert notebook_dir(env={"JPY_SESSION_NAME": str(nbdir / "a.ipynb")}) == nbdir.resolve()
    assert notebook_dir(env={}) == Path.cwd().resolve()
    out = tmp_path / "project" / "media"
    bundle = publish_result(rec, notebook_dir=nbdir, frontend="lab", output_dir=out)
    src = video_src(bundle["text/html"])
    assert src == "../media/anime-style-01234567.mp4"
    assert (nbdir / src).resolve().read_bytes() == VIDEO_BYTES


def test_bundle_displays_with_metadata_and_no_urls(tmp_path: Path) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    rec = make_record(tmp_path / "store")
    bundle = publish_result(rec, notebook_dir=tmp_path, frontend="lab")
    data, md = InteractiveShell.instance().display_formatter.format(bundle)
    assert data["text/html"] == bundle["text/html"]
    assert md["goenhance_nb"]["key"] == KEY
    assert "http://" not in data["text/html"] and "https://" not in data["text/html"]
    assert isinstance(bundle, ResultBundle) and isinstance(bundle, dict)


def test_placeholder_and_error_bundles() -> None:
    ph = placeholder_bundle("job abcd1234", simulated=True)
    assert "goenhance-placeholder" in ph["text/html"] and "SIMULATED" in ph["text/plain"]
    from goenhance_nb._errors import JobFailed

    err = error_bundle(
        JobFailed("abcd", "boom at https://x.example/r.mp4?sig=SECRET"), job_id="abcd"
    )
    assert "job abcd failed: boom at" in err["text/plain"] and "SECRET" not in err["text/plain"]
    assert "SECRET" not in err["text/html"]


def test_saved_error_output_says_what_to_do_in_notebook_terms() -> None:
    # the widget is not saved in the .ipynb: the saved error output carries the hint itself,
    # phrased for a notebook without buttons
    from goenhance_nb._errors import JobFailed, JobTimedOut

    failed = error_bundle(JobFailed("abcd", "status failed"), job_id="abcd")
    assert "run the cell again" in failed["text/plain"] and "Retry" not in failed["text/plain"]
    assert 'class="goenhance-result-hint"' in failed["text/html"]
    timed = error_bundle(JobTimedOut("abcd-1234", "not finished"), job_id="abcd-1234")
    assert "%goenhance resume abcd-123" in timed["text/plain"]  # the short id (a prefix)


def test_render_touches_no_file(tmp_path: Path) -> None:
    # _display only renders: a Published result renders though nothing exists on disk
    from goenhance_nb._display import render_result
    from goenhance_nb._outputs import Published, output_name

    rec = make_record(tmp_path / "store")
    rel = f"goenhance_outputs/{output_name(rec.style_label, rec.key)}"
    assert rel == "goenhance_outputs/anime-style-01234567.mp4"
    bundle = render_result(rec, Published(rel=rel, src=rel, embedded=False), cached=True)
    assert video_src(bundle["text/html"]) == rel
    assert bundle.metadata["goenhance_nb"]["file"] == rel
    assert not (tmp_path / "goenhance_outputs").exists()
