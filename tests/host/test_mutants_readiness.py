"""The host's pre-run check and its stroke-rate watch (hazards 2, 4, 5, 6), boundary by boundary.

Written to kill the mutants of host/readiness.py and host/ratewatch.py that
tests/host/test_readiness.py let survive (docs/safety.md). The spec's numbers are stated
literally: start at 3.40 V or more, at most 41.0 °C; stroke rate within ±5 % of the set rate,
judged after 250 ms of running, drift held for 100 ms.
"""

from __future__ import annotations

import pytest
from test_readiness import READY

from micropen.host.errors import PenNotReady
from micropen.host.ratewatch import Drift, RateWatch
from micropen.host.readiness import check_can_run
from micropen.protocol.messages import (
    CartridgeState,
    FaultCode,
    PenState,
    Telemetry,
)


def _refusal(**change: object) -> str:
    with pytest.raises(PenNotReady) as info:
        check_can_run(READY.replace(**change))
    return str(info.value)


# ------------------------------------------------------------------ readiness
def test_each_refusal_is_one_exact_line() -> None:
    assert _refusal(state=PenState.FAULT, fault=FaultCode.FLUID_INGRESS) == (
        "the pen has a latched fault (fluid_ingress); remove its cause, then clear it "
        "(micropen clear-fault, or clear_fault()) before the next run"
    )
    for state in (PenState.BOOT, PenState.RUNNING, PenState.STOPPING, PenState.BOOTLOADER):
        assert _refusal(state=state) == f"the pen is {state.name.lower()}; wait until it is idle"
    assert _refusal(calibrated=0) == (
        "the pen has no valid calibration; calibrate it (micropen calibrate all) first"
    )
    assert _refusal(battery_mv=3350) == (
        "battery 3.350 V is below the 3.40 V needed to start a run; charge the pen"
    )
    assert _refusal(battery_mv=3004).startswith("battery 3.004 V is below the 3.40 V needed")
    assert _refusal(battery_mv=3399).startswith("battery 3.399 V is below the 3.40 V needed")
    assert _refusal(temperature_dc=425) == (
        "handpiece 42.5 °C is above the 41.0 °C limit; let it cool before the next run"
    )
    assert _refusal(cartridge_state=CartridgeState.RETIRED) == (
        "the cartridge was retired (fluid ingress or removed mid-run); replace it and check the "
        "handpiece"
    )


def test_a_latched_fault_is_named_before_anything_else_it_may_also_break() -> None:
    everything_wrong = dict(
        state=PenState.FAULT, fault=FaultCode.CALIBRATION_CORRUPT, calibrated=0,
        battery_mv=3000, temperature_dc=450, cartridge_state=CartridgeState.ABSENT,
    )  # fmt: skip
    assert "latched fault (calibration_corrupt)" in _refusal(**everything_wrong)
    assert "calibrate it" in _refusal(**{**everything_wrong, "state": PenState.IDLE})
    assert "battery 3.000 V" in _refusal(
        **{**everything_wrong, "state": PenState.IDLE, "fault": FaultCode.NONE, "calibrated": 1}
    )


def test_a_fault_code_left_over_on_an_idle_pen_does_not_block_a_run() -> None:
    for fault in (FaultCode.WATCHDOG, FaultCode.EMERGENCY_STOP, FaultCode.RATE_ERROR):
        check_can_run(READY.replace(fault=fault))  # the last fault, reported after it was cleared


def test_every_usable_cartridge_state_passes() -> None:
    for state in (CartridgeState.NEW, CartridgeState.LOCKED):
        check_can_run(READY.replace(cartridge_state=state, battery_mv=3400, temperature_dc=410))


# ------------------------------------------------------------------ rate watch
def _sample(t_ms: int, rate_csps: int, state: PenState = PenState.RUNNING) -> Telemetry:
    return Telemetry(t_ms, state, 500, rate_csps, 0, 400, 300, 3700, 77, 0)


@pytest.mark.parametrize("rate_csps", [9450, 8550])  # 94.50/s and 85.50/s: ±5.0 % of 90/s
def test_exactly_5_percent_off_is_still_in_tolerance(rate_csps: int) -> None:
    watch = RateWatch(90)
    for t_ms in (0, 300, 400, 500, 600):
        assert watch.sample(_sample(t_ms, rate_csps)) is None


def test_just_over_5_percent_held_100_ms_is_drift() -> None:
    watch = RateWatch(90)
    assert watch.sample(_sample(0, 9000)) is None
    assert watch.sample(_sample(300, 9454)) is None  # 94.54/s: +5.04 %
    assert watch.sample(_sample(400, 9454)) == Drift(94.54, 90)
    assert {Drift(94.54, 90)} == {Drift(94.54, 90)}  # a value: hashable, comparable


def test_a_sample_at_exactly_250_ms_is_judged() -> None:
    watch = RateWatch(100)
    assert watch.sample(_sample(1000, 5000)) is None  # first RUNNING sample: the clock starts
    assert watch.sample(_sample(1249, 5000)) is None  # still settling
    assert watch.sample(_sample(1250, 5000)) is None  # judged: off since 1250
    assert watch.sample(_sample(1349, 5000)) is None  # off for 99 ms
    drift = watch.sample(_sample(1350, 5000))  # off for exactly 100 ms
    assert drift == Drift(50.0, 100)
    assert drift.percent == -50.0
    assert str(drift) == "stroke rate 50.0/s is -50.0 % off the 100/s set (limit ±5 %)"


def test_99_ms_off_is_not_yet_drift() -> None:
    watch = RateWatch(110)
    assert watch.sample(_sample(0, 11000)) is None
    assert watch.sample(_sample(300, 12000)) is None
    assert watch.sample(_sample(399, 12000)) is None
    assert watch.sample(_sample(400, 12000)) == Drift(120.0, 110)


def test_sparse_samples_judge_the_time_off_not_the_sample_count() -> None:
    watch = RateWatch(90)
    assert watch.sample(_sample(0, 9000)) is None
    assert watch.sample(_sample(250, 5000)) is None  # off since 250
    assert watch.sample(_sample(300, 5000)) is None  # off for 50 ms
    assert watch.sample(_sample(500, 5000)) == Drift(50.0, 90)  # off for 250 ms ≥ 100 ms


def test_leaving_running_restarts_the_settling_time() -> None:
    watch = RateWatch(90)
    assert watch.sample(_sample(0, 9000)) is None
    assert watch.sample(_sample(300, 5000)) is None  # off since 300
    assert watch.sample(_sample(350, 0, PenState.STOPPING)) is None  # run over: forget it all
    assert watch.sample(_sample(400, 5000)) is None  # a new run starts settling at 400
    assert watch.sample(_sample(500, 5000)) is None  # 100 ms, but still settling
    assert watch.sample(_sample(649, 5000)) is None
    assert watch.sample(_sample(650, 5000)) is None  # judged from 650
    assert watch.sample(_sample(749, 5000)) is None
    assert watch.sample(_sample(750, 5000)) == Drift(50.0, 90)


@pytest.mark.parametrize("between", [PenState.IDLE, PenState.STOPPING, PenState.FAULT])
def test_any_state_but_running_ends_the_watch(between: PenState) -> None:
    watch = RateWatch(90)
    assert watch.sample(_sample(0, 9000)) is None
    assert watch.sample(_sample(300, 5000)) is None  # off since 300
    assert watch.sample(_sample(350, 0, between)) is None
    assert watch.sample(_sample(400, 5000)) is None  # settling again from 400
    assert watch.sample(_sample(500, 5000)) is None


def test_drift_percent_and_message_for_a_fast_pen() -> None:
    drift = Drift(120.0, 110)
    assert drift.percent == pytest.approx(9.0909, abs=1e-4)
    assert str(drift) == "stroke rate 120.0/s is +9.1 % off the 110/s set (limit ±5 %)"
