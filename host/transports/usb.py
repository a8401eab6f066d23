"""A pen on USB through pyusb: one vendor interface with a bulk OUT and a bulk IN endpoint.

Reads run in a worker thread with a short timeout (pyusb is blocking). Errors are translated
into one-line TransportError messages that say what to do: install libusb, add a udev rule,
close the other program. :func:`scan_usb_pens` is discovery's USB half: the URL of every pen
on the bus, or a TransportError saying why the bus could not be scanned.
"""

from __future__ import annotations

import asyncio
import errno
from typing import Any

import usb.core
import usb.util

from ..errors import PenURLError, TransportError
from ..url import PenURL

__all__ = [
    "PEN_PID",
    "PEN_VID",
    "UDEV_RULE",
    "UsbTransport",
    "find_usb_pens",
    "scan_usb_pens",
    "usb_backend",
]

PEN_VID = 0x1209  # pid.codes
PEN_PID = 0x0001  # pid.codes test PID until a production PID is allocated
READ_TIMEOUT_MS = 50
UDEV_RULE = (
    f'SUBSYSTEM=="usb", ATTR{{idVendor}}=="{PEN_VID:04x}", ATTR{{idProduct}}=="{PEN_PID:04x}", '
    'MODE="0660", GROUP="plugdev"'
)
UDEV_FIX = (
    f"install the udev rule: echo '{UDEV_RULE}' | sudo tee /etc/udev/rules.d/70-micropen.rules"
    " && sudo udevadm control --reload, then replug the pen (and be in group plugdev)"
)
LIBUSB_FIX = "`pip install libusb-package` or `apt-get install libusb-1.0-0`"


def usb_backend(backend: Any = None) -> Any:
    """The pyusb backend to use: the one given, libusb from libusb-package, or the system's."""
    if backend is not None:
        return backend
    try:
        import libusb_package

        found = libusb_package.get_libusb1_backend()
        if found is not None:
            return found
    except ImportError:
        pass
    import usb.backend.libusb1

    found = usb.backend.libusb1.get_backend()
    if found is None:
        raise TransportError(f"libusb not found: {LIBUSB_FIX}")
    return found


def _parse_ids(url: PenURL) -> tuple[int, int]:
    if not url.target:
        return PEN_VID, PEN_PID
    vid, _, pid = url.target.partition(":")
    try:
        return int(vid, 16), int(pid or f"{PEN_PID:04x}", 16)
    except ValueError:
        raise PenURLError(
            f"{url.text!r}: expected usb://VID:PID in hex, e.g. usb://{PEN_VID:04x}:{PEN_PID:04x}"
        ) from None


def find_usb_pens(backend: Any = None, vid: int = PEN_VID, pid: int = PEN_PID) -> list[Any]:
    """Every attached pen (pyusb Device objects)."""
    return list(usb.core.find(find_all=True, idVendor=vid, idProduct=pid, backend=backend) or [])


def scan_usb_pens(backend: Any = None, vid: int = PEN_VID, pid: int = PEN_PID) -> list[str]:
    """``usb://`` URLs of every pen on the bus (with its serial number).

    A bus that cannot be scanned raises TransportError with one line saying why and what to do
    ("USB scan failed: libusb not found; …", "… permission denied on /dev/bus/usb/001/004 …"):
    an unreadable bus is not an empty one."""
    try:
        devices = find_usb_pens(usb_backend(backend), vid, pid)
    except TransportError as exc:
        raise TransportError(f"USB scan failed: {exc}") from exc
    except usb.core.NoBackendError as exc:
        raise TransportError(f"USB scan failed: libusb not found: {LIBUSB_FIX}") from exc
    except usb.core.USBError as exc:
        raise _usb_error("USB scan failed: cannot list the USB devices", exc) from exc
    urls = []
    for dev in devices:
        where = f"/dev/bus/usb/{int(dev.bus or 0):03d}/{int(dev.address or 0):03d}"
        ids = f"{int(dev.idVendor):04x}:{int(dev.idProduct):04x}"
        try:
            if dev.iSerialNumber:
                usb.util.get_langids(dev)  # raises with the real errno (a bare read hides it)
            serial = dev.serial_number
        except usb.core.USBError as exc:
            action = f"USB scan failed: cannot read the pen at {where} ({ids})"
            raise _usb_error(action, exc) from exc
        except ValueError as exc:  # pyusb: "the device has no langid (permission issue, …)"
            raise TransportError(
                f"USB scan failed: cannot read the serial number of the pen at {where} ({ids}) "
                f"— permission denied or the device does not answer; {UDEV_FIX}"
            ) from exc
        urls.append(f"usb://{ids}?serial={serial}" if serial else f"usb://{ids}")
    return urls


def _usb_error(action: str, exc: usb.core.USBError) -> TransportError:
    if exc.errno == errno.EACCES:
        return TransportError(f"{action}: permission denied; {UDEV_FIX}")
    if exc.errno == errno.EBUSY:
        return TransportError(f"{action}: the pen is busy (another program has claimed it)")
    if exc.errno == errno.ENODEV:
        return TransportError(f"{action}: the pen was unplugged")
    return TransportError(f"{action}: {exc}")


class UsbTransport:
    """Bulk transfers to the pen's vendor interface."""

    is_simulated = False
    bench = None

    def __init__(self, url: PenURL, *, backend: Any = None) -> None:
        self._vid, self._pid = _parse_ids(url)
        self._serial_wanted = url.options.get("serial")
        self._backend_arg = backend
        self.description = f"USB {self._vid:04x}:{self._pid:04x}" + (
            f" serial {self._serial_wanted}" if self._serial_wanted else ""
        )
        self._dev: Any = None
        self._ep_in: Any = None
        self._ep_out: Any = None

    async def open(self) -> None:
        await asyncio.to_thread(self._open_blocking)

    def _open_blocking(self) -> None:
        backend = usb_backend(self._backend_arg)
        try:
            devices = find_usb_pens(backend, self._vid, self._pid)
            if self._serial_wanted:
                devices = [d for d in devices if d.serial_number == self._serial_wanted]
        except usb.core.USBError as exc:
            raise _usb_error(f"cannot list {self.description}", exc) from exc
        if not devices:
            raise TransportError(f"no pen found at {self.description}; is it plugged in?")
        if len(devices) > 1:
            serials = ", ".join(str(d.serial_number) for d in devices)
            raise TransportError(
                f"{len(devices)} pens on USB ({serials}); choose one with usb://?serial=SERIAL"
            )
        dev = devices[0]
        try:
            dev.set_configuration()
            intf = dev.get_active_configuration()[(0, 0)]
            self._ep_out = usb.util.find_descriptor(intf, custom_match=_direction(False))
            self._ep_in = usb.util.find_descriptor(intf, custom_match=_direction(True))
        except usb.core.USBError as exc:
            raise _usb_error(f"cannot open {self.description}", exc) from exc
        if self._ep_in is None or self._ep_out is None:
            raise TransportError(f"{self.description} has no bulk IN/OUT endpoints: not a pen?")
        self._dev = dev
        self.description = f"USB {self._vid:04x}:{self._pid:04x} serial {dev.serial_number}"

    async def read(self) -> bytes:
        while True:
            ep = self._ep_in
            if ep is None:
                raise TransportError(f"{self.description} is not open")
            data = await asyncio.to_thread(self._read_blocking, ep)
            if data:
                return data

    def _read_blocking(self, ep: Any) -> bytes:
        try:
            return bytes(ep.read(4096, READ_TIMEOUT_MS))
        except usb.core.USBTimeoutError:
            return b""
        except usb.core.USBError as exc:
            raise _usb_error(f"reading {self.description}", exc) from exc

    def write(self, data: bytes) -> None:
        if self._ep_out is None:
            raise TransportError(f"{self.description} is not open")
        try:
            self._ep_out.write(data, 1000)
        except usb.core.USBError as exc:
            raise _usb_error(f"writing {self.description}", exc) from exc

    async def close(self) -> None:
        dev, self._dev, self._ep_in, self._ep_out = self._dev, None, None, None
        if dev is not None:
            await asyncio.to_thread(usb.util.dispose_resources, dev)


def _direction(inbound: bool) -> Any:
    wanted = usb.util.ENDPOINT_IN if inbound else usb.util.ENDPOINT_OUT

    def match(ep: Any) -> bool:
        return bool(usb.util.endpoint_direction(ep.bEndpointAddress) == wanted)

    return match
