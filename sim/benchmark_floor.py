"""The floor under ``measure_sim``: what the protocol's own work costs, measured in the same run.

A simulated treatment cannot be faster than the frames and samples it must move. This measures
the parts no firmware or host can skip while speaking the protocol as the bench does, each on
its own with nothing around it, and adds them up for the scenario's counts:

* a **round** of the authenticated link: one full ``TelemetryBatch`` frame sealed, framed,
  deframed, checked, opened and decoded, and its acknowledgement back the same way (a pair of
  :class:`Link` objects, no firmware, no harness) — and the same round for a ``Heartbeat``;
* **packing** one sample into a batch (``Telemetry.STRUCT.pack_into``, as the firmware does);
* **unpacking** one batch into samples at the host (``unpack_telemetry``).

The counts are the fewest the protocol allows: a batch holds at most
``TELEMETRY_BATCH_SAMPLES`` samples and leaves within the host's batch delay, so at ``hz`` a
treatment needs ``samples / min(8, hz × delay)`` batch rounds; with no batches the host still
writes a heartbeat every ``HEARTBEAT_S`` (the watchdog's quarter) and the pen acknowledges it.
Every batch costs its own acknowledgement: batches leave 80 ms apart, and an ack held longer
than the pen's smallest retransmission timeout (25 ms) only buys a retransmission.
The physics, the control ticks and the monitors are left out (a different firmware could
step them analytically), so ``ceiling_realtime_factor`` is an upper bound: no simulator on this
protocol, in this interpreter, on this machine, runs the scenario faster.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from micropen.protocol.events import MessageReceived
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import (
    TELEMETRY_BATCH_SAMPLES,
    Heartbeat,
    PenState,
    Telemetry,
    TelemetryBatch,
    pack_telemetry,
    unpack_telemetry,
)
from micropen.protocol.schema import Message

from .pen import SimConfig, SimulatedPen

__all__ = ["measure_floor"]

_ROUNDS = 4_000  # per measurement; the best of three is kept (the floor, not the average)
_SAMPLE = Telemetry(1, PenState.RUNNING, 500, 11000, 7, 425, 300, 4000, 9, 7)


def _best_us(work: Callable[[int], None], n: int) -> float:
    """Microseconds per unit of ``work(n)``, the best of three passes."""
    best = math.inf
    for _ in range(3):
        start = time.process_time()
        work(n)
        best = min(best, time.process_time() - start)
    return best / n * 1e6


def _link_pair(seed: int) -> tuple[Link, Link, list[float]]:
    """A host Link and a pen's Link in an authenticated epoch (the pen paired as the bench
    pairs it), and the shared clock."""
    pen = SimulatedPen(SimConfig(seed=seed), now=0.0)
    rng = random.Random(seed)
    key, host_id = rng.randbytes(32), 0x0BE7_0001
    pen_id = pen.add_pairing(host_id, key, "floor", 0.0)
    host = Link(Role.HOST, rng=rng, pairing={pen_id: (pen_id, key)}.get)
    host.connect(0.0, host_id)
    clock = [0.0]
    for _ in range(100):
        clock[0] += 0.001
        pen.receive_data(host.data_to_send(clock[0]), clock[0])
        host.receive_data(pen.data_to_send(clock[0]), clock[0])
        host.events()
        if host.connected and pen.firmware.link.auth is not None:
            return host, pen.firmware.link, clock
    raise RuntimeError("the floor's link pair did not open an authenticated epoch")


def _rounds(
    host: Link, pen: Link, clock: list[float], message: Message, *, from_pen: bool
) -> Callable[[int], None]:
    """``work(n)``: n rounds of ``message`` one way and its acknowledgement back."""
    sender, receiver = (pen, host) if from_pen else (host, pen)

    def work(n: int) -> None:
        for _ in range(n):
            clock[0] += 0.05
            now = clock[0]
            sender.send(message, now)
            receiver.receive_data(sender.data_to_send(now), now)
            for event in receiver.events():
                if not isinstance(event, MessageReceived):
                    raise RuntimeError(f"the floor's link reported {event}")
            clock[0] += 0.05  # past any ack delay
            sender.receive_data(receiver.data_to_send(clock[0]), clock[0])
            sender.events()

    return work


def _packing(n: int) -> None:
    pack, buffer = Telemetry.STRUCT.pack_into, bytearray(Telemetry.STRUCT.size)
    values = tuple(_SAMPLE)
    for _ in range(n):
        pack(buffer, 0, *values)


def _unpacking(batch: TelemetryBatch) -> Callable[[int], None]:
    def work(n: int) -> None:
        for _ in range(n):
            unpack_telemetry(batch)

    return work


def measure_floor(
    minutes: float, telemetry_hz: int, batch_delay_ms: int, heartbeat_s: float, seed: int = 0
) -> dict[str, float | int]:
    """The protocol's own cost of the scenario and the realtime factor it allows at most."""
    seconds = minutes * 60.0
    host, pen, clock = _link_pair(seed)
    batch = pack_telemetry(0, [_SAMPLE] * TELEMETRY_BATCH_SAMPLES)
    batch_round = _best_us(_rounds(host, pen, clock, batch, from_pen=True), _ROUNDS)
    beat_round = _best_us(_rounds(host, pen, clock, Heartbeat(1), from_pen=False), _ROUNDS)
    pack_us = _best_us(_packing, _ROUNDS * TELEMETRY_BATCH_SAMPLES)
    unpack_us = _best_us(_unpacking(batch), _ROUNDS)
    samples = round(seconds * telemetry_hz)
    per_batch = min(TELEMETRY_BATCH_SAMPLES, max(1, telemetry_hz * batch_delay_ms // 1000))
    batches = math.ceil(samples / per_batch)
    heartbeats = max(0, math.ceil(seconds / heartbeat_s) - batches)  # batches' acks feed it
    floor_s = (
        batches * (batch_round + unpack_us) + heartbeats * beat_round + samples * pack_us
    ) / 1e6
    return {
        "floor_batch_round_us": batch_round,
        "floor_heartbeat_round_us": beat_round,
        "floor_sample_pack_us": pack_us,
        "floor_batch_unpack_us": unpack_us,
        "floor_batch_rounds": batches,
        "floor_heartbeat_rounds": heartbeats,
        "floor_s": floor_s,
        "ceiling_realtime_factor": seconds / floor_s if floor_s > 0 else math.inf,
    }
