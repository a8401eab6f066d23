"""Tests for the simulated pyusb backend, driven only through the public pyusb API.

The device side is an in-memory loopback pipe: whatever the host writes to the
OUT endpoint comes back on the IN endpoint.  Waiting is done with
threading.Condition/Event, never with sleeps.
"""

from __future__ import annotations

import array
import errno
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import usb.control
import usb.core
import usb.util

from micropen.sim.usb_backend import SimUsbBackend, SimUsbDeviceInfo, UsbPipe

VID = 0x1209
PID = 0x0001
WAIT_S = 5.0  # upper bound for thread hand-offs; only reached when a test fails


class LoopbackPipe:
    """Echoes OUT data back on IN; records how it was used."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._buffer = bytearray()
        self.closed = False
        self.close_calls = 0
        self.writes: list[bytes] = []
        self.reader_waiting = threading.Event()

    def host_write(self, data: bytes) -> None:
        with self._cond:
            if self.closed:
                raise BrokenPipeError("pipe closed")
            self.writes.append(data)
            self._buffer += data
            self._cond.notify_all()

    def host_read(self, size: int, timeout_s: float) -> bytes:
        with self._cond:
            if not self._buffer and not self.closed:
                self.reader_waiting.set()
                self._cond.wait_for(lambda: bool(self._buffer) or self.closed, timeout_s)
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self.close_calls += 1
            self._cond.notify_all()


class PipeFactory:
    """Callable pipe factory that remembers every pipe it made."""

    def __init__(self) -> None:
        self.pipes: list[LoopbackPipe] = []

    def __call__(self) -> UsbPipe:
        pipe = LoopbackPipe()
        self.pipes.append(pipe)
        return pipe

    @property
    def last(self) -> LoopbackPipe:
        assert self.pipes, "no pipe was opened"
        return self.pipes[-1]


@pytest.fixture
def factory() -> PipeFactory:
    return PipeFactory()


@pytest.fixture
def backend(factory: PipeFactory) -> Iterator[SimUsbBackend]:
    sim = SimUsbBackend([(SimUsbDeviceInfo(serial="PEN-A", address=4), factory)])
    yield sim
    sim.close()


def find_pen(backend: SimUsbBackend, serial: str = "PEN-A") -> Any:
    dev = usb.core.find(
        backend=backend,
        idVendor=VID,
        idProduct=PID,
        custom_match=lambda d: d.serial_number == serial,
    )
    assert dev is not None, f"pen {serial} not found"
    return dev


def bulk_endpoints(dev: Any) -> tuple[Any, Any]:
    """(OUT, IN) endpoints, looked up the way the host transport does."""
    intf = usb.util.find_descriptor(dev.get_active_configuration(), bInterfaceClass=0xFF)
    assert intf is not None

    def is_bulk(direction: int) -> Any:
        return lambda e: (
            usb.util.endpoint_type(e.bmAttributes) == usb.util.ENDPOINT_TYPE_BULK
            and usb.util.endpoint_direction(e.bEndpointAddress) == direction
        )

    ep_out = usb.util.find_descriptor(intf, custom_match=is_bulk(usb.util.ENDPOINT_OUT))
    ep_in = usb.util.find_descriptor(intf, custom_match=is_bulk(usb.util.ENDPOINT_IN))
    assert ep_out is not None and ep_in is not None
    return ep_out, ep_in


def open_pen(backend: SimUsbBackend, serial: str = "PEN-A") -> tuple[Any, Any, Any]:
    dev = find_pen(backend, serial)
    dev.set_configuration()
    ep_out, ep_in = bulk_endpoints(dev)
    return dev, ep_out, ep_in


# --- enumeration and descriptors ----------------------------------------------------


def test_find_by_vid_pid(backend: SimUsbBackend) -> None:
    dev = usb.core.find(backend=backend, idVendor=VID, idProduct=PID)
    assert dev is not None
    assert (dev.idVendor, dev.idProduct, dev.bcdDevice) == (VID, PID, 0x0100)
    assert (dev.bus, dev.address) == (1, 4)
    assert usb.core.find(backend=backend, idVendor=VID, idProduct=PID + 1) is None


def test_find_by_serial_with_custom_match(factory: PipeFactory) -> None:
    sim = SimUsbBackend(
        [
            (SimUsbDeviceInfo(serial="PEN-A", address=4), factory),
            (SimUsbDeviceInfo(serial="PEN-B", address=5), factory),
        ]
    )
    found = list(usb.core.find(find_all=True, backend=sim, idVendor=VID))
    assert sorted(d.serial_number for d in found) == ["PEN-A", "PEN-B"]
    dev = find_pen(sim, "PEN-B")
    assert dev.address == 5
    assert usb.core.find(backend=sim, custom_match=lambda d: d.serial_number == "nope") is None
    sim.close()


def test_strings(backend: SimUsbBackend) -> None:
    dev = find_pen(backend)
    assert dev.serial_number == "PEN-A"
    assert dev.manufacturer == "micropen"
    assert dev.product == "micropen simulated pen"
    assert dev.langids == (0x0409,)
    assert usb.util.get_string(dev, dev.iProduct) == "micropen simulated pen"
    assert usb.util.get_string(dev, 0) is None


def test_non_ascii_serial_round_trips(factory: PipeFactory) -> None:
    sim = SimUsbBackend([(SimUsbDeviceInfo(serial="Stift-Ä-µ", address=9), factory)])
    assert find_pen(sim, "Stift-Ä-µ").serial_number == "Stift-Ä-µ"
    sim.close()


def test_configuration_and_endpoints(backend: SimUsbBackend) -> None:
    dev = find_pen(backend)
    dev.set_configuration()
    cfg = dev.get_active_configuration()
    assert cfg.bConfigurationValue == 1
    assert cfg.bNumInterfaces == 1
    intfs = list(cfg)
    assert len(intfs) == 1  # exactly one alternate setting
    assert intfs[0].bInterfaceClass == 0xFF
    ep_out, ep_in = bulk_endpoints(dev)
    assert ep_out.bEndpointAddress == 0x01
    assert ep_in.bEndpointAddress == 0x81
    assert ep_out.wMaxPacketSize == ep_in.wMaxPacketSize == 64
    # Raw descriptors over endpoint 0 agree with the parsed ones.
    raw_cfg = usb.control.get_descriptor(dev, 255, usb.util.DESC_TYPE_CONFIG, 0)
    assert len(raw_cfg) == cfg.wTotalLength == 9 + 9 + 7 + 7
    raw_dev = usb.control.get_descriptor(dev, 18, usb.util.DESC_TYPE_DEVICE, 0)
    assert bytes(raw_dev[8:12]) == bytes([0x09, 0x12, 0x01, 0x00])


def test_device_starts_unconfigured(backend: SimUsbBackend) -> None:
    dev = find_pen(backend)
    with pytest.raises(usb.core.USBError):
        dev.get_active_configuration()


def test_kernel_driver_check_is_harmless(backend: SimUsbBackend) -> None:
    dev = find_pen(backend)
    assert dev.is_kernel_driver_active(0) is False


def test_invalid_device_info_rejected() -> None:
    with pytest.raises(ValueError):
        SimUsbDeviceInfo(serial="X", address=1, ep_in=0x02)
    with pytest.raises(ValueError):
        SimUsbDeviceInfo(serial="X", address=0)


def test_duplicate_serial_rejected(backend: SimUsbBackend, factory: PipeFactory) -> None:
    with pytest.raises(ValueError):
        backend.plug(SimUsbDeviceInfo(serial="PEN-A", address=7), factory)
    with pytest.raises(ValueError):
        backend.plug(SimUsbDeviceInfo(serial="PEN-Z", address=4), factory)


# --- bulk transfers -------------------------------------------------------------------


def test_echo_larger_than_max_packet(backend: SimUsbBackend, factory: PipeFactory) -> None:
    _, ep_out, ep_in = open_pen(backend)
    payload = bytes(range(256)) * 2  # 512 bytes = 8 full-speed packets
    assert ep_out.write(payload) == len(payload)
    assert factory.last.writes == [payload]
    got = ep_in.read(1024, timeout=1000)
    assert isinstance(got, array.array) and got.typecode == "B"
    assert got.tobytes() == payload


def test_read_into_buffer_returns_count(backend: SimUsbBackend) -> None:
    dev, _, _ = open_pen(backend)
    dev.write(0x01, b"hello")
    buf = usb.util.create_buffer(64)
    assert dev.read(0x81, buf, 1000) == 5
    assert buf[:5].tobytes() == b"hello"


def test_read_returns_at_most_requested(backend: SimUsbBackend) -> None:
    _, ep_out, ep_in = open_pen(backend)
    ep_out.write(b"abcdef")
    assert ep_in.read(4, 1000).tobytes() == b"abcd"
    assert ep_in.read(4, 1000).tobytes() == b"ef"


def test_read_timeout_raises_usb_timeout_error(backend: SimUsbBackend) -> None:
    _, _, ep_in = open_pen(backend)
    start = time.monotonic()
    with pytest.raises(usb.core.USBTimeoutError) as info:
        ep_in.read(64, timeout=50)
    assert time.monotonic() - start >= 0.05
    assert info.value.errno == errno.ETIMEDOUT
    assert info.value.backend_error_code == -7  # LIBUSB_ERROR_TIMEOUT
    assert isinstance(info.value, usb.core.USBError)


def test_timeout_zero_waits_for_data(backend: SimUsbBackend, factory: PipeFactory) -> None:
    """timeout=0 means 'no timeout' in libusb, not 'return at once'."""
    _, ep_out, ep_in = open_pen(backend)
    result: list[bytes] = []

    def reader() -> None:
        result.append(ep_in.read(64, timeout=0).tobytes())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert factory.last.reader_waiting.wait(WAIT_S)
    ep_out.write(b"late")
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert result == [b"late"]


def test_errors_match_libusb1_backend() -> None:
    import usb.backend.libusb1 as libusb1

    from micropen.sim import usb_backend

    assert usb_backend.LIBUSB_ERROR_TIMEOUT == libusb1.LIBUSB_ERROR_TIMEOUT
    assert usb_backend.LIBUSB_ERROR_NO_DEVICE == libusb1.LIBUSB_ERROR_NO_DEVICE
    assert usb_backend.LIBUSB_ERROR_PIPE == libusb1.LIBUSB_ERROR_PIPE
    for code in (libusb1.LIBUSB_ERROR_TIMEOUT, libusb1.LIBUSB_ERROR_NO_DEVICE):
        exc = usb_backend._usb_error(code)
        assert exc.errno == libusb1._libusb_errno[code]
        assert exc.strerror == libusb1._str_error_map[code]


def test_vendor_control_request_stalls(backend: SimUsbBackend) -> None:
    dev = find_pen(backend)
    with pytest.raises(usb.core.USBError) as info:
        dev.ctrl_transfer(0xC0, 0x42, 0, 0, 8)
    assert info.value.errno == errno.EPIPE


def test_endpoint_halt_and_clear(backend: SimUsbBackend) -> None:
    dev, ep_out, _ = open_pen(backend)
    usb.control.set_feature(dev, usb.control.ENDPOINT_HALT, ep_out)
    assert usb.control.get_status(dev, ep_out) == 1
    with pytest.raises(usb.core.USBError) as info:
        ep_out.write(b"x")
    assert info.value.errno == errno.EPIPE
    ep_out.clear_halt()
    assert usb.control.get_status(dev, ep_out) == 0
    assert ep_out.write(b"x") == 1


def test_set_configuration_while_claimed_is_busy(backend: SimUsbBackend) -> None:
    dev, ep_out, _ = open_pen(backend)
    ep_out.write(b"claims interface 0")
    with pytest.raises(usb.core.USBError) as info:
        dev.set_configuration()
    assert info.value.errno == errno.EBUSY
    usb.util.dispose_resources(dev)
    dev.set_configuration()  # fine once released


def test_pipe_error_becomes_eio(backend: SimUsbBackend, factory: PipeFactory) -> None:
    _, ep_out, _ = open_pen(backend)
    factory.last.close()  # device side died on its own
    with pytest.raises(usb.core.USBError) as info:
        ep_out.write(b"x")
    assert info.value.errno == errno.EIO
    assert isinstance(info.value.__cause__, BrokenPipeError)


# --- unplug / plug -----------------------------------------------------------------------


def test_unplug_gives_enodev_and_hides_device(backend: SimUsbBackend, factory: PipeFactory) -> None:
    _, ep_out, ep_in = open_pen(backend)
    pipe = factory.last
    backend.unplug("PEN-A")
    assert pipe.closed
    with pytest.raises(usb.core.USBError) as info:
        ep_out.write(b"x")
    assert info.value.errno == errno.ENODEV
    assert info.value.backend_error_code == -4  # LIBUSB_ERROR_NO_DEVICE
    with pytest.raises(usb.core.USBError) as info:
        ep_in.read(64, timeout=1000)
    assert not isinstance(info.value, usb.core.USBTimeoutError)
    assert info.value.errno == errno.ENODEV
    assert usb.core.find(backend=backend, idVendor=VID) is None
    with pytest.raises(KeyError):
        backend.unplug("PEN-A")


def test_unplug_wakes_blocked_read(backend: SimUsbBackend, factory: PipeFactory) -> None:
    _, _, ep_in = open_pen(backend)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            ep_in.read(64, timeout=0)
        except usb.core.USBError as exc:
            errors.append(exc)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert factory.last.reader_waiting.wait(WAIT_S)
    backend.unplug("PEN-A")
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], usb.core.USBError)
    assert errors[0].errno == errno.ENODEV


def test_replug_makes_a_new_device(backend: SimUsbBackend, factory: PipeFactory) -> None:
    old_dev, old_out, _ = open_pen(backend)
    backend.unplug("PEN-A")
    backend.plug(SimUsbDeviceInfo(serial="PEN-A", address=6), factory)
    new_dev, new_out, new_in = open_pen(backend)
    assert new_dev.address == 6
    new_out.write(b"again")
    assert new_in.read(64, 1000).tobytes() == b"again"
    with pytest.raises(usb.core.USBError) as info:
        old_out.write(b"x")
    assert info.value.errno == errno.ENODEV
    usb.util.dispose_resources(old_dev)  # closing a dead handle still works


# --- lifecycle ---------------------------------------------------------------------------


def test_pipe_opened_lazily_and_closed_on_dispose(
    backend: SimUsbBackend, factory: PipeFactory
) -> None:
    dev = usb.core.find(backend=backend, idVendor=VID)
    assert factory.pipes == []  # enumeration alone does not open the device
    dev.set_configuration()
    assert len(factory.pipes) == 1
    pipe = factory.last
    usb.util.dispose_resources(dev)
    assert pipe.closed and pipe.close_calls == 1
    # The Device object stays usable: the next transfer opens a fresh pipe.
    dev.write(0x01, b"x")
    assert len(factory.pipes) == 2
    assert dev.read(0x81, 8, 1000).tobytes() == b"x"
    usb.util.dispose_resources(dev)
    assert factory.last.close_calls == 1


def test_handles_share_the_pipe(backend: SimUsbBackend, factory: PipeFactory) -> None:
    dev1, ep_out, _ = open_pen(backend)
    dev2 = find_pen(backend)  # a second Device object for the same pen (e.g. a rescan)
    assert dev2.serial_number == "PEN-A"
    assert len(factory.pipes) == 1
    usb.util.dispose_resources(dev2)
    assert not factory.last.closed  # dev1 still has it open
    ep_out.write(b"still here")
    usb.util.dispose_resources(dev1)
    assert factory.last.closed


def test_reset_device_recreates_pipe(backend: SimUsbBackend, factory: PipeFactory) -> None:
    dev, ep_out, _ = open_pen(backend)
    ep_out.write(b"stale data that a reset must drop")
    first = factory.last
    dev.reset()
    assert first.closed and first.close_calls == 1
    assert len(factory.pipes) >= 2
    # After the reset the host can talk again, and sees no stale data.
    dev.set_configuration()
    ep_out, ep_in = bulk_endpoints(dev)
    ep_out.write(b"fresh")
    assert ep_in.read(64, 1000).tobytes() == b"fresh"
    assert all(p.close_calls == 1 for p in factory.pipes[:-1])


def test_backend_reset_swaps_pipe_for_open_handle(
    backend: SimUsbBackend, factory: PipeFactory
) -> None:
    dev, ep_out, ep_in = open_pen(backend)
    ep_out.write(b"old")
    first = factory.last
    backend.reset_device(dev._ctx.handle)  # what Device.reset() calls
    assert first.closed
    assert factory.last is not first
    ep_out.write(b"new")
    assert ep_in.read(64, 1000).tobytes() == b"new"
