"""BrowserNotifier: an opt-in desktop notification when a job ends (anywidget, DECISIONS 23).

A small "Notify me when done" button asks for the browser's Notification permission (the
request needs a user gesture, so it is made on click); once the browser answered, the button
goes and a line says what will happen ("a browser notification will show when the job ends",
or that notifications are blocked), never the raw permission name; the raw value is the
``data-permission`` attribute of ``goenhance-notify-permission``. :meth:`notify` sends a
*custom message* (never a synced trait), on which the page calls ``new Notification(title,
{body})`` when the permission is ``"granted"``. So no notification text lands in the widget
state saved into the ``.ipynb``; nothing about the API key, URLs or settings goes in at all.

anywidget is optional (``pip install goenhance-nb[notify]``): :func:`make_notifier` returns None
without it, and the status widget's toast is the only notice (the static fallback). The status
widget itself stays core ipywidgets.
"""

from __future__ import annotations

import contextlib
import functools
from typing import TYPE_CHECKING, Any

from goenhance_nb._display import failure_text
from goenhance_nb._errors import redact_text
from goenhance_nb._lifecycle import EventKind
from goenhance_nb._outputs import output_name

if TYPE_CHECKING:
    from goenhance_nb._cache import ResultRecord

__all__ = ["MESSAGE_TYPE", "job_notification", "make_notifier", "notifier_class"]

#: ``type`` of the custom message the page turns into a notification
MESSAGE_TYPE = "goenhance-notify"

_MAX_BODY = 200

# The page side. `initialize` runs once per model (not once per view), so a notifier shown in
# two places still notifies once. No notification text is ever stored in the model.
_ESM = """
const MESSAGE_TYPE = "goenhance-notify";

function supported() {
  return typeof window !== "undefined" && "Notification" in window;
}

function permission() {
  return supported() ? window.Notification.permission : "unsupported";
}

function initialize({ model }) {
  const onMessage = (msg) => {
    if (!msg || msg.type !== MESSAGE_TYPE || !supported()) return;
    if (window.Notification.permission !== "granted") return;
    try {
      new window.Notification(String(msg.title || ""), { body: String(msg.body || "") });
    } catch (err) {
      console.warn("goenhance_nb: notification failed", err);
    }
  };
  model.on("msg:custom", onMessage);
  return () => model.off("msg:custom", onMessage);
}

function render({ model, el }) {
  const button = document.createElement("button");
  button.className = "goenhance-notify-button jupyter-button";
  button.textContent = "Notify me when done";
  button.title = "Ask the browser to show a notification when this job ends";
  const state = document.createElement("span");
  state.className = "goenhance-notify-permission";
  state.style.cssText = "margin-left:6px;font-size:12px;color:#616161;color:var(--jp-ui-font-color2, #616161)";
  // say what the button does and what will happen, never the raw permission name
  const WORDS = {
    default: "",
    granted: "a browser notification will show when the job ends",
    denied: "notifications are blocked for this page (browser site settings)",
    unsupported: "browser notifications are not available here",
  };
  const show = () => {
    const p = permission();
    state.textContent = p in WORDS ? WORDS[p] : "";
    state.dataset.permission = p;
    button.style.display = p === "default" ? "" : "none";
  };
  button.addEventListener("click", async () => {
    if (!supported()) return;
    try {
      await window.Notification.requestPermission();
    } catch (err) {
      console.warn("goenhance_nb: permission request failed", err);
    }
    show();
  });
  el.append(button, state);
  show();
}

export default { initialize, render };
"""


def notifier_class() -> type[Any]:
    """The :class:`BrowserNotifier` class; raises ImportError when anywidget is absent."""
    import anywidget  # raises ImportError: the caller falls back to the toast

    return _notifier_class(anywidget.AnyWidget)


@functools.cache
def _notifier_class(base: type[Any]) -> type[Any]:
    """The notifier class on ``base`` (made once per base class)."""

    class BrowserNotifier(base):
        """A "Notify me" button; :meth:`notify` shows a browser notification if allowed."""

        __qualname__ = "BrowserNotifier"
        _esm = _ESM

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.add_class("goenhance-notify")

        def notify(self, title: str, body: str = "") -> None:
            """Ask the page to show a notification (a custom message; never raises)."""
            with contextlib.suppress(Exception):
                self.send({"type": MESSAGE_TYPE, "title": str(title), "body": _one_line(body)})

    return BrowserNotifier


def make_notifier() -> Any | None:
    """A new :class:`BrowserNotifier`, or None when anywidget is not importable (toast only)."""
    try:
        cls = notifier_class()
    except ImportError:
        return None
    return cls()


def job_notification(
    kind: EventKind | str,
    *,
    result: ResultRecord | None = None,
    error: BaseException | str | None = None,
) -> tuple[str, str] | None:
    """``(title, body)`` for a job's terminal event, or None for any other event.

    ``done``/``cached``: ``("GoEnhance: ready", "<style> · <output file name>")``;
    ``failed``/``timed_out``: ``("GoEnhance: failed", "<one-line error>")`` (redacted;
    :func:`goenhance_nb._display.failure_text`, the service's reason when it gave one). A
    ``kind`` that is not an event kind gives None.
    """
    try:
        kind = EventKind(kind)
    except ValueError:
        return None
    if kind.has_result and result is not None:
        style = result.style_label or (str(result.model) if result.model else "")
        name = output_name(result.style_label, result.key)
        return "GoEnhance: ready", " · ".join(p for p in (style, name) if p)
    if kind.is_error:
        if isinstance(error, BaseException):
            text = failure_text(error)
        else:
            text = str(error or f"job {kind.value.replace('_', ' ')}")
        return "GoEnhance: failed", _one_line(text)
    return None


def _one_line(text: Any) -> str:
    line = " ".join(redact_text(str(text or "")).split())
    return line if len(line) <= _MAX_BODY else line[: _MAX_BODY - 1] + "…"
