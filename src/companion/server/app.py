"""`create_app(settings)`: the FastAPI application `companion serve` runs.

    from companion.server import ServerSettings, create_app
    app = create_app(ServerSettings(host="127.0.0.1", port=8000))

Who is calling: `Authorization: Bearer <key>` names a user (`companion users key create`);
without a key, only in local mode (loopback only), the caller is the local owner
(`security.local_user`). Every request's work runs in `acting_as(that user)`, so the security
policy decides what each user may read, generate or administer.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from companion.server.errors import APIError, error_body, install_error_handlers
from companion.server.generation import Runner
from companion.server.settings import ServerSettings, is_loopback

__all__ = ["ServerState", "authenticate", "caller", "create_app"]

AUTH_TTL = 5.0  # seconds a checked key is trusted without asking the database again


@dataclass
class ServerState:
    """What the app's requests share: settings, the generation runner, open streams per user."""

    settings: ServerSettings
    runner: Runner
    context: Any = None
    started: int = field(default_factory=lambda: int(time.time()))
    _streams: dict[str, int] = field(default_factory=dict)
    _inflight: dict[str, int] = field(default_factory=dict)
    _keys: dict[str, tuple[str | None, float]] = field(default_factory=dict)
    _writes: dict[str, tuple[float, float]] = field(default_factory=dict)  # user: (tokens, at)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take_write(self, user: str) -> None:
        """Count one write for `user` against `Limits.writes_per_second` (a token bucket that
        holds twice the rate), or refuse with 429: one client writing as fast as it is answered
        took the server's time from everyone's chats (`python -m bench serve`'s writer row)."""
        rate = self.settings.limits.writes_per_second
        if rate <= 0:
            return
        burst = max(1.0, 2.0 * rate)
        now = time.monotonic()
        with self._lock:
            tokens, at = self._writes.get(user, (burst, now))
            tokens = min(burst, tokens + (now - at) * rate)
            if tokens < 1.0:
                self._writes[user] = (tokens, now)
                raise APIError(
                    429,
                    f"too many writes for this key (limit {rate:g} a second, in bursts of {burst:g}): "
                    f"retry in {(1.0 - tokens) / rate:.2f} s",
                    code="too_many_writes",
                )
            self._writes[user] = (tokens - 1.0, now)

    def open_request(self, user: str, weight: int = 1, *, stream: bool = False) -> None:
        """Count `weight` more generations in flight for `user` (a request with n choices weighs
        n; streamed or not), or refuse with 429 over the per-user limits. Every generating
        request takes this one path (issue 15: non-streaming requests had no limit at all)."""
        limits = self.settings.limits
        with self._lock:
            n = self._inflight.get(user, 0)
            if n + weight > limits.max_requests_per_key:
                raise APIError(
                    429,
                    f"too many generations in flight for this key ({n} running, limit "
                    f"{limits.max_requests_per_key}; a request with n choices counts n): wait for one to finish",
                    code="too_many_requests",
                )
            if stream:
                s = self._streams.get(user, 0)
                if s >= limits.max_streams_per_key:
                    raise APIError(
                        429,
                        f"too many open streams for this key ({limits.max_streams_per_key}); wait for one to finish",
                        code="too_many_streams",
                    )
                self._streams[user] = s + 1
            self._inflight[user] = n + weight

    def close_request(self, user: str, weight: int = 1, *, stream: bool = False) -> None:
        with self._lock:
            for table, w in ((self._inflight, weight), (self._streams, 1 if stream else 0)):
                left = table.get(user, 0) - w
                if left > 0:
                    table[user] = left
                else:
                    table.pop(user, None)

    def open_stream(self, user: str, weight: int = 1) -> None:
        self.open_request(user, weight, stream=True)

    def close_stream(self, user: str, weight: int = 1) -> None:
        self.close_request(user, weight, stream=True)

    def open_streams(self, user: str) -> int:
        return self._streams.get(user, 0)

    def user_for(self, key: str) -> str | None:
        from companion.server.keys import hash_key, user_for_key

        digest = hash_key(key)
        now = time.monotonic()
        cached = self._keys.get(digest)
        if cached is not None and now - cached[1] < AUTH_TTL:
            return cached[0]
        user = user_for_key(key)
        self._keys[digest] = (user, now)
        return user


#: What clients send when their key field is empty (JavaScript's undefined and null, stringified).
_NO_KEY = ("undefined", "null")


def authenticate(request: Request) -> str:
    """The user a request acts as (401 for a missing or bad key)."""
    state: ServerState = request.app.state.companion
    header = request.headers.get("authorization", "").strip()
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if header and scheme.lower() != "bearer":
        raise APIError(
            401, f"Authorization must be 'Bearer <API key>', not a {scheme!r} header", code="invalid_api_key"
        )
    # A cleared key field sends "Bearer " (SillyTavern's clear button) or "Bearer undefined": no key.
    received = f"'Bearer {key}'" if key in _NO_KEY else ("'Bearer' with no key" if header else "")
    if key in _NO_KEY:
        key = ""
    from companion.server.keys import KEY_PREFIX

    if state.settings.mode == "local" and not key.startswith(KEY_PREFIX):
        key = ""  # clients that insist on some key ("sk-local", "none") act as the local owner here
    if not key:
        if state.settings.mode == "local":
            from models.security import get_security_manager

            return get_security_manager().user()
        got = f" (received {received})" if received else ""
        raise APIError(
            401,
            f"missing API key{got}: send 'Authorization: Bearer <key>' (create one with `companion users key create "
            "USER`)",
            code="invalid_api_key",
        )
    user = state.user_for(key)
    if user is None:
        shown = key[:6] + "..." if len(key) > 6 else "***"
        raise APIError(401, f"incorrect or revoked API key {shown}", code="invalid_api_key")
    return user


_BEARER = HTTPBearer(
    auto_error=False,
    description="An API key from `companion users key create USER`; optional in local mode (loopback).",
)


#: Writes that generate: limited by the generations in flight (`open_request`), not as writes.
_GENERATING = re.compile(r"^/(v1/)?(chat/)?completions$|^/api/chats/[^/]+/(messages|regenerate|continue)$")


def caller(request: Request, _: HTTPAuthorizationCredentials | None = Depends(_BEARER)) -> str:
    """The dependency routes use: the acting user (documents the bearer scheme in OpenAPI).
    Every write that does not generate counts against the user's write rate here."""
    user = authenticate(request)
    if request.method in ("POST", "PUT", "PATCH", "DELETE") and not _GENERATING.match(request.url.path):
        request.app.state.companion.take_write(user)
    return user


class BodyLimit:
    """Refuse bodies over `limit` bytes with 413: by Content-Length, or, for a chunked body, by
    reading it (up to the limit) before the application sees any of it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = error_body(413, f"request body larger than {self.limit} bytes", None, "body_too_large")
        await JSONResponse(body, status_code=413)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.limit
            except ValueError:
                too_big = True
            if too_big:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:  # a body without Content-Length: read it here, within the limit
            msg = await receive()
            if msg["type"] != "http.request":
                break
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                await self._refuse(scope, receive, send)
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replayed() -> Message:
            return replay.pop() if replay else await receive()

        await self.app(scope, replayed, send)


_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _loopback_host(value: str) -> bool:
    """Whether a Host header (or an Origin's host) names this machine: `localhost`, `127.x.x.x`
    or `[::1]`, with or without a port."""
    host = value.strip().lower()
    if host.startswith("["):
        host = host[: host.find("]") + 1] if "]" in host else host
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host == "localhost" or is_loopback(host)


class CollapseSlashes:
    """`/v1//models` is `/v1/models`: a base URL pasted with a trailing slash (SillyTavern,
    many scripts) makes clients join paths with two slashes."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope.get("path", ""):
            import re

            path = re.sub(r"/{2,}", "/", scope["path"])
            scope = {**scope, "path": path, "raw_path": path.encode("utf-8")}
        await self.app(scope, receive, send)


class LocalOnly:
    """Local mode's guard against DNS rebinding and cross-site requests: the keyless owner's
    server answers only requests addressed to a loopback name (`Host`), and refuses state-changing
    requests whose `Origin` is another site. A page at attacker.example whose name was rebound to
    127.0.0.1 sends `Host: attacker.example`, and is refused before any route runs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        problem = None
        if not _loopback_host(host):
            problem = f"this server runs in local mode and answers only loopback host names, not {host!r}"
        origin = headers.get("origin")
        if problem is None and origin and scope.get("method") in _STATE_CHANGING:
            from urllib.parse import urlsplit

            netloc = urlsplit(origin).netloc
            if origin == "null" or not _loopback_host(netloc):
                problem = f"cross-origin request from {origin!r} refused in local mode"
        if problem is not None:
            body = error_body(403, problem, None, "forbidden_host")
            await JSONResponse(body, status_code=403)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _static(name: str) -> Any:
    return resources.files("companion.server").joinpath("static", name)


def create_app(settings: ServerSettings | None = None, *, manager: Any = None, context: Any = None) -> FastAPI:
    """The server application (see the module docstring). Start-up is an edge: the server runs
    on `context` (default: the active one, e.g. `companion --home X serve`) and its manager."""
    from companion.server import chats_api, companion_api, openai_api, speech_api
    from models.context import current

    settings = (settings or ServerSettings()).check()
    context = context or current()
    runner = Runner(workers=settings.limits.workers, manager=manager or context.manager,
                    batch_rows=settings.limits.batch_rows, engine_process=settings.limits.engine_process)  # fmt: skip
    state = ServerState(settings=settings, runner=runner, context=context)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.runner.close()

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; the server must work offline
        redoc_url=None,
        title="Companion Models",
        version=_version(),
        description=(
            "OpenAI-compatible chat with personalities (each one a model id), per-user keys, feedback, "
            "preferences and memory, versions and updates, and Prometheus metrics. Errors are "
            '`{"error": {"message", "type", "param", "code"}}`.'
        ),
    )
    app.state.companion = state
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.limits.max_body_bytes)
    if settings.mode == "local":
        app.add_middleware(LocalOnly)
    app.add_middleware(CollapseSlashes)
    app.include_router(openai_api.router)
    app.include_router(companion_api.router)
    app.include_router(chats_api.router)
    app.include_router(speech_api.router)

    @app.get("/healthz", tags=["service"], summary="Liveness: the process answers")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "mode": settings.mode, "uptime_s": int(time.time()) - app.state.companion.started}

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return Response(_static("index.html").read_bytes(), media_type="text/html; charset=utf-8")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        kinds = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}
        suffix = name[name.rfind(".") :] if "." in name else ""
        if "/" in name or "\\" in name or name.startswith(".") or suffix not in kinds:
            raise APIError(404, f"no static file {name!r}")
        item = _static(name)
        if not item.is_file():
            raise APIError(404, f"no static file {name!r}")
        return Response(item.read_bytes(), media_type=f"{kinds[suffix]}; charset=utf-8")

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("companion-models")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.0.0"
