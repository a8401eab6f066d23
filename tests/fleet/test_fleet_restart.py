"""At-least-once delivery across a broker restart and a bridge restart: nothing is lost.

The consumer is an archiver with a persistent session (clean_session false, QoS 1), as a fleet
database would be; the broker keeps its session and queue on disk across the restart
(``persistence true``). Every event and run report the pen produced must arrive, identified by
its unique id (duplicates are allowed: that is what the id is for).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
from _fleet_helpers import ADMIN, FleetBroker

from micropen.host import AsyncPen
from micropen.host.fleet import BridgeConfig, FleetBridge
from micropen.host.fleet.payloads import pen_event_payload, session_id
from micropen.host.fleet.topics import decode, topic_filter
from micropen.protocol.messages import Event, EventCode, RunReport

SEED = 6
SERIAL = f"SIM-{SEED:06d}"


class Archiver:
    """A durable consumer: persistent session, reconnects, de-duplicates by id."""

    def __init__(self, broker: FleetBroker) -> None:
        self.config = broker.config(ADMIN)
        self.ids: dict[str, dict] = {}  # type: ignore[type-arg]
        self.received = 0
        self._changed = asyncio.Event()

    async def run(self, subscribed: asyncio.Event) -> None:
        while True:
            client = self.config.client("fleet-archiver", clean_session=False)
            try:
                async with client:
                    await client.subscribe(topic_filter("events"), qos=1)
                    await client.subscribe(topic_filter("sessions"), qos=1)
                    subscribed.set()
                    async for message in client.messages:
                        channel = str(message.topic).rsplit("/", 1)[1]
                        payload = decode(message.payload, channel)  # type: ignore[arg-type]
                        self.ids[payload["id"]] = payload
                        self.received += 1
                        self._changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)  # the broker is down: try again

    async def wait_for_ids(self, wanted: set[str], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not wanted <= self.ids.keys():
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def archiving(broker: FleetBroker) -> AsyncIterator[Archiver]:
    archiver = Archiver(broker)
    ready = asyncio.Event()
    task = asyncio.create_task(archiver.run(ready))
    try:
        async with asyncio.timeout(5):
            await ready.wait()
        yield archiver
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class PenRecord:
    """The ids the bridge must deliver, computed from what the pen sent."""

    def __init__(self, pen: AsyncPen) -> None:
        self.pen = pen
        self.ids: set[str] = set()
        self.runs: set[str] = set()
        self.retracted = 0
        self._changed = asyncio.Event()
        pen.add_listener(self._on)

    async def wait_retracted(self, count: int) -> None:
        """Until the pen reported ``count`` retractions: the last event of each run."""
        async with asyncio.timeout(5):
            while self.retracted < count:
                self._changed.clear()
                await self._changed.wait()

    def _on(self, message: object) -> None:
        ident = self.pen.identity
        assert ident is not None
        if isinstance(message, Event):
            self.ids.add(pen_event_payload("site", ident.serial, ident.boot_id, message, 0)["id"])
            self.retracted += message.code is EventCode.RETRACTED
            self._changed.set()
        elif isinstance(message, RunReport):
            self.runs.add(session_id(ident.serial, ident.boot_id, message.run_id))


async def _run(pen: AsyncPen, strokes: int = 30) -> None:
    await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=strokes)


def _notice_event(bridge: FleetBridge, kind: str) -> asyncio.Event:
    happened = asyncio.Event()
    bridge.add_notice_listener(lambda n: happened.set() if n["event"] == kind else None)
    return happened


async def test_broker_restart_mid_stream_loses_no_event_or_run_report(
    own_broker: FleetBroker, tmp_path: Path
) -> None:
    pen = await AsyncPen.open(f"sim://?seed={SEED}")
    record = PenRecord(pen)
    config = BridgeConfig(site="restart", queue_dir=tmp_path / "queue")
    try:
        bridge = FleetBridge(pen, own_broker.config(SERIAL), config)
        async with archiving(own_broker) as archive, bridge:
            await bridge.wait_connected(5)
            await _run(pen)
            await bridge.wait_drained(5)

            lost = _notice_event(bridge, "disconnected")
            await asyncio.to_thread(own_broker.mosquitto.stop)
            async with asyncio.timeout(5):
                await lost.wait()
            for _ in range(3):  # several runs while the broker is down
                await _run(pen)
            queued = len(bridge.outbox)
            assert not bridge.connected
            await asyncio.to_thread(own_broker.mosquitto.start)

            await bridge.wait_connected(15)
            await bridge.wait_drained(10)
            await archive.wait_for_ids(record.ids | record.runs, timeout=15)
            stats = bridge.statistics()
        sessions = [p for p in archive.ids.values() if p["schema"] == "micropen.session/1"]
    finally:
        await pen.close()
    assert len(record.runs) == 4
    assert queued >= 3 * 3, "three run reports and their start/stop events waited on disk"
    assert sorted(s["run_id"] for s in sessions) == [1, 2, 3, 4]
    assert all(s["strokes"] == 30 and s["outcome"] == "COMPLETED" for s in sessions)
    assert stats["connects"] >= 2 and stats["outbox"] == 0
    assert stats["telemetry_dropped"] >= 0


async def test_a_restarted_bridge_delivers_what_an_earlier_one_queued(
    own_broker: FleetBroker, tmp_path: Path
) -> None:
    """The outbox is on disk: a bridge stopped while the broker was down leaves its queue
    to the next bridge with the same --queue-dir."""
    pen = await AsyncPen.open(f"sim://?seed={SEED}")
    record = PenRecord(pen)
    config = BridgeConfig(site="requeue", queue_dir=tmp_path / "queue")
    try:
        async with archiving(own_broker) as archive:
            await asyncio.to_thread(own_broker.mosquitto.stop)
            first = FleetBridge(pen, own_broker.config(SERIAL), config)
            async with first:
                await _run(pen)
                await record.wait_retracted(1)  # the pen's last event is queued before closing
            assert first.statistics()["outbox"] >= 4 and first.statistics()["delivered"] == 0
            await asyncio.to_thread(own_broker.mosquitto.start)
            async with FleetBridge(pen, own_broker.config(SERIAL), config) as second:
                await second.wait_connected(10)
                await second.wait_drained(10)
                await archive.wait_for_ids(record.ids | record.runs, timeout=15)
    finally:
        await pen.close()
    assert len(record.runs) == 1
