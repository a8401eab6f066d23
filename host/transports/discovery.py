"""``auto``: find the one attached pen, or fall back to the built-in simulator.

Looks at USB (the pen's VID:PID) and at /dev/serial/by-id names that mention micropen. With no
pen the simulator is used and the caller is told so (``PenURL.options['notice']``); with several
the caller must choose, and the message lists the URLs to choose from.
"""

from __future__ import annotations

import glob
from typing import Any

from ..errors import TransportError
from ..url import PenURL

__all__ = ["SIM_FALLBACK_URL", "discover", "resolve_auto"]

SIM_FALLBACK_URL = "sim://"
SIM_NOTICE = "no pen attached: using the built-in SIMULATOR (sim://), not a real pen"


def _usb_urls(backend: Any) -> list[str]:
    try:
        from .usb import find_usb_pens, usb_backend

        devices = find_usb_pens(usb_backend(backend))
    except Exception:
        return []
    return [f"usb://1209:0001?serial={d.serial_number}" for d in devices]


def _serial_urls() -> list[str]:
    return sorted(p for p in glob.glob("/dev/serial/by-id/*") if "micropen" in p.lower())


def discover(usb_backend: Any = None) -> list[str]:
    """URLs of every attached pen (USB first, then serial by-id names)."""
    return _usb_urls(usb_backend) + _serial_urls()


def resolve_auto(usb_backend: Any = None, **_: Any) -> PenURL:
    from ..url import parse_pen_url

    found = discover(usb_backend)
    if len(found) > 1:
        raise TransportError(
            f"{len(found)} pens attached; choose one with --pen: " + ", ".join(found)
        )
    if found:
        return parse_pen_url(found[0])
    sim = parse_pen_url(SIM_FALLBACK_URL)
    return PenURL(sim.scheme, sim.target, {"notice": SIM_NOTICE}, sim.text)
