"""``auto``: find the one attached pen, or fall back to the built-in simulator.

Looks at USB (the pen's VID:PID) and at /dev/serial/by-id names that mention micropen. With no
pen the simulator is used and the caller is told so (``PenURL.options['notice']``); with several
the caller must choose, and the message lists the URLs to choose from.

A USB bus that could not be scanned (libusb missing, no permission on the device node, …) is not
an empty bus: :func:`scan` returns the reason as a one-line :class:`TransportError`, and ``auto``
refuses with it instead of falling back to the simulator — a real pen may be plugged in, and a
treatment must never land on a simulator because the pen was invisible.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass
from typing import Any

from ..errors import TransportError
from ..url import PenURL

__all__ = ["SIM_FALLBACK_URL", "Scan", "discover", "resolve_auto", "scan"]

log = logging.getLogger(__name__)

SIM_FALLBACK_URL = "sim://"
SIM_NOTICE = "no pen attached: using the built-in SIMULATOR (sim://), not a real pen"


@dataclass(frozen=True)
class Scan:
    """What discovery saw: the pens found, and why the USB scan failed (None: it worked)."""

    urls: list[str]
    usb_error: TransportError | None = None

    @property
    def complete(self) -> bool:
        """Every place a pen could be was looked at."""
        return self.usb_error is None


def _usb_urls(backend: Any) -> list[str]:
    """The USB pens' URLs; TransportError (one line, what to do) when the bus cannot be read."""
    try:
        from .usb import scan_usb_pens
    except ImportError as exc:  # pyusb itself is missing
        raise TransportError(
            f"USB scan failed: pyusb is not installed ({exc.name or exc}); `pip install pyusb`"
        ) from exc
    try:
        return scan_usb_pens(backend)
    except TransportError:
        raise
    except Exception as exc:  # a backend failing in a way pyusb does not type: still a reason
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise TransportError(f"USB scan failed: {type(exc).__name__}: {detail}") from exc


def _serial_urls() -> list[str]:
    return sorted(p for p in glob.glob("/dev/serial/by-id/*") if "micropen" in p.lower())


def scan(usb_backend: Any = None) -> Scan:
    """Every attached pen (USB first, then serial by-id names), and whether USB was readable."""
    try:
        usb = _usb_urls(usb_backend)
        error = None
    except TransportError as exc:
        usb, error = [], exc
    return Scan(usb + _serial_urls(), error)


def discover(usb_backend: Any = None) -> list[str]:
    """URLs of every attached pen (USB first, then serial by-id names). A USB bus that could
    not be scanned is logged as a warning; :func:`scan` gives the reason to show a user."""
    found = scan(usb_backend)
    if found.usb_error is not None:
        log.warning("%s", found.usb_error)
    return found.urls


def resolve_auto(usb_backend: Any = None, **_: Any) -> PenURL:
    """The one attached pen; the simulator (with a notice) only when every place was looked at
    and none was found. Refuses (TransportError, one line) when the USB scan failed."""
    from ..url import parse_pen_url

    found = scan(usb_backend)
    if found.usb_error is not None:
        also = f" (also found: {', '.join(found.urls)})" if found.urls else ""
        raise TransportError(
            f"{found.usb_error}; `auto` will not fall back to the simulator while USB pens "
            f"cannot be seen{also} — fix that, or choose with --pen URL (sim:// for the simulator)"
        )
    if len(found.urls) > 1:
        raise TransportError(
            f"{len(found.urls)} pens attached; choose one with --pen: " + ", ".join(found.urls)
        )
    if found.urls:
        return parse_pen_url(found.urls[0])
    sim = parse_pen_url(SIM_FALLBACK_URL)
    return PenURL(sim.scheme, sim.target, {"notice": SIM_NOTICE}, sim.text)
