"""A pyusb backend that talks to simulated pens instead of libusb.

Why this exists: the host's USB transport is written against the plain pyusb
API (``usb.core.find``, ``dev.set_configuration()``, ``ep.write``/``ep.read``,
``usb.util.get_string`` ...).  To test that code without hardware and without
libusb, pass a :class:`SimUsbBackend` as ``backend=`` to ``usb.core.find``; every
pyusb call then lands here and is answered by a simulated device whose bulk
endpoints are connected to a :class:`UsbPipe` (typically the firmware
simulator).

The backend deliberately mirrors what pyusb's libusb1 backend does on Linux,
so that host code behaves identically on the simulator and on hardware:

* errors are ``usb.core.USBError`` carrying the libusb error code in
  ``backend_error_code``, the matching ``errno`` and libusb's message text;
* a transfer timeout raises ``usb.core.USBTimeoutError`` (libusb -7, ETIMEDOUT);
* a timeout of ``0`` ms means "wait forever", as in libusb (pyusb passes an
  explicit ``timeout=0`` through unchanged; ``timeout=None`` means the
  device's ``default_timeout``, 1000 ms unless changed);
* a pulled cable (:meth:`SimUsbBackend.unplug`) makes every operation on an
  existing handle fail with libusb -4 / ENODEV and the device disappears from
  enumeration;
* a control request the device does not support stalls (libusb -9 / EPIPE);
* a device whose node the user may not open (``SimUsbDeviceInfo(access_denied=True)``, a
  missing udev rule) is listed and its device descriptor read, as libusb reads those from
  sysfs, but opening it — which reading its serial number needs — fails with libusb -3 / EACCES;
* ``bulk_read`` fills the caller's ``array`` in place and returns the number of
  bytes transferred, like the real backends (pyusb then slices it).

The device model is one configuration (value 1), one vendor-specific interface
(class 0xFF, number 0, one alternate setting) and two bulk endpoints.  The
device starts *unconfigured* (configuration 0) so host code that forgets
``set_configuration()`` fails here as it would on macOS, instead of only
working because the Linux kernel happened to configure the device.
"""

from __future__ import annotations

import array
import errno
import functools
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

import usb.backend
import usb.core

__all__ = [
    "PipeFactory",
    "SimUsbBackend",
    "SimUsbDeviceInfo",
    "UsbPipe",
]

_logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class UsbPipe(Protocol):
    """Device side of a pair of bulk endpoints.

    The backend calls these from the thread that performs the pyusb transfer.
    ``close()`` may be called from another thread while ``host_read`` blocks; a
    well-behaved pipe then wakes that reader, which returns ``b""``.  (The
    backend never blocks in ``host_read`` for more than a short slice anyway, so
    a pipe that cannot be woken only delays the unplug/reset error a little.)
    Raising ``OSError`` or ``EOFError`` from a method is reported to the host as
    a libusb I/O error (``USBError`` with errno EIO).
    """

    def host_write(self, data: bytes) -> None:
        """Accept one host -> device (OUT) transfer."""
        ...

    def host_read(self, size: int, timeout_s: float) -> bytes:
        """Return up to ``size`` bytes for a device -> host (IN) transfer.

        Wait at most ``timeout_s`` seconds; return ``b""`` on timeout.
        """
        ...

    def close(self) -> None:
        """Release the pipe; called once, when the device is closed, reset or unplugged."""
        ...


PipeFactory = Callable[[], UsbPipe]
"""Creates the device side of the pipe when the host opens the device."""


# --- libusb error model ------------------------------------------------------
# Same numbers, errno values and messages as usb.backend.libusb1, so that log
# lines and `except` clauses look the same on the simulator and on hardware.
LIBUSB_ERROR_IO: Final = -1
LIBUSB_ERROR_INVALID_PARAM: Final = -2
LIBUSB_ERROR_ACCESS: Final = -3
LIBUSB_ERROR_NO_DEVICE: Final = -4
LIBUSB_ERROR_NOT_FOUND: Final = -5
LIBUSB_ERROR_BUSY: Final = -6
LIBUSB_ERROR_TIMEOUT: Final = -7
LIBUSB_ERROR_OVERFLOW: Final = -8
LIBUSB_ERROR_PIPE: Final = -9

_LIBUSB_ERRORS: Final[dict[int, tuple[str, int]]] = {
    LIBUSB_ERROR_IO: ("Input/output error", errno.EIO),
    LIBUSB_ERROR_INVALID_PARAM: ("Invalid parameter", errno.EINVAL),
    LIBUSB_ERROR_ACCESS: ("Access denied (insufficient permissions)", errno.EACCES),
    LIBUSB_ERROR_NO_DEVICE: ("No such device (it may have been disconnected)", errno.ENODEV),
    LIBUSB_ERROR_NOT_FOUND: ("Entity not found", errno.ENOENT),
    LIBUSB_ERROR_BUSY: ("Resource busy", errno.EBUSY),
    LIBUSB_ERROR_TIMEOUT: ("Operation timed out", errno.ETIMEDOUT),
    LIBUSB_ERROR_OVERFLOW: ("Overflow", errno.EOVERFLOW),
    LIBUSB_ERROR_PIPE: ("Pipe error", errno.EPIPE),
}


def _usb_error(code: int) -> usb.core.USBError:
    """Build the exception pyusb's libusb1 backend raises for ``code``."""
    message, err = _LIBUSB_ERRORS[code]
    cls = usb.core.USBTimeoutError if code == LIBUSB_ERROR_TIMEOUT else usb.core.USBError
    return cls(message, code, err)


# --- USB constants -------------------------------------------------------------
_DT_DEVICE: Final = 0x01
_DT_CONFIG: Final = 0x02
_DT_STRING: Final = 0x03
_DT_INTERFACE: Final = 0x04
_DT_ENDPOINT: Final = 0x05

_REQ_GET_STATUS: Final = 0x00
_REQ_CLEAR_FEATURE: Final = 0x01
_REQ_SET_FEATURE: Final = 0x03
_REQ_GET_DESCRIPTOR: Final = 0x06
_REQ_GET_CONFIGURATION: Final = 0x08
_REQ_SET_CONFIGURATION: Final = 0x09
_REQ_GET_INTERFACE: Final = 0x0A
_REQ_SET_INTERFACE: Final = 0x0B

_FEATURE_ENDPOINT_HALT: Final = 0x00

_RECIPIENT_DEVICE: Final = 0
_RECIPIENT_INTERFACE: Final = 1
_RECIPIENT_ENDPOINT: Final = 2

_LANGID_EN_US: Final = 0x0409
_STR_MANUFACTURER: Final = 1
_STR_PRODUCT: Final = 2
_STR_SERIAL: Final = 3

_CONFIG_VALUE: Final = 1
_INTERFACE_NUMBER: Final = 0
_INTERFACE_CLASS_VENDOR: Final = 0xFF
_EP_ATTR_BULK: Final = 0x02
_MAX_PACKET_EP0: Final = 64
_MAX_POWER_2MA: Final = 50  # 100 mA, in the descriptor's 2 mA units
_CONFIG_ATTR_BUS_POWERED: Final = 0x80
_BCD_USB: Final = 0x0200
_SPEED_FULL: Final = 2  # usb.util.SPEED_FULL
_SPEED_HIGH: Final = 3  # usb.util.SPEED_HIGH
_MAX_STRING_CHARS: Final = 126  # (255 - 2) // 2 UTF-16 code units

# Longest single wait inside one host_read call; bounds how long a blocked
# read takes to notice an unplug/reset if the pipe does not wake on close().
_READ_SLICE_S: Final = 0.25


@dataclass(frozen=True)
class SimUsbDeviceInfo:
    """Identity and descriptor values of one simulated pen.

    ``serial`` and ``address`` have no defaults because they must be unique
    among plugged devices: pyusb identifies a ``Device`` by (backend, bus,
    address), and host code identifies a pen by serial number.
    """

    serial: str
    address: int
    vid: int = 0x1209
    pid: int = 0x0001
    manufacturer: str = "micropen"
    product: str = "micropen simulated pen"
    bcd_device: int = 0x0100
    bus: int = 1
    ep_out: int = 0x01
    ep_in: int = 0x81
    max_packet: int = 64
    access_denied: bool = False  # the device node is not ours to open (no udev rule)

    def __post_init__(self) -> None:
        for name in ("vid", "pid", "bcd_device"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} must fit in 16 bits, got {value:#x}")
        if not 1 <= self.address <= 127:
            raise ValueError(f"USB address must be 1..127, got {self.address}")
        if not 0 <= self.bus <= 255:
            raise ValueError(f"bus must be 0..255, got {self.bus}")
        if not self.serial:
            raise ValueError("serial must not be empty")
        for name in ("serial", "manufacturer", "product"):
            text: str = getattr(self, name)
            if len(text.encode("utf-16-le")) // 2 > _MAX_STRING_CHARS:
                raise ValueError(f"{name} longer than a string descriptor can hold")
        if self.ep_out & 0x80 or not 1 <= self.ep_out & 0x0F <= 15 or self.ep_out & 0x70:
            raise ValueError(
                f"ep_out must be an OUT endpoint address 0x01..0x0F, got {self.ep_out:#x}"
            )
        if not self.ep_in & 0x80 or not 1 <= self.ep_in & 0x0F <= 15 or self.ep_in & 0x70:
            raise ValueError(
                f"ep_in must be an IN endpoint address 0x81..0x8F, got {self.ep_in:#x}"
            )
        if self.max_packet not in (8, 16, 32, 64, 512):
            raise ValueError(
                f"bulk max_packet must be 8/16/32/64 (full speed) or 512 (high speed), "
                f"got {self.max_packet}"
            )

    @property
    def speed(self) -> int:
        """pyusb speed code implied by the bulk packet size."""
        return _SPEED_HIGH if self.max_packet == 512 else _SPEED_FULL

    def string(self, index: int) -> str | None:
        """String descriptor ``index`` (1-based), or None if there is none."""
        return {
            _STR_MANUFACTURER: self.manufacturer,
            _STR_PRODUCT: self.product,
            _STR_SERIAL: self.serial,
        }.get(index)


# --- descriptor objects handed to pyusb ------------------------------------------
# pyusb copies named attributes off these objects (see usb/core.py _set_attr);
# the field names are the USB spec names pyusb expects.


@dataclass(frozen=True)
class _DeviceDescriptor:
    idVendor: int
    idProduct: int
    bcdDevice: int
    bus: int
    address: int
    speed: int
    bLength: int = 18
    bDescriptorType: int = _DT_DEVICE
    bcdUSB: int = _BCD_USB
    bDeviceClass: int = 0
    bDeviceSubClass: int = 0
    bDeviceProtocol: int = 0
    bMaxPacketSize0: int = _MAX_PACKET_EP0
    iManufacturer: int = _STR_MANUFACTURER
    iProduct: int = _STR_PRODUCT
    iSerialNumber: int = _STR_SERIAL
    bNumConfigurations: int = 1
    port_number: int | None = None  # no hub topology is simulated
    port_numbers: tuple[int, ...] | None = None


@dataclass(frozen=True)
class _ConfigDescriptor:
    wTotalLength: int
    bLength: int = 9
    bDescriptorType: int = _DT_CONFIG
    bNumInterfaces: int = 1
    bConfigurationValue: int = _CONFIG_VALUE
    iConfiguration: int = 0
    bmAttributes: int = _CONFIG_ATTR_BUS_POWERED
    bMaxPower: int = _MAX_POWER_2MA
    extra_descriptors: tuple[int, ...] = ()


@dataclass(frozen=True)
class _InterfaceDescriptor:
    bLength: int = 9
    bDescriptorType: int = _DT_INTERFACE
    bInterfaceNumber: int = _INTERFACE_NUMBER
    bAlternateSetting: int = 0
    bNumEndpoints: int = 2
    bInterfaceClass: int = _INTERFACE_CLASS_VENDOR
    bInterfaceSubClass: int = 0
    bInterfaceProtocol: int = 0
    iInterface: int = 0
    extra_descriptors: tuple[int, ...] = ()


@dataclass(frozen=True)
class _EndpointDescriptor:
    bEndpointAddress: int
    wMaxPacketSize: int
    bLength: int = 7
    bDescriptorType: int = _DT_ENDPOINT
    bmAttributes: int = _EP_ATTR_BULK
    bInterval: int = 0
    bRefresh: int = 0
    bSynchAddress: int = 0
    extra_descriptors: tuple[int, ...] = ()


def _endpoint_addresses(info: SimUsbDeviceInfo) -> tuple[int, int]:
    """Endpoint addresses in descriptor (logical index) order."""
    return (info.ep_out, info.ep_in)


def _raw_device_descriptor(info: SimUsbDeviceInfo) -> bytes:
    return struct.pack(
        "<BBHBBBBHHHBBBB",
        18,
        _DT_DEVICE,
        _BCD_USB,
        0,
        0,
        0,
        _MAX_PACKET_EP0,
        info.vid,
        info.pid,
        info.bcd_device,
        _STR_MANUFACTURER,
        _STR_PRODUCT,
        _STR_SERIAL,
        1,
    )


def _raw_config_descriptor(info: SimUsbDeviceInfo) -> bytes:
    """Configuration descriptor followed by its interface and endpoints."""
    endpoints = b"".join(
        struct.pack("<BBBBHB", 7, _DT_ENDPOINT, addr, _EP_ATTR_BULK, info.max_packet, 0)
        for addr in _endpoint_addresses(info)
    )
    interface = struct.pack(
        "<BBBBBBBBB", 9, _DT_INTERFACE, _INTERFACE_NUMBER, 0, 2, _INTERFACE_CLASS_VENDOR, 0, 0, 0
    )
    total = 9 + len(interface) + len(endpoints)
    header = struct.pack(
        "<BBHBBBBB",
        9,
        _DT_CONFIG,
        total,
        1,
        _CONFIG_VALUE,
        0,
        _CONFIG_ATTR_BUS_POWERED,
        _MAX_POWER_2MA,
    )
    return header + interface + endpoints


def _raw_string_descriptor(payload: bytes) -> bytes:
    return bytes((2 + len(payload), _DT_STRING)) + payload


# --- device and handle state ---------------------------------------------------


class _SimDevice:
    """pyusb's opaque "device identification object" for one plugged pen.

    A re-plug creates a new object, so stale ``usb.core.Device`` objects keep
    pointing at the dead one and keep failing with ENODEV, as with libusb.
    State here is guarded by the owning backend's lock.
    """

    def __init__(self, info: SimUsbDeviceInfo, pipe_factory: PipeFactory) -> None:
        self.info = info
        self.pipe_factory = pipe_factory
        self.connected = True
        self.configuration = 0  # unconfigured until SET_CONFIGURATION
        self.pipe: UsbPipe | None = None
        self.pipe_generation = 0  # bumped whenever the pipe is replaced or dropped
        self.handles: set[_SimHandle] = set()
        self.claims: dict[int, _SimHandle] = {}
        self.halted: set[int] = set()

    def __repr__(self) -> str:
        state = "plugged" if self.connected else "unplugged"
        return f"<_SimDevice serial={self.info.serial!r} {state}>"


class _SimHandle:
    """What ``open_device`` returns; one per pyusb ``Device`` that opened the pen."""

    def __init__(self, device: _SimDevice) -> None:
        self.device = device
        self.closed = False

    def __repr__(self) -> str:
        return f"<_SimHandle serial={self.device.info.serial!r} closed={self.closed}>"


def _call_pipe(fn: Callable[[], _T]) -> _T:
    """Run a pipe operation, reporting pipe-level I/O failures as libusb EIO."""
    try:
        return fn()
    except (OSError, EOFError) as exc:
        raise _usb_error(LIBUSB_ERROR_IO) from exc


def _close_pipe(pipe: UsbPipe) -> None:
    """Close a pipe without letting its failure escape (libusb_close never fails)."""
    try:
        pipe.close()
    except (OSError, EOFError):
        _logger.warning("simulated USB pipe failed to close", exc_info=True)


class SimUsbBackend(usb.backend.IBackend):  # type: ignore[misc]
    """pyusb backend serving simulated pens; pass it as ``usb.core.find(backend=...)``.

    Each pen is a ``(SimUsbDeviceInfo, pipe_factory)`` pair.  The pipe is
    created on the first ``open_device`` of a pen (pyusb opens lazily: on the
    first transfer, control request or string read) and shared by every
    handle open on that pen, because it stands for the pen's one set of
    endpoints.  It is closed when the last handle closes (``usb.util.
    dispose_resources`` or garbage collection of the ``Device``), recreated
    on ``reset_device`` and closed on ``unplug``.

    Thread safety: pyusb transfers may run on several threads; device state
    is guarded by one lock that is never held while waiting in ``host_read``.

    Interrupt and isochronous transfers are left to ``IBackend``'s default
    (``NotImplementedError``): the pen has no such endpoints, so pyusb never
    dispatches them.
    """

    def __init__(self, devices: Iterable[tuple[SimUsbDeviceInfo, PipeFactory]] = ()) -> None:
        self.units: list[Any] = []  # SimUsbPen objects, when make_sim_usb_backend made it
        super().__init__()
        self._lock = threading.RLock()
        self._devices: list[_SimDevice] = []
        for info, factory in devices:
            self.plug(info, factory)

    # --- simulation control -----------------------------------------------------

    def plug(self, info: SimUsbDeviceInfo, pipe_factory: PipeFactory) -> None:
        """Connect a pen: it appears in enumeration from now on."""
        with self._lock:
            for dev in self._devices:
                if dev.info.serial == info.serial:
                    raise ValueError(f"a pen with serial {info.serial!r} is already plugged")
                if (dev.info.bus, dev.info.address) == (info.bus, info.address):
                    raise ValueError(
                        f"bus {info.bus} address {info.address} is already in use "
                        f"by {dev.info.serial!r}"
                    )
            self._devices.append(_SimDevice(info, pipe_factory))

    def unplug(self, serial: str) -> None:
        """Pull the cable of the pen with ``serial``.

        It vanishes from enumeration, its pipe is closed (waking a blocked
        read), and every later operation on an existing handle raises
        ``USBError`` ENODEV (libusb -4).  Closing those handles still works.
        """
        with self._lock:
            dev = self._find_plugged(serial)
            self._devices.remove(dev)
            dev.connected = False
            self._drop_pipe(dev)

    def close(self) -> None:
        """Close every pen's pipe, e.g. at test teardown.

        Transfers on handles that are still open then fail with EIO until the
        pen is opened again (which calls its pipe factory anew).
        """
        with self._lock:
            for dev in self._devices:
                self._drop_pipe(dev)

    def _finalize_object(self) -> None:
        # Called by pyusb's AutoFinalizedObject machinery on GC / exit.
        self.close()

    def _find_plugged(self, serial: str) -> _SimDevice:
        for dev in self._devices:
            if dev.info.serial == serial:
                return dev
        raise KeyError(f"no plugged pen with serial {serial!r}")

    def _drop_pipe(self, dev: _SimDevice) -> None:
        """Close and forget ``dev``'s pipe (lock held)."""
        pipe, dev.pipe = dev.pipe, None
        dev.pipe_generation += 1
        if pipe is not None:
            _close_pipe(pipe)

    # --- enumeration and descriptors ----------------------------------------------

    def enumerate_devices(self) -> Iterator[_SimDevice]:
        """Snapshot of the plugged pens, in plug order."""
        with self._lock:
            return iter(list(self._devices))

    def get_parent(self, dev: _SimDevice) -> None:
        """No hub topology is simulated, so a pen has no parent (like a root device)."""
        return None

    def get_device_descriptor(self, dev: _SimDevice) -> _DeviceDescriptor:
        # Works on unplugged devices too: libusb caches descriptors.
        info = dev.info
        return _DeviceDescriptor(
            idVendor=info.vid,
            idProduct=info.pid,
            bcdDevice=info.bcd_device,
            bus=info.bus,
            address=info.address,
            speed=info.speed,
        )

    def get_configuration_descriptor(self, dev: _SimDevice, config: int) -> _ConfigDescriptor:
        if config != 0:
            raise _usb_error(LIBUSB_ERROR_NOT_FOUND)
        return _ConfigDescriptor(wTotalLength=len(_raw_config_descriptor(dev.info)))

    def get_interface_descriptor(
        self, dev: _SimDevice, intf: int, alt: int, config: int
    ) -> _InterfaceDescriptor:
        # IndexError (not USBError) is what ends pyusb's alternate-setting scan,
        # same as the libusb1 backend.
        self.get_configuration_descriptor(dev, config)
        if intf != 0:
            raise IndexError(f"Invalid interface index {intf}")
        if alt != 0:
            raise IndexError(f"Invalid alternate setting index {alt}")
        return _InterfaceDescriptor()

    def get_endpoint_descriptor(
        self, dev: _SimDevice, ep: int, intf: int, alt: int, config: int
    ) -> _EndpointDescriptor:
        self.get_interface_descriptor(dev, intf, alt, config)
        addresses = _endpoint_addresses(dev.info)
        if not 0 <= ep < len(addresses):
            raise IndexError(f"Invalid endpoint index {ep}")
        return _EndpointDescriptor(
            bEndpointAddress=addresses[ep], wMaxPacketSize=dev.info.max_packet
        )

    # --- handles ----------------------------------------------------------------

    def open_device(self, dev: _SimDevice) -> _SimHandle:
        with self._lock:
            if not dev.connected:
                raise _usb_error(LIBUSB_ERROR_NO_DEVICE)
            if dev.info.access_denied:
                raise _usb_error(LIBUSB_ERROR_ACCESS)
            if dev.pipe is None:
                dev.pipe = _call_pipe(dev.pipe_factory)
                dev.pipe_generation += 1
            handle = _SimHandle(dev)
            dev.handles.add(handle)
            return handle

    def close_device(self, dev_handle: _SimHandle) -> None:
        with self._lock:
            if dev_handle.closed:
                return
            dev_handle.closed = True
            dev = dev_handle.device
            dev.handles.discard(dev_handle)
            for intf in [i for i, owner in dev.claims.items() if owner is dev_handle]:
                del dev.claims[intf]
            if not dev.handles:
                self._drop_pipe(dev)

    def _live_device(self, handle: _SimHandle) -> _SimDevice:
        """The handle's device, or the libusb error for a dead handle (lock held)."""
        if handle.closed:
            raise _usb_error(LIBUSB_ERROR_INVALID_PARAM)
        dev = handle.device
        if not dev.connected:
            raise _usb_error(LIBUSB_ERROR_NO_DEVICE)
        return dev

    # --- configuration and interfaces -------------------------------------------

    def set_configuration(self, dev_handle: _SimHandle, config_value: int) -> None:
        with self._lock:
            dev = self._live_device(dev_handle)
            self._set_configuration(dev, config_value)

    def _set_configuration(self, dev: _SimDevice, config_value: int) -> None:
        if config_value not in (0, _CONFIG_VALUE):
            raise _usb_error(LIBUSB_ERROR_NOT_FOUND)
        if dev.claims:
            # Linux usbfs refuses SET_CONFIGURATION while an interface is
            # claimed (EBUSY); pyusb's set_configuration does not release them.
            raise _usb_error(LIBUSB_ERROR_BUSY)
        dev.configuration = config_value
        dev.halted.clear()

    def get_configuration(self, dev_handle: _SimHandle) -> int:
        with self._lock:
            return self._live_device(dev_handle).configuration

    def claim_interface(self, dev_handle: _SimHandle, intf: int) -> None:
        with self._lock:
            dev = self._live_device(dev_handle)
            if intf != _INTERFACE_NUMBER or dev.configuration == 0:
                raise _usb_error(LIBUSB_ERROR_NOT_FOUND)
            owner = dev.claims.get(intf)
            if owner is not None and owner is not dev_handle:
                raise _usb_error(LIBUSB_ERROR_BUSY)
            dev.claims[intf] = dev_handle

    def release_interface(self, dev_handle: _SimHandle, intf: int) -> None:
        with self._lock:
            dev = self._live_device(dev_handle)
            if dev.claims.get(intf) is not dev_handle:
                raise _usb_error(LIBUSB_ERROR_NOT_FOUND)
            del dev.claims[intf]

    def set_interface_altsetting(self, dev_handle: _SimHandle, intf: int, altsetting: int) -> None:
        with self._lock:
            dev = self._live_device(dev_handle)
            if dev.claims.get(intf) is not dev_handle or altsetting != 0:
                raise _usb_error(LIBUSB_ERROR_NOT_FOUND)
            dev.halted.clear()

    def is_kernel_driver_active(self, dev_handle: _SimHandle, intf: int) -> bool:
        """Always False, so the usual Linux detach-if-active dance is a no-op."""
        with self._lock:
            self._live_device(dev_handle)
            if intf != _INTERFACE_NUMBER:
                raise _usb_error(LIBUSB_ERROR_NOT_FOUND)
            return False

    def detach_kernel_driver(self, dev_handle: _SimHandle, intf: int) -> None:
        # libusb: NOT_FOUND "if no kernel driver was active".
        with self._lock:
            self._live_device(dev_handle)
            raise _usb_error(
                LIBUSB_ERROR_NOT_FOUND if intf == _INTERFACE_NUMBER else LIBUSB_ERROR_INVALID_PARAM
            )

    def attach_kernel_driver(self, dev_handle: _SimHandle, intf: int) -> None:
        with self._lock:
            self._live_device(dev_handle)
            raise _usb_error(
                LIBUSB_ERROR_NOT_FOUND if intf == _INTERFACE_NUMBER else LIBUSB_ERROR_INVALID_PARAM
            )

    # --- bulk transfers ------------------------------------------------------------

    def _bulk_pipe(self, handle: _SimHandle, ep: int, *, is_in: bool) -> tuple[_SimDevice, UsbPipe]:
        """Validate a bulk transfer and return the pipe to use (lock held)."""
        dev = self._live_device(handle)
        info = dev.info
        if ep not in (info.ep_in, info.ep_out) or dev.configuration == 0:
            raise _usb_error(LIBUSB_ERROR_NOT_FOUND)
        if ep != (info.ep_in if is_in else info.ep_out):
            raise _usb_error(LIBUSB_ERROR_INVALID_PARAM)
        if ep in dev.halted:
            raise _usb_error(LIBUSB_ERROR_PIPE)
        if dev.pipe is None:
            raise _usb_error(LIBUSB_ERROR_IO)
        return dev, dev.pipe

    def bulk_write(
        self, dev_handle: _SimHandle, ep: int, intf: int, data: array.array[int], timeout: int
    ) -> int:
        """Hand the whole OUT transfer to the pipe; returns bytes written.

        ``timeout`` is accepted for API parity; ``host_write`` does not block.
        """
        with self._lock:
            _, pipe = self._bulk_pipe(dev_handle, ep, is_in=False)
        payload = data.tobytes()
        _call_pipe(functools.partial(pipe.host_write, payload))
        return len(payload)

    def bulk_read(
        self, dev_handle: _SimHandle, ep: int, intf: int, buff: array.array[int], timeout: int
    ) -> int:
        """Fill ``buff`` with one IN transfer and return the byte count.

        ``timeout`` is in ms; 0 waits forever (libusb semantics).  Raises
        ``USBTimeoutError`` (libusb -7, ETIMEDOUT) when nothing arrives in
        time, ``USBError`` ENODEV if the pen is unplugged meanwhile and EIO if
        it is reset meanwhile (its pending transfers are cancelled).
        """
        if timeout < 0:
            raise _usb_error(LIBUSB_ERROR_INVALID_PARAM)
        size = len(buff) * buff.itemsize
        with self._lock:
            dev, pipe = self._bulk_pipe(dev_handle, ep, is_in=True)
            generation = dev.pipe_generation
        if size == 0:
            return 0
        deadline = None if timeout == 0 else time.monotonic() + timeout / 1000.0
        while True:
            if deadline is None:
                wait_s = _READ_SLICE_S
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _usb_error(LIBUSB_ERROR_TIMEOUT)
                wait_s = min(remaining, _READ_SLICE_S)
            data = _call_pipe(functools.partial(pipe.host_read, size, wait_s))
            if data:
                if len(data) > size:
                    # The device sent more than the host asked for.
                    raise _usb_error(LIBUSB_ERROR_OVERFLOW)
                memoryview(buff).cast("B")[: len(data)] = data
                return len(data)
            with self._lock:
                self._live_device(dev_handle)
                if dev.pipe_generation != generation:
                    raise _usb_error(LIBUSB_ERROR_IO)
                if ep in dev.halted:
                    raise _usb_error(LIBUSB_ERROR_PIPE)

    def clear_halt(self, dev_handle: _SimHandle, ep: int) -> None:
        with self._lock:
            dev = self._live_device(dev_handle)
            if ep not in (dev.info.ep_in, dev.info.ep_out):
                raise _usb_error(LIBUSB_ERROR_NOT_FOUND)
            dev.halted.discard(ep)

    def reset_device(self, dev_handle: _SimHandle) -> None:
        """Port reset: the pipe is closed and a fresh one made by the factory.

        Like libusb, the configuration and claimed interfaces survive the
        reset (libusb restores them); endpoint halts are cleared.  A read
        blocked on the old pipe fails with EIO.
        """
        with self._lock:
            dev = self._live_device(dev_handle)
            self._drop_pipe(dev)
            dev.halted.clear()
            dev.pipe = _call_pipe(dev.pipe_factory)
            dev.pipe_generation += 1

    # --- control transfers -----------------------------------------------------------

    def ctrl_transfer(
        self,
        dev_handle: _SimHandle,
        bmRequestType: int,
        bRequest: int,
        wValue: int,
        wIndex: int,
        data: array.array[int],
        timeout: int,
    ) -> int:
        """Answer standard requests on endpoint 0; everything else stalls (EPIPE).

        For IN requests the reply is written into ``data`` (truncated to its
        length, i.e. wLength) and the byte count returned, as libusb1 does;
        for OUT requests the number of data-stage bytes is returned.
        """
        with self._lock:
            dev = self._live_device(dev_handle)
            is_in = bool(bmRequestType & 0x80)
            req_type = (bmRequestType >> 5) & 0x3
            recipient = bmRequestType & 0x1F
            if req_type != 0:  # class / vendor / reserved: the pen defines none
                raise _usb_error(LIBUSB_ERROR_PIPE)
            if is_in:
                reply = self._standard_in(dev, bRequest, recipient, wValue, wIndex)
                view = memoryview(data).cast("B")
                n = min(len(reply), len(view))
                view[:n] = reply[:n]
                return n
            self._standard_out(dev, bRequest, recipient, wValue, wIndex)
            return len(data) * data.itemsize

    def _standard_in(
        self, dev: _SimDevice, request: int, recipient: int, value: int, index: int
    ) -> bytes:
        info = dev.info
        if request == _REQ_GET_DESCRIPTOR and recipient == _RECIPIENT_DEVICE:
            desc_type, desc_index = value >> 8, value & 0xFF
            if desc_type == _DT_DEVICE and desc_index == 0:
                return _raw_device_descriptor(info)
            if desc_type == _DT_CONFIG and desc_index == 0:
                return _raw_config_descriptor(info)
            if desc_type == _DT_STRING:
                if desc_index == 0:
                    return _raw_string_descriptor(struct.pack("<H", _LANGID_EN_US))
                # Like most devices, answer in our only language whatever
                # LANGID the host asks for.
                text = info.string(desc_index)
                if text is not None:
                    return _raw_string_descriptor(text.encode("utf-16-le"))
            raise _usb_error(LIBUSB_ERROR_PIPE)
        if request == _REQ_GET_STATUS:
            if recipient == _RECIPIENT_DEVICE:
                return b"\x00\x00"  # bus powered, no remote wakeup
            if recipient == _RECIPIENT_INTERFACE and self._valid_interface(dev, index):
                return b"\x00\x00"
            if recipient == _RECIPIENT_ENDPOINT and self._valid_endpoint(dev, index):
                return b"\x01\x00" if (index & 0xFF) in dev.halted else b"\x00\x00"
        if request == _REQ_GET_CONFIGURATION and recipient == _RECIPIENT_DEVICE:
            return bytes((dev.configuration,))
        if (
            request == _REQ_GET_INTERFACE
            and recipient == _RECIPIENT_INTERFACE
            and self._valid_interface(dev, index)
        ):
            return b"\x00"
        raise _usb_error(LIBUSB_ERROR_PIPE)

    def _standard_out(
        self, dev: _SimDevice, request: int, recipient: int, value: int, index: int
    ) -> None:
        if request == _REQ_SET_CONFIGURATION and recipient == _RECIPIENT_DEVICE:
            try:
                self._set_configuration(dev, value & 0xFF)
            except usb.core.USBError as exc:
                raise _usb_error(LIBUSB_ERROR_PIPE) from exc
            return
        if (
            request in (_REQ_CLEAR_FEATURE, _REQ_SET_FEATURE)
            and recipient == _RECIPIENT_ENDPOINT
            and value == _FEATURE_ENDPOINT_HALT
            and self._valid_endpoint(dev, index)
        ):
            ep = index & 0xFF
            if ep != 0:
                if request == _REQ_SET_FEATURE:
                    dev.halted.add(ep)
                else:
                    dev.halted.discard(ep)
            return
        if (
            request == _REQ_SET_INTERFACE
            and recipient == _RECIPIENT_INTERFACE
            and value == 0
            and self._valid_interface(dev, index)
        ):
            dev.halted.clear()
            return
        raise _usb_error(LIBUSB_ERROR_PIPE)

    @staticmethod
    def _valid_interface(dev: _SimDevice, index: int) -> bool:
        return dev.configuration != 0 and (index & 0xFF) == _INTERFACE_NUMBER

    @staticmethod
    def _valid_endpoint(dev: _SimDevice, index: int) -> bool:
        ep = index & 0xFF
        if ep in (0x00, 0x80):
            return True
        return dev.configuration != 0 and ep in (dev.info.ep_in, dev.info.ep_out)
