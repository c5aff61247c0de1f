"""The :class:`Session`: one object that owns settings, client, cache, ledger, store, engine, usage.

``Session.transform(source, style, ...)`` validates synchronously (a bad input raises
:class:`InputError` here, before any HTTP call), computes the request key, checks the budget and
returns a non-blocking :class:`~goenhance_nb._job.Job`. With no API key and no base URL the
session uses the embedded simulator (``_simproc.ensure_simulator``), shared by every kernel on the
machine through a port file in the cache dir.

Module-level :func:`transform`, :func:`resume`, :func:`styles`, :func:`credits` use the
process-wide session from :func:`get_session`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import statistics
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import filelock

from goenhance_nb import _repro
from goenhance_nb._cache import ResultCache, ResultRecord
from goenhance_nb._client import AsyncClient, URLValidators
from goenhance_nb._engine import JobEngine
from goenhance_nb._errors import (
    APIError,
    AuthError,
    ConfigError,
    GoEnhanceError,
    InputError,
    JobFailed,
    LedgerError,
    ReplayMiss,
    ResultExpired,
    TooLarge,
    TransportError,
    redact_url,
)
from goenhance_nb._frontend import is_headless
from goenhance_nb._inputs import (
    DEFAULT_RESOLUTION,
    UPLOAD_MEMO_TTL,
    HashMemo,
    InputRef,
    Uploader,
    inspect_file,
    is_url,
    resolve_duration,
    sim_url_matches,
    snapshot_for_upload,
    upload_memo_url,
    validate_params,
    warn_if_short,
)
from goenhance_nb._job import Job, JobRequest
from goenhance_nb._jsondisk import network_fs_type, private_dir
from goenhance_nb._keys import hash_bytes, request_key
from goenhance_nb._ledger import Ledger, LedgerEntry
from goenhance_nb._lifecycle import PlanStatus
from goenhance_nb._records import Credits, JobSpec, Style
from goenhance_nb._settings import DEFAULT_REAL_BASE_URL, MODES, SecretKey, Settings
from goenhance_nb._shared import SharedStore, SharedStoreDown
from goenhance_nb._simcontrol import SimulatorControl
from goenhance_nb._simproc import ensure_simulator
from goenhance_nb._store import ResultStore
from goenhance_nb._usage import Estimate, SpendSnapshot, Usage

__all__ = [
    "PREVIEW_TTL",
    "STYLES_TTL",
    "Session",
    "credits",
    "export_bundle",
    "get_session",
    "import_bundle",
    "resume",
    "simulator",
    "styles",
    "transform",
]

#: Seconds the model list stays cached on disk (DECISIONS 7: a cache hit needs no HTTP).
STYLES_TTL = 6 * 3600.0
#: Seconds a fetched style preview image is reused before it is fetched again.
PREVIEW_TTL = 7 * 86400.0
#: Largest preview image fetched (bytes): the panel sends it to the browser as widget bytes,
#: and the frontend's websocket message limit is about 10 MiB.
_PREVIEW_MAX_BYTES = 10 * 1024 * 1024
#: Seconds one preview fetch may take (the client's own retries included).
_PREVIEW_TIMEOUT = 60.0
#: What :meth:`Session.style_preview` swallows (its docstring says why).
_PREVIEW_ERRORS = (GoEnhanceError, OSError, asyncio.TimeoutError, concurrent.futures.TimeoutError)
#: The image suffixes a preview file keeps from its URL (anything else is ``.img``).
_PREVIEW_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})

log = logging.getLogger("goenhance_nb.session")

#: Never contacted: the client's base URL in offline mode with the embedded simulator (the
#: simulator is not even started; every network entry point refuses first).
_OFFLINE_BASE_URL = "http://127.0.0.1:9"
#: Seconds a fetch of an input URL waits for another fetch of the same URL to finish.
_URL_LOCK_WAIT = 600.0


@dataclass(frozen=True, slots=True)
class Plan:
    """One transformation as :meth:`Session.plan` sees it before anything is sent."""

    key: str
    input: str
    style: str
    spec: JobSpec
    status: PlanStatus
    estimate: int


class Session:
    """Owns :class:`Settings`, the :class:`AsyncClient`, cache, ledger, store, engine and usage.

    :param settings: defaults to ``Settings.resolve()`` (environment, key file).
    :param transport: an ``httpx.AsyncBaseTransport`` for the client (test seam; typed ``Any``
        here because only ``_client``/``_transport`` may name httpx).
    :param uploader: ``fn(path) -> public https URL`` used for local files with the real API.
    :param shared_store: fsspec URL of the team's shared store (overrides the
        ``shared_store`` setting, ``GOENHANCE_SHARED_STORE``): a second cache tier and a claim
        before every paid submission, so machines sharing it pay once per transformation
        (:mod:`goenhance_nb._shared`; its key prefix is this session's :attr:`backend`).
    :raises ConfigError: bad settings, or the embedded simulator does not start.

    ``backend`` is ``"simulated"`` for the embedded simulator (from its port file) or for a base
    URL that identifies itself as our simulator when asked once here; otherwise the API's host.
    Only then does a local file go to the simulator's upload endpoint and results carry the
    SIMULATED label; with any other backend a local file needs ``uploader``.

    ``mode`` (or the ``mode`` setting, ``GOENHANCE_MODE``; issue 14): ``live`` (no lockfile),
    ``record`` (live, and each finished or cached result is written to the lockfile),
    ``replay`` (results only from the cache: a miss raises :class:`ReplayMiss` before any job
    call; the model list is fetched only when none is cached), ``offline`` (no network at all:
    the model list and results from the cache, the embedded simulator not started). Unset: a
    headless run (nbclient/papermill) with a lockfile present is ``replay``, else ``live``.
    In replay/offline the backend identity is not asked of the server: it is the
    ``replay_backend`` setting, else ``"simulated"`` for the embedded simulator, else the
    canonical API's host for the canonical base URL, else the one backend the lockfile's
    entries name (replay asks the server only when none of these applies; offline refuses with
    :class:`ConfigError`); switching to live/record asks the server again.

    **The contract with the notebook layer** (magics, panel, widgets use only these, typed):
    look-ups :attr:`backend`, :attr:`is_simulated`, :attr:`mode`, :attr:`cache_dir`,
    :meth:`styles`, :meth:`resolve_style`, :meth:`style_preview`, :meth:`simulator`; money :meth:`credits`,
    :meth:`spend`, :meth:`cost_estimate`; inputs :meth:`inspect`, :meth:`duration_for`; the cache :meth:`cached_results`,
    :meth:`cached_result`, :meth:`verify_cached`, :meth:`remove_cached`, :meth:`clear_cache`; jobs :meth:`transform`,
    :meth:`plan`, :meth:`resume`, :meth:`running_jobs`; the ledger and bundles
    :meth:`export`, :meth:`import_bundle`; lifetime :meth:`set_mode`, :meth:`successor`,
    :meth:`close`. The parts (``settings``, ``client``, ``cache``, ``ledger``, ``store``,
    ``engine``, ``usage``) are public attributes for the core and tests, not for views.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: Any = None,
        uploader: Uploader | None = None,
        queue_limit: int | None = None,
        mode: str | None = None,
        shared_store: str | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.resolve()
        if mode is not None:
            self.settings = self.settings.with_(mode=mode)
        if shared_store is not None:
            self.settings = self.settings.with_(shared_store=shared_store)
        s = self.settings
        self.cache_dir = private_dir(Path(s.cache_dir).expanduser())
        fstype = network_fs_type(self.cache_dir)
        if fstype is not None:
            warnings.warn(
                f"the goenhance cache dir {self.cache_dir} is on a network filesystem ({fstype}); "
                "its SQLite index is not safe there: set GOENHANCE_CACHE_DIR to a local disk",
                UserWarning,
                stacklevel=2,
            )
        self.lockfile = _repro.Lockfile(
            _repro.lockfile_location(s.lockfile), lock_dir=self.cache_dir / "locks"
        )
        self.mode: str = s.mode or (
            "replay" if is_headless() and self.lockfile.exists() else "live"
        )
        api_key = s.api_key
        embedded = s.base_url is None and api_key is None
        if embedded and self.mode == "offline":
            base_url = _OFFLINE_BASE_URL
        elif embedded:
            # launched (or found) by us through the port file: known without asking
            base_url, raw_key = ensure_simulator(self.cache_dir)
            api_key = SecretKey(raw_key)
        else:
            base_url = s.base_url or DEFAULT_REAL_BASE_URL
        self.base_url = base_url
        self.uploader = uploader
        self.client = AsyncClient(s, base_url=base_url, api_key=api_key, transport=transport)
        self.store = ResultStore(self.cache_dir)
        self.cache = ResultCache(self.cache_dir, self.store)
        self.ledger = Ledger(self.cache_dir)
        self.hashes = HashMemo(self.cache_dir)
        self.usage = Usage(self.cache, budget=s.budget)
        self.engine = JobEngine(
            self.client,
            cache=self.cache,
            ledger=self.ledger,
            store=self.store,
            usage=self.usage,
            poll_interval=s.poll_interval,
            job_timeout=s.job_timeout,
            queue_limit=queue_limit,
        )
        self._closed = False
        self._styles_refreshed = False
        # jobs run in record mode whose lockfile entry is not written yet (settle_records)
        self._recording: set[Job] = set()
        self._recording_cv = threading.Condition()
        # the model list as last read from the cache and its parsed Styles (a repeat that
        # reads the same rows skips parsing them again)
        self._styles_read: tuple[list[Any], list[Style]] | None = None
        self._preview_lock = threading.Lock()
        self._has_key = api_key is not None
        self._backend: str | None = "simulated" if embedded else None
        #: True while the backend came from the replay_backend setting or the lockfile, not
        #: from the server: leaving replay/offline asks the server (set_mode).
        self._backend_assumed = False
        if self._backend is None and self.mode in ("replay", "offline"):
            self._backend = self._backend_without_network()
            self._backend_assumed = self._backend is not None
        if self._backend is None and self.mode != "offline":
            self._backend = self._identify(base_url)

    def _backend_without_network(self) -> str | None:
        """Replay/offline: the ``replay_backend`` setting, else the canonical API's host for the
        canonical base URL (known without asking), else the single backend of the lockfile."""
        if self.settings.replay_backend:
            return self.settings.replay_backend
        if self.base_url.rstrip("/") == DEFAULT_REAL_BASE_URL:
            return urlsplit(self.base_url).hostname
        try:
            found = self.lockfile.backends()
        except GoEnhanceError:
            return None
        return found.pop() if len(found) == 1 else None

    def set_mode(self, mode: str) -> None:
        """Switch this session to ``mode`` (live, record, replay, offline) from now on.

        :raises ConfigError: unknown mode, or offline with no backend known without a network.
        """
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if mode == "offline" and self._backend is None:
            self._backend = self._backend_without_network()
            if self._backend is None:
                raise ConfigError(self._offline_backend_message())
            self._backend_assumed = True
        if mode in ("live", "record") and self._backend_assumed:
            # results made from now on are keyed by what the server is, never by an assumption
            self._backend, self._backend_assumed = None, False
        self.mode = mode

    def _offline_backend_message(self) -> str:
        return (
            f"offline mode cannot ask {redact_url(self.base_url)} which backend it is: set "
            "GOENHANCE_REPLAY_BACKEND ('simulated' or the API host) or record a lockfile first"
        )

    def _check_network(self, what: str) -> None:
        """Refuse a network call in offline mode. :raises ReplayMiss: offline."""
        if self.mode == "offline":
            raise ReplayMiss(f"offline mode: {what} needs the network (nothing was sent)")

    @property
    def backend(self) -> str:
        """``"simulated"`` or the real API's host (never a port; DECISIONS 7/26).

        Known before any request key is computed, and never from the host alone: an explicit
        base URL that did not answer when the session was made is asked again here (with the
        transport's backoff) before anything is keyed or sent.

        :raises TransportError: the server still does not answer (nothing was sent).
        """
        if self._backend is None and self.mode == "offline":
            raise ConfigError(self._offline_backend_message())
        if self._backend is None:
            tries = self.settings.max_retries + 1
            for attempt in range(tries):
                self._backend = self._identify(self.base_url)
                if self._backend is not None:
                    break
                if attempt + 1 < tries:
                    delay = self.client.transport.backoff(attempt)
                    self.engine.run(self.client.transport.sleep(delay))
            else:
                raise TransportError(
                    f"cannot reach {redact_url(self.base_url)} to tell whether it is the "
                    "GoEnhance simulator or a real API; nothing was sent",
                    sent=False,
                )
        return self._backend

    def _identify(self, base_url: str) -> str | None:
        """The backend identity of an explicitly configured base URL (DECISIONS 26).

        The canonical API (``https://api.goenhance.ai``) is real without asking. Any other base
        URL is asked (:meth:`AsyncClient.is_simulator`: ``GET /sim/health``, a short timeout,
        no API key): our simulator identifies itself and is ``"simulated"``; anything else that
        answers, loopback or not, is a real API keyed by its host. A remote host that does not
        answer is a real API too (our simulator runs beside the kernel); a loopback one that does
        not answer yet gives ``None`` (asked again on first use of :attr:`backend`).
        """
        host = urlsplit(base_url).hostname or "unknown"
        if base_url.rstrip("/") == DEFAULT_REAL_BASE_URL:
            return host
        answer = self.engine.run(self.client.is_simulator())
        if answer is None and self.settings.is_loopback:
            return None  # a local server that is not up yet: ask again before keying anything
        return "simulated" if answer else host

    def _require_key(self) -> None:
        """Refuse before any API call when no key is set for an explicit base URL.

        :raises AuthError: no API key (nothing was sent).
        """
        if not self._has_key:
            raise AuthError(
                f"no API key set for {redact_url(self.base_url)}: set GOENHANCE_API_KEY or "
                "use %goenhance login (nothing was sent)"
            )

    def __repr__(self) -> str:
        backend = self._backend or "not yet identified"
        return f"<Session backend={backend!r} mode={self.mode!r} cache_dir={str(self.cache_dir)!r}>"

    @property
    def is_simulated(self) -> bool:
        """True when jobs run on a simulator (no real credits are spent)."""
        return self.backend == "simulated"

    @property
    def queue_limit(self) -> int | None:
        """Jobs the account may run at once (its ``queueLimit``), once a submission or a
        credits call has told it; ``None`` before (no HTTP here)."""
        return self.engine.queue_limit

    def simulator(self) -> SimulatorControl:
        """Controls of the simulator this session talks to (settings, faults, request log).

        :raises ConfigError: the session talks to the real API (it has no such controls).
        """
        if not self.is_simulated:
            raise ConfigError(
                f"no simulator here: this session talks to the real API ({self.backend}); "
                "unset GOENHANCE_API_KEY to use the simulator"
            )
        return SimulatorControl(self.client, self.engine.run, self.base_url)

    # -- look-ups --------------------------------------------------------------------------
    def styles(self, refresh: bool = False) -> list[Style]:
        """Return the model list; served from the disk cache (TTL :data:`STYLES_TTL`) without
        any HTTP request unless ``refresh`` or the cached list is missing/stale.

        :raises GoEnhanceError: the API could not be reached or refused (see ``AsyncClient``).
        """
        name = f"styles:{self.backend}"
        pinned = self.mode in ("replay", "offline")  # any age will do: nothing may change
        if not refresh or self.mode == "offline":
            cached = self.cache.meta_get(name, max_age=None if pinned else STYLES_TTL)
            if isinstance(cached, list):
                last = self._styles_read
                if last is not None and last[0] == cached:
                    return list(last[1])
                try:
                    parsed = [Style.from_json(d) for d in cached]
                except (ValueError, TypeError):
                    pass
                else:
                    self._styles_read = (cached, parsed)
                    return list(parsed)
        if self.mode == "offline":
            raise ConfigError(
                f"offline mode: no cached model list for backend {self.backend!r}; run once "
                "in live or record mode, or %goenhance import a bundle (nothing was sent)"
            )
        self._require_key()
        fresh = self.engine.run(self.client.list_styles())
        self.cache.meta_set(name, [st.to_json() for st in fresh])
        return fresh

    def resolve_style(self, style: int | str | Style) -> Style:
        """Return the :class:`Style` for an id (int or digit string) or label (case-insensitive).

        :raises InputError: unknown style.
        """
        if isinstance(style, Style):
            return style
        if isinstance(style, bool) or not isinstance(style, (int, str)):
            raise InputError(f"style must be an id or a label, got {type(style).__name__}")
        wanted = str(style).strip()
        for refresh in (False, True) if self.mode != "offline" else (False,):
            all_styles = self.styles(refresh=refresh)
            for st in all_styles:
                if wanted.isdigit() and st.id == int(wanted):
                    return st
                if st.label.lower() == wanted.lower():
                    return st
            if not self._styles_may_be_stale():
                break
        sample = ", ".join(f"{st.id} {st.label}" for st in all_styles[:8])
        raise InputError(
            f"unknown style {wanted!r}; known styles include: {sample} (see goenhance_nb.styles())"
        )

    def _styles_may_be_stale(self) -> bool:
        # One refresh is allowed per session for an unknown style (a new model may have appeared).
        done = self._styles_refreshed
        self._styles_refreshed = True
        return not done

    def style_preview(self, style: Style) -> Path | None:
        """The local file of ``style``'s preview image, fetched through the client once.

        The first call downloads ``style.preview_url`` (at most 10 MiB, 60 s) into
        ``<cache_dir>/previews/`` (a temp file, then ``os.replace``); later calls, from this or
        any session on the cache dir, return that file without HTTP for :data:`PREVIEW_TTL`
        seconds. The file is per backend, style id and model version. Calls in this session wait
        for the one fetch. In offline mode, or once the session is closed, only a file already
        there is returned (nothing is sent).

        Returns ``None`` when the style has no preview URL or the image cannot be had. A
        preview is decoration (the panel shows a text button instead), so these are swallowed
        (logged at debug level): every :class:`GoEnhanceError` of the fetch (the URL is gone or
        expired, the host is unreachable after the transport's retries, another HTTP status,
        the image is over the cap, the disk is full, the backend is unknown), an ``OSError``
        writing the cache dir, and the timeout. Anything else is a bug and propagates.
        """
        if not style.preview_url:
            return None
        try:
            with self._preview_lock:
                return self._cached_preview(style, style.preview_url)
        except _PREVIEW_ERRORS as exc:
            log.debug("goenhance_nb: no preview for style %s: %s", style.id, exc)
            return None

    def _cached_preview(self, style: Style, url: str) -> Path | None:
        """:meth:`style_preview`'s file: reused while fresh, else fetched (if allowed) and kept.

        :raises GoEnhanceError, OSError, TimeoutError: the fetch or the write failed.
        """
        name = hash_bytes(f"{self.backend}\0{style.id}\0{style.version}".encode())[:32]
        suffix = Path(urlsplit(url).path).suffix.lower()
        suffix = suffix if suffix in _PREVIEW_SUFFIXES else ".img"
        dest = self.cache_dir / "previews" / f"{name}{suffix}"
        with contextlib.suppress(FileNotFoundError):
            if time.time() - dest.stat().st_mtime <= PREVIEW_TTL:
                return dest
        if self._closed or self.mode == "offline":
            return None
        tmp = self.store.new_temp("preview-")
        try:
            fetch = self.client.download(url, tmp, resume=False, max_bytes=_PREVIEW_MAX_BYTES)
            self.engine.run(asyncio.wait_for(fetch, _PREVIEW_TIMEOUT), timeout=_PREVIEW_TIMEOUT + 5)
            private_dir(dest.parent)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def cost_estimate(self, style: Style, resolution: str, duration: int) -> Estimate:
        """The estimated credits of a new ``style`` job (``resolution``, ``duration`` seconds):
        the rate last observed for that model, else the default rates (:meth:`Usage.estimate`).
        No HTTP.

        :raises CacheError: the meta store holding the observed rates cannot be read.
        """
        return self.usage.estimate(style.id, resolution, duration, is_vip=style.is_vip)

    def spend(self) -> SpendSnapshot:
        """This session's spend (possible charges included), charged job count, budget and
        last balance seen, read together (no HTTP; :meth:`credits` asks for the balance)."""
        return self.usage.snapshot()

    def credits(self) -> Credits:
        """Return the account balance (one HTTP request).

        :raises GoEnhanceError: see ``AsyncClient.credits``.
        """
        self._check_network("the credit balance")
        self._require_key()
        cr = self.engine.run(self.client.credits())
        self.usage.last_credits = cr.count
        return cr

    def ledger_entries(self) -> list[LedgerEntry]:
        """Return all ledger entries (jobs this cache dir knows), newest first."""
        return self.ledger.entries()

    # -- the result cache (no HTTP) ----------------------------------------------------------
    def cached_results(self) -> list[ResultRecord]:
        """Every cached result, newest first."""
        return self.cache.list()

    def cached_result(self, key_or_id: str) -> ResultRecord:
        """The cached result for a key, a unique key prefix or a job id.

        :raises CacheError: none matches, or a prefix matches several.
        """
        return self.cache.info(key_or_id)

    def verify_cached(self, key: str) -> bool:
        """Re-hash a cached result's file: True when its size and content hash match."""
        return self.cache.verify(key, full=True)

    def remove_cached(self, key: str) -> bool:
        """Forget one cached result and delete its stored file (never the notebook's copy in
        ``goenhance_outputs/``). True when it was there."""
        return self.cache.remove(key)

    def clear_cache(self) -> int:
        """Forget every cached result and delete the stored files (never the notebook's
        copies); returns how many were removed."""
        return self.cache.clear()

    @property
    def lockfile_path(self) -> Path:
        """Where this session's lockfile is (it may not exist yet)."""
        return self.lockfile.path

    # -- inputs ----------------------------------------------------------------------------
    def inspect(self, source: str | Path, *, duration: int | None = None) -> InputRef:
        """Validate ``source`` (a local path or http(s) URL) and return its :class:`InputRef`.

        :raises InputError: see :func:`goenhance_nb._inputs.inspect_file`; also a local file
            with the real API and no uploader.
        """
        max_bytes = None if self.is_simulated else int(self.settings.max_upload_mb * 1_000_000)
        if is_url(source):
            self._check_network("an input URL")
            return self._inspect_url(str(source), duration=duration, max_bytes=max_bytes)
        if not isinstance(source, (str, Path)):
            raise InputError(
                f"source must be a file path or an http(s) URL, got {type(source).__name__}"
            )
        ref = inspect_file(Path(source), self.hashes, duration=duration, max_bytes=max_bytes)
        if (
            not self.is_simulated
            and self.uploader is None
            and self.mode not in ("replay", "offline")
        ):
            raise InputError(
                f"{ref.name} is a local file, but the GoEnhance API only accepts public URLs: "
                "pass an http(s) URL as the source, or give Session(uploader=fn) a function that "
                "uploads a file and returns its public https URL"
            )
        return ref

    def _inspect_url(self, url: str, *, duration: int | None, max_bytes: int | None) -> InputRef:
        """Download ``url`` into a temp file of its own, validate and hash it, delete it (a
        repeat answered 304 makes no file).

        The validators the server gave (``ETag``, ``Last-Modified``, ``Content-Length``) are
        remembered with the content hash and probe in the cache's meta store, under a hash of
        the full URL (the URL itself is never stored). A repeat sends ONE conditional GET
        (:meth:`AsyncClient.fetch_input`): a 304 reuses the remembered hash and probe (no body,
        no hashing, no PyAV); a 200 (changed bytes) is validated and hashed afresh, so a
        changed input is a new request key. A server that sends no validators is downloaded
        and hashed every time.

        The temp name is unique (``mkstemp``), so two threads or kernels fetching the same URL
        never share a file. A URL seen before is revalidated at once; a first fetch holds a
        per-URL lock (``<cache_dir>/locks/src-*.lock``), so a second kernel asking for the same
        new URL meanwhile waits, then revalidates what the first one remembered (one download
        between them when the server gives validators). The download is capped as the
        bytes arrive: ``max_upload_mb`` for the real API (its upload limit), ``max_input_mb``
        for the simulator; an oversized input is refused before it is hashed.

        :raises InputError: the URL cannot be fetched, is too large, or is not a usable video.
        """
        s = self.settings
        setting = "max_input_mb" if self.is_simulated else "max_upload_mb"
        cap_mb = s.max_input_mb if self.is_simulated else s.max_upload_mb
        cap = int(cap_mb * 1_000_000)
        if max_bytes is not None:
            cap = min(cap, max_bytes)
        name = unquote(Path(urlsplit(url).path).name) or "input"
        url_hash = hash_bytes(url.encode())
        memo_name = f"src-url:{url_hash}"
        known = _remembered_url(self.cache.meta_get(memo_name))
        lock: filelock.FileLock | None = None
        if known is None and not self.engine.on_engine_thread():  # never block the loop
            lock = filelock.FileLock(str(self.ledger.lock_dir / f"src-{url_hash[:32]}.lock"))
            try:
                lock.acquire(timeout=_URL_LOCK_WAIT)
            except filelock.Timeout:
                lock = None  # the other fetch hangs; ours uses its own temp file anyway
            known = _remembered_url(self.cache.meta_get(memo_name))  # fetched meanwhile?
        temps: list[Path] = []

        def new_temp() -> Path:  # made only for a body: a 304 writes nothing to disk
            temps.append(self.store.new_temp("src-"))
            return temps[-1]

        try:
            got = self._fetch_url(url, new_temp, known[0] if known else None, cap)
            if got is None:  # 304: the bytes we hashed and probed
                assert known is not None
                return _url_ref_from_memo(known[1], url=url, name=name, duration=duration, cap=cap)
            fresh, body = got
            ref = inspect_file(
                body,
                None,
                duration=duration,
                max_bytes=max_bytes,
                kind="url",
                url=url,
                name=name,
            )
            if fresh.usable or known is not None:
                # (validators gone: the row stops matching, so the next run downloads again)
                self.cache.meta_set(memo_name, _url_memo(fresh, ref))
            return ref
        except TooLarge as exc:
            raise InputError(
                f"the input URL is too large: {exc} (raise Settings.{setting} to allow more)"
            ) from None
        except (ResultExpired, TransportError) as exc:
            raise InputError(f"cannot fetch the input URL: {exc}") from None
        except GoEnhanceError as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"cannot fetch the input URL: {exc}") from None
        finally:
            for tmp in temps:
                tmp.unlink(missing_ok=True)
            if lock is not None:
                lock.release()

    def _fetch_url(
        self,
        url: str,
        new_temp: Callable[[], Path],
        known: URLValidators | None,
        cap: int,
    ) -> tuple[URLValidators, Path] | None:
        """Fetch ``url`` unless ``known`` still describes it (``None``: a 304); else the
        answer's validators and the temp file (from ``new_temp``) that holds its body.

        A URL seen before is revalidated on this thread (:meth:`AsyncClient.revalidate_input`:
        one conditional GET, no event-loop hop); without an answer, and for a first fetch,
        the engine's :meth:`AsyncClient.fetch_input` (its transport retries).
        """
        client = self.client
        if (
            known is not None
            and client.may_revalidate_now(url)
            and not self.engine.on_engine_thread()
        ):
            try:
                return client.revalidate_input(url, new_temp, known=known, max_bytes=cap)
            except TooLarge:
                raise  # an answer (the refusal stands; asking again would not change it)
            except TransportError:
                pass  # no complete answer: the full fetch below, with its retries
        tmp = new_temp()
        fresh = self.engine.run(client.fetch_input(url, tmp, known=known, max_bytes=cap))
        return None if fresh is None else (fresh, tmp)

    def _reference_url(self, ref: InputRef) -> Callable[[], Awaitable[str]]:
        """The engine's ``reference_url()`` for ``ref``: called only when the job is submitted.

        URL inputs are passed through. A local file is uploaded as a private snapshot whose
        hash is checked against ``ref.content_hash`` first (``snapshot_for_upload``): a file
        replaced after ``transform`` hashed it raises :class:`InputError` here, before the
        ledger write and the generate POST, so nothing is charged. We snapshot at upload time
        (not at hash time) so a copy is made only when an upload is really needed (not for
        cache hits or memoised uploads) and lives only for the upload itself. An upload URL is
        memoised as ``upload:<scope>:<blake3>`` -> ``{"url", "sha256", "size"}`` for
        :data:`UPLOAD_MEMO_TTL` seconds; for the simulator its file name must carry the
        sha256 of the bytes sent (checked on upload and on reuse).
        """

        async def get() -> str:
            if ref.kind == "url" and ref.url:
                return ref.url
            assert ref.path is not None
            scope = self.base_url if self.is_simulated else self.backend
            name = f"upload:{scope}:{ref.content_hash}"
            memo = self.cache.meta_get(name, max_age=UPLOAD_MEMO_TTL)
            cached = upload_memo_url(memo, simulated=self.is_simulated)
            if cached is not None:
                return cached
            if not self.is_simulated and self.uploader is None:
                raise InputError("no uploader for a local file with the real API")
            try:
                snap = await asyncio.to_thread(
                    snapshot_for_upload, Path(ref.path), ref.content_hash, self.store.tmp_dir
                )
            except InputError:
                # the next run hashes the new content, even if size and mtime look unchanged
                await asyncio.to_thread(self.hashes.forget, Path(ref.path))
                raise
            try:
                if self.is_simulated:
                    url = await self.client.sim_upload(snap.path)
                    if not sim_url_matches(url, snap.sha256):
                        raise TransportError(
                            f"upload of {ref.name}: the simulator stored other bytes than were "
                            "sent (sha256 differs); nothing was submitted"
                        )
                else:
                    assert self.uploader is not None
                    url = await asyncio.to_thread(self.uploader, snap.path)
                    if not is_url(url):
                        raise InputError("the uploader did not return an http(s) URL")
            finally:
                snap.discard()
            self.cache.meta_set(name, {"url": url, "sha256": snap.sha256, "size": snap.size})
            return url

        return get

    def duration_for(self, source: str | Path, duration: int | None = None) -> int:
        """The duration a job on ``source`` gets (:meth:`transform`'s rule, e.g. for a cost
        estimate before Submit): ``duration`` checked against the input's length, or that
        length (rounded down, 3-30 s) when None. Probes the input like :meth:`inspect`.

        :raises InputError: unusable source, an input shorter than 3 s, a ``duration`` longer
            than the input, no ``duration`` and an input of unknown length.
        """
        ref = self.inspect(source)
        return resolve_duration(ref.name, ref.duration, duration)

    # -- jobs ------------------------------------------------------------------------------
    def transform(
        self,
        source: str | Path,
        style: int | str | Style,
        *,
        prompt: str | None = None,
        duration: int | None = None,
        resolution: str = DEFAULT_RESOLUTION,
        seed: int = -1,
        force: bool = False,
        timeout: float | None = None,
    ) -> Job:
        """Start transforming ``source`` with ``style``; return a :class:`Job` at once.

        Validation runs here, synchronously: parameters, the style (against the cached model
        list), the source file (PyAV) — a bad input raises before any job HTTP call. A result
        already cached for the same request key is served without HTTP; a job for the key
        already in the ledger (this or an earlier process) is re-attached, never re-submitted.

        ``duration`` None (default) is the input's length, rounded down, 3-30 s; the request
        key holds the resolved number, so giving that number explicitly is the same request
        (see :func:`~goenhance_nb._inputs.resolve_duration`).

        :raises InputError: bad parameter, unknown style, unusable source, an input shorter
            than 3 s, a ``duration`` longer than the input.
        :raises BudgetExceeded: the session budget would be exceeded (no HTTP call made).
        :raises LedgerError: an earlier run left this job 'submitting' (use resume with
            ``resubmit=True``), or the ledger holds a refused (non-JSON) row.
        :raises CacheError: the cache holds a refused (non-JSON) row.
        """
        validate_params(duration=duration, resolution=resolution, prompt=prompt, seed=seed)
        replaying = self.mode in ("replay", "offline")
        if not replaying:
            self._require_key()
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        ref, st, spec, key = self._request(source, style, prompt, duration, resolution, seed)
        if replaying:
            self._require_cached(key, force, ref.name, st, spec)
        existing = self.engine.join(key, timeout)  # a live job: wait for it (DECISIONS 27)
        if existing is not None:
            return self._maybe_record(existing)
        self.ledger.check_orphan(key)  # never re-sent silently (DECISIONS 8), even with force
        estimate = None
        hit = None if force else self.cache.usable(key)
        if hit is None and self._needs_new_charge(key):
            estimate = self.usage.estimate(st.id, resolution, spec.duration, is_vip=st.is_vip)
            self.usage.reserve(estimate)
        req = JobRequest(
            key=key,
            spec=spec,
            input=ref,
            model_version=st.version,
            style_label=st.label,
            backend=self.backend,
            reference_url=self._reference_url(ref),
            timeout=timeout,
            force=force,
            estimate=estimate,
            source_name=ref.name,
        )
        self._attach_shared_store()
        return self._maybe_record(self.engine.submit(req, hit=hit))

    def _attach_shared_store(self) -> None:
        """Give the engine the shared store of the ``shared_store`` setting, keyed by the
        backend known now (made again when the backend changed)."""
        url = self.settings.shared_store
        current = self.engine.shared
        if url is None or (current is not None and current.backend == self.backend):
            return
        self.engine.shared = SharedStore(url, self.backend)

    def plan(
        self,
        source: str | Path,
        style: int | str | Style,
        *,
        prompt: str | None = None,
        duration: int | None = None,
        resolution: str = DEFAULT_RESOLUTION,
        seed: int = -1,
    ) -> Plan:
        """What :meth:`transform` would do, without doing it (no job call, nothing charged).

        Returns a :class:`Plan`: ``status`` is a :class:`PlanStatus` (``CACHED``: served from
        the cache, or from the shared store when it has the result, ``RUNNING``: a known job would be re-attached, ``NEW``: a paid submission);
        ``estimate`` the estimated credits of a new job (0 otherwise); ``spec.duration`` the
        resolved duration. Validation is the same as :meth:`transform`'s.

        :raises InputError: bad parameter, unknown style, unusable source, an input shorter
            than 3 s, a ``duration`` longer than the input.
        """
        validate_params(duration=duration, resolution=resolution, prompt=prompt, seed=seed)
        ref, st, spec, key = self._request(source, style, prompt, duration, resolution, seed)
        status, estimate = PlanStatus.CACHED, 0
        if self.cache.usable(key) is None:
            if not self._needs_new_charge(key):
                status = PlanStatus.RUNNING
            elif not self._in_shared_store(key):
                status = PlanStatus.NEW
                estimate = self.usage.estimate(
                    st.id, resolution, spec.duration, is_vip=st.is_vip
                ).credits
        return Plan(key, ref.name, st.label, spec, status, estimate)

    def _in_shared_store(self, key: str) -> bool:
        """Whether the shared store (when set and answering) has a result for ``key`` (its
        index record; the blob is checked when it is fetched)."""
        if self.settings.shared_store is None or self.mode in ("replay", "offline"):
            return False
        self._attach_shared_store()
        shared = self.engine.shared
        if shared is None or not shared.available():
            return False
        try:
            return shared.lookup(key) is not None
        except SharedStoreDown:
            return False

    def _request(
        self,
        source: str | Path,
        style: int | str | Style,
        prompt: str | None,
        duration: int | None,
        resolution: str,
        seed: int,
    ) -> tuple[InputRef, Style, JobSpec, str]:
        """Validate the source and the style; return ``(input, style, spec, request key)``.

        Shared by :meth:`transform` and :meth:`plan` (parameters already validated). The
        spec's duration is resolved against the input's probed length (``resolve_duration``):
        the key never holds None.

        :raises InputError: unusable source, unknown style, input too short, duration longer
            than the input.
        """
        ref = self.inspect(source)
        duration = resolve_duration(ref.name, ref.duration, duration)
        st = self.resolve_style(style)
        spec = JobSpec(
            model=st.id, duration=duration, resolution=resolution, seed=seed, prompt=prompt
        )
        return ref, st, spec, request_key(ref.content_hash, spec, st.version, self.backend)

    def _require_cached(self, key: str, force: bool, name: str, st: Style, spec: JobSpec) -> None:
        """Replay/offline: the result must be in the cache, intact (no API call otherwise).

        :raises ReplayMiss: not cached (or ``force``), naming the transformation.
        """
        _, status = self.cache.lookup(key)
        if status == "ok" and not force:
            return
        what = (
            f"{name} -> {st.label} ({spec.duration} s, {spec.resolution}, seed {spec.seed}"
            f"{', prompt' if spec.prompt else ''}; key {key[:12]})"
        )
        why = "--force runs again" if force and status == "ok" else f"result {status}"
        raise ReplayMiss(
            f"{self.mode} mode: no cached result for {what} ({why}); nothing was sent. "
            "Import the bundle (%goenhance import PATH) or run it in record mode"
        )

    def _maybe_record(self, job: Job) -> Job:
        """In record mode, write the job's result to the lockfile once it is done."""
        if self.mode == "record":
            with self._recording_cv:
                self._recording.add(job)
            job.on_finish(self._record_finished)
        return job

    def _record_finished(self, job: Job) -> None:
        try:
            result = job.record
            if result is None:  # failed, timed out or no longer watched: nothing to record
                return
            self.record(result)
        except (GoEnhanceError, OSError) as exc:
            warnings.warn(f"could not update the lockfile: {exc}", UserWarning, stacklevel=1)
        finally:
            with self._recording_cv:
                self._recording.discard(job)
                self._recording_cv.notify_all()

    def settle_records(self, timeout: float = 30.0) -> None:
        """Wait (``timeout`` s at most) until every job that ended in record mode has its
        lockfile entry: it is written on the engine thread just after the job's handle
        settles, so a cell right after the run (``verify``, ``export``) could read the
        lockfile first. Jobs still running are not waited for."""
        deadline = time.monotonic() + timeout
        with self._recording_cv:
            while any(j.done() for j in self._recording):
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._recording_cv.wait(left)

    def record(self, result: ResultRecord) -> None:
        """Write (or refresh) the lockfile entry for ``result`` and put its file beside the
        notebook (``goenhance_outputs/``, or the ``output_dir`` setting).

        :raises CacheError: the lockfile cannot be written. :raises GoEnhanceError: the result
            file is gone.
        """
        out_dir = self.settings.output_dir
        self.lockfile.update(
            result.key,
            lambda old: _repro.lock_entry(
                result, lock_dir=self.lockfile.dir, output_dir=out_dir, old=old
            ),
        )

    # -- bundles -----------------------------------------------------------------------------
    def export(self, path: str | Path, *, inputs: bool = False) -> Path:
        """Write a bundle of this notebook's lockfile and results (see :mod:`_repro`).

        :raises ConfigError: no lockfile. :raises BundleError: a result is missing/changed.
        """
        self.settle_records()

        def styles_of(backend: str) -> list[dict[str, Any]] | None:
            got = self.cache.meta_get(f"styles:{backend}")
            return got if isinstance(got, list) else None

        return _repro.export_bundle(
            path,
            lockfile=self.lockfile.path,
            cache=self.cache,
            ledger=self.ledger,
            styles=styles_of,
            inputs=inputs,
        )

    def import_bundle(self, path: str | Path) -> _repro.ImportReport:
        """Seed this cache from a bundle so the notebook replays with zero API calls.

        :raises BundleError: the bundle was refused; the cache is untouched.
        """
        return _repro.import_bundle(
            path,
            cache=self.cache,
            store=self.store,
            staging_dir=self.cache_dir / "tmp",
            max_member_bytes=int(self.settings.max_result_mb * 1_000_000),
            inputs_dir=self.lockfile.dir / _repro.INPUTS_DIRNAME,
        )

    def _needs_new_charge(self, key: str) -> bool:
        """Would running ``key`` now submit a new (paid) job, the cache aside (the caller has
        asked it)? Not while the ledger has a job for it in flight."""
        entry = self.ledger.get(key)
        return not (
            entry is not None and entry.job_id is not None and entry.state not in ("failed", "done")
        )

    def resume(
        self, img_uuid_or_key: str, *, resubmit: bool = False, timeout: float | None = None
    ) -> Job:
        """Re-attach to a job in the ledger by its img_uuid, request key or key prefix.

        An img_uuid the ledger does not know (the ledger write after generate failed) is
        looked up on the API (``jobs/detail``) and adopted by the one ``submitting`` entry on
        this backend with the same model: no generate call.

        With ``resubmit=True`` an entry left in ``submitting`` (or failed) is submitted again —
        this may charge twice.

        :raises LedgerError: no such job, or it belongs to another backend, or it is an orphaned
            ``submitting`` entry and ``resubmit`` is false (raised by ``job.result()``).
        :raises JobFailed: the job failed and ``resubmit`` is false.
        """
        if self.mode in ("replay", "offline"):
            raise ReplayMiss(
                f"{self.mode} mode: resume would ask the API about a job (nothing was sent); "
                "switch with %goenhance mode live"
            )
        ident = str(img_uuid_or_key).strip()
        entry = self.ledger.find(ident)
        if entry is None:
            entry = self._adopt(ident)
        if entry.backend != self.backend:
            raise LedgerError(
                f"job {entry.job_id or entry.key[:12]} was made on backend {entry.backend!r}, "
                f"this session uses {self.backend!r}"
            )
        if entry.state == "failed" and not resubmit:
            raise JobFailed(entry.job_id, entry.error or "failed earlier")
        existing = self.engine.join(entry.key, timeout)
        if existing is not None:
            return self._maybe_record(existing)
        spec = JobSpec.from_json(entry.spec)
        raw_input = entry.extra.get("input") if isinstance(entry.extra, dict) else None
        ref = (
            InputRef.from_json(raw_input)
            if isinstance(raw_input, dict)
            else InputRef(
                kind="file", name=entry.source_name, content_hash=entry.input_hash, size=0
            )
        )
        estimate = None
        if resubmit and (entry.is_orphan or entry.state == "failed"):
            estimate = self.usage.estimate(spec.model, spec.resolution, spec.duration)
            self.usage.reserve(estimate)
        req = JobRequest(
            key=entry.key,
            spec=spec,
            input=ref,
            model_version=entry.model_version,
            style_label=entry.style_label,
            backend=entry.backend,
            reference_url=self._resubmit_url(entry, ref) if resubmit else None,
            timeout=timeout,
            resubmit=resubmit,
            estimate=estimate,
            source_name=entry.source_name,
        )
        if resubmit and entry.state == "failed":
            req.force = True
        self._attach_shared_store()
        return self._maybe_record(self.engine.submit(req))

    def _resubmit_url(
        self, entry: LedgerEntry, ref: InputRef
    ) -> Callable[[], Awaitable[str]] | None:
        """The input URL maker for resubmitting ``entry`` when it never got one (an orphan
        claim of another machine on the shared store): its input URL, or its local file
        uploaded again (hash-checked); None when the entry has a URL or no usable input."""
        if entry.reference_url:
            return None
        usable = (ref.kind == "url" and bool(ref.url)) or (
            ref.path is not None and Path(ref.path).is_file()
        )
        return self._reference_url(ref) if usable else None

    def _adopt(self, img_uuid: str) -> LedgerEntry:
        """Give a job id the ledger never recorded to the ``submitting`` entry it belongs to.

        Asks the API (``jobs/detail``) whether ``img_uuid`` exists, then picks the one orphaned
        entry on this backend whose model matches, and records the id there.

        :raises LedgerError: the API does not know the id, or no single entry matches.
        """
        missing = f"no job {img_uuid!r} in the ledger of {self.cache_dir}"
        if len(img_uuid) < 8:
            raise LedgerError(missing)
        try:
            detail = self.engine.run(self.client.job_detail(img_uuid))
        except APIError as exc:
            raise LedgerError(f"{missing}, and the API does not know it ({exc})") from None
        orphans = [
            e
            for e in self.ledger.entries()
            if e.is_orphan
            and e.backend == self.backend
            and (detail.model_id is None or str(e.spec.get("model")) == detail.model_id)
        ]
        if len(orphans) != 1:
            raise LedgerError(
                f"{missing}; the API knows it, but {len(orphans)} unsubmitted ledger entries "
                "could be its request, so it cannot be re-attached here"
            )
        return self.ledger.update(
            orphans[0].key,
            job_id=detail.img_uuid,
            state="submitted",
            submitted_at=time.time(),
            error=None,
        )

    def running_jobs(self) -> list[Job]:
        """The jobs this session is still driving (not finished, failed, timed out or stopped)."""
        return self.engine.running()

    def runtime_estimate(self, spec: JobSpec) -> RuntimeEstimate | None:
        """How long a job like ``spec`` takes, from observed history only: the median
        submitted->finished time of the cached results that are comparable (this session's
        backend, the same resolution and the same duration bucket, see :func:`_runtime_of`).

        Returns None when there is no such result. The value is a ``float`` of seconds whose
        ``samples`` says how many results it comes from; the status widget shows an ETA only
        from 3 or more (``widgets._status.MIN_ETA_SAMPLES``). Never raises (an unreadable
        cache gives None).
        """
        try:
            records = self.cache.list()
            backend = self.backend
        except Exception:
            return None
        times = [t for t in (_runtime_of(r, backend, spec) for r in records) if t is not None]
        if not times:
            return None
        return RuntimeEstimate(statistics.median(times), samples=len(times))

    def retry(self, job: Job) -> Job:
        """Submit ``job``'s transformation again (same input, style and parameters) with
        ``force=True``, as :meth:`transform` does; return the new Job (``job`` is untouched).

        A URL input is fetched from its URL again; a file input from its path.

        :raises InputError, BudgetExceeded, LedgerError, CacheError: as :meth:`transform`.
        """
        inp, spec = job.input, job.spec
        source = inp.url if inp.kind == "url" and inp.url else (inp.path or inp.url or "")
        return self.transform(
            source,
            spec.model,
            prompt=spec.prompt,
            duration=spec.duration,
            resolution=spec.resolution,
            seed=spec.seed,
            force=True,
        )

    def successor(self, settings: Settings) -> Session:
        """Return a new :class:`Session` on ``settings`` that continues this one; close this one.

        The new session starts with this session's spend, job count, open reservations and last
        seen balance (:meth:`Usage.carry_over`) and keeps its budget unless ``settings`` sets
        one, so a budget holds across a settings change or a login; it keeps the uploader (not a
        test ``transport``, nor a fixed ``queue_limit``). Then this session is closed: its
        engine thread stops and its database handles close (a panel made with it sees it closed).

        A change is refused while jobs run here, rather than dropping their watch: their
        handles, widgets and placeholders belong to this session. Finished, failed, timed-out
        and stopped jobs are in the ledger and resumable from the new session.

        :raises ConfigError: jobs still run in this session (nothing changed), or ``settings``
            cannot make a session (this one is closed then; calling ``successor`` again retries).
        """
        running = self.running_jobs()
        if running:
            ids = ", ".join(str(j.id or j.key)[:8] for j in running[:3])
            more = f" and {len(running) - 3} more" if len(running) > 3 else ""
            raise ConfigError(
                f"{len(running)} job(s) still running in this session ({ids}{more}); wait for "
                "them or stop watching them (they stay resumable), then change the settings"
            )
        if settings.budget is None and self.usage.budget is not None:
            settings = settings.with_(budget=self.usage.budget)
        # Close first: SQLite keeps a closed connection's file open while another connection
        # of this process still uses the same file, so the old handles close only before the
        # new session opens its own. If the new one fails, calling this again retries.
        self.close()
        new = Session(settings, uploader=self.uploader)
        new.usage.carry_over(self.usage)
        return new

    def close(self) -> None:
        """Stop watching jobs (they stay resumable) and close the client and databases (the
        engine thread's handles too; the thread is joined)."""
        if self._closed:
            return
        self._closed = True
        self.engine.close()
        for part in (self.cache, self.ledger, self.hashes):
            with contextlib.suppress(Exception):
                part.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_session: Session | None = None
_session_lock = threading.Lock()


def get_session() -> Session:
    """Return the process-wide :class:`Session`, creating it on first use from
    ``Settings.resolve()``.

    :raises ConfigError: see :class:`Session`.
    """
    global _session
    with _session_lock:
        if _session is None or _session._closed:
            _session = Session()
        return _session


def replace_session(settings: Settings, *, current: Session | None = None) -> Session:
    """Make the process-wide session one on ``settings`` and return it.

    It continues ``current`` (default: the process-wide session) through
    :meth:`Session.successor` (same spend and budget; the old one is closed), or is a new
    :class:`Session` when there is none.

    :raises ConfigError: jobs still run in the session being replaced (nothing changed), or
        ``settings`` cannot make a session.
    """
    global _session
    with _session_lock:
        old = current if current is not None else _session
        new = old.successor(settings) if old is not None else Session(settings)
        _session = new
        return new


def _set_session(session: Session | None) -> None:
    """Replace the process-wide session (used by the magics' ``%goenhance`` config changes)."""
    global _session
    with _session_lock:
        _session = session


def transform(source: str | Path, style: int | str | Style, **kwargs: Any) -> Job:
    """``get_session().transform(...)``: start a transformation; returns a :class:`Job`."""
    return get_session().transform(source, style, **kwargs)


def resume(img_uuid_or_key: str, *, resubmit: bool = False, timeout: float | None = None) -> Job:
    """``get_session().resume(...)``: re-attach to a job in the ledger."""
    return get_session().resume(img_uuid_or_key, resubmit=resubmit, timeout=timeout)


def styles(refresh: bool = False) -> list[Style]:
    """``get_session().styles(...)``: the model list (disk-cached with a TTL)."""
    return get_session().styles(refresh=refresh)


def credits() -> Credits:
    """``get_session().credits()``: the account balance."""
    return get_session().credits()


def simulator() -> SimulatorControl:
    """Controls of the simulator the process-wide session uses; see :meth:`Session.simulator`."""
    return get_session().simulator()


def export_bundle(path: str | Path, *, inputs: bool = False) -> Path:
    """``get_session().export(...)``: write a bundle of the notebook's lockfile and results."""
    return get_session().export(path, inputs=inputs)


def import_bundle(path: str | Path) -> _repro.ImportReport:
    """``get_session().import_bundle(...)``: seed this machine's cache from a bundle."""
    return get_session().import_bundle(path)


def _url_memo(validators: URLValidators, ref: InputRef) -> dict[str, Any]:
    """The meta-store row for an input URL: its validators and what its bytes were."""
    return {
        "etag": validators.etag,
        "last_modified": validators.last_modified,
        "content_length": validators.content_length,
        "content_hash": ref.content_hash,
        "size": ref.size,
        "duration": ref.duration,
        "width": ref.width,
        "height": ref.height,
        "container": ref.container,
    }


def _remembered_url(row: object) -> tuple[URLValidators, dict[str, Any]] | None:
    """Parse a :func:`_url_memo` row; ``None`` when absent, malformed or without a validator."""
    if not isinstance(row, dict):
        return None
    etag, last = row.get("etag"), row.get("last_modified")
    digest, size = row.get("content_hash"), row.get("size")
    if not (isinstance(digest, str) and isinstance(size, int) and not isinstance(size, bool)):
        return None
    if not isinstance(etag, (str, type(None))) or not isinstance(last, (str, type(None))):
        return None
    length = row.get("content_length")
    validators = URLValidators(
        etag=etag, last_modified=last, content_length=length if isinstance(length, int) else None
    )
    return (validators, row) if validators.usable else None


def _url_ref_from_memo(
    row: dict[str, Any], *, url: str, name: str, duration: int | None, cap: int
) -> InputRef:
    """The :class:`InputRef` of an input URL the server said is unchanged (304).

    :raises InputError: the remembered size is over ``cap``.
    """
    size = int(row["size"])
    if size > cap:
        raise InputError(
            f"the input URL is too large: {name} is {size / 1e6:.1f} MB; "
            f"the limit is {cap / 1e6:g} MB"
        )
    src_dur = row.get("duration")
    src_dur = float(src_dur) if isinstance(src_dur, (int, float)) else None
    warn_if_short(name, src_dur, duration, stacklevel=5)
    return InputRef(
        kind="url",
        name=name,
        content_hash=str(row["content_hash"]),
        size=size,
        path=None,
        url=url,
        duration=src_dur,
        width=row.get("width") if isinstance(row.get("width"), int) else None,
        height=row.get("height") if isinstance(row.get("height"), int) else None,
        container=row.get("container") if isinstance(row.get("container"), str) else None,
    )


class RuntimeEstimate(float):
    """Seconds a job is expected to take (:meth:`Session.runtime_estimate`); ``samples`` is
    how many past results the figure comes from."""

    samples: int

    def __new__(cls, seconds: float, *, samples: int) -> RuntimeEstimate:
        self = super().__new__(cls, seconds)
        self.samples = samples
        return self


def _duration_bucket(seconds: float) -> int:
    """Durations whose runtimes are compared: up to 5 s, up to 10 s, up to 20 s, longer."""
    return next((i for i, top in enumerate((5, 10, 20)) if seconds <= top), 3)


def _runtime_of(record: ResultRecord, backend: str, spec: JobSpec) -> float | None:
    """Seconds from submitted to finished of ``record`` when it is comparable with ``spec``:
    made on ``backend``, recording the same resolution and a duration in the same bucket
    (:func:`_duration_bucket`); else None (a result that does not record them says nothing)."""
    t = record.timings or {}
    p = record.params or {}
    if "submitted" not in t or "finished" not in t or record.backend != backend:
        return None
    if p.get("resolution") != spec.resolution:
        return None
    duration = p.get("duration")
    if not isinstance(duration, (int, float)):
        return None
    if _duration_bucket(duration) != _duration_bucket(spec.duration):
        return None
    runtime = float(t["finished"]) - float(t["submitted"])
    return runtime if runtime > 0 else None
