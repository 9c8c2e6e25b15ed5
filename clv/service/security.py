"""Who may call: API keys and OIDC bearer tokens, the scope each route needs, the caller's rate budget and the Host
header, checked by one pure ASGI middleware before a route runs; and the browser's security headers."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass

import jwt
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from clv.service.keys import SCOPES, KeyFileError, KeyRing
from clv.service.settings import Settings, SettingsError
from clv.service.web import RateLimit, declared_body, read_body, replay, too_large
from clv.service.web import refuse as answer

logger = logging.getLogger(__name__)

PREDICT, PORTFOLIO, READ, METRICS = SCOPES
NEEDS = {  # the scope each protected path needs; /health shows its details with clv:read; the rest is open
    "/predict/clv": PREDICT,
    "/predict/clv/batch": PREDICT,
    "/portfolio": PORTFOLIO,
    "/model": READ,
    "/docs": READ,
    "/redoc": READ,
    "/openapi.json": READ,
    "/metrics": METRICS,
}
DETAILS = "/health"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")
ALGORITHMS = ("RS256", "ES256")  # asymmetric only: no HS256 made with the public key, no alg none
REFETCH_SECONDS = 60.0  # an unknown kid fetches the issuer's keys again at most this often
KEYS_MAX_AGE = 3600.0  # keys older than this are fetched again, so a key the issuer withdrew stops working
LEEWAY_SECONDS = 30  # clocks of the issuer and the service may differ this much on exp and nbf
TOKEN_CACHE = 4096  # verified tokens kept (until they expire, a minute at most) so a repeated token costs a lookup

PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Swagger UI and ReDoc (fastapi_offline's bundled copies) start from an inline script and inline styles, and
# ReDoc runs a worker from a blob: these two pages, which hold no data of their own, get a policy that allows it
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
# a data answer (JSON, text) is never a page: nothing in it may load anything, nor be framed
DATA_POLICY = "default-src 'none'; frame-ancestors 'none'"
COMMON = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
PAGE_HEADERS = [(b"content-security-policy", PAGE_POLICY.encode()), *COMMON]
DATA_HEADERS = [(b"content-security-policy", DATA_POLICY.encode()), *COMMON, (b"cache-control", b"no-store")]
DOCS_HEADERS = [(b"content-security-policy", DOCS_POLICY.encode()), *COMMON, (b"cache-control", b"no-store")]


def headers_for(path: str) -> list[tuple[bytes, bytes]]:
    """The security headers of an answer to `path`: the docs' policy for /docs and /redoc; the page's for the page
    and its files, without Cache-Control, which they set their own; for the rest, which is data, a policy that
    loads nothing, and no-store."""
    if path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        return DOCS_HEADERS
    if path == "/" or path.startswith(("/static/", "/static-offline-docs/")):
        return PAGE_HEADERS
    return DATA_HEADERS


@dataclass(frozen=True)
class Caller:
    """Who is calling: a key's name or a token's subject ("-" with authentication off), and what it may do."""

    name: str
    scopes: frozenset[str]
    kind: str  # "key", "token" or "open" (authentication off: every scope, counted by address)


OPEN = Caller("-", frozenset(SCOPES), "open")
NOBODY = Caller("-", frozenset(), "none")  # no credential, on an open route


class Refused(Exception):
    """A credential that does not verify; the message says why in words safe to send back."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The Host names served (lower case, without port), or None for any: CLV_ALLOWED_HOSTS when set, else the
    loopback names on loopback, else any (a proxy in front decides)."""
    given = [h.strip().lower() for h in settings.allowed_hosts.split(",") if h.strip()]
    if "*" in given:
        return None
    if given:
        return frozenset(given)
    return frozenset(LOOPBACK_NAMES) if is_loopback(settings.host) else None


def host_name(value: bytes) -> str:
    """A Host header's name without its port: example.com:8000 -> example.com, [::1]:8000 -> [::1]."""
    text = value.decode("latin-1").lower()
    if text.startswith("["):
        return text[: text.find("]") + 1]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


def scopes_of(claims: dict) -> frozenset[str]:
    """OAuth scopes from `scope` (space-separated, RFC 8693) and `scp` (a list or a string, as Azure and Okta)."""
    scopes: set[str] = set()
    for value in (claims.get("scope"), claims.get("scp")):
        if isinstance(value, str):
            scopes.update(value.split())
        elif isinstance(value, list):
            scopes.update(s for s in value if isinstance(s, str))
    return frozenset(scopes)


class Tokens:
    """OIDC access tokens: RS256 or ES256 only, signed by a key of the issuer's JWKS (fetched off the event loop,
    cached, fetched again for an unknown kid at most once a minute), exp, nbf, iss and aud checked."""

    def __init__(self, issuer: str, audience: str, jwks_url: str) -> None:
        self.issuer, self.audience = issuer, audience
        self.client = jwt.PyJWKClient(jwks_url, cache_keys=False, cache_jwk_set=False, timeout=5)
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched = -float("inf")
        self.fetching = asyncio.Lock()
        self.verified: dict[str, tuple[Caller, float]] = {}
        self.fetches = 0  # how many times the JWKS was fetched: the tests hold a storm of unknown kids to one

    async def caller(self, token: str) -> Caller:
        now = time.time()
        cached = self.verified.get(token)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Refused("the token is not a JWT") from None
        if header.get("alg") not in ALGORITHMS:
            raise Refused(f"the token's alg must be one of {', '.join(ALGORITHMS)}")
        key = await self.key(str(header.get("kid", "")))
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],  # the key's own: a token cannot choose another
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Refused(f"the token does not verify: {exc}") from None
        caller = Caller(str(claims["sub"]), scopes_of(claims), "token")
        if len(self.verified) >= TOKEN_CACHE:
            self.verified.clear()
        self.verified[token] = (caller, min(float(claims["exp"]), now + 60))
        return caller

    async def key(self, kid: str) -> jwt.PyJWK:
        stale = time.monotonic() - self.fetched
        if (kid not in self.keys and stale >= REFETCH_SECONDS) or stale >= KEYS_MAX_AGE:
            async with self.fetching:  # requests waiting on one fetch share it
                if time.monotonic() - self.fetched >= REFETCH_SECONDS:
                    await self.fetch()
        found = self.keys.get(kid)
        if found is None:
            raise Refused("the token's kid names no key of the issuer")
        return found

    async def fetch(self) -> None:
        self.fetched = time.monotonic()  # failed or not: the next try waits its minute
        self.fetches += 1
        try:
            jwks = await asyncio.to_thread(self.client.get_jwk_set, True)
        except jwt.PyJWKClientError as exc:
            logger.warning("could not fetch the OIDC signing keys: %s", exc)
            return
        self.keys = {k.key_id: k for k in jwks.keys if k.key_id and k.algorithm_name in ALGORITHMS}


class Credentials:
    """The credentials the service accepts: the keys file's keys and, with CLV_OIDC_* set, an issuer's tokens."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.auth
        try:
            self.keys = KeyRing(settings.api_keys_file, settings.reload_seconds)
        except KeyFileError as exc:
            raise SettingsError(f"CLV_API_KEYS_FILE: {exc}") from None
        oidc = (settings.oidc_issuer, settings.oidc_audience, settings.oidc_jwks_url)
        if any(oidc) and not all(oidc):
            raise SettingsError("CLV_OIDC_ISSUER, CLV_OIDC_AUDIENCE and CLV_OIDC_JWKS_URL: set all three, or none")
        self.tokens = Tokens(*oidc) if all(oidc) else None
        self.was_on = False
        self.callers: dict[str, Caller] = {}  # by a key's hash: made once, not at every request

    @property
    def on(self) -> bool:
        """Authentication is on: always with CLV_AUTH=on, never with off; with auto, once there is a key or an
        issuer (and from then on while the process runs, even if every key is revoked)."""
        if self.mode != "auto":
            return self.mode == "on"
        self.was_on = self.was_on or self.tokens is not None or len(self.keys) > 0
        return self.was_on

    async def identify(self, credential: str) -> Caller:
        if credential.count(".") == 2 and self.tokens is not None:  # a JWT; a key has no dots
            return await self.tokens.caller(credential)
        record = self.keys.find(credential)
        if record is None:
            raise Refused("unknown or revoked key")
        caller = self.callers.get(record.sha256)
        if caller is None:  # a key's name and scopes never change: a new key is a new hash
            caller = self.callers[record.sha256] = Caller(record.name, frozenset(record.scopes), "key")
        return caller


class Gate:
    """Everything a request passes before its route: a declared body over the limit (413), its Host header (400), its
    credential (401), the route's scope (403), the caller's rate budget (429); then its body, read whole within
    the limit and the body timeout (413, 408). The caller goes to scope["state"]["caller"] for the route and the
    request log. One pure ASGI middleware: the route gets the body as one message, and no wrapper around the
    server's receive or send."""

    def __init__(
        self,
        app: ASGIApp,
        credentials: Credentials,
        hosts: frozenset[str] | None,
        rate_limit: RateLimit,
        max_bytes: int,
        body_seconds: float,
    ) -> None:
        self.app = app
        self.credentials = credentials
        self.hosts = hosts
        self.rate_limit = rate_limit
        self.max_bytes = max_bytes
        self.body_seconds = body_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = asyncio.get_running_loop().time()
        length, has_body = declared_body(scope)
        if length > self.max_bytes:  # refused before anything is read or parsed
            await too_large(send, self.max_bytes)
            return
        path = scope["path"]
        if self.hosts is not None and not self.host_allowed(scope):
            await answer(send, 400, "the Host header names a host this service does not serve", [])
            return
        need = NEEDS.get(path)
        if scope["method"] == "OPTIONS":  # a CORS preflight carries no credential; it is answered outside
            need = None
        if not self.credentials.on:
            caller = OPEN
        elif need is None and path != DETAILS:
            caller = NOBODY
        else:
            credential = bearer(scope)
            if credential is None:
                if need is not None:
                    challenge = b'Bearer realm="clv"'
                    detail = "a credential is needed: send Authorization: Bearer KEY (or X-API-Key: KEY)"
                    await answer(send, 401, detail, [(b"www-authenticate", challenge)])
                    return
                caller = NOBODY
            else:
                try:
                    caller = await self.credentials.identify(credential)
                except Refused as exc:
                    await refuse_credential(send, str(exc))
                    return
            if need is not None and need not in caller.scopes:
                challenge = f'Bearer realm="clv", error="insufficient_scope", scope="{need}"'.encode()
                detail = f"{caller.kind} {caller.name!r} lacks the scope {need}, which {path} needs"
                await answer(send, 403, detail, [(b"www-authenticate", challenge)])
                return
        scope.setdefault("state", {})["caller"] = caller
        if need is not None:
            budget = f"{caller.kind}:{caller.name}" if caller.kind != "open" else client_address(scope)
            wait = await self.rate_limit.spend(budget)
            if wait is not None:
                detail = f"rate limit of {self.rate_limit.item} exceeded; retry in {wait} s"
                await answer(send, 429, detail, [(b"retry-after", str(wait).encode())])
                return
        if has_body:
            message = await read_body(receive, send, self.max_bytes, self.body_seconds, began)
            if message is None:  # answered (413, 408), or the client left
                return
            receive = replay(message, receive)
        await self.app(scope, receive, send)

    def host_allowed(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"host":
                return host_name(value) in self.hosts
        return False


async def refuse_credential(send: Send, why: str) -> None:
    """401 for a credential that does not verify, with RFC 6750's challenge naming the error."""
    said = why.replace('"', "'").encode("ascii", "replace").decode()
    challenge = f'Bearer realm="clv", error="invalid_token", error_description="{said}"'.encode()
    await answer(send, 401, f"the credential is not accepted: {said}", [(b"www-authenticate", challenge)])


def bearer(scope: Scope) -> str | None:
    """The credential of `Authorization: Bearer X` or `X-API-Key: X`, or None."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            kind, _, credential = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and credential.strip():
                return credential.strip()
        elif name == b"x-api-key" and value.strip():
            return value.decode("latin-1").strip()
    return None


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


def check_exposure(settings: Settings, credentials: Credentials) -> None:
    """Refuse to serve beyond loopback with authentication off (Redis' protected mode), unless CLV_AUTH=off."""
    if not credentials.on and settings.auth != "off" and not is_loopback(settings.host):
        raise SettingsError(
            f"CLV_HOST={settings.host!r} serves beyond this machine with authentication off: add a key "
            "(`python api.py keys add NAME --scopes clv:predict`) or set CLV_OIDC_*, or CLV_AUTH=off to serve open"
        )


def refusal(description: str) -> dict:
    problem = {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/json": {"schema": problem}}}


REFUSED = {  # what every protected operation may answer besides its own
    "401": refusal("No credential, or one that does not verify; WWW-Authenticate says which."),
    "403": refusal("The credential lacks the scope the operation needs; the detail names it."),
    "429": refusal("Over the caller's rate limit; Retry-After says when to try again."),
}


def declare_security(app: FastAPI) -> None:
    """/openapi.json declares the two ways to send a credential, and which operations need one (their scope is
    in the description: OpenAPI 3.0 gives scopes to OAuth flows only), so /docs can send a key."""
    plain = app.openapi

    def with_security() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = plain()
        schema.setdefault("components", {})["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "an API key or an OIDC access token"},
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        }
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                if path in NEEDS:
                    operation["security"] = [{"bearer": []}, {"apiKey": []}]
                    own = operation["responses"]
                    own.update({status: r for status, r in REFUSED.items() if status not in own})
                    note = f"Needs the scope `{NEEDS[path]}`."
                elif path == DETAILS:
                    operation["security"] = [{}, {"bearer": []}, {"apiKey": []}]
                    note = f"Open; the details only with the scope `{READ}`."
                else:
                    continue
                operation["description"] = f"{operation.get('description', '')}\n\n{note}".strip()
        app.openapi_schema = schema
        return schema

    app.openapi = with_security
