"""Topic tree and payload schemas: documented, versioned, and what the builders emit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from micropen.host.fleet import payloads as P
from micropen.host.fleet.errors import BrokerConfigError, PayloadError
from micropen.host.fleet.topics import (
    CHANNELS,
    SCHEMAS,
    TELEMETRY_FIELDS,
    PenTopics,
    check_level,
    decode,
    encode,
    parse_topic,
    topic_filter,
)
from micropen.protocol.messages import (
    CartridgeState,
    Event,
    EventCode,
    FaultCode,
    FaultReport,
    Identity,
    PenState,
    RunMode,
    RunOutcome,
    RunReport,
    Status,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "fleet.md"
IDENT = Identity(1, 1, 2, "MP-12", "PEN-7", 1, 2, 3, 1, 12, 0, 200, 2500, 1500, 50, 150, 0xBEEF)
STATUS = Status(
    1, PenState.RUNNING, FaultCode.NONE, 500, 90, 0, 500, 100, 3, 2, RunMode.STROKES, 100, 40,
    RunOutcome.ACTIVE, 1000, 77, CartridgeState.LOCKED, 40, 4000, 250, 1, 0xBEEF, 1234, 0,
)  # fmt: skip
REPORT = RunReport(3, RunOutcome.COMPLETED, RunMode.STROKES, 100, 100, 1100, 2, 500, 90, 77)


def _all_payloads() -> dict[str, list[dict]]:  # type: ignore[type-arg]
    common = {"at": 5.0}
    return {
        "status": [
            P.online_status(
                "s", IDENT, STATUS, at=1.0, link_up=True, last_fault=None,
                calibration_due="2031-01-01", stream="x", simulated=True,
            ),
            P.online_status(
                "s", IDENT, None, at=1.0, link_up=False, last_fault=None,
                calibration_due=None, stream="x", simulated=False,
            ),
            P.offline_status("s", "PEN-7", "connection lost (last will)", at=None),
            P.offline_status("s", "PEN-7", "bridge stopped", at=2.0),
        ],
        "telemetry": [
            P.telemetry_payload(
                "s", "PEN-7", stream="x", seq=0, boot_id=1, samples=[(1,) * 10], decimated=0,
                sent_at=1.0,
            )
        ],
        "events": [
            P.pen_event_payload("s", "PEN-7", 1, Event(5, EventCode.STOPPED, 2, 3), **common),
            P.fault_payload("s", "PEN-7", 1, FaultReport(9, FaultCode.STALL, 700, 3), **common),
            P.event_payload(
                "s", "PEN-7", boot_id=1, kind="remote-command", code="stop", value=1, run_id=0,
                pen_t_ms=None, at=1.0, detail={"id": "c"},
            ),
        ],
        "sessions": [P.session_payload("s", "PEN-7", 1, REPORT, **common)],
        "cmd": [
            P.command_payload("stop"),
            P.command_payload("set_depth", args={"d": 1}, sender="x"),
        ],
        "reply": [
            P.reply_payload("s", "PEN-7", "c", result={"a": 1}),
            P.reply_payload("s", "PEN-7", "c", error=("not-allowed", "no")),
        ],
    }  # fmt: skip


@pytest.mark.parametrize("channel", CHANNELS)
def test_builders_emit_the_documented_fields(channel: str) -> None:
    schema = SCHEMAS[channel]
    for payload in _all_payloads()[channel]:
        assert payload["schema"] == schema.name
        assert schema.required <= payload.keys(), schema.required - payload.keys()
        assert payload.keys() <= schema.all_fields, payload.keys() - schema.all_fields
        assert decode(encode(payload), channel) == payload


def test_docs_describe_every_channel_and_field() -> None:
    text = DOC.read_text(encoding="utf-8")
    for channel, schema in SCHEMAS.items():
        heading = f"### `{schema.name}` on `micropen/v1/{{site}}/{{serial}}/{channel}`"
        assert heading in text, heading
        section = text.split(heading, 1)[1].split("\n#", 1)[0]
        for name in schema.all_fields:
            assert re.search(rf"\|\s*`{name}`", section), f"{schema.name}.{name} undocumented"


def test_decoder_refuses_other_versions_and_kinds() -> None:
    payload = _all_payloads()["sessions"][0]
    with pytest.raises(PayloadError, match="another major version"):
        decode(encode({**payload, "schema": "micropen.session/2"}), "sessions")
    with pytest.raises(PayloadError, match="another kind"):
        decode(encode(payload), "events")
    with pytest.raises(PayloadError, match="lacks strokes"):
        decode(encode({k: v for k, v in payload.items() if k != "strokes"}), "sessions")
    with pytest.raises(PayloadError, match="not JSON"):
        decode(b"\xff", "sessions")
    with pytest.raises(PayloadError, match="not a JSON object"):
        decode(b"[1]", "sessions")
    newer = decode(encode({**payload, "added_later": 1}), "sessions")
    assert newer["added_later"] == 1, "unknown fields are kept: minor additions are compatible"


def test_ids_identify_the_pen_event_not_the_delivery() -> None:
    event = Event(5, EventCode.STOPPED, 2, 3)
    a = P.pen_event_payload("s", "PEN-7", 1, event, at=1.0)
    b = P.pen_event_payload("s", "PEN-7", 1, event, at=9.0)
    other_boot = P.pen_event_payload("s", "PEN-7", 2, event, at=1.0)
    assert a["id"] == b["id"] != other_boot["id"]
    bridge_events = {
        P.event_payload("s", "P", boot_id=1, kind="link", code="lost", value=0, run_id=0,
                        pen_t_ms=None, at=1.0)["id"]
        for _ in range(50)
    }  # fmt: skip
    assert len(bridge_events) == 50
    assert P.session_payload("s", "PEN-7", 1, REPORT, at=1)["id"] == "PEN-7:00000001:run:3"


def test_telemetry_columns_are_the_pens_fields() -> None:
    batch = _all_payloads()["telemetry"][0]
    assert tuple(batch["fields"]) == TELEMETRY_FIELDS
    assert TELEMETRY_FIELDS[0] == "t_ms"


def test_status_carries_the_watch_columns() -> None:
    online = _all_payloads()["status"][0]
    assert online["cartridge"] == {"id": 77, "state": "LOCKED", "strokes": 40}
    assert online["run"] == {"id": 3, "area": "forehead", "outcome": "ACTIVE", "strokes": 40}
    assert (online["state"], online["calibration_due"], online["link"]) == (
        "RUNNING", "2031-01-01", "up",
    )  # fmt: skip
    unknown = _all_payloads()["status"][1]
    assert unknown["state"] is None and unknown["link"] == "down"


def test_topics() -> None:
    t = PenTopics("clinic-1", "SIM-000001")
    assert t.status == "micropen/v1/clinic-1/SIM-000001/status"
    assert parse_topic(t.reply) == ("clinic-1", "SIM-000001", "reply")
    assert topic_filter("status") == "micropen/v1/+/+/status"
    assert topic_filter(site="a") == "micropen/v1/a/+/#"
    for bad in ("micropen/v2/a/b/status", "micropen/v1/a/b/other", "micropen/v1/a/status"):
        with pytest.raises(PayloadError):
            parse_topic(bad)
    with pytest.raises(ValueError, match="unknown channel"):
        t.topic("firmware")


@given(st.text(max_size=80))
def test_a_topic_level_never_holds_wildcards_or_separators(name: str) -> None:
    try:
        check_level("site", name)
    except BrokerConfigError as exc:
        assert repr(name) in str(exc)
        return
    assert name and not set(name) & set("/+#$\0") and len(name) <= 64
    site, serial, channel = parse_topic(PenTopics(name, "P").events)
    assert (site, serial, channel) == (name, "P", "events")


def test_encoding_is_compact_json_without_nan() -> None:
    assert encode({"a": [1, 2]}) == b'{"a":[1,2]}'
    with pytest.raises(ValueError):
        encode({"a": float("nan")})
    assert json.loads(encode({"µ": "°C"})) == {"µ": "°C"}
