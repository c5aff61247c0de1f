"""The panel against a real Session and the simulator (no browser): gallery, submit, cache,
upload handling, file browser, headless Python API."""

# ruff: noqa: F811  (fixtures shared with test_widgets are imported, then requested by name)

from __future__ import annotations

from pathlib import Path

import pytest
from test_widgets import (  # noqa: F401 (fixtures)
    WAIT,
    clip,
    comms,
    result_html,
    session,
    visible,
    wait_settled,
)
from workers.support import wait_until

from goenhance_nb._panel import Panel, find_videos, save_upload


def test_gallery_is_built_from_the_model_list_with_preview_images(sim, session, comms):
    styles = session.styles()
    p = Panel(session)
    # DOM hooks the browser suite relies on (ARCHITECTURE.md section 4)
    assert "goenhance-panel" in p._dom_classes
    assert "goenhance-input" in p.input_path._dom_classes
    assert "goenhance-submit" in p.submit_button._dom_classes
    assert p.submit_button.description == "Submit"
    assert "goenhance-jobs" in p.jobs_box._dom_classes
    assert "goenhance-credits" in p.credits._dom_classes
    assert "goenhance-clear" in p.clear_button._dom_classes
    # the jobs area is bounded and scrolls (issue 17 point 9)
    assert p.jobs_box.layout.max_height and p.jobs_box.layout.overflow == "auto"
    assert p.backend.value == "SIMULATED"
    assert set(p.gallery.buttons) == {s.id for s in styles}
    for s in styles:
        btn = p.gallery.buttons[s.id]
        assert {"goenhance-style", f"goenhance-style-{s.id}"} <= set(btn._dom_classes)
        assert s.label in btn.description
    assert p.previews_ready.wait(WAIT)
    for s in styles:
        img = p.gallery.images[s.id]
        assert bytes(img.value[:3]) == b"\xff\xd8\xff", s  # JPEG bytes, not a URL
        assert visible(img)
        assert "http" not in str(img.get_state().get("value", ""))[:20]
    # exactly one style selected, and selecting another deselects it
    p.gallery.buttons[2006].value = True
    assert [sid for sid, b in p.gallery.buttons.items() if b.value] == [2006]
    assert p.gallery.selected == 2006
    p.gallery.buttons[2006].value = False  # clicking the selected style again keeps it
    assert p.gallery.buttons[2006].value and p.gallery.selected == 2006
    # previews are cached: a second panel fetches none over HTTP
    sim.clear_requests()
    p2 = Panel(session)
    assert p2.previews_ready.wait(WAIT)
    assert sim.requests("/sim/previews") == []
    assert bytes(p2.gallery.images[2000].value[:3]) == b"\xff\xd8\xff"


def test_submit_then_same_submit_is_cached_without_generate(sim, session, comms, clip):
    p = Panel(session)
    job = p.submit(clip, "oil painting", duration=3, resolution="540p", seed=7)
    assert p.input_path.value == str(clip) and p.gallery.selected == 2006
    assert p.duration.value == 3 and p.resolution.value == "540p" and p.seed.value == 7
    job.result(timeout=WAIT)
    wait_settled(p.status_widgets[0])
    assert p.status_widgets[0].badge.value == "done"
    assert sim.generate_calls() == 1
    # the panel shows the result from the job's "done" event, on the engine thread, right
    # after the handle settles: wait for it to appear (no fixed sleep)
    first = p.rows[0]
    wait_until(lambda: first.result.outputs, "the result in the panel", WAIT)
    assert 'class="goenhance-video"' in result_html(first.result)
    assert "goenhance-cached" not in result_html(first.result)
    assert {"goenhance-panel-result", "goenhance-job-result"} <= set(first.result._dom_classes)

    again = p.submit_button.click() or p.jobs[-1]  # the button, exactly as a user does
    assert again is not job and len(p.jobs) == 2
    assert again.cached
    wait_settled(p.status_widgets[1])
    assert p.status_widgets[1].badge.value == "cached"
    assert sim.generate_calls() == 1  # zero new generate calls
    # each row holds its own result (issue 17 point 9: no shared result area)
    assert len(first.result.outputs) == 1 and len(p.rows[1].result.outputs) == 1
    assert "goenhance-cached" in p.rows[1].result.outputs[0]["data"]["text/html"]
    rows = p.jobs_box.children
    assert rows == (p.rows[1], p.rows[0])  # one order: newest first
    assert "goenhance-jobs" in p.jobs_box._dom_classes
    # credits refresh after each finished job (in the background): spend shows the real cost
    wait_until(lambda: "session spend 15" in p.credits.value, "the spend to refresh", WAIT)
    assert "session spend 15" in p.credits.value, p.credits.value
    assert "goenhance-credits" in p.credits._dom_classes


def test_upload_is_copied_and_widget_value_cleared(sim, session, comms, clip):
    p = Panel(session, load_previews=False)
    data = clip.read_bytes()
    # what the frontend sends when the user picks a file (deserialised like a comm update)
    p.upload.set_state(
        {
            "value": [
                {
                    "name": "my clip.mp4",
                    "type": "video/mp4",
                    "size": len(data),
                    "content": memoryview(data),
                    "last_modified": 1_700_000_000_000,
                }
            ]
        }
    )
    # no bytes stay in the widget state; one entry (name, size) per kept upload, so the
    # button's "(1)" counts the clips uploaded here (issue 17 point 11)
    assert [(f["name"], f["size"], len(f["content"])) for f in p.upload.value] == [
        ("my_clip.mp4", len(data), 0)
    ]
    assert [len(f["content"]) for f in p.upload.get_state()["value"]] == [0]
    assert p.input_path.value == "goenhance_uploads/my_clip.mp4"  # relative to the notebook
    local = Path.cwd() / p.input_path.value
    assert local.is_file() and local.read_bytes() == data
    assert "goenhance_uploads/my_clip.mp4" in p.browser.options
    assert "uploaded" in p.message.value
    job = p.submit(duration=3)
    job.result(timeout=WAIT)
    assert sim.generate_calls() == 1


def test_file_browser_lists_videos_and_sets_the_path(sim, session, comms, clip, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.MOV").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "goenhance_outputs").mkdir()
    (tmp_path / "goenhance_outputs" / "old.mp4").write_bytes(b"x")
    assert find_videos(tmp_path) == ["clip.mp4", "sub/b.MOV"]
    p = Panel(session, notebook_dir=tmp_path, load_previews=False)
    assert list(p.browser.options) == ["clip.mp4", "sub/b.MOV"]
    p.browser.value = "clip.mp4"
    assert p.input_path.value == "clip.mp4"
    job = p.submit(duration=3)
    assert Path(job.input.path).resolve() == clip.resolve() or job.input.name == "clip.mp4"


def test_bad_input_is_refused_before_any_http_call(sim, session, comms, tmp_path):
    from goenhance_nb import InputError

    p = Panel(session, load_previews=False)
    sim.clear_requests()
    with pytest.raises(InputError):
        p.submit(tmp_path / "missing.mp4", 2000)
    assert "InputError" in p.message.value
    with pytest.raises(InputError):
        p.submit(style="no such style")
    assert p.jobs == [] and sim.generate_calls() == 0


def test_failed_row_retry_is_tracked_by_the_panel(sim, session, comms, clip):
    from goenhance_nb import JobFailed

    p = Panel(session, load_previews=False)
    sim.faults({"kind": "job_failed"})
    job = p.submit(clip, 2005, duration=3, resolution="540p")
    with pytest.raises(JobFailed):
        job.result(timeout=WAIT)
    row = p.status_widgets[0]
    wait_settled(row)
    assert row.badge.value == "failed" and visible(row.retry_button) and visible(row.error)
    assert p.rows[0].result.outputs == ()
    row.retry_button.click()
    assert len(p.jobs) == 2 and p.jobs[1] is row.job
    p.jobs[1].result(timeout=WAIT)
    wait_settled(row)
    assert row.badge.value == "done"
    wait_until(lambda: p.rows[0].result.outputs, "the retried result in the panel", WAIT)
    assert 'class="goenhance-video"' in result_html(p.rows[0].result)  # in the same row


def test_style_without_a_fetchable_preview_stays_a_text_button(sim, session, comms):
    # the cached model list (a real meta row) points one style at a preview the server lacks
    styles = [s.to_json() for s in session.styles()]
    styles[0]["preview_url"] = styles[0]["preview_url"].rsplit("/", 1)[0] + "/9999.jpg"
    session.cache.meta_set(f"styles:{session.backend}", styles)
    p = Panel(session)
    assert p.previews_ready.wait(WAIT)
    broken = styles[0]["id"]
    assert not visible(p.gallery.images[broken]) and p.gallery.images[broken].value == b""
    assert p.gallery.buttons[broken].description.startswith(styles[0]["label"])
    others = [s["id"] for s in styles[1:]]
    assert all(visible(p.gallery.images[i]) for i in others)
    assert p.submit_button.description == "Submit"


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("my clip.mp4", "my_clip.mp4"),
        ("../../etc/evil.mp4", "evil.mp4"),
        ("..", "upload.mp4"),
        (".hidden.mov", "hidden.mov"),
    ],
)
def test_save_upload_writes_a_safe_name_beside_the_notebook(tmp_path, name, stored):
    dest = save_upload(tmp_path, name, b"first")
    assert dest == tmp_path / "goenhance_uploads" / stored
    assert dest.read_bytes() == b"first"
    assert save_upload(tmp_path, name, b"second") == dest  # a new upload replaces the old
    assert dest.read_bytes() == b"second"
    assert [p.name for p in dest.parent.iterdir()] == [stored]  # no temp file left


def test_cost_estimate_follows_style_duration_and_resolution(sim, session, comms):
    p = Panel(session, load_previews=False)
    p.gallery.select(2000)
    p.resolution.value = "540p"
    p.duration.value = 3
    assert p.estimate.value == "cost ~15 credits (estimate, default rate)"
    p.resolution.value = "720p"
    assert p.estimate.value == "cost ~30 credits (estimate, default rate)"
    p.gallery.select(2005)  # a VIP style costs 1.5x
    assert p.estimate.value == "cost ~45 credits (estimate, default rate)"


# -- issue 17: the panel at scale (points 2, 9, 11) --------------------------------------------
@pytest.mark.parametrize(
    ("length", "want"),
    [(None, None), (1.2, 3), (3.0, 3), (3.97, 4), (4.5, 4), (12.0, 12), (30.0, 30), (95.0, 30)],
)
def test_default_duration_is_the_input_length_rounded_down_and_clamped(length, want):
    from goenhance_nb._inputs import default_duration

    assert default_duration(length) == want


def test_duration_follows_the_chosen_input_and_cannot_pass_it(sim, session, comms, tmp_path):
    from goenhance_nb import InputError, sample_clip

    sample_clip(tmp_path / "short.mp4", seconds=4.5, width=160, height=120, fps=12)
    p = Panel(session, notebook_dir=tmp_path, load_previews=False)
    p.gallery.select(2000)
    p.resolution.value = "540p"
    assert p.duration.max == 30 and p.duration.value == 5  # no input chosen yet
    p.browser.value = "short.mp4"
    assert p.input_path.value == "short.mp4"
    assert (p.duration.value, p.duration.max) == (4, 4)
    assert p.duration_hint.value == "short.mp4 is 4.5 s"
    assert p.estimate.value == "cost ~20 credits (estimate, default rate)"  # follows the input
    p.duration.value = 10  # the control cannot go past the input's length
    assert p.duration.value == 4
    sim.clear_requests()
    with pytest.raises(InputError, match="longer than the input"):
        p.submit(duration=9)
    assert "longer than the input" in p.message.value
    assert sim.generate_calls() == 0 and p.jobs == []
    p.input_path.value = "https://example.invalid/clip.mp4"  # a URL: the plain 3-30 s range
    assert p.duration.max == 30 and p.browser.value is None and p.duration_hint.value == ""
    # a clip under the API's 3 s minimum: 3 s, and the hint says why it is longer
    sample_clip(tmp_path / "tiny.mp4", seconds=2.0, width=160, height=120, fps=12)
    p.refresh_files()
    p.browser.value = "tiny.mp4"
    assert (p.duration.value, p.duration.max) == (3, 3)
    assert p.duration_hint.value == "tiny.mp4 is 2.0 s (shorter than the 3 s minimum)"
    # why a chosen file cannot be used is shown at once, and goes when the input is good
    p.input_path.value = "nowhere.mp4"
    assert "input file not found" in p.message.value and p.duration.max == 30
    p.input_path.value = "short.mp4"
    assert p.message.value == "" and p.duration.max == 4


def test_the_videos_list_highlights_the_chosen_input(sim, session, comms, clip, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.mp4").write_bytes(clip.read_bytes())
    p = Panel(session, notebook_dir=tmp_path, load_previews=False)
    assert p.browser.value is None
    p.input_path.value = "sub/b.mp4"  # typed
    assert p.browser.value == "sub/b.mp4"
    p.input_path.value = str(tmp_path / "clip.mp4")  # an absolute path under the notebook
    assert p.browser.value == "clip.mp4"
    assert p.input_path.value == str(tmp_path / "clip.mp4")  # the text is left as typed
    p.refresh_files()
    assert p.browser.value == "clip.mp4"  # still highlighted after a refresh
    p.input_path.value = "elsewhere.mp4"
    assert p.browser.value is None


def test_a_broken_upload_is_removed_and_not_listed(sim, session, comms, tmp_path):
    p = Panel(session, notebook_dir=tmp_path, load_previews=False)
    junk = b"this is not a video" * 100
    p.upload.set_state(
        {
            "value": [
                {
                    "name": "broken.mp4",
                    "type": "video/mp4",
                    "size": len(junk),
                    "content": memoryview(junk),
                    "last_modified": 1_700_000_000_000,
                }
            ]
        }
    )
    assert "upload refused" in p.message.value and "broken.mp4" in p.message.value
    assert not (tmp_path / "goenhance_uploads" / "broken.mp4").exists()
    assert "goenhance_uploads/broken.mp4" not in p.browser.options
    assert p.upload.value == () and p.input_path.value == ""  # counter "(0)": none kept


def test_rows_hold_their_results_and_clear_removes_only_finished_rows(sim, session, comms, clip):
    p = Panel(session, load_previews=False)
    done = p.submit(clip, 2000, duration=3, resolution="540p", seed=3)
    done.result(timeout=WAIT)
    cached = p.submit()  # the same again: a cache hit, shown in its own row
    assert cached.cached
    row = p.rows[1]
    assert len(row.result.outputs) == 1 and visible(row.result)
    # a thumbnail player until "Larger" is pressed (CSS under .goenhance-panel sizes it)
    assert visible(row.expand_button) and "goenhance-expanded" not in row.result._dom_classes
    row.expand_button.value = True
    assert "goenhance-expanded" in row.result._dom_classes
    assert row.expand_button.description == "Smaller"
    row.expand_button.value = False
    assert "goenhance-expanded" not in row.result._dom_classes
    sim.config(processing_seconds=30)
    running = p.submit(seed=4)
    assert not running.done()
    assert p.clear_finished() == 2
    assert p.jobs == [running] and p.jobs_box.children == (p.rows[0],)
    assert p.rows[0].status.job is running
    assert session.cache.get(done.key) is not None  # the cache keeps the result
    running.cancel_watch()
