"""HTTP plumbing of the service: body limit and timeout, request log, rate limit, and 422s that never echo the
input."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import math
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson
from fastapi import HTTPException
from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clv.service.telemetry import observe_request

access = logging.getLogger("api.access")
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
# control characters, space and backslash written as \xNN: a decoded %0A in a path cannot start a forged line
ESCAPES = {c: f"\\x{c:02x}" for c in (*range(33), 92, *range(127, 160))}


class RateLimit:
    """One budget per caller (a key's name, a token's subject, or the client's address with authentication off)
    across the protected routes, spent by the security gate.

    `limits` (the library under slowapi and Flask-Limiter) with its asyncio storages: in this process's
    memory (`memory://`), or in Redis (`redis://host:port`) so that every worker and every replica
    shares one budget. (Its thread-based storage, which slowapi uses, starts a timer thread every few
    requests under load, and each start stalls the event loop.)"""

    def __init__(self, rate: str, storage: str = "memory://") -> None:
        self.item = parse(rate)  # checked with the settings
        if storage.startswith("memory://"):
            backend = MemoryStorage()
        else:  # redis-py's asyncio client; limits names its async storages async+redis://
            backend = storage_from_string(f"async+{storage}", implementation="redispy")
        self.window = FixedWindowRateLimiter(backend)

    async def spend(self, caller: str) -> int | None:
        """Spend one request of the caller's budget: None, or the seconds until it has one again."""
        if await self.window.hit(self.item, "predict", caller):
            return None
        reset, _ = await self.window.get_window_stats(self.item, "predict", caller)
        return max(1, math.ceil(reset - time.time()))


def _text(value: object) -> str | int:
    """A location part or message that is safe to encode: no lone surrogates, nothing echoed."""
    if isinstance(value, int):
        return value
    return str(value).encode("utf-8", "replace").decode("utf-8")


def validation_details(errors: Iterable[dict]) -> list[dict]:
    """The cleaned errors, one per field (the first error a field has)."""
    by_field: dict[str, dict] = {}
    for error in errors:
        cleaned = clean_error(error)
        by_field.setdefault(cleaned["field"], cleaned)
    return list(by_field.values())


def clean_error(error: dict) -> dict:
    """A validation error without the input it refers to (which may not encode: NaN, surrogates)."""
    loc = [_text(part) for part in error.get("loc", ())]
    msg = _text(error.get("msg", "invalid"))
    if error.get("type") == "json_invalid" and len(loc) > 1:  # FastAPI puts the character position in loc: not a field
        msg = f"{msg} at character {loc[-1]}: {_text(error.get('ctx', {}).get('error', ''))}"
        loc = loc[:1]
    field_path = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        field_path += f"[{part}]" if isinstance(part, int) else (f".{part}" if field_path else str(part))
    return {"loc": loc, "field": field_path or "body", "msg": msg, "type": _text(error.get("type", "value_error"))}


class BodyLimit:
    """413 for a body over the limit, before it is read whole or parsed, as the documented JSON problem.
    (FastAPI's own `max_body_size` answers a declared length over the limit in plain text.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # a chunked body with no length: stop reading at the limit
                raise HTTPException(413, f"request body over {self.max_bytes:,} bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"detail": f"request body over {self.max_bytes:,} bytes"})
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class BodyTimeout:
    """408, and the connection closed, for a request whose body has not fully arrived `seconds` after the
    request began: a client that sends half a body and stops holds no connection for long. The app, still
    waiting for the body, is told that the client left, and whatever it answers then is dropped."""

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds
        arrived = started = cut = False

        async def timed() -> Message:
            nonlocal arrived, cut
            if arrived or cut:  # the body is whole: only a disconnect is left to wait for, as long as it takes
                return await receive() if not cut else {"type": "http.disconnect"}
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                cut = True
                if not started:
                    await self._refuse(send)
                return {"type": "http.disconnect"}
            arrived = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if cut:
                return
            started = True
            await send(message)

        await self.app(scope, timed, guarded)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps({"detail": f"request body not complete within {self.seconds:g} s"})
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 408, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One line per request (id, method, path, status, latency, caller; no personal data, never a credential;
    control characters escaped), an X-Request-ID, and the request in the Prometheus metrics (unless `metrics`
    is off)."""

    def __init__(
        self, app: ASGIApp, metrics: bool = True, headers: Callable[[str], list[tuple[bytes, bytes]]] | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.headers = headers or (lambda path: [])  # more headers for every answer, by path: the security ones

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        # a caller's id is kept when it is a plain token: nothing that could forge or split a log line
        request_id = given.decode() if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id  # for the 500 handler, which answers outside
        status = 500
        extra = [(b"x-request-id", request_id.encode("latin-1")), *self.headers(scope["path"])]

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            seconds = time.perf_counter() - started
            if access.isEnabledFor(logging.INFO):  # a record made here, without looking up the caller's frame
                caller = scope["state"].get("caller")
                who = "-" if caller is None else caller.name.translate(ESCAPES)
                path = scope["path"].translate(ESCAPES)
                line = "%s %s %s %d %.2fms %s", (request_id, scope["method"], path, status, seconds * 1000, who)
                access.handle(access.makeRecord(access.name, logging.INFO, __file__, 0, *line, None))
            if self.metrics:
                observe_request(scope["method"], scope["path"], status, seconds)


class AccessFile(logging.handlers.RotatingFileHandler):
    """A RotatingFileHandler that decides to roll over from the file's position alone. The stock one stats
    the path twice and formats each line twice to decide, which is a tenth of a prediction's overhead."""

    def _open(self) -> object:
        """The log, readable by this user only (mode 0600), the rotated files too: it names callers."""
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # a file made before, by another umask
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            self.stream = self._open()
        return self.maxBytes > 0 and self.stream.tell() >= self.maxBytes - 1024  # a line is far shorter


class SecondFormatter(logging.Formatter):
    """logging's own time format, "2024-12-31 10:00:00,123", with the second formatted once a second."""

    second, text = -1, ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self.second:
            self.second, self.text = second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self.text},{int(record.msecs):03d}"


def attach_access_log(path: Path) -> logging.Handler:
    """The request lines go to a rotating file (api.log) for as long as the app runs."""
    handler = AccessFile(path, maxBytes=10_000_000, backupCount=5)
    handler.setFormatter(SecondFormatter("%(asctime)s %(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False
    return handler


class PageFiles(StaticFiles):
    """The page's stylesheet and modules (static/). No build step names them by their content, so a browser
    keeps them but asks again each time (no-cache, with the ETag and Last-Modified StaticFiles sends): a reload
    after an upgrade gets the new page whole, and an unchanged file costs a 304 with no body."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response
