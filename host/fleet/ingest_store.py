"""Fleet records → PostgreSQL rows: one idempotent upsert per record, on its natural key.

:func:`statements` turns one decoded record payload into the SQL statements that store it
(``INSERT … ON CONFLICT … DO NOTHING / DO UPDATE``), so storing the same record twice — a
redelivered message, an export run again — leaves the same rows. The ingest worker runs them
on an async connection, ``micropen fleet export`` on a sync one; both in one transaction per
batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, LiteralString

from psycopg.types.json import Jsonb

from .errors import PayloadError
from .records import KIND_OF_SCHEMA

__all__ = ["Statement", "rejected", "statements"]

Statement = tuple[LiteralString, tuple[Any, ...]]


def _site_and_pen(p: dict[str, Any]) -> Iterator[Statement]:
    yield "INSERT INTO sites (site) VALUES (%s) ON CONFLICT DO NOTHING", (p["site"],)
    yield (
        "INSERT INTO pens (serial, site) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (p["serial"], p["site"]),
    )


def _session(p: dict[str, Any]) -> Iterator[Statement]:
    yield (
        "UPDATE pens SET model = %s, firmware = %s, simulated = %s, last_boot_id = %s "
        "WHERE serial = %s AND (model IS DISTINCT FROM %s OR firmware IS DISTINCT FROM %s "
        "OR last_boot_id IS DISTINCT FROM %s)",
        (p["model"], p["firmware"], p["simulated"], p["boot_id"], p["serial"], p["model"],
         p["firmware"], p["boot_id"]),
    )  # fmt: skip
    yield (
        "INSERT INTO sessions (record_id, serial, site, boot_id, host_session, model, firmware, "
        "protocol_version, simulated, operator, started_at, ended_at, outcome, at, payload) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (record_id) DO UPDATE SET "
        "ended_at = coalesce(EXCLUDED.ended_at, sessions.ended_at), "
        "outcome = coalesce(EXCLUDED.outcome, sessions.outcome)",
        (p["id"], p["serial"], p["site"], p["boot_id"], p["host_session"], p["model"],
         p["firmware"], p["protocol_version"], p["simulated"], p.get("operator"),
         p["started_at"], p.get("ended_at"), p.get("outcome"), p["at"], Jsonb(p)),
    )  # fmt: skip


def _run(p: dict[str, Any]) -> Iterator[Statement]:
    yield (
        "INSERT INTO runs (record_id, serial, site, boot_id, run_id, outcome, mode, target, "
        "strokes, duration_ms, area, depth_um, rate_sps, cartridge_id, at, payload) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (record_id) DO NOTHING",
        (p["id"], p["serial"], p["site"], p["boot_id"], p["run_id"], p["outcome"], p["mode"],
         p["target"], p["strokes"], p["duration_ms"], p["area"], p["depth_um"], p["rate_sps"],
         p["cartridge_id"], p["at"], Jsonb(p)),
    )  # fmt: skip


def _event(p: dict[str, Any]) -> Iterator[Statement]:
    detail = p.get("detail")
    yield (
        "INSERT INTO events (record_id, serial, site, boot_id, kind, code, value, run_id, "
        "pen_t_ms, detail, at, payload) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (p["id"], p["serial"], p["site"], p["boot_id"], p["kind"], p["code"], p["value"],
         p["run_id"], p["pen_t_ms"], None if detail is None else Jsonb(detail), p["at"],
         Jsonb(p)),
    )  # fmt: skip


def _fault(p: dict[str, Any]) -> Iterator[Statement]:
    yield (
        "INSERT INTO faults (record_id, serial, site, boot_id, code, value, run_id, pen_t_ms, "
        "at, payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (p["id"], p["serial"], p["site"], p["boot_id"], p["code"], p["value"], p["run_id"],
         p["pen_t_ms"], p["at"], Jsonb(p)),
    )  # fmt: skip


def _override(p: dict[str, Any]) -> Iterator[Statement]:
    yield (
        "INSERT INTO overrides (record_id, serial, site, boot_id, depth_um, area, reason, at, "
        "payload) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (p["id"], p["serial"], p["site"], p["boot_id"], p["depth_um"], p["area"], p["reason"],
         p["at"], Jsonb(p)),
    )  # fmt: skip


def _cartridge(p: dict[str, Any]) -> Iterator[Statement]:
    yield (
        "INSERT INTO cartridge_mounts (record_id, serial, site, boot_id, action, cartridge_id, "
        "lot, run_id, pen_t_ms, at, payload) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (record_id) DO UPDATE SET lot = coalesce(cartridge_mounts.lot, EXCLUDED.lot)",
        (p["id"], p["serial"], p["site"], p["boot_id"], p["action"], p["cartridge_id"],
         p["lot"], p["run_id"], p["pen_t_ms"], p["at"], Jsonb(p)),
    )  # fmt: skip


def _calibration(p: dict[str, Any]) -> Iterator[Statement]:
    yield (
        "INSERT INTO calibration_records (record_id, serial, site, certificate_number, "
        "procedure, outcome, committed, started_at, finished_at, technician, station, "
        "interval_days, record_sha256, record, at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (record_id) DO UPDATE SET certificate_number = EXCLUDED.certificate_number, "
        "outcome = EXCLUDED.outcome, committed = EXCLUDED.committed, "
        "finished_at = EXCLUDED.finished_at, record_sha256 = EXCLUDED.record_sha256, "
        "record = EXCLUDED.record, at = EXCLUDED.at "
        "WHERE calibration_records.record_sha256 <> EXCLUDED.record_sha256",
        (p["id"], p["serial"], p["site"], p["certificate_number"], p["procedure"],
         p["outcome"], p["committed"], p["started_at"], p["finished_at"], p["technician"],
         p["station"], p["interval_days"], p["record_sha256"], Jsonb(p["record"]), p["at"]),
    )  # fmt: skip


_BY_KIND = {
    "session": _session,
    "run": _run,
    "event": _event,
    "fault": _fault,
    "override": _override,
    "cartridge": _cartridge,
    "calibration": _calibration,
}


def statements(payload: dict[str, Any]) -> list[Statement]:
    """The upserts that store one decoded record payload; PayloadError for a payload whose
    fields are missing or of the wrong type (the caller keeps it as rejected)."""
    kind = KIND_OF_SCHEMA.get(str(payload.get("schema")))
    if kind is None:
        raise PayloadError(f"schema {payload.get('schema')!r} is not a fleet record")
    try:
        return [*_site_and_pen(payload), *_BY_KIND[kind](payload)]
    except (KeyError, TypeError) as exc:
        raise PayloadError(f"{payload.get('schema')} record lacks or mistypes {exc}") from None


def rejected(topic: str, payload: bytes, reason: str) -> Statement:
    """Keep a message this version cannot store (once per distinct topic and payload)."""
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()
    return (
        "INSERT INTO rejected_messages (digest, topic, payload, reason) "
        "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (digest, topic.replace("\0", "\\0"), payload, reason.replace("\0", "\\0")[:1000]),
    )
