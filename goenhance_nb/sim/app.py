"""The simulator's HTTP face: a Starlette app plus an ASGI middleware for logging and faults.

Routes follow docs/ARCHITECTURE.md §1. API errors use the envelope `{"code","msg","data"}`:
auth failures are HTTP 401, business errors HTTP 200 with a non-zero code (spec §5.4).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from goenhance_nb.sim.core import APIFailure, Simulator
from goenhance_nb.sim.faults import (
    CONTROL_PREFIXES,
    DOWNLOAD_KINDS,
    GENERIC_KINDS,
    FaultError,
    validate_fault,
)

#: Closes the client connection of the current request without (more of) a response.
Aborter = Callable[[Scope], Awaitable[None]]

LOGGED_PREFIXES = ("/api/", "/sim/results/", "/sim/files/", "/sim/uploads", "/sim/previews/")
CHUNK = 1024 * 1024
#: What `html_download` serves instead of the video (a CDN / gateway error page, status 200).
HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>Error</title></head><body>"
    b"<h1>Something went wrong</h1><p>The file could not be delivered. Please try again later."
    b"</p></body></html>\n"
)

#: Every response carries this header, and ``GET /sim/health`` names this service: the client
#: recognises the simulator by asking it, never by its host (DECISIONS 26).
IDENTITY_HEADER = (b"x-goenhance-simulator", b"1")
SERVICE_NAME = "goenhance-simulator"


def envelope(
    code: int, msg: str, data: Any = None, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON response with the API envelope."""
    return JSONResponse(
        {"code": code, "msg": msg, "data": data}, status_code=status, headers=headers
    )


def ok(data: Any) -> JSONResponse:
    """A success envelope."""
    return envelope(0, "Success", data)


def unauthorized() -> JSONResponse:
    """HTTP 401 with the envelope (spec §2 [SIM])."""
    return envelope(
        401,
        "Unauthorized",
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="goenhance-sim"'},
    )


def bearer(request: Request) -> str | None:
    """The bearer token of a request, or None."""
    h = request.headers.get("authorization", "")
    scheme, _, token = h.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class SimApp:
    """Builds the ASGI application around a `Simulator`."""

    def __init__(self, sim: Simulator, aborter: Aborter | None = None) -> None:
        self.sim = sim
        self.aborter = aborter
        routes = [
            Route("/api/v1/video2video/modellist", self.modellist, methods=["GET"]),
            Route("/api/v1/video2video/generate", self.generate, methods=["POST"]),
            Route("/api/v1/jobs/detail", self.job_detail, methods=["GET"]),
            Route("/api/v1/user/tokens", self.tokens, methods=["GET"]),
            Route("/sim/uploads", self.upload, methods=["PUT"]),
            Route("/sim/files/{name}", self.files, methods=["GET", "HEAD"]),
            Route("/sim/results/{job_id}/{name}", self.results, methods=["GET", "HEAD"]),
            Route("/sim/previews/{name}", self.previews, methods=["GET"]),
            Route("/sim/health", self.health, methods=["GET"]),
            Route("/sim/requests", self.requests_log, methods=["GET", "DELETE"]),
            Route("/sim/config", self.config, methods=["GET", "POST", "DELETE"]),
            Route("/sim/faults", self.faults, methods=["GET", "POST", "DELETE"]),
        ]
        self.starlette = Starlette(
            routes=routes, exception_handlers={HTTPException: self._http_error}
        )
        self.asgi: ASGIApp = FaultAndLogMiddleware(self.starlette, self)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return envelope(exc.status_code, str(exc.detail), status=exc.status_code)

    async def abort(self, scope: Scope) -> None:
        """Drop the current connection (no further bytes) and let uvicorn notice."""
        if self.aborter is not None:
            await self.aborter(scope)
        else:  # pragma: no cover - only without a server handle
            raise ConnectionAbortedError("simulated connection drop")

    def _auth(self, request: Request) -> str | None:
        return self.sim.account_for(bearer(request))

    # -- API ----------------------------------------------------------------------------------
    async def modellist(self, request: Request) -> Response:
        if self._auth(request) is None:
            return unauthorized()
        return ok(self.sim.model_list())

    async def tokens(self, request: Request) -> Response:
        aid = self._auth(request)
        if aid is None:
            return unauthorized()
        return ok(self.sim.tokens(aid))

    async def generate(self, request: Request) -> Response:
        aid = self._auth(request)
        if aid is None:
            return unauthorized()
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return envelope(400, "invalid params: body")
        path = request.url.path
        try:
            self.sim.validate_body(body)
        except APIFailure as exc:
            return envelope(exc.code, exc.msg)
        reject = self.sim.faults.take({"reject_generate"}, path)
        if reject is not None:
            return envelope(reject["code"], reject["msg"])
        fail = self.sim.faults.take({"job_failed"}, path) is not None
        try:
            data = self.sim.generate(aid, body, fail=fail)
        except APIFailure as exc:
            return envelope(exc.code, exc.msg)
        return ok(data)

    async def job_detail(self, request: Request) -> Response:
        aid = self._auth(request)
        if aid is None:
            return unauthorized()
        job_id = request.query_params.get("img_uuid", "")
        if not job_id:
            return envelope(400, "invalid params: img_uuid")
        path = request.url.path
        if not self.sim.job_exists(aid, job_id):
            return envelope(404, "job not found")
        if self.sim.faults.take({"lost_job"}, path, img_uuid=job_id) is not None:
            return envelope(404, "job not found")
        unknown = self.sim.faults.take({"unknown_status"}, path, img_uuid=job_id)
        try:
            data = await asyncio.to_thread(self._detail, aid, job_id, unknown, path)
        except APIFailure as exc:
            return envelope(exc.code, exc.msg)
        return ok(data)

    def _detail(
        self, aid: str, job_id: str, unknown: dict[str, Any] | None, path: str
    ) -> dict[str, Any]:
        data = self.sim.job_detail(
            aid, job_id, status_override=unknown["status"] if unknown else None
        )
        has_url = bool(data["json"] or data.get("img_url") or data.get("output"))
        # a result URL is being handed out: maybe make it an already expired one
        if has_url and self.sim.faults.take({"expired_url"}, path, img_uuid=job_id) is not None:
            data = self.sim.job_detail(
                aid,
                job_id,
                expired_url=True,
                status_override=unknown["status"] if unknown else None,
            )
        return data

    # -- files --------------------------------------------------------------------------------
    async def upload(self, request: Request) -> Response:
        if self._auth(request) is None:
            return unauthorized()
        tmp = self.sim.new_tmp()
        h = hashlib.sha256()
        n = 0
        with tmp.open("wb") as f:
            async for chunk in request.stream():
                h.update(chunk)
                n += len(chunk)
                f.write(chunk)
        if n == 0:
            tmp.unlink(missing_ok=True)
            return envelope(400, "invalid params: empty upload", status=400)
        # the client percent-encodes the name (any Unicode, even a newline, fits one header)
        raw_name = request.headers.get("x-filename")
        filename = unquote(raw_name, errors="replace") if raw_name is not None else None
        url = self.sim.store_upload(tmp, h.hexdigest(), filename)
        return JSONResponse({"url": url, "size": n, "sha256": h.hexdigest()})

    async def files(self, request: Request) -> Response:
        path = self.sim.files_path(request.path_params["name"])
        if path is None or not path.is_file():
            return envelope(404, "file not found", status=404)
        return await self._serve_file(request, path, throttle=False)

    async def results(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        url_path = request.url.path
        if not self.sim.verify(
            url_path, request.query_params.get("exp"), request.query_params.get("sig")
        ):
            return envelope(403, "Forbidden: link expired or invalid signature", status=403)
        if url_path != self.sim.result_url_path(job_id):
            return envelope(404, "file not found", status=404)
        path = self.sim.result_file_for(job_id)
        if path is None:
            return envelope(404, "file not found", status=404)
        return await self._serve_file(request, path, throttle=True)

    async def _serve_file(self, request: Request, path: Path, *, throttle: bool) -> Response:
        st = path.stat()
        size = st.st_size
        validators = file_validators(st)
        if not_modified(request, validators):
            return Response(status_code=304, headers=validators)
        ctype = (
            "video/mp4"
            if path.suffix.lower() in (".mp4", ".m4v")
            else (
                "video/quicktime" if path.suffix.lower() == ".mov" else "application/octet-stream"
            )
        )
        headers = {"Accept-Ranges": "bytes", "Content-Type": ctype, **validators}
        start, end, status = 0, size - 1, 200
        rng = request.headers.get("range")
        if rng:
            parsed = parse_range(rng, size)
            if parsed is None:
                return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        fault = self.sim.faults.take(DOWNLOAD_KINDS, request.url.path)
        kind = fault["kind"] if fault else None
        if fault is not None and kind not in ("truncated_download", "short_download"):
            return self._bad_download(fault)
        if kind == "short_download":  # a server that ignores Range: always 200 from byte 0
            start, length, status = 0, size, 200
            headers.pop("Content-Range", None)
            headers["Content-Length"] = str(size)
        cut = int(fault.get("after_bytes", length // 2)) if fault else None
        rate = self.sim.config.get("download_rate") if throttle else None
        scope = request.scope
        return StreamingResponse(
            self._stream(path, start, length, rate, cut, scope),
            status_code=status,
            headers=headers,
        )

    def _bad_download(self, fault: dict[str, Any]) -> Response:
        """A 200 answer whose body is not the file: an HTML error page (`html_download`),
        `size` zero bytes (`zeros_download`, default 2 MB), or `size` bytes (default 64 MiB)
        with (`length`, default true) or without a Content-Length (`oversize_download`)."""
        kind = fault["kind"]
        if kind == "html_download":
            return Response(HTML_ERROR_PAGE, status_code=200, media_type="text/html")
        default = 2_000_000 if kind == "zeros_download" else 64 * 1024 * 1024
        size = int(fault.get("size", default))
        headers = {"Content-Type": "video/mp4"}
        if kind == "zeros_download" or fault.get("length", True):
            headers["Content-Length"] = str(size)

        async def zeros() -> AsyncIterator[bytes]:
            block = bytes(min(CHUNK, size))
            left = size
            while left > 0:
                n = min(len(block), left)
                left -= n
                yield block[:n]
                await asyncio.sleep(0)

        return StreamingResponse(zeros(), status_code=200, headers=headers)

    async def _stream(
        self, path: Path, start: int, length: int, rate: float | None, cut: int | None, scope: Scope
    ) -> AsyncIterator[bytes]:
        sent = 0
        chunk_size = CHUNK if not rate else max(1, min(CHUNK, int(rate / 10)))
        fd = os.open(path, os.O_RDONLY)
        try:
            while sent < length:
                want = min(chunk_size, length - sent)
                if cut is not None:
                    want = min(want, cut - sent)
                    if want <= 0:
                        await self.abort(scope)
                        return
                data = os.pread(fd, want, start + sent)
                if not data:
                    break
                sent += len(data)
                yield data
                if rate:
                    await asyncio.sleep(len(data) / float(rate))
            if cut is not None and sent >= cut and sent < length:
                await self.abort(scope)
        finally:
            os.close(fd)

    async def previews(self, request: Request) -> Response:
        m = re.fullmatch(r"(\d+)\.jpg", request.path_params["name"])
        data = await asyncio.to_thread(self.sim.preview, int(m.group(1))) if m else None
        if data is None:
            return envelope(404, "preview not found", status=404)
        return Response(
            data, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=86400"}
        )

    # -- control ------------------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        """No auth: the identity probe (``service``) and the port file's liveness check (``pid``)."""
        return JSONResponse({"ok": True, "service": SERVICE_NAME, "pid": os.getpid(), "version": 1})

    async def requests_log(self, request: Request) -> Response:
        if self._auth(request) is None:
            return unauthorized()
        if request.method == "DELETE":
            with self.sim.lock:
                self.sim.requests.clear()
            return JSONResponse({"ok": True})
        with self.sim.lock:
            return JSONResponse({"requests": list(self.sim.requests)})

    async def config(self, request: Request) -> Response:
        if self._auth(request) is None:
            return unauthorized()
        if request.method == "GET":
            with self.sim.lock:
                return JSONResponse(dict(self.sim.config))
        if request.method == "DELETE":
            return JSONResponse(self.sim.reset_config())
        try:
            patch = json.loads(await request.body())
            return JSONResponse(self.sim.patch_config(patch))
        except (json.JSONDecodeError, ValueError) as exc:
            return envelope(400, f"invalid config: {exc}", status=400)

    async def faults(self, request: Request) -> Response:
        if self._auth(request) is None:
            return unauthorized()
        if request.method == "DELETE":
            self.sim.faults.clear()
            return JSONResponse({"ok": True})
        if request.method == "GET":
            return JSONResponse({"faults": self.sim.faults.list()})
        try:
            body = json.loads(await request.body())
            raw = body.get("faults") if isinstance(body, dict) else None
            if not isinstance(raw, list):
                raise FaultError('body must be {"faults": [...]}')
            faults = [validate_fault(f) for f in raw]
        except (json.JSONDecodeError, FaultError) as exc:
            return envelope(400, f"invalid faults: {exc}", status=400)
        self.sim.faults.add(faults)
        return JSONResponse({"ok": True, "faults": self.sim.faults.list()})


async def _oversize_json_body(size: int) -> AsyncIterator[bytes]:
    head = b'{"code": 0, "msg": "Success", "data": {"pad": "'
    tail = b'"}}'
    yield head
    left = max(0, size - len(head) - len(tail))
    block = b"x" * min(CHUNK, max(left, 1))
    while left > 0:
        n = min(len(block), left)
        left -= n
        yield block[:n]
        await asyncio.sleep(0)
    yield tail


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """Parse a single `bytes=a-b` / `bytes=a-` / `bytes=-n` range; None when unsatisfiable."""
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (not m.group(1) and not m.group(2)) or size == 0:
        return None
    if not m.group(1):
        n = int(m.group(2))
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class FaultAndLogMiddleware:
    """Logs API calls and downloads, and applies the generic faults (5xx, 429, reset, slow,
    malformed JSON) before the route runs. Control paths are never faulted.

    A generic fault with `"after": true` runs the route first and then breaks the answer
    (the request had its effect, e.g. a job was created, but the client never learns).
    """

    def __init__(self, app: ASGIApp, owner: SimApp) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method: str = scope["method"]
        query = scope.get("query_string", b"").decode("latin-1")
        sim = self.owner.sim
        # logged at arrival (so the log is in arrival order); status 0 = no response sent
        client = scope.get("client")
        conn = int(client[1]) if client else None
        entry = (
            sim.log_request(method, path, query, 0, conn)
            if path.startswith(LOGGED_PREFIXES)
            else None
        )

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                if entry is not None:
                    entry["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), IDENTITY_HEADER]}
            await send(message)

        fault = None
        if not path.startswith(CONTROL_PREFIXES):
            img_uuid = None
            if path.startswith("/api/v1/jobs/detail"):
                m = re.search(r"(?:^|&)img_uuid=([^&]*)", query)
                img_uuid = m.group(1) if m else None
            fault = sim.faults.take(GENERIC_KINDS, path, img_uuid=img_uuid)
        if fault is None:
            await self.app(scope, receive, send_logged)
        else:
            await self._apply(fault, scope, receive, send_logged)

    async def _oversize_json(self, fault: dict[str, Any], send: Send) -> None:
        """`oversize_json`: a valid success envelope of `size` bytes (default 8 MiB), with
        (`length`, default true) or without a Content-Length."""
        size = int(fault.get("size", 8 * 1024 * 1024))
        headers = [(b"content-type", b"application/json")]
        if fault.get("length", True):
            headers.append((b"content-length", str(max(size, 50)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for chunk in _oversize_json_body(max(size, 50)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _apply(
        self, fault: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> None:
        kind = fault["kind"]
        if kind == "slow":
            await asyncio.sleep(float(fault.get("delay", 1.0)))
            await self.app(scope, receive, send)
            return
        if fault.get("after") or kind == "no_job_id":

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
        if kind == "reset":
            await self.owner.abort(scope)
            return
        if kind == "oversize_json":
            await self._oversize_json(fault, send)
            return
        if kind == "no_job_id":  # always "after": the route ran, the answer lost its id
            await envelope(0, "Success", {})(scope, receive, send)
            return
        if kind == "malformed_json":
            body = b'{"code": 0, "msg": "Success", "data": {"img_uuid": '
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        status = {
            "http_500": 500,
            "http_502": 502,
            "http_503": 503,
            "http_504": 504,
            "http_429": 429,
        }[kind]
        msg = {
            500: "Server Error",
            502: "Bad Gateway",
            503: "Service Unavailable",
            504: "Gateway Timeout",
            429: "Too Many Requests",
        }[status]
        headers = None
        if status == 429 or (status == 503 and "retry_after" in fault):
            ra = fault.get("retry_after", 1)
            headers = {"Retry-After": str(int(ra)) if float(ra).is_integer() else str(ra)}
        await envelope(status, msg, status=status, headers=headers)(scope, receive, send)


def file_validators(st: os.stat_result) -> dict[str, str]:
    """``ETag`` (strong: size, inode and mtime in ns, so rewriting the file changes it) and
    ``Last-Modified`` for a served file, as real static file servers and CDNs send them."""
    etag = f'"{st.st_size:x}-{st.st_ino:x}-{st.st_mtime_ns:x}"'
    return {"ETag": etag, "Last-Modified": formatdate(st.st_mtime, usegmt=True)}


def not_modified(request: Request, validators: dict[str, str]) -> bool:
    """RFC 9110 13.1: ``If-None-Match`` (weak comparison; takes precedence) or, without it,
    ``If-Modified-Since`` at or after ``Last-Modified`` -> answer 304 to a GET/HEAD."""
    if request.method not in ("GET", "HEAD"):
        return False
    inm = request.headers.get("if-none-match")
    if inm is not None:
        if inm.strip() == "*":
            return True
        ours = validators["ETag"].removeprefix("W/")
        return any(tag.strip().removeprefix("W/") == ours for tag in inm.split(","))
    ims = request.headers.get("if-modified-since")
    if ims is None:
        return False
    try:
        since = parsedate_to_datetime(ims)
        modified = parsedate_to_datetime(validators["Last-Modified"])
    except (TypeError, ValueError):
        return False
    return modified <= since
