"""Simulated pens on the simulated USB bus, driven through the plain pyusb API."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import usb.core
import usb.util
from _bench_pairing import pair_with_this_host
from _pen_host import PenHost, handshake

from micropen.protocol import limits as L
from micropen.protocol.messages import Ack, SetTelemetry, Telemetry
from micropen.sim.pen import SimConfig
from micropen.sim.usb_backend import SimUsbBackend
from micropen.sim.usb_device import SimPenPipe, SimUsbPen, make_sim_usb_backend

VID, PID = 0x1209, 0x0001
READ_TIMEOUT_MS = 20


class UsbPort:
    """The two bulk endpoints, shaped like the bit of pyserial PenHost uses."""

    in_waiting = 0

    def __init__(self, dev: Any) -> None:
        dev.set_configuration()
        intf = dev.get_active_configuration()[(0, 0)]
        self._out = usb.util.find_descriptor(intf, custom_match=_direction(usb.util.ENDPOINT_OUT))
        self._in = usb.util.find_descriptor(intf, custom_match=_direction(usb.util.ENDPOINT_IN))

    def write(self, data: bytes) -> None:
        if data:
            self._out.write(data)

    def read(self, size: int) -> bytes:
        try:
            return bytes(self._in.read(max(size, 512), timeout=READ_TIMEOUT_MS))
        except usb.core.USBTimeoutError:
            return b""


def _direction(direction: int) -> Any:
    return lambda ep: usb.util.endpoint_direction(ep.bEndpointAddress) == direction


def _pipe_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sim-usb-pen-")]


@pytest.fixture
def backend() -> Iterator[SimUsbBackend]:
    backend = make_sim_usb_backend([SimConfig(seed=21), SimConfig(seed=22)])
    try:
        yield backend
    finally:
        backend.close()
    assert not _pipe_threads(), "a pipe's stepping thread outlived the backend"


def _find(backend: SimUsbBackend) -> list[Any]:
    return list(usb.core.find(find_all=True, backend=backend, idVendor=VID, idProduct=PID))


def test_pyusb_finds_each_pen_by_its_serial(backend: SimUsbBackend) -> None:
    devices = _find(backend)
    assert sorted(d.serial_number for d in devices) == ["SIM-000021", "SIM-000022"]
    dev = usb.core.find(backend=backend, idVendor=VID, idProduct=PID, serial_number="SIM-000022")
    assert dev is not None
    identity = handshake(UsbPort(dev))
    assert identity.serial == "SIM-000022"
    assert identity.needle_count == L.NEEDLE_COUNT
    usb.util.dispose_resources(dev)


def test_reopen_finds_the_same_running_pen(backend: SimUsbBackend) -> None:
    dev = _find(backend)[0]
    first = handshake(UsbPort(dev))
    usb.util.dispose_resources(dev)  # closes the device: its pipe and thread go away
    assert not _pipe_threads()
    second = handshake(UsbPort(dev))
    assert second.boot_id == first.boot_id  # the pen has a battery: no reboot on reopen
    usb.util.dispose_resources(dev)


def test_unplug_stops_the_pipe_and_fails_transfers(backend: SimUsbBackend) -> None:
    dev = _find(backend)[0]
    port = UsbPort(dev)
    handshake(port)
    assert len(_pipe_threads()) == 1
    backend.unplug(dev.serial_number)
    assert not _pipe_threads()
    with pytest.raises(usb.core.USBError) as info:
        port.write(b"\0")
    assert info.value.backend_error_code == -4  # LIBUSB_ERROR_NO_DEVICE
    usb.util.dispose_resources(dev)


# ---------------------------------------------------------------- the pipe on its own
@pytest.fixture
def pipe() -> Iterator[SimPenPipe]:
    unit = SimUsbPen(SimConfig(seed=23))
    pair_with_this_host(unit.pen, unit.clock.now())
    pipe = unit.open_pipe()
    try:
        yield pipe
    finally:
        pipe.close()


class PipePort:
    in_waiting = 0

    def __init__(self, pipe: SimPenPipe) -> None:
        self.pipe = pipe

    def write(self, data: bytes) -> None:
        if data:
            self.pipe.host_write(data)

    def read(self, size: int) -> bytes:
        return self.pipe.host_read(max(size, 512), READ_TIMEOUT_MS / 1000)


def test_pen_keeps_running_while_the_host_does_not_read(pipe: SimPenPipe) -> None:
    """Telemetry piles up in the pipe with nobody calling host_read: the pipe's own thread
    steps the pen at its deadlines."""
    host = PenHost(PipePort(pipe))
    host.connect()
    host.hello()
    assert isinstance(host.request(lambda c: SetTelemetry(cmd_id=c, rate_hz=200)), Ack)
    start = time.monotonic()
    host.wait_for(lambda: any(isinstance(m, Telemetry) for m in host.inbox), "telemetry")
    queued_before = pipe.pending
    threading.Event().wait(0.2)  # the host is busy elsewhere: no reads
    assert pipe.pending > queued_before, "nothing stepped the pen while the host was away"
    host.inbox.clear()
    host.wait_for(lambda: len(host.inbox) >= 10, "the queued telemetry")
    samples = [m.t_ms for m in host.inbox if isinstance(m, Telemetry)]
    assert samples == sorted(samples) and samples[-1] - samples[0] >= 40
    assert time.monotonic() - start < 3.0


def test_host_read_times_out_empty(pipe: SimPenPipe) -> None:
    start = time.monotonic()
    assert pipe.host_read(64, 0.05) == b""
    assert 0.04 <= time.monotonic() - start < 1.0


def test_close_wakes_a_blocked_reader_and_joins_the_thread(pipe: SimPenPipe) -> None:
    results: list[bytes] = []
    reader = threading.Thread(target=lambda: results.append(pipe.host_read(64, 10.0)))
    reader.start()
    started = time.monotonic()
    pipe.close()
    reader.join(2.0)
    assert not reader.is_alive() and results == [b""]
    assert time.monotonic() - started < 1.0
    assert not _pipe_threads()
    with pytest.raises(EOFError):
        pipe.host_write(b"\0")
