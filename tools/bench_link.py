"""``micropen bench link``: command round trip, throughput and e-stop latency over a real pty.

The host runs in this process; the simulated pen runs in another process behind a
pseudo-terminal (``micropen sim serve --pty``, paired with this host), so every byte crosses
the same serial code path as a bench pen. The floor is measured in the same run: a child
process echoing raw bytes on the same kind of pty, read and written by pyserial — no protocol
at all.

Over a faulty line (:func:`measure_faulty_link`, ``--loss``/``--corrupt``/``--duplicate``,
``--sweep``), a third process sits between host and pen: the fault-injecting link proxy
(``python -m micropen.tools.proxy``, seeded), which drops, duplicates and bit-flips whole frames
and single bytes in both directions exactly as in front of a bench pen. The pen streams
telemetry meanwhile (``--telemetry-hz``), as it does during a treatment, and the host keeps
``window`` GetStatus commands in flight: each command's latency (send → reply), the commands
answered per second and the commands that got no answer within ``command_timeout`` are counted.
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
from micropen.host.errors import HostError, PenTimeout
from micropen.protocol.messages import GetStatus, Status, Telemetry

__all__ = [
    "SWEEP_LOSSES",
    "measure_faulty_link",
    "measure_link",
    "measure_sweep",
    "raw_echo_floor",
    "sweep_table",
]

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


async def _unauthenticated_side(path: str, rounds: int, commands: int) -> dict[str, Any]:
    """The same reads over an unauthenticated link (a host that offers no pairing): what the
    tag and counter on every frame cost, measured against the same pen in the same run."""
    pen = await AsyncPen.open(path, keys=None, log=False, purpose="benchmark")
    try:
        assert not pen.authenticated
        await _round_trips(pen, 50)
        rtts = await _round_trips(pen, rounds)
        rate = await _throughput(pen, commands, window=16)
    finally:
        await pen.close()
    return {"rtts": rtts, "commands_per_s": rate}


async def _host_side(path: str, rounds: int, commands: int, estops: int) -> dict[str, Any]:
    pen = await AsyncPen.open(path)
    try:
        assert pen.authenticated, "the served pen should be paired with this host"
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
    serve = [sys.executable, "-m", "micropen.tools.cli", "sim", "serve", "--pty"]
    env_seed = os.environ.get("MICROPEN_BENCH_SEED", "1")
    with _child([*serve, "--seed", env_seed]) as (_, path):
        plain = asyncio.run(_unauthenticated_side(path.split()[0], rounds, commands))
        host = asyncio.run(_host_side(path.split()[0], rounds, commands, estops))
    us = 1e6
    rtt_p99 = _percentile(host["rtts"], 0.99)
    floor_p99 = _percentile(floor, 0.99)
    plain_p99 = _percentile(plain["rtts"], 0.99)
    return {
        "authenticated": True,
        "unauth_rtt_p50_us": round(statistics.median(plain["rtts"]) * us, 1),
        "unauth_rtt_p99_us": round(plain_p99 * us, 1),
        "unauth_commands_per_s": round(plain["commands_per_s"], 1),
        "auth_p99_over_unauth": round(rtt_p99 / plain_p99, 2),
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


# ------------------------------------------------------------------------------ a faulty line
SWEEP_LOSSES = (0.0, 0.02, 0.05, 0.10)


async def _faulty_host_side(
    path: str,
    commands: int,
    window: int,
    telemetry_hz: int,
    max_seconds: float,
    command_timeout: float,
) -> dict[str, Any]:
    pen = await AsyncPen.open(path, log=False, purpose="benchmark", command_timeout=command_timeout)
    latencies: list[float] = []
    timeouts = errors = 0
    issued = 0
    samples = [0]

    def on_notification(item: Any) -> None:
        if isinstance(item, Telemetry):
            samples[0] += 1

    pen.add_listener(on_notification)
    try:
        await _round_trips(pen, 20)  # warm up (and an RTT estimate for the link)
        await pen.set_telemetry(telemetry_hz)
        t0 = time.perf_counter()
        stop_at = t0 + max_seconds

        async def worker() -> None:
            nonlocal issued, timeouts, errors
            while issued < commands and time.perf_counter() < stop_at:
                issued += 1
                sent = time.perf_counter()
                try:
                    reply = await pen.request(lambda c: GetStatus(c))
                except PenTimeout:
                    timeouts += 1
                    continue
                except HostError:  # the link dropped (and comes back): counted, not fatal
                    errors += 1
                    await asyncio.sleep(0.01)
                    continue
                assert isinstance(reply, Status)
                latencies.append(time.perf_counter() - sent)

        await asyncio.gather(*(worker() for _ in range(window)))
        elapsed = time.perf_counter() - t0
        with contextlib.suppress(HostError):
            await pen.set_telemetry(0)
        stats = pen.statistics()
    finally:
        await pen.close()
    return {
        "latencies": latencies,
        "elapsed": elapsed,
        "issued": issued,
        "timeouts": timeouts,
        "errors": errors,
        "telemetry": samples[0],
        "stats": stats,
    }


def measure_faulty_link(
    loss: float = 0.10,
    corrupt: float = 0.0,
    duplicate: float = 0.0,
    *,
    commands: int = 3000,
    window: int = 16,
    telemetry_hz: int = 100,
    max_seconds: float = 60.0,
    command_timeout: float = 2.0,
    seed: int = 1,
) -> dict[str, Any]:
    """Host → proxy (faults) → simulated pen, each in its own process, over ptys.

    ``loss``: probability a frame is dropped, ``duplicate``: that it arrives twice (both per
    frame and per direction); ``corrupt``: probability each byte has a bit flipped. Stops after
    ``commands`` commands or ``max_seconds``, whichever comes first."""
    serve = [
        sys.executable,
        "-m",
        "micropen.tools.cli",
        "sim",
        "serve",
        "--pty",
        "--seed",
        str(seed),
    ]
    with _child(serve) as (_, pen_line):
        proxy = [
            sys.executable, "-m", "micropen.tools.proxy",
            "--pen", pen_line.split()[0], "--listen", "pty", "--seed", str(seed),
            "--drop-frames", repr(loss), "--corrupt-bytes", repr(corrupt),
            "--duplicate-frames", repr(duplicate),
        ]  # fmt: skip
        with _child(proxy) as (_, proxy_line):
            host = asyncio.run(
                _faulty_host_side(
                    proxy_line.split()[0],
                    commands,
                    window,
                    telemetry_hz,
                    max_seconds,
                    command_timeout,
                )
            )
    lat, stats = host["latencies"], host["stats"]
    ms = 1e3
    return {
        "loss": loss,
        "corrupt_bytes": corrupt,
        "duplicate": duplicate,
        "telemetry_hz": telemetry_hz,
        "window": window,
        "commands": host["issued"],
        "answered": len(lat),
        "timeouts": host["timeouts"],
        "errors": host["errors"],
        "elapsed_s": round(host["elapsed"], 3),
        "commands_per_s": round(len(lat) / host["elapsed"], 1) if host["elapsed"] else 0.0,
        "latency_p50_ms": round(statistics.median(lat) * ms, 2) if lat else None,
        "latency_p99_ms": round(_percentile(lat, 0.99) * ms, 2) if lat else None,
        "latency_max_ms": round(max(lat) * ms, 2) if lat else None,
        "retransmits": stats.get("retransmits"),
        "fast_retransmits": stats.get("fast_retransmits"),
        "rto_timeouts": stats.get("timeouts"),
        "reconnects": stats.get("reconnects"),
        "telemetry_received": host["telemetry"],
    }


def measure_sweep(
    losses: tuple[float, ...] = SWEEP_LOSSES,
    corrupt: float = 0.0,
    duplicate: float = 0.0,
    **options: Any,
) -> dict[str, Any]:
    """:func:`measure_faulty_link` at each loss rate, next to the raw pty echo floor."""
    floor = raw_echo_floor(2000)
    us = 1e6
    return {
        "floor_rtt_p50_us": round(statistics.median(floor) * us, 1),
        "floor_rtt_p99_us": round(_percentile(floor, 0.99) * us, 1),
        "sweep": [measure_faulty_link(loss, corrupt, duplicate, **options) for loss in losses],
    }


SWEEP_COLUMNS = {  # figure -> column heading (narrow enough for an 80-column terminal)
    "loss": "loss",
    "commands_per_s": "cmd/s",
    "latency_p50_ms": "p50 ms",
    "latency_p99_ms": "p99 ms",
    "latency_max_ms": "max ms",
    "timeouts": "timeouts",
    "retransmits": "resent",
    "fast_retransmits": "fast",
    "rto_timeouts": "RTOs",
}


def sweep_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a sweep for a text table (one row per loss rate)."""
    rows = []
    for point in result["sweep"]:
        row = []
        for key in SWEEP_COLUMNS:
            value = point.get(key)
            if key == "loss":
                row.append(f"{100 * value:g} %")
            elif key == "commands_per_s":
                row.append(f"{value:,.0f}")
            else:
                row.append("–" if value is None else f"{value:,}")
        rows.append(row)
    return list(SWEEP_COLUMNS.values()), rows
