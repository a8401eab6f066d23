"""How much faster than real time the simulator runs a whole treatment.

``measure_sim()`` drives a :class:`SimulatedPen` through a treatment in *virtual* time with a
host-side protocol :class:`Link` in the same process: handshake, depth and rate, telemetry,
one timed run, heartbeats — every byte framed, CRC-checked, acknowledged and decoded on both
sides, as over a serial line. The host polls the line every ``HOST_POLL_S`` (as a host reading
a serial port with a timeout does) and writes at least every ``HEARTBEAT_S``: its
acknowledgements of the pen's telemetry batches when there are any (every authenticated frame
feeds the pen's watchdog), a heartbeat when it has written nothing for that long.

    python3 -c "from micropen.sim.benchmark import measure_sim; print(measure_sim())"
"""

from __future__ import annotations

import random
import time
from typing import Any

from micropen.protocol import limits as L
from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.events import MessageReceived
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    TELEMETRY_BATCH_SAMPLES,
    TELEMETRY_SEQ_MOD,
    Ack,
    Capability,
    Heartbeat,
    Hello,
    Identity,
    Nak,
    OpenSession,
    Run,
    RunMode,
    RunReport,
    SetDepth,
    SetRate,
    SetTelemetry,
    SetTelemetryBatch,
    Telemetry,
    TelemetryBatch,
    unpack_telemetry,
)
from micropen.protocol.schema import Message, schema_hash

from .clock import VirtualClock
from .pen import SimConfig, SimulatedPen

__all__ = ["measure_sim"]

HOST_POLL_S = 0.05
HEARTBEAT_S = 0.125  # a quarter of the default 500 ms watchdog
COMMAND_POLL_S = 0.001
COMMAND_TIMEOUT_S = 2.0
BATCH_DELAY_MS = 100  # what the host library asks for (host/connection.py)


class _Host:
    """The smallest host that runs a treatment: a Link, a clock, and a pump."""

    def __init__(self, pen: SimulatedPen, clock: VirtualClock, seed: int) -> None:
        self.pen, self.clock = pen, clock
        # the bench pairs its own host with the pen (a local act): links are authenticated
        rng = random.Random(seed)
        key = rng.randbytes(32)
        self.host_id = 0x0BE7_0000 + seed % 0xFFFF + 1
        pen_id = pen.add_pairing(self.host_id, key, "benchmark", clock.now())
        self.link = Link(Role.HOST, rng=rng, pairing={pen_id: (pen_id, key)}.get)
        self.replies: dict[int, Message] = {}
        self.report: RunReport | None = None
        self.telemetry = 0
        self.batches = 0
        self.missing = 0  # gaps in the pen's sample numbers
        self._next_seq: int | None = None
        self.last_sample: Telemetry | None = None
        self._cmd_id = 0
        self._heartbeats = 0
        self._next_heartbeat = 0.0

    def pump(self, dt: float) -> None:
        self.clock.advance(dt)
        now = self.clock.now()
        pen, link = self.pen, self.link
        data = pen.data_to_send(now)
        if data:  # a read that returned nothing hands nothing to the link
            link.receive_data(data, now)
            for event in link.events():
                if isinstance(event, MessageReceived):
                    self._on_message(event.message)
        if link.connected and now >= self._next_heartbeat:  # nothing written for 125 ms
            self._heartbeats += 1
            link.send(Heartbeat(self._heartbeats), now)
        out = link.data_to_send(now)  # the link's timers run at every look
        if out:  # nothing to write: no write
            # every authenticated frame feeds the pen's watchdog (an acknowledgement too): a
            # heartbeat is due only after HEARTBEAT_S without writing anything
            self._next_heartbeat = now + HEARTBEAT_S
            pen.receive_data(out, now)

    def _on_message(self, message: Message) -> None:
        if isinstance(message, TelemetryBatch):  # unpacked into samples, as the host does
            samples = unpack_telemetry(message)
            self.batches += 1
            self.telemetry += len(samples)
            self.last_sample = samples[-1]
            if self._next_seq is not None:
                self.missing += (message.first_seq - self._next_seq) % TELEMETRY_SEQ_MOD
            self._next_seq = (message.first_seq + len(samples)) % TELEMETRY_SEQ_MOD
        elif isinstance(message, Telemetry):
            self.telemetry += 1
            self.last_sample = message
        elif isinstance(message, RunReport):
            self.report = message
        elif message.KIND.name == "REPLY":
            self.replies[message[0]] = message

    def connect(self) -> None:
        self.link.connect(self.clock.now(), self.host_id)
        deadline = self.clock.now() + COMMAND_TIMEOUT_S
        while not self.link.connected:
            if self.clock.now() > deadline:
                raise LocalProtocolError("the simulated pen did not accept the link")
            self.pump(COMMAND_POLL_S)

    def command(self, build: Any) -> Message:
        self._cmd_id += 1
        cmd_id = self._cmd_id
        self.link.send(build(cmd_id), self.clock.now())
        deadline = self.clock.now() + COMMAND_TIMEOUT_S
        while cmd_id not in self.replies:
            if self.clock.now() > deadline:
                raise LocalProtocolError(f"no reply to command {cmd_id} from the simulated pen")
            self.pump(COMMAND_POLL_S)
        reply = self.replies.pop(cmd_id)
        if isinstance(reply, Nak):
            raise LocalProtocolError(f"the simulated pen refused command {cmd_id}: {reply}")
        return reply


def _area_for(rate_sps: int) -> L.AreaProfile:
    for profile in L.AREAS.values():
        if rate_sps in profile.allowed_rates():
            return profile
    raise LocalProtocolError(
        f"no treatment area allows {rate_sps} strokes/s; allowed rates: "
        f"{sorted({r for p in L.AREAS.values() for r in p.allowed_rates()})}"
    )


def measure_sim(
    minutes: float = 30.0,
    rate_sps: int = 110,
    telemetry_hz: int = 100,
    seed: int = 0,
    *,
    batch: bool = True,
) -> dict[str, float | int]:
    """Run one timed treatment of ``minutes`` in virtual time; figures of the run.

    With ``batch`` the host asks the pen for TelemetryBatch frames (8 samples, 100 ms at
    most), as the host library does; without, it gets one Telemetry datagram per sample."""
    profile = _area_for(rate_sps)
    duration_ms = min(max(round(minutes * 60_000), L.RUN_DURATION_MIN_MS), L.RUN_DURATION_MAX_MS)
    clock = VirtualClock()
    pen = SimulatedPen(SimConfig(seed=seed), now=clock.now())
    host = _Host(pen, clock, seed)
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    host.connect()
    identity = host.command(lambda c: Hello(c, PROTOCOL_VERSION, schema_hash()))
    assert isinstance(identity, Identity)
    if batch and identity.capabilities & Capability.TELEMETRY_BATCH:
        host.command(lambda c: SetTelemetryBatch(c, TELEMETRY_BATCH_SAMPLES, BATCH_DELAY_MS))
    host.command(lambda c: OpenSession(c, 1 + seed))  # notifications flow to a session
    host.command(lambda c: SetDepth(c, profile.default_um, 0))
    host.command(lambda c: SetRate(c, rate_sps))
    host.command(lambda c: SetTelemetry(c, telemetry_hz))
    ack = host.command(lambda c: Run(c, profile.area, RunMode.DURATION, 0, duration_ms))
    assert isinstance(ack, Ack)
    run_started = clock.now()
    limit = run_started + duration_ms / 1000.0 + COMMAND_TIMEOUT_S
    while host.report is None:
        if clock.now() > limit:
            raise LocalProtocolError("the simulated run did not report its end in time")
        host.pump(HOST_POLL_S)
    wall_s = time.perf_counter() - wall_start
    cpu_s = time.process_time() - cpu_start
    simulated_s = clock.now()
    report = host.report
    pen_stats, host_stats = pen.firmware.link.statistics(), host.link.statistics()
    return {
        "realtime_factor": simulated_s / wall_s,
        "wall_s": wall_s,
        "cpu_s": cpu_s,  # less sensitive than wall_s to other processes on the machine
        "simulated_s": simulated_s,
        "run_s": report.duration_ms / 1000.0,
        "strokes": report.strokes,
        "telemetry_samples": host.telemetry,
        "telemetry_skipped": pen.firmware.telemetry_skipped,
        "telemetry_batches": host.batches,
        "telemetry_missing": host.missing,
        "frames_pen_to_host": pen_stats.frames_sent,
        "frames_host_to_pen": host_stats.frames_sent,
        "retransmits": pen_stats.retransmits + host_stats.retransmits,
        "outcome": int(report.outcome),
    }
