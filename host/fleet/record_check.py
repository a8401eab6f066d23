"""Fleet record validation: what an ingest worker checks before the database sees a message.

A message on ``micropen/v1/{site}/{serial}/records/{kind}`` is hostile until proven otherwise
(a broken bridge, a pen account misused): no message may end a worker, and no value a pen
cannot produce may reach the fleet database. :func:`parse_record` therefore

* bounds the payload's size (:data:`MAX_RECORD_BYTES`) and measures its nesting with the
  bridge's linear, non-recursive scan (:func:`.commands.nesting`) *before* ``json.loads``
  sees it (a 50,000-level payload would end ``json.loads`` with ``RecursionError``);
* refuses duplicate keys (``{"strokes": 20, "strokes": 99999}``: which one is meant?), NaN and
  infinities;
* checks every field of the record kind's schema (:data:`.topics.SCHEMAS`) against a table:
  its JSON type (``true`` is not a number, ``1.5`` is not an integer), its range (u32 fields
  0..2^32-1; depth, rate and strokes as the protocol bounds them: :mod:`micropen.protocol.limits`),
  strings bounded and printable, enums from the protocol (run outcome and mode, fault and event
  codes, areas);
* requires ``id`` to be the record's natural key as :mod:`.records` builds it for the topic's
  serial (so a message cannot pre-empt another pen's record under ``ON CONFLICT DO NOTHING``),
  and ``at`` a finite time from 2020-01-01 to one day after now.

Every refusal is a :class:`PayloadError` naming the field, the value and the limit; the worker
stores the message in ``rejected_messages`` with that reason and acknowledges it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import Any

from micropen.protocol import limits as L
from micropen.protocol.messages import EventCode, FaultCode, RunMode, RunOutcome

from .commands import nesting
from .errors import PayloadError
from .records import KIND_OF_SCHEMA
from .topics import MAX_LEVEL, SCHEMAS, decode

__all__ = [
    "EARLIEST",
    "FUTURE_SLACK_S",
    "MAX_RECORD_BYTES",
    "MAX_RECORD_DEPTH",
    "check_record",
    "parse_record",
]

MAX_RECORD_BYTES = 128 * 1024  # a calibration record, the largest, is a few KB
MAX_RECORD_DEPTH = 16  # the record object is level 1; a calibration record nests ~5 levels
EARLIEST = 1_577_836_800.0  # 2020-01-01T00:00:00Z: no record of this product is older
FUTURE_SLACK_S = 86_400.0  # a bench clock may run ahead, a day at most
U32 = 2**32 - 1
I64 = 2**63 - 1
MAX_ID_CHARS = 256
MAX_TEXT = 256
MAX_REASON = 1000

_RUN_OUTCOMES = frozenset(o.name for o in RunOutcome) | {"UNKNOWN"}  # UNKNOWN: exports
_RUN_MODES = frozenset(m.name for m in RunMode)
_FAULT_CODES = frozenset(f.name for f in FaultCode)
_EVENT_CODES = frozenset(e.name for e in EventCode)
_AREAS = frozenset(a.name.lower() for a in L.Area)
_EVENT_KINDS = frozenset({"event", "fault", "link", "host", "remote-command"})
_CARTRIDGE_ACTIONS = frozenset({"mounted", "removed", "locked", "retired", "used"})
_PROCEDURES = frozenset({"depth", "rate", "all", "verify"})
_FORBIDDEN_LEVEL = set("/+#\0$")

Check = Callable[[str, Any], None]


def _bad(field: str, value: Any, what: str) -> PayloadError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return PayloadError(f"{field} = {shown}: {what}")


def _integer(low: int, high: int) -> Check:
    def check(field: str, value: Any) -> None:
        if type(value) is not int:
            raise _bad(field, value, f"must be an integer {low}..{high}")
        if not low <= value <= high:
            raise _bad(field, value, f"is outside {low}..{high}")

    return check


def _time(field: str, value: Any) -> None:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _bad(field, value, "must be a finite number of seconds since 1970")
    latest = time.time() + FUTURE_SLACK_S
    if not EARLIEST <= value <= latest:
        raise _bad(field, value, "is outside 2020-01-01 .. now + 1 day (check the bench clock)")


def _text(high: int, *, allowed: frozenset[str] | None = None, empty: bool = True) -> Check:
    def check(field: str, value: Any) -> None:
        if type(value) is not str:
            raise _bad(field, value, f"must be text of at most {high} characters")
        if len(value) > high or (not empty and not value):
            raise _bad(field, value, f"must be {0 if empty else 1}..{high} characters long")
        if not value.isprintable():
            raise _bad(field, value, "holds unprintable characters")
        if allowed is not None and value not in allowed:
            raise _bad(field, value, f"is not one of {', '.join(sorted(allowed))}")

    return check


def _level(field: str, value: Any) -> None:
    _text(MAX_LEVEL, empty=False)(field, value)
    if _FORBIDDEN_LEVEL & set(value):
        raise _bad(field, value, "holds a topic separator or wildcard")


def _area(field: str, value: Any) -> None:
    _text(32, empty=False)(field, value)
    if value not in _AREAS and not (value.isdigit() and int(value) <= 255):
        raise _bad(field, value, f"is not a treatment area ({', '.join(sorted(_AREAS))})")


def _boolean(field: str, value: Any) -> None:
    if type(value) is not bool:
        raise _bad(field, value, "must be true or false")


def _optional(check: Check) -> Check:
    def optional(field: str, value: Any) -> None:
        if value is not None:
            check(field, value)

    return optional


def _any(field: str, value: Any) -> None:
    """Free JSON (event detail): bounded by the payload's size and nesting already."""


def _sha256(field: str, value: Any) -> None:
    if type(value) is not str or len(value) != 64 or value.strip("0123456789abcdef"):
        raise _bad(field, value, "must be 64 lower-case hex digits (a SHA-256)")


def _object(field: str, value: Any) -> None:
    if type(value) is not dict:
        raise _bad(field, value, "must be an object")


_U32 = _integer(0, U32)
_HEAD: dict[str, Check] = {
    "schema": _text(64, empty=False), "site": _level, "serial": _level,
    "id": _text(MAX_ID_CHARS, empty=False), "at": _time,
}  # fmt: skip
_FIELDS: dict[str, dict[str, Check]] = {
    "session": {
        "boot_id": _U32, "host_session": _optional(_U32), "model": _text(64),
        "firmware": _text(64), "protocol_version": _integer(0, 65_535), "simulated": _boolean,
        "started_at": _time, "operator": _optional(_text(MAX_TEXT)),
        "ended_at": _optional(_time), "outcome": _optional(_text(64)),
    },
    "run": {
        "boot_id": _U32, "run_id": _U32, "outcome": _text(32, allowed=_RUN_OUTCOMES),
        "mode": _text(16, allowed=_RUN_MODES),
        "target": _integer(0, max(L.STROKES_MAX, L.RUN_DURATION_MAX_MS)),
        "strokes": _integer(0, L.STROKES_MAX), "duration_ms": _U32, "area": _area,
        "depth_um": _integer(0, L.DEPTH_MAX_UM), "rate_sps": _integer(0, L.RATE_MAX_SPS),
        "cartridge_id": _U32,
    },
    "event": {
        "boot_id": _U32, "kind": _text(32, allowed=_EVENT_KINDS), "code": _text(64, empty=False),
        "value": _integer(-I64, I64), "run_id": _U32, "pen_t_ms": _optional(_U32),
        "detail": _any,
    },
    "fault": {
        "boot_id": _U32, "code": _text(32, allowed=_FAULT_CODES), "value": _integer(-I64, I64),
        "run_id": _U32, "pen_t_ms": _U32,
    },
    "override": {
        "boot_id": _U32, "depth_um": _integer(0, L.DEPTH_MAX_UM), "area": _area,
        "reason": _text(MAX_REASON),  # a blank reason is the database's CHECK to refuse
    },
    "cartridge": {
        "boot_id": _U32, "action": _text(16, allowed=_CARTRIDGE_ACTIONS), "cartridge_id": _U32,
        "lot": _optional(_text(64)), "run_id": _U32, "pen_t_ms": _optional(_U32),
    },
    "calibration": {
        "record_id": _text(128, empty=False), "certificate_number": _text(128),
        "procedure": _text(16, allowed=_PROCEDURES), "outcome": _text(64),
        "committed": _boolean, "started_at": _optional(_text(64)),
        "finished_at": _optional(_text(64)), "technician": _text(MAX_TEXT),
        "station": _text(MAX_TEXT), "interval_days": _optional(_integer(0, 3650)),
        "record_sha256": _sha256, "record": _object,
    },
}  # fmt: skip


def _schema_fields_match() -> None:
    """Every documented field of every record schema has a check (and no check is extra)."""
    for kind, checks in _FIELDS.items():
        documented = SCHEMAS[f"records/{kind}"].all_fields
        if documented != set(checks) | set(_HEAD):
            raise AssertionError(f"record_check and topics.SCHEMAS disagree on {kind}")


_schema_fields_match()


def _natural_key(kind: str, r: dict[str, Any]) -> tuple[str, bool]:
    """(the id records.py builds for this record, or its fixed prefix; whether it is exact)."""
    if kind == "calibration":
        return f"calibration:{r['record_id']}", True
    boot = f"{r['serial']}:{r['boot_id']:08x}"
    if kind == "session":
        if r["host_session"] is None:  # a treatment-log export: keyed by its start time
            return f"{boot}:log-session:", False
        return f"{boot}:session:{r['host_session']:08x}", True
    if kind == "run":
        return f"{boot}:run:{r['run_id']}", True
    if kind in ("event", "fault"):
        t_ms = r["pen_t_ms"]
        if t_ms is None:  # a host or link event: a random id made once
            return f"{boot}:{r['kind']}:", False
        return f"{boot}:{kind if kind == 'fault' else r['kind']}:{t_ms}:{r['code']}:" \
            f"{r['run_id']}:{r['value']}", True  # fmt: skip
    if kind == "override":
        return f"{boot}:override:", False
    if r["action"] == "used":
        return f"{boot}:cartridge:used:run:{r['run_id']}", True
    return f"{boot}:cartridge:{r['action']}:{r['pen_t_ms']}:{r['cartridge_id']}", True


def check_record(record: dict[str, Any], kind: str) -> dict[str, Any]:
    """Check a decoded record of ``kind`` field by field; returns it, or PayloadError."""
    checks = _FIELDS[kind]
    for field, check in _HEAD.items():
        check(field, record.get(field))
    for field, check in checks.items():
        check(field, record.get(field))
    if kind == "event":
        code = record["code"]
        if record["kind"] == "event" and code not in _EVENT_CODES:
            raise _bad("code", code, "is not a pen event code")
        if record["kind"] == "fault" and code not in _FAULT_CODES:
            raise _bad("code", code, "is not a fault code")
    if kind == "calibration":
        inner = record["record"]
        pen = inner.get("pen")
        if inner.get("record_id") != record["record_id"]:
            raise _bad("record.record_id", inner.get("record_id"), "differs from record_id")
        if not isinstance(pen, dict) or pen.get("serial") != record["serial"]:
            raise _bad("record.pen.serial", pen, f"differs from serial {record['serial']!r}")
        canonical = json.dumps(inner, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if hashlib.sha256(canonical.encode()).hexdigest() != record["record_sha256"]:
            raise _bad("record_sha256", record["record_sha256"], "is not the record's SHA-256")
    key, exact = _natural_key(kind, record)
    rid = record["id"]
    if (rid != key) if exact else not (rid.startswith(key) and len(rid) > len(key)):
        want = key if exact else f"{key}…"
        raise _bad("id", rid, f"is not this record's natural key {want!r}")
    if kind == "session":
        _time("started_at", record["started_at"])
    return record


def _loads(data: str | bytes | bytearray) -> Any:
    return json.loads(data, object_pairs_hook=_pairs, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in items:
        if key in obj:
            raise PayloadError(f"key {key!r} appears twice; a record names each field once")
        obj[key] = value
    return obj


def parse_record(data: bytes, channel: str) -> dict[str, Any]:
    """Bounded parse and full check of a fleet record payload of ``channel`` (records/…);
    PayloadError for anything a worker must not store. Never raises anything else for any
    input bytes (RecursionError, MemoryError of a hostile payload included)."""
    kind = KIND_OF_SCHEMA.get(SCHEMAS[channel].name) if channel in SCHEMAS else None
    if kind is None:
        raise PayloadError(f"{channel!r} is not a fleet record channel")
    if len(data) > MAX_RECORD_BYTES:
        raise PayloadError(f"payload is {len(data)} bytes; a record is at most {MAX_RECORD_BYTES}")
    data = bytes(data)
    # nesting never exceeds the number of opening brackets (those in strings included): most
    # records have fewer than the limit, and the scan is needed only beyond it
    openers = data.count(b"[") + data.count(b"{")
    deepest = nesting(data, MAX_RECORD_DEPTH)[0] if openers > MAX_RECORD_DEPTH else openers
    if deepest > MAX_RECORD_DEPTH:
        raise PayloadError(f"payload is nested {deepest} levels deep; at most {MAX_RECORD_DEPTH}")
    try:
        record = decode(data, channel, loads=_loads)
    except (RecursionError, MemoryError) as exc:  # decode turns both into PayloadError too
        raise PayloadError(f"{channel} payload cannot be parsed: {type(exc).__name__}") from None
    return check_record(record, kind)
