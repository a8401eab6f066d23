"""The firmware's steady-run fast path (Firmware._steady_ticks) changes nothing but speed.

Each scenario runs twice on the same unit (same seed, same boot ids), once with the fast path
and once with the general loop only, and every byte the pen writes, every reading and the
physics must be the same to the last bit. The scenarios push the monitors to act (stall,
heat, drift, battery, a slow actuator, a stroke-bounded end, a rate that drifts) so that a
fast path that skipped a check, read a sensor differently or stepped the physics differently
would show. Each also proves the fast path ran.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_firmware_harness import Host

from micropen.protocol.messages import (
    EmergencyStop,
    RunMode,
    SetDepth,
    SetRate,
    SetTelemetry,
    SetTelemetryBatch,
    SimParam,
    SimSet,
    Stop,
)
from micropen.sim import firmware

CHEEKS = 4  # a treatment area that allows 110 strokes/s
Script = Callable[[Host], None]


def _record(script: Script, fast: bool, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(firmware, "STEADY_FAST_PATH", fast)
    ticks = [0]
    real = firmware.Firmware._steady_ticks

    def counted(self: firmware.Firmware, now: float) -> bool:
        did = real(self, now)
        ticks[0] += did
        return did

    monkeypatch.setattr(firmware.Firmware, "_steady_ticks", counted)
    host = Host(seed=41, boot_seed=41)
    wire: list[bytes] = []
    send = host.pen.data_to_send

    def recording(now: float) -> bytes:
        data = send(now)
        wire.append(data)
        return data

    host.pen.data_to_send = recording  # type: ignore[method-assign]
    script(host)
    fw, ph = host.pen.firmware, host.pen.physics
    return {
        "wire": b"".join(wire),
        "physics": (ph.t, ph.phase, ph.omega, ph.temp_c, ph.v_oc, ph.act_pos_um),
        "readings": (fw._m_depth, fw._m_rate, fw._m_current, fw._m_temp_dc, fw._m_battery),
        "state": (
            fw.state,
            fw.fault,
            fw.telemetry_seq,
            fw.telemetry_skipped,
            fw._temp_warned,
            fw._over_since,
            fw._rate_off_since,
        ),
        "fast_calls": ticks[0],
    }


def _same_either_way(script: Script, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = _record(script, True, monkeypatch)
    slow = _record(script, False, monkeypatch)
    assert fast["fast_calls"] > 0, "the fast path never ran: this scenario proves nothing"
    assert slow["fast_calls"] == 0
    for key in ("physics", "readings", "state"):
        assert fast[key] == slow[key], key
    assert fast["wire"] == slow["wire"]


def _start(host: Host, hz: int, batch: int, depth_um: int = 800, rate: int = 110) -> None:
    host.ready(depth_um=depth_um, rate_sps=rate)
    host.ack(SetTelemetryBatch, batch, 100)
    host.ack(SetTelemetry, hz)
    host.start(CHEEKS, RunMode.DURATION, duration_ms=20_000)


def _inject(host: Host, param: SimParam, value: int) -> None:
    host.ack(SimSet, param, value)


SCENARIOS: dict[str, Script] = {
    "batched 100 Hz to the end": lambda h: (_start(h, 100, 8), h.run_for(2.0)),
    "singles 100 Hz": lambda h: (_start(h, 100, 0), h.run_for(2.0)),
    "telemetry off": lambda h: (_start(h, 0, 0), h.run_for(2.0)),
    "1 kHz between ticks, then 100 Hz": lambda h: (
        _start(h, 1000, 8), h.run_for(0.7, step=0.001), h.cmd(SetTelemetry, 100), h.run_for(0.5)),
    "stall": lambda h: (_start(h, 100, 8), h.run_for(0.6), _inject(h, SimParam.STALL, 1),
                        h.run_for(0.5)),
    "overheat, warning then fault": lambda h: (
        _start(h, 100, 8), h.run_for(0.6), _inject(h, SimParam.OVERHEAT, 150), h.run_for(1.0),
        _inject(h, SimParam.OVERHEAT, 400), h.run_for(1.0)),
    "depth drift": lambda h: (_start(h, 100, 8), h.run_for(0.6),
                              _inject(h, SimParam.DEPTH_DRIFT_UM, 140), h.run_for(0.5),
                              _inject(h, SimParam.DEPTH_DRIFT_UM, 200), h.run_for(0.5)),
    "battery sag": lambda h: (_start(h, 100, 8), h.run_for(0.6),
                              _inject(h, SimParam.BATTERY_MV, 3310), h.run_for(0.5)),
    "rate drift": lambda h: (_start(h, 100, 8), h.run_for(0.6),
                             _inject(h, SimParam.SPEED_GAIN_ERROR_PPM, 60_000), h.run_for(1.0)),
    "slow actuator, then stop": lambda h: (_start(h, 100, 8), h.run_for(0.6),
                                           _inject(h, SimParam.ACTUATOR_SPEED_PCT, 20),
                                           h.cmd(Stop), h.run_for(0.5)),
    "depth and rate changed mid-run": lambda h: (
        _start(h, 100, 8), h.run_for(0.6), h.cmd(SetDepth, 1200, 0), h.run_for(0.5),
        h.cmd(SetRate, 90), h.run_for(0.6), h.cmd(EmergencyStop), h.run_for(0.3)),
    "heat climbs past the warning to the fault": lambda h: (
        _start(h, 100, 8), h.run_for(0.6), _inject(h, SimParam.AMBIENT_DC, 600),
        _inject(h, SimParam.OVERHEAT, 1000), h.run_for(17, step=0.05)),
    "stroke-bounded": lambda h: (
        h.ready(depth_um=500, rate_sps=110), h.ack(SetTelemetry, 100),
        h.start(CHEEKS, RunMode.STROKES, strokes=151), h.run_for(1.8)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_fast_path_changes_nothing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _same_either_way(SCENARIOS[name], monkeypatch)


_ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("wait"), st.integers(1, 60)),  # tens of ms
        st.tuples(st.just("drift"), st.integers(-200, 200)),
        st.tuples(st.just("heat"), st.integers(0, 300)),
        st.tuples(st.just("battery"), st.integers(3250, 4100)),
        st.tuples(st.just("speed"), st.integers(-80_000, 80_000)),
        st.tuples(st.just("rate"), st.sampled_from([70, 90, 110, 130])),
        st.tuples(st.just("telemetry"), st.sampled_from([0, 50, 100, 250])),
    ),
    min_size=1,
    max_size=8,
)
_PARAM = {
    "drift": SimParam.DEPTH_DRIFT_UM,
    "heat": SimParam.OVERHEAT,
    "battery": SimParam.BATTERY_MV,
    "speed": SimParam.SPEED_GAIN_ERROR_PPM,
}


@settings(max_examples=12)
@given(actions=_ACTIONS)
def test_any_sequence_of_disturbances_comes_out_the_same(actions: list[tuple[str, int]]) -> None:
    def script(h: Host) -> None:
        _start(h, 100, 8)
        h.run_for(0.8)  # the motor settles within 0.6 s: steady from then on
        for kind, value in actions:
            if kind == "wait":
                h.run_for(value / 100)
            elif kind == "rate":
                h.cmd(SetRate, value)
            elif kind == "telemetry":
                h.cmd(SetTelemetry, value)
            else:
                h.cmd(SimSet, _PARAM[kind], value)
        h.run_for(0.3)

    with pytest.MonkeyPatch.context() as monkeypatch:
        _same_either_way(script, monkeypatch)


_CALM = {"drift": 0.0, "heat": 0.0, "temp": 30.0, "v_oc": 4.0, "gain": 0.0, "stall_ma": 900}
_EDGES = {  # each near the value at which its monitor acts
    "drift": st.one_of(st.floats(135, 160), st.floats(-160, -135)),  # depth: ±150 µm
    "temp": st.floats(38.5, 40.5),  # warning at 40.0 °C
    "v_oc": st.floats(3.35, 3.45),  # stop at 3300 mV under load
    "gain": st.one_of(st.floats(0.045, 0.06), st.floats(-0.06, -0.045)),  # rate: ±5 %
    "stall_ma": st.integers(420, 445),  # the motor draws about 425 mA at speed
}
_LIMITS = st.tuples(
    st.sampled_from(sorted(_EDGES)),
    st.data(),
    st.floats(0, 120),  # extra heat: where the temperature heads
    st.floats(0.001, 5.0),  # the span the proof must cover
)


@pytest.fixture(scope="module")
def steady_host() -> Host:
    host = Host(seed=43, boot_seed=43)
    _start(host, 0, 0)
    host.run_for(0.8)  # settled: the motor at its speed, the needles at depth
    fw = host.pen.firmware
    fw._wd_at = float("inf")  # spans of seconds, not only up to the next heartbeat's due
    fw._reschedule()
    return host


@settings(max_examples=120)
@given(drawn=_LIMITS)
def test_the_quiet_proof_never_hides_a_monitor(
    steady_host: Host, drawn: tuple[str, st.DataObject, float, float]
) -> None:
    """Whatever the state, when _quiet_until says no monitor can act within the span, no draw
    of the noise table makes any reading break a limit — now or at the end of the span. One
    quantity at a time is put near its limit (with all of them near, it never says quiet)."""
    edge, data, heat, span = drawn
    case = {**_CALM, "heat": heat, "span": span, edge: data.draw(_EDGES[edge], label=edge)}
    fw, ph = steady_host.pen.firmware, steady_host.pen.physics
    saved = (ph.depth_drift_um, ph.extra_heat_c, ph.temp_c, ph.v_oc, ph._speed_gain, ph.omega, ph.t)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(firmware.L, "STALL_CURRENT_MA", case["stall_ma"])
        try:
            ph.depth_drift_um, ph.extra_heat_c = case["drift"], case["heat"]
            ph.temp_c, ph.v_oc = case["temp"], case["v_oc"]
            ph._speed_gain = 1.0 + case["gain"]
            wt = ph.motor_cmd_sps * ph._speed_gain
            ph.omega = wt
            start = ph.t
            end = min(start + case["span"], fw._deadline)  # the fast path stops at deadlines
            steady = fw._quiet_until(start + case["span"], wt)
            if steady is None:
                return
            belief, sensed_ma, load = steady[3], steady[4], steady[5]
            for at in (start, end):
                ph.step(at, float("inf"))  # the temperature and battery where the span ends
                for i in range(0, 4096 - 5):
                    fw._readings(at, i, belief, ph.omega, sensed_ma, load)
                    assert fw._m_current <= firmware.L.STALL_CURRENT_MA
                    assert fw._m_battery >= firmware.L.BATTERY_STOP_MV
                    assert abs(fw._m_depth - fw.depth_set_um) <= firmware.L.DEPTH_FAULT_TOL_UM
                    assert fw._m_temp_dc < firmware.L.TEMP_WARN_DC
                    band = firmware.L.RATE_ACCEPT_TOL_PCT * fw.rate_set_sps
                    assert abs(fw._m_rate - fw.rate_set_sps) * 100.0 <= band
        finally:
            (ph.depth_drift_um, ph.extra_heat_c, ph.temp_c, ph.v_oc, ph._speed_gain, ph.omega,
             ph.t) = saved  # fmt: skip
