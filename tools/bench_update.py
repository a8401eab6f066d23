"""``micropen bench update``: firmware-upload throughput over a pty and over USB, next to the
raw transport floor measured in the same run.

What is timed, per upload of a signed ``size``-KiB image (``FirmwareUpdate.upload()``):

* **transfer** — from the pen's first answer after its erase (the first progress callback,
  offset 0) to its answer to the last chunk (offset = size): only the pipelined ``FwChunk``
  exchange. This is the figure compared with the floor.
* **total** — the whole ``upload()`` call: status check, ``FwBegin``, the wait while the pen
  erases the update slot, the chunks, ``FwFinish`` and the wait while it verifies. The erase
  (20 ms per 4 KiB sector) and the verification (50 ms signature + 2 ms/KiB SHA-256) are the
  simulated flash's timing (``sim/flash.py``, ``sim/updater.py``), not work this machine does:
  they are reported as the waits they cause, apart from the transfer.

Each upload uses a new image (the same payload, another build number): the pen answers an
``FwBegin`` for the image it already holds verified with "verified" and nothing would be sent.
Every figure is the median over ``repeat`` runs; the runs interleave floor, pipelined upload
(``window`` chunks in flight) and lock-step upload (window 1), so drift hits all three alike.
The floor takes milliseconds, so each run measures it ``RAW_SAMPLES`` times (the median of all
is reported).

Transports:

* **pty** — the simulated pen in its own process behind a pseudo-terminal
  (``micropen sim serve --pty``), the host in this one, as ``bench link`` does.
  Floor: a child process holding a raw pty reads everything and answers one byte when it has
  ``size`` bytes; this process writes the same ``size`` bytes in pieces the size of one framed
  ``FwChunk`` (``os.write`` on the fd pyserial opened, as the host's serial transport writes).
* **usb** — the host's pyusb transport with the simulated-device backend
  (``sim/usb_backend.py``). pyusb's API runs in-process, so the pen runs in this process too
  (its pipe's stepping thread and the host's write call), sharing the GIL with the host.
  Floor: the same backend with a device whose bulk endpoints have no pen behind them — the
  OUT pipe only counts bytes and, at ``size`` bytes, queues one byte on the IN pipe; this
  process does bulk OUT writes of one framed chunk each through pyusb (``ep.write``, as
  ``UsbTransport.write``) and one bulk IN read for the answer.

The ratio is transfer throughput / floor throughput, both counting image bytes. Framing alone
caps it at 224 image bytes per framed chunk (``chunk_bytes / wire_frame_bytes``, ≈ 91 %).

A pen with link authentication takes firmware only from a paired host: both pens are paired
with a keystore in a temporary ``MICROPEN_HOME`` (the served one by ``micropen sim serve``, the
USB one in-process with an ephemeral key), never with the user's own keystore.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from micropen.tools.bench_child import announced_child

if TYPE_CHECKING:
    from micropen.host import AsyncPen

__all__ = [
    "SMP_PUBLISHED_KB_S",
    "Runs",
    "SinkPipe",
    "Upload",
    "make_images",
    "measure_pty",
    "measure_update",
    "measure_usb",
    "raw_pty",
    "raw_usb",
    "register",
    "update",
    "update_table",
    "upload_once",
    "wire_frame_bytes",
]

# Zephyr SMP/MCUmgr transfers as published, KB/s (1000 bytes): 1 (an image through MCUboot's
# serial recovery, default MTU; 4 with mtu=4096, mcu-tools/mcuboot#2640) to 13 (over BLE; UART
# through the shell ≈ 3, zephyrproject-rtos/zephyr#53559)
SMP_PUBLISHED_KB_S = (1.0, 13.0)
MAX_SIZE_KIB = 256  # the pen's update slot
WARMUP_BYTES = 4096  # one small upload per session first (imports, first-call costs)
RAW_SAMPLES = 5  # floor samples per run: a floor takes milliseconds, so a few more steady it
ACK = b"\x06"

_SINK_CHILD = r"""
import os, sys, tty
target = int(sys.argv[1])
master, slave = os.openpty()
tty.setraw(slave)
print(os.ttyname(slave), flush=True)
got = 0
while True:
    data = os.read(master, 65536)
    if not data:
        break
    got += len(data)
    while got >= target:
        got -= target
        os.write(master, b"\x06")
"""


# ------------------------------------------------------------------------------ images
def wire_frame_bytes() -> int:
    """Bytes on the wire for one full ``FwChunk`` on an authenticated link (header, message,
    the 12-byte authentication trailer, CRC, COBS, delimiters)."""
    from micropen.protocol.framing import encode_frame
    from micropen.protocol.linkauth import TRAILER_BYTES
    from micropen.protocol.messages import FW_CHUNK_BYTES, FwChunk

    message = FwChunk(1, 0, FW_CHUNK_BYTES, bytes(FW_CHUNK_BYTES)).encode()
    return len(encode_frame(0, 0, 1, 0, message + bytes(TRAILER_BYTES)))


def make_images(size: int, count: int, seed: int) -> list[bytes]:
    """``count`` signed images of exactly ``size`` bytes, accepted by a factory simulated pen
    (development key, security counter 1): one payload, a different build number each."""
    from micropen.protocol import image
    from micropen.sim.devkey import dev_private_key

    key = dev_private_key()

    def build(payload: bytes, number: int) -> bytes:
        return image.build(
            payload, version=(1, 2, 3), security_counter=1, key=key, build_number=number
        )

    overhead = len(build(b"", 0))
    if size <= overhead:
        raise ValueError(f"an image of {size} bytes cannot hold its {overhead}-byte header/TLVs")
    payload = random.Random(seed).randbytes(size - overhead)
    images = [build(payload, n + 1) for n in range(count)]
    assert all(len(i) == size for i in images)
    return images


# ------------------------------------------------------------------------------ uploads
@dataclass(frozen=True, slots=True)
class Upload:
    """One timed upload (seconds)."""

    total_s: float
    transfer_s: float
    erase_wait_s: float  # upload() called → the pen's first answer after erasing
    verify_wait_s: float  # the last chunk answered → upload() returns (FwFinish, verification)
    busy_waits: int
    resumes: int
    retransmits: int


async def upload_once(pen: AsyncPen, data: bytes, window: int) -> Upload:
    """Upload ``data`` with ``window`` chunks in flight; the split of its time."""
    from micropen.host.update import FirmwareUpdate

    marks: list[tuple[float, int]] = []
    clock = time.perf_counter

    def on_progress(sent: int, total: int) -> None:
        marks.append((clock(), sent))

    update = FirmwareUpdate(pen, data, window=window, progress=on_progress)
    retransmits = pen.statistics()["retransmits"]
    t0 = clock()
    await update.upload()
    t1 = clock()
    if not marks or marks[0][1] != 0:
        raise RuntimeError("the pen resumed an earlier upload: the transfer was not timed whole")
    start = marks[0][0]
    end = next(t for t, sent in marks if sent >= len(data))
    return Upload(
        total_s=t1 - t0,
        transfer_s=end - start,
        erase_wait_s=start - t0,
        verify_wait_s=t1 - end,
        busy_waits=update.busy_waits,
        resumes=update.resumes,
        retransmits=pen.statistics()["retransmits"] - retransmits,
    )


@dataclass
class Runs:
    """What one transport measured: floor times (s) and uploads, per window."""

    raw_s: list[float]
    uploads: dict[int, list[Upload]]


async def _session(
    url: str,
    images: Iterator[bytes],
    warmup: bytes,
    windows: tuple[int, ...],
    repeat: int,
    raw: Callable[[], float],
    **options: Any,
) -> Runs:
    from micropen.host import AsyncPen

    pen = await AsyncPen.open(url, log=False, purpose="benchmark", **options)
    runs = Runs([], {w: [] for w in windows})
    try:
        await upload_once(pen, warmup, windows[0])
        for _ in range(repeat):
            runs.raw_s += [raw() for _ in range(RAW_SAMPLES)]
            for window in windows:
                runs.uploads[window].append(await upload_once(pen, next(images), window))
    finally:
        await pen.close()
    return runs


# ------------------------------------------------------------------------------ pty
@contextlib.contextmanager
def raw_pty(total: int) -> Iterator[Callable[[list[bytes]], float]]:
    """A sink child on a raw pty; yields ``send(pieces) -> seconds`` (the pieces must add up to
    ``total`` bytes: the child answers one byte per ``total`` bytes read)."""
    import serial

    with announced_child([sys.executable, "-c", _SINK_CHILD, str(total)]) as path:
        port = serial.Serial(path, timeout=5.0, exclusive=True)
        fd = port.fileno()
        os.set_blocking(fd, True)  # the writes wait for room, the answer is read by pyserial

        def send(pieces: list[bytes]) -> float:
            t0 = time.perf_counter()
            for piece in pieces:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            if port.read(1) != ACK:
                raise RuntimeError("the raw pty sink answered something else")
            return time.perf_counter() - t0

        try:
            yield send
        finally:
            port.close()


def measure_pty(
    images: Iterator[bytes], warmup: bytes, pieces: list[bytes], windows: tuple[int, ...],
    repeat: int, seed: int, home: Path,
) -> Runs:  # fmt: skip
    """Uploads to ``micropen sim serve --pty`` in a child process, floor on a raw pty. The
    child runs with ``MICROPEN_HOME=home``: where the served pen is paired with "this host"
    (a pen with link authentication), so the user's own keystore is never touched."""
    total = sum(map(len, pieces))
    cli = [sys.executable, "-m", "micropen.tools.cli"]  # the installed `micropen`, this Python
    serve = [*cli, "sim", "serve", "--pty", "--seed", str(seed)]
    env = {**os.environ, "MICROPEN_HOME": str(home)}
    with raw_pty(total) as send, announced_child(serve, env) as path:
        options = _host_keys(home)
        session = _session(path, images, warmup, windows, repeat, lambda: send(pieces), **options)
        return asyncio.run(session)


def _host_keys(home: Path) -> dict[str, Any]:
    """``AsyncPen.open(keys=...)``: this host's keystore in ``home``, when the host has pairing
    (link authentication); nothing otherwise."""
    try:
        pairing = importlib.import_module("micropen.host.pairing")
    except ModuleNotFoundError as exc:
        if exc.name != "micropen.host.pairing":
            raise
        return {}
    return {"keys": pairing.HostKeys(home / "pairings.json")}


# ------------------------------------------------------------------------------ usb
class SinkPipe:
    """Bulk endpoints with no pen behind them (a ``UsbPipe``): OUT transfers are counted, and
    each ``total`` bytes queue one byte for the IN endpoint."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._got = 0
        self._answers = 0
        self._closed = False
        self._ready = threading.Condition()

    def host_write(self, data: bytes) -> None:
        with self._ready:
            self._got += len(data)
            while self._got >= self._total:
                self._got -= self._total
                self._answers += 1
                self._ready.notify_all()

    def host_read(self, size: int, timeout_s: float) -> bytes:
        with self._ready:
            self._ready.wait_for(lambda: self._answers or self._closed, timeout_s)
            if not self._answers:
                return b""
            self._answers -= 1
            return ACK

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()


@contextlib.contextmanager
def raw_usb(total: int) -> Iterator[Callable[[list[bytes]], float]]:
    """A raw device on the simulated USB backend; yields ``send(pieces) -> seconds``: one bulk
    OUT write per piece through pyusb, then one bulk IN read for the device's answer."""
    import usb.core
    import usb.util

    from micropen.sim.usb_backend import SimUsbBackend, SimUsbDeviceInfo

    info = SimUsbDeviceInfo(serial="RAW-FLOOR", address=1)
    backend = SimUsbBackend([(info, lambda: SinkPipe(total))])
    dev: Any = None
    try:
        dev = usb.core.find(idVendor=info.vid, idProduct=info.pid, backend=backend)
        dev.set_configuration()
        ep_out, ep_in = dev.get_active_configuration()[(0, 0)].endpoints()
        if usb.util.endpoint_direction(ep_out.bEndpointAddress) == usb.util.ENDPOINT_IN:
            ep_out, ep_in = ep_in, ep_out

        def send(pieces: list[bytes]) -> float:
            t0 = time.perf_counter()
            for piece in pieces:
                ep_out.write(piece, 1000)
            if bytes(ep_in.read(64, 1000)) != ACK:
                raise RuntimeError("the raw USB sink answered something else")
            return time.perf_counter() - t0

        yield send
    finally:
        if dev is not None:
            usb.util.dispose_resources(dev)
        backend.close()


def measure_usb(
    images: Iterator[bytes], warmup: bytes, pieces: list[bytes], windows: tuple[int, ...],
    repeat: int, seed: int, home: Path,
) -> Runs:  # fmt: skip
    """Uploads to a simulated pen on the simulated USB bus (in this process), floor on a raw
    device of the same backend."""
    from micropen.sim.pen import SimConfig
    from micropen.sim.usb_backend import SimUsbBackend
    from micropen.sim.usb_device import SimUsbPen

    unit = SimUsbPen(SimConfig(seed=seed))
    backend = SimUsbBackend([unit.device()])
    try:
        with raw_usb(sum(map(len, pieces))) as send:
            options = {"usb_backend": backend, **_pair_in_process(unit, home)}
            session = _session(
                "usb://1209:0001", images, warmup, windows, repeat, lambda: send(pieces),
                **options,
            )  # fmt: skip
            return asyncio.run(session)
    finally:
        backend.close()
        unit.close()


def _pair_in_process(unit: Any, home: Path) -> dict[str, Any]:
    """``AsyncPen.open`` options for a pen of this process. A pen with link authentication
    (pairing) takes firmware from a paired host only: pair it here, as the in-process ``sim://``
    transport does — an ephemeral key, nothing written. A pen without pairing needs nothing."""
    add_pairing = getattr(unit.pen, "add_pairing", None)
    options = _host_keys(home)
    if add_pairing is None or not options:
        return {}
    keys = options["keys"]
    key = secrets.token_bytes(32)
    with unit.lock:
        pen_id = add_pairing(keys.host_id, key, "micropen bench update", unit.clock.now())
    keys.add_ephemeral(pen_id, key)
    return options


# ------------------------------------------------------------------------------ figures
def _kib_s(size: int, seconds: float) -> float:
    return round(size / 1024 / seconds, 1)


def _figures(kind: str, size: int, runs: Runs, window: int) -> dict[str, Any]:
    median = statistics.median
    piped, lock = runs.uploads[window], runs.uploads[1]
    transfer = median([u.transfer_s for u in piped])
    raw = median(runs.raw_s)
    lockstep = median([u.transfer_s for u in lock])
    everything = [u for us in runs.uploads.values() for u in us]
    return {
        f"{kind}_upload_kib_s": _kib_s(size, transfer),
        f"{kind}_upload_total_kib_s": _kib_s(size, median([u.total_s for u in piped])),
        f"{kind}_lockstep_kib_s": _kib_s(size, lockstep),
        f"{kind}_raw_kib_s": _kib_s(size, raw),
        f"{kind}_upload_over_raw_pct": round(100 * raw / transfer, 1),
        f"{kind}_pipelining_speedup": round(lockstep / transfer, 2),
        f"{kind}_transfer_ms": round(transfer * 1000, 1),
        f"{kind}_lockstep_transfer_ms": round(lockstep * 1000, 1),
        f"{kind}_raw_ms": round(raw * 1000, 2),
        f"{kind}_erase_wait_ms": round(median([u.erase_wait_s for u in piped]) * 1000, 1),
        f"{kind}_verify_wait_ms": round(median([u.verify_wait_s for u in piped]) * 1000, 1),
        f"{kind}_busy_waits": sum(u.busy_waits for u in everything),
        f"{kind}_resumes": sum(u.resumes for u in everything),
        f"{kind}_retransmits": sum(u.retransmits for u in everything),
    }


def measure_update(
    size_kib: int = 128,
    repeat: int = 3,
    window: int | None = None,
    seed: int = 1,
) -> dict[str, Any]:
    """Figures for docs/performance.md: upload vs raw floor over a pty and over USB."""
    from micropen.host.update import DEFAULT_WINDOW
    from micropen.protocol.messages import FW_CHUNK_BYTES
    from micropen.sim.flash import ERASE_S_PER_SECTOR, SECTOR
    from micropen.sim.updater import SIGNATURE_S, VERIFY_S_PER_KIB

    window = window or DEFAULT_WINDOW
    windows = (window, 1) if window != 1 else (1,)
    size = size_kib * 1024
    frame = wire_frame_bytes()
    per_transport = repeat * len(windows)
    images = make_images(size, 2 * per_transport, seed)
    pieces = [images[0][i : i + frame] for i in range(0, size, frame)]  # the floor's bytes
    warmup = make_images(WARMUP_BYTES, 1, seed)[0]
    with tempfile.TemporaryDirectory(prefix="micropen-bench-") as home:
        args = (warmup, pieces, windows, repeat, seed, Path(home))
        pty = measure_pty(iter(images[:per_transport]), *args)
        usb = measure_usb(iter(images[per_transport:]), *args)
    figures: dict[str, Any] = {
        "size_kib": size_kib,
        "repeat": repeat,
        "window": window,
        "chunk_bytes": FW_CHUNK_BYTES,
        "wire_frame_bytes": frame,
        "framing_cap_pct": round(100 * FW_CHUNK_BYTES / frame, 1),
    }
    figures |= _figures("pty", size, pty, window)
    figures |= _figures("usb", size, usb, window)
    smp_high = SMP_PUBLISHED_KB_S[1]
    kb = 1.024  # KB per KiB: SMP figures are published in KB/s
    figures |= {
        "sim_erase_ms": round(-(-size // SECTOR) * ERASE_S_PER_SECTOR * 1000, 1),
        "sim_verify_ms": round((SIGNATURE_S + VERIFY_S_PER_KIB * size / 1024) * 1000, 1),
        "smp_published_kb_s_low": SMP_PUBLISHED_KB_S[0],
        "smp_published_kb_s_high": SMP_PUBLISHED_KB_S[1],
        "pty_total_over_smp_high": round(figures["pty_upload_total_kib_s"] * kb / smp_high, 1),
        "pty_upload_over_smp_high": round(figures["pty_upload_kib_s"] * kb / smp_high, 1),
    }
    return figures


# ------------------------------------------------------------------------------ command line
def update_table(result: dict[str, Any]) -> tuple[str, list[str], list[list[str]]]:
    """Title, header and rows of the human table: one row per transport."""
    header = [
        "", f"upload (window {result['window']})", "lock-step (window 1)", "raw floor",
        "upload/raw", "pipelining", "incl. erase+verify",
    ]  # fmt: skip
    rows = []
    for kind in ("pty", "usb"):
        rows.append([
            kind,
            f"{result[f'{kind}_upload_kib_s']:,.0f}",
            f"{result[f'{kind}_lockstep_kib_s']:,.0f}",
            f"{result[f'{kind}_raw_kib_s']:,.0f}",
            f"{result[f'{kind}_upload_over_raw_pct']:.1f} %",
            f"{result[f'{kind}_pipelining_speedup']:.2f}×",
            f"{result[f'{kind}_upload_total_kib_s']:,.0f}",
        ])  # fmt: skip
    title = (
        f"firmware upload in KiB/s, {result['size_kib']} KiB image, median of {result['repeat']}; "
        f"simulated flash: erase {result['sim_erase_ms']:.0f} ms, verify "
        f"{result['sim_verify_ms']:.0f} ms (in the last column only); Zephyr SMP published "
        f"{result['smp_published_kb_s_low']:g}–{result['smp_published_kb_s_high']:g} KB/s"
    )
    return title, header, rows


def update(
    size: int = typer.Option(128, "--size", help="image size in KiB (the pen's slot: 256)"),
    repeat: int = typer.Option(3, "--repeat", help="runs per figure (the median is reported)"),
    window: int | None = typer.Option(
        None, "--window", help="chunks in flight for the pipelined figure (default: the host's)"
    ),
    seed: int = typer.Option(1, help="seed of the image payload and the pens"),
    as_json: bool = typer.Option(False, "--json", help="one JSON line"),
) -> None:
    """Firmware upload over a pty and over USB: KiB/s vs the raw transport floor.

    Pipelined and lock-step, each next to the raw floor measured in the same run; the erase and
    verification waits (simulated flash timing) apart; Zephyr SMP's published 1–13 KB/s."""
    checks = (
        ("--size", size, 1, MAX_SIZE_KIB),
        ("--repeat", repeat, 1, 1000),
        ("--window", window, 1, 64),
    )
    for name, value, lo, hi in checks:
        if value is not None and not lo <= value <= hi:
            typer.echo(f"error: {name} {value} is outside {lo}–{hi}", err=True)
            raise typer.Exit(2)
    result = measure_update(size, repeat, window, seed)
    if as_json:
        typer.echo(json.dumps(result, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    title, header, rows = update_table(result)
    table = Table(title=title)
    for column in header:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    for kind in ("pty", "usb"):
        console.print(
            f"{kind}: transfer {result[f'{kind}_transfer_ms']:,.1f} ms, raw floor "
            f"{result[f'{kind}_raw_ms']:,.2f} ms, erase wait {result[f'{kind}_erase_wait_ms']:,.0f}"
            f" ms, verify wait {result[f'{kind}_verify_wait_ms']:,.0f} ms, "
            f"{result[f'{kind}_retransmits']} retransmits, {result[f'{kind}_resumes']} resumes"
        )
    console.print(
        f"Zephyr SMP published {result['smp_published_kb_s_low']:g}–"
        f"{result['smp_published_kb_s_high']:g} KB/s: the pty upload is "
        f"{result['pty_upload_over_smp_high']:,.0f}× the highest, "
        f"{result['pty_total_over_smp_high']:,.1f}× with the erase and verification waits"
    )


def register(group: typer.Typer) -> None:
    """How tools/bench.py adds ``micropen bench update``."""
    group.command(name="update")(update)


if __name__ == "__main__":
    typer.run(update)
