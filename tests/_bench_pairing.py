"""What ``micropen sim serve`` does for a pen it serves, for tests that serve pens themselves:
the bench pairs its own simulated pen with this user's host keystore ($MICROPEN_HOME, which
tests/conftest.py gives each test of its own)."""

from __future__ import annotations

import secrets
from typing import Any

from micropen.host.pairing import HostKeys
from micropen.sim.pen import SimConfig, SimulatedPen

__all__ = ["pair_with_this_host", "paired_usb_backend"]


def pair_with_this_host(pen: SimulatedPen, now: float, keys: HostKeys | None = None) -> None:
    keys = HostKeys() if keys is None else keys
    key = secrets.token_bytes(32)
    pen_id = pen.add_pairing(keys.settle_host_id(), key, "test bench", now)
    keys.add(pen_id, key, pen.identity.serial, pen.identity.model)


def paired_usb_backend(configs: list[SimConfig]) -> Any:
    """Simulated USB pens (pyusb backend), each paired with this test's host keystore."""
    from micropen.sim.usb_device import make_sim_usb_backend

    backend = make_sim_usb_backend(configs)
    for unit in backend.units:
        with unit.lock:
            pair_with_this_host(unit.pen, unit.clock.now())
    return backend
