"""The opt-in browser notification (``--notify``, DECISIONS 23) without a browser.

A bare InteractiveShell that says it is JupyterLab runs ``%goenhance run ... --notify`` against
the real simulator; widget comm traffic is recorded (the ``comm`` package's seam, as in
test_widgets.py), so the test sees exactly what the page would receive: one custom message with
the notification, and nothing of it (nor the key) in the notifier's synced state.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import comm
import pytest
from comm.base_comm import BaseComm
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from ipywidgets.widgets.widget import _instances
from workers.support import wait_until

import goenhance_nb
from goenhance_nb import _frontend, _outputs
from goenhance_nb._errors import JobFailed
from goenhance_nb._lifecycle import EventKind
from goenhance_nb._magics import GoEnhanceMagics, parse_line
from goenhance_nb.widgets import _notify
from goenhance_nb.widgets._notify import MESSAGE_TYPE, job_notification, make_notifier

pytest.importorskip("anywidget")

WAIT = 120  # generous upper bound for waits (never asserted on)


class _RecordingComm(BaseComm):
    log: list[tuple[str, str, Any]]
    lock: threading.Lock

    def publish_msg(
        self, msg_type: str, data: Any = None, metadata: Any = None, buffers: Any = None, **k: Any
    ) -> None:
        with self.lock:
            self.log.append((self.comm_id, msg_type, data))


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str, Any]]]:
    """Every widget comm message sent during the test: (comm_id, msg_type, data)."""
    log: list[tuple[str, str, Any]] = []
    lock = threading.Lock()

    def create(*args: Any, **kwargs: Any) -> BaseComm:
        c = _RecordingComm.__new__(_RecordingComm)
        c.log, c.lock = log, lock
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
def ip(monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """The shell with the extension loaded, posing as an interactive JupyterLab kernel."""
    monkeypatch.setattr(_frontend, "frontend", lambda *a, **k: "lab")
    monkeypatch.setattr(_frontend, "is_headless", lambda *a, **k: False)
    shell = InteractiveShell.instance()
    shell.run_line_magic("reload_ext", "goenhance_nb")
    yield shell
    shell.run_line_magic("unload_ext", "goenhance_nb")


@pytest.fixture
def clip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "sample.mp4"
    goenhance_nb.sample_clip(str(path))
    return path


def notifiers() -> list[Any]:
    cls = _notify.notifier_class()
    return [w for w in list(_instances.values()) if isinstance(w, cls)]


def custom_messages(log: list[tuple[str, str, Any]], widget: Any) -> list[dict[str, Any]]:
    cid = widget.comm.comm_id
    return [
        d["content"]
        for c, t, d in list(log)
        if c == cid and t == "comm_msg" and (d or {}).get("method") == "custom"
    ]


def run(ip: InteractiveShell, line: str) -> Any:
    with capture_output():
        job = ip.run_line_magic("goenhance", line)
    job.result(timeout=WAIT)
    return job


def wait_for_messages(log: list[Any], widget: Any, job: Any, n: int = 1) -> list[dict[str, Any]]:
    """The notifier's messages once ``n`` arrived and ``job``'s last event has reached every
    listener: a probe subscribed now gets that event on the engine thread after the notifier's
    listener did, and nothing follows it, so a second (wrong) message would be logged by then."""
    wait_until(lambda: len(custom_messages(log, widget)) >= n, "a notification", WAIT)
    ended = threading.Event()
    job.subscribe(lambda ev: EventKind(ev.kind).ends_watch and ended.set())
    assert ended.wait(WAIT), "the job's last event never reached a listener"
    return custom_messages(log, widget)


# -- the run magic -----------------------------------------------------------------------------
@pytest.mark.slow
def test_run_with_notify_sends_one_ready_message_and_saves_no_text(
    ip: InteractiveShell,
    sim: Any,
    sim_env: dict[str, str],
    fresh_session: None,
    clip: Path,
    comms: list[tuple[str, str, Any]],
) -> None:
    job = run(ip, "run sample.mp4 --style 2000 -d 3 -r 540p --notify")
    [notifier] = notifiers()
    msgs = wait_for_messages(comms, notifier, job)
    record = job.result(timeout=0)
    name = f"{_outputs.slugify(record.style_label)}-{record.key[:8]}.mp4"
    assert msgs == [
        {
            "type": MESSAGE_TYPE,
            "title": "GoEnhance: ready",
            "body": f"{record.style_label} · {name}",
        }
    ]
    assert (Path("goenhance_outputs") / name).is_file()  # the name is the file a person sees

    # no notification text and no key in the widget's state, nor in anything synced for it
    state = json.dumps(notifier.get_state(), default=str)
    synced = json.dumps(
        [d for c, t, d in comms if c == notifier.comm.comm_id and d.get("method") != "custom"],
        default=str,
    )
    for text in ("GoEnhance: ready", name, record.style_label, sim_env["GOENHANCE_API_KEY"]):
        assert text not in state, text
        assert text not in synced, text
    assert "goenhance-notify" in notifier.get_state()["_dom_classes"]


@pytest.mark.slow
def test_no_notifier_without_the_option_and_the_trait_turns_it_on(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip: Path,
    comms: list[tuple[str, str, Any]],
) -> None:
    run(ip, "run sample.mp4 --style 2004 -d 3 -r 540p")
    assert notifiers() == []
    ip.run_line_magic("config", "GoEnhanceMagics.notify = True")
    m = next(c for c in ip.configurables if isinstance(c, GoEnhanceMagics))
    assert m.notify is True
    run(ip, "run sample.mp4 --style 2005 -d 3 -r 540p --no-notify")
    assert notifiers() == []
    job = run(ip, "run sample.mp4 --style 2005 -d 3 -r 540p --force")
    [notifier] = notifiers()
    assert [x["title"] for x in wait_for_messages(comms, notifier, job)] == ["GoEnhance: ready"]


@pytest.mark.slow
def test_failed_job_notifies_failed_with_one_line(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip: Path,
    comms: list[tuple[str, str, Any]],
) -> None:
    sim.faults({"kind": "job_failed"})
    with capture_output():
        job = ip.run_line_magic("goenhance", "run sample.mp4 --style 2006 -d 3 -r 540p --notify")
    with pytest.raises(JobFailed):
        job.result(timeout=WAIT)
    [notifier] = notifiers()
    [msg] = wait_for_messages(comms, notifier, job)
    assert msg["title"] == "GoEnhance: failed"
    # the error once, with the service's reason or saying it gave none (issue 17, point 8)
    assert msg["body"] == f"job {job.id[:8]} failed; the service gave no reason"


def test_headless_run_shows_no_notifier(
    ip: InteractiveShell,
    monkeypatch: pytest.MonkeyPatch,
    sim: Any,
    fresh_session: None,
    clip: Path,
    comms: list[tuple[str, str, Any]],
) -> None:
    monkeypatch.setattr(_frontend, "frontend", lambda *a, **k: "headless")
    monkeypatch.setattr(_frontend, "is_headless", lambda *a, **k: True)
    run(ip, "run sample.mp4 --style 2007 -d 3 -r 540p --notify")
    assert notifiers() == []


# -- pieces --------------------------------------------------------------------------------------
def test_notify_option_parses_and_is_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_line("run a.mp4 -s 2000 --notify").args.notify is True  # type: ignore[union-attr]
    assert parse_line("run a.mp4 -s 2000 --no-notify").args.notify is False  # type: ignore[union-attr]
    assert parse_line("run a.mp4 -s 2000").args.notify is None  # type: ignore[union-attr]
    assert parse_line("run --help") is None
    out = capsys.readouterr().out
    assert "--notify" in out and "anywidget" in out


def test_without_anywidget_there_is_no_notifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "anywidget", None)  # import anywidget -> ImportError
    assert make_notifier() is None


def test_notification_texts_are_one_line_and_redacted() -> None:
    err = JobFailed("boom\nsecond line https://cdn.example/v.mp4?sig=abc123")
    title, body = job_notification("failed", error=err) or ("", "")
    assert title == "GoEnhance: failed"
    assert "\n" not in body and "sig=abc123" not in body and body.startswith("job boom")
    assert job_notification("status") is None
    assert job_notification("done") is None  # no result yet: nothing to announce
