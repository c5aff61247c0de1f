"""The tables the magics show: styles, jobs (the ledger), the result cache and the settings.

Pure: each builder takes typed records and returns ``(html, text)`` (every cell escaped, unless
it is a :class:`Raw` cell that carries its own plain text); no I/O, no session, no display.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from goenhance_nb._cache import ResultRecord
    from goenhance_nb._ledger import LedgerEntry
    from goenhance_nb._records import Style
    from goenhance_nb._settings import Settings

__all__ = [
    "CONFIG_FIELDS",
    "Raw",
    "cache_table",
    "config_rows",
    "fmt_size",
    "fmt_time",
    "jobs_table",
    "ledger_badge",
    "magic_default_rows",
    "styles_table",
    "table",
]

#: A table cell: shown with ``str()`` (escaped in HTML) or a :class:`Raw` HTML cell.
Cell = object


class Raw(str):
    """A table cell that is already HTML (its plain text is given separately)."""

    plain: str

    def __new__(cls, html_text: str, plain: str) -> Raw:
        obj = super().__new__(cls, html_text)
        obj.plain = plain
        return obj


def _plain(c: Cell) -> str:
    return c.plain if isinstance(c, Raw) else str(c)


def table(headers: Sequence[str], rows: Sequence[Sequence[Cell]], *, klass: str) -> tuple[str, str]:
    """(html, text) of a simple table; every cell escaped."""
    head = "".join(f"<th style='text-align:left'>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{c if isinstance(c, Raw) else html.escape(str(c))}</td>" for c in row)
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


def fmt_time(value: float | None) -> str:
    """A unix time as local ``YYYY-mm-dd HH:MM:SS``; "" for None; other values as text."""
    if isinstance(value, int | float) and value > 0:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return "" if value is None else str(value)


def fmt_size(n: float | None) -> str:
    """Bytes as ``1.5 MiB`` or ``12 KiB``; "" for None."""
    if not isinstance(n, int | float):
        return ""
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.0f} KiB"


def _thumbnail(preview: str | None) -> Raw:
    if preview and "?" not in preview and preview.startswith(("http://", "https://")):
        return Raw(
            f"<img src='{html.escape(preview, quote=True)}' alt='' loading='lazy' "
            f"style='height:48px;border-radius:3px'>",
            "",
        )
    return Raw("", "")


def styles_table(styles: Iterable[Style]) -> tuple[str, str]:
    """The model list: thumbnail, id, label, category, version, VIP (``yes``: charged at the
    VIP rate; blank otherwise)."""
    rows: list[list[Cell]] = [
        [_thumbnail(s.preview_url), s.id, s.label, s.category, s.version, _vip(s.is_vip)]
        for s in styles
    ]
    return table(["", "id", "label", "category", "version", "VIP"], rows, klass="goenhance-styles")


def _vip(is_vip: bool) -> str:
    return "yes" if is_vip else ""


def ledger_badge(state: str) -> str:
    """The word the status widget's badge shows for a ledger ``state`` (``watch_cancelled`` ->
    ``not watching``); a state this version does not know is shown as stored."""
    from goenhance_nb._lifecycle import LedgerState, badge_for

    try:
        return badge_for(state=LedgerState(state)).value
    except ValueError:
        return state


_JOB_HEADERS = ("job id", "state", "raw status", "style", "cost", "created", "key")


def _short(value: str | None) -> str:
    return value[:12] if value else ""


def jobs_table(entries: Iterable[LedgerEntry]) -> tuple[str, str, int]:
    """The ledger, newest first: ``(html, text, number of rows)``."""
    ordered = sorted(entries, key=lambda e: e.created or 0, reverse=True)
    rows: list[list[Cell]] = [
        [
            _short(e.job_id),
            ledger_badge(e.state),
            e.raw_status or ("no job id yet" if e.is_orphan else ""),
            e.style_label or "",
            "" if e.cost is None else e.cost,
            fmt_time(e.created),
            _short(e.key),
        ]
        for e in ordered
    ]
    html_t, text = table(_JOB_HEADERS, rows, klass="goenhance-jobs-table")
    return html_t, text, len(rows)


def cache_table(records: Sequence[ResultRecord]) -> tuple[str, str, str]:
    """The result cache: ``(html, text, heading)``."""
    rows: list[list[Cell]] = [
        [
            r.key[:12],
            r.style_label,
            (r.params or {}).get("duration", ""),
            (r.params or {}).get("resolution", ""),
            r.backend,
            fmt_size(r.size),
            fmt_time(r.created),
        ]
        for r in records
    ]
    html_t, text = table(
        ["key", "style", "duration", "resolution", "backend", "size", "created"],
        rows,
        klass="goenhance-cache-table",
    )
    total = fmt_size(sum(r.size for r in records)) or "0 KiB"
    return html_t, text, f"{len(rows)} cached results ({total})"


#: The settings ``%goenhance config`` shows, in order (never the key itself).
CONFIG_FIELDS = (
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


def key_state(settings: Settings) -> str:
    """Whether a key is set and where it came from (never the key)."""
    if settings.api_key:
        return f"set (from {settings.key_source})" if settings.key_source else "set"
    return "not set (embedded simulator)" if settings.base_url is None else "not set"


#: What an unset (None) setting or magic default means, shown instead of a blank.
UNSET_MEANS: dict[str, str] = {
    "output_dir": "goenhance_outputs/ beside the notebook",
    "budget": "no budget",
    "rate_limit": "5/s to a remote API, none on loopback",
    "wait": "only in headless runs",
    "default_style": "not set (run needs --style)",
    "default_duration": "the input's length (rounded down, 3-30 s)",
    "embed": "per frontend",
}


def _shown(name: str, value: object) -> Cell:
    if value is None or value == "":
        return UNSET_MEANS.get(name, "not set")
    return value


def config_rows(settings: Settings) -> list[list[Cell]]:
    """One ``[name, value]`` row per :data:`CONFIG_FIELDS` entry (base URLs redacted; an unset
    value says what it means, :data:`UNSET_MEANS`)."""
    from goenhance_nb._errors import redact_url

    rows: list[list[Cell]] = []
    for name in CONFIG_FIELDS:
        value = getattr(settings, name)  # a Settings dataclass field, by name
        if name == "base_url":
            value = redact_url(value) if value else "(embedded simulator)"
        rows.append([name, _shown(name, value)])
    return rows


def magic_default_rows(**defaults: object) -> list[list[Cell]]:
    """``[GoEnhanceMagics.<name>, value]`` rows for the magics' run defaults (unset values say
    what they mean, :data:`UNSET_MEANS`)."""
    return [[f"GoEnhanceMagics.{name}", _shown(name, v)] for name, v in defaults.items()]
