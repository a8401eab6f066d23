"""Fleet throughput and latency through a real mosquitto, from N bridges on this machine.

N simulated pens (in-process ``sim://``) stream telemetry at ``hz``; N bridges publish it in
100 ms batches through one broker; one subscriber receives everything. Latency is the
subscriber's receive time minus the ``sent_at`` the bridge stamped in the payload just before
publishing (same clock: same machine); the 100 ms batching adds up to one interval of sample
age on top. Sequence numbers prove nothing was lost between bridge and subscriber.

``python -m micropen.tools.bench_fleet --bridges 10 --seconds 10 --hz 100 --json``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from micropen.host import AsyncPen
from micropen.host.fleet import BridgeConfig, BrokerConfig, FleetBridge
from micropen.host.fleet.mosquitto import LocalMosquitto
from micropen.host.fleet.topics import decode, topic_filter
from micropen.host.tasks import cancel_and_wait

__all__ = ["FleetRun", "measure_broker", "measure_fleet", "run_fleet"]


@dataclass
class _Stream:
    seqs: list[int] = field(default_factory=list)
    samples: int = 0


@dataclass
class FleetRun:
    """What the subscriber saw, per pen, and what the bridges say they sent."""

    bridges: int
    hz: int
    seconds: float
    streams: dict[str, _Stream] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    messages: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    sent: dict[str, dict[str, Any]] = field(default_factory=dict)
    cpu_s: float = 0.0

    def gaps(self) -> dict[str, int]:
        """Missing sequence numbers between the first and last batch received, per pen."""
        result = {}
        for serial, stream in self.streams.items():
            seqs = sorted(set(stream.seqs))
            result[serial] = (seqs[-1] - seqs[0] + 1 - len(seqs)) if seqs else 0
        return result

    def figures(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        received = sum(s.samples for s in self.streams.values())
        published = sum(int(s["telemetry_samples"]) for s in self.sent.values())

        def pct(p: float) -> float:
            return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 3) if lat else 0.0

        return {
            "bridges": self.bridges,
            "telemetry_hz": self.hz,
            "seconds": self.seconds,
            "messages": self.messages,
            "messages_per_s": round(self.messages / self.seconds, 1),
            "samples_received": received,
            "samples_published": published,
            "samples_per_s": round(received / self.seconds, 1),
            "samples_decimated": sum(int(s["telemetry"]["decimated"]) for s in self.sent.values()),
            "sequence_gaps": sum(self.gaps().values()),
            "duplicates": sum(len(s.seqs) - len(set(s.seqs)) for s in self.streams.values()),
            "latency_ms_p50": pct(0.50),
            "latency_ms_p95": pct(0.95),
            "latency_ms_p99": pct(0.99),
            "latency_ms_max": round(1000 * lat[-1], 3) if lat else 0.0,
            "latency_ms_mean": round(1000 * statistics.fmean(lat), 3) if lat else 0.0,
            "host_cpu_s": round(self.cpu_s, 2),
            "host_cpu_pct": round(100 * self.cpu_s / self.seconds, 1),
        }


async def run_fleet(
    subscriber: BrokerConfig,
    pen_broker: Callable[[str], BrokerConfig],
    *,
    bridges: int = 10,
    seconds: float = 10.0,
    hz: int = 100,
    site: str = "bench",
    queue_dir: Path,
    first_seed: int = 1,
) -> FleetRun:
    """Run N sim pens and N bridges in this process for ``seconds``; collect what arrives."""
    run = FleetRun(bridges, hz, seconds)
    pens = [await AsyncPen.open(f"sim://?seed={first_seed + i}") for i in range(bridges)]
    try:
        async with _subscriber(subscriber, site, run) as ready:
            await ready.wait()
            async with contextlib.AsyncExitStack() as stack:
                fleet = []
                for pen in pens:
                    config = BridgeConfig(site=site, queue_dir=queue_dir)
                    assert pen.identity is not None
                    bridge = FleetBridge(pen, pen_broker(pen.identity.serial), config)
                    fleet.append(await stack.enter_async_context(bridge))
                for bridge in fleet:
                    await bridge.wait_connected(15)
                for pen in pens:
                    await pen.set_telemetry(hz)
                cpu0 = time.process_time()
                await asyncio.sleep(seconds)  # the measurement window: real time is the point
                for pen in pens:
                    await pen.set_telemetry(0)
                run.cpu_s = time.process_time() - cpu0
            run.sent = {b.serial: b.statistics() for b in fleet}
            await _wait_for_last_batches(run, timeout=5.0)
    finally:
        for pen in pens:
            await pen.close()
    return run


async def _wait_for_last_batches(run: FleetRun, timeout: float) -> None:
    """Until the subscriber has as many samples as the bridges sent (or timeout)."""
    wanted = sum(int(s["telemetry_samples"]) for s in run.sent.values())
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while sum(s.samples for s in run.streams.values()) < wanted:
                run.arrived.clear()
                await run.arrived.wait()


@contextlib.asynccontextmanager
async def _subscriber(config: BrokerConfig, site: str, run: FleetRun) -> Any:
    ready = asyncio.Event()

    async def pump() -> None:
        client = config.client(f"bench-subscriber-{os.getpid()}", max_queued_incoming_messages=0)
        async with client:
            await client.subscribe(topic_filter("telemetry", site=site), qos=0)
            ready.set()
            async for message in client.messages:
                now = time.time()
                batch = decode(message.payload, "telemetry")  # type: ignore[arg-type]
                stream = run.streams.setdefault(batch["serial"], _Stream())
                stream.seqs.append(batch["seq"])
                stream.samples += len(batch["samples"])
                run.latencies.append(now - batch["sent_at"])
                run.messages += 1
                run.arrived.set()

    task = asyncio.create_task(pump())
    try:
        yield ready
    finally:
        await cancel_and_wait([task])  # its MqttError on the way out is of no interest


def measure_fleet(bridges: int = 10, seconds: float = 10, hz: int = 100) -> dict[str, Any]:
    """Figures for docs/fleet.md: a local mosquitto (anonymous, loopback), N bridges."""
    with (
        tempfile.TemporaryDirectory() as folder,
        LocalMosquitto(Path(folder) / "broker", allow_anonymous=True) as broker,
    ):
        config = BrokerConfig("127.0.0.1", broker.port, tls=False)
        fleet = run_fleet(
            config,
            lambda _serial: config,
            bridges=bridges,
            seconds=seconds,
            hz=hz,
            queue_dir=Path(folder) / "queue",
        )
        figures = asyncio.run(fleet).figures()
        figures["broker_cpu_s"] = _process_cpu_s(broker)
    figures["broker_cpu_pct"] = round(100 * figures["broker_cpu_s"] / seconds, 1)
    figures["cpus"] = os.cpu_count()
    return figures


def measure_broker(
    messages: int = 20_000, payload_bytes: int = 900, qos: int = 0
) -> dict[str, Any]:
    """The broker's own headroom: one publisher as fast as it can, one subscriber, payloads the
    size of a 10-sample telemetry batch. Bounds how many pens one broker node can carry."""
    with (
        tempfile.TemporaryDirectory() as folder,
        LocalMosquitto(Path(folder) / "broker", allow_anonymous=True) as broker,
    ):
        config = BrokerConfig("127.0.0.1", broker.port, tls=False)
        elapsed = asyncio.run(_flood(config, messages, payload_bytes, qos))
        broker_cpu = _process_cpu_s(broker)
    return {
        "messages": messages,
        "payload_bytes": payload_bytes,
        "qos": qos,
        "seconds": round(elapsed, 3),
        "client_messages_per_s": round(messages / elapsed, 1),
        "broker_cpu_s": broker_cpu,
        "broker_cpu_us_per_message": round(1e6 * broker_cpu / messages, 1),
        "pens_per_broker_core_at_10_batches_per_s": int(
            1e6 / max(1e6 * broker_cpu / messages, 1e-3) / 10
        ),
    }


async def _flood(config: BrokerConfig, messages: int, size: int, qos: int) -> float:
    payload = b"x" * size
    done = asyncio.Event()
    received = 0
    async with config.client("flood-sub", max_queued_incoming_messages=0) as sub:
        await sub.subscribe("flood", qos=qos)

        async def count() -> None:
            nonlocal received
            async for _ in sub.messages:
                received += 1
                if received == messages:
                    done.set()

        counter = asyncio.create_task(count())
        async with config.client("flood-pub", max_inflight_messages=100) as pub:
            start = time.perf_counter()
            for _ in range(messages):
                await pub.publish("flood", payload, qos=qos)
            async with asyncio.timeout(60):
                await done.wait()
            elapsed = time.perf_counter() - start
        await cancel_and_wait([counter])
    return elapsed


def _process_cpu_s(broker: LocalMosquitto) -> float:
    """User+system CPU seconds of the broker process so far (Linux /proc; 0 elsewhere)."""
    proc = broker._proc
    if proc is None:
        return 0.0
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)


def main(
    bridges: int = typer.Option(10, help="bridges (and simulated pens) in this process"),
    seconds: float = typer.Option(10.0, help="measurement window"),
    hz: int = typer.Option(100, help="telemetry rate of each pen"),
    broker: bool = typer.Option(False, "--broker", help="measure the broker's cost per message"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Messages/s and publish→receive latency through a local mosquitto."""
    if broker:
        figures: dict[str, Any] = {f"qos{q}": measure_broker(qos=q) for q in (0, 1)}
    else:
        figures = measure_fleet(bridges, seconds, hz)
    if as_json:
        typer.echo(json.dumps(figures, sort_keys=True))
    else:
        for key, value in figures.items():
            typer.echo(f"{key:>28}: {value}")


if __name__ == "__main__":
    typer.run(main)
