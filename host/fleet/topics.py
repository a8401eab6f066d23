"""The fleet's topic tree and JSON payload schemas, declared once.

Topic tree (version 1)::

    micropen/v1/{site}/{serial}/status      retained, QoS 1   micropen.status/1 (last will: offline)
    micropen/v1/{site}/{serial}/telemetry   QoS 0             micropen.telemetry/1 (batches)
    micropen/v1/{site}/{serial}/events      QoS 1, queued     micropen.event/1 (events, faults)
    micropen/v1/{site}/{serial}/sessions    QoS 1, queued     micropen.session/1 (run reports)
    micropen/v1/{site}/{serial}/cmd/{user}  QoS 1, inbound    micropen.command/2 ({user}: the
                                                              broker user; the ACL binds it)
    micropen/v1/{site}/{serial}/reply       QoS 1             micropen.reply/1

Every payload is one UTF-8 JSON object whose ``schema`` names its kind and major version.
Compatibility rule: a new optional field keeps the version (consumers ignore fields they do not
know); removing, renaming or changing the meaning of a field bumps the major version, and a
change of the tree itself bumps ``v1`` in the topic root. A decoder refuses another major
version with :class:`PayloadError` instead of guessing. ``docs/fleet.md`` lists these fields and
``tests/fleet/test_topics.py`` checks that it does.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from micropen.protocol.messages import Telemetry

from .errors import BrokerConfigError, PayloadError

__all__ = [
    "CHANNELS",
    "RECORD_CHANNELS",
    "SCHEMAS",
    "TELEMETRY_FIELDS",
    "TOPIC_ROOT",
    "PenTopics",
    "Schema",
    "check_level",
    "decode",
    "encode",
    "parse_topic",
    "topic_filter",
]

TOPIC_ROOT = "micropen/v1"
CHANNELS = ("status", "telemetry", "events", "sessions", "cmd", "reply")
TELEMETRY_FIELDS: tuple[str, ...] = tuple(f.name for f in Telemetry.FIELDS)
_FORBIDDEN = set("/+#\0$")
MAX_LEVEL = 64


@dataclass(frozen=True, slots=True)
class Schema:
    """One payload kind: its channel, delivery and documented fields."""

    name: str  # e.g. "micropen.status/1"
    channel: str
    qos: int
    retain: bool
    queued: bool  # kept in the on-disk outbox until the broker acknowledges it (PUBACK)
    fields: dict[str, str]  # field -> meaning; a "?" suffix marks a field that may be absent

    @property
    def kind(self) -> str:
        return self.name.split("/")[0]

    @property
    def required(self) -> frozenset[str]:
        return frozenset(k for k in self.fields if not k.endswith("?"))

    @property
    def all_fields(self) -> frozenset[str]:
        return frozenset(k.rstrip("?") for k in self.fields)


_COMMON = {
    "schema": "kind and major version of this payload",
    "site": "site name (topic level)",
    "serial": "pen serial number (topic level, and the broker username of its bridge)",
}
SCHEMAS: dict[str, Schema] = {
    s.channel: s
    for s in (
        Schema(
            "micropen.status/1", "status", 1, True, False,
            {
                **_COMMON,
                "online": "true while the bridge runs; false in the last will and after a stop",
                "reason?": "why the bridge is offline (offline payloads only)",
                "updated_at?": "bridge wall-clock time of this status, s since 1970 (not in the "
                "last will, which the broker publishes)",
                "link?": "'up' or 'down': the bridge's link to the pen",
                "model?": "pen model", "firmware?": "pen firmware major.minor.patch",
                "simulated?": "true for the built-in simulator",
                "boot_id?": "pen boot id (a new value means the pen restarted)",
                "state?": "pen state name (IDLE, RUNNING, FAULT, ...) or null when unknown",
                "fault?": "active fault name (NONE when none) or null when unknown",
                "last_fault?": "last fault seen by this bridge {code, value, run_id, at} or null",
                "cartridge?": "{id, state, strokes} of the mounted cartridge, or null",
                "run?": "{id, area, outcome, strokes} of the last or current run, or null",
                "battery_mv?": "battery voltage in mV, or null",
                "temperature_dc?": "handpiece temperature in 0.1 °C, or null",
                "calibrated?": "pen reports a valid calibration (bool) or null",
                "calibration_due?": "next calibration due date (YYYY-MM-DD) or null if unknown",
                "telemetry_hz?": "telemetry rate the pen streams at",
                "stream?": "id of this bridge run; telemetry seq numbers restart with it",
            },
        ),
        Schema(
            "micropen.telemetry/1", "telemetry", 0, False, False,
            {
                **_COMMON,
                "stream": "id of this bridge run (seq restarts at 0 with a new stream)",
                "seq": "batch number, +1 per batch: a jump is a lost batch",
                "sent_at": "bridge wall-clock time of publishing, s since 1970 (latency)",
                "boot_id": "pen boot id",
                "fields": "column names of each sample (the pen's Telemetry fields)",
                "samples": "list of samples, each a list in 'fields' order",
                "decimated": "samples dropped by the rate limit since the previous batch",
            },
        ),
        Schema(
            "micropen.event/1", "events", 1, False, True,
            {
                **_COMMON,
                "id": "unique id: consumers de-duplicate the at-least-once delivery with it",
                "kind": "'event', 'fault', 'link' or 'remote-command'",
                "code": "event code, fault code, link notice or command name",
                "value": "event value (fault reading, ...), 0 when none",
                "run_id": "run the event belongs to, 0 when none",
                "pen_t_ms": "pen uptime in ms when it happened, null for bridge events",
                "boot_id": "pen boot id",
                "at": "bridge wall-clock time it was queued, s since 1970",
                "detail?": "free text or an object (remote commands: id, ok, error)",
            },
        ),
        Schema(
            "micropen.session/1", "sessions", 1, False, True,
            {
                **_COMMON,
                "id": "unique id '{serial}:{boot_id:08x}:run:{run_id}' (de-duplication key)",
                "boot_id": "pen boot id", "run_id": "run id (per boot)",
                "outcome": "COMPLETED, STOPPED, EMERGENCY_STOP, FAULT, WATCHDOG, ...",
                "mode": "STROKES or DURATION", "target": "strokes, or ms for a duration run",
                "strokes": "exact number of strokes the pen delivered",
                "duration_ms": "run length in ms", "area": "treatment area name",
                "depth_um": "depth in µm", "rate_sps": "stroke rate in strokes/s",
                "cartridge_id": "cartridge used", "at": "bridge wall-clock time it was queued",
            },
        ),
        Schema(
            "micropen.command/2", "cmd", 1, False, False,
            {
                "schema": "kind and major version of this payload",
                "id": "caller's unique id (1–128 of A-Z a-z 0-9 . _ : -), echoed by the reply; "
                "a bridge runs each id at most once",
                "command": "status or stop (others only if the bridge allows them)",
                "sent_at": "console wall-clock time of sending, s since 1970; older than the "
                "bridge's window (60 s) is refused",
                "args?": "object of at most 16 plain values (number, text, true/false, null), "
                "e.g. {\"depth_mm\": 0.5}",
                "from?": "display name, unverified (logged as from_unverified; the sender is "
                "the broker user in the topic)",
            },
        ),
        Schema(
            "micropen.reply/1", "reply", 1, False, False,
            {
                **_COMMON,
                "id": "the command's id",
                "ok": "true when the command was executed",
                "result?": "command result (ok only), e.g. the pen status for 'status'",
                "error?": "{code, reason} (not ok): not-allowed, envelope, bad-request, pen, "
                "replay, expired, internal",
                "sender?": "broker user the command came from (its cmd/{user} topic level)",
            },
        ),
    )
}  # fmt: skip

# Fleet records (host/fleet/records.py): QoS 1 from the outbox to the ingest workers, on
# micropen/v1/{site}/{serial}/records/{kind}. "id" is each record's natural key as one string.
RECORD_CHANNELS = tuple(
    f"records/{k}"
    for k in ("session", "run", "event", "fault", "override", "cartridge", "calibration")
)
_RECORD = {
    **_COMMON,
    "id": "natural key as one string; the same record published again has the same id",
    "at": "bench wall-clock time the record was made, s since 1970",
}
for _schema in (
    Schema(
        "micropen.host-session/1",
        "records/session",
        1,
        False,
        True,
        {
            **_RECORD,
            "boot_id": "pen boot id",
            "host_session": "the host's session number with the pen (null in exports)",
            "model": "pen model",
            "firmware": "pen firmware major.minor.patch",
            "protocol_version": "wire protocol version",
            "simulated": "true for the simulator",
            "started_at": "bench wall-clock time the session started",
            "operator?": "who ran the session (treatment-log exports)",
            "ended_at?": "when it ended (exports of ended sessions)",
            "outcome?": "how it ended (exports of ended sessions)",
        },
    ),
    Schema(
        "micropen.run/1",
        "records/run",
        1,
        False,
        True,
        {
            **_RECORD,
            "boot_id": "pen boot id",
            "run_id": "run id (per boot); key: serial, boot_id, run_id",
            "outcome": "COMPLETED, STOPPED, EMERGENCY_STOP, FAULT, WATCHDOG, ...",
            "mode": "STROKES or DURATION",
            "target": "strokes, or ms for a duration run",
            "strokes": "exact number of strokes the pen delivered",
            "duration_ms": "run length in ms",
            "area": "treatment area name",
            "depth_um": "depth in µm",
            "rate_sps": "stroke rate in strokes/s",
            "cartridge_id": "cartridge used",
        },
    ),
    Schema(
        "micropen.pen-event/1",
        "records/event",
        1,
        False,
        True,
        {
            **_RECORD,
            "boot_id": "pen boot id",
            "kind": "'event', 'link', 'host' or 'remote-command'",
            "code": "event code, link notice, host event or command name",
            "value": "event value, 0 when none",
            "run_id": "run it belongs to, 0 when none",
            "pen_t_ms": "pen uptime in ms (pen events; key with serial, boot, kind, code, "
            "value, run_id), null for host events (random id)",
            "detail?": "text or object",
        },
    ),
    Schema(
        "micropen.fault/1",
        "records/fault",
        1,
        False,
        True,
        {
            **_RECORD,
            "boot_id": "pen boot id",
            "code": "fault code name",
            "value": "the reading",
            "run_id": "run it stopped, 0 when none",
            "pen_t_ms": "pen uptime in ms",
        },
    ),
    Schema(
        "micropen.override/1",
        "records/override",
        1,
        False,
        True,
        {
            **_RECORD,
            "boot_id": "pen boot id",
            "depth_um": "depth beyond the soft cap, µm",
            "area": "treatment area name",
            "reason": "the reason given (e.g. physician order)",
        },
    ),
    Schema(
        "micropen.cartridge/1",
        "records/cartridge",
        1,
        False,
        True,
        {
            **_RECORD,
            "boot_id": "pen boot id",
            "action": "mounted, removed, locked, retired (pen events) or used (a run started)",
            "cartridge_id": "cartridge id",
            "lot": "cartridge lot, null when not known",
            "run_id": "run (used), else the event's run id or 0",
            "pen_t_ms": "pen uptime in ms (pen events), null for 'used'",
        },
    ),
    Schema(
        "micropen.calibration/1",
        "records/calibration",
        1,
        False,
        True,
        {
            **_RECORD,
            "record_id": "calibration record id (key)",
            "certificate_number": "certificate number, '' when none was given",
            "procedure": "depth, rate, all or verify",
            "outcome": "pass, fail, ...",
            "committed": "a new calibration was committed to the pen",
            "started_at": "ISO 8601",
            "finished_at": "ISO 8601 or null",
            "technician": "who calibrated",
            "station": "calibration station",
            "interval_days": "calibration interval in days",
            "record_sha256": "SHA-256 of the canonical record JSON the certificate is made of",
            "record": "the full calibration record (CalibrationRecord.to_dict())",
        },
    ),
):
    SCHEMAS[_schema.channel] = _schema


def check_level(what: str, value: str) -> str:
    """A site or serial used as one topic level: non-empty, no wildcards or separators."""
    if not isinstance(value, str) or not value or len(value) > MAX_LEVEL:
        raise BrokerConfigError(
            f"{what} {value!r} must be 1–{MAX_LEVEL} characters; choose a short name"
        )
    bad = sorted(_FORBIDDEN & set(value))
    if bad or not value.isprintable():
        raise BrokerConfigError(
            f"{what} {value!r} contains {' '.join(bad) or 'unprintable characters'}, which "
            "MQTT topic levels cannot hold; use letters, digits, '-', '_' or '.'"
        )
    return value


@dataclass(frozen=True, slots=True)
class PenTopics:
    """The six topics of one pen at one site."""

    site: str
    serial: str

    def __post_init__(self) -> None:
        check_level("site", self.site)
        check_level("pen serial", self.serial)

    def topic(self, channel: str) -> str:
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; valid: {', '.join(CHANNELS)}")
        return f"{TOPIC_ROOT}/{self.site}/{self.serial}/{channel}"

    @property
    def status(self) -> str:
        return self.topic("status")

    @property
    def telemetry(self) -> str:
        return self.topic("telemetry")

    @property
    def events(self) -> str:
        return self.topic("events")

    @property
    def sessions(self) -> str:
        return self.topic("sessions")

    @property
    def cmd(self) -> str:
        """The root of the pen's command topics; commands go to ``cmd/{user}`` below it."""
        return self.topic("cmd")

    def command_topic(self, user: str) -> str:
        """Where broker user ``user`` publishes commands for this pen (the ACL lets only
        ``user`` write there, so the level names the authenticated sender)."""
        return f"{self.cmd}/{check_level('broker user', user)}"

    @property
    def command_filter(self) -> str:
        return f"{self.cmd}/+"

    def command_sender(self, topic: str) -> str | None:
        """The sender level of a command topic of this pen, or None for any other topic."""
        head, _, user = topic.rpartition("/")
        return user if head == self.cmd and user else None

    @property
    def reply(self) -> str:
        return self.topic("reply")


def topic_filter(channel: str = "#", *, site: str = "+", serial: str = "+") -> str:
    """A subscription filter, e.g. ``micropen/v1/+/+/status``; '+' matches any level."""
    for what, value in (("site", site), ("pen serial", serial)):
        if value != "+":
            check_level(what, value)
    if channel != "#" and channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; valid: {', '.join(CHANNELS)}, #")
    return f"{TOPIC_ROOT}/{site}/{serial}/{channel}"


def parse_topic(topic: str) -> tuple[str, str, str]:
    """(site, serial, channel) of a topic in the tree; PayloadError for anything else."""
    parts = topic.split("/")
    if (
        len(parts) == 6
        and "/".join(parts[4:]) in RECORD_CHANNELS
        and "/".join(parts[:2]) == TOPIC_ROOT
    ):
        return parts[2], parts[3], "/".join(parts[4:])
    if len(parts) != 5 or "/".join(parts[:2]) != TOPIC_ROOT or parts[4] not in CHANNELS:
        raise PayloadError(f"topic {topic!r} is not in the {TOPIC_ROOT}/site/serial/... tree")
    return parts[2], parts[3], parts[4]


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (not JSON)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()


def decode(
    data: bytes | bytearray | str,
    channel: str,
    *,
    loads: Callable[[bytes | bytearray | str], Any] = json.loads,
) -> dict[str, Any]:
    """Parse and check a payload of ``channel``: JSON object, same schema kind and major version,
    every required field present. Unknown extra fields are allowed (forward compatible).
    ``loads`` parses (the ingest workers' is bounded and refuses duplicate keys: record_check);
    whatever it raises for bad input (a PayloadError of its own, ValueError, RecursionError of
    a deeply nested payload) ends in PayloadError."""
    schema = SCHEMAS[channel]
    try:
        obj = loads(data)
    except PayloadError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"{channel} payload is not JSON: {exc}") from None
    except (RecursionError, MemoryError) as exc:
        raise PayloadError(
            f"{channel} payload is too deeply nested ({type(exc).__name__})"
        ) from None
    if not isinstance(obj, dict):
        raise PayloadError(f"{channel} payload is {type(obj).__name__}, not a JSON object")
    name = obj.get("schema")
    if name != schema.name:
        kind = name.split("/")[0] if isinstance(name, str) else None
        why = "another major version" if kind == schema.kind else "another kind"
        raise PayloadError(
            f"{channel} payload has schema {name!r} ({why}); this code reads {schema.name}"
        )
    missing = sorted(schema.required - obj.keys())
    if missing:
        raise PayloadError(f"{schema.name} payload lacks {', '.join(missing)}")
    return obj
