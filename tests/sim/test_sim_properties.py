"""Hypothesis drives the simulator with random bytes and hostile command sequences.

Invariants are checked after *every* pump of the line (every few ms of virtual time), from
the physical state and the test's own model — never from what the firmware claims:

* the needles are never deeper than the run's area allows (hard maximum, override
  included), through the unit's true errors and the calibration in use, nor beyond 2.5 mm;
* a stroke-bounded run never delivers more strokes than commanded;
* the pen is stopped within the watchdog time of host silence, and home within the retract
  time after that;
* a cartridge that ran in an earlier mounting, was retired, or is expired/unknown never runs;
* nothing raises out of the simulator.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)
from test_firmware_harness import Raw

from micropen.protocol import limits as L
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    CalCommit,
    CalWrite,
    ClearFault,
    EmergencyStop,
    GetCartridge,
    GetStatus,
    Heartbeat,
    Hello,
    OpenSession,
    PenState,
    Run,
    RunMode,
    RunReport,
    SetDepth,
    SetRate,
    SetTelemetry,
    SetWatchdog,
    SimMountCartridge,
    SimParam,
    Stop,
    calibration_crc,
)
from micropen.protocol.schema import Message, schema_hash
from micropen.sim.faults import PARAM_SPECS
from micropen.sim.pen import SimConfig, SimulatedPen

STEP_S = 0.005
TICK_SLACK_S = 0.011  # the firmware looks every 10 ms
RETRACT_S = L.RETRACT_MAX_MS / 1000.0
DEPTH_TOL_UM = 1.0


class Checked:
    """A pen plus a host link and the test's model, checked after every pump."""

    def __init__(self, pen: SimulatedPen) -> None:
        self.pen = pen
        self.link = Link(Role.HOST, rng=random.Random(3))
        self.now = 0.0
        self.silent = False
        self.last_tx = 0.0
        self.reports: list[RunReport] = []
        self.retired: set[int] = set()  # ran in an earlier mounting, or was retired
        self.mounted_ran = False
        self._mounted = pen.cartridge
        self.cmd_id = 0
        self.sent: list[Message] = []
        self.max_delay_s = 0.0

    # ------------------------------------------------------------------ the line
    def pump(self, dt: float) -> None:
        self.now += dt
        now, pen, link = self.now, self.pen, self.link
        link.receive_data(pen.data_to_send(now), now)
        for event in link.events():
            message = getattr(event, "message", None)
            if isinstance(message, RunReport):
                self.reports.append(message)
        out = link.data_to_send(now)
        if link.connected and not self.silent:
            link.send(Heartbeat(int(now * 1000) & 0xFFFF_FFFF), now)
            out += link.data_to_send(now)
        if out and not self.silent:
            pen.receive_data(out, now)
            self.last_tx = now
        self.check()

    def run_for(self, seconds: float) -> None:
        for _ in range(max(1, round(seconds / STEP_S))):
            self.pump(STEP_S)

    def send(self, message: Message | Raw) -> None:
        if not self.link.connected:  # as a real host does: reconnect and identify first
            self.connect()
        if self.link.connected:
            self.link.send(message, self.now)  # type: ignore[arg-type]

    def next_id(self) -> int:
        self.cmd_id += 1
        return self.cmd_id

    def connect(self) -> None:
        self.link.connect(self.now)
        for _ in range(100):
            if self.link.connected:
                break
            self.pump(STEP_S)
        if self.link.connected:
            self.link.send(Hello(self.next_id(), PROTOCOL_VERSION, schema_hash()), self.now)
            self.link.send(OpenSession(self.next_id(), 0x5E55), self.now)

    # ------------------------------------------------------------------ the model
    def check(self) -> None:
        fw, ph = self.pen.firmware, self.pen.physics
        self._watch_the_bay()
        run, state = fw.run, fw.state
        if ph.fluid_ingress:
            assert state is PenState.FAULT, "fluid in the handpiece and no fault"
        if state is not PenState.RUNNING or run is None:
            assert ph.omega == 0.0 and not ph.motor_drive, "motor turning outside a run"
            assert ph.act_target_um == 0.0, "needles not sent home outside a run"
        else:
            limit = L.AREAS[L.Area(run.area)].override_max_um
            depth = ph.true_depth_um()
            assert depth <= self._true_depth_for(limit) + DEPTH_TOL_UM, (
                f"needles at {depth:.1f} µm in area {run.area} (max {limit})"
            )
            assert depth <= self._true_depth_for(L.DEPTH_MAX_UM) + DEPTH_TOL_UM
            if run.mode is RunMode.STROKES:
                assert ph.phase <= run.target
            self._check_cartridge()
            silence = self.now - self.last_tx
            wd = fw.watchdog_ms / 1000.0
            assert silence <= wd + self.max_delay_s + TICK_SLACK_S, "ran on after host silence"
        if self.now - self.last_tx > 2.0 + self.max_delay_s + TICK_SLACK_S + RETRACT_S:
            assert ph.true_depth_um() == 0.0, "needles out long after host silence"
        for report in self.reports:
            if report.mode is RunMode.STROKES:
                assert report.strokes <= report.target

    def _watch_the_bay(self) -> None:
        """A cartridge taken off ends its mounting: if it ran, it is used for good."""
        cart = self.pen.cartridge
        if cart is not self._mounted:
            if self._mounted is not None and self.mounted_ran:
                self.retired.add(self._mounted.cartridge_id)
            self._mounted, self.mounted_ran = cart, False

    def _check_cartridge(self) -> None:
        cart = self.pen.cartridge
        assert cart is not None, "running without a cartridge"
        today = self.pen.config.today_day
        assert cart.cartridge_id not in self.retired, "a used or retired cartridge runs"
        assert cart.lot and cart.manufactured_day <= today, "an unknown cartridge runs"
        assert today <= cart.effective_expiry_day(), "an expired cartridge runs"
        assert cart.manufactured_day <= cart.expiry_day
        assert cart.strokes_used + self.pen.physics.phase <= L.CARTRIDGE_LIFE_STROKES
        run = self.pen.run
        assert run is not None
        needled_ms = cart.run_ms_used + (self.now - run.start_t) * 1000.0
        assert needled_ms <= L.CARTRIDGE_LIFE_MS + 1e-6, "a worn-out cartridge runs on"
        self.mounted_ran = True

    def _true_depth_for(self, commanded_um: float) -> float:
        """Where the needles are when the firmware commands this depth (test-side maths)."""
        gain, offset, _ = self.pen.firmware.correction
        raw = min(max(commanded_um * gain + offset, 0.0), 2700.0)
        return self.pen.unit_errors.true_depth_um(raw)


# ---------------------------------------------------------------------- random bytes
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 50),
    chunks=st.lists(st.tuples(st.binary(max_size=120), st.floats(0.0, 0.2)), max_size=30),
)
def test_random_bytes_never_break_the_pen(seed: int, chunks: list[tuple[bytes, float]]) -> None:
    pen = SimulatedPen(SimConfig(seed=seed, boot_seed=seed), now=0.0)
    now = 0.0
    for data, dt in chunks:
        now += dt
        pen.receive_data(data, now)
        pen.advance(now)
        pen.data_to_send(now)
        deadline = pen.next_deadline()
        assert deadline is None or deadline >= now
    assert pen.state in (PenState.IDLE, PenState.FAULT)
    assert pen.physics.omega == 0.0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 50), payloads=st.lists(st.binary(min_size=1, max_size=60), max_size=25))
def test_random_payloads_in_valid_frames_never_break_the_pen(
    seed: int, payloads: list[bytes]
) -> None:
    checked = Checked(SimulatedPen(SimConfig(seed=seed, boot_seed=seed), now=0.0))
    checked.connect()
    checked.run_for(0.02)
    for payload in payloads:
        checked.send(Raw(payload))
        checked.run_for(0.02)
    checked.run_for(0.5)


# ---------------------------------------------------------------------- hostile sequences
DEPTHS = st.sampled_from(
    [0, 1, 199, 200, 250, 500, 510, 750, 760, 1000, 1500, 1510, 2000, 2010, 2500]
)
RATES = st.sampled_from([50, 70, 90, 100, 110, 130, 150])
STROKES = st.sampled_from([0, 1, 2, 17, 300, 5000, 1_000_000])
DURATIONS = st.sampled_from([0, 99, 100, 700, 3000, 1_800_000])
DEVICE_PARAMS = st.sampled_from(
    [
        (SimParam.STALL, st.integers(0, 1)),
        (SimParam.OVERHEAT, st.integers(0, 300)),
        (SimParam.BATTERY_MV, st.integers(3200, 4200)),
        (SimParam.CARTRIDGE_REMOVE, st.integers(0, 1)),
        (SimParam.FLUID_INGRESS, st.integers(0, 1)),
        (SimParam.DEPTH_DRIFT_UM, st.integers(-300, 300)),
        (SimParam.AMBIENT_DC, st.integers(150, 450)),
        (SimParam.DEPTH_GAIN_ERROR_PPM, st.integers(-100_000, 100_000)),
        (SimParam.DEPTH_OFFSET_ERROR_UM, st.integers(-300, 300)),
        (SimParam.SPEED_GAIN_ERROR_PPM, st.integers(-100_000, 100_000)),
        (SimParam.CALIBRATION_CORRUPT, st.integers(0, 1)),
        (SimParam.BROWNOUT_RESET, st.integers(0, 300)),
        (SimParam.LINK_DROP_PPM, st.integers(0, 150_000)),
        (SimParam.LINK_CORRUPT_PPM, st.integers(0, 150_000)),
        (SimParam.LINK_DUPLICATE_PPM, st.integers(0, 300_000)),
        (SimParam.LINK_DELAY_MS, st.integers(0, 80)),
        (SimParam.DISCONNECT, st.integers(0, 800)),
    ]
)


class HostilePen(RuleBasedStateMachine):
    """Valid messages with hostile values, sent while running, in faults, across resets."""

    checked: Checked

    @initialize(
        seed=st.integers(0, 1000),
        calibration=st.sampled_from(["nominal", "nominal", "nominal", "blank", "corrupt"]),
        cartridge=st.sampled_from([True, True, True, False]),
    )
    def boot(self, seed: int, calibration: str, cartridge: bool) -> None:
        config = SimConfig(
            seed=seed, calibration=calibration, cartridge=cartridge, boot_seed=seed
        )  # boot ids too must be repeatable for hypothesis to replay an example
        self.checked = Checked(SimulatedPen(config, now=0.0))
        self.checked.connect()
        self.checked.run_for(0.02)

    def _cmd(self, build: type[Message], *args: object) -> None:
        self.checked.send(build(self.checked.next_id(), *args))
        self.checked.run_for(0.01)

    @rule(depth=DEPTHS, override=st.integers(0, 1))
    def set_depth(self, depth: int, override: int) -> None:
        self._cmd(SetDepth, depth, override)

    @rule(rate=RATES)
    def set_rate(self, rate: int) -> None:
        self._cmd(SetRate, rate)

    @rule(
        area=st.sampled_from(list(L.Area)), mode=st.sampled_from(RunMode), n=STROKES, ms=DURATIONS
    )
    def run(self, area: L.Area, mode: RunMode, n: int, ms: int) -> None:
        self._cmd(Run, int(area), mode, n, ms)

    @rule(
        area=st.sampled_from(list(L.Area)),
        mode=st.sampled_from(RunMode),
        n=st.integers(1, 3000),
        ms=st.integers(100, 5000),
        where=st.floats(0.0, 1.0),
        override=st.booleans(),
    )
    def sensible_run(
        self, area: L.Area, mode: RunMode, n: int, ms: int, where: float, override: bool
    ) -> None:
        """A run a careful host would ask for (so hostile steps also hit a running pen)."""
        profile = L.AREAS[area]
        top = profile.depth_limit_um(override)
        depth = round(L.DEPTH_MIN_UM + where * (top - L.DEPTH_MIN_UM))
        rates = profile.allowed_rates()
        self._cmd(SetDepth, depth, int(depth > L.DEPTH_SOFT_CAP_UM))
        self._cmd(SetRate, rates[round(where * (len(rates) - 1))])
        self._cmd(ClearFault)
        self._cmd(Run, int(area), mode, n, ms)
        self.checked.run_for(0.05)

    @rule(
        area=st.sampled_from(list(L.Area)),
        extra=st.integers(10, 1000),
        mode=st.sampled_from(RunMode),
    )
    def greedy_run(self, area: L.Area, extra: int, mode: RunMode) -> None:
        """Deeper than the area allows, everything else in order."""
        profile = L.AREAS[area]
        depth = min(L.DEPTH_MAX_UM, profile.override_max_um + extra)
        self._cmd(SetDepth, depth, 1)
        self._cmd(SetRate, profile.allowed_rates()[-1])
        self._cmd(ClearFault)
        self._cmd(Run, int(area), mode, 2000, 2000)
        self.checked.run_for(0.05)

    def _ensure_running(self, area: L.Area) -> bool:
        if self.checked.pen.state is not PenState.RUNNING:
            self.sensible_run(area, RunMode.DURATION, 100, 30_000, 0.7, True)
        return self.checked.pen.state is PenState.RUNNING

    @rule(area=st.sampled_from(list(L.Area)), extra=st.integers(-300, 1000), override=st.booleans())
    def change_depth_while_running(self, area: L.Area, extra: int, override: bool) -> None:
        if not self._ensure_running(area):
            return
        run = self.checked.pen.run
        assert run is not None
        profile = L.AREAS[L.Area(run.area)]
        depth = max(0, min(L.DEPTH_MAX_UM, profile.max_um + extra))
        self._cmd(SetDepth, depth, int(override))
        self.checked.run_for(0.1)

    @rule(area=st.sampled_from(list(L.Area)), param=DEVICE_PARAMS, data=st.data())
    def fault_while_running(
        self, area: L.Area, param: tuple[SimParam, st.SearchStrategy[int]], data: st.DataObject
    ) -> None:
        if self._ensure_running(area):
            self.sim_set(param, data)
            self.checked.run_for(0.2)

    @rule(
        area=st.sampled_from(list(L.Area)),
        strokes_left=st.integers(0, 300),
        ms_left=st.integers(0, 3000),
        mode=st.sampled_from(RunMode),
    )
    def nearly_worn_cartridge(
        self, area: L.Area, strokes_left: int, ms_left: int, mode: RunMode
    ) -> None:
        """The mounted cartridge's tag says it is nearly used up; then a long run is asked."""
        cart = self.checked.pen.cartridge
        if cart is None or self.checked.pen.state is PenState.RUNNING:
            return
        cart.strokes_used = max(cart.strokes_used, L.CARTRIDGE_LIFE_STROKES - strokes_left)
        cart.run_ms_used = max(cart.run_ms_used, L.CARTRIDGE_LIFE_MS - ms_left)
        self.sensible_run(area, mode, 3000, 5000, 0.5, False)
        self.checked.run_for(3.0)

    @rule(seconds=st.floats(0.3, 2.5))
    def host_dies_mid_run(self, seconds: float) -> None:
        self._ensure_running(L.Area.CHEEKS)
        self.host_goes_silent(seconds)

    @rule(area=st.sampled_from(list(L.Area)))
    def cartridge_swapped_for_a_used_one(self, area: L.Area) -> None:
        """Re-mount a cartridge that already ran, then try to run it."""
        retired = sorted(self.checked.retired)
        if not retired:
            self._ensure_running(area)
            self.checked.run_for(0.1)
            self._cmd(Stop)
            self.checked.run_for(0.1)
            self.checked.pen.mount_cartridge(0, "", 0, 0, self.checked.now)
            self.checked.run_for(0.01)
            retired = sorted(self.checked.retired)
            if not retired:
                return
        today = self.checked.pen.config.today_day
        self.checked.pen.mount_cartridge(
            retired[-1], "LOT-X", today - 5, today + 300, self.checked.now
        )
        self.sensible_run(area, RunMode.STROKES, 50, 1000, 0.3, False)

    @rule(reboot=st.booleans(), dry=st.booleans(), area=st.sampled_from(list(L.Area)))
    def fluid_in_the_handpiece(self, reboot: bool, dry: bool, area: L.Area) -> None:
        checked = self.checked
        if checked.pen.cartridge is not None:  # retired for good, whatever comes next
            checked.retired.add(checked.pen.cartridge.cartridge_id)
        checked.pen.set_param(SimParam.FLUID_INGRESS, 1, checked.now)
        checked.run_for(0.01)
        if reboot:
            checked.pen.power_cycle(checked.now)
            checked.run_for(0.02)
        if dry:
            checked.pen.set_param(SimParam.FLUID_INGRESS, 0, checked.now)
        self.sensible_run(area, RunMode.STROKES, 100, 1000, 0.5, False)

    @rule()
    def estop_while_running(self) -> None:
        if self._ensure_running(L.Area.SCALP):
            self.checked.send(EmergencyStop(self.checked.next_id()))
            self.checked.run_for(0.3)
            faults = self.checked.pen.link_faults
            clean_line = faults is None or not (
                faults.drop_ppm
                or faults.corrupt_ppm
                or faults.delay_s
                or faults.disconnected_until > self.checked.now - 1.0
            )
            if clean_line:
                assert self.checked.pen.state is PenState.FAULT, "emergency stop not obeyed"

    @rule(kind=st.sampled_from([Stop, EmergencyStop, ClearFault, GetStatus, GetCartridge]))
    def simple(self, kind: type[Message]) -> None:
        self._cmd(kind)

    @rule(ms=st.integers(L.HEARTBEAT_MIN_MS, L.HEARTBEAT_MAX_MS))
    def set_watchdog(self, ms: int) -> None:
        self._cmd(SetWatchdog, ms)

    @rule(hz=st.sampled_from([0, 1, 50, 200]))
    def set_telemetry(self, hz: int) -> None:
        self._cmd(SetTelemetry, hz)

    @rule(param=DEVICE_PARAMS, data=st.data())
    def sim_set(self, param: tuple[SimParam, st.SearchStrategy[int]], data: st.DataObject) -> None:
        which, values = param
        value = data.draw(values)
        if which is SimParam.FLUID_INGRESS and value and self.checked.pen.cartridge:
            self.checked.retired.add(self.checked.pen.cartridge.cartridge_id)
        if which is SimParam.LINK_DELAY_MS:
            self.checked.max_delay_s = max(self.checked.max_delay_s, value / 1000.0)
        if which is SimParam.DISCONNECT:
            self.checked.max_delay_s = max(self.checked.max_delay_s, value / 1000.0)
        # applied directly: a SimSet over a line it is about to cut would race its own reply
        self.checked.pen.set_param(which, value, self.checked.now)
        self.checked.run_for(0.01)

    @rule(
        reuse=st.booleans(),
        made=st.integers(-900, 10),
        shelf=st.integers(-20, 800),
        lot=st.sampled_from(["", "LOT-1", "L2"]),
    )
    def mount(self, reuse: bool, made: int, shelf: int, lot: str) -> None:
        checked = self.checked
        today = checked.pen.config.today_day
        reusable = sorted(checked.retired)
        cart_id = reusable[0] if reuse and reusable else checked.next_id() + 10_000
        made_day = today + made
        checked.pen.mount_cartridge(cart_id, lot, made_day, max(0, made_day + shelf), checked.now)
        checked.run_for(0.01)

    @rule(remove=st.just(True))
    def sim_unmount_over_the_wire(self, remove: bool) -> None:
        self._cmd(SimMountCartridge, 0, "", 0, 0)

    @rule(counter=st.integers(0, 5), gain=st.integers(-50_000, 50_000), good_crc=st.booleans())
    def calibrate(self, counter: int, gain: int, good_crc: bool) -> None:
        fields = (1, gain, 0, 0, 0, counter)
        crc = calibration_crc(*fields) ^ (0 if good_crc else 1)
        self._cmd(CalWrite, *fields, crc)
        self._cmd(CalCommit, crc)

    @rule(seconds=st.floats(0.01, 1.5))
    def time_passes(self, seconds: float) -> None:
        self.checked.run_for(seconds)

    @rule(seconds=st.floats(0.05, 3.0))
    def host_goes_silent(self, seconds: float) -> None:
        self.checked.silent = True
        self.checked.run_for(seconds)
        self.checked.silent = False

    @rule()
    def power_cycle(self) -> None:
        self.checked.pen.power_cycle(self.checked.now)
        self.checked.run_for(0.02)

    @rule()
    def reconnect(self) -> None:
        self.checked.connect()
        self.checked.run_for(0.02)

    @rule(index=st.integers(0, 10_000))
    def retransmit_an_old_command(self, index: int) -> None:
        """The same cmd_id again (as after a reconnect): answered, never executed twice."""
        if self.checked.cmd_id:
            old = index % self.checked.cmd_id + 1
            self.checked.send(GetStatus(old))
            self.checked.run_for(0.01)

    @rule(data=st.binary(max_size=64))
    def garbage_on_the_line(self, data: bytes) -> None:
        self.checked.pen.receive_data(data, self.checked.now)
        self.checked.run_for(0.005)

    @invariant()
    def never_more_strokes_than_commanded(self) -> None:
        run = getattr(self, "checked", None) and self.checked.pen.run
        if run and run.mode is RunMode.STROKES and run.end_t is not None:
            assert run.strokes <= run.target


HostilePen.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_hostile_command_sequences = pytest.mark.slow(HostilePen.TestCase)  # ~5 s


def test_param_specs_cover_every_sim_param() -> None:
    assert set(PARAM_SPECS) == set(SimParam)
