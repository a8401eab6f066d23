"""Transports: bytes to and from a pen, chosen by pen URL.

Each transport is small and knows nothing of the protocol. Back ends are imported lazily, so a
missing optional library (libusb, say) is reported as a TransportError saying what to install,
never as "unknown scheme".
"""

from __future__ import annotations

from typing import Any

from ..errors import PenURLError
from ..url import PenURL, parse_pen_url
from .base import Transport

__all__ = ["Transport", "make_transport"]


def make_transport(url: str | PenURL, **options: Any) -> Transport:
    """Build (not open) the transport a pen URL names. ``auto`` is resolved by discovery."""
    parsed = parse_pen_url(url) if isinstance(url, str) else url
    if parsed.scheme == "auto":
        from .discovery import resolve_auto

        parsed = resolve_auto(**options)
    if parsed.scheme == "sim":
        from .sim import SimTransport

        return SimTransport(parsed)
    if parsed.scheme in ("serial", "rfc2217"):
        from .serial import make_serial_transport

        return make_serial_transport(parsed)
    if parsed.scheme == "socket":
        from .socket import SocketTransport

        return SocketTransport(parsed)
    if parsed.scheme == "usb":
        from .usb import UsbTransport

        return UsbTransport(parsed, backend=options.get("usb_backend"))
    raise PenURLError(f"no transport for scheme {parsed.scheme!r}")  # pragma: no cover
