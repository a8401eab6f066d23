"""The treatment log browser and its export (read through host/treatment_log.py, read-only)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from micropen.host.errors import InvalidInput
from micropen.host.treatment_log import TreatmentLog

from .web import attachment, in_thread, page, require

SQLITE_INT_MAX = 2**63 - 1

__all__ = ["routes"]

LIST_LIMIT = 200


def _open() -> TreatmentLog | None:
    path = TreatmentLog.default_path()
    if not Path(path).is_file():
        return None
    return TreatmentLog(path, readonly=True)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _sessions(serial: str | None) -> list[dict[str, Any]]:
    log = _open()
    if log is None:
        return []
    try:
        rows = log.sessions(pen_serial=serial or None, limit=LIST_LIMIT)
    finally:
        log.close()
    return [{**asdict(s), "started": _when(s.started_at), "ended": _when(s.ended_at)} for s in rows]


def _session(sid: int) -> dict[str, Any]:
    log = _open()
    if log is None:
        raise InvalidInput("there is no treatment log yet; connect a pen first")
    try:
        detail = log.session(sid)
    finally:
        log.close()
    data = asdict(detail)
    data["started"], data["ended"] = _when(detail.started_at), _when(detail.ended_at)
    for run in data["runs"]:
        run["started"] = _when(run["started_at"])
    for event in data["events"]:
        event["when"] = _when(event["host_time"])
    data["strokes_delivered"] = detail.strokes_delivered
    return data


async def log_page(request: Request) -> Response:
    require(request, "view")
    serial = request.query_params.get("serial") or None
    sessions = await in_thread(_sessions, serial)
    return page(request, "log.html", sessions=sessions, serial=serial or "")


async def session_page(request: Request) -> Response:
    require(request, "view")
    try:
        sid = int(request.path_params["sid"])
    except ValueError:
        raise InvalidInput(f"session {request.path_params['sid']!r} is not a number") from None
    if not 1 <= sid <= SQLITE_INT_MAX:  # the log's ids are SQLite integers
        raise HTTPException(404, f"no session {sid} in the treatment log; pick one on /log")
    return page(request, "session.html", session=await in_thread(_session, sid))


def _ids(request: Request) -> list[int] | None:
    raw = request.query_params.getlist("session")
    try:
        ids = [int(x) for x in raw]
    except ValueError:
        raise InvalidInput(f"session ids {raw} must be numbers (micropen log list)") from None
    for sid in ids:
        if not 1 <= sid <= SQLITE_INT_MAX:
            raise InvalidInput(
                f"session id {sid} is outside 1–{SQLITE_INT_MAX}; see micropen log list"
            )
    return ids or None


def _export_json(ids: list[int] | None) -> bytes:
    log = _open()
    if log is None:
        raise InvalidInput("there is no treatment log yet; nothing to export")
    out = io.StringIO()
    try:
        log.export_json(ids, out)
    finally:
        log.close()
    return out.getvalue().encode("utf-8")


def _export_csv(ids: list[int] | None) -> bytes:
    log = _open()
    if log is None:
        raise InvalidInput("there is no treatment log yet; nothing to export")
    buffer = io.BytesIO()
    try:
        with tempfile.TemporaryDirectory() as folder:
            files = log.export_csv(ids, Path(folder))
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in files:
                    archive.write(path, path.name)
    finally:
        log.close()
    return buffer.getvalue()


async def export(request: Request) -> Response:
    require(request, "view")
    kind = request.path_params["kind"]
    ids = _ids(request)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if kind == "json":
        data = await in_thread(_export_json, ids)
        media, name = "application/json", f"treatment-log-{stamp}.json"
    elif kind == "csv":
        data = await in_thread(_export_csv, ids)
        media, name = "application/zip", f"treatment-log-{stamp}-csv.zip"
    else:
        raise InvalidInput(f"export format {kind!r}: use json or csv")
    return Response(data, media_type=media, headers=attachment(name))


routes = [
    Route("/log", log_page, methods=["GET"]),
    Route("/log/export.{kind}", export, methods=["GET"]),
    Route("/log/{sid}", session_page, methods=["GET"]),
]
