"""Fleet records: the durable, versioned payloads an ingest worker stores in PostgreSQL.

Each record kind is published QoS 1 from the bridge's on-disk outbox on
``micropen/v1/{site}/{serial}/records/{kind}`` (``kind`` one of :data:`RECORD_KINDS`), and
its payload's ``schema`` names it and its major version (``micropen.run/1``...). Every record
carries ``id``, its *natural key* as one string, derived only from what identifies the record
on the pen or the bench (pen serial, boot id, run id, pen time, certificate record id), so the
same record published twice — a pen re-sending after a reconnect, an outbox re-sending after a
lost PUBACK, an export run again — has the same ``id`` and lands in one row.

``at`` is the bench's wall-clock time when the record was made (the latency the ingest
benchmark measures ends at the committed row).

Builders are pure functions (the caller passes the time); :func:`from_pen_record` maps what
the pen connection hands a record sink (:mod:`micropen.host.record_sinks`) to payloads.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from micropen.protocol.messages import Event, EventCode, FaultReport, Identity, RunReport

from ..connection import ConnectionNotice
from ..record_sinks import OverrideRecord, RunStartRecord
from ..security_events import describe
from .payloads import derive_event_id
from .topics import SCHEMAS

__all__ = [
    "CARTRIDGE_EVENTS",
    "KIND_OF_SCHEMA",
    "RECORD_KINDS",
    "calibration_record",
    "cartridge_record",
    "event_record",
    "fault_record",
    "from_pen_record",
    "override_record",
    "record_topic",
    "run_record",
    "session_record",
]

RECORD_KINDS = ("session", "run", "event", "fault", "override", "cartridge", "calibration")
KIND_OF_SCHEMA = {SCHEMAS[f"records/{k}"].name: k for k in RECORD_KINDS}
CARTRIDGE_EVENTS = {
    EventCode.CARTRIDGE_MOUNTED: "mounted",
    EventCode.CARTRIDGE_REMOVED: "removed",
    EventCode.CARTRIDGE_LOCKED: "locked",
    EventCode.CARTRIDGE_RETIRED: "retired",
}


def record_topic(site: str, serial: str, kind: str) -> str:
    if kind not in RECORD_KINDS:
        raise ValueError(f"unknown record kind {kind!r}; valid: {', '.join(RECORD_KINDS)}")
    return f"micropen/v1/{site}/{serial}/records/{kind}"


def _head(kind: str, site: str, serial: str, record_id: str, at: float) -> dict[str, Any]:
    return {
        "schema": SCHEMAS[f"records/{kind}"].name,
        "site": site,
        "serial": serial,
        "id": record_id,
        "at": at,
    }


def _boot(serial: str, boot_id: int) -> str:
    return f"{serial}:{boot_id:08x}"


def session_record(
    site: str, identity: Identity, *, host_session: int, simulated: bool, at: float
) -> dict[str, Any]:
    """A host session with a pen boot: (serial, boot id, host session) is its natural key."""
    serial = identity.serial
    d = _head("session", site, serial, f"{_boot(serial, identity.boot_id)}:session:"
              f"{host_session:08x}", at)  # fmt: skip
    d.update(
        boot_id=identity.boot_id,
        host_session=host_session,
        model=identity.model,
        firmware=f"{identity.firmware_major}.{identity.firmware_minor}.{identity.firmware_patch}",
        protocol_version=identity.protocol_version,
        simulated=simulated,
        started_at=at,
    )
    return d


def run_record(
    site: str, serial: str, boot_id: int, report: RunReport, at: float
) -> dict[str, Any]:
    """A run's report: the exact strokes the pen delivered. Key: (serial, boot id, run id)."""
    from .payloads import session_payload

    legacy = session_payload(site, serial, boot_id, report, at)
    d = _head("run", site, serial, legacy["id"], at)
    for key in ("boot_id", "run_id", "outcome", "mode", "target", "strokes", "duration_ms",
                "area", "depth_um", "rate_sps", "cartridge_id"):  # fmt: skip
        d[key] = legacy[key]
    return d


def event_record(
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
    record_id: str | None = None,
) -> dict[str, Any]:
    """A pen event (key: serial, boot id, kind, code, value, run id, pen time — the treatment
    log's key) or a host/link event (a random id: it happens once, on this host)."""
    if record_id is None:
        record_id = derive_event_id(serial, boot_id, kind, code, value, run_id, pen_t_ms)
    d = _head("event", site, serial, record_id, at)
    d.update(kind=kind, code=code, value=value, run_id=run_id, pen_t_ms=pen_t_ms, boot_id=boot_id)
    if detail is not None:
        d["detail"] = detail
    return d


def fault_record(
    site: str, serial: str, boot_id: int, fault: FaultReport, at: float
) -> dict[str, Any]:
    code = fault.fault.name
    key = f"{_boot(serial, boot_id)}:fault:{fault.t_ms}:{code}:{fault.run_id}:{fault.value}"
    d = _head("fault", site, serial, key, at)
    d.update(boot_id=boot_id, code=code, value=fault.value, run_id=fault.run_id,
             pen_t_ms=fault.t_ms)  # fmt: skip
    return d


def override_record(
    site: str, override: OverrideRecord, *, record_id: str | None = None
) -> dict[str, Any]:
    serial = override.serial
    key = record_id or f"{_boot(serial, override.boot_id)}:override:{uuid.uuid4().hex}"
    d = _head("override", site, serial, key, override.at)
    d.update(boot_id=override.boot_id, depth_um=override.depth_um, area=override.area,
             reason=override.reason)  # fmt: skip
    return d


def cartridge_record(
    site: str,
    serial: str,
    *,
    boot_id: int,
    action: str,
    cartridge_id: int,
    lot: str | None,
    run_id: int,
    pen_t_ms: int | None,
    at: float,
) -> dict[str, Any]:
    """A cartridge mounted/removed/locked/retired (the pen's events; key: serial, boot, pen
    time, action, cartridge) or used by a run (key: serial, boot, run id; with its lot)."""
    if action == "used":
        key = f"{_boot(serial, boot_id)}:cartridge:used:run:{run_id}"
    else:
        key = f"{_boot(serial, boot_id)}:cartridge:{action}:{pen_t_ms}:{cartridge_id}"
    d = _head("cartridge", site, serial, key, at)
    d.update(boot_id=boot_id, action=action, cartridge_id=cartridge_id, lot=lot, run_id=run_id,
             pen_t_ms=pen_t_ms)  # fmt: skip
    return d


def calibration_record(site: str, record: dict[str, Any], *, at: float) -> dict[str, Any]:
    """A calibration record of the calibration store (``CalibrationRecord.to_dict()``): key
    is its record id; ``record_sha256`` hashes the canonical JSON the certificate is made of."""
    pen = record.get("pen") or {}
    serial = str(pen.get("serial", ""))
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    d = _head("calibration", site, serial, f"calibration:{record['record_id']}", at)
    d.update(
        record_id=record["record_id"],
        certificate_number=record.get("certificate_number", ""),
        procedure=record.get("procedure", ""),
        outcome=record.get("outcome", ""),
        committed=bool(record.get("committed", False)),
        started_at=record.get("started_at"),
        finished_at=record.get("finished_at"),
        technician=record.get("technician", ""),
        station=record.get("station", ""),
        interval_days=record.get("interval_days"),
        record_sha256=hashlib.sha256(canonical.encode()).hexdigest(),
        record=record,
    )
    return d


def from_pen_record(
    site: str, serial: str, boot_id: int, item: Any, at: float
) -> list[dict[str, Any]]:
    """The record payloads of one item a pen connection hands its record sinks."""
    if isinstance(item, RunReport):
        return [run_record(site, serial, boot_id, item, at)]
    if isinstance(item, FaultReport):
        return [fault_record(site, serial, boot_id, item, at)]
    if isinstance(item, Event):
        out = [event_record(
            site, serial, boot_id=boot_id, kind="event", code=item.code.name, value=item.value,
            run_id=item.run_id, pen_t_ms=item.t_ms, at=at, detail=describe(item) or None,
        )]  # fmt: skip
        action = CARTRIDGE_EVENTS.get(item.code)
        if action is not None:
            out.append(cartridge_record(
                site, serial, boot_id=boot_id, action=action,
                cartridge_id=item.value & 0xFFFF_FFFF, lot=None, run_id=item.run_id,
                pen_t_ms=item.t_ms, at=at,
            ))  # fmt: skip
        return out
    if isinstance(item, ConnectionNotice):
        return [event_record(
            site, serial, boot_id=boot_id, kind="link", code=item.kind, value=0, run_id=0,
            pen_t_ms=None, at=at, detail=item.detail or None,
        )]  # fmt: skip
    if isinstance(item, OverrideRecord):
        return [override_record(site, item)]
    if isinstance(item, RunStartRecord):
        return [cartridge_record(
            site, serial, boot_id=item.boot_id, action="used", cartridge_id=item.cartridge_id,
            lot=item.cartridge_lot or None, run_id=item.run_id, pen_t_ms=None, at=item.at,
        )]  # fmt: skip
    return []
