"""``%goenhance`` / ``%%goenhance``: parse with shlex + argparse, then dispatch to a handler.

``%load_ext goenhance_nb`` calls :func:`load_ipython_extension`, which registers
:class:`GoEnhanceMagics`. Subcommands (each has ``--help``)::

    run INPUT --style S [--prompt P --duration N --resolution R --seed N --wait/--no-wait
                         --timeout T --force --embed/--no-embed --compare --notify/--no-notify]
    styles | credits | jobs | config | panel | help [SUBCOMMAND]
    resume [ID] [--resubmit]
    cache [list | info KEY | clear | remove KEY | verify KEY] [--yes]
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

The package: ``_parsing`` (shlex + argparse -> frozen args; cell bodies), ``_present`` (how a
job is shown: final output, live widget + placeholder, terminal lines; the Job formatter),
``_tables`` (pure table builders), ``_handlers`` (one handler per subcommand and the dispatch
table), ``_cells`` (what the magics remember between cells) and ``_core`` (the
:class:`GoEnhanceMagics` class and the extension hooks). ``%load_ext`` imports ``_core`` and
``_cells`` only; the rest comes with the first ``%goenhance``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from goenhance_nb._magics._core import (
    GoEnhanceMagics,
    SettingsBusy,
    load_ipython_extension,
    unload_ipython_extension,
)

if TYPE_CHECKING:
    from goenhance_nb._magics._parsing import (
        CELL_KEYS,
        MAX_YAML_NODES,
        Command,
        RunArgs,
        build_parser,
        merge_cell,
        parse_cell_body,
        parse_line,
    )

_FROM_PARSING = {
    "CELL_KEYS",
    "MAX_YAML_NODES",
    "Command",
    "RunArgs",
    "build_parser",
    "merge_cell",
    "parse_cell_body",
    "parse_line",
}


def __getattr__(name: str) -> Any:
    """The parser's names, imported when first asked for (``%load_ext`` does not need them)."""
    if name in _FROM_PARSING:
        from goenhance_nb._magics import _parsing

        return vars(_parsing)[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CELL_KEYS",
    "MAX_YAML_NODES",
    "Command",
    "GoEnhanceMagics",
    "RunArgs",
    "SettingsBusy",
    "build_parser",
    "load_ipython_extension",
    "merge_cell",
    "parse_cell_body",
    "parse_line",
    "unload_ipython_extension",
]
