"""The broker's side of hazard 8: who may connect, and who may write where.

Each test talks to a real mosquitto configured like a deployment (conftest.py). A refusal is
proven by a positive control: the same client succeeds with the right credentials, and an ACL
denial is proven by a marker message that arrives after the denied one would have.
"""

from __future__ import annotations

import asyncio
import ssl

import aiomqtt
import pytest
from _fleet_helpers import ADMIN, ARCHIVERS, OPERATOR, WATCHER, FleetBroker, subscribed

from micropen.host.fleet.broker import BrokerConfig, parse_broker_url
from micropen.host.fleet.errors import BrokerConfigError
from micropen.host.fleet.topics import PenTopics


async def _connects(config: BrokerConfig) -> None:
    async with config.client("probe"):
        pass


async def test_right_credentials_connect(fleet_broker: FleetBroker) -> None:
    await _connects(fleet_broker.config("PEN-A"))
    await _connects(fleet_broker.config(WATCHER))


async def test_anonymous_client_is_refused(fleet_broker: FleetBroker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError, match="[Nn]ot authori"):
        await _connects(fleet_broker.config(None))


async def test_wrong_password_is_refused(fleet_broker: FleetBroker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError, match="[Nn]ot authori|[Bb]ad user"):
        await _connects(fleet_broker.config("PEN-A", pw="guess"))


async def test_unknown_user_is_refused(fleet_broker: FleetBroker) -> None:
    with pytest.raises(aiomqtt.MqttCodeError):
        await _connects(fleet_broker.config("PEN-Z", pw="pw-PEN-Z-secret"))


@pytest.mark.parametrize("channel", ["status", "events", "sessions", "telemetry", "reply"])
async def test_a_pen_cannot_publish_as_another_pen(fleet_broker: FleetBroker, channel: str) -> None:
    own, other = PenTopics("clinic", "PEN-A"), PenTopics("clinic", "PEN-B")
    async with subscribed(fleet_broker.config(ADMIN), "micropen/v1/clinic/#") as (_, seen):
        async with fleet_broker.config("PEN-A").client("pen-a") as pen_a:
            await pen_a.publish(other.topic(channel), b'{"forged": true}', qos=1)
            await pen_a.publish(own.topic(channel), b'{"marker": true}', qos=1)
        await seen.wait_for(lambda ms: any(str(m.topic) == own.topic(channel) for m in ms))
    assert [str(m.topic) for m in seen.messages] == [own.topic(channel)]


async def test_a_pen_cannot_send_commands_to_another_pen(fleet_broker: FleetBroker) -> None:
    target, own = PenTopics("clinic", "PEN-B"), PenTopics("clinic", "PEN-A")
    async with subscribed(fleet_broker.config(ADMIN), "micropen/v1/clinic/#") as (_, seen):
        async with fleet_broker.config("PEN-A").client("pen-a") as pen_a:
            await pen_a.publish(target.command_topic("PEN-A"), b'{"command": "stop"}', qos=1)
            await pen_a.publish(own.status, b"{}", qos=1)
        await seen.wait_for(lambda ms: ms)
    assert [str(m.topic) for m in seen.messages] == [own.status]


async def test_watchers_are_read_only_and_operators_may_command(
    fleet_broker: FleetBroker,
) -> None:
    pen = PenTopics("clinic", "PEN-B")
    async with subscribed(fleet_broker.config(ADMIN), "micropen/v1/clinic/#") as (_, seen):
        async with fleet_broker.config(WATCHER).client("watcher") as watcher:
            await watcher.publish(pen.command_topic(WATCHER), b"watcher", qos=1)
            await watcher.publish(pen.status, b"watcher", qos=1)
        async with fleet_broker.config(OPERATOR).client("operator") as operator:
            await operator.publish(pen.status, b"operator", qos=1)  # denied: not a pen
            await operator.publish(pen.command_topic(ADMIN), b"as admin", qos=1)  # not its name
            await operator.publish(pen.cmd, b"no sender level", qos=1)  # denied: no name
            await operator.publish(pen.command_topic(OPERATOR), b"operator", qos=1)
        await seen.wait_for(lambda ms: ms)
    assert [(str(m.topic), m.payload) for m in seen.messages] == [
        (pen.command_topic(OPERATOR), b"operator")
    ]


async def test_a_pen_reads_only_its_own_command_topic(fleet_broker: FleetBroker) -> None:
    pen_a, pen_b = PenTopics("clinic", "PEN-A"), PenTopics("clinic", "PEN-B")
    filters = (pen_a.command_filter, pen_b.command_filter)
    async with subscribed(fleet_broker.config("PEN-A"), *filters) as (_, seen):
        async with fleet_broker.config(OPERATOR).client("operator") as operator:
            await operator.publish(pen_b.command_topic(OPERATOR), b"for B", qos=1)
            await operator.publish(pen_a.command_topic(OPERATOR), b"for A", qos=1)
        await seen.wait_for(lambda ms: ms)
    assert [m.payload for m in seen.messages] == [b"for A"]


async def test_tls_with_the_test_ca_works(fleet_broker: FleetBroker) -> None:
    async with subscribed(fleet_broker.config(ADMIN, tls=True), "t/#") as (client, seen):
        await client.publish("t/x", b"over tls", qos=1)
        await seen.wait_for(lambda ms: ms)
    assert seen.messages[0].payload == b"over tls"


async def test_tls_without_the_ca_fails_verification(fleet_broker: FleetBroker) -> None:
    untrusted = fleet_broker.config(ADMIN, tls=True, cafile=fleet_broker.pki.other_ca)
    with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
        await _connects(untrusted)
    system_trust = BrokerConfig(
        "localhost", fleet_broker.mosquitto.tls_ports[0], tls=True, username=ADMIN, password="x"
    )
    with pytest.raises(aiomqtt.MqttError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
        await _connects(system_trust)


async def test_tls_checks_the_host_name(fleet_broker: FleetBroker) -> None:
    config = fleet_broker.config(ADMIN, tls=True)
    wrong_name = BrokerConfig(
        "127.0.0.2", config.port, tls=True, username=ADMIN, password=config.password,
        cafile=config.cafile,
    )  # fmt: skip
    with pytest.raises(aiomqtt.MqttError):
        await _connects(wrong_name)
    assert config.ssl_context() is not None
    assert config.ssl_context().verify_mode is ssl.CERT_REQUIRED  # type: ignore[union-attr]
    assert config.ssl_context().check_hostname  # type: ignore[union-attr]


async def test_mutual_tls_needs_the_client_certificate(fleet_broker: FleetBroker) -> None:
    await _connects(fleet_broker.config("PEN-A", mutual=True))
    without_cert = fleet_broker.config("PEN-A", tls=True)
    without_cert = BrokerConfig(
        "localhost", fleet_broker.mosquitto.tls_ports[1], tls=True, username="PEN-A",
        password=without_cert.password, cafile=without_cert.cafile, timeout=1.5,
    )  # fmt: skip
    # the broker drops the TLS 1.3 session after the handshake ("peer did not return a
    # certificate"); aiomqtt only notices when the CONNACK wait times out
    with pytest.raises(aiomqtt.MqttError):
        await _connects(without_cert)
    assert "did not return a certificate" in fleet_broker.mosquitto.log_tail(50)


def test_broker_url_parsing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    config = parse_broker_url("mqtt://broker.local", username="PEN-A", password_file=secret)
    assert (config.host, config.port, config.tls, config.password) == (
        "broker.local", 1883, False, "s3cret",
    )  # fmt: skip
    assert parse_broker_url("mqtts://h").port == 8883
    assert parse_broker_url("mqtts://h:1234").url == "mqtts://h:1234"
    assert parse_broker_url("mqtt://h", password_file=secret).for_pen("SIM-1").username == "SIM-1"
    for bad, fix in [
        ("http://h", "mqtt://"),
        ("mqtt://u:pw@h", "--password-file"),
        ("mqtt://h/x", "SCHEME://HOST:PORT"),
        ("mqtt://:1883", "no host"),
        ("mqtt://h:99999", "bad port"),
    ]:
        with pytest.raises(BrokerConfigError, match=fix):
            parse_broker_url(bad)
    with pytest.raises(BrokerConfigError, match="need TLS"):
        parse_broker_url("mqtt://h", cafile=secret)
    with pytest.raises(BrokerConfigError, match="does not exist"):
        parse_broker_url("mqtts://h", cafile=tmp_path / "missing.pem")
    (tmp_path / "empty").write_text("")
    with pytest.raises(BrokerConfigError, match="empty"):
        parse_broker_url("mqtt://h", password_file=tmp_path / "empty")


async def test_shared_subscriptions_split_messages_between_consumers(
    fleet_broker: FleetBroker,
) -> None:
    """docs/fleet.md advises `$share/archivers/...` for archivers; MQTT 3.1.1 clients too."""
    shared = "$share/archivers/micropen/v1/shared/+/sessions"
    topic = PenTopics("shared", "PEN-A").sessions
    one, two = (fleet_broker.config(user) for user in ARCHIVERS)  # one client per user
    async with (
        subscribed(one, shared, identifier="archiver-1") as (_, first),
        subscribed(two, shared, identifier="archiver-2") as (_, second),
        fleet_broker.config("PEN-A").client("pen-a") as pen,
    ):
        for i in range(20):
            await pen.publish(topic, str(i).encode(), qos=1)

        def all_in(_: object) -> bool:
            return len(first.messages) + len(second.messages) == 20

        waits = [asyncio.ensure_future(c.wait_for(all_in)) for c in (first, second)]
        _, pending = await asyncio.wait(waits, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
    got = sorted(int(m.payload) for m in first.messages + second.messages)  # type: ignore[arg-type]
    assert got == list(range(20)), "each message went to exactly one member of the group"
    assert first.messages and second.messages, "both members received a share"
