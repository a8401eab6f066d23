"""A retired cartridge (fluid ingress, pulled out while running) never runs again.

Reproduction of the bug these tests pin: ``retire()`` used to leave the cartridge as the locked
one of its mounting, and a boot assessed "locked in this mounting" before anything else — so
after a power cycle or a brown-out the retired cartridge was LOCKED again and ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_firmware_harness import Host

from micropen.protocol import limits as L
from micropen.protocol.messages import (
    CartridgeInfo,
    CartridgeState,
    ClearFault,
    ErrorCode,
    EventCode,
    FaultCode,
    GetCartridge,
    PenState,
    Run,
    RunMode,
    SetDepth,
    SimMountCartridge,
    SimParam,
    SimSet,
)
from micropen.sim.pen import SimConfig, SimulatedPen

CHEEKS = int(L.Area.CHEEKS)


def _cartridge(host: Host) -> CartridgeInfo:
    reply = host.cmd(GetCartridge)
    assert isinstance(reply, CartridgeInfo), reply
    return reply


def _ran_then_got_wet(host: Host) -> int:
    """A run on the mounted cartridge (so it is locked in this mounting), then fluid ingress."""
    host.ready()
    host.start(CHEEKS, RunMode.STROKES, strokes=50)
    host.wait_report()
    host.run_for(0.1)
    cart = host.pen.cartridge
    assert cart is not None and _cartridge(host).state is CartridgeState.LOCKED
    host.ack(SimSet, SimParam.FLUID_INGRESS, 1)
    assert host.pen.fault is FaultCode.FLUID_INGRESS
    assert _cartridge(host).state is CartridgeState.RETIRED
    return cart.cartridge_id


def _reconnect(host: Host) -> None:
    """A new link and handshake after the pen rebooted; depth set again (RAM was lost)."""
    host.run_for(0.3)
    host.connect()
    host.hello()
    host.ack(SetDepth, 1000, 0)


def _refused_as_used(host: Host, cart_id: int) -> None:
    reply = host.nak(Run, CHEEKS, RunMode.STROKES, 5, 0)
    assert (reply.error, reply.value & 0xFFFF_FFFF) == (ErrorCode.CARTRIDGE_USED, cart_id)
    assert host.pen.physics.omega == 0.0


@pytest.mark.parametrize("reset", ["power_cycle", "brownout"])
def test_a_cartridge_retired_by_fluid_ingress_stays_retired_after_a_reset(reset: str) -> None:
    host = Host(seed=1)
    cart_id = _ran_then_got_wet(host)
    host.ack(SimSet, SimParam.FLUID_INGRESS, 0)  # dried before the reset: boots without fault
    if reset == "power_cycle":
        host.pen.power_cycle(host.now)
    else:
        host.ack(SimSet, SimParam.BROWNOUT_RESET, 10)
        host.run_for(0.05)
    assert host.pen.cartridge is not None and host.pen.cartridge.cartridge_id == cart_id
    _reconnect(host)
    host.ack(ClearFault)  # the brown-out, or nothing: the refusal must come from the cartridge
    assert host.pen.state is PenState.IDLE
    info = _cartridge(host)
    assert (info.cartridge_id, info.state) == (cart_id, CartridgeState.RETIRED)
    _refused_as_used(host, cart_id)
    assert cart_id in host.pen.nvm.cartridges.retired_ids


def test_a_retired_cartridge_is_refused_at_every_later_mount_and_boot() -> None:
    host = Host(seed=2)
    cart = host.pen.cartridge
    assert cart is not None
    tag = (cart.lot, cart.manufactured_day, cart.expiry_day)
    cart_id = _ran_then_got_wet(host)
    host.ack(SimSet, SimParam.FLUID_INGRESS, 0)
    host.ack(ClearFault)
    today = host.pen.config.today_day
    for other in (777_001, 777_002):
        host.ack(SimMountCartridge, 0, "", 0, 0)
        host.ack(SimMountCartridge, other, "L-OTHER", today - 3, today + 300)
        assert _cartridge(host).state is CartridgeState.NEW
        host.ack(SimMountCartridge, 0, "", 0, 0)
        host.ack(SimMountCartridge, cart_id, *tag)
        assert _cartridge(host).state is CartridgeState.REFUSED  # put back on: refused
        _refused_as_used(host, cart_id)
        host.pen.power_cycle(host.now)
        _reconnect(host)
        assert _cartridge(host).state is CartridgeState.REFUSED
        _refused_as_used(host, cart_id)


def test_a_cartridge_pulled_out_while_running_is_retired_in_nvm() -> None:
    host = Host(seed=3)
    host.ready()
    cart = host.pen.cartridge
    assert cart is not None
    host.start(CHEEKS, RunMode.DURATION, duration_ms=3000)
    host.run_for(0.2)
    host.pen.set_param(SimParam.CARTRIDGE_REMOVE, 1, host.now)
    assert cart.cartridge_id in host.pen.nvm.cartridges.retired_ids
    host.run_for(0.05)
    assert host.events(EventCode.CARTRIDGE_REMOVED)


def test_retirement_survives_the_state_file(tmp_path: Path) -> None:
    state = str(tmp_path / "unit.json")
    host = Host(seed=4, state=state)
    cart_id = _ran_then_got_wet(host)
    host.pen.close(host.now)
    again = Host(SimulatedPen(SimConfig(seed=4, state=state), now=0.0))
    assert again.pen.cartridge is not None and again.pen.cartridge.cartridge_id == cart_id
    assert cart_id in again.pen.nvm.cartridges.retired_ids
    again.ready()  # the fluid is gone with the old process: the pen boots clean
    assert _cartridge(again).state is CartridgeState.RETIRED
    _refused_as_used(again, cart_id)
    again.pen.close(again.now)
