"""StatusWidget against a real Session and the simulator over loopback (no browser).

Widget messages are recorded by a comm that keeps what ipywidgets would send to the frontend
(the `comm` package's documented seam), so each test asserts what a user would see.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comm
import ipywidgets
import pytest
from comm.base_comm import BaseComm
from ipywidgets.widgets.widget import _instances

from goenhance_nb._lifecycle import Badge
from goenhance_nb.widgets import StatusWidget, Throttle
from goenhance_nb.widgets._controls import short_id

WAIT = 60  # generous upper bound for waits (never asserted on)


# -- recording comm ----------------------------------------------------------------------------
class CommLog:
    """Every comm message the widgets sent, in order: (comm_id, msg_type, data)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, Any]] = []
        self.lock = threading.Lock()

    def updates(self, widget: ipywidgets.Widget) -> list[dict[str, Any]]:
        """The state dicts of the ``update`` messages sent for ``widget``."""
        cid = widget.comm.comm_id
        with self.lock:
            return [
                d["state"]
                for c, t, d in self.messages
                if c == cid and t == "comm_msg" and (d or {}).get("method") == "update"
            ]

    def synced_values(self, widget: ipywidgets.Widget, name: str = "value") -> list[Any]:
        """Values of trait ``name`` as the frontend received them (open state, then updates)."""
        cid = widget.comm.comm_id
        out = []
        with self.lock:
            for c, _t, d in self.messages:
                if c != cid or not d:
                    continue
                state = d.get("state") or {}
                if name in state:
                    out.append(state[name])
        return out


class _RecordingComm(BaseComm):
    log: CommLog

    def publish_msg(
        self,
        msg_type: str,
        data: Any = None,
        metadata: Any = None,
        buffers: Any = None,
        **keys: Any,
    ) -> None:
        with self.log.lock:
            self.log.messages.append((self.comm_id, msg_type, data))


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> Iterator[CommLog]:
    """Record every widget comm message (widgets created in the test open recording comms)."""
    log = CommLog()

    def create(*args: Any, **kwargs: Any) -> BaseComm:
        c = _RecordingComm.__new__(_RecordingComm)
        c.log = log
        c.__init__(*args, **kwargs)
        return c

    monkeypatch.setattr(comm, "create_comm", create)
    before = set(_instances)
    yield log
    for mid in set(_instances) - before:
        w = _instances.get(mid)
        if w is not None:
            w.close()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    from goenhance_nb import sample_clip

    return Path(sample_clip(tmp_path / "clip.mp4", seconds=3.0, width=160, height=120, fps=12))


@pytest.fixture
def session(
    sim: Any, sim_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    from goenhance_nb import Session

    monkeypatch.chdir(tmp_path)
    s = Session()
    yield s
    s.close()


def wait_settled(w: StatusWidget) -> None:
    assert w.settled.wait(WAIT), f"widget never showed a terminal state (badge {w.badge.value!r})"


def visible(w: ipywidgets.Widget) -> bool:
    return w.layout.display != "none"


def result_html(out: ipywidgets.Output) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in out.outputs)


# -- tests ------------------------------------------------------------------------------------
@pytest.fixture
def session_no_local_queue(
    sim: Any, sim_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """A Session that does not hold jobs back locally (so the server's WAITING shows)."""
    from goenhance_nb import Session

    monkeypatch.chdir(tmp_path)
    s = Session(queue_limit=8)
    yield s
    s.close()


def test_status_follows_job_to_done_with_raw_status_verbatim(
    sim, session_no_local_queue, comms, clip
):
    # a second job waits behind the first on the server (queue_limit 1): the server says
    # WAITING, then reports completion as "completed", both verbatim beside the badge
    session = session_no_local_queue
    sim.config(
        queue_limit=1, waiting_status="WAITING", success_status="completed", processing_seconds=1.5
    )
    first = session.transform(clip, 2000, duration=3, resolution="540p", seed=1)
    submitted = threading.Event()
    first.subscribe(lambda ev: ev.job_id and submitted.set())
    assert submitted.wait(WAIT)  # the first job holds the server's only slot
    job = session.transform(clip, 2000, duration=3, resolution="540p", seed=2)
    w = StatusWidget(job, session=session)
    seen: list[tuple[str, str]] = []
    w.raw_label.observe(lambda ch: seen.append((w.badge.value, ch["new"])), names="value")

    job.result(timeout=WAIT)
    first.result(timeout=WAIT)
    wait_settled(w)

    assert ("queued", "WAITING") in seen, seen
    assert any(b == "running" for b, _ in seen), seen
    assert (w.badge.value, w.raw_label.value) == ("done", "completed")
    # the frontend received the final state (not only the Python trait)
    assert comms.synced_values(w.badge)[-1] == "done"
    assert comms.synced_values(w.raw_label)[-1] == "completed"
    assert w.backend.value == "SIMULATED"
    assert w.job_id_label.value == job.id[:8]
    assert "cost" in w.info.value
    assert w.toast.value.startswith("Ready: ") and w.toast.value.endswith(".mp4")
    assert visible(w.toast)
    html = result_html(w.result)
    assert 'class="goenhance-video"' in html and "goenhance-simulated" in html
    assert not visible(w.retry_button) and not visible(w.cancel_button)
    assert not visible(w.error)
    assert {"goenhance-status"} <= set(w._dom_classes)


def test_widget_for_a_cached_job_shows_cached_from_its_first_render(sim, session, comms, clip):
    # the panel and a re-run cell build a widget for a job that is already finished: its very
    # state is "cached" with the job id, never a "queued" flash until a throttled update
    first = session.transform(clip, 2000, duration=3, resolution="540p")
    first.result(timeout=WAIT)
    job = session.transform(clip, 2000, duration=3, resolution="540p")
    job.result(timeout=WAIT)
    assert job.cached
    w = StatusWidget(job, session=session)
    assert w.badge.value == "cached"
    assert w.job_id_label.value == short_id(first.id)
    # what the frontend holds when the widget is displayed (right after construction); the
    # badge's creation value travels in the comm-open, before any view exists
    assert comms.synced_values(w.badge)[-1] == "cached"


def test_mode_in_force_is_shown_unless_live(sim, session, comms, clip):
    # issue 14: the reproducibility mode is visible beside the status (hidden in plain live mode)
    job = session.transform(clip, 2000, duration=3, resolution="540p")
    job.result(timeout=WAIT)
    live = StatusWidget(job, session=session)
    assert not visible(live.mode_label)
    session.set_mode("record")
    rec = StatusWidget(job, session=session)
    assert visible(rec.mode_label) and rec.mode_label.value == "mode: record"
    assert "goenhance-mode" in rec.mode_label._dom_classes


def test_local_queue_position_is_shown(sim, session, comms, clip):
    # the account allows one job at a time: the second waits locally and says where it is
    sim.config(queue_limit=1, processing_seconds=1.5)
    first = session.transform(clip, 2000, duration=3, resolution="540p", seed=11)
    submitted = threading.Event()
    first.subscribe(lambda ev: ev.job_id and submitted.set())
    assert submitted.wait(WAIT)
    job = session.transform(clip, 2000, duration=3, resolution="540p", seed=12)
    w = StatusWidget(job, session=session)
    job.result(timeout=WAIT)
    first.result(timeout=WAIT)
    wait_settled(w)
    timings = comms.synced_values(w.timing)
    assert any("local queue position 1" in t for t in timings), timings
    assert "local queue" not in w.timing.value  # gone once it ran
    assert w.badge.value == "done"


def test_eta_comes_only_from_observed_history(sim, session, comms, clip):
    sim.config(processing_seconds=1.0)
    job = session.transform(clip, 2000, duration=3, resolution="540p", seed=41)
    w = StatusWidget(job, session=session)
    job.result(timeout=WAIT)
    wait_settled(w)
    # no history yet: no ETA, no bar (nothing invented)
    assert not any("ETA" in v for v in comms.synced_values(w.timing))
    assert "none" in comms.synced_values(w.progress.layout, "display")
    assert all(v == "none" for v in comms.synced_values(w.progress.layout, "display"))

    # fewer than 3 comparable past jobs: still nothing (issue 17, point 15)
    for seed in (42, 43):
        more = session.transform(clip, 2000, duration=3, resolution="540p", seed=seed)
        w_more = StatusWidget(more, session=session)
        more.result(timeout=WAIT)
        wait_settled(w_more)
        assert not any("ETA" in v for v in comms.synced_values(w_more.timing))

    job2 = session.transform(clip, 2000, duration=3, resolution="540p", seed=44)
    w2 = StatusWidget(job2, session=session)
    job2.result(timeout=WAIT)
    wait_settled(w2)
    etas = [v for v in comms.synced_values(w2.timing) if "ETA" in v]
    assert etas and all("from 3 similar past jobs" in v for v in etas), etas
    assert None in comms.synced_values(w2.progress.layout, "display")  # the labelled bar showed
    assert w2.progress.description == "estimate"
    assert "ETA" not in w2.timing.value  # gone once done


def test_failure_shows_one_line_error_then_retry_yields_done(sim, session, comms, clip):
    from goenhance_nb import JobFailed

    sim.faults({"kind": "job_failed"})
    job = session.transform(clip, 2004, duration=3, resolution="540p")
    w = StatusWidget(job, session=session)
    with pytest.raises(JobFailed):
        job.result(timeout=WAIT)
    wait_settled(w)

    assert w.badge.value == "failed"
    assert visible(w.error) and "\n" not in w.error.value
    # once, with the reason: the simulator gives none, so the widget says so (issue 17, 8)
    assert f"job {job.id[:8]} failed; the service gave no reason" in w.error.value
    assert "Retry" in w.hint.value and "charged again" in w.hint.value
    assert "cost 15 credits" not in w.info.value  # refunded or not: never claimed
    assert "15 credits, may be refunded by the service" in w.info.value
    assert visible(w.retry_button)
    assert w.retry_button.description == "Retry (charged again, ~15 credits)"
    assert "goenhance-retry" in w.retry_button._dom_classes
    assert not visible(w.cancel_button)
    assert w.result.outputs == ()

    w.retry_button.click()  # what the user does
    new = w.job
    assert new is not job
    new.result(timeout=WAIT)
    wait_settled(w)
    assert w.badge.value == "done"
    assert w.job_id_label.value == new.id[:8] != job.id[:8]
    assert not visible(w.error) and not visible(w.retry_button)
    assert 'class="goenhance-video"' in result_html(w.result)
    assert sim.generate_calls() == 2


def test_updates_are_throttled_and_final_state_is_delivered(sim, session, comms, clip):
    sim.config(processing_seconds=2.0, success_status="success")
    job = session.transform(clip, 2006, duration=3, resolution="540p")
    t0 = time.monotonic()
    w = StatusWidget(job, session=session)
    job.result(timeout=WAIT)
    wait_settled(w)
    wall = time.monotonic() - t0
    renders = w._throttle.runs
    # at most 4 renders a second (+1 for the initial frame, +1 for timer granularity)
    assert renders <= 4 * wall + 2, (renders, wall)
    for child in (w.badge, w.raw_label, w.timing):
        n = len(comms.updates(child))
        assert n <= 4 * wall + 2, (child, n, wall)
    assert comms.synced_values(w.badge)[-1] == "done"
    assert comms.synced_values(w.raw_label)[-1] == "success"


def test_throttle_coalesces_a_burst_and_delivers_the_last_value():
    seen: list[int] = []
    current = [0]
    done = threading.Event()

    def render() -> None:
        seen.append(current[0])
        if current[0] == 999:
            done.set()

    th = Throttle(render, 0.25)
    t0 = time.monotonic()
    for i in range(1000):
        current[0] = i
        th.request()
    assert done.wait(WAIT)
    wall = time.monotonic() - t0
    assert seen[-1] == 999
    assert len(seen) <= 4 * wall + 2, (len(seen), wall)


def test_elapsed_ticks_between_events(sim, session, comms, clip):
    # the sim holds the job in "processing" long enough for several 1 s ticks with no new status
    sim.config(processing_seconds=2.6)
    job = session.transform(clip, 2007, duration=3, resolution="540p")
    w = StatusWidget(job, session=session)
    job.result(timeout=WAIT)
    wait_settled(w)
    elapsed_texts = [v for v in comms.synced_values(w.timing) if v.startswith("elapsed")]
    assert len(set(elapsed_texts)) >= 3, elapsed_texts


def test_stop_watching_leaves_job_resumable(sim, session, comms, clip):
    sim.config(processing_seconds=5.0)
    job = session.transform(clip, 2008, duration=3, resolution="540p")
    w = StatusWidget(job, session=session)
    assert w.cancel_button.description == "Stop watching"
    submitted = threading.Event()
    job.subscribe(lambda ev: ev.job_id and submitted.set())
    assert submitted.wait(WAIT)
    w.cancel_button.click()
    wait_settled(w)
    assert not visible(w.cancel_button)
    # grey "not watching", one hint with the short id, a Resume button (issue 17, point 7)
    assert w.badge.value == "not watching"
    assert w.badge.style.background == Badge.NOT_WATCHING.colours[0]
    assert w.timing.value.count("resume") == 1 and job.id is not None
    assert f"%goenhance resume {job.id[:8]}" in w.timing.value and job.id not in w.timing.value
    frozen = w.timing.value
    assert visible(w.resume_button) and "goenhance-resume" in w.resume_button._dom_classes
    w._throttle.request()
    w.flush()
    assert w.timing.value == frozen  # the elapsed clock stopped

    sim.config(processing_seconds=0.5)
    w.resume_button.click()  # re-attaches: no new generate call
    new = w.job
    assert new is not job and new is not None
    new.result(timeout=WAIT)
    wait_settled(w)
    assert w.badge.value == "done" and not visible(w.resume_button)
    assert "not charged again" in w.info.value
    assert sim.generate_calls() == 1


# -- secrets ------------------------------------------------------------------------------------
def secret_needles(secret: str) -> list[bytes]:
    """Plain, URL-encoded and base64 forms of ``secret`` (base64 at all 3 alignments)."""
    raw = secret.encode()
    needles = {
        raw,
        urllib.parse.quote(secret, safe="").encode(),
        urllib.parse.quote_plus(secret).encode(),
    }
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)
        # drop the chars touched by the padding prefix and the unaligned tail
        start = (pad * 4 + 2) // 3
        end = len(enc) - 4
        needles.add(enc[start:end])
        needles.add(base64.urlsafe_b64encode(b"\0" * pad + raw)[start:end])
    return [n for n in needles if len(n) >= 8]


def _as_bytes(value: Any) -> bytes:
    chunks: list[bytes] = []

    def walk(v: Any) -> None:
        if isinstance(v, (bytes, bytearray, memoryview)):
            chunks.append(bytes(v))
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        else:
            chunks.append(json.dumps(v, default=str).encode())

    walk(value)
    return b"\n".join(chunks)


def leaks(secret: str, blobs: list[bytes]) -> list[int]:
    needles = secret_needles(secret)
    return [i for i, b in enumerate(blobs) if any(n in b for n in needles)]


def all_widget_states() -> list[bytes]:
    return [_as_bytes(w.get_state()) for w in list(_instances.values())]


SENTINEL = "sk-SENTINEL-7f3a9c2e1b8d4f60a5c9e2d7b1f4a8c3"


@pytest.fixture
def sentinel_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from simctl import start_sim

    s = start_sim(tmp_path_factory.mktemp("sentinel-sim"), keys=[SENTINEL])
    yield s
    s.stop()


def test_no_key_in_any_widget_state(sentinel_sim, tmp_path, monkeypatch, comms, clip):
    from goenhance_nb import JobFailed, Session
    from goenhance_nb._panel import Panel

    monkeypatch.setenv("GOENHANCE_API_KEY", SENTINEL)
    monkeypatch.setenv("GOENHANCE_BASE_URL", sentinel_sim.base_url)
    monkeypatch.setenv("GOENHANCE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("GOENHANCE_POLL_INTERVAL", "0.2")
    monkeypatch.chdir(tmp_path)

    # the scanner must be able to fail: a deliberately leaking control widget is caught
    control = ipywidgets.Password(value=SENTINEL)
    encoded = ipywidgets.HTML(base64.b64encode(f"token={SENTINEL}".encode()).decode())
    quoted = ipywidgets.Label(urllib.parse.quote(f"?key={SENTINEL}&x=1"))
    states = all_widget_states()
    assert len(leaks(SENTINEL, states)) == 3
    for w in (control, encoded, quoted):
        w.close()
    assert leaks(SENTINEL, all_widget_states()) == []
    with comms.lock:
        sent_before = len(comms.messages)
        control_sent = [_as_bytes(d) for _c, _t, d in comms.messages]
    assert len(leaks(SENTINEL, control_sent)) == 3  # the control widgets' comm_open messages

    session = Session()
    try:
        p = Panel(session)
        assert p.previews_ready.wait(WAIT)
        job = p.submit(clip, 2000, duration=3, resolution="540p")
        sw = StatusWidget(job, session=session)
        job.result(timeout=WAIT)
        wait_settled(sw)
        sentinel_sim.faults({"kind": "job_failed"})
        bad = p.submit(clip, 2004, duration=3, resolution="540p")
        fw = StatusWidget(bad, session=session)
        with pytest.raises(JobFailed):
            bad.result(timeout=WAIT)
        wait_settled(fw)
        for s in p.status_widgets:
            wait_settled(s)
        assert sw.badge.value == "done" and fw.badge.value == "failed"
        # nothing in any widget's state and nothing the widgets ever sent carries the key
        assert len(_instances) > 20
        assert leaks(SENTINEL, all_widget_states()) == []
        with comms.lock:
            sent = [_as_bytes(d) for _c, _t, d in comms.messages[sent_before:]]
        assert sent and leaks(SENTINEL, sent) == []
    finally:
        session.close()


def test_timeout_shows_timed_out_with_resume_hint(sim, session, comms, clip):
    from goenhance_nb import JobTimedOut

    sim.config(processing_seconds=6.0)
    job = session.transform(clip, 2012, duration=3, resolution="540p", timeout=0.8)
    w = StatusWidget(job, session=session)
    with pytest.raises(JobTimedOut):
        job.result(timeout=WAIT)
    wait_settled(w)
    assert w.badge.value == "timed out"
    assert visible(w.error) and "JobTimedOut" in w.error.value
    assert "%goenhance resume" in w.hint.value
    assert visible(w.retry_button)


KERNEL_CODE = r"""
import ipywidgets
from IPython.display import display
from goenhance_nb import Session
from goenhance_nb.widgets import StatusWidget
session = Session()
job = session.transform({clip!r}, 2000, duration=3, resolution="540p", seed=31)
w = StatusWidget(job, session=session)
display(w)
"""


@pytest.mark.slow
def test_widget_keeps_updating_after_the_cell_returns_in_a_real_kernel(
    sim, sim_env, clip, tmp_path
):
    import os

    from jupyter_client.manager import start_new_kernel

    sim.config(processing_seconds=3.0)
    km, kc = start_new_kernel(
        kernel_name="python3", cwd=str(tmp_path), env={**os.environ, **sim_env}
    )
    try:
        first = kc.execute(KERNEL_CODE.format(clip=str(clip)))
        second = kc.execute("import time; time.sleep(2.0)")  # another cell keeps the kernel busy
        badge_id = timing_id = None
        order: list[tuple[str, str, Any]] = []  # (kind, parent msg id, payload)
        done_seen = False
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not done_seen:
            try:
                msg = kc.get_iopub_msg(timeout=1)
            except Exception:
                continue
            t = msg["msg_type"]
            parent = msg["parent_header"].get("msg_id", "")
            c = msg["content"]
            if t == "status":
                order.append((c["execution_state"], parent, None))
            elif t in ("comm_open", "comm_msg") and "state" in (c.get("data") or {}):
                state = c["data"]["state"]
                classes = state.get("_dom_classes", [])
                if "goenhance-state" in classes:
                    badge_id = c["comm_id"]
                if "goenhance-elapsed" in classes:
                    timing_id = c["comm_id"]
                if c["comm_id"] == badge_id and "value" in state:
                    order.append(("badge", parent, state["value"]))
                    done_seen = state["value"] == "done"
                if c["comm_id"] == timing_id and "value" in state:
                    order.append(("timing", parent, state["value"]))
            elif t == "error":
                pytest.fail("\n".join(c["traceback"]))
        assert done_seen, order
        # the first cell went idle long before the job finished ...
        first_idle = order.index(("idle", first, None))
        assert any(k == "badge" for k, _p, _v in order[first_idle:])
        # ... and the elapsed time kept moving while the second cell slept
        busy2 = order.index(("busy", second, None))
        idle2 = order.index(("idle", second, None))
        during = [v for k, _p, v in order[busy2:idle2] if k == "timing"]
        assert len(during) >= 2, order
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_closing_a_status_widget_leaves_no_orphan_model(session: Any, clip: Path) -> None:
    """Every box of a closed status widget is closed too: no model stays in the kernel's
    registry with closed children (its state could not even be read: issue 17)."""
    job = session.transform(clip, 2000, duration=3, resolution="540p")
    job.result(120)
    before = set(_instances)
    w = StatusWidget(job, session=session)
    assert len(set(_instances) - before) > 10  # the widget, its boxes, labels, layouts
    w.close()
    assert set(_instances) - before == set()
