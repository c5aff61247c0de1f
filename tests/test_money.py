"""Issue 17, "money the user did not mean to spend" (points 1, 2, 4) and the magic parts of 7 and
16: what a user sees, and that nothing is sent (the simulator's generate calls stay 0) when a
command is refused.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from workers.support import wait_until

import goenhance_nb
from goenhance_nb._errors import InputError
from goenhance_nb._inputs import default_duration, resolve_duration, validate_params
from goenhance_nb._magics import GoEnhanceMagics, _tables
from goenhance_nb._magics._parsing import cost_help, expand_vars
from goenhance_nb._session import Session
from goenhance_nb._sweep import sweep


@pytest.fixture
def clip4(cwd_sample: Path) -> Path:
    """The README's sample clip (4 s) as ``sample.mp4`` in the working directory."""
    return cwd_sample


def magics(ip: InteractiveShell) -> GoEnhanceMagics:
    return next(c for c in ip.configurables if isinstance(c, GoEnhanceMagics))


def api_calls(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["path"].startswith(("/api/", "/sim/uploads"))]


def cell_text(ip: InteractiveShell, code: str, capsys: pytest.CaptureFixture[str]) -> str:
    ip.run_cell(code)
    out = capsys.readouterr()
    return out.out + out.err


# -- point 2: the duration defaults to the input's length ------------------------------------
@pytest.mark.parametrize(
    ("length", "expected"),
    [(4.0, 4), (3.96, 4), (4.9, 4), (3.0, 3), (2.97, 3), (30.0, 30), (95.5, 30), (None, None)],
)
def test_default_duration_is_the_length_rounded_down_and_clamped(
    length: float | None, expected: int | None
) -> None:
    assert default_duration(length) == expected


@pytest.mark.parametrize(
    ("length", "duration", "message"),
    [
        (4.0, 8, "duration 8 is longer than the input a.mp4 (4.0 s); give 4 or less"),
        (3.2, 4, "duration 4 is longer than the input a.mp4 (3.2 s); give 3,"),
        (2.0, None, "a.mp4 is 2.0 s long; the API transforms at least 3 s"),
        (2.0, 3, "a.mp4 is 2.0 s long; the API transforms at least 3 s"),
        (None, None, "cannot tell how long a.mp4 is; give the duration (3-30 seconds)"),
    ],
)
def test_resolve_duration_refusals_are_one_line(
    length: float | None, duration: int | None, message: str
) -> None:
    with pytest.raises(InputError) as info:
        resolve_duration("a.mp4", length, duration)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_resolve_duration_keeps_what_fits() -> None:
    assert resolve_duration("a.mp4", 4.0, None) == 4
    assert resolve_duration("a.mp4", 4.0, 3) == 3
    assert resolve_duration("a.mp4", 3.97, 4) == 4  # frame rounding: still a 4 s clip
    assert resolve_duration("a.mp4", None, 7) == 7  # unknown length: the user's number
    validate_params(duration=None, resolution="720p", prompt=None, seed=-1)


def test_transform_defaults_to_the_input_length_and_repeats_hit_the_cache(
    sim: Any, session: Session, clip4: Path
) -> None:
    job = session.transform(clip4, 2000, resolution="540p")
    assert job.spec.duration == 4
    job.result(60)
    again = session.transform(clip4, 2000, duration=4, resolution="540p")  # the same request
    assert again.key == job.key and again.cached
    assert session.plan(clip4, 2000, resolution="540p").spec.duration == 4
    assert sim.generate_calls() == 1


def test_duration_for_tells_views_the_duration_before_submit(
    sim: Any, session: Session, clip4: Path
) -> None:
    assert session.duration_for(clip4) == 4
    assert session.duration_for(clip4, 3) == 3
    with pytest.raises(InputError, match="give 4 or less"):
        session.duration_for(clip4, 5)
    assert session.cost_estimate(session.resolve_style(2000), "720p", 4).credits == 40
    assert sim.generate_calls() == 0


def test_a_duration_longer_than_the_input_is_refused_before_anything_is_sent(
    sim: Any, session: Session, clip4: Path
) -> None:
    for call in (session.transform, session.plan):
        with pytest.raises(InputError, match=r"duration 8 is longer than the input sample\.mp4"):
            call(clip4, 2000, duration=8)
    assert sim.generate_calls() == 0 and session.ledger_entries() == []
    assert session.spend().spent == 0


def test_an_input_shorter_than_three_seconds_is_refused(
    sim: Any, session: Session, tmp_path: Path
) -> None:
    short = goenhance_nb.sample_clip(str(tmp_path / "short.mp4"), seconds=2.0)
    with pytest.raises(
        InputError, match=r"short\.mp4 is 2\.0 s long; the API transforms at least 3 s"
    ):
        session.transform(short, 2000)
    assert sim.generate_calls() == 0


def test_sweep_plans_with_each_inputs_length(sim: Any, session: Session, clip4: Path) -> None:
    plan = sweep([str(clip4)], styles=[2000], dry_run=True, session=session)
    assert [item.params["duration"] for item in plan.items] == [4]
    assert plan.estimated_credits == 40  # 4 s x 10 credits/s at 720p (the default rate)
    assert sim.generate_calls() == 0


def test_magic_duration_default_and_refusal(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip4: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = cell_text(ip, "%goenhance run sample.mp4 --style 2000 -d 8", capsys)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert lines == [
        "InputError: duration 8 is longer than the input sample.mp4 (4.0 s); give 4 or less, "
        "or leave it out to use the input's length"
    ]
    assert sim.generate_calls() == 0
    job = ip.run_line_magic("goenhance", "run sample.mp4 --style 2000 -r 540p --wait")
    assert job.spec.duration == 4 and sim.generate_calls() == 1


def test_run_help_states_the_defaults_and_their_cost(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("goenhance", "run --help")
    out = " ".join(capsys.readouterr().out.split())
    assert "default: the input's length (rounded down)" in out
    assert "540p or 720p (default 720p)" in out
    assert "seconds x 10 credits/s at 720p, 5 at 540p; VIP styles x1.5" in out
    assert "A cached result costs nothing" in out
    assert " ".join(cost_help().split()) in out


# -- point 1: {var} / $var expansion is strict -----------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{subject} light", "a cat light"),
        ("$subject light", "a cat light"),
        ("{secs * 2}s", "6s"),
        ("{{literal}} $$HOME costs $$5", "{literal} $HOME costs $5"),
        ("no fields", "no fields"),
    ],
)
def test_expand_vars_keeps_what_ipython_allows(text: str, expected: str) -> None:
    assert expand_vars(text, {"subject": "a cat", "secs": 3}, prog="%goenhance") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{undefined_var} light", "name 'undefined_var' is not defined (in {undefined_var})"),
        ("$nope light", "name 'nope' is not defined (in $nope)"),
        ("{1/0}", "cannot expand {1/0}: ZeroDivisionError"),
        ("a { b", "expected '}' before end of string"),
    ],
)
def test_expand_vars_refuses_what_it_cannot_expand(text: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        expand_vars(text, {}, prog="%goenhance")
    assert message in str(info.value) and "\n" not in str(info.value)
    assert "nothing was sent (write {{ and }} for literal braces, $$ for a literal $)" in str(
        info.value
    )


def test_an_undefined_variable_in_a_line_is_one_line_and_sends_nothing(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip4: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ip.user_ns.pop("undefined_var", None)
    text = cell_text(
        ip, '%goenhance run sample.mp4 --style 2000 --prompt "{undefined_var} light" --wait', capsys
    )
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: %goenhance: name 'undefined_var'")
    assert api_calls(sim) == []


def test_an_undefined_variable_in_a_cell_body_or_first_line_sends_nothing(
    ip: InteractiveShell, sim: Any, fresh_session: None, clip4: Path
) -> None:
    with pytest.raises(UsageError, match="name 'missing_thing' is not defined"):
        ip.run_cell_magic("goenhance", "sample.mp4 --style 2000", "prompt: {missing_thing} x\n")
    with pytest.raises(UsageError, match="name 'missing_line' is not defined"):
        ip.run_cell_magic("goenhance", "{missing_line} --style 2000", "prompt: x\n")
    assert api_calls(sim) == []


@pytest.mark.slow
def test_defined_variables_and_escapes_expand_in_lines_and_function_locals(
    ip: InteractiveShell, sim: Any, fresh_session: None, clip4: Path
) -> None:
    ip.user_ns["subject"] = "a cat"
    job = ip.run_line_magic(
        "goenhance", 'run sample.mp4 --style 2000 -r 540p --prompt "{subject} {{x}} $$5" --wait'
    )
    assert job.spec.prompt == "a cat {x} $5"
    # a magic called inside a function sees the function's locals, as with IPython's expansion
    ip.run_cell(
        "def _f():\n"
        "    where = 'in the rain'\n"
        "    return get_ipython().run_line_magic(\n"
        "        'goenhance', 'run sample.mp4 --style 2000 -r 540p --prompt \"{where}\" --wait')\n"
        "_job = _f()\n"
    )
    assert ip.user_ns["_job"].spec.prompt == "in the rain"
    assert sim.generate_calls() == 2


# -- point 4: destructive subcommands need --yes ---------------------------------------------
@pytest.mark.parametrize("headless", [False, True])
def test_cache_clear_and_remove_say_what_they_would_remove_without_yes(
    headless: bool,
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip4: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if headless:
        monkeypatch.setenv("GOENHANCE_WAIT", "1")
    job = ip.run_line_magic("goenhance", "run sample.mp4 --style 2000 -d 3 -r 540p --wait")
    session = magics(ip).session()
    capsys.readouterr()

    ip.run_line_magic("goenhance", "cache clear")
    out = capsys.readouterr().out
    assert re.search(r"^Would remove 1 cached result\(s\) \(\d+ KiB\) from the cache in ", out)
    assert "nothing removed. Run %goenhance cache clear --yes" in out
    ip.run_line_magic("goenhance", f"cache remove {job.key[:10]}")
    out = capsys.readouterr().out
    assert out.startswith(f"Would remove {job.key[:12]} (Anime Style, ")
    assert f"Run %goenhance cache remove {job.key[:12]} --yes" in out
    assert len(session.cache.list()) == 1  # nothing removed

    ip.run_line_magic("goenhance", f"cache remove {job.key[:10]} --yes")
    assert capsys.readouterr().out.startswith(f"Removed {job.key[:12]} (Anime Style, ")
    assert session.cache.list() == []
    job2 = ip.run_line_magic("goenhance", "run sample.mp4 --style 2004 -d 3 -r 540p --wait")
    assert job2.done()
    capsys.readouterr()
    ip.run_line_magic("goenhance", "cache clear -y")
    out = capsys.readouterr().out
    assert re.match(r"Cache cleared: 1 result\(s\) removed \(\d+ KiB\)", out)
    assert session.cache.list() == []
    assert sim.generate_calls() == 2


# -- point 7 (magic part): the jobs table uses the badge's words -----------------------------
def _entry(state: str) -> Any:
    from goenhance_nb._ledger import LedgerEntry

    return LedgerEntry(
        key="k" * 64,
        spec={},
        backend="simulated",
        input_hash="ih",
        state=state,
        job_id="j-123",
        created=1.0,
        cost=30,
    )


@pytest.mark.parametrize(
    ("state", "word"),
    [
        ("watch_cancelled", "not watching"),
        ("timed_out", "timed out"),
        ("submitted", "queued"),
        ("downloading", "running"),
        ("done", "done"),
        ("some_future_state", "some_future_state"),
    ],
)
def test_jobs_table_shows_the_badge_words(state: str, word: str) -> None:
    _, text, _ = _tables.jobs_table([_entry(state)])
    row = text.splitlines()[1]
    assert f"  {word}  " in f"{row}  "
    assert "watch_cancelled" not in text and "timed_out" not in text


def test_jobs_and_resume_say_not_watching_for_a_stopped_job(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip4: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim.config(pending_seconds=30)
    session = magics(ip).session()
    job = session.transform(clip4, 2000, duration=3, resolution="540p")
    wait_until(lambda: job.id is not None, timeout=30)
    job.cancel_watch()
    wait_until(lambda: session.ledger_entries()[0].state == "watch_cancelled", timeout=30)
    with capture_output() as cap:
        ip.run_line_magic("goenhance", "jobs")
        ip.run_line_magic("goenhance", "resume")
    text = "".join(o.data["text/plain"] for o in cap.outputs) + cap.stdout
    assert "not watching" in text and "watch_cancelled" not in text


# -- point 16 (magic parts) ------------------------------------------------------------------
def test_an_unknown_run_option_points_to_run_help(ip: InteractiveShell, sim: Any) -> None:
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("goenhance", "run a.mp4 --style 2000 --bogus")
    assert str(info.value) == (
        "%goenhance run: unrecognized arguments: --bogus (see %goenhance run --help)"
    )
    with pytest.raises(UsageError, match=r"\(see %goenhance cache --help\)"):
        ip.run_line_magic("goenhance", "cache list --bogus")
    assert api_calls(sim) == []


def test_config_shows_no_blank_values(ip: InteractiveShell, sim: Any, fresh_session: None) -> None:
    m = magics(ip)
    m.default_style, m.default_duration, m.embed = None, None, None  # (the shell is shared)
    with capture_output() as cap:
        ip.run_line_magic("goenhance", "config")
    text = cap.outputs[0].data["text/plain"]
    rows = text.splitlines()[1:]
    assert rows and all(len(row.split(None, 1)) == 2 for row in rows), text
    values = dict(row.split(None, 1) for row in rows)
    assert values["GoEnhanceMagics.default_duration"] == "the input's length (rounded down, 3-30 s)"
    assert values["GoEnhanceMagics.default_style"] == "not set (run needs --style)"
    assert values["GoEnhanceMagics.embed"] == "per frontend"
    assert values["budget"] == "no budget"
    assert "<td></td>" not in cap.outputs[0].data["text/html"]


def test_styles_vip_column_has_a_header(
    ip: InteractiveShell, sim: Any, fresh_session: None
) -> None:
    with capture_output() as cap:
        ip.run_line_magic("goenhance", "styles")
    assert "<th style='text-align:left'>VIP</th>" in cap.outputs[0].data["text/html"]


def test_a_long_input_defaults_to_the_maximum_with_one_notice() -> None:
    from goenhance_nb._errors import InputWarning

    with pytest.warns(InputWarning, match=r"a\.mp4 is 95\.5 s long; the duration defaults to 30 s"):
        assert resolve_duration("a.mp4", 95.5, None) == 30
    assert resolve_duration("a.mp4", 95.5, 12) == 12  # the user's number: no notice
