"""Pen messages → fleet payloads (plain dicts matching :data:`topics.SCHEMAS`).

Pure functions: the caller passes the time (``at``), so tests need no clock. Ids of events and
run reports are derived from what identifies them on the pen (serial, boot id, run id, pen
time), so the same pen event queued twice — say the pen re-sent it after a reconnect — carries
the same id and a consumer keeps one.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from micropen.protocol import limits as L
from micropen.protocol.messages import Event, FaultReport, Identity, RunReport, Status

from .topics import SCHEMAS, TELEMETRY_FIELDS

__all__ = [
    "command_payload",
    "derive_event_id",
    "event_payload",
    "fault_payload",
    "offline_status",
    "online_status",
    "pen_event_payload",
    "reply_payload",
    "session_id",
    "session_payload",
    "telemetry_payload",
]


def _head(channel: str, site: str, serial: str) -> dict[str, Any]:
    return {"schema": SCHEMAS[channel].name, "site": site, "serial": serial}


def _area_name(area: int) -> str:
    try:
        return str(L.Area(area).name.lower())
    except ValueError:
        return str(area)


def online_status(
    site: str,
    identity: Identity,
    status: Status | None,
    *,
    at: float,
    link_up: bool,
    last_fault: dict[str, Any] | None,
    calibration_due: str | None,
    stream: str,
    simulated: bool,
) -> dict[str, Any]:
    """The retained status of a running bridge; pen fields are null when the pen is unknown."""
    d = _head("status", site, identity.serial)
    d.update(
        online=True,
        updated_at=at,
        link="up" if link_up else "down",
        model=identity.model,
        firmware=f"{identity.firmware_major}.{identity.firmware_minor}.{identity.firmware_patch}",
        simulated=simulated,
        boot_id=identity.boot_id,
        last_fault=last_fault,
        calibration_due=calibration_due,
        stream=stream,
    )
    d.update(_status_fields(status))
    return d


def _status_fields(status: Status | None) -> dict[str, Any]:
    if status is None:
        keys = ("state", "fault", "cartridge", "run", "battery_mv", "temperature_dc")
        return {k: None for k in (*keys, "calibrated", "telemetry_hz")}
    cartridge = None
    if status.cartridge_id:
        cartridge = {
            "id": status.cartridge_id,
            "state": status.cartridge_state.name,
            "strokes": status.cartridge_strokes,
        }
    run = None
    if status.run_id:
        run = {
            "id": status.run_id,
            "area": _area_name(status.run_area) if status.run_area else None,
            "outcome": status.run_outcome.name,
            "strokes": status.run_strokes,
        }
    return {
        "state": status.state.name,
        "fault": status.fault.name,
        "cartridge": cartridge,
        "run": run,
        "battery_mv": status.battery_mv,
        "temperature_dc": status.temperature_dc,
        "calibrated": bool(status.calibrated),
        "telemetry_hz": status.telemetry_hz,
    }


def offline_status(site: str, serial: str, reason: str, *, at: float | None) -> dict[str, Any]:
    """The last will (``at`` None: the broker publishes it later) or a clean stop's status."""
    d = _head("status", site, serial)
    d.update(online=False, reason=reason)
    if at is not None:
        d["updated_at"] = at
    return d


def telemetry_payload(
    site: str,
    serial: str,
    *,
    stream: str,
    seq: int,
    boot_id: int,
    samples: Sequence[Sequence[int]],
    decimated: int,
    sent_at: float,
) -> dict[str, Any]:
    d = _head("telemetry", site, serial)
    d.update(
        stream=stream,
        seq=seq,
        sent_at=sent_at,
        boot_id=boot_id,
        fields=list(TELEMETRY_FIELDS),
        samples=[[int(v) for v in s] for s in samples],
        decimated=decimated,
    )
    return d


def event_payload(
    site: str,
    serial: str,
    *,
    boot_id: int,
    kind: str,
    code: str,
    value: int,
    run_id: int,
    pen_t_ms: int | None,
    at: float,
    detail: Any = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An event; pen events get a derived id, bridge events (``pen_t_ms`` None) a random one."""
    if event_id is None:
        event_id = derive_event_id(serial, boot_id, kind, code, value, run_id, pen_t_ms)
    d = _head("events", site, serial)
    d.update(
        id=event_id,
        kind=kind,
        code=code,
        value=value,
        run_id=run_id,
        pen_t_ms=pen_t_ms,
        boot_id=boot_id,
        at=at,
    )
    if detail is not None:
        d["detail"] = detail
    return d


def derive_event_id(
    serial: str, boot_id: int, kind: str, code: str, value: int, run_id: int, pen_t_ms: int | None
) -> str:
    """An event's id: the treatment log's key (serial, boot, kind, pen time, code, run, value)
    for what the pen reported, so the same event sent twice is one; a random one for an event of
    this host (``pen_t_ms`` None: it happens once). Live events and fleet records share it."""
    if pen_t_ms is None:
        return f"{serial}:{boot_id:08x}:{kind}:{uuid.uuid4().hex}"
    return f"{serial}:{boot_id:08x}:{kind}:{pen_t_ms}:{code}:{run_id}:{value}"


def pen_event_payload(
    site: str, serial: str, boot_id: int, event: Event, at: float
) -> dict[str, Any]:
    return event_payload(
        site, serial, boot_id=boot_id, kind="event", code=event.code.name, value=event.value,
        run_id=event.run_id, pen_t_ms=event.t_ms, at=at,
    )  # fmt: skip


def fault_payload(
    site: str, serial: str, boot_id: int, fault: FaultReport, at: float
) -> dict[str, Any]:
    return event_payload(
        site, serial, boot_id=boot_id, kind="fault", code=fault.fault.name, value=fault.value,
        run_id=fault.run_id, pen_t_ms=fault.t_ms, at=at,
    )  # fmt: skip


def session_id(serial: str, boot_id: int, run_id: int) -> str:
    """The de-duplication key of a run: a pen reports each (boot, run) once."""
    return f"{serial}:{boot_id:08x}:run:{run_id}"


def session_payload(
    site: str, serial: str, boot_id: int, report: RunReport, at: float
) -> dict[str, Any]:
    d = _head("sessions", site, serial)
    d.update(
        id=session_id(serial, boot_id, report.run_id),
        boot_id=boot_id,
        run_id=report.run_id,
        outcome=report.outcome.name,
        mode=report.mode.name,
        target=report.target,
        strokes=report.strokes,
        duration_ms=report.duration_ms,
        area=_area_name(report.area),
        depth_um=report.depth_um,
        rate_sps=report.rate_sps,
        cartridge_id=report.cartridge_id,
        at=at,
    )
    return d


def command_payload(
    command: str, *, command_id: str | None = None, args: dict[str, Any] | None = None,
    sender: str | None = None, sent_at: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What a console sends to ``.../cmd/{user}``; the id defaults to a random one, ``sent_at``
    to now (the bridge refuses commands older than its window); ``sender`` is a display name."""
    d: dict[str, Any] = {
        "schema": SCHEMAS["cmd"].name,
        "id": command_id or uuid.uuid4().hex,
        "command": command,
        "sent_at": time.time() if sent_at is None else sent_at,
    }
    if args:
        d["args"] = args
    if sender:
        d["from"] = sender
    return d


def reply_payload(
    site: str,
    serial: str,
    command_id: str,
    *,
    result: Any = None,
    error: tuple[str, str] | None = None,
    sender: str | None = None,
) -> dict[str, Any]:
    """``ok`` with a result, or not ok with ``error=(code, reason)``; ``sender`` is the broker
    user the command came from."""
    d = _head("reply", site, serial)
    d["id"] = command_id
    d["ok"] = error is None
    if sender is not None:
        d["sender"] = sender
    if error is None:
        d["result"] = result
    else:
        d["error"] = {"code": error[0], "reason": error[1]}
    return d
