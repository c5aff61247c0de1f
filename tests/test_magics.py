"""``%goenhance`` / ``%%goenhance`` in a bare InteractiveShell against the real simulator.

What a user sees: printed help, one-line errors, the returned Job, the final output bundle. Every
bad-argument case also checks the simulator's request log: no API call was made.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from workers.support import wait_until

import goenhance_nb
from goenhance_nb import _session
from goenhance_nb._magics import (
    CELL_KEYS,
    GoEnhanceMagics,
    RunArgs,
    build_parser,
    parse_cell_body,
    parse_line,
)

SUBCOMMANDS = [
    "run",
    "styles",
    "credits",
    "jobs",
    "resume",
    "cache",
    "config",
    "panel",
    "login",
    "help",
    "mode",
    "verify",
    "export",
    "import",
    "sweep",
]


@pytest.fixture
def clip(cwd_sample: Path) -> Path:
    return cwd_sample


def magics(ip: InteractiveShell) -> GoEnhanceMagics:
    return next(c for c in ip.configurables if isinstance(c, GoEnhanceMagics))


def api_calls(sim: Any) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["path"].startswith(("/api/", "/sim/uploads"))]


# -- parsing -----------------------------------------------------------------------------------
def test_run_line_parses_into_frozen_args() -> None:
    cmd = parse_line(
        'run "my clip.mp4" --style "Anime Style" -d 3 -r 540p --seed 7 '
        '--prompt "soft light, rain" --no-wait --timeout 90 --force --embed --compare'
    )
    assert cmd is not None and cmd.name == "run"
    assert cmd.args == RunArgs(
        input="my clip.mp4",
        style="Anime Style",
        prompt="soft light, rain",
        duration=3,
        resolution="540p",
        seed=7,
        wait=False,
        timeout=90.0,
        force=True,
        embed=True,
        compare=True,
    )
    with pytest.raises(AttributeError):
        cmd.args.style = "x"  # type: ignore[misc]
    assert parse_line("run a.mp4 -s 2000 --wait").args.wait is True  # type: ignore[union-attr]
    assert parse_line("run a.mp4 -s 2000").args.wait is None  # type: ignore[union-attr]
    assert parse_line("cache verify abc").args.key == "abc"  # type: ignore[union-attr]
    assert parse_line("resume 1234 --resubmit").args.resubmit is True  # type: ignore[union-attr]


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_help_on_each_subcommand_prints_usage_and_returns_none(
    sub: str, ip: InteractiveShell, sim: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):  # again: parsed lines are remembered, help is printed every time
        assert ip.run_line_magic("goenhance", f"{sub} --help") is None
        out = capsys.readouterr().out
        assert f"usage: %goenhance {sub}" in out
    assert api_calls(sim) == []


def test_bare_goenhance_and_help_list_every_subcommand(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ip.run_line_magic("goenhance", "") is None
    assert ip.run_line_magic("goenhance", "help") is None
    out = capsys.readouterr().out
    for sub in SUBCOMMANDS:
        assert re.search(rf"^\s+{sub}\s", out, re.M), sub
    assert "%%goenhance" in out


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("frobnicate", "invalid choice: 'frobnicate'"),
        ("run a.mp4 --style 2000 --bogus", "unrecognized arguments: --bogus"),
        ("run a.mp4 --style 2000 --duration 31", "--duration must be 3-30"),
        ("run a.mp4 --style 2000 --duration five", "invalid int value"),
        ("run a.mp4 --style 2000 --resolution 1080p", "invalid choice: '1080p'"),
        ("run a.mp4 --style 2000 --timeout -3", "must be positive"),
        ("run", "the following arguments are required: input"),
        ("run a.mp4", "--style is required"),
        ("run 'a.mp4 --style 2000", "No closing quotation"),
        ("cache info", "KEY is required"),
        ("cache clear abc", "takes no KEY"),
    ],
)
def test_usage_errors_are_one_line_and_make_no_api_call(
    line: str, message: str, ip: InteractiveShell, sim: Any, fresh_session: None
) -> None:
    with pytest.raises(UsageError) as info:
        ip.run_line_magic("goenhance", line)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert api_calls(sim) == []


def test_usage_error_renders_as_one_line_in_a_cell(
    ip: InteractiveShell, sim: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = ip.run_cell("%goenhance run a.mp4 --style 2000 --duration 99")
    assert isinstance(result.error_in_exec, UsageError)
    out = capsys.readouterr()
    text = out.out + out.err
    assert "UsageError: %goenhance run: --duration must be 3-30" in text
    assert "Traceback" not in text


# -- %%goenhance bodies ------------------------------------------------------------------------
def test_cell_body_yaml_keeps_prompt_text_and_types() -> None:
    body = "input: clip.mp4\nstyle: 2000\nprompt: yes\nduration: 3\nseed: -1\nwait: true\n"
    assert parse_cell_body(body) == {
        "input": "clip.mp4",
        "style": "2000",
        "prompt": "yes",
        "duration": 3,
        "seed": -1,
        "wait": True,
    }
    assert parse_cell_body("prompt: 0012")["prompt"] == "0012"
    assert parse_cell_body("prompt: 'a: b, c'")["prompt"] == "a: b, c"
    assert parse_cell_body("prompt: |\n  two\n  lines\n")["prompt"] == "two\nlines\n"
    assert parse_cell_body("   \n") == {}
    assert set(CELL_KEYS) >= {"input", "style", "prompt", "duration", "resolution", "seed"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("colour: red", "unknown key(s) colour"),
        ("style: [1, 2]", "style must be a single value"),
        ("duration: three", "duration must be an integer"),
        ("duration: 2", "duration must be 3-30"),
        ("resolution: 1080p", "resolution must be one of"),
        ("wait: maybe", "wait must be true or false"),
        ("- just\n- a list", "must be 'key: value' lines"),
        ("prompt: [a\n", "not valid YAML"),
    ],
)
def test_cell_body_errors_are_usage_errors_without_api_calls(
    body: str, message: str, ip: InteractiveShell, sim: Any, fresh_session: None
) -> None:
    with pytest.raises(UsageError, match=re.escape(message)):
        ip.run_cell_magic("goenhance", "sample.mp4 --style 2000", body)
    assert api_calls(sim) == []


def test_cell_key_given_twice_is_an_error(ip: InteractiveShell, sim: Any) -> None:
    with pytest.raises(UsageError, match="style is given on the first line and in the body"):
        ip.run_cell_magic("goenhance", "sample.mp4 --style 2000", "style: 2004\n")
    assert api_calls(sim) == []


@pytest.mark.slow
def test_cell_magic_runs_with_expanded_body_variables(
    ip: InteractiveShell, sim: Any, fresh_session: None, clip: Path
) -> None:
    ip.user_ns["subject"] = "a cat"
    ip.user_ns["secs"] = 3
    # {var} and $var expand in the body; the first line is IPython's own (already expanded)
    job = ip.run_cell_magic(
        "goenhance",
        "run --wait",
        "input: sample.mp4\nstyle: Oil Painting\n"
        "prompt: {subject} in the rain\nduration: $secs\nresolution: 540p\n",
    )
    assert job.done() and job.spec.prompt == "a cat in the rain" and job.spec.duration == 3
    assert job.spec.model == 2006
    assert sim.generate_calls() == 1


# -- running against the simulator -------------------------------------------------------------
@pytest.mark.parametrize("wait", ["--wait", "--no-wait"])
def test_a_cache_hit_in_a_widget_frontend_builds_no_status_widget(
    wait: str,
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # issue 15: the live status widget of a job served from the cache is never built; the
    # cell shows the final (cached-badged) output at once, as a bare display would
    from goenhance_nb import _frontend
    from goenhance_nb._magics import _present

    monkeypatch.setattr(_frontend, "frontend", lambda shell=None: "lab")
    built: list[Any] = []
    monkeypatch.setattr(_present, "_show_live", lambda job, *a, **k: built.append(job))
    line = "run sample.mp4 --style 2000 -d 3 -r 540p"
    first = ip.run_line_magic("goenhance", f"{line} --wait")
    assert first.done() and built == [first]
    with capture_output() as cap:
        again = ip.run_line_magic("goenhance", f"{line} {wait}")
    assert again.done() and again.cached and built == [first]
    assert len(cap.outputs) == 1 and "goenhance-cached" in cap.outputs[0].data["text/html"]
    assert sim.generate_calls() == 1


@pytest.mark.slow
def test_run_wait_shows_final_video_and_returns_job_then_cache_hit(
    ip: InteractiveShell, sim: Any, fresh_session: None, clip: Path
) -> None:
    with capture_output() as cap:
        job = ip.run_line_magic(
            "goenhance",
            'run sample.mp4 --style "Anime Style" --duration 3 --resolution 540p --wait',
        )
    assert isinstance(job, goenhance_nb.Job) and job.done() and job.path is not None
    finals = [
        o for o in cap.outputs if "text/html" in o.data and "goenhance-video" in o.data["text/html"]
    ]
    assert len(finals) == 1
    html = finals[0].data["text/html"]
    src = re.search(r'class="goenhance-video"[^>]*src="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    assert src.startswith("goenhance_outputs/anime-style-") and (clip.parent / src).is_file()
    assert "SIMULATED" in html and "goenhance-cached" not in html
    meta = finals[0].metadata["goenhance_nb"]
    assert meta["job_id"] == job.id and meta["key"] == job.key and meta["style"] == "Anime Style"
    assert sim.generate_calls() == 1

    with capture_output() as cap2:
        again = ip.run_line_magic(
            "goenhance",
            'run sample.mp4 --style "anime style" --duration 3 --resolution 540p --wait',
        )
    assert again.cached and sim.generate_calls() == 1
    html2 = next(o.data["text/html"] for o in cap2.outputs if "text/html" in o.data)
    assert '<span class="goenhance-cached"' in html2
    # a cache hit shows the final output only: no live status widget is built (issue 15)
    assert len(cap2.outputs) == 1, [sorted(o.data) for o in cap2.outputs]
    assert "application/vnd.jupyter.widget-view+json" not in cap2.outputs[0].data

    # the cell that ran the magic shows the video once and no second output (the job is the
    # value, with no Out[n] of its own); a bare `job` in a later cell shows its status and the
    # result again
    with capture_output() as same:
        ip.displayhook(job)
    assert same.outputs == [] and ip.user_ns["_"] is job
    ip.execution_count += 1
    with capture_output() as later:
        ip.displayhook(job)
    [out] = later.outputs
    assert out.metadata["goenhance_nb"]["key"] == job.key
    assert "done" in out.data["text/plain"] and "goenhance-video" in out.data["text/html"]


@pytest.mark.slow
def test_expected_runtime_errors_render_one_line_and_fail_the_cell(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = ip.run_cell('%goenhance run missing.mp4 --style "Anime Style" --duration 3')
    assert isinstance(result.error_in_exec, goenhance_nb.InputError)
    result = ip.run_cell('%goenhance run sample.mp4 --style "No Such Style" --duration 3')
    assert isinstance(result.error_in_exec, goenhance_nb.InputError)
    text = capsys.readouterr()
    lines = [ln for ln in (text.out + text.err).splitlines() if "Error" in ln]
    assert lines[0].startswith("InputError: input file not found: missing.mp4")
    assert lines[1].startswith("InputError: unknown style 'No Such Style'")
    assert "Traceback" not in text.out + text.err
    assert sim.generate_calls() == 0


@pytest.mark.slow
def test_job_failure_with_wait_fails_the_cell(
    ip: InteractiveShell, sim: Any, fresh_session: None, clip: Path
) -> None:
    sim.faults({"kind": "job_failed"})
    result = ip.run_cell("%goenhance run sample.mp4 --style 2000 --duration 3 -r 540p --wait")
    assert isinstance(result.error_in_exec, goenhance_nb.JobFailed)


@pytest.mark.slow
def test_no_wait_in_terminal_returns_at_once_and_notifies_in_text(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = ip.run_line_magic("goenhance", "run sample.mp4 --style 2007 -d 3 -r 540p --no-wait")
    record = job.result(timeout=120)
    # the text notification is printed from the engine thread; wait for the job's own events
    printed: list[str] = []

    def notified() -> bool:
        printed.append(capsys.readouterr().out)
        return "GoEnhance result: goenhance_outputs/watercolor-" in "".join(printed)

    wait_until(notified, "a text notification with the result path", timeout=30)
    assert Path(record.path).is_file()


# -- config, login, secrets --------------------------------------------------------------------
def test_config_shows_key_only_as_set(
    ip: InteractiveShell, sim: Any, sim_env: dict[str, str], fresh_session: None
) -> None:
    with capture_output() as cap:
        ip.run_line_magic("goenhance", "config")
    text = cap.stdout + "".join(str(o.data) for o in cap.outputs)
    assert re.search(r"api_key\s+set", text)
    assert sim.api_key not in text
    assert "backend" in text and "simulated" in text
    # no trait can take the key (DECISIONS 16)
    assert not [n for n in GoEnhanceMagics.class_traits(config=True) if "key" in n]


def test_traits_are_defaults_and_feed_settings(
    ip: InteractiveShell, sim: Any, fresh_session: None
) -> None:
    ip.run_line_magic("config", "GoEnhanceMagics.poll_interval = 0.7")
    ip.run_line_magic("config", "GoEnhanceMagics.default_style = 'Watercolor'")
    m = magics(ip)
    assert m.settings_config() == {"poll_interval": 0.7}
    assert m.session().settings.poll_interval == 0.7
    assert goenhance_nb.get_session() is m.session()  # the panel shares it


@pytest.mark.slow
def test_default_style_trait_is_used(
    ip: InteractiveShell, sim: Any, fresh_session: None, clip: Path
) -> None:
    ip.run_line_magic("config", "GoEnhanceMagics.default_style = 'Watercolor'")
    ip.run_line_magic("config", "GoEnhanceMagics.default_resolution = '540p'")
    job = ip.run_line_magic("goenhance", "run sample.mp4 -d 3 --wait")
    assert job.spec.model == 2007 and job.spec.resolution == "540p"


def test_login_keeps_key_in_memory_and_saves_0600(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("GOENHANCE_API_KEY")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setattr("getpass.getpass", lambda prompt="": sim.api_key)
    ip.run_line_magic("goenhance", "login --save")
    out = capsys.readouterr().out
    assert "kept in memory" in out and sim.api_key not in out
    key_file = tmp_path / "config" / "goenhance_nb" / "api_key"
    assert key_file.read_text().strip() == sim.api_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert magics(ip).session().settings.api_key.reveal() == sim.api_key
    c = ip.run_line_magic("goenhance", "credits")
    assert c is None and "Credits:" in capsys.readouterr().out


def test_login_refused_where_nobody_can_type(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_stdin(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("getpass.getpass", no_stdin)
    with pytest.raises(UsageError, match="login: cancelled"):
        ip.run_line_magic("goenhance", "login")


def test_parser_covers_every_subcommand() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert sorted(sub.choices) == sorted(SUBCOMMANDS)  # type: ignore[arg-type]


@pytest.mark.slow
def test_styles_credits_jobs_cache_outputs(
    ip: InteractiveShell, sim: Any, fresh_session: None, clip: Path
) -> None:
    with capture_output() as cap:
        ip.run_line_magic("goenhance", "styles")
        ip.run_line_magic("goenhance", "credits")
    html = "".join(o.data.get("text/html", "") for o in cap.outputs)
    assert "Anime Style" in html and "Pencil Sketch" in html and "goenhance-simulated" in html
    assert re.search(
        r"Credits: \d+ · queue limit 3", "".join(o.data["text/plain"] for o in cap.outputs)
    )
    job = ip.run_line_magic("goenhance", "run sample.mp4 --style 2012 -d 3 -r 540p --wait")
    with capture_output() as cap:
        ip.run_line_magic("goenhance", "jobs")
        ip.run_line_magic("goenhance", "cache list")
        ip.run_line_magic("goenhance", f"cache verify {job.key[:10]}")
        ip.run_line_magic("goenhance", f"cache info {job.key[:10]}")
    text = "".join(o.data["text/plain"] for o in cap.outputs) + cap.stdout
    assert "1 jobs in the ledger" in text and job.id[:12] in text  # type: ignore[index]
    assert "1 cached results" in text and "Pencil Sketch" in text
    assert "ok (size and content hash match)" in text
    assert "input_hash" in text
    outputs = list((clip.parent / "goenhance_outputs").iterdir())
    with capture_output() as cap:
        ip.run_line_magic("goenhance", "cache clear --yes")
    assert "1 result(s) removed" in cap.stdout
    assert all(p.is_file() for p in outputs)  # the notebook's files stay (DECISIONS 13)
    with pytest.raises(goenhance_nb.CacheError):
        ip.run_line_magic("goenhance", f"cache info {job.key[:10]}")
    assert os.path.exists(outputs[0])


@pytest.mark.slow
def test_compare_shows_input_and_result_side_by_side(
    ip: InteractiveShell, sim: Any, fresh_session: None, clip: Path
) -> None:
    with capture_output() as cap:
        ip.run_line_magic("goenhance", "run sample.mp4 --style 2008 -d 3 -r 540p --wait --compare")
    html = next(
        o.data["text/html"] for o in cap.outputs if "goenhance-video" in o.data.get("text/html", "")
    )
    before = re.search(r'class="goenhance-source"[^>]*src="([^"]+)"', html)
    after = re.search(r'class="goenhance-video"[^>]*src="([^"]+)"', html)
    assert before and after
    assert (clip.parent / before.group(1)).read_bytes() == clip.read_bytes()
    assert (clip.parent / after.group(1)).is_file() and "cyberpunk" in after.group(1)


@pytest.mark.slow
def test_resume_after_a_new_session_picks_up_the_job(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim.config(pending_seconds=1.0, processing_seconds=1.0)
    job = ip.run_line_magic("goenhance", "run sample.mp4 --style 2000 -d 3 -r 540p --no-wait")
    wait_until(lambda: job.id, "the job id (it arrives on the engine thread)", timeout=30)
    assert job.id
    job.cancel_watch()
    # "restart": a new session on the same cache dir (the ledger remembers the job)
    old = _session._session
    _session._set_session(None)
    ip.run_line_magic("reload_ext", "goenhance_nb")
    if old is not None:
        old.close()
    assert ip.run_line_magic("goenhance", "resume") is None
    assert job.id in capsys.readouterr().out  # listed as unfinished, with the resume hint
    resumed = ip.run_line_magic("goenhance", f"resume {job.id} --wait")
    assert resumed.done() and resumed.id == job.id and resumed.path is not None
    assert sim.generate_calls() == 1  # re-attached, never re-sent


@pytest.mark.slow
def test_panel_and_cache_remove(
    ip: InteractiveShell,
    sim: Any,
    fresh_session: None,
    clip: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    p = ip.run_line_magic("goenhance", "panel")
    assert "goenhance-panel" in p._dom_classes and p.session is magics(ip).session()
    job = ip.run_line_magic("goenhance", "run sample.mp4 --style 2000 -d 3 -r 540p --wait")
    ip.run_line_magic("goenhance", f"cache remove {job.key[:10]} --yes")
    assert f"Removed {job.key[:12]}" in capsys.readouterr().out
    again = ip.run_line_magic("goenhance", "run sample.mp4 --style 2000 -d 3 -r 540p --wait")
    # removed from the cache: not a cache hit, yet the ledger re-attaches to the finished job
    # (fetches its result again) instead of paying for a new one
    assert not again.cached and again.id == job.id and sim.generate_calls() == 1
    assert again.path is not None and again.path.is_file()
    p.close()
