"""The :class:`GoEnhanceMagics` class: traits, the session it uses, and dispatch.

``%goenhance LINE`` is parsed by :func:`~goenhance_nb._magics._parsing.parse_line` and handed to
the handler :data:`~goenhance_nb._magics._handlers.HANDLERS` names; ``%%goenhance`` cells run
``run``. Warnings raised while a magic runs are collected by :class:`_Notices`. The extension
hooks register the magics and the Job formatter (a bound method: what it remembers lives on the
magics instance, not in a module global).
"""

from __future__ import annotations

import sys
import threading
import warnings
from collections import ChainMap
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError
from IPython.core.magic import (
    Magics,
    line_cell_magic,
    magics_class,
    needs_local_scope,
    no_var_expand,
)
from traitlets import Bool, Bunch, Float, Int, TraitError, Unicode, validate

from goenhance_nb._errors import GoEnhanceWarning, redact_text
from goenhance_nb._magics._cells import Presented, execution_count

# The handlers, the parser and the presentation (argparse, the display and output modules)
# are imported on the first %goenhance, not by %load_ext (bench P6: load_ext vs ipywidgets).

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from goenhance_nb._job import Job
    from goenhance_nb._magics._present import Presentation
    from goenhance_nb._session import Session

__all__ = [
    "GoEnhanceMagics",
    "SettingsBusy",
    "load_ipython_extension",
    "unload_ipython_extension",
]


# -- warnings as plain lines --------------------------------------------------------------------
_PACKAGE_DIR = str(Path(__file__).resolve().parent.parent)


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


class SettingsBusy(TraitError):
    """A settings trait change refused because jobs still run in the session (one line)."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


#: Traits that feed ``Settings``; changing one replaces the session (``Session.successor``).
_SETTINGS_TRAITS = ("poll_interval", "job_timeout", "output_dir", "wait", "shared_store")


def _session_for(config: Mapping[str, object]) -> Session:
    """The process-wide session; when traits set settings, its successor on those settings
    (same spend and budget; the panel and ``goenhance_nb.transform`` share it)."""
    from goenhance_nb import _session

    if not config:
        return _session.get_session()
    from goenhance_nb._settings import Settings

    return _session.replace_session(Settings.resolve(config=dict(config)))


def _replace_session(current: Session, config: Mapping[str, object]) -> Session:
    """The successor of ``current`` on the settings ``config`` gives (see ``Session.successor``),
    made the process-wide session."""
    from goenhance_nb import _session
    from goenhance_nb._settings import Settings

    return _session.replace_session(Settings.resolve(config=dict(config)), current=current)


@magics_class
class GoEnhanceMagics(Magics):
    """``%goenhance`` and ``%%goenhance``. Defaults are ``config=True`` traits.

    The traits ``poll_interval``, ``job_timeout``, ``output_dir``, ``wait`` and ``shared_store`` are passed to
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
    default_duration = Int(
        None,
        allow_none=True,
        config=True,
        help="Default --duration (seconds, 3-30); None: the input's length (rounded down).",
    )
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
    shared_store = Unicode(
        None,
        allow_none=True,
        config=True,
        help="fsspec URL of the team's shared result store (s3://bucket/prefix, a shared "
        "folder); None: GOENHANCE_SHARED_STORE or no shared store.",
    )
    notify = Bool(
        False,
        config=True,
        help="Show a browser notification when a watched job ends (like run --notify; needs "
        "anywidget). No effect in headless runs.",
    )

    def __init__(self, shell: InteractiveShell | None = None, **kwargs: Any) -> None:
        self._session: Session | None = None
        self._stale = False  # settings traits changed since the session was made
        self._notices: _Notices | None = None
        self._mode: str | None = None  # set by %goenhance mode
        self._lock = threading.RLock()
        self._presented = Presented()  # jobs the running cell's magic showed
        super().__init__(shell=shell, **kwargs)
        self.observe(self._settings_traits_changed, names=list(_SETTINGS_TRAITS))

    # -- session ------------------------------------------------------------------------------
    def settings_config(self) -> dict[str, object]:
        """The ``config`` mapping handed to ``Settings.resolve`` (never the key)."""
        out: dict[str, object] = {}
        for name in _SETTINGS_TRAITS:
            value = getattr(self, name)  # a traitlets trait, by name
            if value is not None:
                out[name] = Path(value) if name == "output_dir" else value
        return out

    @validate(*_SETTINGS_TRAITS)
    def _refuse_while_jobs_run(self, proposal: Bunch) -> object:
        """A settings trait may not change while jobs run in the session (their watch, widget
        and placeholder belong to it); the trait keeps its value.

        :raises SettingsBusy: jobs still run (``%config`` prints it as one line).
        """
        from goenhance_nb._magics._handlers import busy_message

        busy = busy_message(self._session)
        if busy is not None:
            raise SettingsBusy(f"GoEnhanceMagics.{proposal['trait'].name} not changed: {busy}")
        return proposal["value"]

    def _settings_traits_changed(self, change: Bunch) -> None:
        with self._lock:
            if self._session is None:
                return  # the first use builds the session from the traits
            self._stale = True
            self.session()  # replace it now, so the old one closes at once

    def session(self) -> Session:
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

    def current_session(self) -> Session | None:
        """The session in use, without making one (None before the first use)."""
        return self._session

    def set_session(self, session: Session) -> None:
        """Use ``session`` from now on (``login`` and tests)."""
        with self._lock:
            self._session = session
            self._stale = False

    def remember_mode(self, mode: str) -> None:
        """Keep ``mode`` (``%goenhance mode``) for sessions rebuilt after a settings change."""
        self._mode = mode

    # -- presenting jobs ----------------------------------------------------------------------
    def flush_notices(self) -> None:
        """Print the warnings collected so far in this magic call (no-op outside a call)."""
        if self._notices is not None:
            self._notices.flush()

    def present(self, job: Job, how: Presentation, session: Session) -> None:
        """Show ``job`` in the running cell (see :func:`present_job`) and remember it there."""
        from goenhance_nb._magics._present import present_job

        self._presented.add(job.key, execution_count(self.shell))
        present_job(job, how, session, self.shell)

    def display_job(self, job: Job) -> None:
        """IPython's display step for a ``Job`` (a cell's value, ``display(job)``).

        In the cell whose magic showed ``job`` nothing more: that one output is the job (the
        value still goes to ``_`` and ``Out``, and the kernel sends no empty ``Out[n]``).
        Elsewhere the job's bundle (:func:`job_bundle`): the video when done, else its status.
        """
        if self._presented.shown(job.key, execution_count(self.shell)):
            return
        from IPython.display import publish_display_data

        from goenhance_nb._magics._present import job_bundle

        data, metadata = job_bundle(job)
        publish_display_data(data, metadata=metadata)

    # -- entry point --------------------------------------------------------------------------
    @line_cell_magic
    @no_var_expand
    @needs_local_scope
    def goenhance(
        self, line: str, cell: str | None = None, local_ns: Mapping[str, object] | None = None
    ) -> object:
        """GoEnhance AI video-to-video. ``%goenhance help`` lists the subcommands.

        ``{expr}`` and ``$name`` in the line and the cell body are expanded here, strictly
        (:func:`expand_vars`): an undefined name is a one-line UsageError before anything runs.
        """
        if self._notices is not None:  # re-entered (a magic inside a magic): one collector
            return self._dispatch(line, cell, local_ns)
        with _Notices() as notices:
            self._notices = notices
            try:
                return self._dispatch(line, cell, local_ns)
            finally:
                self._notices = None

    def _namespace(self, local_ns: Mapping[str, object] | None) -> Mapping[str, object] | None:
        """What ``{expr}`` / ``$name`` see: the caller's locals, then the user's namespace (as
        IPython's ``var_expand``; a view, copied only when a line has something to expand);
        None without a shell (no expansion)."""
        if self.shell is None:
            return None
        user_ns: dict[str, object] = self.shell.user_ns
        if local_ns is None or local_ns is user_ns:  # a cell's top level: locals are globals
            return user_ns
        return ChainMap(dict(local_ns), user_ns)

    def _dispatch(
        self, line: str, cell: str | None, local_ns: Mapping[str, object] | None = None
    ) -> object:
        from goenhance_nb._magics._handlers import HANDLERS
        from goenhance_nb._magics._parsing import expand_vars, parse_line

        ns = self._namespace(local_ns)
        prog = "%goenhance" if cell is None else "%%goenhance"
        if ns is not None:
            line = expand_vars(line, ns, prog=prog)
        if cell is not None:
            return self._cell(line, cell, ns)
        cmd = parse_line(line)
        if cmd is None:
            return None
        return HANDLERS[cmd.name](self, cmd.args)

    def _cell(self, line: str, cell: str, ns: Mapping[str, object] | None) -> object:
        from goenhance_nb._magics._handlers import handle_run
        from goenhance_nb._magics._parsing import (
            expand_vars,
            merge_cell,
            parse_cell_body,
            parse_cell_line,
        )

        line_args = parse_cell_line(line)
        if line_args is None:
            return None
        body = cell
        if ns is not None:
            # line by line: a {field} never spans lines, and an error names its own line
            body = "\n".join(expand_vars(ln, ns, prog="%%goenhance") for ln in body.split("\n"))
        args = merge_cell(line_args, parse_cell_body(body))
        if not args.input:
            raise UsageError("%%goenhance: no input (give it on the first line or as 'input:')")
        return handle_run(self, args)


# -- extension hooks --------------------------------------------------------------------------
def _register_job_formatter(shell: InteractiveShell, magics: GoEnhanceMagics) -> None:
    if shell.display_formatter is None:
        return
    # IPython's display step (ipython_display_formatter), not a mime bundle: in the cell that
    # showed the job it publishes nothing, so no empty Out[n] follows the job's output. By
    # name: the engine (httpx, diskcache, ...) is imported only when a Job is first shown.
    shell.display_formatter.ipython_display_formatter.for_type_by_name(
        "goenhance_nb._job", "Job", magics.display_job
    )


def _unregister_job_formatter(shell: InteractiveShell) -> None:
    if shell.display_formatter is None:
        return
    fmt = shell.display_formatter.ipython_display_formatter
    fmt.pop("goenhance_nb._job.Job", None)
    engine = sys.modules.get("goenhance_nb._job")
    if engine is not None:
        fmt.pop(engine.Job, None)


def _other_configurables(shell: InteractiveShell) -> list[Any]:
    """The shell's configurables (``%config`` looks there) without our magics."""
    return [c for c in shell.configurables if not isinstance(c, GoEnhanceMagics)]


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register :class:`GoEnhanceMagics` on ``ipython`` (``%load_ext goenhance_nb``)."""
    magics = GoEnhanceMagics(shell=ipython)
    ipython.register_magics(magics)
    # %config GoEnhanceMagics.<trait> finds configurables here
    configurables: list[Any] = [*_other_configurables(ipython), magics]
    ipython.configurables = configurables
    _register_job_formatter(ipython, magics)


def unload_ipython_extension(ipython: InteractiveShell) -> None:
    """Remove the magics and the Job formatter (``%unload_ext goenhance_nb``)."""
    mm = ipython.magics_manager
    for kind in ("line", "cell"):
        mm.magics[kind].pop("goenhance", None)
    mm.registry.pop("GoEnhanceMagics", None)
    ipython.configurables = _other_configurables(ipython)
    _unregister_job_formatter(ipython)
