"""HTTP plumbing of the service: the body read whole under its limit and timeout, the request log (written by a
thread of its own), the rate limit, the prediction routes' short way, and 422s that never echo the input."""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import logging
import logging.handlers
import math
import os
import queue
import re
import secrets
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
from fastapi import Request
from fastapi.routing import APIRoute
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
POLL_SECONDS = 0.05  # how often the request log's thread looks for lines to write


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


async def read_body(receive: Receive, send: Send, max_bytes: int, seconds: float, began: float) -> Message | None:
    """The request's body whole, as one message, read before its route runs: 413 past `max_bytes` (a chunked body
    with no length stops at the limit), 408 and the connection closed when it is not whole `seconds` after the
    request `began` (the loop's time): a client that sends half a body and stops holds no connection for long.
    None when it answered, or when the client left."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(began + seconds):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return None  # the client left
                body = message.get("body", b"")
                size += len(body)
                if size > max_bytes:
                    await too_large(send, max_bytes)
                    return None
                if not message.get("more_body", False):
                    break
                chunks.append(body)
    except TimeoutError:
        await refuse(send, 408, f"request body not complete within {seconds:g} s", [(b"connection", b"close")])
        return None
    if chunks:  # a body in several parts: one message, as a server sends a small body
        message = {"type": "http.request", "body": b"".join([*chunks, body]), "more_body": False}
    return message


def declared_body(scope: Scope) -> tuple[int, bool]:
    """The body's declared length (0 without one, or with one that is not a number), and whether a body follows."""
    length, chunked = b"", False
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
    size = int(length) if length.isdigit() else 0
    return size, chunked or size > 0


def replay(message: Message, receive: Receive) -> Receive:
    """A receive that gives the body read whole, then what the server says next (a disconnect)."""
    pending = [message]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


async def too_large(send: Send, max_bytes: int) -> None:
    await refuse(send, 413, f"request body over {max_bytes:,} bytes", [])


async def refuse(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]]) -> None:
    """An answer of the documented JSON problem, {"detail": ...}, sent before any route runs."""
    body = orjson.dumps({"detail": detail})
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One line per request (id, method, path, status, latency, caller; no personal data, never a credential;
    control characters escaped), an X-Request-ID, the security headers, and the request in the Prometheus metrics
    (unless `metrics` is off). The line is a record put on the log's queue (attach_access_log): the file is
    written by a thread of its own, off the request's path."""

    def __init__(
        self, app: ASGIApp, metrics: bool = True, headers: Callable[[str], list[tuple[bytes, bytes]]] | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.headers = headers or (lambda path: [])  # more headers for every answer, by path: the security ones
        # a request's own id: 64 random bits for this process (workers differ) and a count, 32 hex digits; unique
        # without a system call for random bytes at every request
        self.prefix, self.count = secrets.token_hex(8), itertools.count()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given = value
        # a caller's id is kept when it is a plain token: nothing that could forge or split a log line
        request_id = given.decode() if REQUEST_ID.fullmatch(given) else f"{self.prefix}{next(self.count):016x}"
        scope.setdefault("state", {})["request_id"] = request_id  # for the 500 handler, which answers outside
        status = 500
        extra = [(b"x-request-id", request_id.encode("latin-1")), *self.headers(scope["path"])]

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
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
    """A RotatingFileHandler that keeps count of the bytes it wrote to decide to roll over, and writes its buffer
    when told (`flush`; AccessLogFile's thread does once the queue is empty, `close` too) rather than a system call
    a line. The stock one stats the path twice and formats each line twice to decide."""

    size = 0  # bytes in the file: those it held when opened, and those written since

    def _open(self) -> object:
        """The log, readable by this user only (mode 0600), the rotated files too: it names callers."""
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # a file made before, by another umask
        self.size = os.fstat(fd).st_size
        return open(fd, self.mode, encoding=self.encoding, errors=self.errors)

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.stream is None:
            self.stream = self._open()
        return self.maxBytes > 0 and self.size >= self.maxBytes - 1024  # a line is far shorter

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.shouldRollover(record):
                self.doRollover()
            if self.stream is None:  # rolled over without delay: reopened
                self.stream = self._open()
            line = self.format(record) + self.terminator
            self.stream.write(line)
            self.size += len(line.encode(self.stream.encoding, "replace"))
        except Exception:
            self.handleError(record)


class AccessFormatter(logging.Formatter):
    """A request's line: logging's own time format, "2024-12-31 10:00:00,123", the second formatted once a second,
    then the message."""

    second, text = -1, ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self.second:
            self.second, self.text = second, time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
        return f"{self.text},{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.stack_info:  # not a request's line: logging's own layout, with the traceback
            return super().format(record)
        return f"{self.formatTime(record)} {record.getMessage()}"


class Tray:
    """The request log's queue, as QueueHandler and QueueListener use it: a line put on it never wakes the writing
    thread, which looks every POLL_SECONDS and takes what has gathered. Woken at every line, as by queue.SimpleQueue,
    the thread took the interpreter's lock from the requests each time: a fifth of the CPU a request spent outside
    its scoring went to it."""

    def __init__(self) -> None:
        self.items: collections.deque[logging.LogRecord | None] = collections.deque()  # None: the listener's stop

    def put_nowait(self, item: logging.LogRecord | None) -> None:
        self.items.append(item)  # atomic: no lock, no wake-up

    def get(self, block: bool = True) -> logging.LogRecord | None:
        while True:
            try:
                return self.items.popleft()
            except IndexError:
                if not block:
                    raise queue.Empty from None
                time.sleep(POLL_SECONDS)

    def empty(self) -> bool:
        return not self.items


class Handoff(logging.handlers.QueueHandler):
    """Puts a request's record on the queue as it is. The stock handler formats it and copies it first, so that it
    could cross to another process; these records stay in this one, and their arguments are plain values."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class Writer(logging.handlers.QueueListener):
    """logging's QueueListener that writes the file's buffer when the queue is empty: the lines gathered since it
    last looked cost one system call, not one a line."""

    def handle(self, record: logging.LogRecord) -> None:
        super().handle(record)
        if self.queue.empty():
            for handler in self.handlers:
                handler.flush()


class AccessLogFile:
    """The request log's file (rotating, mode 0600) for as long as the app runs. A request puts its line's record
    on a queue (Tray); a thread (Writer, a QueueListener) formats the lines and writes them, a few hundredths of a
    second after their answers. `close` writes what is queued."""

    def __init__(self, path: Path) -> None:
        self.file = AccessFile(path, maxBytes=10_000_000, backupCount=5)
        self.file.setFormatter(AccessFormatter("%(asctime)s %(message)s"))
        lines = Tray()
        self.handoff = Handoff(lines)
        self.listener = Writer(lines, self.file)
        self.listener.start()
        access.addHandler(self.handoff)
        access.setLevel(logging.INFO)
        access.propagate = False

    def close(self) -> None:
        access.removeHandler(self.handoff)
        self.listener.stop()  # the lines queued are written before the thread ends
        self.file.close()


def attach_access_log(path: Path) -> AccessLogFile:
    """The request lines go to a rotating file (api.log), written off the requests' path."""
    return AccessLogFile(path)


class PageFiles(StaticFiles):
    """The page's stylesheet and modules (static/). No build step names them by their content, so a browser
    keeps them but asks again each time (no-cache, with the ETag and Last-Modified StaticFiles sends): a reload
    after an upgrade gets the new page whole, and an unchanged file costs a 304 with no body."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        return response


class LeanRoute(APIRoute):
    """A route whose usual request takes a short way past FastAPI's request handling: a POST with a body sent as
    application/json and no query string is parsed by orjson and validated by the route's own body field (the
    TypeAdapter FastAPI validates it with), its one dependency is awaited, the endpoint called and its response
    sent. Any other request, a body that does not parse or validate (given back whole), and an app with
    dependency overrides go FastAPI's own way, which answers them as it always has (its 422s, its 400 for a body
    that is not UTF-8). An exception of the dependency or the endpoint goes to the app's handlers, as FastAPI's
    own way sends it. The signature, and so /openapi.json, is FastAPI's: the route declares a body, one dependency
    that takes the request alone, the request, and query parameters with defaults."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        (self.body,) = dependant.body_params
        (self.dependency,) = dependant.dependencies
        dependency = self.dependency
        own = dependency.dependencies or dependency.query_params or dependency.header_params or dependency.body_params
        if own or not inspect.iscoroutinefunction(dependency.call) or not dependency.request_param_name:
            raise TypeError(f"{path}: LeanRoute's dependency must be an async function of the request alone")
        if dependant.path_params or dependant.header_params or dependant.cookie_params:
            raise TypeError(f"{path}: LeanRoute takes a body, one dependency, the request and query parameters")
        if any(param.field_info.is_required() for param in dependant.query_params):
            raise TypeError(f"{path}: LeanRoute's query parameters need defaults")
        self.defaults = {param.name: param.get_default() for param in dependant.query_params}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        usual = scope["method"] == "POST" and not scope["query_string"] and json_body(scope)
        if not usual or scope["app"].dependency_overrides:
            await super().handle(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            body = await request.body()
        except Exception:  # the body did not arrive: FastAPI's own way says so
            await super().handle(scope, receive, send)
            return
        response = await self.short_way(request, body)
        if response is None:
            whole: Message = {"type": "http.request", "body": body, "more_body": False}
            await super().handle(scope, replay(whole, receive), send)
            return
        await response(scope, receive, send)

    async def short_way(self, request: Request, body: bytes) -> Response | None:
        """The endpoint's response, or None for a body that FastAPI's own way should answer."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        value, errors = self.body.validate(data, loc=("body",))
        if errors:
            return None
        dependency, dependant = self.dependency, self.dependant
        values = {**self.defaults, self.body.name: value, dependency.name: await dependency.call(request)}
        if dependant.request_param_name is not None:
            values[dependant.request_param_name] = request
        return await dependant.call(**values)


def json_body(scope: Scope) -> bool:
    """Whether the request says its body is application/json, as a client sends it (any other way of saying it,
    such as a charset, takes FastAPI's own way)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value == b"application/json"
    return False
