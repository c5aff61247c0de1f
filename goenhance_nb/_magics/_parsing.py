"""Parsing for ``%goenhance`` / ``%%goenhance``: shlex + argparse -> a frozen args dataclass.

:func:`parse_line` turns a ``%goenhance`` line into a :class:`Command` (subcommand name + its
frozen args); :func:`parse_cell_line` and :func:`parse_cell_body` read a ``%%goenhance`` cell's
first line (run options) and YAML body; :func:`merge_cell` combines them. Every bad argument is
a one-line :class:`~IPython.core.error.UsageError`; nothing here makes an API call, and the
input limits (duration, resolutions) come from :mod:`goenhance_nb._inputs`, imported on first
use so ``%load_ext`` stays cheap.

:func:`expand_vars` does the ``{expr}`` / ``$name`` expansion IPython would do (its
``DollarFormatter``), strictly: an undefined name or a field that cannot be evaluated is a
one-line UsageError naming it, never text sent as typed (``{{``/``}}`` and ``$$`` escape).
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, NoReturn

from IPython.core.error import UsageError
from IPython.utils.text import DollarFormatter  # loaded with IPython.core.magic already

from goenhance_nb._errors import brief
from goenhance_nb._settings import MODES

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    #: The ``add_subparsers()`` action of the root parser (generic only in typeshed).
    _Subparsers = argparse._SubParsersAction["_Parser"]

__all__ = [
    "CELL_KEYS",
    "MAX_YAML_NODES",
    "Args",
    "CacheArgs",
    "Command",
    "HelpArgs",
    "LoginArgs",
    "ModeArgs",
    "NoArgs",
    "PathArgs",
    "ResumeArgs",
    "RunArgs",
    "StylesArgs",
    "SweepArgs",
    "build_parser",
    "expand_vars",
    "merge_cell",
    "parse_cell_body",
    "parse_cell_line",
    "parse_line",
]


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

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        super().print_help(sys.stdout if file is None else file)


# -- the frozen arguments -------------------------------------------------------------------
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
    """``%goenhance cache [list|info KEY|clear|remove KEY|verify KEY] [--yes]`` (``yes``: really
    remove; without it ``clear``/``remove`` only say what they would remove)."""

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


#: The arguments of any subcommand.
Args = (
    RunArgs
    | ResumeArgs
    | CacheArgs
    | LoginArgs
    | StylesArgs
    | HelpArgs
    | ModeArgs
    | PathArgs
    | SweepArgs
    | NoArgs
)


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed line: the subcommand name and its frozen arguments."""

    name: str
    args: Args


# -- the parser -----------------------------------------------------------------------------
def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _duration_help() -> str:
    from goenhance_nb._inputs import MAX_DURATION, MIN_DURATION

    return (
        f"seconds of output, {MIN_DURATION}-{MAX_DURATION}; default: the input's length "
        "(rounded down); longer than the input is refused"
    )


def cost_help() -> str:
    """How a new job is charged, from the rates the estimate uses (``_usage``): shown by
    ``run --help`` and ``sweep --help``."""
    from goenhance_nb._inputs import DEFAULT_RESOLUTION
    from goenhance_nb._usage import DEFAULT_RATES, VIP_MULTIPLIER

    by_res = sorted(DEFAULT_RATES.items(), key=lambda kv: kv[1], reverse=True)
    rates = ", ".join(
        f"{rate:g} credits/s at {res}" if i == 0 else f"{rate:g} at {res}"
        for i, (res, rate) in enumerate(by_res)
    )
    return (
        f"Defaults: --duration = the input's length (rounded down, 3-30 s), --resolution "
        f"{DEFAULT_RESOLUTION} (%config GoEnhanceMagics.default_duration / default_resolution). "
        f"Cost of a new job (estimate): seconds x {rates}; VIP styles x{VIP_MULTIPLIER:g} "
        "(the simulator's rates; the API's prices are on its billing page; after a job the "
        "rate observed for that style is used). A cached result costs nothing; a duration "
        "longer than the input is refused before anything is sent."
    )


def _resolutions() -> tuple[str, ...]:
    from goenhance_nb._inputs import RESOLUTIONS

    return RESOLUTIONS


def _default_resolution() -> str:
    from goenhance_nb._inputs import DEFAULT_RESOLUTION

    return DEFAULT_RESOLUTION


def duration_error(prefix: str, name: str, value: int | None) -> UsageError | None:
    """The one-line error for a duration outside the API's limits (None when it is fine)."""
    from goenhance_nb._inputs import MAX_DURATION, MIN_DURATION

    if value is None or MIN_DURATION <= value <= MAX_DURATION:
        return None
    return UsageError(f"{prefix}: {name} must be {MIN_DURATION}-{MAX_DURATION}, got {value}")


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
    p.add_argument("--duration", "-d", type=int, default=None, help=_duration_help())
    resolutions = _resolutions()
    p.add_argument(
        "--resolution",
        "-r",
        default=None,
        choices=resolutions,
        help=f"{' or '.join(resolutions)} (default {_default_resolution()})",
    )
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


def _add_small_commands(sub: _Subparsers) -> None:
    """styles, credits, jobs, resume, cache, config, panel, login, mode."""
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
        description="list | info KEY | clear | remove KEY | verify KEY. clear and remove say "
        "what they would remove and remove it only with --yes. Files in goenhance_outputs/ are "
        "never deleted.",
    )
    ca.add_argument(
        "action", nargs="?", default="list", choices=("list", "info", "clear", "remove", "verify")
    )
    ca.add_argument("key", nargs="?", default=None, metavar="KEY", help="a cache key (prefix)")
    ca.add_argument(
        "--yes",
        "-y",
        action="store_true",
        help="really remove (clear/remove); without it they only say what they would remove",
    )
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


def _add_repro_commands(sub: _Subparsers) -> None:
    """verify, export, import."""
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


def _add_sweep_command(sub: _Subparsers) -> None:
    sw = sub.add_parser(
        "sweep",
        help="every input x style x grid value",
        description="Plan every INPUT x --style x --grid combination (cached, running, new, "
        "estimated credits), check the caps before anything is sent, run, show one grid.",
        epilog=cost_help(),
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
    sw.add_argument("--duration", "-d", type=int, default=None, help=_duration_help())
    sw.add_argument("--resolution", "-r", default=None, choices=_resolutions())
    sw.add_argument("--prompt", "-p", default=None)
    sw.add_argument("--max-credits", type=int, default=None, help="refuse above this estimate")
    sw.add_argument("--max-jobs", type=int, default=None, help="refuse above this many new jobs")
    sw.add_argument("--dry-run", action="store_true", help="show the plan only")


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
        epilog=cost_help(),
    )
    _add_run_options(run, input_optional=False)
    _add_small_commands(sub)
    _add_repro_commands(sub)
    _add_sweep_command(sub)
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
        epilog=cost_help(),
    )
    _add_run_options(p, input_optional=True)
    return p


# -- {var} / $var expansion --------------------------------------------------------------------
class _StrictFormatter(DollarFormatter):
    """IPython's ``DollarFormatter`` that remembers the field it is evaluating (for the error)."""

    field: str = ""

    def parse(self, fmt_string: str) -> Iterator[tuple[Any, Any, Any, Any]]:
        for item in super().parse(fmt_string):
            if item[1] is not None:
                self.field = item[1] if not item[2] else f"{item[1]}:{item[2]}"
            yield item


def _field_shown(text: str, field: str) -> str:
    """How the failing field was written: ``$name`` or ``{expr}``."""
    return f"${field}" if f"${field}" in text and f"{{{field}}}" not in text else f"{{{field}}}"


def expand_vars(text: str, namespace: Mapping[str, object], *, prog: str) -> str:
    """Expand ``{expr}`` and ``$name`` in ``text`` with ``namespace``, as IPython does for magic
    lines (``IPython.utils.text.DollarFormatter``: ``{expr}`` evaluates an expression, ``$name``
    a name or attribute, ``{{``/``}}`` are literal braces, ``$$`` a literal ``$``), but strictly.

    :raises UsageError: a name is not defined, or a field cannot be evaluated (IPython would
        leave the text as typed, and the braces would be sent and charged).
    """
    if "{" not in text and "}" not in text and "$" not in text:
        return text
    fmt = _StrictFormatter()
    escape = "write {{ and }} for literal braces, $$ for a literal $"
    try:
        return fmt.vformat(text, args=[], kwargs=dict(namespace))
    except NameError as exc:
        shown = _field_shown(text, fmt.field)
        raise UsageError(
            f"{prog}: name {exc.name or fmt.field!r} is not defined (in {brief(shown, 60, quote=False)}); nothing "
            f"was sent ({escape})"
        ) from None
    except ValueError as exc:  # unbalanced braces (str.format's own errors)
        raise UsageError(f"{prog}: {exc}; nothing was sent ({escape})") from None
    except Exception as exc:  # anything the expression raised, or a syntax error in it
        shown = _field_shown(text, fmt.field)
        why = brief(f"{type(exc).__name__}: {exc}", 80, quote=False)
        raise UsageError(
            f"{prog}: cannot expand {brief(shown, 60, quote=False)}: {why}; nothing was sent ({escape})"
        ) from None


# -- %goenhance lines -------------------------------------------------------------------------
def _split(prog: str, line: str) -> list[str]:
    try:
        return shlex.split(line, posix=True)
    except ValueError as exc:
        raise UsageError(f"{prog}: {exc}") from None


def _parse(parser: _Parser, prog: str, argv: list[str]) -> argparse.Namespace | None:
    """``parser.parse_args(argv)``; None when help was printed.

    :raises UsageError: a bad option; an unknown one names the subcommand's own help
        (``%goenhance run --help``), not the top-level one.
    """
    try:
        ns, extra = parser.parse_known_args(argv)
    except _HelpShown:
        return None
    except argparse.ArgumentError as exc:
        raise UsageError(f"{prog}: {exc}") from None
    if extra:
        command = vars(ns).get("command")  # set by the root parser's subcommands only
        where = f"{prog} {command}" if command else prog
        raise UsageError(f"{where}: unrecognized arguments: {' '.join(extra)} (see {where} --help)")
    return ns


def _run_args(ns: argparse.Namespace) -> RunArgs:
    # getattr on the argparse namespace: its attributes are RunArgs' fields
    return RunArgs(**{f.name: getattr(ns, f.name) for f in fields(RunArgs)})


def _args_run(ns: argparse.Namespace) -> Args:
    err = duration_error("%goenhance run", "--duration", ns.duration)
    if err is not None:
        raise err
    return _run_args(ns)


def _args_cache(ns: argparse.Namespace) -> Args:
    if ns.action in ("info", "remove", "verify") and not ns.key:
        raise UsageError(f"%goenhance cache {ns.action}: KEY is required")
    if ns.action in ("list", "clear") and ns.key:
        raise UsageError(f"%goenhance cache {ns.action}: takes no KEY")
    return CacheArgs(ns.action, ns.key, ns.yes)


def _args_sweep(ns: argparse.Namespace) -> Args:
    grid: list[tuple[str, tuple[str, ...]]] = []
    for spec in ns.grid:
        key, sep, values = spec.partition("=")
        if not sep or not key or not values:
            raise UsageError(f"%goenhance sweep: --grid wants KEY=V1,V2, got {brief(spec)}")
        grid.append((key.strip(), tuple(v.strip() for v in values.split(","))))
    return SweepArgs(
        tuple(ns.inputs),
        tuple(ns.style),
        tuple(grid),
        ns.duration,
        ns.resolution,
        ns.prompt,
        ns.max_credits,
        ns.max_jobs,
        ns.dry_run,
    )


def _args_path(ns: argparse.Namespace) -> Args:
    # only ``export`` has --inputs
    return PathArgs(ns.path, bool(getattr(ns, "inputs", False)))


#: Subcommand -> its frozen args from the namespace (the rest take no options: NoArgs).
_ARGS: dict[str, Callable[[argparse.Namespace], Args]] = {
    "run": _args_run,
    "resume": lambda ns: ResumeArgs(ns.id, ns.resubmit, ns.wait, ns.timeout),
    "cache": _args_cache,
    "login": lambda ns: LoginArgs(ns.save),
    "styles": lambda ns: StylesArgs(ns.refresh, ns.text),
    "help": lambda ns: HelpArgs(ns.topic),
    "mode": lambda ns: ModeArgs(ns.mode),
    "sweep": _args_sweep,
    "verify": _args_path,
    "export": _args_path,
    "import": _args_path,
}


def parse_line(line: str) -> Command | None:
    """Parse a ``%goenhance`` line into a :class:`Command`; None when help was printed.

    Raises :class:`UsageError` (one line) on a quoting error, an unknown subcommand or a bad
    option. No API call is made here. A line parsed before gives the same (frozen) Command
    again without parsing (a re-run cell); help is printed every time it is asked for.
    """
    try:
        return _parsed(line)
    except _HelpShown:
        return None


@functools.lru_cache(maxsize=128)
def _parsed(line: str) -> Command:
    """:func:`parse_line` of ``line``, remembered (errors and help are not: they raise).

    :raises _HelpShown: help was printed.
    """
    argv = _split("%goenhance", line)
    parser = _line_parser()
    if not argv:
        parser.print_help()
        raise _HelpShown
    ns = _parse(parser, "%goenhance", argv)
    if ns is None:
        raise _HelpShown
    name: str = ns.command
    make = _ARGS.get(name)
    return Command(name, make(ns) if make is not None else NoArgs())


def parse_cell_line(line: str) -> RunArgs | None:
    """Parse a ``%%goenhance`` first line (run options; a leading ``run`` is allowed); None when
    help was printed.

    :raises UsageError: a quoting error, a bad option, a duration outside the limits.
    """
    argv = _split("%%goenhance", line)
    if argv and argv[0] == "run":
        argv = argv[1:]
    ns = _parse(_cell_parser(), "%%goenhance", argv)
    if ns is None:
        return None
    args = _run_args(ns)
    err = duration_error("%%goenhance", "--duration", args.duration)
    if err is not None:
        raise err
    return args


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

#: A composed PyYAML node (PyYAML ships no type information).
YamlNode = Any

#: A value a cell body may give (after the checks in :func:`parse_cell_body`).
CellValue = str | int | float | bool

#: Most YAML nodes a cell body may expand to (aliases counted at every use): a real body has
#: a dozen; a "billion laughs" alias bomb has billions and is refused before it is built.
MAX_YAML_NODES = 1000


def parse_cell_body(body: str) -> dict[str, CellValue]:
    """Parse a ``%%goenhance`` body: YAML ``key: value`` lines (``yaml.safe_load``).

    Returns a dict with keys from :data:`CELL_KEYS`. ``prompt`` is always the literal text of the
    scalar (``prompt: yes`` stays ``"yes"``, ``prompt: 0012`` stays ``"0012"``). Raises
    :class:`UsageError` for invalid YAML, a body that is not a mapping, unknown keys or a value
    of the wrong type.
    """
    if not body.strip():
        return {}
    node, data = _load_yaml(body)
    if data is None:
        return {}
    mapping = _check_keys(data)
    out: dict[str, CellValue] = {}
    for key, value in mapping.items():
        if value is None:
            continue
        if key == "prompt":
            out[key] = _raw_scalar(node, "prompt", value)
        else:
            out[key] = _CELL_VALUE[key](key, value)
    _check_limits(out)
    return out


def _load_yaml(body: str) -> tuple[YamlNode, object]:
    """Compose ``body`` (aliases stay shared nodes: linear in the text), bound its expanded
    size, and only then build Python objects from the same node graph: ``(node, data)``.

    :raises UsageError: invalid YAML, too deep, too large, or a value Python cannot read.
    """
    import yaml

    loader = yaml.SafeLoader(body)
    try:
        try:
            node = loader.get_single_node()
            _check_yaml_size(node)
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        # getattr on PyYAML's error: only MarkedYAMLError has problem / problem_mark
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
    return node, data


def _check_keys(data: object) -> dict[str, object]:
    """``data`` as a mapping of :data:`CELL_KEYS`.

    :raises UsageError: ``data`` is not a mapping, or has keys outside :data:`CELL_KEYS`.
    """
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
    return data


def _bool_value(key: str, value: object) -> CellValue:
    if not isinstance(value, bool):
        raise UsageError(f"%%goenhance: {key} must be true or false, got {brief(value)}")
    return value


def _int_value(key: str, value: object) -> CellValue:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"%%goenhance: {key} must be an integer, got {brief(value)}")
    return value


def _timeout_value(key: str, value: object) -> CellValue:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise UsageError(f"%%goenhance: timeout must be a positive number, got {brief(value)}")
    return float(value)


def _text_value(key: str, value: object) -> CellValue:
    if isinstance(value, list | dict | bool):
        raise UsageError(f"%%goenhance: {key} must be a single value, got {brief(value)}")
    return str(value)


#: Body key -> its check and conversion (``prompt`` is read from the node: :func:`_raw_scalar`).
_CELL_VALUE: dict[str, Callable[[str, object], CellValue]] = {
    "input": _text_value,
    "style": _text_value,
    "resolution": _text_value,
    "duration": _int_value,
    "seed": _int_value,
    "timeout": _timeout_value,
    "wait": _bool_value,
    "force": _bool_value,
    "embed": _bool_value,
    "compare": _bool_value,
    "notify": _bool_value,
}


def _check_limits(out: Mapping[str, CellValue]) -> None:
    """:raises UsageError: a resolution or duration outside :mod:`goenhance_nb._inputs`' limits."""
    resolutions = _resolutions()
    if "resolution" in out and out["resolution"] not in resolutions:
        raise UsageError(
            f"%%goenhance: resolution must be one of {', '.join(resolutions)}, "
            f"got {brief(out['resolution'])}"
        )
    duration = out.get("duration")
    if isinstance(duration, int):
        err = duration_error("%%goenhance", "duration", duration)
        if err is not None:
            raise err


def _yaml_children(node: YamlNode) -> list[YamlNode]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_yaml_size(root: YamlNode) -> None:
    """Refuse a composed YAML document whose alias-expanded node count exceeds
    :data:`MAX_YAML_NODES`, or that refers to itself (a recursive alias).

    Work is linear in the number of distinct nodes: each node's expanded size is computed
    once (memoised, saturating at the limit).

    :raises UsageError: the body expands too far or is recursive.
    """
    if root is None:
        return
    recursive = UsageError("%%goenhance: the cell body refers to itself (a recursive alias)")
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # iterative post-order walk: (node, children visited?)
    stack: list[tuple[YamlNode, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        nid = id(node)
        children = _yaml_children(node)
        if expanded:
            active.discard(nid)
            sizes[nid] = min(MAX_YAML_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if nid in sizes:
            continue
        if nid in active:
            raise recursive
        active.add(nid)
        stack.append((node, True))
        for child in children:
            if id(child) in active:
                raise recursive
            if id(child) not in sizes:
                stack.append((child, False))
    if sizes[id(root)] > MAX_YAML_NODES:
        raise UsageError(
            f"%%goenhance: the cell body expands to more than {MAX_YAML_NODES} YAML values "
            "(aliases such as *name repeat what they point to); write the values out"
        )


def _raw_scalar(node: YamlNode, key: str, parsed: object) -> str:
    """The literal text of ``key``'s scalar value in a composed YAML mapping node."""
    import yaml

    if isinstance(parsed, str):
        return parsed
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            if knode.value == key:  # a collection key node holds a list: never equal
                if isinstance(vnode, yaml.ScalarNode):
                    return str(vnode.value)
                break
    raise UsageError(f"%%goenhance: {key} must be text, got {brief(parsed)}")


def merge_cell(line_args: RunArgs, body: Mapping[str, CellValue]) -> RunArgs:
    """Combine first-line options and body keys; a key given in both places is a UsageError."""
    defaults = RunArgs()
    for key in body:
        # getattr on the RunArgs dataclass: body keys are its field names (CELL_KEYS)
        if getattr(line_args, key) != getattr(defaults, key):
            raise UsageError(f"%%goenhance: {key} is given on the first line and in the body")
    changes: dict[str, Any] = dict(body)
    return replace(line_args, **changes)
