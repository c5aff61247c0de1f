"""The ``%goenhance`` subcommand handlers and the dispatch table :data:`HANDLERS`.

Each handler is ``handler(magics, args)``: it takes the session from ``magics.session()``, calls
it, and shows the outcome (a table, a line, a job). Expected failures are
:class:`~goenhance_nb._errors.GoEnhanceError` subclasses (one line in the cell); bad arguments
and refused commands are :class:`~IPython.core.error.UsageError`.
"""

from __future__ import annotations

import html
import io
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from goenhance_nb import _display, _frontend
from goenhance_nb._errors import GoEnhanceError
from goenhance_nb._lifecycle import LedgerState
from goenhance_nb._magics._parsing import (
    CELL_KEYS,
    CacheArgs,
    HelpArgs,
    LoginArgs,
    ModeArgs,
    NoArgs,
    PathArgs,
    ResumeArgs,
    RunArgs,
    StylesArgs,
    SweepArgs,
    build_parser,
    parse_line,
)
from goenhance_nb._magics._present import Presentation, display_obj
from goenhance_nb._magics._tables import (
    cache_table,
    config_rows,
    fmt_size,
    jobs_table,
    key_state,
    ledger_badge,
    magic_default_rows,
    styles_table,
    table,
)
from goenhance_nb._theme import SIMULATED_LABEL

if TYPE_CHECKING:
    from goenhance_nb._cache import ResultRecord
    from goenhance_nb._job import Job
    from goenhance_nb._ledger import LedgerEntry
    from goenhance_nb._magics._core import GoEnhanceMagics
    from goenhance_nb._session import Session
    from goenhance_nb._sweep import Sweep

__all__ = ["HANDLERS", "Handler", "busy_message", "handle_run"]

#: ``handler(magics, args)``; ``args`` is the subcommand's own frozen args class.
Handler = Callable[["GoEnhanceMagics", Any], object]


def busy_message(session: Session | None) -> str | None:
    """Why ``session`` may not be replaced now (jobs still running), or None."""
    if session is None:
        return None
    running = session.running_jobs()
    if not running:
        return None
    ids = ", ".join((j.id or j.key)[:8] for j in running[:3])
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


def _local_source(text: str) -> Path | None:
    if "://" in text:
        return None
    p = Path(text).expanduser()
    return p if p.is_file() else None


def _backend_label(session: Session) -> str:
    backend = session.backend
    return "SIMULATED" if backend == "simulated" else backend


def _show(html_text: str, plain: str, metadata: Mapping[str, object] | None = None) -> None:
    display_obj(_display.ResultBundle({"text/html": html_text, "text/plain": plain}, metadata))


# -- run / resume -----------------------------------------------------------------------------
def handle_run(m: GoEnhanceMagics, args: RunArgs) -> object:
    """Validate and submit (or take from the cache); returns the Job handle (DECISIONS 4).

    Interactive: returns at once after showing the live status widget and a placeholder output
    that the finished video replaces. Headless / ``--wait``: blocks, then shows the video as a
    static output. Bad input raises here (the cell fails) in both modes.
    """
    from goenhance_nb._inputs import RESOLUTIONS

    style = args.style if args.style is not None else m.default_style
    if not style:
        raise UsageError("%goenhance run: --style is required (see %goenhance styles)")
    if args.input is None:
        raise UsageError("%goenhance run: INPUT is required")
    duration = args.duration if args.duration is not None else m.default_duration
    resolution = args.resolution if args.resolution is not None else m.default_resolution
    if resolution not in RESOLUTIONS:
        raise UsageError(f"%goenhance run: resolution must be one of {', '.join(RESOLUTIONS)}")
    how = Presentation(
        wait=_should_wait(m, args.wait),
        frontend=_frontend.frontend(m.shell),
        timeout=args.timeout,
        embed=args.embed if args.embed is not None else m.embed,
        compare=args.compare,
        source=_local_source(args.input),
        notify=args.notify if args.notify is not None else bool(m.notify),
    )
    session = m.session()
    job = session.transform(
        args.input,
        style,
        prompt=args.prompt,
        duration=duration,
        resolution=resolution,
        force=args.force,
        seed=-1 if args.seed is None else args.seed,
        timeout=args.timeout,
    )
    m.flush_notices()  # input warnings: one plain line before the status
    return _present_or_stop(m, job, how, session)


def _present_or_stop(m: GoEnhanceMagics, job: Job, how: Presentation, session: Session) -> object:
    """Show ``job``; return it. An interrupt while a ``--wait`` run waits (the kernel's
    interrupt button, Ctrl-C) ends the cell quietly with one line, the resume hint: the job
    keeps going and stays resumable, and a traceback would only repeat that. Returns None then
    (the cell was interrupted: nothing to bind)."""
    try:
        m.present(job, how, session)
    except KeyboardInterrupt as exc:
        if not how.wait or job.done():
            raise
        if not _hint_shown(exc):
            print(
                "Stopped waiting; the job keeps going. Resume with %goenhance resume "
                f"{job.id or job.key}",
                file=sys.stderr,
            )
        return None
    return job


def _hint_shown(exc: KeyboardInterrupt) -> bool:
    """Whether the interrupt came while the presentation waited in ``Job.result`` (it printed
    the resume hint then), rather than while it built the status display."""
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "result" and str(frame.f_globals.get("__name__", "")).startswith(
            "goenhance_nb."
        ):
            return True
        tb = tb.tb_next
    return False


def _unfinished(entry: LedgerEntry) -> bool:
    """Not done or failed: resumable, or an orphan (``--resubmit``), or stopped watching.

    (``LedgerEntry.resumable`` alone would leave out the orphans this list offers to resend.)
    """
    try:
        return not LedgerState(entry.state).terminal
    except ValueError:  # a state this version does not know: list it
        return True


def _list_unfinished(session: Session) -> None:
    entries = [e for e in session.ledger_entries() if _unfinished(e)]
    if not entries:
        print("No unfinished jobs in the ledger.")
        return
    for e in entries:
        key = e.key[:12]
        if e.is_orphan:
            hint = f"never got a job id; %goenhance resume {key} --resubmit (may charge twice)"
        else:
            hint = f"%goenhance resume {e.job_id}"
        print(f"{key}  {ledger_badge(e.state):<16} {e.style_label or ''}  {hint}")


def handle_resume(m: GoEnhanceMagics, args: ResumeArgs) -> object:
    """Resume a job by id or key and show it like ``run``; no ID lists the resumable jobs."""
    session = m.session()
    if args.id is None:
        _list_unfinished(session)
        return None
    job = session.resume(args.id, resubmit=args.resubmit, timeout=args.timeout)
    m.flush_notices()
    how = Presentation(
        wait=_should_wait(m, args.wait),
        frontend=_frontend.frontend(m.shell),
        timeout=args.timeout,
        embed=m.embed,
        notify=bool(m.notify),
    )
    return _present_or_stop(m, job, how, session)


# -- tables -----------------------------------------------------------------------------------
def handle_styles(m: GoEnhanceMagics, args: StylesArgs) -> None:
    """Show the model list as an HTML gallery table (thumbnails) with a text fallback."""
    session = m.session()
    styles = session.styles(refresh=args.refresh)
    html_t, text = styles_table(styles)
    label = _backend_label(session)
    head = f"{len(styles)} styles ({label})"
    if args.text:
        print(f"{head}\n{text}")
        return
    sim = SIMULATED_LABEL if label == "SIMULATED" else f" ({html.escape(label)})"
    _show(
        f"<div class='goenhance-styles-list'><b>{len(styles)} styles</b>{sim}{html_t}</div>",
        f"{head}\n{text}",
    )


def _session_spend(session: Session) -> str:
    return str(session.spend())  # no HTTP; says what is possibly charged or may be refunded


def handle_credits(m: GoEnhanceMagics, args: NoArgs) -> None:
    """Show the credit balance (one API call) and this session's spend."""
    session = m.session()
    c = session.credits()
    spend = _session_spend(session)
    label = _backend_label(session)
    parts = [f"Credits: {c.count}"]
    if c.queue_limit is not None:
        parts.append(f"queue limit {c.queue_limit}")
    parts.append(f"session spend {spend}")
    text = " · ".join(parts) + f" ({label})"
    sim = SIMULATED_LABEL if label == "SIMULATED" else ""
    _show(f"<div class='goenhance-credits-line'>{html.escape(' · '.join(parts))}{sim}</div>", text)


def handle_jobs(m: GoEnhanceMagics, args: NoArgs) -> None:
    """Show the job ledger as a table (newest first)."""
    session = m.session()
    html_t, text, n = jobs_table(session.ledger_entries())
    head = f"{n} jobs in the ledger ({_backend_label(session)})"
    _show(f"<div><b>{html.escape(head)}</b>{html_t}</div>", f"{head}\n{text}")


def handle_cache(m: GoEnhanceMagics, args: CacheArgs) -> None:
    """``list`` / ``info KEY`` / ``clear`` / ``remove KEY`` / ``verify KEY`` on the result cache.

    KEY may be a unique key prefix or a job id. ``clear`` and ``remove`` say what they would
    remove (results, bytes) and remove it only with ``--yes`` (headless runs too); they delete
    only the store's files, never the notebook's files in ``goenhance_outputs/`` (DECISIONS 13).
    :raises CacheError: unknown or ambiguous KEY, unreadable index.
    """
    session = m.session()
    if args.action == "list":
        html_t, text, head = cache_table(session.cached_results())
        _show(f"<div><b>{html.escape(head)}</b>{html_t}</div>", f"{head}\n{text}")
        return
    if args.action == "clear":
        _cache_clear(session, yes=args.yes)
        return
    rec = session.cached_result(args.key or "")
    if args.action == "info":
        data = rec.to_json()
        width = max(len(k) for k in data)
        print("\n".join(f"{k.ljust(width)}  {v}" for k, v in data.items()))
    elif args.action == "remove":
        _cache_remove(session, rec, yes=args.yes)
    else:
        ok = session.verify_cached(rec.key)
        print(
            f"{rec.key[:12]}: {'ok (size and content hash match)' if ok else 'DAMAGED or missing'}"
        )


_KEPT = "files in goenhance_outputs/ are kept"


def _cache_clear(session: Session, *, yes: bool) -> None:
    """``cache clear``: say what it would remove; remove it only when ``yes``."""
    records, where = session.cached_results(), session.cache_dir
    what = f"{len(records)} cached result(s) ({_bytes_of(records)})"
    if not yes:
        print(
            f"Would remove {what} from the cache in {where}; nothing removed. "
            f"Run %goenhance cache clear --yes to remove them ({_KEPT})."
        )
        return
    n = session.clear_cache()
    print(f"Cache cleared: {n} result(s) removed ({_bytes_of(records)}). {_KEPT.capitalize()}.")


def _cache_remove(session: Session, rec: ResultRecord, *, yes: bool) -> None:
    """``cache remove KEY``: say what it would remove; remove it only when ``yes``."""
    what = f"{rec.key[:12]} ({rec.style_label}, {_bytes_of([rec])})"
    if not yes:
        print(
            f"Would remove {what} from the cache; nothing removed. "
            f"Run %goenhance cache remove {rec.key[:12]} --yes to remove it ({_KEPT})."
        )
        return
    session.remove_cached(rec.key)
    print(f"Removed {what} from the cache. {_KEPT.capitalize()}.")


def _bytes_of(records: list[ResultRecord]) -> str:
    """The bytes the stored files of ``records`` take (a file shared by records counted once)."""
    by_sha = {r.sha: r.size for r in records}
    return fmt_size(sum(by_sha.values())) or "0 KiB"


def handle_config(m: GoEnhanceMagics, args: NoArgs) -> None:
    """Show the effective settings and magic defaults; the key only as set / not set. A value
    left unset says what it means ("not set", the default in force), never a blank."""
    session = m.session()
    s = session.settings
    rows: list[list[object]] = [
        ["api_key", key_state(s)],
        ["backend", session.backend],
        ["mode", session.mode],
        ["lockfile", session.lockfile_path],
        *config_rows(s),
        *magic_default_rows(
            default_style=m.default_style,
            default_duration=m.default_duration,
            default_resolution=m.default_resolution,
            embed=m.embed,
            wait=m.wait,
            notify=m.notify,
        ),
        ["frontend", _frontend.frontend(m.shell)],
        ["headless", _frontend.is_headless(m.shell)],
    ]
    html_t, text = table(["setting", "value"], rows, klass="goenhance-config")
    _show(f"<div>{html_t}</div>", text)


# -- modes and bundles ------------------------------------------------------------------------
_MODE_NOTES = {
    "live": "no lockfile writes",
    "record": "results are recorded in {where}",
    "replay": "results only from the cache or an imported bundle (a miss fails the cell)",
    "offline": "no network at all; model list and results from the cache",
}


def handle_mode(m: GoEnhanceMagics, args: ModeArgs) -> None:
    """Show the mode in force, or switch this kernel's session to another one.

    :raises ConfigError: offline with no backend known without a network.
    """
    session = m.session()
    if args.mode is not None:
        session.set_mode(args.mode)
        m.remember_mode(args.mode)
    extra = _MODE_NOTES[session.mode].format(where=session.lockfile_path)
    print(f"goenhance mode: {session.mode} ({extra})")


def handle_verify(m: GoEnhanceMagics, args: PathArgs) -> None:
    """Re-hash the lockfile's results; print the report; drift fails the cell (UsageError).

    :raises ConfigError: no lockfile.
    """
    from goenhance_nb._repro import verify

    session = m.session()
    session.settle_records()  # a run's lockfile entry is written just after it ends
    target = args.path if args.path is not None else session.lockfile.path
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


def _sweep_grid(grid: tuple[tuple[str, tuple[str, ...]], ...]) -> dict[str, list[int] | list[str]]:
    """``--grid`` values; duration and seed as integers. :raises UsageError: not integers."""
    out: dict[str, list[int] | list[str]] = {}
    for key, values in grid:
        if key in ("duration", "seed"):
            try:
                out[key] = [int(v) for v in values]
            except ValueError:
                raise UsageError(f"%goenhance sweep: --grid {key} wants integers") from None
        else:
            out[key] = list(values)
    return out


def handle_sweep(m: GoEnhanceMagics, args: SweepArgs) -> Sweep:
    """Plan, check the caps, run (unless ``--dry-run``: then print the plan), show the progress
    (a live bar, then one summary line) and the grid.

    :raises BudgetExceeded: a cap would be passed (nothing sent). :raises InputError: bad
        input, style or grid key (nothing sent).
    """
    from goenhance_nb._sweep import sweep

    result = sweep(
        list(args.inputs),
        styles=list(args.styles),
        grid=_sweep_grid(args.grid),
        max_credits=args.max_credits,
        max_jobs=args.max_jobs,
        dry_run=args.dry_run,
        session=m.session(),
        duration=args.duration if args.duration is not None else m.default_duration,
        resolution=args.resolution or m.default_resolution,
        prompt=args.prompt,
    )
    if args.dry_run:
        print(result)
    else:  # sweep() showed its progress and summary line
        bundle = result.grid()
        _show(str(bundle["text/html"]), str(bundle["text/plain"]), bundle.metadata)
    return result


# -- panel, login, help -----------------------------------------------------------------------
def handle_panel(m: GoEnhanceMagics, args: NoArgs) -> object:
    """Return the panel widget (displayed as the cell's result)."""
    from goenhance_nb._panel import panel

    return panel(session=m.session())


def _read_key(m: GoEnhanceMagics) -> str:
    """Ask for the key with getpass. :raises UsageError: nobody can type, cancelled, empty."""
    import getpass

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
    return key


def handle_login(m: GoEnhanceMagics, args: LoginArgs) -> None:
    """Ask for the key with getpass, keep it in memory (a new session); ``--save`` writes it.

    The new session continues the current one (same spend and budget; the old one is closed).
    Raises UsageError where nobody can type (headless runs) and while jobs still run in the
    session (before asking). The key is never printed.
    """
    busy = busy_message(m.current_session())
    if busy is not None:
        raise UsageError(f"%goenhance login: {busy}")
    key = _read_key(m)
    from goenhance_nb import _session
    from goenhance_nb._settings import SecretKey, Settings

    settings = Settings.resolve(config=m.settings_config()).with_(api_key=SecretKey(key))
    try:
        session = _session.replace_session(settings, current=m.current_session())
    except GoEnhanceError as exc:
        raise UsageError(f"%goenhance login: {exc}") from None
    m.set_session(session)
    msg = f"Key kept in memory for this kernel ({_backend_label(session)})."
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


#: Subcommand -> handler (STYLE practice 14: parse, then dispatch).
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
