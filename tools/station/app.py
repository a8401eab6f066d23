"""The station's ASGI application: middleware (host check, session, login, CSRF), the login
routes, and the pages from ``routes_*`` modules."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from micropen.host.calibration import RecordStore, Station, load_station
from micropen.host.errors import InvalidInput
from micropen.protocol.errors import MicropenError

from . import routes_fleet, routes_log, routes_pens, routes_records
from .auth import (
    LOCAL_USER,
    LoginThrottle,
    User,
    UserStore,
    csrf_ok,
    csrf_token,
    is_loopback,
)
from .fleet import FleetView
from .hub import PenHub
from .pool import CpuPool
from .web import HERE, in_thread, read_json, templates

__all__ = ["StationConfig", "build_app"]

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
OPEN_PATHS = ("/login", "/static/")
SESSION_HOURS = 10


@dataclass
class StationConfig:
    host: str = "127.0.0.1"
    login_required: bool = False
    secret: str = "dev"
    mqtt: str | None = None
    site: str = "+"
    signer: Any = None  # a loaded CertificateSigner, or None: signing is refused, saying why
    # the signer's key and certificate files: the worker process loads them to sign there
    signer_files: tuple[Path, Path] | None = None
    log: Any = True  # the treatment log AsyncPen.open writes (True: the default one)
    users: UserStore = field(default_factory=UserStore)
    station: Station | None = None
    default_pen: str = "sim://?seed=7"


class Guard:
    """Pure ASGI: who is asking (local user, or the session's login), and the CSRF token on
    every state-changing request. Runs inside SessionMiddleware."""

    def __init__(self, app: ASGIApp, config: StationConfig) -> None:
        self.app, self.config = app, config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        session: dict[str, Any] = scope["session"]
        path: str = scope["path"]
        user = self._user(session)
        scope.setdefault("state", {})["user"] = user
        if user is None and not path.startswith(OPEN_PATHS):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            response: Response
            if path.startswith("/api/") or scope.get("method") not in SAFE_METHODS:
                response = JSONResponse({"error": "log in first"}, status_code=401)
            else:
                response = RedirectResponse(f"/login?next={path}", status_code=303)
            await response(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            headers = dict(scope["headers"])
            sent = headers.get(b"x-csrf-token")
            if not csrf_ok(session, sent.decode("latin-1") if sent else None):
                response = JSONResponse(
                    {"error": "missing or wrong CSRF token; reload the page and try again"},
                    status_code=403,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _user(self, session: dict[str, Any]) -> User | None:
        if not self.config.login_required:
            return LOCAL_USER
        name, role = session.get("user"), session.get("role")
        if not isinstance(name, str) or not isinstance(role, str):
            return None
        if self.config.users.role_of(name) != role:  # removed, or given another role since
            session.clear()
            return None
        return User(name, role)


async def login_page(request: Request) -> Response:
    config: StationConfig = request.app.state.config
    if not config.login_required:
        return RedirectResponse("/pens", status_code=303)
    return templates.TemplateResponse(
        request,
        "login.html",
        {
            "csrf": csrf_token(request.session),
            "next": request.query_params.get("next", "/pens"),
            "user": None,
            "page_name": "login",
            "login_required": True,
        },
    )


async def login(request: Request) -> Response:
    config: StationConfig = request.app.state.config
    body = await read_json(request)
    name, password = str(body.get("user", "")), str(body.get("password", ""))
    throttle: LoginThrottle = request.app.state.throttle
    address = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(address, name)
    if wait > 0:
        seconds = math.ceil(wait)
        return JSONResponse(
            {"error": f"too many failed logins from here or for {name!r}; try again in "
             f"{seconds} s"},
            status_code=429,
            headers={"Retry-After": str(seconds)},
        )  # fmt: skip
    checks: LoginChecks = request.app.state.login_checks
    if checks.waiting >= LOGIN_QUEUE_MAX:  # a flood: refused at once, costs the loop nothing
        return JSONResponse(
            {"error": f"{checks.waiting} logins are being checked; try again in 1 s"},
            status_code=429,
            headers={"Retry-After": "1"},
        )
    checks.waiting += 1
    try:
        async with checks.one_at_a_time:  # Argon2 is slow on purpose: one check at a time
            user = await in_thread(config.users.authenticate, name, password)
    finally:
        checks.waiting -= 1
    if user is None:
        throttle.failed(address, name)
        return JSONResponse({"error": "unknown user or wrong password"}, status_code=401)
    throttle.succeeded(address, name)
    request.session.clear()  # a new session (and CSRF token) at login: no session fixation
    request.session.update(user=user.name, role=user.role)
    return JSONResponse({"user": user.name, "role": user.role, "csrf": csrf_token(request.session)})


LOGIN_QUEUE_MAX = 8  # logins waiting for their password check; more get 429 at once


class LoginChecks:
    """Password checks in flight: one verifies at a time, at most LOGIN_QUEUE_MAX wait."""

    def __init__(self) -> None:
        self.one_at_a_time = asyncio.Semaphore(1)
        self.waiting = 0


async def logout(request: Request) -> Response:
    request.session.clear()
    return JSONResponse({"ok": True})


async def index(request: Request) -> Response:
    return RedirectResponse("/pens", status_code=303)


async def bad_input(request: Request, exc: Exception) -> Response:
    return await http_error(request, HTTPException(400, str(exc)))


async def failure(request: Request, exc: Exception) -> Response:
    return await http_error(request, HTTPException(409, str(exc)))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if request.url.path.startswith("/api/") or request.method not in SAFE_METHODS:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=headers)
    return templates.TemplateResponse(
        request,
        "error.html",
        {
            "status": exc.status_code,
            "detail": exc.detail,
            "user": request.scope.get("state", {}).get("user"),
            "csrf": csrf_token(request.session),
            "page_name": "error",
            "login_required": request.app.state.config.login_required,
        },
        status_code=exc.status_code,
        headers=headers,
    )


def build_app(config: StationConfig) -> Starlette:
    station = config.station if config.station is not None else load_station()
    hub = PenHub(store_factory=RecordStore, station=station, log=config.log)
    fleet = FleetView(config.mqtt, site=config.site)
    pool = CpuPool()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await fleet.start()
        try:
            yield
        finally:
            await hub.close()  # a calibration still going is aborted: its teardown runs
            await fleet.close()
            pool.close()

    hosts = ["*"]  # with logins any name may reach it; on loopback only its own (no rebinding)
    if is_loopback(config.host):
        hosts = sorted({"127.0.0.1", "localhost", config.host})
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=hosts),  # no DNS rebinding to 127.0.0.1
        Middleware(
            SessionMiddleware,
            secret_key=config.secret,
            session_cookie="micropen_station",
            max_age=SESSION_HOURS * 3600,
            same_site="strict",
            https_only=False,
        ),
        Middleware(Guard, config=config),
    ]
    routes = [
        Route("/", index),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        *routes_pens.routes,
        *routes_records.routes,
        *routes_log.routes,
        *routes_fleet.routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            InvalidInput: bad_input,
            MicropenError: failure,
            HTTPException: http_error,
        },
    )
    app.state.config = config
    app.state.hub = hub
    app.state.fleet = fleet
    app.state.pool = pool
    app.state.throttle = LoginThrottle()
    app.state.login_checks = LoginChecks()
    app.state.station = station
    return app
