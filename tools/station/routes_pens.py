"""Pens page, live pen view, calibration page; their API and the pen's WebSocket feed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from micropen.host.calibration.procedure import PROCEDURES
from micropen.host.calibration.settings import READINGS_DEFAULT, READINGS_MAX, READINGS_MIN
from micropen.host.errors import InvalidInput
from micropen.host.transports.discovery import scan
from micropen.protocol.errors import MicropenError

from .auth import csrf_ok
from .hub import ABORTED, Channel, PenHub, PenSession, StalePage
from .web import in_thread, page, read_json, require

__all__ = ["routes"]

PROCEDURE_HELP = {
    "depth": "needle depth: as-found, fit, write/verify/commit, as-left",
    "rate": "stroke rate: as-found, fit, write/verify/commit, as-left",
    "all": "depth and stroke rate, one write/verify/commit",
    "verify": "as-found check only; writes nothing",
}


def _hub(request: Request | WebSocket) -> PenHub:
    hub = request.app.state.hub
    assert isinstance(hub, PenHub)
    return hub


async def _summary(hub: PenHub, session: PenSession) -> dict[str, Any]:
    data = session.summary()
    try:
        data["due"] = await in_thread(hub.due, data["serial"])
    except MicropenError as exc:
        data["due"] = {"state": "unknown", "due": None, "message": str(exc)}
    return data


async def pens_page(request: Request) -> Response:
    require(request, "view")
    hub = _hub(request)
    found = await in_thread(scan)
    attached = [{"url": url, "kind": "pen"} for url in found.urls]
    attached.append({"url": request.app.state.config.default_pen, "kind": "simulator (built in)"})
    pens = [await _summary(hub, s) for s in hub.pens.values()]
    return page(
        request,
        "pens.html",
        pens=pens,
        attached=attached,
        usb_error=None if found.usb_error is None else str(found.usb_error),
        default_pen=request.app.state.config.default_pen,
    )


async def connect(request: Request) -> Response:
    user = require(request, "operate")
    body = await read_json(request)
    session = await _hub(request).connect(str(body.get("url", "")), user.name)
    return JSONResponse({"pid": session.pid, "serial": session.summary()["serial"]})


async def _body(request: Request) -> dict[str, Any]:
    """A POST's JSON object; an empty body is an empty object (a script's bare stop)."""
    if not await request.body():
        return {}
    return await read_json(request)


def _shown(request: Request, body: dict[str, Any]) -> PenSession:
    """The pen this request's page shows: refused (409, StalePage) when the page names another
    serial than the pen the station has under that id."""
    return _hub(request).get_shown(request.path_params["pid"], body.get("serial"))


async def disconnect(request: Request) -> Response:
    require(request, "operate")
    session = _shown(request, await _body(request))
    await _hub(request).disconnect(session.pid)
    return JSONResponse({"ok": True})


async def pen_json(request: Request) -> Response:
    require(request, "view")
    hub = _hub(request)
    return JSONResponse(await _summary(hub, hub.get(request.path_params["pid"])))


async def pen_page(request: Request) -> Response:
    require(request, "view")
    hub = _hub(request)
    session = hub.get(request.path_params["pid"])
    return page(request, "pen.html", pen=await _summary(hub, session))


async def stop(request: Request) -> Response:
    """Anyone may stop. Served on the event loop without touching the disk or waiting for
    anything but the pen, so it is answered even while a calibration runs."""
    require(request, "stop")
    session = _shown(request, await _body(request))
    return JSONResponse(await session.stop())


async def calibrate_page(request: Request) -> Response:
    require(request, "view")
    hub = _hub(request)
    session = hub.get(request.path_params["pid"])
    return page(
        request,
        "calibrate.html",
        pen=await _summary(hub, session),
        procedures=[(name, PROCEDURE_HELP.get(name, "")) for name in PROCEDURES],
        readings_default=READINGS_DEFAULT,
        readings_min=READINGS_MIN,
        readings_max=READINGS_MAX,
    )


async def start_calibration(request: Request) -> Response:
    user = require(request, "operate")
    hub = _hub(request)
    body = await read_json(request)
    session = _shown(request, body)
    await session.check_ready()  # before the first question: what to do, in words
    technician = user.name
    if request.app.state.config.login_required is False:
        # no login: the name typed is the only record of who calibrated ("local" is no one)
        technician = str(body.get("technician") or "").strip()
        if not technician:
            raise InvalidInput(
                "the technician's name is empty; type who calibrates this pen (it goes on "
                "the record and the certificate)"
            )
    try:
        readings = int(body.get("readings", READINGS_DEFAULT))
    except (TypeError, ValueError):
        raise InvalidInput(
            f"readings {body.get('readings')!r} is not a whole number "
            f"({READINGS_MIN}–{READINGS_MAX})"
        ) from None
    job = hub.start_calibration(
        session,
        procedure=str(body.get("procedure", "")),
        gauge=str(body.get("gauge", "sim")),
        technician=technician,
        readings=readings,
    )
    return JSONResponse({"job": job.to_dict()})


async def clear_fault(request: Request) -> Response:
    require(request, "operate")  # technicians: a fault's cause is checked at the bench
    session = _shown(request, await _body(request))
    status = await session.clear_fault()
    return JSONResponse({"state": status.state.name.lower(), "fault": status.fault.name.lower()})


async def answer(request: Request) -> Response:
    require(request, "operate")
    hub = _hub(request)
    body = await read_json(request)
    session = _shown(request, body)
    try:
        prompt_id = int(body.get("id", -1))
    except (TypeError, ValueError):
        raise InvalidInput("the answer names no question id; reload the page") from None
    text = body.get("answer")
    if not isinstance(text, str):  # null, a number, a list: not what a technician typed
        raise InvalidInput(
            f"the answer must be the text typed (a string), not {json.dumps(text)}; "
            "type it in the answer field"
        )
    hub.answer(session, prompt_id, text)
    return JSONResponse({"ok": True})


async def abort(request: Request) -> Response:
    require(request, "operate")
    session = _shown(request, await _body(request))
    if not session.abort_calibration(ABORTED):
        raise InvalidInput("no calibration is running on this pen")
    return JSONResponse({"ok": True})


async def pen_feed(websocket: WebSocket) -> None:
    """The pen's live events: a snapshot first, then telemetry, calibration progress, points,
    questions, stops."""
    user = websocket.scope["state"]["user"]
    if not _same_origin(websocket) or not user.may("view"):
        await websocket.close(code=1008)
        return
    hub = _hub(websocket)
    try:
        session = hub.get_shown(websocket.path_params["pid"], websocket.query_params.get("serial"))
    except StalePage as exc:  # the page is told on its feed, and stops reconnecting
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.send_json({"type": "stale", "error": str(exc)})
            await websocket.close(code=STALE_CLOSE)
        return
    except InvalidInput:
        await websocket.close(code=1008)
        return
    await websocket.accept()
    await relay(
        websocket,
        session.channel,
        {"type": "snapshot", "pen": session.summary()},
        _listen(websocket, hub, session.pid, user),
    )


async def relay(
    websocket: WebSocket, channel: Channel, snapshot: dict[str, Any], listener: Awaitable[None]
) -> None:
    """Snapshot, then the channel's events to the browser, until the browser goes away (the
    listener, reading what it sends, ends) or a send fails. The two jobs are an anyio task
    group (Starlette's own concurrency): either ending cancels the other, and a cancel of
    the handler (server shutdown) reaches both."""
    queue = channel.subscribe()
    try:
        async with anyio.create_task_group() as group:

            async def listen() -> None:
                await listener
                group.cancel_scope.cancel()  # the browser went away

            async def send() -> None:
                with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                    await websocket.send_json(snapshot)
                    while True:
                        await websocket.send_json(await queue.get())
                group.cancel_scope.cancel()  # the connection is gone

            group.start_soon(listen)
            group.start_soon(send)
    finally:
        channel.unsubscribe(queue)


async def _listen(websocket: WebSocket, hub: PenHub, pid: str, user: Any) -> None:
    """What the page sends on its feed: only the stop. The stop button uses this open
    connection first, so it needs no new HTTP connection (a browser holds at most six per
    host: six slow requests would queue a POST behind them). Same checks as the POST: the
    session's CSRF token, and a user allowed to stop. Ends when the browser goes away."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            try:
                message = json.loads(await websocket.receive_text())
            except ValueError:
                continue
            if not isinstance(message, dict) or message.get("type") != "stop":
                continue
            if not csrf_ok(websocket.session, message.get("csrf")) or not user.may("stop"):
                await websocket.send_json({"type": "stop_refused", "error": "reload the page"})
                continue
            try:  # the POST's own check: the pen may also have gone since the feed opened
                session = hub.get_shown(pid, message.get("serial"))
            except (StalePage, InvalidInput) as exc:
                await websocket.send_json({"type": "stale", "error": str(exc)})
                continue
            # run apart: the stop's result comes back on the channel as "stopped"
            task = asyncio.create_task(session.stop())
            _STOPS.add(task)
            task.add_done_callback(_STOPS.discard)


STALE_CLOSE = 4409  # the feed's close code for a page that shows another pen than the id's

_STOPS: set[asyncio.Task[dict[str, Any]]] = set()  # stops in flight (a task needs an owner)


def _same_origin(websocket: WebSocket) -> bool:
    """A page of another site may not open our feed (browsers send Origin on WebSockets)."""
    origin = websocket.headers.get("origin")
    host = websocket.headers.get("host")
    return origin is None or origin.split("://", 1)[-1] == host


routes = [
    Route("/pens", pens_page, methods=["GET"]),
    Route("/api/pens", connect, methods=["POST"]),
    Route("/api/pens/{pid}", pen_json, methods=["GET"]),
    Route("/api/pens/{pid}/disconnect", disconnect, methods=["POST"]),
    Route("/api/pens/{pid}/stop", stop, methods=["POST"]),
    Route("/api/pens/{pid}/clear-fault", clear_fault, methods=["POST"]),
    Route("/api/pens/{pid}/calibration", start_calibration, methods=["POST"]),
    Route("/api/pens/{pid}/calibration/answer", answer, methods=["POST"]),
    Route("/api/pens/{pid}/calibration/abort", abort, methods=["POST"]),
    Route("/pens/{pid}", pen_page, methods=["GET"]),
    Route("/pens/{pid}/calibrate", calibrate_page, methods=["GET"]),
    WebSocketRoute("/ws/pens/{pid}", pen_feed),
]


async def drain(websocket: WebSocket) -> None:
    """Read until the browser goes away (for a feed that takes nothing from the page)."""
    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
        while True:
            await websocket.receive_text()
