"""Pen URLs: one string chooses the transport, as pyserial's ``serial_for_url`` does.

=========================================  ============================================
``sim://?seed=7&cartridge=1``              the built-in simulator, in this process
``/dev/ttyUSB0``, ``/dev/serial/by-id/…``  a serial port (pyserial)
``serial:///dev/ttyACM0?baud=115200``      the same, with options
``socket://127.0.0.1:5000``                TCP (a ``micropen sim serve --tcp`` or a bench adapter)
``rfc2217://host:port``                    a network serial server (pyserial)
``usb://1209:0001?serial=SIM-000007``      a pen on USB (pyusb); VID:PID optional
``auto``                                   the one attached pen, else the simulator
=========================================  ============================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .errors import PenURLError

__all__ = ["SCHEMES", "PenURL", "parse_pen_url"]

SCHEMES = ("sim", "serial", "socket", "rfc2217", "usb", "auto")
_SERIAL_OPTIONS = {"baud", "timeout"}
_USB_OPTIONS = {"serial", "timeout"}
_SOCKET_OPTIONS: set[str] = set()


@dataclass(frozen=True)
class PenURL:
    """A parsed pen URL: scheme, target (path, host:port or VID:PID) and options."""

    scheme: str
    target: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""


def parse_pen_url(text: str) -> PenURL:
    """Parse and check a pen URL; unknown schemes or options raise PenURLError."""
    text = text.strip()
    if not text or text == "auto":
        return PenURL("auto", "", {}, "auto")
    if text.startswith("/") or text.startswith("COM"):
        return PenURL("serial", text, {}, text)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a bad port raises here, not later in a transport
    except ValueError as exc:  # e.g. "socket://[::1" or a port that is not a number
        raise PenURLError(f"pen URL {text!r}: {exc}; e.g. socket://127.0.0.1:5000") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise PenURLError(
            f"unknown pen URL scheme {parts.scheme!r} in {text!r}; valid: "
            f"{', '.join(s + '://' for s in SCHEMES if s != 'auto')}, a device path, or 'auto'"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "serial":
        _check_options(text, options, _SERIAL_OPTIONS)
        return PenURL(scheme, parts.path or parts.netloc, options, text)
    if scheme == "usb":
        _check_options(text, options, _USB_OPTIONS)
        return PenURL(scheme, parts.netloc, options, text)
    if scheme in ("socket", "rfc2217"):
        if not parts.netloc:
            raise PenURLError(f"{text!r} needs host:port, e.g. {scheme}://127.0.0.1:5000")
        _check_port(text, parts)
        return PenURL(scheme, parts.netloc, options, text)
    return PenURL(scheme, parts.netloc, options, text)  # sim: options checked by SimConfig


def _check_options(text: str, options: dict[str, str], valid: set[str]) -> None:
    unknown = sorted(set(options) - valid)
    if unknown:
        raise PenURLError(
            f"unknown option {unknown[0]!r} in pen URL {text!r}; valid: {', '.join(sorted(valid))}"
        )


def _check_port(text: str, parts: SplitResult) -> None:
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is None or not 1 <= port <= 65535:
        raise PenURLError(f"{text!r}: the port must be a number from 1 to 65535")
