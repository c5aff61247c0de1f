"""The :class:`Session`: one object that owns settings, client, cache, ledger, store, engine, usage.

``Session.transform(source, style, ...)`` validates synchronously (a bad input raises
:class:`InputError` here, before any HTTP call), computes the request key, checks the budget and
returns a non-blocking :class:`~goenhance_nb._engine.Job`. With no API key and no base URL the
session uses the embedded simulator (``_simproc.ensure_simulator``), shared by every kernel on the
machine through a port file in the cache dir.

Module-level :func:`transform`, :func:`resume`, :func:`styles`, :func:`credits` use the
process-wide session from :func:`get_session`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import filelock

from goenhance_nb._cache import ResultCache
from goenhance_nb._client import AsyncClient, URLValidators
from goenhance_nb._engine import Job, JobEngine, JobRequest
from goenhance_nb._errors import (
    APIError,
    AuthError,
    GoEnhanceError,
    InputError,
    JobFailed,
    LedgerError,
    ResultExpired,
    TooLarge,
    TransportError,
    redact_url,
)
from goenhance_nb._inputs import (
    HashMemo,
    InputRef,
    Uploader,
    inspect_file,
    is_url,
    validate_params,
    warn_if_short,
)
from goenhance_nb._jsondisk import network_fs_type, private_dir
from goenhance_nb._keys import hash_bytes, request_key
from goenhance_nb._ledger import Ledger, LedgerEntry
from goenhance_nb._records import Credits, JobSpec, Style
from goenhance_nb._settings import DEFAULT_REAL_BASE_URL, SecretKey, Settings
from goenhance_nb._simproc import ensure_simulator
from goenhance_nb._store import ResultStore
from goenhance_nb._usage import Usage

__all__ = ["STYLES_TTL", "Session", "credits", "get_session", "resume", "styles", "transform"]

#: Seconds the model list stays cached on disk (DECISIONS 7: a cache hit needs no HTTP).
STYLES_TTL = 6 * 3600.0
#: Seconds a fetch of an input URL waits for another fetch of the same URL to finish.
_URL_LOCK_WAIT = 600.0


class Session:
    """Owns :class:`Settings`, the :class:`AsyncClient`, cache, ledger, store, engine and usage.

    :param settings: defaults to ``Settings.resolve()`` (environment, key file).
    :param transport: an ``httpx.AsyncBaseTransport`` for the client (test seam).
    :param uploader: ``fn(path) -> public https URL`` used for local files with the real API.
    :raises ConfigError: bad settings, or the embedded simulator does not start.

    ``backend`` is ``"simulated"`` for the embedded simulator (from its port file) or for a base
    URL that identifies itself as our simulator when asked once here; otherwise the API's host.
    Only then does a local file go to the simulator's upload endpoint and results carry the
    SIMULATED label; with any other backend a local file needs ``uploader``.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: Any = None,
        uploader: Uploader | None = None,
        queue_limit: int | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.resolve()
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
        api_key = s.api_key
        embedded = s.base_url is None and api_key is None
        if embedded:
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
        self._has_key = api_key is not None
        self._backend: str | None = "simulated" if embedded else self._identify(base_url)

    @property
    def backend(self) -> str:
        """``"simulated"`` or the real API's host (never a port; DECISIONS 7/26).

        Known before any request key is computed, and never from the host alone: an explicit
        base URL that did not answer when the session was made is asked again here (with the
        transport's backoff) before anything is keyed or sent.

        :raises TransportError: the server still does not answer (nothing was sent).
        """
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
        answers, loopback or not, is a real API keyed by its host. ``None``: nothing answered
        yet (asked again on first use of :attr:`backend`).
        """
        host = urlsplit(base_url).hostname or "unknown"
        if base_url.rstrip("/") == DEFAULT_REAL_BASE_URL:
            return host
        answer = self.engine.run(self.client.is_simulator())
        if answer is None:
            return None
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
        return f"<Session backend={backend!r} cache_dir={str(self.cache_dir)!r}>"

    @property
    def is_simulated(self) -> bool:
        """True when jobs run on a simulator (no real credits are spent)."""
        return self.backend == "simulated"

    # -- look-ups --------------------------------------------------------------------------
    def styles(self, refresh: bool = False) -> list[Style]:
        """Return the model list; served from the disk cache (TTL :data:`STYLES_TTL`) without
        any HTTP request unless ``refresh`` or the cached list is missing/stale.

        :raises GoEnhanceError: the API could not be reached or refused (see ``AsyncClient``).
        """
        name = f"styles:{self.backend}"
        if not refresh:
            cached = self.cache.meta_get(name, max_age=STYLES_TTL)
            if isinstance(cached, list):
                try:
                    return [Style.from_json(d) for d in cached]
                except (ValueError, TypeError):
                    pass
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
        for refresh in (False, True):
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
        done = getattr(self, "_styles_refreshed", False)
        self._styles_refreshed = True
        return not done

    def credits(self) -> Credits:
        """Return the account balance (one HTTP request).

        :raises GoEnhanceError: see ``AsyncClient.credits``.
        """
        self._require_key()
        cr = self.engine.run(self.client.credits())
        self.usage.last_credits = cr.count
        return cr

    def jobs(self) -> list[LedgerEntry]:
        """Return all ledger entries (jobs this cache dir knows), newest first."""
        return self.ledger.entries()

    # -- inputs ----------------------------------------------------------------------------
    def inspect(self, source: str | Path, *, duration: int | None = None) -> InputRef:
        """Validate ``source`` (a local path or http(s) URL) and return its :class:`InputRef`.

        :raises InputError: see :func:`goenhance_nb._inputs.inspect_file`; also a local file
            with the real API and no uploader.
        """
        max_bytes = None if self.is_simulated else int(self.settings.max_upload_mb * 1_000_000)
        if is_url(source):
            return self._inspect_url(str(source), duration=duration, max_bytes=max_bytes)
        if not isinstance(source, (str, Path)):
            raise InputError(
                f"source must be a file path or an http(s) URL, got {type(source).__name__}"
            )
        ref = inspect_file(Path(source), self.hashes, duration=duration, max_bytes=max_bytes)
        if not self.is_simulated and self.uploader is None:
            raise InputError(
                f"{ref.name} is a local file, but the GoEnhance API only accepts public URLs: "
                "pass an http(s) URL as the source, or give Session(uploader=fn) a function that "
                "uploads a file and returns its public https URL"
            )
        return ref

    def _inspect_url(self, url: str, *, duration: int | None, max_bytes: int | None) -> InputRef:
        """Download ``url`` into a temp file of its own, validate and hash it, delete it.

        The validators the server gave (``ETag``, ``Last-Modified``, ``Content-Length``) are
        remembered with the content hash and probe in the cache's meta store, under a hash of
        the full URL (the URL itself is never stored). A repeat sends ONE conditional GET
        (:meth:`AsyncClient.fetch_input`): a 304 reuses the remembered hash and probe (no body,
        no hashing, no PyAV); a 200 (changed bytes) is validated and hashed afresh, so a
        changed input is a new request key. A server that sends no validators is downloaded
        and hashed every time.

        The temp name is unique (``mkstemp``), so two threads or kernels fetching the same URL
        never share a file; a per-URL lock (``<cache_dir>/locks/src-*.lock``) lets one fetch
        at a time (the next waits, then fetches its own copy). The download is capped as the
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
        lock = filelock.FileLock(
            str(self.ledger.lock_dir / f"src-{hash_bytes(url.encode())[:32]}.lock")
        )
        locked = False
        if not self.engine.on_engine_thread():  # never block the loop the holder needs
            try:
                lock.acquire(timeout=_URL_LOCK_WAIT)
                locked = True
            except filelock.Timeout:
                pass  # the other fetch hangs; ours uses its own temp file anyway
        tmp: Path | None = None
        memo_name = f"src-url:{hash_bytes(url.encode())}"
        known = _remembered_url(self.cache.meta_get(memo_name))
        try:
            tmp = self.store.new_temp("src-")
            fresh = self.engine.run(
                self.client.fetch_input(url, tmp, known=known[0] if known else None, max_bytes=cap)
            )
            if fresh is None and known is not None:  # 304: the bytes we hashed and probed
                return _url_ref_from_memo(known[1], url=url, name=name, duration=duration, cap=cap)
            ref = inspect_file(
                tmp,
                None,
                duration=duration,
                max_bytes=max_bytes,
                kind="url",
                url=url,
                name=name,
            )
            if fresh is not None and (fresh.usable or known is not None):
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
            if tmp is not None:
                tmp.unlink(missing_ok=True)
            if locked:
                lock.release()

    def _reference_url(self, ref: InputRef) -> Callable[[], Any]:
        async def get() -> str:
            if ref.kind == "url" and ref.url:
                return ref.url
            assert ref.path is not None
            scope = self.base_url if self.is_simulated else self.backend
            name = f"upload:{scope}:{ref.content_hash}"
            cached = self.cache.meta_get(name)
            if isinstance(cached, str):
                return cached
            if self.is_simulated:
                url = await self.client.sim_upload(Path(ref.path))
            else:
                if self.uploader is None:
                    raise InputError("no uploader for a local file with the real API")
                url = await asyncio.to_thread(self.uploader, Path(ref.path))
                if not is_url(url):
                    raise InputError("the uploader did not return an http(s) URL")
            self.cache.meta_set(name, url)
            return url

        return get

    # -- jobs ------------------------------------------------------------------------------
    def transform(
        self,
        source: str | Path,
        style: int | str | Style,
        *,
        prompt: str | None = None,
        duration: int = 5,
        resolution: str = "720p",
        seed: int = -1,
        force: bool = False,
        timeout: float | None = None,
    ) -> Job:
        """Start transforming ``source`` with ``style``; return a :class:`Job` at once.

        Validation runs here, synchronously: parameters, the style (against the cached model
        list), the source file (PyAV) — a bad input raises before any job HTTP call. A result
        already cached for the same request key is served without HTTP; a job for the key
        already in the ledger (this or an earlier process) is re-attached, never re-submitted.

        :raises InputError: bad parameter, unknown style, unusable source.
        :raises BudgetExceeded: the session budget would be exceeded (no HTTP call made).
        :raises LedgerError: an earlier run left this job 'submitting' (use resume with
            ``resubmit=True``), or the ledger holds a refused (non-JSON) row.
        :raises CacheError: the cache holds a refused (non-JSON) row.
        """
        validate_params(duration=duration, resolution=resolution, prompt=prompt, seed=seed)
        self._require_key()
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise InputError(f"timeout must be a positive number of seconds, got {timeout!r}")
        ref = self.inspect(source, duration=duration)
        st = self.resolve_style(style)
        spec = JobSpec(
            model=st.id, duration=duration, resolution=resolution, seed=seed, prompt=prompt
        )
        key = request_key(ref.content_hash, spec, st.version, self.backend)
        existing = self.engine.join(key, timeout)  # a live job: wait for it (DECISIONS 27)
        if existing is not None:
            return existing
        self.ledger.check_orphan(key)  # never re-sent silently (DECISIONS 8), even with force
        estimate = None
        if self._needs_new_charge(key, force):
            estimate = self.usage.estimate(st.id, resolution, duration, is_vip=st.is_vip)
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
        return self.engine.submit(req)

    def _needs_new_charge(self, key: str, force: bool) -> bool:
        """Would running ``key`` now submit a new (paid) job? (cache miss and nothing in flight)"""
        if not force:
            _, status = self.cache.lookup(key)
            if status == "ok":
                return False
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
            return existing
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
            reference_url=None,
            timeout=timeout,
            resubmit=resubmit,
            estimate=estimate,
            source_name=entry.source_name,
        )
        if resubmit and entry.state == "failed":
            req.force = True
        return self.engine.submit(req)

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

    def close(self) -> None:
        """Stop watching jobs (they stay resumable) and close the client and databases."""
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


def _remembered_url(row: Any) -> tuple[URLValidators, dict[str, Any]] | None:
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
