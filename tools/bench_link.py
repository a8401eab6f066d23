"""``micropen bench link``: command round trip, throughput and e-stop latency over a real pty.

The host runs in this process; the simulated pen runs in another process behind a
pseudo-terminal (``python -m micropen.sim.serve --pty``), so every byte crosses the same serial
code path as a bench pen. The floor is measured in the same run: a child process echoing raw
bytes on the same kind of pty, read and written by pyserial — no protocol at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import serial

from micropen.host import AsyncPen
from micropen.protocol.messages import GetStatus, Status

__all__ = ["measure_link", "raw_echo_floor"]

_ECHO_CHILD = r"""
import os, sys, tty
master, slave = os.openpty()
tty.setraw(slave)
print(os.ttyname(slave), flush=True)
while True:
    data = os.read(master, 4096)
    if not data:
        break
    os.write(master, data)
"""


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.contextmanager
def _child(args: list[str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"{args!r} printed no device path")
        yield proc, line
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


def raw_echo_floor(rounds: int = 2000, size: int = 24) -> list[float]:
    """Round-trip times (s) of ``size``-byte writes echoed by a child over a raw pty."""
    payload = bytes(range(1, size + 1))
    with _child([sys.executable, "-c", _ECHO_CHILD]) as (_, path):
        port = serial.Serial(path, timeout=1.0)
        try:
            times = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                port.write(payload)
                got = b""
                while len(got) < size:
                    got += port.read(size - len(got))
                times.append(time.perf_counter() - t0)
            return times
        finally:
            port.close()


async def _round_trips(pen: AsyncPen, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        await pen.status()
        times.append(time.perf_counter() - t0)
    return times


async def _throughput(pen: AsyncPen, commands: int, window: int) -> float:
    sem = asyncio.Semaphore(window)

    async def one() -> None:
        async with sem:
            reply = await pen.request(lambda c: GetStatus(c))
            assert isinstance(reply, Status)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(commands)))
    return commands / (time.perf_counter() - t0)


async def _estops(pen: AsyncPen, rounds: int) -> list[float]:
    """API call → Ack, which the pen sends only after its motor is off and the needles are
    homing: an upper bound on call-to-motor-stop."""
    times = []
    await pen.set_depth(0.5)
    await pen.set_rate(90)
    for _ in range(rounds):
        await pen.status()
        run_id = await pen.start_run(area="forehead", seconds=60)
        t0 = time.perf_counter()
        await pen.emergency_stop()
        times.append(time.perf_counter() - t0)
        await pen.wait_run_end(run_id, timeout=5)
        await pen.clear_fault()
    return times


async def _host_side(path: str, rounds: int, commands: int, estops: int) -> dict[str, Any]:
    pen = await AsyncPen.open(path)
    try:
        await _round_trips(pen, 50)  # warm up
        rtts = await _round_trips(pen, rounds)
        rate = await _throughput(pen, commands, window=16)
        stops = await _estops(pen, estops)
        stats = pen.statistics()
    finally:
        await pen.close()
    return {"rtts": rtts, "commands_per_s": rate, "estops": stops, "stats": stats}


def measure_link(rounds: int = 2000, commands: int = 5000, estops: int = 200) -> dict[str, Any]:
    """Figures for docs/performance.md (µs): p50/p99 round trip, floor, throughput, e-stop."""
    floor = raw_echo_floor(rounds)
    serve = [sys.executable, "-m", "micropen.sim.serve", "--pty"]
    env_seed = os.environ.get("MICROPEN_BENCH_SEED", "1")
    with _child([*serve, "--seed", env_seed]) as (_, path):
        host = asyncio.run(_host_side(path.split()[0], rounds, commands, estops))
    us = 1e6
    rtt_p99 = _percentile(host["rtts"], 0.99)
    floor_p99 = _percentile(floor, 0.99)
    return {
        "rtt_p50_us": round(statistics.median(host["rtts"]) * us, 1),
        "rtt_p99_us": round(rtt_p99 * us, 1),
        "floor_rtt_p50_us": round(statistics.median(floor) * us, 1),
        "floor_rtt_p99_us": round(floor_p99 * us, 1),
        "rtt_p99_over_floor": round(rtt_p99 / floor_p99, 2),
        "commands_per_s": round(host["commands_per_s"], 1),
        "estop_p50_us": round(statistics.median(host["estops"]) * us, 1),
        "estop_p99_us": round(_percentile(host["estops"], 0.99) * us, 1),
        "rounds": rounds,
        "commands": commands,
        "estops": estops,
        "retransmits": host["stats"]["retransmits"],
    }
