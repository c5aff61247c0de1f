"""The magics' pure parts, without a simulator or a shell: table builders, state words, the
per-cell memory of shown jobs, the cell-body value checks, and the one terminal listener.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from IPython.core.error import UsageError

from goenhance_nb._cache import ResultRecord
from goenhance_nb._errors import JobFailed, JobTimedOut
from goenhance_nb._inputs import MAX_DURATION, MIN_DURATION, RESOLUTIONS
from goenhance_nb._job import JobEvent
from goenhance_nb._ledger import LedgerEntry
from goenhance_nb._lifecycle import EventKind, JobState
from goenhance_nb._magics import _present, _tables
from goenhance_nb._magics._parsing import _cell_parser, duration_error, parse_cell_body, parse_line
from goenhance_nb._records import Style


def _entry(key: str, **kw: Any) -> LedgerEntry:
    return LedgerEntry(key=key, spec={}, backend="simulated", input_hash="ih", **kw)


def _record(key: str = "k" * 20) -> ResultRecord:
    return ResultRecord(
        key=key,
        path="/store/x.mp4",
        sha="s",
        size=3 << 20,
        job_id="j",
        model=2000,
        style_label="Anime Style",
        model_version="v5",
        params={"duration": 3, "resolution": "540p"},
        input_hash="ih",
        cost=30,
        backend="simulated",
        created=0.0,
    )


# -- tables -------------------------------------------------------------------------------------
def test_table_escapes_cells_and_aligns_text() -> None:
    html_t, text = _tables.table(
        ["a", "bb"], [["<x>", 1], [_tables.Raw("<b>y</b>", "y"), 22]], klass="k"
    )
    assert "<td>&lt;x&gt;</td>" in html_t and "<td><b>y</b></td>" in html_t
    assert text.splitlines() == ["a    bb", "<x>  1", "y    22"]


def test_an_empty_table_has_its_headers() -> None:
    assert _tables.table(["a", "b"], [], klass="k")[1] == "a  b"


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, ""), (0, "0 KiB"), (512, "0 KiB"), (2048, "2 KiB"), (3 << 20, "3.0 MiB")],
)
def test_fmt_size(value: float | None, expected: str) -> None:
    assert _tables.fmt_size(value) == expected


@pytest.mark.parametrize(("value", "expected"), [(None, ""), (0.0, "0.0"), (-1, "-1")])
def test_fmt_time_of_no_time(value: float | None, expected: str) -> None:
    assert _tables.fmt_time(value) == expected


def test_jobs_table_newest_first_with_short_ids() -> None:
    entries = [
        _entry("old-key-0123456789", state="done", job_id="job-old-0123456789", created=1.0),
        _entry("new-key-0123456789", state="submitting", created=2.0, cost=30, raw_status="x"),
    ]
    _, text, n = _tables.jobs_table(entries)
    lines = text.splitlines()
    assert n == 2 and lines[0].split() == [
        "job",
        "id",
        "state",
        "raw",
        "status",
        "style",
        "cost",
        "created",
        "key",
    ]
    # issue 17 point 7: the badge's words (a submitting entry is "queued")
    assert lines[1].split()[:3] == ["queued", "x", "30"] and lines[1].endswith("new-key-0123")
    assert lines[2].startswith("job-old-0123") and "done" in lines[2]


def test_styles_table_thumbnails_only_for_plain_http_urls() -> None:
    styles = [
        Style(1, "A", "v1", "c", preview_url="https://x/p.png"),
        Style(2, "B", "v1", "c", is_vip=True, preview_url="https://x/p.png?sig=1"),
        Style(3, "C", "v1", "c", preview_url="javascript:alert(1)"),
    ]
    html_t, text = _tables.styles_table(styles)
    assert html_t.count("<img ") == 1 and "javascript" not in html_t
    assert text.splitlines()[0].split()[-1] == "VIP"  # issue 17 point 16: the column's header
    assert text.splitlines()[2].split()[-1] == "yes" and "yes" not in text.splitlines()[1]


def test_cache_table_heading_sums_sizes() -> None:
    _, text, head = _tables.cache_table([_record(), _record("m" * 20)])
    assert head == "2 cached results (6.0 MiB)"
    assert text.splitlines()[1].split()[:5] == ["kkkkkkkkkkkk", "Anime", "Style", "3", "540p"]
    assert _tables.cache_table([])[2] == "0 cached results (0 KiB)"


def test_config_rows_never_show_the_key() -> None:
    from goenhance_nb._settings import SecretKey, Settings

    s = Settings(
        api_key=SecretKey("sk-secret-1234567890"),
        base_url="https://example.com/api",
        key_source="env",
    )
    rows = dict((str(k), v) for k, v in _tables.config_rows(s))
    assert list(rows) == list(_tables.CONFIG_FIELDS)
    assert rows["base_url"] == "https://example.com/api" and "sk-secret" not in repr(rows)
    assert _tables.key_state(s) == "set (from env)"
    assert _tables.key_state(Settings()) == "not set (embedded simulator)"


# -- words and memory -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("state", "words"),
    [
        (JobState.LOCAL, "starting"),
        ("LOCAL_QUEUE", "waiting for a local queue slot"),
        (JobState.RUNNING, "running"),
        ("queued", "queued"),
        ("SOMETHING", "something"),
    ],
)
def test_state_text(state: JobState | str, words: str) -> None:
    assert _present.state_text(state) == words


def test_presented_remembers_only_the_latest_cell() -> None:
    p = _present.Presented()
    p.add("a", 1)
    p.add("b", 1)
    assert p.shown("a", 1) and p.shown("b", 1) and not p.shown("a", 2)
    p.add("c", 2)  # a new cell forgets the previous one (bounded)
    assert p.keys == {"c"} and not p.shown("a", 1) and p.shown("c", 2)
    p.add("d", None)  # no shell: no execution count
    assert p.shown("d", None)


# -- parsing checks -------------------------------------------------------------------------------
def test_duration_limits_come_from_the_inputs_module() -> None:
    assert duration_error("p", "d", MIN_DURATION) is None
    assert duration_error("p", "d", MAX_DURATION) is None
    err = duration_error("p", "--duration", MAX_DURATION + 1)
    assert (
        str(err) == f"p: --duration must be {MIN_DURATION}-{MAX_DURATION}, got {MAX_DURATION + 1}"
    )
    (resolution,) = [a for a in _cell_parser()._actions if a.dest == "resolution"]
    assert tuple(resolution.choices or ()) == RESOLUTIONS


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("timeout: 5", {"timeout": 5.0}),
        ("style: 2000", {"style": "2000"}),
        ("seed: -1\nwait: false", {"seed": -1, "wait": False}),
        ("prompt: 0012", {"prompt": "0012"}),
        ("notify: ~", {}),
    ],
)
def test_cell_values_are_converted(body: str, expected: dict[str, object]) -> None:
    assert parse_cell_body(body) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("wait: 1", "wait must be true or false"),
        ("seed: true", "seed must be an integer"),
        ("timeout: 0", "timeout must be a positive number"),
        ("input: [a]", "input must be a single value"),
        ("resolution: 1080p", "resolution must be one of 540p, 720p"),
        ("duration: 2", "duration must be 3-30, got 2"),
        ("prompt: [a]", "prompt must be text"),
    ],
)
def test_cell_value_errors(body: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_cell_body(body)


def test_every_subcommand_without_options_parses_to_no_args() -> None:
    for name in ("credits", "jobs", "config", "panel"):
        cmd = parse_line(name)
        assert cmd is not None and cmd.name == name and type(cmd.args).__name__ == "NoArgs"


# -- the terminal listener ------------------------------------------------------------------------
@dataclass
class FakeJob:
    """What the listeners read from a Job; events are delivered by hand."""

    key: str = "key-0123456789abcdef"
    id: str | None = "job-0123456789"
    record: ResultRecord | None = None
    error: BaseException | None = None
    settled: bool = False
    listeners: list[Callable[[JobEvent], Any]] = field(default_factory=list)

    def done(self) -> bool:
        return self.settled

    finish: list[Callable[[Any], None]] = field(default_factory=list)

    def subscribe(self, cb: Callable[[JobEvent], Any]) -> Callable[[], None]:
        self.listeners.append(cb)
        return lambda: None

    def on_finish(self, cb: Callable[[Any], None]) -> None:
        self.finish.append(cb)

    def emit(self, kind: EventKind, state: JobState = JobState.RUNNING) -> None:
        for cb in list(self.listeners):
            cb(JobEvent(key=self.key, kind=kind, state=state))
        if kind.ends_watch and self.settled:  # as Job.on_finish: once, when the job has ended
            for done in self.finish:
                done(self)
            self.finish.clear()


class FakeHandle:
    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []

    def update(self, obj: dict[str, Any]) -> None:
        self.updates.append(obj)


@pytest.mark.parametrize(
    ("record", "error", "kind", "expected"),
    [
        (_record(), None, EventKind.DONE, "published"),
        (None, JobFailed("boom"), EventKind.FAILED, "job boom failed; the service gave no reason"),
        (None, JobTimedOut("j", key="k"), EventKind.TIMED_OUT, "JobTimedOut"),
        (
            None,
            None,
            EventKind.WATCH_CANCELLED,
            "stopped watching job job-0123; %goenhance resume job-0123",
        ),
    ],
)
def test_the_placeholder_is_replaced_by_the_outcome(
    record: ResultRecord | None, error: BaseException | None, kind: EventKind, expected: str
) -> None:
    job = FakeJob(record=record, error=error, settled=True)
    handle = FakeHandle()
    _present._watch_update(job, handle, lambda r: {"text/plain": "published"})  # type: ignore[arg-type,return-value]
    job.emit(kind)
    assert len(handle.updates) == 1 and expected in handle.updates[0]["text/plain"]
    assert _present._end_kind(job) is kind  # type: ignore[arg-type]
