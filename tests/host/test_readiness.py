"""The host's own pre-run checks, from the pen's status (issue 11: the host never looked at
battery, temperature, cartridge, latched faults or calibration before a run).

The thresholds are the spec's numbers, stated literally (pen-spec.md: refuse to start below
3.4 V; handpiece surface at most 41 °C), so a constant drifting from the spec fails here.
Each check is proven in the host's layer: the error is the host's PenNotReady, raised before
``Run`` is sent, not the pen's refusal (PenRefused).
"""

from __future__ import annotations

import pytest

from micropen.host import AsyncPen
from micropen.host.errors import PenNotReady
from micropen.host.readiness import check_can_run
from micropen.protocol.messages import (
    CartridgeState,
    FaultCode,
    PenState,
    RunMode,
    RunOutcome,
    SimParam,
    Status,
)

READY = Status(
    1, PenState.IDLE, FaultCode.NONE, 500, 90, 0, 500, 0, 0, 0, RunMode.STROKES, 0, 0,
    RunOutcome.NONE, 0, 77, CartridgeState.NEW, 0, 3700, 300, 1, 1, 1,
)  # fmt: skip


def test_a_ready_pen_passes() -> None:
    check_can_run(READY)
    check_can_run(READY.replace(cartridge_state=CartridgeState.LOCKED))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"state": PenState.FAULT, "fault": FaultCode.WATCHDOG}, r"latched fault \(watchdog\)"),
        ({"state": PenState.STOPPING}, "stopping; wait"),
        ({"calibrated": 0}, "calibrate it"),
        ({"fault": FaultCode.CALIBRATION_CORRUPT}, "calibrate it"),
        ({"battery_mv": 3399}, "3.40 V needed"),
        ({"temperature_dc": 411}, "41.0 °C limit"),
        ({"cartridge_state": CartridgeState.ABSENT}, "mount a new sterile cartridge"),
        ({"cartridge_state": CartridgeState.EXHAUSTED}, "worn out"),
        ({"cartridge_state": CartridgeState.REFUSED}, "used before, expired or unknown"),
        ({"cartridge_state": CartridgeState.RETIRED}, "retired"),
    ],
)
def test_each_reason_to_refuse_says_what_to_do(change: dict[str, object], says: str) -> None:
    with pytest.raises(PenNotReady, match=says):
        check_can_run(READY.replace(**change))


def test_the_spec_thresholds_are_exact() -> None:
    check_can_run(READY.replace(battery_mv=3400))  # 3.40 V starts
    check_can_run(READY.replace(temperature_dc=410))  # 41.0 °C starts


@pytest.mark.parametrize(
    ("setup", "says"),
    [
        ({SimParam.BATTERY_MV: 3350}, "battery"),
        ({SimParam.CARTRIDGE_REMOVE: 1}, "no cartridge"),
        ({SimParam.OVERHEAT: 150}, "handpiece"),
    ],
)
async def test_the_host_refuses_before_sending_run(setup: dict[SimParam, int], says: str) -> None:
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        for param, value in setup.items():
            await pen.sim_set(param, value)
        if SimParam.OVERHEAT in setup:  # the handpiece takes a while to heat up
            pen.transport.pen.physics.temp_c = 42.0  # type: ignore[attr-defined]
        sent = pen.counters["commands"]
        with pytest.raises(PenNotReady, match=says):
            await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=10)
        assert pen.transport.pen.run is None  # type: ignore[attr-defined]
        assert pen.counters["commands"] > sent  # it asked the pen, then refused by itself


async def test_an_uncalibrated_pen_is_refused_by_the_host() -> None:
    async with await AsyncPen.open("sim://?seed=3&calibration=blank", log=False) as pen:
        with pytest.raises(PenNotReady, match="calibrate"):
            await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", strokes=10)
