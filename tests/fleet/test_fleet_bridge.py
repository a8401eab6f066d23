"""A simulated pen bridged to a real mosquitto: what subscribers see, and remote commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _fleet_helpers import ADMIN, OPERATOR, WATCHER, FleetBroker, subscribed

from micropen.host import AsyncPen
from micropen.host.fleet import BridgeConfig, FleetBridge, send_command
from micropen.host.fleet.errors import BrokerRefused
from micropen.host.fleet.payloads import command_payload
from micropen.host.fleet.topics import PenTopics, decode, encode
from micropen.host.treatment_log import TreatmentLog
from micropen.protocol.messages import PenState, RunOutcome

SEED = 4
SERIAL = f"SIM-{SEED:06d}"


@pytest.fixture
async def pen() -> AsyncIterator[AsyncPen]:
    # no log of the pen's own: these tests give the bridge the treatment log it records into
    p = await AsyncPen.open(f"sim://?seed={SEED}", log=False)
    await p.set_telemetry(100)
    yield p
    await p.close()


def _config(tmp_path: Path, site: str, **kw: object) -> BridgeConfig:
    return BridgeConfig(site=site, queue_dir=tmp_path / "queue", **kw)  # type: ignore[arg-type]


def _payloads(messages: list, channel: str) -> list[dict]:  # type: ignore[type-arg]
    return [decode(m.payload, channel) for m in messages if str(m.topic).endswith("/" + channel)]


async def _forehead_run(pen: AsyncPen, strokes: int = 40) -> None:
    await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=strokes)


async def test_status_events_runs_and_telemetry_reach_a_watcher(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    topics = PenTopics("pub", SERIAL)
    async with subscribed(fleet_broker.config(WATCHER), "micropen/v1/pub/#") as (_, seen):
        async with FleetBridge(pen, fleet_broker.config(SERIAL), _config(tmp_path, "pub")) as b:
            await b.wait_connected(5)
            await _forehead_run(pen)
            await b.wait_drained(5)
            await seen.wait_for(lambda ms: len(_payloads(ms, "telemetry")) >= 5)
            await seen.wait_for(
                lambda ms: any(s["state"] == "IDLE" and s["run"] for s in _payloads(ms, "status"))
            )
        await seen.wait_for(lambda ms: not _payloads(ms, "status")[-1]["online"])
    statuses = _payloads(seen.messages, "status")
    assert statuses[0]["online"] and statuses[0]["serial"] == SERIAL
    assert statuses[0]["model"] == pen.identity.model  # type: ignore[union-attr]
    assert statuses[-1] == {**statuses[-1], "online": False, "reason": "bridge stopped"}
    [session] = _payloads(seen.messages, "sessions")
    assert (session["strokes"], session["outcome"], session["area"]) == (
        40,
        "COMPLETED",
        "forehead",
    )
    assert session["id"] == f"{SERIAL}:{pen.identity.boot_id:08x}:run:1"  # type: ignore[union-attr]
    codes = [e["code"] for e in _payloads(seen.messages, "events") if e["kind"] == "event"]
    assert "RUN_STARTED" in codes and "STOPPED" in codes
    assert len({e["id"] for e in _payloads(seen.messages, "events")}) == len(codes)
    batches = _payloads(seen.messages, "telemetry")
    seqs = [b["seq"] for b in batches]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "no gaps in the sequence"
    samples = [dict(zip(b["fields"], s, strict=True)) for b in batches for s in b["samples"]]
    assert any(s["state"] == PenState.RUNNING for s in samples)
    assert {str(m.topic) for m in seen.messages if "/records/" not in str(m.topic)} <= {
        topics.status,
        topics.telemetry,
        topics.events,
        topics.sessions,
    }


async def test_status_is_retained_for_late_watchers(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    topics = PenTopics("retain", SERIAL)
    async with FleetBridge(pen, fleet_broker.config(SERIAL), _config(tmp_path, "retain")) as b:
        await b.wait_connected(5)
        async with subscribed(fleet_broker.config(WATCHER), topics.status) as (_, seen):
            await seen.wait_for(lambda ms: ms)
        assert seen.messages[0].retain
        assert decode(seen.messages[0].payload, "status")["online"] is True
    async with subscribed(fleet_broker.config(WATCHER), topics.status) as (_, seen):
        await seen.wait_for(lambda ms: ms)
    assert decode(seen.messages[0].payload, "status")["online"] is False


async def test_remote_stop_stops_a_running_pen(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    bridge = FleetBridge(pen, fleet_broker.config(SERIAL), _config(tmp_path, "stop"))
    async with subscribed(fleet_broker.config(ADMIN), "micropen/v1/stop/#") as (_, seen), bridge:
        await bridge.wait_connected(5)
        await pen.set_depth(0.5, area="forehead")
        await pen.set_rate(90, area="forehead")
        await pen.status()
        run_id = await pen.start_run(area="forehead", seconds=60)
        reply = await send_command(
            fleet_broker.config(OPERATOR), site="stop", serial=SERIAL, command="stop",
            sender="test console", timeout=5,
        )  # fmt: skip
        report = await pen.wait_run_end(run_id, timeout=5)
        await bridge.wait_drained(5)
    assert reply["ok"] is True, reply
    assert report.outcome is RunOutcome.STOPPED and report.duration_ms < 10_000
    [session] = _payloads(seen.messages, "sessions")
    assert session["outcome"] == "STOPPED"
    [logged] = [e for e in _payloads(seen.messages, "events") if e["kind"] == "remote-command"]
    detail = logged["detail"]
    assert (logged["code"], logged["value"], detail["sender"], detail["from_unverified"]) == (
        "stop",
        1,
        OPERATOR,  # the broker user of the cmd/{user} topic, not the payload's free text
        "test console",
    )


@pytest.mark.parametrize(
    ("command", "args", "code"),
    [
        ("run", {"area": "forehead", "strokes": 10}, "not-allowed"),
        ("start_run", {}, "not-allowed"),
        ("set_depth", {"depth_mm": 0.5}, "not-allowed"),
        ("set_rate", {"rate_sps": 90}, "not-allowed"),
        ("cal_write", {}, "not-allowed"),
        ("format_disk", {}, "not-allowed"),
    ],
)
async def test_everything_but_status_and_stop_is_refused_by_default(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path, command: str, args: dict, code: str
) -> None:  # type: ignore[type-arg]
    before = await pen.status()
    async with FleetBridge(pen, fleet_broker.config(SERIAL), _config(tmp_path, "deny")) as b:
        await b.wait_connected(5)
        reply = await send_command(
            fleet_broker.config(OPERATOR), site="deny", serial=SERIAL, command=command,
            args=args, timeout=5,
        )  # fmt: skip
    after = await pen.status()
    assert reply["ok"] is False and reply["error"]["code"] == code
    assert command in reply["error"]["reason"] and "status, stop" in reply["error"]["reason"]
    assert (after.run_id, after.depth_set_um, after.state) == (
        before.run_id, before.depth_set_um, PenState.IDLE,
    )  # fmt: skip


async def test_allowed_settings_are_still_held_to_the_envelope(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    config = _config(tmp_path, "env", allow=frozenset({"set_depth"}))
    async with FleetBridge(pen, fleet_broker.config(SERIAL), config) as b:
        await b.wait_connected(5)

        async def send(args: dict) -> dict:  # type: ignore[type-arg]
            return await send_command(
                fleet_broker.config(OPERATOR), site="env", serial=SERIAL, command="set_depth",
                args=args, timeout=5,
            )  # fmt: skip

        too_deep = await send({"depth_mm": 3.0})
        over_area = await send({"depth_mm": 0.8, "area": "forehead"})
        override = await send({"depth_mm": 1.8, "override_reason": "remote says so"})
        not_a_number = await send({"depth_mm": "deep"})
        fine = await send({"depth_mm": 0.6, "area": "forehead"})
    assert [r["error"]["code"] for r in (too_deep, over_area, override, not_a_number)] == [
        "envelope", "envelope", "envelope", "bad-request",
    ]  # fmt: skip
    assert "2.50 mm" in too_deep["error"]["reason"] and "forehead" in over_area["error"]["reason"]
    assert fine["ok"] is True
    assert (await pen.status()).depth_set_um == 600


async def test_retained_duplicate_and_malformed_commands(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    """A retained command would replay at every (re)subscription: the broker marks that
    replay retained and the bridge refuses it. A redelivered id is answered, not re-run."""
    topics = PenTopics("odd", SERIAL)
    stale = encode(command_payload("stop", command_id="stale"))
    async with subscribed(fleet_broker.config(ADMIN), topics.reply, topics.events) as (
        admin,
        seen,
    ):
        await admin.publish(topics.command_topic(ADMIN), stale, qos=1, retain=True)
        async with FleetBridge(pen, fleet_broker.config(SERIAL), _config(tmp_path, "odd")) as b:
            await b.wait_connected(5)
            await seen.wait_for(lambda ms: _payloads(ms, "reply"))
            stop = encode(command_payload("stop", command_id="same-id"))
            await admin.publish(topics.command_topic(ADMIN), stop, qos=1)
            await admin.publish(topics.command_topic(ADMIN), stop, qos=1)
            await admin.publish(topics.command_topic(ADMIN), b"not json", qos=1)
            await seen.wait_for(lambda ms: len(_payloads(ms, "reply")) >= 3)
            await b.wait_drained(5)
        clear = topics.command_topic(ADMIN)
        await admin.publish(clear, b"", retain=True, qos=1)  # clear the retained command
    replies = _payloads(seen.messages, "reply")
    assert [r["id"] for r in replies] == ["stale", "same-id", "same-id"]
    assert replies[0]["ok"] is False and "retained" in replies[0]["error"]["reason"]
    assert replies[1] == replies[2] and replies[1]["ok"]
    logged = [e for e in _payloads(seen.messages, "events") if e["kind"] == "remote-command"]
    assert [(e["code"], e["value"]) for e in logged] == [("stop", 0), ("stop", 1), ("?", 0)]


async def test_remote_commands_are_recorded_in_the_treatment_log(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    with TreatmentLog(tmp_path / "log.sqlite") as tlog:
        config = _config(tmp_path, "log")
        async with FleetBridge(pen, fleet_broker.config(SERIAL), config, treatment_log=tlog) as b:
            await b.wait_connected(5)
            for name in ("status", "run"):
                await send_command(
                    fleet_broker.config(OPERATOR), site="log", serial=SERIAL, command=name,
                    sender="nurse-station", timeout=5,
                )  # fmt: skip
        [summary] = tlog.sessions(pen_serial=SERIAL)
        events = tlog.session(summary.id).events
    assert [(e.kind, e.code, e.value) for e in events] == [
        ("remote-command", "status", 1), ("remote-command", "run", 0),
    ]  # fmt: skip
    assert json.loads(events[1].detail)["error"]["code"] == "not-allowed"
    detail = json.loads(events[1].detail)
    assert (detail["sender"], detail["from_unverified"]) == (OPERATOR, "nurse-station")


async def test_wrong_credentials_stop_the_bridge_with_a_clear_error(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    config = _config(tmp_path, "auth")
    bridge = FleetBridge(pen, fleet_broker.config(SERIAL, pw="wrong"), config)
    async with bridge:
        with pytest.raises(BrokerRefused, match=f"refused user '{SERIAL}'.*password-file"):
            await bridge.wait_connected(5)


async def test_a_pen_cannot_publish_under_another_serial_through_the_bridge(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    """A bridge logged in as another pen's user is denied by the ACL: nothing arrives."""
    config = _config(tmp_path, "acl")
    async with subscribed(fleet_broker.config(ADMIN), "micropen/v1/acl/#") as (_, seen):
        async with FleetBridge(pen, fleet_broker.config("SIM-000009"), config) as b:
            await b.wait_connected(5)
            await _forehead_run(pen, strokes=20)
            await b.wait_drained(5)
            marker = PenTopics("acl", "SIM-000009").status
        async with fleet_broker.config("SIM-000009").client("marker") as client:
            await client.publish(marker, b"{}", qos=1)
        await seen.wait_for(lambda ms: any(str(m.topic) == marker for m in ms))
    assert [str(m.topic) for m in seen.messages] == [marker]


async def test_commands_wait_for_a_bridge_that_is_connected(
    fleet_broker: FleetBroker, tmp_path: Path
) -> None:
    from micropen.host.fleet.errors import FleetError

    with pytest.raises(FleetError, match="no reply from pen SIM-000011"):
        await send_command(
            fleet_broker.config(OPERATOR), site="nobody", serial="SIM-000011", command="status",
            timeout=0.5,
        )  # fmt: skip
    await asyncio.sleep(0)


async def test_a_bridge_closed_right_after_it_connected_says_it_stopped(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    """A stop in the first milliseconds (SIGTERM at start-up) often ended as "bridge cancelled":
    the first status publish swallowed the session's cancel (aiomqtt's wait_for, CPython
    gh-86296) and its loop then waited a whole status interval, past close()'s 5 s."""
    topics = PenTopics("retain", SERIAL)
    for attempt in range(8):
        bridge = FleetBridge(pen, fleet_broker.config(SERIAL), _config(tmp_path, "retain"))
        bridge.start()
        await bridge.wait_connected(5)
        await asyncio.sleep(0.001 * (attempt % 4))
        await bridge.close()
        async with subscribed(fleet_broker.config(WATCHER), topics.status) as (_, seen):
            await seen.wait_for(lambda ms: ms)
        status = decode(seen.messages[0].payload, "status")
        assert (status["online"], status["reason"]) == (False, "bridge stopped"), attempt
