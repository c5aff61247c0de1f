"""The sync face: ``run_sync(coro)`` and a small blocking ``Client``.

``run_sync`` drives a coroutine to completion from synchronous code, in one of three cases:

1. No event loop runs in this thread (a script, a test, a worker thread): run it on a
   private loop (one per thread, reused, like ``asyncio.run`` without the set-up cost).
2. A loop runs in this thread, but it is not the engine loop (e.g. a notebook cell on the
   kernel's loop): hand the coroutine to the engine loop's thread (or, if no engine is
   registered, a short-lived helper thread) and block on its result.
3. This thread *is* the engine loop's thread (a re-entrant call from an engine callback):
   apply ``nest_asyncio`` to that loop, lazily and once, then ``run_until_complete``. This is
   the only use of nest-asyncio in the package.

The engine registers its loop with :func:`register_engine_loop`, so this module never imports
the engine.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from goenhance_nb._client import AsyncClient
from goenhance_nb._errors import ConfigError, redact_url
from goenhance_nb._records import Credits, JobDetail, Style
from goenhance_nb._settings import Settings

__all__ = ["Client", "register_engine_loop", "run_reentrant", "run_sync"]

T = TypeVar("T")

_engine_loop: asyncio.AbstractEventLoop | None = None
_engine_lock = threading.Lock()
_nested: set[int] = set()  # id() of loops nest_asyncio was applied to
_local = threading.local()


def register_engine_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """Tell ``run_sync`` which loop belongs to the engine thread (``None`` to unregister)."""
    global _engine_loop
    with _engine_lock:
        _engine_loop = loop


def engine_loop() -> asyncio.AbstractEventLoop | None:
    """The registered engine loop, if it is still usable."""
    loop = _engine_loop
    if loop is None or loop.is_closed():
        return None
    return loop


def _private_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def _run_in_helper_thread(coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="goenhance-sync") as pool:
        return pool.submit(asyncio.run, coro).result(timeout)


def run_reentrant(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Case 3: drive ``coro`` on ``loop`` from inside one of its own callbacks.

    nest_asyncio patches the loop class; the ``_run_once`` frame that is running right now is
    still the unpatched original, which will pop as many ready handles as it counted before
    calling us. The nested run may consume some of those, so the ready queue is padded with
    cancelled no-op handles afterwards (the original skips cancelled handles) — otherwise the
    engine loop dies with ``IndexError: pop from an empty deque``.
    """
    if id(loop) not in _nested:
        import nest_asyncio  # lazily: only the re-entrant case needs it

        nest_asyncio.apply(loop)
        _nested.add(id(loop))
    ready = getattr(loop, "_ready", None)
    owed = len(ready) if ready is not None else 0
    try:
        return loop.run_until_complete(coro)
    finally:
        if ready is not None:
            while len(ready) < owed:
                filler = asyncio.Handle(_noop, (), loop)
                filler.cancel()
                ready.append(filler)


def _noop() -> None:
    return None


def run_sync(coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
    """Run ``coro`` to completion from synchronous code and return its result.

    Exceptions raised by ``coro`` propagate unchanged. ``timeout`` (cases 1 and 2) raises
    ``TimeoutError``; in case 2 the coroutine is cancelled on timeout.
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None

    if running is None:
        loop = _private_loop()
        if timeout is not None:
            return loop.run_until_complete(asyncio.wait_for(coro, timeout))
        return loop.run_until_complete(coro)

    engine = engine_loop()
    if running is engine:
        return run_reentrant(running, coro)

    if engine is not None and engine.is_running():
        fut = asyncio.run_coroutine_threadsafe(coro, engine)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError("run_sync timed out") from None
    try:
        return _run_in_helper_thread(coro, timeout)
    except concurrent.futures.TimeoutError:
        raise TimeoutError("run_sync timed out") from None


class Client:
    """Blocking client for quick look-ups (``styles()``, ``credits()``, ``job_detail()``).

    Each call opens a short-lived :class:`AsyncClient` inside ``run_sync``, so it works from
    any thread or loop. ``settings`` defaults to ``Settings.resolve()``; it must name a base
    URL (the embedded simulator is found by the Session, not here).

    :raises ConfigError: no base URL.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        base_url: str | None = None,
        transport: Any = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.resolve()
        url = base_url or self.settings.base_url
        if not url:
            raise ConfigError(
                "no base URL: use goenhance_nb.get_session() for the embedded simulator, "
                "or set GOENHANCE_BASE_URL"
            )
        self.base_url = url
        self._transport = transport

    def __repr__(self) -> str:
        return f"Client(base_url={redact_url(self.base_url)!r})"

    async def _with_client(self, name: str, *args: Any) -> Any:
        client = AsyncClient(
            self.settings,
            base_url=self.base_url,
            api_key=self.settings.api_key,
            transport=self._transport,
        )
        try:
            return await getattr(client, name)(*args)
        finally:
            if self._transport is None:
                await client.aclose()

    def styles(self) -> list[Style]:
        """The model (style) list. :raises GoEnhanceError: see ``AsyncClient.list_styles``."""
        result: list[Style] = run_sync(self._with_client("list_styles"))
        return result

    def credits(self) -> Credits:
        """Account balance. :raises GoEnhanceError: see ``AsyncClient.credits``."""
        result: Credits = run_sync(self._with_client("credits"))
        return result

    def job_detail(self, img_uuid: str) -> JobDetail:
        """One job's status. :raises GoEnhanceError: see ``AsyncClient.job_detail``."""
        result: JobDetail = run_sync(self._with_client("job_detail", img_uuid))
        return result
