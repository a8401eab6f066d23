"""``micropen bench host-telemetry``: what one pen streaming 1 kHz telemetry costs its host.

Each pen is a simulated pen in its own process behind a pseudo-terminal (``micropen sim serve
--pty``, paired with this host), so its own CPU is not counted; the host is this process: an
``AsyncPen`` per pen with its treatment log (every sample stored, as a bench PC does), a
listener counting samples, the link's heartbeats and acknowledgements. The pens stream at rest
(IDLE), so nothing but telemetry and heartbeats crosses the line.

The figure is host CPU seconds per second of streaming, per pen (``time.process_time()`` of
this process over a wall-clock window, divided by the window and by the pens), measured twice
in the same run: with telemetry batches (the default: 8 samples a frame) and with one datagram
per sample (``batch_telemetry=False``: a host from before batches). The floor, in the same
run: a child process writes raw bytes on the same kind of pty at the byte and frame rate the
batched stream had, and this process reads them through the same transport (pyserial, the
event loop's ``add_reader``) and throws them away — the cost of the bytes alone, no protocol.

``pens_per_core`` is how many such pens one core can serve at full load (1 / CPU per pen);
the host's Python is one process on one core, so on a 2-core bench PC that leaves the other
core for the rest, and ``pens_at_half_a_core`` is the count that keeps the host's core half
idle (headroom for reconnects, calibration, the user interface).

``python -m micropen.tools.bench_host_telemetry --seconds 5 --json``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import typer

from micropen.host import AsyncPen
from micropen.host.transports import make_transport
from micropen.protocol.messages import Telemetry
from micropen.tools.bench_child import announced_child

__all__ = ["measure_floor", "measure_host_telemetry"]

WARMUP_S = 1.0

# writes ``size`` bytes ``rate`` times a second once this process writes anything to it
_WRITER_CHILD = r"""
import os, sys, time, tty
size, rate = int(sys.argv[1]), float(sys.argv[2])
master, slave = os.openpty()
tty.setraw(slave)
print(os.ttyname(slave), flush=True)
os.read(master, 1)
chunk = bytes((i % 255) + 1 for i in range(size - 1)) + b"\0"
period, due = 1.0 / rate, time.monotonic()
while True:
    os.write(master, chunk)
    due += period
    pause = due - time.monotonic()
    if pause > 0:
        time.sleep(pause)
"""


async def _stream(
    paths: list[str], hz: int, seconds: float, batches: bool, log_dir: Path, warmup: float
) -> dict[str, Any]:
    """Open every pen, stream ``hz`` for ``warmup`` + ``seconds``; the host's CPU over the
    last ``seconds``."""
    pens: list[AsyncPen] = []
    counted = [0]

    def count(item: Any) -> None:
        if type(item) is Telemetry:
            counted[0] += 1

    try:
        for n, path in enumerate(paths):
            log = log_dir / f"{'batched' if batches else 'singles'}-{n}.sqlite"
            pen = await AsyncPen.open(path, log=log, purpose="benchmark", batch_telemetry=batches)
            pen.add_listener(count)
            pens.append(pen)
        for pen in pens:
            await pen.set_telemetry(hz)
        await asyncio.sleep(warmup)
        before = [pen.statistics() for pen in pens]
        samples0, cpu0, wall0 = counted[0], time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        samples = counted[0] - samples0
        after = [pen.statistics() for pen in pens]
        for pen in pens:
            await pen.set_telemetry(0)
    finally:
        for pen in pens:
            await pen.close()

    def delta(key: str) -> int:
        return sum(a[key] - b[key] for a, b in zip(after, before, strict=True))

    frames, received = delta("frames_received"), delta("bytes_received")
    return {
        "cpu_per_pen": cpu / wall / len(paths),
        "samples_per_s_per_pen": samples / wall / len(paths),
        "frames_per_s_per_pen": frames / wall / len(paths),
        "bytes_per_s_per_pen": received / wall / len(paths),
        "bytes_per_frame": received / frames if frames else 0.0,
        "frames_sent_per_s_per_pen": delta("frames_sent") / wall / len(paths),
        "missing": sum(a["telemetry_missing"] for a in after),
        "batches": delta("telemetry_batches"),
    }


async def _read_floor(paths: list[str], seconds: float, warmup: float) -> float:
    transports = [make_transport(path) for path in paths]
    for transport in transports:
        await transport.open()
        transport.write(b"g")  # the writer starts now

    async def drain(transport: Any) -> None:
        while True:
            await transport.read()

    tasks = [asyncio.create_task(drain(t)) for t in transports]
    try:
        await asyncio.sleep(warmup)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for transport in transports:
            await transport.close()
    return cpu / wall / len(paths)


def measure_floor(
    bytes_per_frame: float, frames_per_s: float, seconds: float, pens: int, warmup: float = WARMUP_S
) -> float:
    """Host CPU seconds per second per pen to read raw bytes at that rate through a pty."""
    size = max(2, round(bytes_per_frame))
    args = [sys.executable, "-c", _WRITER_CHILD, str(size), str(frames_per_s)]
    with contextlib.ExitStack() as stack:
        paths = [stack.enter_context(announced_child(args)) for _ in range(pens)]
        return asyncio.run(_read_floor(paths, seconds, warmup))


def measure_host_telemetry(
    seconds: float = 5.0, hz: int = 1000, pens: int = 1, seed: int = 1, warmup: float = WARMUP_S
) -> dict[str, Any]:
    """Figures for docs/performance.md: host CPU per pen at ``hz``, batched and single, and
    the raw floor, all in this run."""
    serve = [sys.executable, "-m", "micropen.tools.cli", "sim", "serve", "--pty"]
    with tempfile.TemporaryDirectory(prefix="micropen-bench-") as tmp, contextlib.ExitStack() as st:
        # each pen in its own process: its CPU is not this host's
        paths = [
            st.enter_context(announced_child([*serve, "--seed", str(seed + n)]))
            for n in range(pens)
        ]
        batched = asyncio.run(_stream(paths, hz, seconds, True, Path(tmp), warmup))
        singles = asyncio.run(_stream(paths, hz, seconds, False, Path(tmp), warmup))
    floor = measure_floor(
        batched["bytes_per_frame"], batched["frames_per_s_per_pen"], seconds, pens, warmup
    )
    per_pen = batched["cpu_per_pen"]
    figures: dict[str, Any] = {"hz": hz, "seconds": seconds, "pens": pens}
    for name, run in (("batched", batched), ("singles", singles)):
        figures.update({f"{name}_{key}": value for key, value in run.items()})
    figures.update(
        floor_cpu_per_pen=floor,
        batched_over_floor=per_pen / floor if floor else float("inf"),
        singles_over_batched=singles["cpu_per_pen"] / per_pen if per_pen else float("inf"),
        pens_per_core=int(1.0 / per_pen) if per_pen else 0,
        pens_at_half_a_core=int(0.5 / per_pen) if per_pen else 0,
    )
    return figures


def main(
    seconds: float = typer.Option(5.0, min=0.5, help="measured window per mode"),
    hz: int = typer.Option(1000, min=1, max=1000, help="telemetry rate"),
    pens: int = typer.Option(1, min=1, max=32, help="simulated pens streaming at once"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    figures = measure_host_telemetry(seconds, hz, pens)
    print(json.dumps(figures, sort_keys=True) if as_json else figures)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    typer.run(main)
