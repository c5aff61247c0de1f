"""``%goenhance`` / ``%%goenhance``: parse with shlex + argparse, then dispatch to a handler.

``%load_ext goenhance_nb`` calls :func:`load_ipython_extension`, which registers
:class:`GoEnhanceMagics`. Subcommands (each has ``--help``)::

    run INPUT --style S [--prompt P --duration N --resolution R --seed N --wait/--no-wait
                         --timeout T --force --embed/--no-embed --compare --notify/--no-notify]
    styles | credits | jobs | config | panel | help [SUBCOMMAND]
    resume [ID] [--resubmit]
    cache [list | info KEY | clear | remove KEY | verify KEY]
    login [--save]

``%%goenhance`` takes ``run`` options on its first line and YAML ``key: value`` parameters in its
body (DECISIONS 9). Bad arguments raise :class:`~IPython.core.error.UsageError` (one line, no API
call made); expected runtime failures are :class:`~goenhance_nb._errors.GoEnhanceError`
subclasses, which IPython renders as one line. ``--help`` prints the help and returns None.

Defaults are ``config=True`` traitlets (``%config GoEnhanceMagics.default_style = "Anime Style"``
or ``ipython_config.py``). None of them takes the API key (DECISIONS 16): ``%goenhance login``.

A change of a settings trait (``poll_interval``, ``job_timeout``, ``output_dir``, ``wait``) or a
``login`` replaces the session with :meth:`Session.successor`: the old session is closed (engine
thread stopped, databases closed) and the new one keeps its spend and budget. While jobs still
run in the session the change is refused (one line; the trait keeps its value).

Our warnings (:class:`~goenhance_nb._errors.GoEnhanceWarning`, or any raised from this package)
that arise while a magic runs are shown as one plain ``GoEnhance warning: ...`` line in the cell's
output, never as a stderr block with our source path; other warnings pass through unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import io
import shlex
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Bool, Float, Int, TraitError, Unicode, validate

from goenhance_nb import _display, _frontend
from goenhance_nb._errors import GoEnhanceError, GoEnhanceWarning, brief, redact_text
from goenhance_nb._settings import MODES

__all__ = [
    "CELL_KEYS",
    "GoEnhanceMagics",
    "RunArgs",
    "build_parser",
    "load_ipython_extension",
    "parse_cell_body",
    "parse_line",
    "unload_ipython_extension",
]

RESOLUTIONS = ("540p", "720p")


# -- parsing ----------------------------------------------------------------------------------
class _HelpShown(Exception):
    """argparse printed help (``--help``): the magic returns None."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting (parse errors -> one-line UsageError)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("exit_on_error", False)
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, end="", file=sys.stdout)
        raise _HelpShown()

    def print_help(self, file: Any = None) -> None:
        super().print_help(sys.stdout if file is None else file)


@dataclass(frozen=True, slots=True)
class RunArgs:
    """``%goenhance run`` / ``%%goenhance`` after parsing; None = not given (use the default)."""

    input: str | None = None
    style: str | None = None
    prompt: str | None = None
    duration: int | None = None
    resolution: str | None = None
    seed: int | None = None
    wait: bool | None = None
    timeout: float | None = None
    force: bool = False
    embed: bool | None = None
    compare: bool = False
    notify: bool | None = None


@dataclass(frozen=True, slots=True)
class ResumeArgs:
    """``%goenhance resume [ID] [--resubmit]``."""

    id: str | None = None
    resubmit: bool = False
    wait: bool | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class CacheArgs:
    """``%goenhance cache [list|info KEY|clear|remove KEY|verify KEY]``."""

    action: str = "list"
    key: str | None = None
    yes: bool = False


@dataclass(frozen=True, slots=True)
class LoginArgs:
    """``%goenhance login [--save]``."""

    save: bool = False


@dataclass(frozen=True, slots=True)
class StylesArgs:
    """``%goenhance styles [--refresh] [--text]``."""

    refresh: bool = False
    text: bool = False


@dataclass(frozen=True, slots=True)
class HelpArgs:
    """``%goenhance help [SUBCOMMAND]``."""

    topic: str | None = None


@dataclass(frozen=True, slots=True)
class ModeArgs:
    """``%goenhance mode [live|record|replay|offline]`` (None: show the mode in force)."""

    mode: str | None = None


@dataclass(frozen=True, slots=True)
class PathArgs:
    """``%goenhance verify [PATH]``, ``export PATH [--inputs]``, ``import PATH``."""

    path: str | None = None
    inputs: bool = False


@dataclass(frozen=True, slots=True)
class SweepArgs:
    """``%goenhance sweep INPUT... --style S [--style S2] [--grid KEY=V1,V2] [caps]``."""

    inputs: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()
    grid: tuple[tuple[str, tuple[str, ...]], ...] = ()
    duration: int | None = None
    resolution: str | None = None
    prompt: str | None = None
    max_credits: int | None = None
    max_jobs: int | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class NoArgs:
    """A subcommand without options (credits, jobs, config, panel)."""


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed line: the subcommand name and its frozen arguments."""

    name: str
    args: Any


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _add_run_options(p: argparse.ArgumentParser, *, input_optional: bool) -> None:
    if input_optional:
        p.add_argument(
            "input",
            nargs="?",
            default=None,
            help="input video: a local file or an http(s) URL (or 'input:' in the body)",
        )
    else:
        p.add_argument("input", help="input video: a local file or an http(s) URL")
    p.add_argument(
        "--style",
        "-s",
        default=None,
        help="style id or label, e.g. 2000 or 'Anime Style' (see %%goenhance styles)",
    )
    p.add_argument("--prompt", "-p", default=None, help="optional text prompt (<= 500 characters)")
    p.add_argument("--duration", "-d", type=int, default=None, help="seconds of output, 3-30")
    p.add_argument("--resolution", "-r", default=None, choices=RESOLUTIONS, help="540p or 720p")
    p.add_argument("--seed", type=int, default=None, help="seed, -1 = random")
    p.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="block until the video is ready (default: only in headless runs)",
    )
    p.add_argument(
        "--timeout",
        type=_positive_float,
        default=None,
        help="seconds before the job counts as timed out (stays resumable)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        default=False,
        help="bypass the cache: run again and replace the cached result",
    )
    p.add_argument(
        "--embed",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="embed the video in the notebook (base64) instead of linking the file",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        default=False,
        help="show the input and the result side by side (synced when JS runs)",
    )
    p.add_argument(
        "--notify",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also show a browser notification when the job ends (press 'Notify me' once to "
        "allow it; needs anywidget: pip install 'goenhance-nb[notify]'; "
        "default: GoEnhanceMagics.notify)",
    )


def build_parser() -> _Parser:
    """The ``%goenhance`` argument parser (subcommands, each with ``--help``)."""
    root = _Parser(
        prog="%goenhance", description="GoEnhance AI video-to-video in the notebook.", add_help=True
    )
    sub = root.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_Parser)
    run = sub.add_parser(
        "run",
        help="transform a video with a style",
        description="Transform INPUT with a style; returns the Job handle.",
    )
    _add_run_options(run, input_optional=False)
    st = sub.add_parser(
        "styles",
        help="list the available styles",
        description="Show the model list (cached on disk).",
    )
    st.add_argument("--refresh", action="store_true", help="fetch the model list again")
    st.add_argument("--text", action="store_true", help="plain text table")
    sub.add_parser(
        "credits",
        help="credit balance and session spend",
        description="Show the account's credits and this session's spend.",
    )
    sub.add_parser("jobs", help="the job ledger", description="Show the job ledger.")
    rs = sub.add_parser(
        "resume",
        help="resume watching a job",
        description="Resume a job by id or cache key (no ID: list resumable jobs).",
    )
    rs.add_argument("id", nargs="?", default=None, metavar="ID", help="job id (img_uuid) or key")
    rs.add_argument(
        "--resubmit",
        action="store_true",
        help="re-send a job that never got an id (may charge twice)",
    )
    rs.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="block until the video is ready",
    )
    rs.add_argument("--timeout", type=_positive_float, default=None, help="seconds to wait")
    ca = sub.add_parser(
        "cache",
        help="inspect or clear the result cache",
        description="list | info KEY | clear | remove KEY | verify KEY. "
        "Files in goenhance_outputs/ are never deleted.",
    )
    ca.add_argument(
        "action", nargs="?", default="list", choices=("list", "info", "clear", "remove", "verify")
    )
    ca.add_argument("key", nargs="?", default=None, metavar="KEY", help="a cache key (prefix)")
    sub.add_parser(
        "config",
        help="effective settings",
        description="Show the effective settings (the key only as set / not set).",
    )
    sub.add_parser("panel", help="open the panel", description="Show the GoEnhance panel.")
    lg = sub.add_parser(
        "login",
        help="enter the API key (kept in memory)",
        description="Ask for the API key with getpass and keep it in memory.",
    )
    lg.add_argument("--save", action="store_true", help="also write it to the key file (mode 0600)")
    md = sub.add_parser(
        "mode",
        help="live, record, replay or offline",
        description="Show or set the reproducibility mode: live (no lockfile), record (live + "
        "goenhance.lock.json), replay (results only from the cache or an imported bundle), "
        "offline (no network at all).",
    )
    md.add_argument("mode", nargs="?", default=None, choices=MODES, metavar="MODE")
    vf = sub.add_parser(
        "verify",
        help="re-hash the results the lockfile lists",
        description="Re-hash every result goenhance.lock.json lists; report missing, changed "
        "and extra files in goenhance_outputs/; the cell fails on drift.",
    )
    vf.add_argument(
        "path", nargs="?", default=None, metavar="PATH", help="notebook, folder or lockfile"
    )
    ex = sub.add_parser(
        "export",
        help="write a bundle (lockfile + results)",
        description="Write one zip archive: the lockfile at its root and every result it lists "
        "(results/<sha256>.mp4), so another machine can replay the notebook.",
    )
    ex.add_argument("path", metavar="PATH", help="the archive to write (e.g. results.zip)")
    ex.add_argument("--inputs", action="store_true", help="also include the input videos")
    im = sub.add_parser(
        "import",
        help="seed the cache from a bundle",
        description="Check a bundle (names, links, sizes, hashes) and seed this cache with its "
        "results, so the notebook replays with zero API calls. Refused bundles change nothing.",
    )
    im.add_argument("path", metavar="PATH", help="a bundle written by %%goenhance export")
    sw = sub.add_parser(
        "sweep",
        help="every input x style x grid value",
        description="Plan every INPUT x --style x --grid combination (cached, running, new, "
        "estimated credits), check the caps before anything is sent, run, show one grid.",
    )
    sw.add_argument("inputs", nargs="+", metavar="INPUT", help="input videos")
    sw.add_argument("--style", "-s", action="append", required=True, help="a style (repeatable)")
    sw.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="vary duration, resolution, seed or prompt (repeatable)",
    )
    sw.add_argument("--duration", "-d", type=int, default=None, help="seconds of output, 3-30")
    sw.add_argument("--resolution", "-r", default=None, choices=RESOLUTIONS)
    sw.add_argument("--prompt", "-p", default=None)
    sw.add_argument("--max-credits", type=int, default=None, help="refuse above this estimate")
    sw.add_argument("--max-jobs", type=int, default=None, help="refuse above this many new jobs")
    sw.add_argument("--dry-run", action="store_true", help="show the plan only")
    hp = sub.add_parser("help", help="this help", description="Show help for a subcommand.")
    hp.add_argument("topic", nargs="?", default=None, metavar="SUBCOMMAND")
    return root


@functools.cache
def _line_parser() -> _Parser:
    """:func:`build_parser`, built once per process (building one costs ~5 ms: argparse and
    gettext work on every option); parsing leaves no state in it."""
    return build_parser()


@functools.cache
def _cell_parser() -> _Parser:
    p = _Parser(
        prog="%%goenhance",
        description="Run a job: run options on the first line, YAML key: value "
        f"parameters in the body ({', '.join(CELL_KEYS)}).",
    )
    _add_run_options(p, input_optional=True)
    return p


def parse_line(line: str) -> Command | None:
    """Parse a ``%goenhance`` line into a :class:`Command`; None when help was printed.

    Raises :class:`UsageError` (one line) on a quoting error, an unknown subcommand or a bad
    option. No API call is made here.
    """
    try:
        argv = shlex.split(line, posix=True)
    except ValueError as exc:
        raise UsageError(f"%goenhance: {exc}") from None
    parser = _line_parser()
    if not argv:
        parser.print_help()
        return None
    try:
        ns = parser.parse_args(argv)
    except _HelpShown:
        return None
    except argparse.ArgumentError as exc:
        raise UsageError(f"%goenhance: {exc}") from None
    name = ns.command
    if name == "run":
        if ns.duration is not None and not 3 <= ns.duration <= 30:
            raise UsageError(f"%goenhance run: --duration must be 3-30, got {ns.duration}")
        return Command("run", RunArgs(**{f.name: getattr(ns, f.name) for f in fields(RunArgs)}))
    if name == "resume":
        return Command("resume", ResumeArgs(ns.id, ns.resubmit, ns.wait, ns.timeout))
    if name == "cache":
        if ns.action in ("info", "remove", "verify") and not ns.key:
            raise UsageError(f"%goenhance cache {ns.action}: KEY is required")
        if ns.action in ("list", "clear") and ns.key:
            raise UsageError(f"%goenhance cache {ns.action}: takes no KEY")
        return Command("cache", CacheArgs(ns.action, ns.key))
    if name == "login":
        return Command("login", LoginArgs(ns.save))
    if name == "styles":
        return Command("styles", StylesArgs(ns.refresh, ns.text))
    if name == "help":
        return Command("help", HelpArgs(ns.topic))
    if name == "mode":
        return Command("mode", ModeArgs(ns.mode))
    if name == "sweep":
        grid: list[tuple[str, tuple[str, ...]]] = []
        for spec in ns.grid:
            key, sep, values = spec.partition("=")
            if not sep or not key or not values:
                raise UsageError(f"%goenhance sweep: --grid wants KEY=V1,V2, got {brief(spec)}")
            grid.append((key.strip(), tuple(v.strip() for v in values.split(","))))
        return Command(
            "sweep",
            SweepArgs(
                tuple(ns.inputs),
                tuple(ns.style),
                tuple(grid),
                ns.duration,
                ns.resolution,
                ns.prompt,
                ns.max_credits,
                ns.max_jobs,
                ns.dry_run,
            ),
        )
    if name in ("verify", "export", "import"):
        return Command(name, PathArgs(ns.path, bool(getattr(ns, "inputs", False))))
    return Command(name, NoArgs())


# -- %%goenhance cell bodies ------------------------------------------------------------------
CELL_KEYS: tuple[str, ...] = (
    "input",
    "style",
    "prompt",
    "duration",
    "resolution",
    "seed",
    "wait",
    "timeout",
    "force",
    "embed",
    "compare",
    "notify",
)
_BOOL_KEYS = {"wait", "force", "embed", "compare", "notify"}
_INT_KEYS = {"duration", "seed"}


def parse_cell_body(body: str) -> dict[str, Any]:
    """Parse a ``%%goenhance`` body: YAML ``key: value`` lines (``yaml.safe_load``).

    Returns a dict with keys from :data:`CELL_KEYS`. ``prompt`` is always the literal text of the
    scalar (``prompt: yes`` stays ``"yes"``, ``prompt: 0012`` stays ``"0012"``). Raises
    :class:`UsageError` for invalid YAML, a body that is not a mapping, unknown keys or a value
    of the wrong type.
    """
    import yaml

    if not body.strip():
        return {}
    loader = yaml.SafeLoader(body)
    try:
        try:
            # compose first (aliases stay shared nodes: linear in the text), bound the expanded
            # size, and only then build Python objects from the same node graph
            node = loader.get_single_node()
            _check_yaml_size(node)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = brief(getattr(exc, "problem", None) or "invalid YAML", quote=False)
        raise UsageError(f"%%goenhance: cell body is not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise UsageError("%%goenhance: the cell body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise UsageError(
            f"%%goenhance: a value in the cell body cannot be read: {brief(str(exc), quote=False)}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"%%goenhance: the cell body must be 'key: value' lines ({', '.join(CELL_KEYS)})"
        )
    unknown = sorted(brief(k, 40, quote=False) for k in data if k not in CELL_KEYS)
    if unknown:
        more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        raise UsageError(
            f"%%goenhance: unknown key(s) {', '.join(unknown[:3])}{more}; "
            f"allowed: {', '.join(CELL_KEYS)}"
        )
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key == "prompt":
            value = _raw_scalar(node, "prompt", value)
        elif key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise UsageError(f"%%goenhance: {key} must be true or false, got {brief(value)}")
        elif key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(f"%%goenhance: {key} must be an integer, got {brief(value)}")
        elif key == "timeout":
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise UsageError(
                    f"%%goenhance: timeout must be a positive number, got {brief(value)}"
                )
            value = float(value)
        elif key in ("input", "style", "resolution"):
            if isinstance(value, list | dict | bool):
                raise UsageError(f"%%goenhance: {key} must be a single value, got {brief(value)}")
            value = str(value)
        out[key] = value
    if "resolution" in out and out["resolution"] not in RESOLUTIONS:
        raise UsageError(
            f"%%goenhance: resolution must be one of {', '.join(RESOLUTIONS)}, "
            f"got {brief(out['resolution'])}"
        )
    if "duration" in out and not 3 <= out["duration"] <= 30:
        raise UsageError(f"%%goenhance: duration must be 3-30, got {out['duration']}")
    return out


#: Most YAML nodes a cell body may expand to (aliases counted at every use): a real body has
#: a dozen; a "billion laughs" alias bomb has billions and is refused before it is built.
MAX_YAML_NODES = 1000


def _check_yaml_size(root: Any) -> None:
    """Refuse a composed YAML document whose alias-expanded node count exceeds
    :data:`MAX_YAML_NODES`, or that refers to itself (a recursive alias).

    Work is linear in the number of distinct nodes: each node's expanded size is computed
    once (memoised, saturating at the limit).

    :raises UsageError: the body expands too far or is recursive.
    """
    import yaml

    if root is None:
        return
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # iterative post-order walk: (node, children visited?)
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        nid = id(node)
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        if expanded:
            active.discard(nid)
            sizes[nid] = min(MAX_YAML_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if nid in sizes:
            continue
        if nid in active:
            raise UsageError("%%goenhance: the cell body refers to itself (a recursive alias)")
        active.add(nid)
        stack.append((node, True))
        for child in children:
            if id(child) in active:
                raise UsageError("%%goenhance: the cell body refers to itself (a recursive alias)")
            if id(child) not in sizes:
                stack.append((child, False))
    if sizes[id(root)] > MAX_YAML_NODES:
        raise UsageError(
            f"%%goenhance: the cell body expands to more than {MAX_YAML_NODES} YAML values "
            "(aliases such as *name repeat what they point to); write the values out"
        )


def _raw_scalar(node: Any, key: str, parsed: Any) -> str:
    """The literal text of ``key``'s scalar value in a composed YAML mapping node."""
    import yaml

    if isinstance(parsed, str):
        return parsed
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            if getattr(knode, "value", None) == key:
                if isinstance(vnode, yaml.ScalarNode):
                    return str(vnode.value)
                break
    raise UsageError(f"%%goenhance: {key} must be text, got {brief(parsed)}")


def merge_cell(line_args: RunArgs, body: Mapping[str, Any]) -> RunArgs:
    """Combine first-line options and body keys; a key given in both places is a UsageError."""
    changes: dict[str, Any] = {}
    defaults = RunArgs()
    for key, value in body.items():
        current = getattr(line_args, key)
        if current != getattr(defaults, key):
            raise UsageError(f"%%goenhance: {key} is given on the first line and in the body")
        changes[key] = value
    return replace(line_args, **changes)


# -- warnings as plain lines --------------------------------------------------------------------
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _is_ours(w: warnings.WarningMessage) -> bool:
    """A warning of our categories, or one raised from a module of this package."""
    from goenhance_nb._settings import SettingsWarning

    if issubclass(w.category, (GoEnhanceWarning, SettingsWarning)):
        return True
    return str(Path(w.filename).resolve()).startswith(_PACKAGE_DIR)


class _Notices:
    """Collects the warnings raised while a magic runs (any thread) and prints ours as one
    plain stdout line each (``GoEnhance warning: <message>``, no path, no source line), once
    per command; other warnings are re-emitted unchanged when the magic ends. The user's
    warning filters still apply (an ignored category is not shown)."""

    def __init__(self) -> None:
        self._cm = warnings.catch_warnings(record=True)
        self._log: list[warnings.WarningMessage] | None = None
        self._shown: set[str] = set()
        self._others: list[warnings.WarningMessage] = []

    def __enter__(self) -> _Notices:
        self._log = self._cm.__enter__()
        return self

    def flush(self) -> None:
        """Print the plain lines collected so far (e.g. before the status widget)."""
        if self._log is None:
            return
        caught = list(self._log)
        del self._log[: len(caught)]
        for w in caught:
            if not _is_ours(w):
                self._others.append(w)
                continue
            line = f"GoEnhance warning: {redact_text(w.message)}"
            if line not in self._shown:
                self._shown.add(line)
                print(line, flush=True)

    def __exit__(self, *exc: object) -> None:
        self.flush()
        self._cm.__exit__(None, None, None)
        self._log = None
        for w in self._others:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno, w.file, w.line)


def _flush_notices(m: GoEnhanceMagics) -> None:
    """Print the warnings collected so far in this magic call (no-op outside a call)."""
    if m._notices is not None:
        m._notices.flush()


class SettingsBusy(TraitError):
    """A settings trait change refused because jobs still run in the session (one line)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


# -- the magics -------------------------------------------------------------------------------
Handler = Callable[["GoEnhanceMagics", Any], Any]


#: Traits that feed ``Settings``; changing one replaces the session (``Session.successor``).
_SETTINGS_TRAITS = ("poll_interval", "job_timeout", "output_dir", "wait")


@magics_class
class GoEnhanceMagics(Magics):
    """``%goenhance`` and ``%%goenhance``. Defaults are ``config=True`` traits.

    The traits ``poll_interval``, ``job_timeout``, ``output_dir`` and ``wait`` are passed to
    :meth:`Settings.resolve` as its ``config`` mapping; ``default_style``, ``default_duration``,
    ``default_resolution`` and ``embed`` are run defaults. No trait ever holds the API key.
    """

    poll_interval = Float(
        None,
        allow_none=True,
        config=True,
        help="Seconds between status polls (floor 5 s for the real API).",
    )
    job_timeout = Float(
        None,
        allow_none=True,
        config=True,
        help="Wall-clock seconds before a job counts as timed out.",
    )
    output_dir = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Folder for result files (default: goenhance_outputs/ beside the notebook).",
    )
    default_style = Unicode(
        None, allow_none=True, config=True, help="Style used when run has no --style."
    )
    default_duration = Int(5, config=True, help="Default --duration (seconds, 3-30).")
    default_resolution = Unicode("720p", config=True, help="Default --resolution (540p or 720p).")
    embed = Bool(
        None,
        allow_none=True,
        config=True,
        help="Embed result videos (True), link them (False), or decide per frontend (None).",
    )
    wait = Bool(
        None,
        allow_none=True,
        config=True,
        help="Block until done (True), never (False), or only in headless runs (None).",
    )
    notify = Bool(
        False,
        config=True,
        help="Show a browser notification when a watched job ends (like run --notify; needs "
        "anywidget). No effect in headless runs.",
    )

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        self._session: Any | None = None
        self._stale = False  # settings traits changed since the session was made
        self._notices: _Notices | None = None
        self._mode: str | None = None  # set by %goenhance mode
        self._lock = threading.RLock()
        super().__init__(shell=shell, **kwargs)
        self.observe(
            self._settings_traits_changed,
            names=list(_SETTINGS_TRAITS),
        )

    # -- session ------------------------------------------------------------------------------
    def settings_config(self) -> dict[str, Any]:
        """The ``config`` mapping handed to ``Settings.resolve`` (never the key)."""
        out: dict[str, Any] = {}
        for name in _SETTINGS_TRAITS:
            value = getattr(self, name)
            if value is not None:
                out[name] = Path(value) if name == "output_dir" else value
        return out

    @validate(*_SETTINGS_TRAITS)
    def _refuse_while_jobs_run(self, proposal: Any) -> Any:
        """A settings trait may not change while jobs run in the session (their watch, widget
        and placeholder belong to it); the trait keeps its value.

        :raises SettingsBusy: jobs still run (``%config`` prints it as one line).
        """
        busy = _busy_message(self._session)
        if busy is not None:
            raise SettingsBusy(f"GoEnhanceMagics.{proposal['trait'].name} not changed: {busy}")
        return proposal["value"]

    def _settings_traits_changed(self, change: Any) -> None:
        with self._lock:
            if self._session is None:
                return  # the first use builds the session from the traits
            self._stale = True
            self.session()  # replace it now, so the old one closes at once

    def session(self) -> Any:
        """The Session the magics use (created on first use from env + these traits; after a
        settings trait change, the successor of the previous one: same spend and budget). A
        mode set with ``%goenhance mode`` carries over to a session rebuilt after a change.

        :raises ConfigError: the settings changed while jobs still run in the session.
        """
        with self._lock:
            if self._session is None:
                self._session = _session_for(self.settings_config())
                self._stale = False
            elif self._stale:
                self._session = _replace_session(self._session, self.settings_config())
                self._stale = False
            if self._mode is not None and self._session.mode != self._mode:
                self._session.set_mode(self._mode)
            return self._session

    def set_session(self, session: Any) -> None:
        """Use ``session`` from now on (``login`` and tests)."""
        with self._lock:
            self._session = session
            self._stale = False

    # -- entry point --------------------------------------------------------------------------
    @line_cell_magic
    def goenhance(self, line: str, cell: str | None = None) -> Any:
        """GoEnhance AI video-to-video. ``%goenhance help`` lists the subcommands."""
        if self._notices is not None:  # re-entered (a magic inside a magic): one collector
            return self._dispatch(line, cell)
        with _Notices() as notices:
            self._notices = notices
            try:
                return self._dispatch(line, cell)
            finally:
                self._notices = None

    def _dispatch(self, line: str, cell: str | None) -> Any:
        if cell is not None:
            return self._cell(line, cell)
        cmd = parse_line(line)
        if cmd is None:
            return None
        return HANDLERS[cmd.name](self, cmd.args)

    def _cell(self, line: str, cell: str) -> Any:
        try:
            argv = shlex.split(line, posix=True)
        except ValueError as exc:
            raise UsageError(f"%%goenhance: {exc}") from None
        if argv and argv[0] == "run":
            argv = argv[1:]
        try:
            ns = _cell_parser().parse_args(argv)
        except _HelpShown:
            return None
        except argparse.ArgumentError as exc:
            raise UsageError(f"%%goenhance: {exc}") from None
        line_args = RunArgs(**{f.name: getattr(ns, f.name) for f in fields(RunArgs)})
        if line_args.duration is not None and not 3 <= line_args.duration <= 30:
            raise UsageError(f"%%goenhance: --duration must be 3-30, got {line_args.duration}")
        body = cell
        if self.shell is not None and ("{" in body or "$" in body):
            # line by line: IPython's formatter drops text after a {var} across newlines
            body = "\n".join(
                self.shell.var_expand(ln) if ("{" in ln or "$" in ln) else ln
                for ln in body.split("\n")
            )
        args = merge_cell(line_args, parse_cell_body(body))
        if not args.input:
            raise UsageError("%%goenhance: no input (give it on the first line or as 'input:')")
        return handle_run(self, args)


# -- handlers ---------------------------------------------------------------------------------
def _session_for(config: Mapping[str, Any]) -> Any:
    """The process-wide session; when traits set settings, its successor on those settings
    (same spend and budget; the panel and ``goenhance_nb.transform`` share it)."""
    from goenhance_nb import _session

    if not config:
        return _session.get_session()
    from goenhance_nb._settings import Settings

    return _session.replace_session(Settings.resolve(config=dict(config)))


def _replace_session(current: Any, config: Mapping[str, Any]) -> Any:
    """The successor of ``current`` on the settings ``config`` gives (see ``Session.successor``),
    made the process-wide session."""
    from goenhance_nb import _session
    from goenhance_nb._settings import Settings

    return _session.replace_session(Settings.resolve(config=dict(config)), current=current)


def _busy_message(session: Any) -> str | None:
    """Why ``session`` may not be replaced now (jobs still running), or None."""
    if session is None:
        return None
    running = session.running_jobs()
    if not running:
        return None
    ids = ", ".join(str(j.id or j.key)[:8] for j in running[:3])
    more = f" and {len(running) - 3} more" if len(running) > 3 else ""
    return (
        f"{len(running)} job(s) still running in this session ({ids}{more}); wait for them "
        "or stop watching them (they stay resumable), then change it"
    )


def _should_wait(m: GoEnhanceMagics, flag: bool | None) -> bool:
    """--wait/--no-wait win; then the ``wait`` trait; then settings/env; then headless."""
    if flag is not None:
        return flag
    if m.wait is not None:
        return bool(m.wait)
    env_wait = _frontend.wait_env()
    if env_wait is not None:
        return env_wait
    return _frontend.is_headless(m.shell)


def handle_run(m: GoEnhanceMagics, args: RunArgs) -> Any:
    """Validate and submit (or take from the cache); returns the Job handle (DECISIONS 4).

    Interactive: returns at once after showing the live status widget and a placeholder output
    that the finished video replaces. Headless / ``--wait``: blocks, then shows the video as a
    static output. Bad input raises here (the cell fails) in both modes.
    """
    style = args.style if args.style is not None else m.default_style
    if not style:
        raise UsageError("%goenhance run: --style is required (see %goenhance styles)")
    if args.input is None:
        raise UsageError("%goenhance run: INPUT is required")
    duration = args.duration if args.duration is not None else m.default_duration
    resolution = args.resolution if args.resolution is not None else m.default_resolution
    if resolution not in RESOLUTIONS:
        raise UsageError(f"%goenhance run: resolution must be one of {', '.join(RESOLUTIONS)}")
    kwargs: dict[str, Any] = {
        "prompt": args.prompt,
        "duration": duration,
        "resolution": resolution,
        "force": args.force,
    }
    if args.seed is not None:
        kwargs["seed"] = args.seed
    if args.timeout is not None:
        kwargs["timeout"] = args.timeout
    source = _local_source(args.input)
    wait = _should_wait(m, args.wait)
    frontend = _frontend.frontend(m.shell)
    session = m.session()
    job = session.transform(args.input, style, **kwargs)
    _flush_notices(m)  # input warnings: one plain line before the status
    _present_job(
        m,
        job,
        wait=wait,
        timeout=args.timeout,
        embed=_embed(m, args.embed),
        compare=args.compare,
        source=source,
        frontend=frontend,
        session=session,
        notify=args.notify if args.notify is not None else bool(m.notify),
    )
    return job


def _embed(m: GoEnhanceMagics, flag: bool | None) -> bool | None:
    return flag if flag is not None else m.embed


def _local_source(text: str) -> Path | None:
    if "://" in text:
        return None
    p = Path(text).expanduser()
    return p if p.is_file() else None


def _settings_of(session: Any) -> Any:
    return getattr(session, "settings", None)


def _publish(
    job: Any,
    result: Any,
    *,
    embed: bool | None,
    compare: bool,
    source: Path | None,
    frontend: str,
    session: Any,
    nb_dir: Path,
) -> _display.ResultBundle:
    settings = _settings_of(session)
    return _display.publish_result(
        result,
        notebook_dir=nb_dir,
        embed=embed,
        cached=bool(getattr(job, "cached", False)),
        compare=compare,
        source=source,
        frontend=frontend,
        output_dir=getattr(settings, "output_dir", None),
        embed_limit_mb=float(getattr(settings, "embed_limit_mb", 8.0) or 8.0),
    )


def _display_obj(obj: Any, **kw: Any) -> Any:
    from IPython.display import display

    return display(obj, **kw)


def _present_job(
    m: GoEnhanceMagics,
    job: Any,
    *,
    wait: bool,
    timeout: float | None,
    embed: bool | None,
    compare: bool,
    source: Path | None,
    frontend: str,
    session: Any,
    notify: bool = False,
) -> None:
    """Show a job: a final output (blocking or already done) or a live widget + placeholder.

    ``notify``: beside the live widget, also show the browser notifier (an anywidget; none
    without anywidget, in headless runs or in a terminal) and notify when the job ends.

    :raises GoEnhanceError: (blocking or already finished) the job's own error, so the cell fails.
    :raises JobTimedOut: ``timeout`` passed while blocking (the job stays resumable).
    """
    _PRESENTED[job.key] = _execution_count(m.shell)
    nb_dir = _display.notebook_dir(shell=m.shell)

    def make_publish(j: Any) -> Callable[[Any], _display.ResultBundle]:
        return lambda result: _publish(
            j,
            result,
            embed=embed,
            compare=compare,
            source=source,
            frontend=frontend,
            session=session,
            nb_dir=nb_dir,
        )

    publish = make_publish(job)
    if job.done():
        result = job.result(timeout=0)  # raises the job's error: the cell fails
        _display_obj(publish(result))
        return
    terminal = frontend == "terminal"
    if wait:
        if terminal or frontend == "headless":
            print(_status_line(job), flush=True)
        else:
            _show_widget(job, session)
            if notify:
                notifier = _show_notifier()
                if notifier is not None:
                    _watch_notify(job, notifier)
        try:
            result = job.result(timeout=timeout)
        except TimeoutError:
            from goenhance_nb._errors import JobTimedOut

            raise JobTimedOut(job.id, key=job.key) from None
        except KeyboardInterrupt:
            print(
                f"Stopped waiting; the job keeps going. Resume with %goenhance resume "
                f"{getattr(job, 'id', None) or job.key}",
                file=sys.stderr,
            )
            raise
        _display_obj(publish(result))
        return
    if terminal:
        _watch_text(job, publish)
        print(_status_line(job), flush=True)
        return
    simulated = str(getattr(job, "backend", "")) == "simulated"
    handle: Any = None
    notifier = None  # Any: the first binding is _show_notifier() in the wait branch

    def on_follow(new_job: Any) -> None:
        # the widget's Retry button follows a new job: the placeholder follows it too
        if handle is None or new_job is job:
            return
        handle.update(_display.placeholder_bundle(_job_label(new_job), simulated=simulated))
        _watch_update(new_job, handle, make_publish(new_job))
        if notifier is not None:
            _watch_notify(new_job, notifier)

    _show_widget(job, session, on_follow=on_follow)
    if notify and frontend != "headless":
        notifier = _show_notifier()
        if notifier is not None:
            _watch_notify(job, notifier)
    handle = _display_obj(
        _display.placeholder_bundle(_job_label(job), simulated=simulated), display_id=True
    )
    _watch_update(job, handle, publish)


def _job_label(job: Any) -> str:
    """``job <id8>`` once the API gave an id, else ``request <key8>`` (the cache key)."""
    jid = getattr(job, "id", None)
    return f"job {str(jid)[:8]}" if jid else f"request {str(job.key)[:8]}"


def _status_line(job: Any) -> str:
    state = getattr(job, "state", None)
    text = "cached" if getattr(job, "cached", False) else _state_text(state or "submitted")
    sim = " [SIMULATED]" if str(getattr(job, "backend", "")) == "simulated" else ""
    return f"GoEnhance: {_job_label(job)} {text}{sim}"


_STATUS_CLASS: Any = None


def _status_class() -> Any:
    """StatusWidget, extended with a hook called whenever it follows a job (Retry)."""
    global _STATUS_CLASS
    if _STATUS_CLASS is None:
        from goenhance_nb.widgets import StatusWidget

        class MagicStatusWidget(StatusWidget):
            """The magic's compact status widget; ``on_follow(job)`` runs after each follow."""

            _on_follow: Callable[[Any], None] | None = None

            def follow(self, job: Any) -> None:
                super().follow(job)
                cb = self._on_follow
                if cb is not None:
                    cb(job)

        _STATUS_CLASS = MagicStatusWidget
    return _STATUS_CLASS


def _show_widget(
    job: Any, session: Any = None, on_follow: Callable[[Any], None] | None = None
) -> None:
    """Display the live (compact) status widget of ``job``; text line if widgets are missing."""
    try:
        cls = _status_class()
    except ImportError:
        print(_status_line(job), flush=True)
        return
    widget = cls(job, session=session, compact=True)
    widget._on_follow = on_follow
    _display_obj(widget)


def _show_notifier() -> Any:
    """Display the browser notifier ("Notify me"); None without anywidget (toast only)."""
    try:
        from goenhance_nb.widgets import make_notifier

        notifier = make_notifier()
    except ImportError:
        return None
    if notifier is not None:
        _display_obj(notifier)
    return notifier


def _watch_notify(job: Any, notifier: Any) -> None:
    """On the engine thread: one browser notification when ``job`` ends (ready or failed).

    A custom message (``notifier.notify``), never a synced trait: the text is not saved.
    """
    from goenhance_nb.widgets import job_notification

    sent = threading.Event()

    def on_event(event: Any) -> None:
        if sent.is_set():
            return
        kind = getattr(event, "kind", None) or ""
        with contextlib.suppress(Exception):  # a listener never raises into the engine
            note = job_notification(
                kind,
                result=getattr(event, "result", None),
                error=getattr(event, "error", None) or getattr(job, "error", None),
            )
            if note is not None:
                sent.set()
                notifier.notify(*note)

    job.subscribe(on_event)


def _watch_update(job: Any, handle: Any, publish: Callable[[Any], Any]) -> None:
    """On the engine thread: replace the placeholder with the result (or a one-line error).

    Uses the event's own ``result``/``error`` (never a blocking call on the engine thread).
    """
    finished = threading.Event()

    def on_event(event: Any) -> None:
        if finished.is_set():
            return
        kind = getattr(event, "kind", None)
        result = getattr(event, "result", None)
        try:
            if kind in ("done", "cached") and result is not None:
                finished.set()
                handle.update(publish(result))
            elif kind in ("failed", "timed_out"):
                finished.set()
                err = (
                    getattr(event, "error", None)
                    or job.error
                    or GoEnhanceError(str(getattr(event, "message", "") or kind))
                )
                handle.update(_display.error_bundle(err, job_id=getattr(job, "id", None)))
            elif kind == "watch_cancelled":
                finished.set()
                jid = getattr(job, "id", None) or job.key[:12]
                handle.update(
                    _display.ResultBundle(
                        {
                            "text/plain": f"GoEnhance: stopped watching {jid}; %goenhance resume {jid}",
                        }
                    )
                )
        except Exception as exc:  # a listener never raises into the engine
            with contextlib.suppress(Exception):
                handle.update(_display.error_bundle(exc, job_id=getattr(job, "id", None)))

    job.subscribe(on_event)


def _watch_text(job: Any, publish: Callable[[Any], Any]) -> None:
    """Terminal: print one line per state change and the result path when done."""
    last: list[Any] = [None]
    finished = threading.Event()

    def on_event(event: Any) -> None:
        if finished.is_set():
            return
        state = getattr(event, "state", None)
        kind = getattr(event, "kind", None)
        result = getattr(event, "result", None)
        if kind in ("done", "cached") and result is not None:
            finished.set()
            with contextlib.suppress(Exception):
                print(f"\n{publish(result)['text/plain']}", flush=True)
            return
        if kind in ("failed", "timed_out"):
            finished.set()
            err = getattr(event, "error", None) or job.error or kind
            print(f"\nGoEnhance: {_job_label(job)} {kind}: {redact_text(err)}", flush=True)
            return
        if state != last[0] and state is not None:
            last[0] = state
            raw = getattr(event, "raw_status", None)
            print(
                f"\nGoEnhance: {_job_label(job)} {_state_text(state)}"
                + (f" ({raw})" if raw else ""),
                flush=True,
            )

    job.subscribe(on_event)


_LOCAL_STATES = {"LOCAL": "starting", "LOCAL_QUEUE": "waiting for a local queue slot"}


def _state_text(state: Any) -> str:
    text = str(getattr(state, "value", state))
    return _LOCAL_STATES.get(text, text.lower())


# -- small subcommands ------------------------------------------------------------------------
def _backend_label(session: Any) -> str:
    backend = str(getattr(session, "backend", "") or "")
    return "SIMULATED" if backend == "simulated" else backend


def _show(html_text: str, plain: str, metadata: Mapping[str, Any] | None = None) -> None:
    _display_obj(_display.ResultBundle({"text/html": html_text, "text/plain": plain}, metadata))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, klass: str) -> tuple[str, str]:
    """(html, text) of a simple table; every cell escaped."""
    head = "".join(f"<th style='text-align:left'>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{c if isinstance(c, _Raw) else html.escape(str(c))}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    html_text = (
        f"<table class='{klass}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )
    cols = (
        [list(map(_plain, col)) for col in zip(headers, *rows, strict=False)]
        if rows
        else [[h] for h in headers]
    )
    widths = [max(len(x) for x in col) for col in cols]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths, strict=False)).rstrip()]
    lines += [
        "  ".join(_plain(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in rows
    ]
    return html_text, "\n".join(lines)


class _Raw(str):
    """A table cell that is already HTML (its plain text is given separately)."""

    plain: str

    def __new__(cls, html_text: str, plain: str) -> _Raw:
        obj = super().__new__(cls, html_text)
        obj.plain = plain
        return obj


def _plain(c: Any) -> str:
    return c.plain if isinstance(c, _Raw) else str(c)


def handle_styles(m: GoEnhanceMagics, args: StylesArgs) -> None:
    """Show the model list as an HTML gallery table (thumbnails) with a text fallback."""
    session = m.session()
    styles = session.styles(refresh=args.refresh)
    rows = []
    for s in styles:
        preview = getattr(s, "preview_url", None)
        thumb = ""
        if preview and "?" not in preview and str(preview).startswith(("http://", "https://")):
            thumb = (
                f"<img src='{html.escape(preview, quote=True)}' alt='' loading='lazy' "
                f"style='height:48px;border-radius:3px'>"
            )
        rows.append(
            [
                _Raw(thumb, ""),
                s.id,
                s.label,
                s.category,
                s.version,
                "VIP" if s.is_vip else "",
            ]
        )
    html_t, text = _table(
        ["", "id", "label", "category", "version", ""], rows, klass="goenhance-styles"
    )
    label = _backend_label(session)
    head = f"{len(styles)} styles ({label})"
    sim = (
        " <span class='goenhance-simulated'>SIMULATED</span>"
        if label == "SIMULATED"
        else f" ({html.escape(label)})"
    )
    if args.text:
        print(f"{head}\n{text}")
        return
    _show(
        f"<div class='goenhance-styles-list'><b>{len(styles)} styles</b>{sim}{html_t}</div>",
        f"{head}\n{text}",
    )


def handle_credits(m: GoEnhanceMagics, args: NoArgs) -> None:
    """Show the credit balance (one API call) and this session's spend."""
    session = m.session()
    c = session.credits()
    spend = _session_spend(session)
    label = _backend_label(session)
    parts = [f"Credits: {c.count}"]
    if c.queue_limit is not None:
        parts.append(f"queue limit {c.queue_limit}")
    if spend is not None:
        parts.append(f"session spend {spend}")
    text = " · ".join(parts) + f" ({label})"
    sim = " <span class='goenhance-simulated'>SIMULATED</span>" if label == "SIMULATED" else ""
    _show(f"<div class='goenhance-credits-line'>{html.escape(' · '.join(parts))}{sim}</div>", text)


def _session_spend(session: Any) -> Any:
    usage = getattr(session, "usage", None)
    snap = getattr(usage, "snapshot", None)
    if callable(snap):
        with contextlib.suppress(Exception):
            numbers = snap()
            possible = numbers.get("possible") or 0
            if possible:  # generate outcomes unknown: counted as spent until known
                return f"{numbers.get('spent')} (incl. {possible} possibly charged)"
            return numbers.get("spent")
    return None


def _entry_dict(entry: Any) -> dict[str, Any]:
    if hasattr(entry, "to_json"):
        with contextlib.suppress(Exception):
            return dict(entry.to_json())
    if isinstance(entry, Mapping):
        return dict(entry)
    return {
        k: getattr(entry, k)
        for k in dir(entry)
        if not k.startswith("_") and not callable(getattr(entry, k, None))
    }


def _fmt_time(value: Any) -> str:
    if isinstance(value, int | float) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return "" if value is None else str(value)


_JOB_COLUMNS = (
    ("job_id", "job id"),
    ("state", "state"),
    ("raw_status", "raw status"),
    ("style_label", "style"),
    ("cost", "cost"),
    ("created", "created"),
    ("key", "key"),
)


def handle_jobs(m: GoEnhanceMagics, args: NoArgs) -> None:
    """Show the job ledger as a table (newest first)."""
    session = m.session()
    entries = [_entry_dict(e) for e in session.jobs()]
    entries.sort(key=lambda d: d.get("created") or d.get("submitted") or 0, reverse=True)
    rows = []
    for d in entries:
        row = []
        for name, _ in _JOB_COLUMNS:
            v = d.get(name)
            if name == "style_label" and v is None:
                v = d.get("style") or d.get("model")
            if name == "created":
                v = _fmt_time(v if v is not None else d.get("submitted"))
            elif name in ("key", "job_id") and v:
                v = str(v)[:12]
            row.append("" if v is None else v)
        rows.append(row)
    html_t, text = _table([h for _, h in _JOB_COLUMNS], rows, klass="goenhance-jobs-table")
    label = _backend_label(session)
    head = f"{len(rows)} jobs in the ledger ({label})"
    _show(f"<div><b>{html.escape(head)}</b>{html_t}</div>", f"{head}\n{text}")


def handle_resume(m: GoEnhanceMagics, args: ResumeArgs) -> Any:
    """Resume a job by id or key and show it like ``run``; no ID lists the resumable jobs."""
    session = m.session()
    if args.id is None:
        entries = [e for e in session.jobs() if getattr(e, "state", None) not in ("done", "failed")]
        if not entries:
            print("No unfinished jobs in the ledger.")
            return None
        for e in entries:
            key = str(e.key)[:12]
            if getattr(e, "is_orphan", False):
                hint = f"never got a job id; %goenhance resume {key} --resubmit (may charge twice)"
            else:
                hint = f"%goenhance resume {e.job_id}"
            print(f"{key}  {e.state:<16} {e.style_label or ''}  {hint}")
        return None
    job = session.resume(args.id, resubmit=args.resubmit, timeout=args.timeout)
    _flush_notices(m)
    _present_job(
        m,
        job,
        wait=_should_wait(m, args.wait),
        timeout=args.timeout,
        embed=m.embed,
        compare=False,
        source=None,
        frontend=_frontend.frontend(m.shell),
        session=session,
        notify=bool(m.notify),
    )
    return job


def handle_cache(m: GoEnhanceMagics, args: CacheArgs) -> Any:
    """``list`` / ``info KEY`` / ``clear`` / ``remove KEY`` / ``verify KEY`` on the result cache.

    KEY may be a unique key prefix or a job id. ``clear`` and ``remove`` delete only the store's
    files, never the notebook's files in ``goenhance_outputs/`` (DECISIONS 13).
    :raises CacheError: unknown or ambiguous KEY, unreadable index.
    """
    session = m.session()
    cache = session.cache
    if args.action == "list":
        records = cache.list()
        rows = [
            [
                str(r.key)[:12],
                r.style_label,
                (r.params or {}).get("duration", ""),
                (r.params or {}).get("resolution", ""),
                r.backend,
                _fmt_size(r.size),
                _fmt_time(r.created),
            ]
            for r in records
        ]
        html_t, text = _table(
            ["key", "style", "duration", "resolution", "backend", "size", "created"],
            rows,
            klass="goenhance-cache-table",
        )
        head = f"{len(rows)} cached results ({_fmt_size(sum(r.size for r in records)) or '0 KiB'})"
        _show(f"<div><b>{html.escape(head)}</b>{html_t}</div>", f"{head}\n{text}")
        return None
    if args.action == "clear":
        n = cache.clear()
        print(f"Cache cleared: {n} result(s) removed. Files in goenhance_outputs/ are kept.")
        return None
    rec = cache.info(args.key or "")
    if args.action == "info":
        data = rec.to_json()
        width = max(len(k) for k in data)
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in data.items()))
        return None
    if args.action == "remove":
        cache.remove(rec.key)
        print(f"Removed {rec.key[:12]} from the cache. Files in goenhance_outputs/ are kept.")
        return None
    ok = cache.verify(rec.key, full=True)
    print(f"{rec.key[:12]}: {'ok (size and content hash match)' if ok else 'DAMAGED or missing'}")
    return None


def _fmt_size(n: Any) -> str:
    if not isinstance(n, int | float):
        return ""
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


_CONFIG_FIELDS = (
    "base_url",
    "cache_dir",
    "poll_interval",
    "job_timeout",
    "request_timeout",
    "rate_limit",
    "max_retries",
    "output_dir",
    "budget",
    "max_upload_mb",
    "embed_limit_mb",
    "wait",
)


def handle_config(m: GoEnhanceMagics, args: NoArgs) -> None:
    """Show the effective settings and magic defaults; the key only as set / not set."""
    session = m.session()
    s = session.settings
    key_state = "not set (embedded simulator)" if s.base_url is None else "not set"
    if getattr(s, "api_key", None):
        source = getattr(s, "key_source", None)
        key_state = f"set (from {source})" if source else "set"
    rows: list[list[Any]] = [
        ["api_key", key_state],
        ["backend", getattr(session, "backend", getattr(s, "backend", ""))],
        ["mode", session.mode],
        ["lockfile", session.lockfile.path],
    ]
    for name in _CONFIG_FIELDS:
        if hasattr(s, name):
            value = getattr(s, name)
            if name == "base_url":
                value = _display_url(value) if value else "(embedded simulator)"
            rows.append([name, "" if value is None else value])
    for name in (
        "default_style",
        "default_duration",
        "default_resolution",
        "embed",
        "wait",
        "notify",
    ):
        rows.append([f"GoEnhanceMagics.{name}", getattr(m, name)])
    rows.append(["frontend", _frontend.frontend(m.shell)])
    rows.append(["headless", _frontend.is_headless(m.shell)])
    html_t, text = _table(["setting", "value"], rows, klass="goenhance-config")
    _show(f"<div>{html_t}</div>", text)


def _display_url(url: str) -> str:
    from goenhance_nb._errors import redact_url

    return redact_url(url)


def handle_mode(m: GoEnhanceMagics, args: ModeArgs) -> None:
    """Show the mode in force, or switch this kernel's session to another one.

    :raises ConfigError: offline with no backend known without a network.
    """
    session = m.session()
    if args.mode is not None:
        session.set_mode(args.mode)
        m._mode = args.mode
    where = session.lockfile.path
    extra = {
        "live": "no lockfile writes",
        "record": f"results are recorded in {where}",
        "replay": "results only from the cache or an imported bundle (a miss fails the cell)",
        "offline": "no network at all; model list and results from the cache",
    }[session.mode]
    print(f"goenhance mode: {session.mode} ({extra})")


def handle_verify(m: GoEnhanceMagics, args: PathArgs) -> None:
    """Re-hash the lockfile's results; print the report; drift fails the cell (UsageError).

    :raises ConfigError: no lockfile.
    """
    from goenhance_nb._repro import verify

    target = args.path if args.path is not None else m.session().lockfile.path
    report = verify(target)
    print(report)
    if not report.ok:
        raise UsageError(
            f"%goenhance verify: drift: {len(report.missing)} missing, "
            f"{len(report.changed)} changed, {len(report.extra)} extra"
        )


def handle_export(m: GoEnhanceMagics, args: PathArgs) -> None:
    """Write the bundle. :raises BundleError: a result is missing or changed."""
    path = m.session().export(args.path or "", inputs=args.inputs)
    print(f"Bundle written: {path}")


def handle_import(m: GoEnhanceMagics, args: PathArgs) -> None:
    """Seed the cache from a bundle. :raises BundleError: refused (the cache is untouched)."""
    report = m.session().import_bundle(args.path or "")
    print(f"{report}. Re-run the notebook (replay mode: %goenhance mode replay).")


def handle_sweep(m: GoEnhanceMagics, args: SweepArgs) -> Any:
    """Plan, check the caps, run (unless ``--dry-run``: then print the plan), show the progress
    (a live bar, then one summary line) and the grid.

    :raises BudgetExceeded: a cap would be passed (nothing sent). :raises InputError: bad
        input, style or grid key (nothing sent).
    """
    from goenhance_nb._sweep import sweep

    grid: dict[str, list[Any]] = {}
    for key, values in args.grid:
        if key in ("duration", "seed"):
            try:
                grid[key] = [int(v) for v in values]
            except ValueError:
                raise UsageError(f"%goenhance sweep: --grid {key} wants integers") from None
        else:
            grid[key] = list(values)
    kwargs: dict[str, Any] = {
        "duration": args.duration if args.duration is not None else m.default_duration,
        "resolution": args.resolution or m.default_resolution,
        "prompt": args.prompt,
    }
    result = sweep(
        list(args.inputs),
        styles=list(args.styles),
        grid=grid,
        max_credits=args.max_credits,
        max_jobs=args.max_jobs,
        dry_run=args.dry_run,
        session=m.session(),
        **kwargs,
    )
    if args.dry_run:
        print(result)
    else:  # sweep() showed its progress and summary line
        bundle = result.grid()
        _show(str(bundle["text/html"]), str(bundle["text/plain"]), bundle.metadata)
    return result


def handle_panel(m: GoEnhanceMagics, args: NoArgs) -> Any:
    """Return the panel widget (displayed as the cell's result)."""
    from goenhance_nb._panel import panel

    session = m.session()
    try:
        return panel(session=session)
    except TypeError:
        return panel()


def handle_login(m: GoEnhanceMagics, args: LoginArgs) -> None:
    """Ask for the key with getpass, keep it in memory (a new session); ``--save`` writes it.

    The new session continues the current one (same spend and budget; the old one is closed).
    Raises UsageError where nobody can type (headless runs) and while jobs still run in the
    session (before asking). The key is never printed.
    """
    import getpass

    busy = _busy_message(m._session)
    if busy is not None:
        raise UsageError(f"%goenhance login: {busy}")
    if _frontend.allow_stdin(m.shell) is False:
        raise UsageError(
            "%goenhance login needs an interactive frontend; "
            "set GOENHANCE_API_KEY for headless runs"
        )
    try:
        key = getpass.getpass("GoEnhance API key: ").strip()
    except (EOFError, KeyboardInterrupt):
        raise UsageError("%goenhance login: cancelled") from None
    except Exception as exc:
        raise UsageError(
            f"%goenhance login: cannot read the key here ({type(exc).__name__})"
        ) from None
    if not key:
        raise UsageError("%goenhance login: no key entered")
    from goenhance_nb import _session
    from goenhance_nb._settings import SecretKey, Settings

    settings = Settings.resolve(config=m.settings_config()).with_(api_key=SecretKey(key))
    try:
        session = _session.replace_session(settings, current=m._session)
    except GoEnhanceError as exc:
        raise UsageError(f"%goenhance login: {exc}") from None
    m.set_session(session)
    where = _backend_label(session)
    msg = f"Key kept in memory for this kernel ({where})."
    if args.save:
        from goenhance_nb._settings import write_key_file

        path = write_key_file(SecretKey(key))
        msg += f" Saved to {path} (mode 0600)."
    print(msg)


def handle_help(m: GoEnhanceMagics, args: HelpArgs) -> None:
    """Print the overall help, or one subcommand's help."""
    if args.topic:
        parse_line(f"{args.topic} --help")
        return
    buf = io.StringIO()
    build_parser().print_help(buf)
    print(buf.getvalue().rstrip())
    print("\n%%goenhance [INPUT] [run options]  + YAML body: " + ", ".join(CELL_KEYS))


HANDLERS: dict[str, Handler] = {
    "run": handle_run,
    "styles": handle_styles,
    "credits": handle_credits,
    "jobs": handle_jobs,
    "resume": handle_resume,
    "cache": handle_cache,
    "config": handle_config,
    "panel": handle_panel,
    "login": handle_login,
    "help": handle_help,
    "mode": handle_mode,
    "verify": handle_verify,
    "export": handle_export,
    "import": handle_import,
    "sweep": handle_sweep,
}


# -- Job repr ---------------------------------------------------------------------------------
def _job_text(job: Any) -> str:
    line = _status_line(job)
    record = getattr(job, "record", None)
    if record is not None:
        shown = None
        with contextlib.suppress(Exception):
            shown = _display.outputs_relpath(record)
        line += f" · {record.style_label} -> {shown or record.path}"
    if getattr(job, "cached", False):
        line += " [cached]"
    err = getattr(job, "error", None)
    if err is not None:
        line += f": {type(err).__name__}: {redact_text(err)}"
    return line


_PRESENTED: dict[str, int | None] = {}


def _execution_count(shell: Any) -> int | None:
    count = getattr(shell, "execution_count", None)
    return count if isinstance(count, int) else None


def _job_bundle(job: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The display of a bare ``job``: the result video (+ provenance metadata) when done, else
    a status line. In the cell whose magic already showed the job, only the status line (no
    second video)."""
    from IPython import get_ipython

    text = _job_text(job)
    same_cell = job.key in _PRESENTED and _PRESENTED[job.key] == _execution_count(get_ipython())
    if job.done() and getattr(job, "error", None) is None and not same_cell:
        with contextlib.suppress(Exception):
            session = None
            with contextlib.suppress(Exception):
                from goenhance_nb._session import get_session

                session = get_session()
            bundle = _publish(
                job,
                job.result(timeout=0),
                embed=None,
                compare=False,
                source=None,
                frontend=_frontend.frontend(),
                session=session,
                nb_dir=_display.notebook_dir(),
            )
            return {"text/html": bundle["text/html"], "text/plain": text}, dict(bundle.metadata)
    if same_cell and not job.done():
        text = f"<Job: {_job_label(job)}> (live status above; the video replaces the placeholder)"
    return (
        {
            "text/html": f"<div class='goenhance-job-repr' style='font-size:12px'>"
            f"{html.escape(text)}</div>",
            "text/plain": text,
        },
        {},
    )


def _register_job_formatters(shell: Any) -> None:
    # by name: the engine (httpx, diskcache, ...) is imported only when a Job is first shown
    shell.display_formatter.mimebundle_formatter.for_type_by_name(
        "goenhance_nb._job", "Job", _job_bundle
    )


def _unregister_job_formatters(shell: Any) -> None:
    fmt = shell.display_formatter.mimebundle_formatter
    with contextlib.suppress(KeyError):
        fmt.pop("goenhance_nb._job.Job")
    engine = sys.modules.get("goenhance_nb._job")
    if engine is not None:
        with contextlib.suppress(KeyError):
            fmt.pop(engine.Job)


# -- extension hooks --------------------------------------------------------------------------
def load_ipython_extension(ipython: Any) -> None:
    """Register :class:`GoEnhanceMagics` on ``ipython`` (``%load_ext goenhance_nb``)."""
    magics = GoEnhanceMagics(shell=ipython)
    ipython.register_magics(magics)
    # %config GoEnhanceMagics.<trait> finds configurables here
    ipython.configurables = [
        c for c in getattr(ipython, "configurables", []) if not isinstance(c, GoEnhanceMagics)
    ] + [magics]
    _register_job_formatters(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and the Job formatters (``%unload_ext goenhance_nb``)."""
    mm = ipython.magics_manager
    for kind in ("line", "cell"):
        mm.magics[kind].pop("goenhance", None)
    mm.registry.pop("GoEnhanceMagics", None)
    ipython.configurables = [
        c for c in getattr(ipython, "configurables", []) if not isinstance(c, GoEnhanceMagics)
    ]
    _unregister_job_formatters(ipython)
