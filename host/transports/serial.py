"""Serial ports through pyserial: device paths, /dev/serial/by-id names, rfc2217:// URLs.

Ports with a file descriptor (every POSIX tty, pseudo-terminals included) are read with the
event loop's ``add_reader``: no thread, no polling. Other pyserial URLs (rfc2217://) are read in
a worker thread with a short timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from typing import Any

import serial

from micropen.protocol.framing import UART_DEFAULT_BAUD

from ..errors import PenURLError, TransportError
from ..url import PenURL
from .nodelay import set_nodelay_on_port

__all__ = ["FdSerialTransport", "ThreadedSerialTransport", "make_serial_transport"]

DEFAULT_BAUD = UART_DEFAULT_BAUD


def make_serial_transport(url: PenURL) -> FdSerialTransport | ThreadedSerialTransport:
    if url.scheme == "rfc2217":
        return ThreadedSerialTransport(url, url.text.split("?")[0])
    return FdSerialTransport(url, url.target)


def _baud(url: PenURL) -> int:
    value = url.options.get("baud", str(DEFAULT_BAUD))
    if not value.isdigit() or not 300 <= int(value) <= 12_000_000:
        raise PenURLError(f"baud={value!r} in {url.text!r} must be a number from 300 to 12000000")
    return int(value)


def _open_error(port: str, exc: Exception) -> TransportError:
    code = getattr(exc, "errno", None)
    if code == errno.ENOENT:
        hint = "no such device: is the pen plugged in? list pens with `micropen pens`"
    elif code == errno.EACCES:
        hint = "permission denied: add yourself to the 'dialout' group (then log in again)"
    elif code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in str(exc):
        # pyserial's exclusive lock (flock) fails with EAGAIN wrapped in its own exception
        hint = (
            "another program holds the port — another micropen command (a running `micropen "
            "run` stops the pen on Ctrl-C in its own terminal), `micropen monitor`, or a "
            "terminal program; close it and try again"
        )
    else:
        hint = str(exc)
    return TransportError(f"cannot open {port}: {hint}")


class FdSerialTransport:
    """A tty read through the event loop."""

    is_simulated = False
    bench = None

    def __init__(self, url: PenURL, port: str) -> None:
        self._port_name = port
        self._baud = _baud(url)
        self.description = f"serial {port}"
        self._serial: serial.Serial | None = None
        self._fd = -1
        self._chunks: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        self._pending_out = bytearray()

    async def open(self) -> None:
        try:
            ser = serial.Serial(self._port_name, self._baud, timeout=0, exclusive=True)
        except (serial.SerialException, OSError) as exc:
            raise _open_error(self._port_name, exc) from exc
        self._serial = ser
        self._fd = ser.fileno()
        os.set_blocking(self._fd, False)
        self._chunks = asyncio.Queue()
        with contextlib.suppress(termios_error()):
            ser.reset_input_buffer()
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self._fail(TransportError(f"{self.description}: {exc.strerror or exc}"))
            return
        if not data:
            self._fail(TransportError(f"{self.description} was closed (device gone)"))
            return
        self._chunks.put_nowait(data)

    def _fail(self, error: BaseException) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._fd)
        self._chunks.put_nowait(error)

    async def read(self) -> bytes:
        item = await self._chunks.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def write(self, data: bytes) -> None:
        if self._fd < 0:
            raise TransportError(f"{self.description} is not open")
        if self._pending_out:
            self._pending_out += data
            return
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise TransportError(f"{self.description}: {exc.strerror or exc}") from exc
        if sent < len(data):
            self._pending_out += data[sent:]
            asyncio.get_running_loop().add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        try:
            sent = os.write(self._fd, self._pending_out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._pending_out.clear()
            asyncio.get_running_loop().remove_writer(self._fd)
            self._fail(TransportError(f"{self.description}: {exc.strerror or exc}"))
            return
        del self._pending_out[:sent]
        if not self._pending_out:
            asyncio.get_running_loop().remove_writer(self._fd)

    async def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
        self._pending_out.clear()
        self._fd = -1
        with contextlib.suppress(OSError, serial.SerialException):
            ser.close()


def termios_error() -> type[Exception]:
    try:
        import termios

        return termios.error
    except ImportError:  # pragma: no cover - Windows
        return OSError


class ThreadedSerialTransport:
    """Any other pyserial URL, read in a worker thread with a short timeout."""

    is_simulated = False
    bench = None

    def __init__(self, url: PenURL, port_url: str) -> None:
        self._url = port_url
        self._baud = _baud(url)
        self.description = f"serial {port_url}"
        self._serial: Any = None

    async def open(self) -> None:
        try:
            self._serial = await asyncio.to_thread(
                serial.serial_for_url, self._url, baudrate=self._baud, timeout=0.05
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _open_error(self._url, exc) from exc
        set_nodelay_on_port(self._serial)

    async def read(self) -> bytes:
        while True:
            ser = self._serial
            if ser is None:
                raise TransportError(f"{self.description} is not open")
            try:
                data: bytes = await asyncio.to_thread(ser.read, 4096)
            except (serial.SerialException, OSError) as exc:
                raise TransportError(f"{self.description}: {exc}") from exc
            if data:
                return data

    def write(self, data: bytes) -> None:
        if self._serial is None:
            raise TransportError(f"{self.description} is not open")
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise TransportError(f"{self.description}: {exc}") from exc

    async def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                await asyncio.to_thread(ser.close)
