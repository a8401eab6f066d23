"""A bench's history (treatment log, calibration store) → the fleet database, in one go.

``micropen fleet export --from-sqlite FILE --db postgresql://…`` reads a treatment log or a
calibration store (told apart by their tables), read-only, turns every row into the fleet
record a bridge would have published (:mod:`.records`) and stores them with the ingest
workers' upserts (:mod:`.ingest_store`) in one transaction. Ids are derived from the rows
(pen serial, boot id, run id, pen time; the log's own times for host-made rows), never
random, so running the export twice stores the same rows once, and a run or pen event the
bridge already published is the same row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg

from ..record_sinks import OverrideRecord
from .errors import FleetError
from .ingest_store import statements
from .migrate import migrate
from .records import (
    CARTRIDGE_EVENTS,
    cartridge_record,
    event_record,
    override_record,
)
from .topics import SCHEMAS

__all__ = ["ExportError", "export_history", "records_of"]

_CARTRIDGE_ACTIONS = {code.name: action for code, action in CARTRIDGE_EVENTS.items()}


class ExportError(FleetError):
    """The file is not a treatment log or calibration store this version can read."""


def _open(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ExportError(f"{path} does not exist; give the bench's treatment log or "
                          "calibration.sqlite")  # fmt: skip
    try:
        conn = _connect_readonly(path)
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise ExportError(f"{path} is not an SQLite database ({exc}); give a treatment log "
                          "or calibration.sqlite") from exc  # fmt: skip
    return conn


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """Read without a trace, as the treatment log's own read-only opening does
    (``TreatmentLog(readonly=True)``): with no -wal/-shm beside the file nothing is live and
    everything is in the main file, so it is read ``immutable`` (even ``mode=ro`` would leave
    -wal/-shm files behind); a live database (a bench writing now) is read ``mode=ro``."""
    uri = path.resolve().as_uri()
    if not any(Path(f"{path}{side}").exists() for side in ("-wal", "-shm")):
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
    except sqlite3.OperationalError:  # a WAL database on a read-only disk: read it as is
        return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def records_of(path: Path, site: str) -> list[dict[str, Any]]:
    """The fleet records of a treatment log or a calibration store."""
    with closing(_open(path)) as conn:
        tables = _tables(conn)
        if {"sessions", "runs", "events", "overrides"} <= tables:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version < 3:
                raise ExportError(
                    f"treatment log {path} has schema {version}; open it once with this "
                    "micropen (micropen log list --log FILE) to upgrade it, then export"
                )
            return list(_treatment_log(conn, site))
        if "calibrations" in tables:
            return list(_calibrations(conn, site))
    raise ExportError(f"{path} is neither a treatment log nor a calibration store")


def _key(serial: str, boot: int) -> str:
    return f"{serial}:{boot:08x}"


def _head(kind: str, site: str, serial: str, record_id: str, at: float) -> dict[str, Any]:
    return {"schema": SCHEMAS[f"records/{kind}"].name, "site": site, "serial": serial,
            "id": record_id, "at": at}  # fmt: skip


def _treatment_log(conn: sqlite3.Connection, site: str) -> Iterator[dict[str, Any]]:
    sessions = {r["id"]: r for r in conn.execute("SELECT * FROM sessions ORDER BY id")}
    for s in sessions.values():
        serial, boot = s["pen_serial"], int(s["boot_id"])
        d = _head("session", site, serial, f"{_key(serial, boot)}:log-session:"
                  f"{s['started_at']:.6f}", s["started_at"])  # fmt: skip
        d.update(boot_id=boot, host_session=None, model=s["pen_model"], firmware=s["firmware"],
                 protocol_version=s["protocol_version"], simulated=bool(s["is_simulated"]),
                 started_at=s["started_at"], operator=s["operator"], ended_at=s["ended_at"],
                 outcome=s["outcome"])  # fmt: skip
        yield d
    for r in conn.execute("SELECT * FROM runs ORDER BY id"):
        serial, boot, run_id = r["pen_serial"], int(r["boot_id"]), int(r["run_id"])
        at = r["reported_at"] or r["started_at"] or 0.0
        d = _head("run", site, serial, f"{_key(serial, boot)}:run:{run_id}", at)
        d.update(
            boot_id=boot, run_id=run_id, outcome=r["outcome"] or "UNKNOWN", mode=r["mode"],
            target=r["reported_target"] if r["reported_target"] is not None else r["target"],
            strokes=r["strokes"], duration_ms=r["duration_ms"],
            area=r["reported_area"] or r["area"],
            depth_um=r["reported_depth_um"] if r["reported_depth_um"] is not None
            else r["depth_um"],
            rate_sps=r["reported_rate_sps"] if r["reported_rate_sps"] is not None
            else r["rate_sps"],
            cartridge_id=r["reported_cartridge_id"] if r["reported_cartridge_id"] is not None
            else r["cartridge_id"],
        )  # fmt: skip
        yield d
        if r["cartridge_id"] is not None and r["started_at"] is not None:
            yield cartridge_record(
                site, serial, boot_id=boot, action="used", cartridge_id=int(r["cartridge_id"]),
                lot=r["cartridge_lot"] or None, run_id=run_id, pen_t_ms=None,
                at=r["started_at"],
            )  # fmt: skip
    for e in conn.execute("SELECT * FROM events ORDER BY id"):
        s = sessions[e["session_id"]]
        serial = e["pen_serial"] or s["pen_serial"]
        boot = int(e["boot_id"] if e["boot_id"] is not None else s["boot_id"])
        kind, code, value, run_id, t_ms = e["kind"], e["code"], e["value"], e["run_id"], \
            e["pen_t_ms"]  # fmt: skip
        at = e["host_time"]
        if kind == "fault" and t_ms is not None:
            d = _head("fault", site, serial,
                      f"{_key(serial, boot)}:fault:{t_ms}:{code}:{run_id}:{value}", at)  # fmt: skip
            d.update(boot_id=boot, code=code, value=value, run_id=run_id, pen_t_ms=t_ms)
            yield d
            continue
        record_id = None if t_ms is not None else (
            f"{_key(serial, boot)}:{kind}:log:{at:.6f}:{code}"
        )  # fmt: skip
        yield event_record(
            site, serial, boot_id=boot, kind=kind, code=code, value=value, run_id=run_id,
            pen_t_ms=t_ms, at=at, detail=e["detail"] or None, record_id=record_id,
        )  # fmt: skip
        action = _CARTRIDGE_ACTIONS.get(code) if kind == "event" else None
        if action is not None and t_ms is not None:
            yield cartridge_record(
                site, serial, boot_id=boot, action=action, cartridge_id=value & 0xFFFF_FFFF,
                lot=None, run_id=run_id, pen_t_ms=t_ms, at=at,
            )  # fmt: skip
    for o in conn.execute("SELECT * FROM overrides ORDER BY id"):
        s = sessions[o["session_id"]]
        serial, boot = s["pen_serial"], int(s["boot_id"])
        yield override_record(
            site, OverrideRecord(serial, boot, o["depth_um"], o["area"], o["reason"],
                                 o["host_time"]),
            record_id=f"{_key(serial, boot)}:override:log:{o['host_time']:.6f}",
        )  # fmt: skip


def _calibrations(conn: sqlite3.Connection, site: str) -> Iterator[dict[str, Any]]:
    """Every finished record, read on the export's own trace-less connection (what
    ``RecordStore.history()`` reads, without its ``mode=ro`` opening)."""
    from ..calibration.record import CalibrationRecord
    from .records import calibration_record

    rows = conn.execute("SELECT record_json FROM calibrations ORDER BY started_at DESC, rowid DESC")
    for (text,) in rows.fetchall():
        record = CalibrationRecord.from_dict(json.loads(text))
        if record.finished_at is not None:
            yield calibration_record(site, record.to_dict(), at=record.finished_at.timestamp())


def export_history(paths: list[Path], dsn: str, *, site: str) -> dict[str, Any]:
    """Store every record of ``paths`` (treatment logs, calibration stores) in one
    transaction; counts per kind (how many records were read, not how many rows were new)."""
    records: list[dict[str, Any]] = []
    for path in paths:
        records += records_of(Path(path), site)
    migrate(dsn)
    counts: dict[str, int] = {}
    with psycopg.connect(dsn, autocommit=False) as conn, conn.transaction(), \
            conn.cursor() as cur:  # fmt: skip
        for record in records:
            for sql, params in statements(record):
                cur.execute(sql, params)
            kind = str(record["schema"]).split("/")[0].removeprefix("micropen.")
            counts[kind] = counts.get(kind, 0) + 1
    return {"records": len(records), "by_kind": counts}
