"""Issue 15 part 0: the bridge and the documented broker setup, tried as an attacker would.

Every test runs against the real mosquitto of conftest.py, configured as docs/fleet.md
recommends (password file, the roster ACL that binds each pen to its site, client id = username,
size limits). Each attack of the issue is one test: a payload that killed the bridge, a replayed
stop, a free-text sender, a 50 MB command, a dashboard taking the bridge's client id, a pen
publishing under another site, a stop refused for its arguments. Limits are stated literally
from the spec (64 KiB per command, 60 s window, 256 KiB per broker message), not read from the
constants under test.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from _fleet_helpers import ADMIN, OPERATOR, WATCHER, Collector, FleetBroker, subscribed

import micropen.host.fleet.bridge as bridge_module
from micropen.host import AsyncPen
from micropen.host.fleet import BridgeConfig, FleetBridge, send_command
from micropen.host.fleet.mosquitto import LISTENER_SETTINGS, broker_settings, fleet_acl
from micropen.host.fleet.topics import PenTopics, decode
from micropen.host.treatment_log import TreatmentLog
from micropen.protocol.messages import PenState, RunOutcome

SEED = 12
SERIAL = f"SIM-{SEED:06d}"
SCHEMA = "micropen.command/2"


@pytest.fixture
async def pen() -> AsyncIterator[AsyncPen]:
    p = await AsyncPen.open(f"sim://?seed={SEED}", log=False)
    yield p
    await p.close()


def _config(tmp_path: Path, site: str, **kw: Any) -> BridgeConfig:
    return BridgeConfig(site=site, queue_dir=tmp_path / "queue", **kw)


def _raw(command: str, cid: str, *, sent_at: float | None = None, **fields: Any) -> bytes:
    body = {"schema": SCHEMA, "id": cid, "command": command, "sent_at": sent_at or time.time()}
    return json.dumps({**body, **fields}).encode()


def _replies(seen: Collector) -> list[dict[str, Any]]:
    return [decode(m.payload, "reply") for m in seen.on("/reply")]  # type: ignore[arg-type]


async def _reply_to(
    seen: Collector, cid: str, nth: int = 1, timeout: float = 5.0
) -> dict[str, Any]:
    """The ``nth`` reply to command id ``cid`` (bounded wait: fails loudly on timeout)."""

    def found(_: object) -> dict[str, Any] | None:
        answers = [r for r in _replies(seen) if r["id"] == cid]
        return answers[nth - 1] if len(answers) >= nth else None

    result: dict[str, Any] = await seen.wait_for(found, timeout)
    return result


@contextlib.asynccontextmanager
async def _operator(
    broker: FleetBroker, topics: PenTopics
) -> AsyncIterator[tuple[Callable[..., Any], Collector]]:
    """An operator console: ``send(raw_bytes)`` publishes on cmd/operator; replies collected."""
    async with subscribed(broker.config(OPERATOR), topics.reply) as (client, seen):

        async def send(payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
            await client.publish(topics.command_topic(OPERATOR), payload, qos=qos, retain=retain)

        yield send, seen


async def _alive(broker: FleetBroker, site: str, user: str = ADMIN) -> None:
    """The bridge still answers: a fresh status command through the broker (as the admin: a
    second OPERATOR connection would take over the test's operator client, whose client id
    the broker sets to its username)."""
    reply = await send_command(
        broker.config(user), site=site, serial=SERIAL, command="status", timeout=5
    )
    assert reply["ok"] is True and reply["result"]["state"] in {"IDLE", "RUNNING"}, reply


def _nested(levels: int) -> bytes:
    """A JSON object nested ``levels`` deep, written as text (json.dumps would recurse)."""
    return b'{"a":' * (levels - 1) + b'{"x":1}' + b"}" * (levels - 1)


# ------------------------------------------------------------------ 1. no payload kills it
async def test_hostile_payloads_are_refused_with_a_reply_and_the_bridge_lives(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    topics = PenTopics("attack", SERIAL)
    digits = "9" * 400
    payloads = {
        "deep": _raw("status", "deep")[:-1] + b', "args": ' + _nested(5000) + b"}",
        "digits": _raw("set_depth", "digits")[:-1]
        + b', "args": {"depth_mm": '
        + digits.encode()
        + b"}}",
        "nan": _raw("set_depth", "nan")[:-1] + b', "args": {"depth_mm": NaN}}',
        "inf": _raw("set_depth", "inf")[:-1] + b', "args": {"depth_mm": -Infinity}}',
        "e400": _raw("set_depth", "e400")[:-1] + b', "args": {"depth_mm": 1e400}}',
        "negative": _raw("set_depth", "negative", args={"depth_mm": -0.5}),
        "duplicate": _raw("status", "duplicate")[:-1] + b', "command": "stop"}',
        "late-sent": b'{"schema": "micropen.command/2", "id": "late-sent", "command": "status",'
        b' "sent_at": NaN}',
        "nested-arg": _raw("status", "nested-arg", args={"k": {"j": 1}}),
        "many-args": _raw("status", "many-args", args={f"k{i}": i for i in range(17)}),
    }
    unicode_id = _raw("status", "\u202eevil\u0000id")
    config = _config(tmp_path, "attack", allow=frozenset({"set_depth"}))
    async with (
        FleetBridge(pen, fleet_broker.config(SERIAL), config) as bridge,
        _operator(fleet_broker, topics) as (send, seen),
    ):
        await bridge.wait_connected(5)
        await pen.set_depth(0.6, area="forehead")
        for payload in [*payloads.values(), unicode_id]:
            await send(payload)
        got = {cid: await _reply_to(seen, cid) for cid in payloads}
        unicode_reply = await _reply_to(seen, "\u202eevil\u0000id")
        await _alive(fleet_broker, "attack")
        assert bridge.connected and bridge.counters["connects"] == 1
    for cid, reply in got.items():
        assert reply["ok"] is False, (cid, reply)
    assert got["deep"]["error"] == {
        "code": "bad-request",
        "reason": "payload is nested 5001 levels deep; at most 8",
    }
    reason = got["digits"]["error"]["reason"]
    assert "args.depth_mm" in reason and "finite number" in reason and "1000000" in reason
    for cid in ("nan", "inf", "e400"):
        assert "args.depth_mm: Input should be a finite number" in got[cid]["error"]["reason"]
    assert got["negative"]["error"]["code"] == "envelope"
    duplicate = got["duplicate"]["error"]["reason"]
    assert duplicate == "duplicate key 'command': each key may appear once"
    assert got["late-sent"]["error"]["reason"].startswith("sent_at: Input should be a finite")
    assert "args.k: must be a number, text" in got["nested-arg"]["error"]["reason"]
    assert "at most 16 items" in got["many-args"]["error"]["reason"]
    assert unicode_reply["error"]["code"] == "bad-request"
    assert "id: String should match pattern" in unicode_reply["error"]["reason"]
    assert (await pen.status()).depth_set_um == 600  # nothing was set remotely


async def test_an_unexpected_exception_is_a_refusal_and_the_bridge_lives(
    fleet_broker: FleetBroker,
    pen: AsyncPen,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(pen: AsyncPen, command: Any) -> Any:
        raise OverflowError("int too large to convert to float")

    topics = PenTopics("attack", SERIAL)
    async with (
        FleetBridge(pen, fleet_broker.config(SERIAL), _config(tmp_path, "attack")) as bridge,
        _operator(fleet_broker, topics) as (send, seen),
    ):
        await bridge.wait_connected(5)
        monkeypatch.setattr(bridge_module, "execute", broken)
        await send(_raw("status", "boom"))
        reply = await _reply_to(seen, "boom")
        await send(_raw("status", "boom"))  # the same id again: answered, not re-run
        again = await _reply_to(seen, "boom", nth=2)
        monkeypatch.undo()
        await _alive(fleet_broker, "attack")
        assert bridge.connected and bridge.counters["connects"] == 1
    assert reply["ok"] is False and reply["error"]["code"] == "internal"
    assert "OverflowError" in reply["error"]["reason"]
    assert again == reply
    assert any("failed inside the bridge" in r.message for r in caplog.records)


async def test_a_bridge_that_ends_abnormally_does_not_stay_online(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug that ends the bridge ends it through a clean DISCONNECT, which drops the last
    will: the bridge itself must then publish the retained offline status."""
    topics = PenTopics("fail", SERIAL)

    async def broken_status() -> Any:
        raise RuntimeError("a bug in the status path")

    bridge = FleetBridge(pen, fleet_broker.config(SERIAL), _config(tmp_path, "fail"))
    async with subscribed(fleet_broker.config(WATCHER), topics.status) as (_, seen), bridge:
        await bridge.wait_connected(5)
        await seen.wait_for(lambda ms: ms and decode(ms[-1].payload, "status")["online"])
        monkeypatch.setattr(pen, "status", broken_status)
        bridge._status_dirty.set()  # the next status refresh meets the bug
        with pytest.raises(RuntimeError, match="a bug in the status path"):
            await bridge.wait(10)
        await seen.wait_for(lambda ms: not decode(ms[-1].payload, "status")["online"])
    async with subscribed(fleet_broker.config(WATCHER), topics.status) as (_, late):
        await late.wait_for(lambda ms: ms)  # the retained status a dashboard sees now
    status = decode(late.messages[-1].payload, "status")
    assert status["online"] is False
    assert status["reason"] == "bridge failed: RuntimeError"


# ------------------------------------------------------------------ 2. replay protection
async def test_a_replayed_stop_is_refused_after_300_commands_and_a_restart(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    topics = PenTopics("replay", SERIAL)
    captured = _raw("stop", "captured-stop")
    config = _config(tmp_path, "replay")
    async with _operator(fleet_broker, topics) as (send, seen):
        async with FleetBridge(pen, fleet_broker.config(SERIAL), config) as bridge:
            await bridge.wait_connected(5)
            await send(captured)
            first = await _reply_to(seen, "captured-stop")
            for i in range(300):  # more than the 256 replies the bridge keeps in memory
                await send(_raw("clear_fault", f"other-{i}"))  # not allowed: answered at once
            await _reply_to(seen, "other-299", timeout=30)
            await send(captured)
            same_run = await _reply_to(seen, "captured-stop", nth=2)
        async with FleetBridge(pen, fleet_broker.config(SERIAL), config) as bridge:
            await bridge.wait_connected(5)
            seen.messages.clear()
            await pen.set_depth(0.5, area="forehead")
            await pen.set_rate(90, area="forehead")
            await pen.start_run(area="forehead", seconds=60)
            await send(captured)
            replayed = await _reply_to(seen, "captured-stop")
            still = await pen.status()
            await pen.stop()
    assert first["ok"] is True
    assert same_run["ok"] is False and same_run["error"]["code"] == "replay"
    assert replayed["ok"] is False and replayed["error"]["code"] == "replay"
    assert "already received" in replayed["error"]["reason"]
    assert still.state is PenState.RUNNING  # the replayed stop was not executed


async def test_commands_outside_the_60_s_window_are_refused_by_the_bridges_clock(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    topics = PenTopics("replay", SERIAL)
    now = [1_800_000_000.0]
    config = _config(tmp_path, "replay")
    bridge = FleetBridge(pen, fleet_broker.config(SERIAL), config, clock=lambda: now[0])
    async with bridge, _operator(fleet_broker, topics) as (send, seen):
        await bridge.wait_connected(5)
        await send(_raw("status", "fresh", sent_at=now[0] - 59))
        await send(_raw("status", "stale", sent_at=now[0] - 61))
        await send(_raw("status", "future", sent_at=now[0] + 30))
        fresh, stale, future = [await _reply_to(seen, c) for c in ("fresh", "stale", "future")]
        captured = _raw("status", "fresh", sent_at=now[0] - 59)
        await send(captured)  # replayed within the window: answered from memory, not re-run
        replay = await _reply_to(seen, "fresh", nth=2)
        assert bridge.counters["commands_refused"] == 2  # stale, future: nothing else ran
        now[0] += 61  # a minute later: too old (its id may be forgotten by then)
        await send(captured)
        late = await _reply_to(seen, "fresh", nth=3)
    assert fresh["ok"] is True
    assert stale["error"]["code"] == "expired" and "older than 60 s" in stale["error"]["reason"]
    assert future["error"]["code"] == "expired" and "in the future" in future["error"]["reason"]
    assert replay == fresh
    assert late["error"]["code"] == "expired"


# ------------------------------------------------------------------ 3. the sender
async def test_the_logged_sender_is_the_broker_user_not_the_payloads_from(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    topics = PenTopics("sender", SERIAL)
    with TreatmentLog(tmp_path / "log.sqlite") as tlog:
        config = _config(tmp_path, "sender")
        async with (
            subscribed(fleet_broker.config(ADMIN), topics.events) as (_, events),
            FleetBridge(pen, fleet_broker.config(SERIAL), config, treatment_log=tlog) as bridge,
        ):
            await bridge.wait_connected(5)
            reply = await send_command(
                fleet_broker.config(OPERATOR), site="sender", serial=SERIAL, command="status",
                sender="Dr. Who (chief physician)", timeout=5,
            )  # fmt: skip
            await bridge.wait_drained(5)
            await events.wait_for(lambda ms: ms)
        [summary] = tlog.sessions(pen_serial=SERIAL)
        [logged] = tlog.session(summary.id).events
    detail = json.loads(logged.detail)
    assert reply["ok"] is True and reply["sender"] == OPERATOR
    assert detail["sender"] == OPERATOR
    assert detail["from_unverified"] == "Dr. Who (chief physician)"
    assert "from" not in detail
    [event] = [decode(m.payload, "events") for m in events.messages]
    assert event["detail"]["sender"] == OPERATOR


# ------------------------------------------------------------------ 4. size limits
async def test_the_documented_broker_refuses_a_50_mb_command(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    topics = PenTopics("bigcmd", SERIAL)
    huge = _raw("stop", "huge", **{"from": "x" * (50 * 1024 * 1024)})
    config = _config(tmp_path, "bigcmd")
    async with (
        subscribed(fleet_broker.config(ADMIN), f"{topics.cmd}/#", topics.reply) as (_, seen),
        FleetBridge(pen, fleet_broker.config(SERIAL), config) as bridge,
    ):
        await bridge.wait_connected(5)
        sender = replace(fleet_broker.config(OPERATOR), timeout=1.0)
        with pytest.raises(aiomqtt.MqttError):  # the broker drops the client (max_packet_size)
            async with sender.client("big") as big:
                await big.publish(topics.command_topic(OPERATOR), huge, qos=1)
        await _alive(fleet_broker, "bigcmd", OPERATOR)  # a marker, published after the big one
        assert bridge.counters["commands"] == 1  # only the marker reached the bridge
    assert len(seen.on(f"/cmd/{OPERATOR}")) == 1  # only the marker was forwarded
    assert all(len(m.payload) < 4096 for m in seen.messages)  # type: ignore[arg-type]


async def test_the_bridge_refuses_a_command_over_64_kib_before_parsing_it(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topics = PenTopics("bigcmd", SERIAL)
    parsed: list[int] = []
    real_parse = bridge_module.parse_command

    def spy(data: bytes, **kw: Any) -> Any:
        parsed.append(len(data))
        return real_parse(data, **kw)

    monkeypatch.setattr(bridge_module, "parse_command", spy)
    head = _raw("status", "just-over")[:-1] + b', "from": "'
    over = head + b"x" * (64 * 1024 + 1 - len(head) - 2) + b'"}'
    at_limit = _raw("status", "at-limit")[:-1] + b', "pad": "'
    at_limit += b"y" * (64 * 1024 - len(at_limit) - 2) + b'"}'
    assert (len(over), len(at_limit)) == (64 * 1024 + 1, 64 * 1024)
    config = _config(tmp_path, "bigcmd")
    async with (
        subscribed(fleet_broker.config(ADMIN), topics.events) as (_, events),
        FleetBridge(pen, fleet_broker.config(SERIAL), config) as bridge,
        _operator(fleet_broker, topics) as (send, seen),
    ):
        await bridge.wait_connected(5)
        await send(over)
        await send(at_limit)
        limit_reply = await _reply_to(seen, "at-limit")  # the same client: the big one came first
        await bridge.wait_drained(5)
        await events.wait_for(lambda ms: len(ms) >= 2)
    assert limit_reply["ok"] is True
    assert parsed == [64 * 1024], "the oversized payload never reached the parser"
    assert not [r for r in _replies(seen) if r["id"] == "just-over"]  # its id was never read
    refused = decode(events.messages[0].payload, "events")
    assert refused["detail"]["error"] == {
        "code": "too-large",
        "reason": "command payload is 65537 bytes; at most 65536",
    }


# ------------------------------------------------------------------ 5. client ids
async def test_a_dashboard_using_the_bridges_client_id_does_not_kick_it_off(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    topics = PenTopics("takeover", SERIAL)
    config = _config(tmp_path, "takeover")
    async with (
        subscribed(fleet_broker.config(ADMIN), topics.status) as (_, seen),
        FleetBridge(pen, fleet_broker.config(SERIAL), config) as bridge,
    ):
        await bridge.wait_connected(5)
        await seen.wait_for(lambda ms: ms)
        for identifier in (f"micropen-bridge-takeover-{SERIAL}", SERIAL):
            async with fleet_broker.config(WATCHER).client(identifier):
                await _alive(fleet_broker, "takeover")  # answered while the dashboard is on
        assert bridge.counters["connects"] == 1 and bridge.counters["disconnects"] == 0
        statuses = [decode(m.payload, "status") for m in seen.messages]
    assert statuses and all(s["online"] for s in statuses), "no offline will was published"


# ------------------------------------------------------------------ 6. a pen stays at its site
@pytest.mark.parametrize("channel", ["status", "sessions", "events", "telemetry", "reply"])
async def test_a_pens_credentials_cannot_publish_under_another_site(
    fleet_broker: FleetBroker, channel: str
) -> None:
    own, foreign = PenTopics("attack", "PEN-A"), PenTopics("elsewhere", "PEN-A")
    fabricated = json.dumps({"schema": "micropen.session/1", "strokes": 9999}).encode()
    async with subscribed(fleet_broker.config(ADMIN), "micropen/v1/+/PEN-A/#") as (_, seen):
        async with fleet_broker.config("PEN-A").client("pen-a") as pen_a:
            await pen_a.publish(foreign.topic(channel), fabricated, qos=1)
            await pen_a.publish(own.topic(channel), b'{"marker": true}', qos=1)
        await seen.wait_for(lambda ms: any(str(m.topic) == own.topic(channel) for m in ms))
    assert [str(m.topic) for m in seen.messages] == [own.topic(channel)]


# ------------------------------------------------------------------ 7. stop always stops
@pytest.mark.parametrize(
    "args",
    [
        b'{"area": "elbow"}',
        b'{"area": "elbow", "reason": {"why": [1, 2]}, "depth_mm": 1e400}',
        _nested(5000),
    ],
    ids=["unknown-area", "invalid-args", "5000-levels"],
)
async def test_a_remote_stop_with_unexpected_args_still_stops_the_pen(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path, args: bytes
) -> None:
    topics = PenTopics("stopargs", SERIAL)
    config = _config(tmp_path, "stopargs")
    async with (
        FleetBridge(pen, fleet_broker.config(SERIAL), config) as bridge,
        _operator(fleet_broker, topics) as (send, seen),
    ):
        await bridge.wait_connected(5)
        await pen.set_depth(0.5, area="forehead")
        await pen.set_rate(90, area="forehead")
        run_id = await pen.start_run(area="forehead", seconds=60)
        await send(_raw("stop", "stop-it")[:-1] + b', "args": ' + args + b"}")
        reply = await _reply_to(seen, "stop-it")
        report = await pen.wait_run_end(run_id, timeout=5)
        after = await pen.status()
    assert reply["ok"] is True, reply
    assert "ignored" in reply["result"]["ignored_args"]
    assert report.outcome is RunOutcome.STOPPED
    assert after.state is PenState.IDLE


# ------------------------------------------------------------------ more attacker moves
async def test_retained_and_qos_2_commands(
    fleet_broker: FleetBroker, pen: AsyncPen, tmp_path: Path
) -> None:
    """A retained command is refused (the broker would replay it at every subscription); a
    QoS 2 command reaches the bridge at its subscription's QoS 1 and runs once."""
    topics = PenTopics("attack", SERIAL)
    async with _operator(fleet_broker, topics) as (send, seen):
        await send(_raw("stop", "kept"), retain=True)
        try:
            async with FleetBridge(pen, fleet_broker.config(SERIAL), _config(tmp_path, "attack")):
                kept = await _reply_to(seen, "kept")
                await send(_raw("status", "exactly-once"), qos=2)
                await _reply_to(seen, "exactly-once")
                await _alive(fleet_broker, "attack")  # later than any second copy would be
        finally:
            await send(b"", retain=True)  # clear the retained command
    assert kept["ok"] is False and "retained" in kept["error"]["reason"]
    assert [r["ok"] for r in _replies(seen) if r["id"] == "exactly-once"] == [True]


# ------------------------------------------------------------------ the documented setup
DOC = Path(__file__).resolve().parents[2] / "docs" / "fleet.md"


def test_the_documented_broker_config_and_acl_are_what_the_code_writes() -> None:
    text = DOC.read_text(encoding="utf-8")
    for line in [*broker_settings(), *LISTENER_SETTINGS]:
        assert f"\n{line}" in text, f"docs/fleet.md lacks {line!r}"
    assert "message_size_limit 262144" in broker_settings()  # 256 KiB, as the docs say
    acl = fleet_acl(
        pens=[("clinic-1", "SIM-000003")], watchers=["dashboard"], operators=["nurse-station"],
        admins=["admin"],
    )  # fmt: skip
    rules = "\n".join(line for line in acl.splitlines() if not line.startswith("#")).strip()
    blocks = [block.strip("\n") for block in text.split("```")[1::2]]
    documented = next(b for b in blocks if "user SIM-000003" in b)
    assert [line.strip() for line in documented.strip().splitlines()] == rules.splitlines()


def test_the_acl_command_turns_a_roster_into_rules(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from micropen.tools.fleet_cli import app

    roster = tmp_path / "pens.csv"
    roster.write_text("site,serial\nclinic-1,SIM-000003\nclinic-2 SIM-000004  # moved\n")
    out = tmp_path / "acl"
    runner = CliRunner()
    result = runner.invoke(app, ["acl", str(roster), "--operator", "nurse", "--out", str(out),
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "pens": 2, "sites": ["clinic-1", "clinic-2"], "out": str(out), "acl": None,
    }  # fmt: skip
    text = out.read_text()
    assert "topic write micropen/v1/clinic-2/SIM-000004/status" in text
    assert "topic write micropen/v1/+/+/cmd/nurse" in text and "pattern" not in text
    roster.write_text("clinic-1,SIM-000003,extra\n")
    bad = runner.invoke(app, ["acl", str(roster), "--json"])
    assert bad.exit_code == 2 and "pens.csv:1" in bad.output and "one pen a line" in bad.output


@pytest.mark.parametrize(
    ("roster", "args", "says"),
    [
        # one pen at two sites: its credentials could publish under both (found by a review)
        ("clinic-1,SIM-1\nclinic-2,SIM-1\n", [], "listed at site clinic-2 and at clinic-1"),
        # an operator named like a pen: mosquitto merges the blocks, the pen gains cmd rights
        ("clinic-1,SIM-9\n", ["--operator", "SIM-9"], "named as pen and as operator"),
        ("clinic-1,SIM-1\n", ["--watcher", "dash", "--operator", "dash"], "as operator and as"),
        ("# no pens yet\n", [], "lists no pen"),
    ],
)
def test_a_contradictory_roster_is_refused(
    tmp_path: Path, roster: str, args: list[str], says: str
) -> None:
    from typer.testing import CliRunner

    from micropen.tools.fleet_cli import app

    path = tmp_path / "pens.csv"
    path.write_text(roster)
    result = CliRunner().invoke(app, ["acl", str(path), *args])
    assert result.exit_code == 2 and says in " ".join(result.output.split()), result.output


def test_a_pen_shared_between_sites_is_listed_at_each_only_when_asked(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from micropen.tools.fleet_cli import app

    path = tmp_path / "pens.csv"
    path.write_text("clinic-1,LOAN-1\nclinic-2,LOAN-1\n")
    result = CliRunner().invoke(app, ["acl", str(path), "--multi-site"])
    assert result.exit_code == 0, result.output
    assert "micropen/v1/clinic-1/LOAN-1/status" in result.stdout
    assert "micropen/v1/clinic-2/LOAN-1/status" in result.stdout
