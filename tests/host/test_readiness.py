"""The host's own pre-run checks, from the pen's status (issue 11: the host never looked at
battery, temperature, cartridge, latched faults or calibration before a run).

The thresholds are the spec's numbers, stated literally (pen-spec.md: refuse to start below
3.4 V; handpiece surface at most 41 °C), so a constant drifting from the spec fails here.
Each check is proven in the host's layer: the error is the host's PenNotReady, raised before
``Run`` is sent, not the pen's refusal (PenRefused).
"""

from __future__ import annotations

import asyncio

import pytest

from micropen.host import AsyncPen
from micropen.host.errors import PenNotReady, RateDrift
from micropen.host.ratewatch import RateWatch
from micropen.host.readiness import check_can_run, check_retraction
from micropen.protocol.messages import (
    CartridgeState,
    EventCode,
    FaultCode,
    PenState,
    RunMode,
    RunOutcome,
    SimParam,
    Status,
    Telemetry,
)

RETRACTED = EventCode.RETRACTED
READY = Status(
    1, PenState.IDLE, FaultCode.NONE, 500, 90, 0, 500, 0, 0, 0, RunMode.STROKES, 0, 0,
    RunOutcome.NONE, 0, 77, CartridgeState.NEW, 0, 3700, 300, 1, 1, 1, 0,
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


def test_a_retraction_over_50_ms_is_not_trusted_with_another_run() -> None:
    check_retraction(None)
    check_retraction(50)  # the spec's limit: home within 50 ms
    with pytest.raises(PenNotReady, match=r"took 51 ms to retract .*limit 50 ms.*serviced"):
        check_retraction(51)


async def test_the_host_refuses_a_run_after_a_slow_retraction_the_pen_let_pass() -> None:
    """The pen latches RETRACT_SLOW and lets it be cleared once the needles are home; the host
    remembers the slow retraction it saw and refuses the next run on its own."""
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        home = asyncio.Event()
        pen.add_listener(lambda m: home.set() if getattr(m, "code", None) == RETRACTED else None)
        await pen.sim_set(SimParam.ACTUATOR_SPEED_PCT, 40)  # 1.5 mm home at 24 mm/s: 62 ms
        await pen.run(depth_mm=1.5, rate_sps=110, area="cheeks", strokes=30)
        async with asyncio.timeout(1.0):
            await home.wait()
        assert (await pen.status()).fault is FaultCode.RETRACT_SLOW  # the pen's own check
        await pen.clear_fault()
        await pen.sim_set(SimParam.ACTUATOR_SPEED_PCT, 100)
        assert pen.runs.slowest_retract_ms is not None and pen.runs.slowest_retract_ms > 50
        sent = pen.counters["commands"]
        with pytest.raises(PenNotReady, match="to retract"):
            await pen.start_run(area="cheeks", strokes=10)
        assert pen.counters["commands"] - sent == 1  # one status; no Run was sent


# ------------------------------------------------------------------ hazard 6, the host's check
def _sample(t_ms: int, rate_sps: float, state: PenState = PenState.RUNNING) -> Telemetry:
    return Telemetry(t_ms, state, 500, round(rate_sps * 100), 0, 400, 300, 3700, 77, 0)


def test_the_host_sees_drift_beyond_5_percent_held_100_ms() -> None:
    watch = RateWatch(90)
    assert watch.sample(_sample(0, 10)) is None  # spinning up: not judged for 250 ms
    assert watch.sample(_sample(240, 10)) is None
    assert watch.sample(_sample(260, 90 * 1.049)) is None  # within ±5 %
    assert watch.sample(_sample(300, 90 * 1.051)) is None  # off, not yet for 100 ms
    drift = watch.sample(_sample(400, 90 * 1.051))
    assert drift is not None and "+5.1 % off the 90/s set (limit ±5 %)" in str(drift)


def test_a_sample_back_in_tolerance_resets_the_hold() -> None:
    watch = RateWatch(110)
    for t_ms, rate in ((0, 110), (300, 104.0), (380, 110), (420, 104.0), (500, 104.0)):
        assert watch.sample(_sample(t_ms, rate)) is None
    assert watch.sample(_sample(520, 104.0)) is not None  # 100 ms off since 420


async def test_the_host_stops_a_drifting_run_even_if_the_pen_does_not() -> None:
    """The host's control alone: the pen's own rate check is removed from this simulator, so
    only the host can stop the run."""
    async with await AsyncPen.open("sim://?seed=3", log=False) as pen:
        firmware = pen.transport.pen.firmware  # type: ignore[attr-defined]
        firmware._monitor_rate = lambda t: None  # the pen's own control, removed
        await pen.sim_set(SimParam.SPEED_GAIN_ERROR_PPM, 80_000)
        with pytest.raises(RateDrift, match=r"\+8\.\d % off the 90/s set") as stopped:
            await pen.run(depth_mm=0.5, rate_sps=90, area="forehead", seconds=5)
        assert stopped.value.report.outcome is RunOutcome.STOPPED
        assert stopped.value.report.duration_ms < 1000
