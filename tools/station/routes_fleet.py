"""The fleet page: every pen the MQTT broker knows (online/offline from the bridges' last
will), live."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from .fleet import FleetView
from .routes_pens import _same_origin, drain, relay
from .web import page, require

__all__ = ["routes"]


def _fleet(request: Request | WebSocket) -> FleetView:
    fleet = request.app.state.fleet
    assert isinstance(fleet, FleetView)
    return fleet


async def fleet_page(request: Request) -> Response:
    require(request, "view")
    fleet = _fleet(request)
    return page(
        request,
        "fleet.html",
        configured=fleet.configured,
        broker=fleet.mqtt,
        error=fleet.error,
        pens=fleet.pens(),
    )


async def fleet_json(request: Request) -> Response:
    require(request, "view")
    fleet = _fleet(request)
    return JSONResponse(
        {"configured": fleet.configured, "error": fleet.error, "pens": fleet.pens()}
    )


async def fleet_feed(websocket: WebSocket) -> None:
    user = websocket.scope["state"]["user"]
    if not _same_origin(websocket) or not user.may("view"):
        await websocket.close(code=1008)
        return
    fleet = _fleet(websocket)
    await websocket.accept()
    snapshot = {"type": "snapshot", "pens": fleet.pens(), "error": fleet.error}
    await relay(websocket, fleet.channel, snapshot, drain(websocket))


routes = [
    Route("/fleet", fleet_page, methods=["GET"]),
    Route("/api/fleet", fleet_json, methods=["GET"]),
    WebSocketRoute("/ws/fleet", fleet_feed),
]
