"""Clocks: the virtual one moves only when told to, the real one never runs backwards."""

from __future__ import annotations

import pytest

from micropen.protocol.errors import LocalProtocolError
from micropen.sim.clock import Clock, RealClock, VirtualClock


def test_virtual_clock_moves_only_when_told() -> None:
    clock = VirtualClock(start=5.0)
    assert clock.now() == 5.0 == clock.now()
    clock.advance(0.25)
    assert clock.now() == 5.25
    clock.advance_to(7.0)
    assert clock.now() == 7.0
    clock.advance_to(7.0)  # staying put is fine
    clock.advance(0.0)
    assert clock.now() == 7.0


@pytest.mark.parametrize("dt", [-0.001, float("nan")])
def test_virtual_clock_refuses_to_go_back(dt: float) -> None:
    clock = VirtualClock()
    with pytest.raises(LocalProtocolError, match="dt >= 0"):
        clock.advance(dt)
    clock.advance(1.0)
    with pytest.raises(LocalProtocolError, match="t >= now"):
        clock.advance_to(0.5)
    assert clock.now() == 1.0


def test_real_clock_is_monotonic() -> None:
    clock = RealClock()
    readings = [clock.now() for _ in range(1000)]
    assert readings == sorted(readings)


def test_both_are_clocks() -> None:
    assert isinstance(VirtualClock(), Clock) and isinstance(RealClock(), Clock)
