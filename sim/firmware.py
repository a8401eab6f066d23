"""The pen's firmware: protocol handling, the state machine, run control and safety monitors.

It speaks through the same :class:`~micropen.protocol.link.Link` as the host, answers every
command with its declared reply or a typed :class:`Nak`, and enforces every control of
``shared/pen-spec.md`` on its own — it never trusts the host to have checked (and it cannot
import the host's checks: sim imports only protocol).

The state machine is the table :data:`TRANSITIONS`; ``docs/simulator.md`` shows the diagram
that :func:`state_diagram` draws from it (a test keeps the two equal). Which command is
accepted in which state is the table :data:`ALLOWED_STATES`.

Time: :meth:`Firmware.advance` steps the physics from one scheduled instant to the next —
10 ms control ticks while anything moves, 0.5 s ticks at rest, telemetry samples, the
heartbeat deadline, the end of a timed run and the end of a retraction. A stroke-bounded run
stops at the exact instant the cam completes its last stroke (solved inside the physics step).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from micropen.protocol import device as D
from micropen.protocol import limits as L
from micropen.protocol.behaviour import (
    ALLOWED_STATES,
    NEVER_CACHED,
    NO_HANDSHAKE_NEEDED,
    NO_PAIRING_NEEDED,
    TRANSITIONS,
    Trigger,
    allowed_states_markdown,
    state_diagram,
)
from micropen.protocol.errors import FieldOutOfRange, MicropenError, RemoteProtocolError
from micropen.protocol.events import BadMessage, Connected, MessageReceived
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import (
    PROTOCOL_VERSION,
    TELEMETRY_BATCH_SAMPLES,
    TELEMETRY_SAMPLE_BYTES,
    Ack,
    CalCommit,
    CalRead,
    CalWrite,
    Capability,
    CartridgeState,
    ClearFault,
    EmergencyStop,
    ErrorCode,
    Event,
    EventCode,
    FaultCode,
    FaultReport,
    FwBegin,
    FwChunk,
    FwConfirm,
    FwFinish,
    FwGetSlot,
    FwTestBoot,
    GetCartridge,
    GetPairing,
    GetStatus,
    Hello,
    Identity,
    Nak,
    OpenSession,
    PairConfirm,
    Pairing,
    PairOffer,
    PairRequest,
    PenState,
    Run,
    RunMode,
    RunOutcome,
    RunReport,
    ServiceExit,
    SetDepth,
    SetRate,
    SetServiceMode,
    SetTelemetry,
    SetTelemetryBatch,
    SetWatchdog,
    SimGet,
    SimMountCartridge,
    SimParam,
    SimParamValue,
    SimSet,
    Status,
    Stop,
    Telemetry,
    TelemetryBatch,
    Unpair,
)
from micropen.protocol.schema import REGISTRY, Kind, Message, schema_hash

from . import physics as phys_model
from .bootloader import Bootloader
from .calstore import CalRecord, Nvm
from .cartridge import Bay, Cartridge, CartridgeSlot, Refusal, i32
from .faults import PARAM_SPECS, LinkFaults, apply_param, read_param
from .pairing import MAX_PAIRINGS as MAX_PAIRINGS_HELD
from .pairing import HostPairing, PairingMode
from .physics import Noise, Physics
from .replycache import SessionCaches
from .service import ServiceMode, check_area
from .updater import UpdateAgent

__all__ = [
    "ALLOWED_STATES",
    "TRANSITIONS",
    "BootReason",
    "Firmware",
    "FirmwareBug",
    "RunRecord",
    "Trigger",
    "UnitInfo",
    "allowed_states_markdown",
    "state_diagram",
]

TICK_S = D.CONTROL_TICK_MS / 1000  # control period while anything moves
IDLE_TICK_EVERY = D.IDLE_TICK_EVERY  # ticks at rest: every 0.5 s
TEMP_REARM_DC = D.TEMP_REARM_DC  # the warning re-arms below 39.5 °C
LINK_MAX_RETRIES = 1 << 30  # the pen never gives up delivering (faults, run reports)
_U32 = 0xFFFF_FFFF
_INF = math.inf
_SCHEMA_HASH = schema_hash()
_NOISE_DEPTH = phys_model.NOISE_DEPTH_UM
_NOISE_RATE = phys_model.NOISE_RATE_FRACTION
_NOISE_CURRENT = phys_model.NOISE_CURRENT_MA
_NOISE_TEMP = phys_model.NOISE_TEMP_C
_NOISE_BATTERY = phys_model.NOISE_BATTERY_MV
_ELECTRONICS_MA = phys_model.ELECTRONICS_MA
_BATTERY_R_OHM = phys_model.BATTERY_R_OHM
_new_message = tuple.__new__
_exp = math.exp
_trunc = math.trunc  # int() of a float, six times cheaper on CPython 3.11
_MOTOR_NOLOAD_MA = phys_model.MOTOR_NOLOAD_MA
_MOTOR_MA_PER_SPS = phys_model.MOTOR_MA_PER_SPS
_MOTOR_ACCEL_MA_PER_SPS = phys_model.MOTOR_ACCEL_MA_PER_SPS
_HEAT_C_PER_A = phys_model.HEAT_C_PER_A
_THERMAL_TAU_S = phys_model.THERMAL_TAU_S
_V_PER_AS = phys_model._V_PER_AS
_BATTERY_EMPTY_V = phys_model.BATTERY_EMPTY_V
_RATE_SETTLE_S = L.RATE_DRIFT_SETTLE_MS / 1000.0
_Steady = tuple[list[int], list[int], list[int], float, float, float]
_NOISE_LAST_SLICE = phys_model.NOISE_TABLE_SIZE - 5  # Noise.take(5) slices below this index
STEADY_FAST_PATH = True  # Firmware._steady_ticks; tests turn it off to compare
# Telemetry batches (TelemetryBatch): at most this many messages (any kind) waiting for or in
# the link's window when a batch is queued; a batch finding more is dropped and counted, so a
# stalled or slow link never builds a backlog of telemetry (records and replies always queue)
TELEMETRY_QUEUE_LIMIT = 8
_pack_sample = Telemetry.STRUCT.pack_into
_BATCH_BYTES = TELEMETRY_BATCH_SAMPLES * TELEMETRY_SAMPLE_BYTES
_PADDING = [bytes(_BATCH_BYTES - n * TELEMETRY_SAMPLE_BYTES) for n in range(9)]


class FirmwareBug(MicropenError):
    """The simulated firmware reached a state its own tables forbid (a bug, never input)."""


class BootReason(int, Enum):
    POWER_ON = 0
    RESET = 1
    BROWNOUT = 2
    UPDATE = 3  # the firmware reset itself to test-boot a new image


AUTH_HOLD_S = D.AUTH_HOLD_S  # a paired host heard from this recently has a live link
AUTH_BURST = D.AUTH_BURST  # frames failing authentication within a second: a security event
S = PenState
# module constants for the per-tick and per-frame paths: an Enum attribute costs ~0.3 µs on 3.11
_RUNNING = S.RUNNING
_BENCH_FIXTURE = L.Area.BENCH_FIXTURE
_NOTIFY, _HOST_NOTIFY = Kind.NOTIFY, Kind.HOST_NOTIFY
_COMMAND, _SIM_COMMAND = Kind.COMMAND, Kind.SIM_COMMAND
_ACTIVE_STATES = frozenset({S.RUNNING, S.STOPPING})
_SECURITY_EVENTS = frozenset(
    {
        EventCode.SECURITY_DENIED,
        EventCode.AUTH_FAILURES,
        EventCode.UNPAIRED_CONNECT,
        EventCode.UNPROVEN_CONNECT,
    }
)
_RUN_OUTCOME_FOR_FAULT = {
    FaultCode.EMERGENCY_STOP: RunOutcome.EMERGENCY_STOP,
    FaultCode.WATCHDOG: RunOutcome.WATCHDOG,
}
del S


@dataclass(frozen=True, slots=True)
class UnitInfo:
    """What the Identity reply says about this unit."""

    model: str
    serial: str
    firmware: tuple[int, int, int]
    hardware_revision: int
    capabilities: int
    today: Callable[[float], int]  # the real-time clock's day at a time of the pen's clock


@dataclass(slots=True)
class RunRecord:
    """The current or last run of this boot."""

    run_id: int
    area: int
    mode: RunMode
    target: int
    depth_um: int
    rate_sps: int
    cartridge_id: int
    start_t: float
    end_t: float | None = None
    strokes: int = 0
    outcome: RunOutcome = RunOutcome.ACTIVE


_Handler = Callable[["Firmware", Any, float], Message]


class Firmware:
    """One boot of the pen's firmware. A reset builds a new one: RAM state is lost, the
    physics, the non-volatile memory and the mounted cartridge are passed in and survive."""

    def __init__(
        self,
        unit: UnitInfo,
        *,
        physics: Physics,
        nvm: Nvm,
        bay: Bay,
        link_faults: LinkFaults | None,
        noise: Noise,
        rng: random.Random,
        now: float,
        boot: Bootloader,
        pairing_mode: PairingMode,
        boot_reason: BootReason = BootReason.POWER_ON,
    ) -> None:
        self.unit, self.physics, self.nvm, self.bay = unit, physics, nvm, bay
        self.update = UpdateAgent(boot)
        self.pairing_mode = pairing_mode
        self.link_faults, self.noise = link_faults, noise
        self.boot_t = now
        self.boot_id = rng.getrandbits(32)
        self.link = Link(
            Role.PEN,
            max_retries=LINK_MAX_RETRIES,
            rng=random.Random(rng.random()),
            pairing=nvm.pairings.lookup,
            admit_syn=self._admit_syn,
        )
        self._now = now
        self._last_auth_rx = -_INF
        self._auth_rejected = 0  # frames and connects refused so far (all epochs)
        self._burst_start, self._burst_count = -_INF, 0
        self._proven_at_connect = 0  # authenticated frames when this epoch began
        self._unproven_reported = -_INF
        self.state = PenState.BOOT
        self.fault = FaultCode.NONE
        self.depth_set_um = 0
        self.soft_cap_override = 0
        self.rate_set_sps = L.RATE_DEFAULT_SPS
        self.watchdog_ms = L.HEARTBEAT_DEFAULT_MS
        self.telemetry_hz = L.TELEMETRY_DEFAULT_HZ
        self.run: RunRecord | None = None
        self.slot = CartridgeSlot()
        self.brownout_at: float | None = None
        self.telemetry_skipped = 0  # samples taken and never handed to the link
        self.telemetry_seq = 0  # number of the next sample (every sample taken since boot)
        self.telemetry_batches = 0  # TelemetryBatch messages handed to the link
        self._batch_max = 0  # samples per batch asked for on this link epoch (0: singles)
        self._batch_delay = 0.0  # a batch leaves when its first sample is this old (s)
        self._batch = bytearray(_BATCH_BYTES)
        self._batch_n = 0  # samples in the batch being filled
        self._batch_first = 0  # number of its first sample
        self._batch_due = _INF  # when it leaves, full or not
        self._steady_tables: tuple[tuple[object, ...], _Steady | None] | None = None
        self.notifications_lost = 0
        self.last_retract_ms: float | None = None
        self._run_count = 0
        self.replies = SessionCaches()
        self.duplicates_answered = 0
        self._handshake_epoch: int | None = None
        self._session: int | None = None
        self._session_epoch: int | None = None
        self.service = ServiceMode()  # RAM only: a reboot always leaves service mode
        self._held: list[Message] = []  # notifications waiting for a host session
        self._held_security = 0  # how many of them are security events
        self._deferred: list[tuple[Message, bool]] | None = None
        self._last_rx = now
        self._valid_frames = 0
        self._stroke_limit = _INF
        self._stroke_limit_outcome = self._time_limit_outcome = RunOutcome.COMPLETED
        self._wd_at = self._run_end_at = self._retract_at = self._deadline = _INF
        self._retract_limit_at = _INF  # the firmware's own 50 ms check of every retraction
        self._stop_t = now
        self._tick_k, self._tick_every, self._next_tick = 0, 1, _INF
        self._tel_k, self._tel_period, self._next_tel = 0, 0.0, _INF
        self._over_since: float | None = None
        self._rate_off_since: float | None = None
        self._rate_set_at = now  # when the motor was last told a new speed
        self._temp_warned = False
        self._cal_reported = False
        self._m_depth = self._m_rate = self._m_current = 0.0
        self._m_temp_dc = self._m_battery = 0.0
        self._sampled_at = -_INF
        self._cal_gain, self._cal_offset, self._cal_rate = 1.0, 0.0, 1.0
        self._boot(now, boot_reason)

    # ================================================================== boot
    def _boot(self, t: float, reason: BootReason) -> None:
        """Self-test: home the needles, read NVM and the cartridge tag, check the sensors."""
        ph = self.physics
        ph.brake()
        ph.move_actuator(0.0)
        self._load_calibration()
        self.slot.assess(self.bay.cartridge, self.unit.today(t), self.nvm.cartridges)
        self._sample(t)
        self._notify(Event(0, EventCode.BOOTED, int(reason), 0), t)
        for code, value in self.update.boot.notes:  # what the bootloader did on the way up
            self._notify(Event(0, code, value, 0), t)
        self._retick(t)
        if reason is BootReason.BROWNOUT:
            self._fault(FaultCode.BROWNOUT, 0, t)
        elif ph.fluid_ingress:
            self._fault(FaultCode.FLUID_INGRESS, 1, t)
        else:
            self._transition(Trigger.SELF_TEST_PASSED)
        self._scrub_calibration(t)
        self._schedule_retraction(t)

    def shutdown(self, t: float) -> None:
        """Power is going: the cartridge tag and the lifetime counter keep what was used."""
        self._transition(Trigger.RESET)
        run = self.run
        if run is not None and run.end_t is None:
            strokes = int(self.physics.phase)
            self.slot.add_usage(strokes, (t - run.start_t) * 1000.0)
            self.nvm.lifetime_strokes += strokes
        self.physics.brake()
        self.physics.move_actuator(0.0)

    def _load_calibration(self) -> None:
        """Copy the active calibration into RAM (at boot and after a commit)."""
        cal = self.nvm.cal
        active = cal.active if cal.calibrated else None
        if active is None:
            self._cal_gain, self._cal_offset, self._cal_rate = 1.0, 0.0, 1.0
            return
        self._cal_gain = 1.0 + active.depth_gain_ppm / 1e6
        self._cal_offset = float(active.depth_offset_um)
        self._cal_rate = 1.0 + active.rate_gain_ppm / 1e6

    # ================================================================== state table
    def _transition(self, trigger: Trigger) -> None:
        target = TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise FirmwareBug(f"no transition from {self.state.name} on {trigger.value!r}")
        self.state = target

    # ================================================================== time
    def advance(self, now: float) -> None:
        """Run physics and firmware up to ``now`` (idempotent for the same ``now``)."""
        ph = self.physics
        while True:
            due = min(self._next_tick, self._next_tel, self._deadline)
            fast = (
                due <= now
                and due == self._next_tick
                and self.state is _RUNNING
                and STEADY_FAST_PATH
            )
            if fast and self._steady_ticks(now):
                continue
            target = due if due < now else now
            if ph.t < target and ph.step(target, self._stroke_limit):
                self._stroke_limit_reached(ph.t)
                continue
            if due > now:
                return
            t = ph.t
            if t >= self._deadline:
                self._deadlines_due(t)
            if t >= self._next_tick:
                self._tick(t)
            if t >= self._next_tel:
                self._telemetry(t)

    def _steady_ticks(self, now: float) -> bool:
        """The control ticks of a run at speed, up to ``now``, without the general loop.

        While the pen runs with its motor at the set speed and the needles at depth, a tick is
        always the same work: the closed-form physics step, the sensors, the monitors and, at
        a telemetry instant, the sample. When the monitors are *provably* quiet until ``now``
        (``_quiet_until``: the sensor readings cannot reach any limit with the largest draw
        of the noise table and the physics' bounds over the span — otherwise this declines
        and the general loop runs every monitor), this does the ticks inline: the physics
        with the same arithmetic in the same order, each reading from the same noise draws
        (the readings of a sample from tables of the noise table, precomputed for this
        steady state), so every value and every sample is the same to the last bit
        (``tests/sim/test_steady_ticks.py`` runs both and compares). It hands back to the
        general loop at anything else: a deadline, a sample between ticks, the stroke limit
        within a step, the end of the noise table. Returns whether it did a tick."""
        ph = self.physics
        if (
            self.state is not _RUNNING
            or self._tick_every != 1
            or not ph.motor_drive
            or ph.stalled
            or ph.act_pos_um != ph.act_target_um
            or ph.t >= self._next_tick
            or self._over_since is not None
            or self._rate_off_since is not None
            or self._temp_warned
        ):
            return False
        wt = ph.motor_cmd_sps * ph._speed_gain  # Physics.motor_target() for a driven motor
        omega = ph.omega
        if omega != wt:
            return False
        steady = self._quiet_until(now, wt)
        if steady is None:
            return False
        depth_at, rate_at, current_at, belief, sensed_ma, sensed_load = steady
        noise = self.noise
        table = noise.table
        heat_base = ph.ambient_c + ph.extra_heat_c
        boot_t, limit = self.boot_t, self._stroke_limit
        # telemetry batches are filled right here (_telemetry's batching branch, inline)
        batching = self._batch_max if self._open_session() is not None else 0
        cart = self.slot.cartridge
        cart_id = 0 if cart is None else cart.cartridge_id
        cart_used = 0 if cart is None else cart.strokes_used
        batch, batch_delay = self._batch, self._batch_delay
        ph_t, phase, temp_c, v_oc = ph.t, ph.phase, ph.temp_c, ph.v_oc
        # the schedule in locals, written back before anything else reads it
        tick_k, next_tick, tel_k, next_tel = (
            self._tick_k,
            self._next_tick,
            self._tel_k,
            self._next_tel,
        )
        tel_period, deadline = self._tel_period, self._deadline
        seq, n, noise_i = self.telemetry_seq, self._batch_n, noise._i
        i = last = -1
        t = next_tick
        while t <= now and t < deadline and next_tel >= t:
            i = noise_i
            if i >= _NOISE_LAST_SLICE:  # Noise.take(5) would wrap: the general loop does it
                break
            # == Physics.step(t, stroke limit) with the motor settled and the needles still
            dt = t - ph_t
            if dt <= 0.0:
                break
            gained = wt * dt
            if phase + gained >= limit:
                break  # the general loop stops the run at the exact crossing
            phase = phase + gained
            mean_w = gained / dt
            lag = wt - mean_w
            current = (
                _MOTOR_NOLOAD_MA
                + _MOTOR_MA_PER_SPS * mean_w
                + (_MOTOR_ACCEL_MA_PER_SPS * lag if lag > 0.0 else 0.0)
            )
            t_ss = heat_base + _HEAT_C_PER_A * current * 1e-3
            temp_c = t_ss + (temp_c - t_ss) * _exp(-dt / _THERMAL_TAU_S)
            v = v_oc - (current + _ELECTRONICS_MA) * 1e-3 * dt * _V_PER_AS
            v_oc = v if v > _BATTERY_EMPTY_V else _BATTERY_EMPTY_V
            ph_t = t
            # == self._sample(t): five draws (readings below); the monitors are quiet
            noise_i = i + 5
            last = i
            # == _tick's next tick
            tick_k += 1
            next_tick = boot_t + tick_k * TICK_S
            if next_tel <= t:  # a sample at this instant (as advance() takes it next)
                if batching:  # == self._telemetry(t) for a batch
                    tel_k += 1
                    next_tel = boot_t + tel_k * tel_period
                    strokes = _trunc(phase)
                    m_temp = (temp_c + _NOISE_TEMP * table[i + 3]) * 10.0
                    temp_dc = _trunc(m_temp + 0.5) if m_temp > 0.0 else -_trunc(0.5 - m_temp)
                    battery = (v_oc - sensed_load) * 1000.0 + _NOISE_BATTERY * table[i + 4]
                    if n == 0:
                        self._batch_first = seq
                        self._batch_due = due = t + batch_delay
                        if due < deadline:
                            deadline = self._deadline = due
                    seq = (seq + 1) & _U32
                    _pack_sample(
                        batch,
                        n * TELEMETRY_SAMPLE_BYTES,
                        _trunc((t - boot_t) * 1000.0 + 1e-6) & _U32,
                        _RUNNING,
                        depth_at[i],
                        rate_at[i + 1],
                        strokes & _U32,
                        current_at[i + 2],
                        -0x8000 if temp_dc < -0x8000 else (0x7FFF if temp_dc > 0x7FFF else temp_dc),
                        0 if battery <= 0.0 else (
                            0xFFFF if battery >= 65534.5 else _trunc(battery + 0.5)
                        ),
                        cart_id,
                        (0 if cart is None else cart_used + strokes) & _U32,
                    )  # fmt: skip
                    n += 1
                    if n >= batching:
                        self._batch_n = n
                        self._flush_batch(t)  # reschedules: the deadline may move
                        n, deadline = 0, self._deadline
                    if next_tel <= t or next_tick <= t:
                        break  # off the grid: the general loop re-aligns
                else:  # singles, or no session: _telemetry with the readings in place
                    self._tick_k, self._next_tick, noise._i = tick_k, next_tick, noise_i
                    ph.t, ph.phase, ph.temp_c, ph.v_oc = ph_t, phase, temp_c, v_oc
                    self._readings(t, i, belief, omega, sensed_ma, sensed_load)
                    self._telemetry(t)
                    tel_k, next_tel, seq = self._tel_k, self._next_tel, self.telemetry_seq
                    n, deadline = self._batch_n, self._deadline
            if next_tick <= t:
                break  # off the grid: the general loop re-aligns
            t = next_tick
        self._tick_k, self._next_tick, self._tel_k, self._next_tel = (
            tick_k,
            next_tick,
            tel_k,
            next_tel,
        )
        self.telemetry_seq, self._batch_n, noise._i = seq, n, noise_i
        if last < 0:
            return False
        ph.t, ph.phase, ph.temp_c, ph.v_oc = ph_t, phase, temp_c, v_oc
        self._readings(ph_t, last, belief, omega, sensed_ma, sensed_load)
        if self._next_tick <= ph_t:
            self._retick(ph_t)
        if self._next_tel <= ph_t:
            self._align_telemetry(ph_t)
        return True

    def _readings(
        self, t: float, i: int, belief: float, omega: float, sensed_ma: float, load: float
    ) -> None:
        """What _sample(t) reads from draws i..i+4 in the steady state of _steady_ticks."""
        ph, table = self.physics, self.noise.table
        self._sampled_at = t
        self._m_depth = belief + _NOISE_DEPTH * table[i]
        self._m_rate = omega * (1.0 + _NOISE_RATE * table[i + 1])
        self._m_current = sensed_ma + _NOISE_CURRENT * table[i + 2] if sensed_ma else 0.0
        self._m_temp_dc = (ph.temp_c + _NOISE_TEMP * table[i + 3]) * 10.0
        self._m_battery = (ph.v_oc - load) * 1000.0 + _NOISE_BATTERY * table[i + 4]

    def _quiet_until(self, now: float, wt: float) -> _Steady | None:
        """The steady state's sample tables, when no monitor can act up to ``now``: every
        reading a tick could take, with any draw of the noise table (each reading grows with
        its draw, so the table's extremes bound it) and the temperature and battery anywhere
        they can get to within the span (the physics' own exponential and linear laws, with
        1 % more current than now), stays inside every limit — with a margin for the rounding
        of the bounds themselves. None: run the monitors.

        What does not change while the run is steady (depth, rate and current readings, their
        tables) is worked out once per steady state; the temperature and battery every time."""
        ph = self.physics
        run = self.run
        key = (
            ph.act_pos_um, self._cal_offset, self._cal_gain, ph.depth_drift_um, ph.omega, wt,
            self.depth_set_um, self.rate_set_sps, run is not None and run.area != _BENCH_FIXTURE,
            L.STALL_CURRENT_MA, L.DEPTH_FAULT_TOL_UM, L.RATE_ACCEPT_TOL_PCT, self.noise.table,
        )  # fmt: skip
        steady = self._steady_tables
        if steady is None or steady[0] != key:
            steady = self._steady_tables = (key, self._steady_state(wt))
        state = steady[1]
        if state is None:
            return None
        sensed_ma, load = state[4], state[5]
        span = min(now, self._deadline) - ph.t
        # the mean current of a step and the temperature it heads for (1 % and 1 mA spare)
        current_hi = sensed_ma * 1.01 + 1.0
        t_ss_hi = ph.ambient_c + ph.extra_heat_c + _HEAT_C_PER_A * current_hi * 1e-3
        v_lo = ph.v_oc - (current_hi + _ELECTRONICS_MA) * 1e-3 * span * _V_PER_AS - 1e-6
        # the temperature heads for t_ss exponentially: over the span it gains at most this
        rise = max(0.0, t_ss_hi - ph.temp_c) * (1.0 - _exp(-span / _THERMAL_TAU_S))
        temp_hi = ph.temp_c + rise + 1e-3
        noise = self.noise
        if (v_lo - load) * 1000.0 + _NOISE_BATTERY * noise.low >= L.BATTERY_STOP_MV + 1.0 and (
            temp_hi + _NOISE_TEMP * noise.high
        ) * 10.0 < L.TEMP_WARN_DC - 0.5:
            return state
        return None

    def _steady_state(self, wt: float) -> _Steady | None:
        """_quiet_until's part that holds while the run is steady: the depth, current and rate
        readings within their limits for every draw, and telemetry's tables of them."""
        ph, noise = self.physics, self.noise
        omega = ph.omega
        pos = ph.act_pos_um
        belief = (pos - self._cal_offset) / self._cal_gain if pos > 0.0 else 0.0
        belief += ph.depth_drift_um  # _sample adds them in this order
        lag = wt - omega  # current_ma(): the acceleration term is 0 at speed
        sensed_ma = (
            _MOTOR_NOLOAD_MA
            + _MOTOR_MA_PER_SPS * omega
            + (_MOTOR_ACCEL_MA_PER_SPS * (lag if lag > 0 else 0))
        )
        load = (sensed_ma + _ELECTRONICS_MA) * 1e-3 * _BATTERY_R_OHM
        low, high = noise.low, noise.high
        depth_set = self.depth_set_um
        if not (
            (not sensed_ma or sensed_ma + _NOISE_CURRENT * high <= L.STALL_CURRENT_MA - 1.0)
            and abs(belief + _NOISE_DEPTH * high - depth_set) <= L.DEPTH_FAULT_TOL_UM - 0.5
            and abs(belief + _NOISE_DEPTH * low - depth_set) <= L.DEPTH_FAULT_TOL_UM - 0.5
        ):
            return None
        run = self.run
        if run is not None and run.area != _BENCH_FIXTURE:  # _monitor_rate watches
            set_sps = self.rate_set_sps
            band = L.RATE_ACCEPT_TOL_PCT * set_sps * (1.0 - 1e-9)
            for z in (low, high):
                if not abs(omega * (1.0 + _NOISE_RATE * z) - set_sps) * 100.0 <= band:
                    return None
        depth_at, rate_at, current_at = _sample_tables(noise.table, belief, omega, sensed_ma)
        return depth_at, rate_at, current_at, belief, sensed_ma, load

    def next_deadline(self) -> float | None:
        due = min(self._next_tick, self._next_tel, self._deadline)
        if self.brownout_at is not None:
            due = min(due, self.brownout_at)
        if self.update.reset_at is not None:
            due = min(due, self.update.reset_at)
        return None if due == _INF else due

    def _reschedule(self) -> None:
        self._deadline = min(
            self._wd_at, self._run_end_at, self._retract_at, self._retract_limit_at,
            self._batch_due,
        )  # fmt: skip

    def _deadlines_due(self, t: float) -> None:
        if t >= self._wd_at:
            silent_ms = round((t - self._last_rx) * 1000.0)
            self._notify(Event(0, EventCode.WATCHDOG_EXPIRED, silent_ms, self._run_id()), t)
            self._fault(FaultCode.WATCHDOG, silent_ms, t)
        if t >= self._run_end_at:
            self._finish_run(self._time_limit_outcome, t)
        if t >= self._retract_at:
            self._retracted(t)
        if t >= self._retract_limit_at:
            self._check_retracted(t)
        if t >= self._batch_due:
            self._flush_batch(t)
        self._reschedule()

    def _retick(self, t: float) -> None:
        """Re-align the control tick: every 10 ms while anything moves, else every 0.5 s."""
        ph = self.physics
        active = self.state in _ACTIVE_STATES or ph.motor_drive or ph.act_pos_um != ph.act_target_um
        every = 1 if active else IDLE_TICK_EVERY
        k = (int((t - self.boot_t) / TICK_S) // every + 1) * every
        while self.boot_t + k * TICK_S <= t:
            k += every
        self._tick_k, self._tick_every = k, every
        self._next_tick = self.boot_t + k * TICK_S

    def _tick(self, t: float) -> None:
        self._sample(t)
        if self.state is _RUNNING:
            self._monitor_run(t)
            temp = self._m_temp_dc
            if temp >= L.TEMP_WARN_DC or (self._temp_warned and temp < TEMP_REARM_DC):
                self._monitor_health(t)
        else:
            self._monitor_health(t)
        if self._tick_every == 1 and self.state in _ACTIVE_STATES:
            self._tick_k += 1
            self._next_tick = self.boot_t + self._tick_k * TICK_S
            if self._next_tick <= t:
                self._retick(t)
        else:
            self._retick(t)

    # ================================================================== sensors and monitors
    def _sample(self, t: float) -> None:
        """Read the pen's own sensors (with their noise)."""
        ph = self.physics
        self._sampled_at = t
        n_depth, n_rate, n_current, n_temp, n_battery = self.noise.take(5)
        pos = ph.act_pos_um
        belief = (pos - self._cal_offset) / self._cal_gain if pos > 0.0 else 0.0
        self._m_depth = belief + ph.depth_drift_um + _NOISE_DEPTH * n_depth
        self._m_rate = ph.omega * (1.0 + _NOISE_RATE * n_rate)
        current = ph.current_ma()
        self._m_current = current + _NOISE_CURRENT * n_current if current else 0.0
        self._m_temp_dc = (ph.temp_c + _NOISE_TEMP * n_temp) * 10.0
        battery_v = ph.v_oc - (current + _ELECTRONICS_MA) * 1e-3 * _BATTERY_R_OHM
        self._m_battery = battery_v * 1000.0 + _NOISE_BATTERY * n_battery

    def _monitor_run(self, t: float) -> None:
        if self._m_current > L.STALL_CURRENT_MA:
            if self._over_since is None:
                self._over_since = t
            elif t - self._over_since > L.STALL_MAX_MS / 1000.0:
                self._fault(FaultCode.STALL, round(self._m_current), t)
                return
        else:
            self._over_since = None
        if self._m_battery < L.BATTERY_STOP_MV:
            self._fault(FaultCode.BATTERY_LOW, round(self._m_battery), t)
            return
        ph = self.physics
        in_position = ph.act_pos_um == ph.act_target_um
        if in_position and abs(self._m_depth - self.depth_set_um) > L.DEPTH_FAULT_TOL_UM:
            self._fault(FaultCode.DEPTH_ERROR, round(self._m_depth), t)
            return
        self._monitor_rate(t)

    def _monitor_rate(self, t: float) -> None:
        """Hazard 6: the stroke rate the pen's own sensor measures must stay within
        RATE_ACCEPT_TOL_PCT of the set rate, once the motor has had time to reach it."""
        run = self.run
        if run is None or run.area == _BENCH_FIXTURE:
            return  # calibration measures the drift: it must be able to run with it
        if t - self._rate_set_at < L.RATE_DRIFT_SETTLE_MS / 1000.0:
            return
        set_sps = self.rate_set_sps
        if abs(self._m_rate - set_sps) * 100.0 <= L.RATE_ACCEPT_TOL_PCT * set_sps:
            self._rate_off_since = None
        elif self._rate_off_since is None:
            self._rate_off_since = t
        elif t - self._rate_off_since >= L.RATE_DRIFT_HOLD_MS / 1000.0:
            self._fault(FaultCode.RATE_ERROR, round(self._m_rate * 100.0), t)

    def _monitor_health(self, t: float) -> None:
        temp = self._m_temp_dc
        if temp >= L.TEMP_FAULT_DC:
            if self.fault is not FaultCode.OVER_TEMPERATURE:
                self._fault(FaultCode.OVER_TEMPERATURE, round(temp), t)
        elif temp >= L.TEMP_WARN_DC:
            if not self._temp_warned:
                self._temp_warned = True
                self._notify(Event(0, EventCode.TEMPERATURE_WARNING, round(temp), 0), t)
        elif temp < TEMP_REARM_DC:
            self._temp_warned = False
        if self.state is not _RUNNING:
            self._scrub_calibration(t)

    def _scrub_calibration(self, t: float) -> None:
        """Re-check the stored calibration's CRC; report corruption once."""
        if self._cal_reported or not self.nvm.cal.corrupt:
            return
        self._cal_reported = True
        self._load_calibration()
        self._notify(self._fault_report(FaultCode.CALIBRATION_CORRUPT, 0, t), t)

    # ================================================================== runs
    def _start_run(self, m: Run, t: float) -> int:
        ph, slot = self.physics, self.slot
        self._run_count += 1
        run_id = self._run_count
        cart = slot.cartridge
        assert cart is not None  # checked by _check_run
        if slot.lock(self.nvm.cartridges):
            self._notify(Event(0, EventCode.CARTRIDGE_LOCKED, i32(cart.cartridge_id), run_id), t)
        target = m.strokes if m.mode is RunMode.STROKES else m.duration_ms
        self.run = RunRecord(
            run_id, m.area, m.mode, target, self.depth_set_um, self.rate_set_sps,
            cart.cartridge_id, t,
        )  # fmt: skip
        self._transition(Trigger.RUN)
        ph.phase = 0.0
        ph.drive_motor(self.rate_set_sps * self._cal_rate)
        self._rate_set_at, self._rate_off_since = t, None
        ph.move_actuator(self._raw_depth(self.depth_set_um))
        self._set_run_limits(m, t)
        self._wd_at = self._last_rx + self.watchdog_ms / 1000.0
        self._retract_at = self._retract_limit_at = _INF
        self._over_since = None
        self._reschedule()
        self._retick(t)
        self._notify(Event(0, EventCode.RUN_STARTED, i32(target), run_id), t)
        return run_id

    def _set_run_limits(self, m: Run, t: float) -> None:
        """The stroke count and the instant at which this run must end, and why."""
        done, worn = RunOutcome.COMPLETED, RunOutcome.CARTRIDGE_LIMIT
        strokes_left, ms_left = self.slot.remaining_strokes(), self.slot.remaining_ms()
        self._stroke_limit, self._stroke_limit_outcome = float(strokes_left), worn
        if m.mode is RunMode.STROKES and m.strokes <= strokes_left:
            self._stroke_limit, self._stroke_limit_outcome = float(m.strokes), done
        self._run_end_at, self._time_limit_outcome = t + ms_left / 1000.0, worn
        if m.mode is RunMode.DURATION and m.duration_ms <= ms_left:
            self._run_end_at, self._time_limit_outcome = t + m.duration_ms / 1000.0, done

    def _stroke_limit_reached(self, t: float) -> None:
        self._finish_run(self._stroke_limit_outcome, t)

    def _finish_run(self, outcome: RunOutcome, t: float) -> None:
        """A run ends without a fault: target reached, cartridge worn out, or Stop."""
        self._transition(Trigger.STOP)
        self._end_run(outcome, t)
        self._notify(Event(0, EventCode.STOPPED, int(outcome), self._run_id()), t)

    def _end_run(self, outcome: RunOutcome, t: float) -> None:
        """Motor braked and needles on their way home, then the exact count is reported."""
        run, ph = self.run, self.physics
        if run is None or run.end_t is not None:
            return
        strokes = _trunc(ph.phase)
        ph.brake()
        ph.move_actuator(0.0)
        run.end_t, run.strokes, run.outcome = t, strokes, outcome
        run_ms = (t - run.start_t) * 1000.0
        self.slot.add_usage(strokes, run_ms)
        self.nvm.lifetime_strokes += strokes
        self._stroke_limit = self._run_end_at = self._wd_at = _INF
        self._schedule_retraction(t)
        self._notify(
            RunReport(
                run.run_id, outcome, run.mode, run.target, strokes, round(run_ms), run.area,
                run.depth_um, run.rate_sps, run.cartridge_id,
            ),
            t,
        )  # fmt: skip
        if self.slot.state is CartridgeState.EXHAUSTED:
            cart_id = i32(run.cartridge_id)
            self._notify(Event(0, EventCode.CARTRIDGE_RETIRED, cart_id, run.run_id), t)

    def _schedule_retraction(self, t: float) -> None:
        """Needles on their way home. The arrival time comes from the actuator model; the
        50 ms limit does not trust it: a timer of its own reads the position sensor then."""
        ph = self.physics
        moving = ph.act_pos_um != ph.act_target_um
        if self._retract_at == _INF:  # a retraction already under way keeps its start
            self._stop_t = t
            if moving:
                self._retract_limit_at = t + L.RETRACT_MAX_MS / 1000.0
        self._retract_at = ph.actuator_arrival() if moving else _INF
        self._reschedule()
        self._retick(t)

    def actuator_speed_changed(self, t: float) -> None:
        """The actuator's speed changed (a fault injected at ``t``): a retraction under way
        arrives at another time. The 50 ms check keeps its own timer."""
        if self._retract_at != _INF:
            self._retract_at = self.physics.actuator_arrival()
            self._reschedule()

    def _check_retracted(self, t: float) -> None:
        """Hazard: needles left out after a stop. Not home RETRACT_MAX_MS after the stop
        (a worn or obstructed actuator): latch RETRACT_SLOW, motor off, keep retracting."""
        self._retract_limit_at = _INF
        if self.physics.act_pos_um > 0.0:
            self._fault(FaultCode.RETRACT_SLOW, round((t - self._stop_t) * 1000.0), t)

    def _retracted(self, t: float) -> None:
        ph = self.physics
        if abs(ph.act_pos_um - ph.act_target_um) > 1.0:  # the actuator's speed changed on the way
            self._retract_at = ph.actuator_arrival()
            return
        ph.act_pos_um = ph.act_target_um  # arrival time was computed from this very motion
        self._retract_at = self._retract_limit_at = _INF
        self.last_retract_ms = (t - self._stop_t) * 1000.0
        self._notify(Event(0, EventCode.RETRACTED, round(self.last_retract_ms), self._run_id()), t)
        if self.state is PenState.STOPPING:
            self._transition(Trigger.RETRACTED)
        self._retick(t)

    def _fault(self, code: FaultCode, value: int, t: float) -> None:
        """Motor off, needles home, fault latched until ClearFault (and its cause gone)."""
        was_running = self.state is PenState.RUNNING
        self._transition(Trigger.FAULT)
        if was_running:
            self._end_run(_RUN_OUTCOME_FOR_FAULT.get(code, RunOutcome.FAULT), t)
        else:
            self.physics.brake()
            self.physics.move_actuator(0.0)
            self._schedule_retraction(t)
        self.fault = code
        self._notify(self._fault_report(code, value, t), t)
        exit_reason = ServiceExit.WATCHDOG if code is FaultCode.WATCHDOG else ServiceExit.FAULT
        self._leave_service(exit_reason, t)
        if code is FaultCode.EMERGENCY_STOP:
            self._notify(Event(0, EventCode.EMERGENCY_STOP, value, self._run_id()), t)
        else:
            self._notify(Event(0, EventCode.FAULT_RAISED, int(code), self._run_id()), t)

    def _fault_report(self, code: FaultCode, value: int, t: float) -> FaultReport:
        return FaultReport(self._ms(t), code, i32(value), self._run_id())

    def _run_id(self) -> int:
        return 0 if self.run is None else self.run.run_id

    @property
    def correction(self) -> tuple[float, float, float]:
        """The calibration in use (RAM copy): depth factor, depth offset µm, rate factor."""
        return self._cal_gain, self._cal_offset, self._cal_rate

    @property
    def watchdog_deadline(self) -> float | None:
        """When the heartbeat watchdog trips if no valid frame arrives (None: not armed)."""
        return None if self._wd_at == _INF else self._wd_at

    def _raw_depth(self, depth_um: float) -> float:
        return depth_um * self._cal_gain + self._cal_offset

    # ================================================================== telemetry
    def _telemetry(self, t: float) -> None:
        self._tel_k += 1
        self._next_tel = self.boot_t + self._tel_k * self._tel_period
        if self._next_tel <= t:
            self._align_telemetry(t)
        seq = self.telemetry_seq
        self.telemetry_seq = (seq + 1) & _U32
        link = self.link
        batching = self._batch_max
        if batching:  # asked for on this epoch: reliable batches, for a named session only
            if self._open_session() is None:
                self._drop_batch()
                self.telemetry_skipped += 1
                return
        elif not link.accepts_datagram:  # no link, or replies and records wait: skip, count
            self.telemetry_skipped += 1
            return
        if self._sampled_at != t:  # the control tick at this instant has just read them
            self._sample(t)
        cart = self.slot.cartridge
        state = self.state
        if state is _RUNNING:
            strokes = int(self.physics.phase)
            cart_strokes = 0 if cart is None else cart.strokes_used + strokes
        else:
            strokes = self._last_strokes()
            cart_strokes = 0 if cart is None else cart.strokes_used
        temp = self._m_temp_dc
        temp = _trunc(temp + 0.5) if temp > 0.0 else -_trunc(0.5 - temp)
        depth, rate = self._m_depth, self._m_rate * 100.0
        current, battery = self._m_current, self._m_battery
        # Every value is clamped to its field's range right here (inline: this runs at up to
        # 1 kHz), so the validating constructor is skipped; the host's decoder checks them all.
        values = (
            _trunc((t - self.boot_t) * 1000.0 + 1e-6) & _U32,
            state,
            0 if depth <= 0.0 else (0xFFFF if depth >= 65534.5 else _trunc(depth + 0.5)),
            0 if rate <= 0.0 else (0xFFFF if rate >= 65534.5 else _trunc(rate + 0.5)),
            strokes & _U32,
            0 if current <= 0.0 else (0xFFFF if current >= 65534.5 else _trunc(current + 0.5)),
            -0x8000 if temp < -0x8000 else (0x7FFF if temp > 0x7FFF else temp),
            0 if battery <= 0.0 else (0xFFFF if battery >= 65534.5 else _trunc(battery + 0.5)),
            0 if cart is None else cart.cartridge_id,
            cart_strokes & _U32,
        )
        if batching:
            n = self._batch_n
            if n == 0:
                self._batch_first = seq
                self._batch_due = t + self._batch_delay
                if self._batch_due < self._deadline:
                    self._deadline = self._batch_due
            _pack_sample(self._batch, n * TELEMETRY_SAMPLE_BYTES, *values)
            self._batch_n = n = n + 1
            if n >= batching:
                self._flush_batch(t)
            return
        # live treatment data is for a paired host's session only (after its Hello: the schema
        # check), never for whoever opened a link; a datagram never goes ahead of a reply
        sample = _new_message(Telemetry, values)
        if self._open_session() is None or not link.send(sample, t, reliable=False):
            self.telemetry_skipped += 1

    def _flush_batch(self, t: float) -> None:
        """The batch being filled goes to the link, reliably — unless telemetry would pile up
        there (TELEMETRY_QUEUE_LIMIT) or no session takes it: then it is dropped and counted."""
        n = self._batch_n
        if n == 0:
            return
        self._batch_n = 0
        if self._batch_due != _INF:
            self._batch_due = _INF
            self._reschedule()
        link = self.link
        if link.in_flight + link.backlog >= TELEMETRY_QUEUE_LIMIT or self._open_session() is None:
            self.telemetry_skipped += n
            return
        if n != TELEMETRY_BATCH_SAMPLES:  # a short batch: the unused samples are zeros
            self._batch[n * TELEMETRY_SAMPLE_BYTES :] = _PADDING[n]
        body = bytes(self._batch)
        # built without the validating constructor: 1 <= n <= 8 and the body is 216 bytes
        link.send(_new_message(TelemetryBatch, (self._batch_first, n, body)), t)
        self.telemetry_batches += 1

    def _drop_batch(self) -> None:
        """Samples waiting for their batch are not sent (a new epoch, no session)."""
        if self._batch_n:
            self.telemetry_skipped += self._batch_n
            self._batch_n = 0
            self._batch_due = _INF
            self._reschedule()

    def _align_telemetry(self, t: float) -> None:
        if self.telemetry_hz == 0:
            self._next_tel = _INF
            return
        self._tel_period = 1.0 / self.telemetry_hz
        k = int((t - self.boot_t) / self._tel_period) + 1
        while self.boot_t + k * self._tel_period <= t:
            k += 1
        self._tel_k = k
        self._next_tel = self.boot_t + k * self._tel_period

    def _last_strokes(self) -> int:
        return 0 if self.run is None else self.run.strokes

    def _run_strokes(self) -> int:
        run = self.run
        if run is None:
            return 0
        return int(self.physics.phase) if run.end_t is None else run.strokes

    def _cartridge_strokes(self) -> int:
        cart = self.slot.cartridge
        if cart is None:
            return 0
        live = int(self.physics.phase) if self.state is PenState.RUNNING else 0
        return cart.strokes_used + live

    def _ms(self, t: float) -> int:
        return _trunc((t - self.boot_t) * 1000.0 + 1e-6) & _U32

    # ================================================================== bytes in, messages out
    def feed(self, data: bytes, t: float) -> None:
        """Bytes from the host at time ``t`` (the caller advanced to ``t`` first)."""
        link = self.link
        self._now = t
        self._sampled_at = -_INF  # a command may change what the sensors see at this instant
        link.receive_data(data, t)
        stats = link.counters
        rejected = stats.auth_failures + stats.auth_replays + stats.syns_refused
        # Only frames whose tag verified prove a paired host is there: they alone feed the
        # watchdog (a run is a paired host's), so nobody else — a bare SYN, a SYN claiming a
        # paired host's id, an unpaired link's heartbeats — keeps needles going once it is gone.
        proven = stats.frames_authenticated
        if proven != self._valid_frames:
            self._valid_frames = proven
            self._host_alive(t)
            self._last_auth_rx = t
        if rejected != self._auth_rejected:
            self._count_rejections(rejected, t)
        for event in link.events():
            if isinstance(event, MessageReceived):
                self._on_message(event.message, t)
            elif isinstance(event, BadMessage):
                self._on_bad_message(event.payload, event.error, t)
            elif isinstance(event, Connected):  # a new epoch: handshake and session anew
                self._handshake_epoch = self._session_epoch = None
                self._drop_batch()  # telemetry is never held for a later host
                self._batch_max = 0  # singles until this epoch's host asks for batches
                if self.service.held and self.service.session is None:
                    self._leave_service(ServiceExit.SESSION_ENDED, t)
                self._proven_at_connect = link.counters.frames_authenticated
                self._take_back_unacknowledged()

    def _admit_syn(self, host_id: int | None) -> bool:
        """A new link epoch. An unpaired party is let in — stopping the pen must work for
        anyone, even a host whose keystore is unreadable — but may only read and stop; when it
        displaces a paired host's live link, that host hears of it (a held event)."""
        link = self.link
        live = link.peer_id is not None and self._now - self._last_auth_rx < AUTH_HOLD_S
        if host_id is None and live:
            self._notify(Event(0, EventCode.UNPAIRED_CONNECT, 0, self._run_id()), self._now)
        claimed = link.peer_id
        proven = link.statistics().frames_authenticated > self._proven_at_connect
        quiet = self._now - self._unproven_reported >= D.UNPROVEN_REPORT_EVERY_S
        if claimed is not None and not proven and quiet:
            # the epoch now ending claimed a paired host and never showed its key
            self._unproven_reported = self._now
            event = Event(0, EventCode.UNPROVEN_CONNECT, i32(claimed), self._run_id())
            self._notify(event, self._now)
        return True

    def _count_rejections(self, rejected: int, t: float) -> None:
        """A burst of frames failing authentication is a security event (once a second)."""
        new, self._auth_rejected = rejected - self._auth_rejected, rejected
        if t - self._burst_start >= D.AUTH_BURST_WINDOW_S:
            self._burst_start, self._burst_count = t, 0
        before = self._burst_count
        self._burst_count += new
        if before < AUTH_BURST <= self._burst_count:
            event = Event(0, EventCode.AUTH_FAILURES, self._burst_count, self._run_id())
            self._notify(event, t)

    def _host_alive(self, t: float) -> None:
        self._last_rx = t
        if self.state is _RUNNING:
            self._wd_at = t + self.watchdog_ms / 1000.0
            self._reschedule()

    def _notify(self, message: Message, t: float, urgent: bool = False) -> None:
        """Queue a new pen → host message on the reliable link, an event stamped with the pen
        time it happened at (once: held and deferred messages keep their stamp)."""
        if isinstance(message, Event):
            message = message.replace(t_ms=self._ms(t))
        self._emit(message, t, urgent)

    def _emit(self, message: Message, t: float, urgent: bool = False) -> None:
        if self._deferred is not None:
            self._deferred.append((message, urgent))
            return
        if message.KIND is _NOTIFY and self._open_session() is None:
            self._hold(message)
            return
        if self._batch_n:  # samples taken before this message go ahead of it
            self._flush_batch(t)
        try:
            self.link.send(message, t, urgent=urgent)
        except MicropenError:  # backlog full: nobody has listened for thousands of messages
            self.notifications_lost += 1

    def _hold(self, message: Message) -> None:
        """Keep a notification until a host session can record it. Telemetry is a live
        measurement, not a record: it is never held. Security events, which anyone can
        provoke, have a small quota of their own, so a flood of refused commands never crowds
        out a run report or a fault report."""
        if isinstance(message, Telemetry):
            self.telemetry_skipped += 1
        elif isinstance(message, TelemetryBatch):
            self.telemetry_skipped += message.sample_count
        elif len(self._held) >= L.HELD_RECORDS_MAX:
            self.notifications_lost += 1
        elif isinstance(message, Event) and message.code in _SECURITY_EVENTS:
            if self._held_security >= L.HELD_SECURITY_EVENTS_MAX:
                self.notifications_lost += 1
                return
            self._held_security += 1
            self._held.append(message)
        else:
            self._held.append(message)

    def _take_back_unacknowledged(self) -> None:
        """A new link epoch: whatever the old host never acknowledged comes back to be held
        for the next session (replies are for the old host's commands: the same session
        re-sends those and is answered from the reply cache)."""
        leftovers = [m for m in self.link.take_unsent() if m.KIND is Kind.NOTIFY]
        held, self._held, self._held_security = self._held, [], 0
        for message in leftovers + held:
            self._hold(message)

    def _release_held(self) -> None:
        """A host session is open: hand it everything held, oldest first, after the reply."""
        held, self._held, self._held_security = self._held, [], 0
        assert self._deferred is not None  # called from a command handler
        self._deferred.extend((message, False) for message in held)

    def _on_bad_message(self, payload: bytes, error: RemoteProtocolError, t: float) -> None:
        """A command the schema refuses. A field out of range that declares its refusal is
        answered with that code, the value and the bound (``Run`` for area 12 is
        ``UNKNOWN_AREA``, not ``MALFORMED``); the first such field in declared order wins."""
        cmd_id = int.from_bytes(payload[1:5], "little") if len(payload) >= 5 else 0
        if isinstance(error, FieldOutOfRange) and error.refusal:
            refusal = ErrorCode(error.refusal)
            self._notify(Nak(cmd_id, refusal, i32(error.value), i32(error.limit)), t)
            return
        known = bool(payload) and payload[0] in REGISTRY
        code = ErrorCode.MALFORMED if known else ErrorCode.UNKNOWN_COMMAND
        self._notify(Nak(cmd_id, code, payload[0] if payload else 0, 0), t)

    def _on_message(self, m: Message, t: float) -> None:
        kind = m.KIND
        if kind is _HOST_NOTIFY:
            return  # heartbeat: its frame already fed the watchdog
        if kind is not _COMMAND and kind is not _SIM_COMMAND:
            body = m.encode()[1:5]
            cmd_id = int.from_bytes(body, "little") if len(body) == 4 else 0
            self._notify(Nak(cmd_id, ErrorCode.UNKNOWN_COMMAND, m.ID, 0), t)
            return
        cls = type(m)
        session = None if cls in NEVER_CACHED else self._open_session()
        if session is not None:
            cached = self.replies.lookup(session, m)
            if cached is not None:  # this session re-sent this very command: answer, not redo
                self.duplicates_answered += 1
                self._notify(cached, t)
                return
        self._deferred = []
        try:
            reply, cache = self._execute(cls, m, t)
        finally:
            deferred, self._deferred = self._deferred, None
        if cache and session is not None:
            self.replies.store(session, m, reply)
        self._notify(reply, t, urgent=cls is EmergencyStop)
        for message, urgent in deferred:
            self._emit(message, t, urgent)

    def _open_session(self) -> int | None:
        """The host session named on this link epoch after its Hello (None: no cache). Only
        a paired host's session gets records and a reply cache."""
        epoch = self.link.epoch
        if self._handshake_epoch != epoch or self._session_epoch != epoch:
            return None
        if self.link.peer_id is None:
            return None
        return self._session

    def _execute(self, cls: type[Message], m: Any, t: float) -> tuple[Message, bool]:
        """The reply, and whether it belongs in the reply cache."""
        handler = _HANDLERS.get(cls)
        if handler is None:
            return Nak(m[0], ErrorCode.UNKNOWN_COMMAND, m.ID, 0), True
        if cls not in NO_HANDSHAKE_NEEDED and self._handshake_epoch != self.link.epoch:
            self._notify(Event(0, EventCode.SECURITY_DENIED, m.ID, 0), t)
            return Nak(m[0], ErrorCode.NOT_CONNECTED, m.ID, 0), False
        if cls not in NO_PAIRING_NEEDED and self.link.peer_id is None:
            self._notify(Event(0, EventCode.SECURITY_DENIED, m.ID, self._run_id()), t)
            return Nak(m[0], ErrorCode.NOT_AUTHORIZED, m.ID, 0), False
        if self.state not in ALLOWED_STATES[cls]:
            if self.state is PenState.FAULT:
                return Nak(m[0], ErrorCode.FAULT_ACTIVE, int(self.fault), 0), True
            return Nak(m[0], ErrorCode.BAD_STATE, int(self.state), 0), True
        return handler(self, m, t), True

    @staticmethod
    def _nak(cmd_id: int, refusal: Refusal) -> Nak:
        return Nak(cmd_id, refusal.error, refusal.value, refusal.limit)

    # ================================================================== command handlers
    def _on_hello(self, m: Hello, t: float) -> Message:
        if m.protocol_version != PROTOCOL_VERSION:
            return Nak(m.cmd_id, ErrorCode.SCHEMA_MISMATCH, m.protocol_version, PROTOCOL_VERSION)
        if m.schema_hash != _SCHEMA_HASH:
            return Nak(m.cmd_id, ErrorCode.SCHEMA_MISMATCH, i32(m.schema_hash), i32(_SCHEMA_HASH))
        self._handshake_epoch = self.link.epoch  # a session named on this epoch stays named
        return self.identity(m.cmd_id)

    def identity(self, cmd_id: int = 0) -> Identity:
        u = self.unit
        return Identity(
            cmd_id, PROTOCOL_VERSION, _SCHEMA_HASH, u.model, u.serial, *u.firmware,
            u.hardware_revision, L.NEEDLE_COUNT, u.capabilities, L.DEPTH_MIN_UM, L.DEPTH_MAX_UM,
            L.DEPTH_SOFT_CAP_UM, L.RATE_MIN_SPS, L.RATE_MAX_SPS, self.boot_id,
        )  # fmt: skip

    def _on_open_session(self, m: OpenSession, t: float) -> Message:
        if self.service.held and m.session != self.service.session:
            self._leave_service(ServiceExit.SESSION_ENDED, t)  # another host takes the pen
        self._session, self._session_epoch = m.session, self.link.epoch
        if self.link.peer_id is None:  # not a paired host: no records, no reply cache
            return Ack(m.cmd_id, 0)
        resumed = self.replies.open(m.session)
        self._release_held()
        return Ack(m.cmd_id, int(resumed))

    def _on_get_status(self, m: GetStatus, t: float) -> Message:
        return self.status(m.cmd_id, t)

    def status(self, cmd_id: int, t: float) -> Status:
        self._sample(t)
        run, slot = self.run, self.slot
        cart = slot.cartridge
        return Status(
            cmd_id,
            self.state,
            self._reported_fault(),
            self.depth_set_um,
            self.rate_set_sps,
            self.soft_cap_override,
            self.watchdog_ms,
            self.telemetry_hz,
            self._run_id(),
            0 if run is None else run.area,
            RunMode.STROKES if run is None else run.mode,
            0 if run is None else run.target,
            self._run_strokes(),
            RunOutcome.NONE if run is None else run.outcome,
            self.nvm.lifetime_strokes & _U32,
            0 if cart is None else cart.cartridge_id,
            slot.state,
            self._cartridge_strokes() & _U32,
            _clamp(self._m_battery, 0xFFFF),
            max(-0x8000, min(0x7FFF, round(self._m_temp_dc))),
            int(self.nvm.cal.calibrated),
            self.boot_id,
            self._ms(t),
            int(self._in_service()),
        )

    def _reported_fault(self) -> FaultCode:
        if self.state is PenState.FAULT:
            return self.fault
        return FaultCode.CALIBRATION_CORRUPT if self.nvm.cal.corrupt else FaultCode.NONE

    def _on_set_depth(self, m: SetDepth, t: float) -> Message:
        refusal = self.check_depth(m.depth_um, bool(m.soft_cap_override))
        if refusal is not None:
            return self._nak(m.cmd_id, refusal)
        self.depth_set_um, self.soft_cap_override = m.depth_um, m.soft_cap_override
        if self.state is PenState.RUNNING:
            self.physics.move_actuator(self._raw_depth(m.depth_um))
        if m.depth_um > L.DEPTH_SOFT_CAP_UM:
            self._notify(Event(0, EventCode.SOFT_CAP_OVERRIDE, m.depth_um, self._run_id()), t)
        return Ack(m.cmd_id, 0)

    def check_depth(self, depth: int, override: bool) -> Refusal | None:
        """The depth envelope, and the area's maximum while a run is going."""
        if depth != 0 and depth < L.DEPTH_MIN_UM:
            return Refusal.of(ErrorCode.DEPTH_OUT_OF_RANGE, depth, L.DEPTH_MIN_UM)
        if depth > L.DEPTH_MAX_UM:
            return Refusal.of(ErrorCode.DEPTH_OUT_OF_RANGE, depth, L.DEPTH_MAX_UM)
        if depth > L.DEPTH_SOFT_CAP_UM and not override:
            return Refusal.of(ErrorCode.SOFT_CAP_NEEDS_OVERRIDE, depth, L.DEPTH_SOFT_CAP_UM)
        if self.state is PenState.RUNNING and self.run is not None:
            if depth == 0:
                return Refusal.of(ErrorCode.DEPTH_OUT_OF_RANGE, depth, L.DEPTH_MIN_UM)
            limit = L.AREAS[L.Area(self.run.area)].depth_limit_um(override)
            if depth > limit:
                return Refusal.of(ErrorCode.DEPTH_ABOVE_AREA_MAX, depth, limit)
        return None

    def _on_set_rate(self, m: SetRate, t: float) -> Message:
        rate = m.rate_sps
        if not L.RATE_MIN_SPS <= rate <= L.RATE_MAX_SPS:
            limit = L.RATE_MIN_SPS if rate < L.RATE_MIN_SPS else L.RATE_MAX_SPS
            return Nak(m.cmd_id, ErrorCode.RATE_OUT_OF_RANGE, rate, limit)
        if self.state is PenState.RUNNING and self.run is not None:
            allowed = L.AREAS[L.Area(self.run.area)].allowed_rates()
            if rate not in allowed:
                return Nak(m.cmd_id, ErrorCode.RATE_NOT_ALLOWED_FOR_AREA, rate, max(allowed))
            self.physics.drive_motor(rate * self._cal_rate)
            self._rate_set_at, self._rate_off_since = t, None
        self.rate_set_sps = rate
        return Ack(m.cmd_id, 0)

    def _on_run(self, m: Run, t: float) -> Message:
        self._sample(t)
        refusal = self.check_run(m)
        if refusal is not None:
            return self._nak(m.cmd_id, refusal)
        return Ack(m.cmd_id, self._start_run(m, t))

    def check_run(self, m: Run) -> Refusal | None:
        """Every condition a run must meet, in the order the docs list them."""
        try:
            profile = L.AREAS[L.Area(m.area)]
        except ValueError:
            return Refusal.of(ErrorCode.UNKNOWN_AREA, m.area, len(L.AREAS))
        refusal = check_area(profile.area, self._in_service())
        if refusal is not None:
            return refusal
        if m.mode is RunMode.STROKES and not L.STROKES_MIN <= m.strokes <= L.STROKES_MAX:
            limit = L.STROKES_MIN if m.strokes < L.STROKES_MIN else L.STROKES_MAX
            return Refusal.of(ErrorCode.STROKES_OUT_OF_RANGE, m.strokes, limit)
        if m.mode is RunMode.DURATION and not (
            L.RUN_DURATION_MIN_MS <= m.duration_ms <= L.RUN_DURATION_MAX_MS
        ):
            limit = (
                L.RUN_DURATION_MIN_MS
                if m.duration_ms < L.RUN_DURATION_MIN_MS
                else (L.RUN_DURATION_MAX_MS)
            )
            return Refusal.of(ErrorCode.DURATION_OUT_OF_RANGE, m.duration_ms, limit)
        if not self.nvm.cal.calibrated:
            return Refusal.of(ErrorCode.UNCALIBRATED)
        depth, override = self.depth_set_um, bool(self.soft_cap_override)
        if depth < L.DEPTH_MIN_UM:
            return Refusal.of(ErrorCode.DEPTH_OUT_OF_RANGE, depth, L.DEPTH_MIN_UM)
        refusal = self.check_depth(depth, override)
        if refusal is not None:
            return refusal
        if depth > profile.depth_limit_um(override):
            return Refusal.of(
                ErrorCode.DEPTH_ABOVE_AREA_MAX, depth, profile.depth_limit_um(override)
            )
        allowed = profile.allowed_rates()
        if self.rate_set_sps not in allowed:
            return Refusal.of(ErrorCode.RATE_NOT_ALLOWED_FOR_AREA, self.rate_set_sps, max(allowed))
        refusal = self.slot.check_run()
        if refusal is not None:
            return refusal
        if self._m_battery < L.BATTERY_START_MIN_MV:
            return Refusal.of(ErrorCode.BATTERY_LOW, round(self._m_battery), L.BATTERY_START_MIN_MV)
        if self._m_temp_dc > L.TEMP_LIMIT_DC:
            return Refusal.of(ErrorCode.OVER_TEMPERATURE, round(self._m_temp_dc), L.TEMP_LIMIT_DC)
        return None

    def _on_stop(self, m: Stop, t: float) -> Message:
        run_id = 0
        if self.state is PenState.RUNNING and self.run is not None:
            run_id = self.run.run_id
            self._finish_run(RunOutcome.STOPPED, t)
        return Ack(m.cmd_id, run_id)

    def _on_emergency_stop(self, m: EmergencyStop, t: float) -> Message:
        strokes = int(self.physics.phase) if self.state is PenState.RUNNING else 0
        if not (self.state is PenState.FAULT and self.fault is FaultCode.EMERGENCY_STOP):
            self._fault(FaultCode.EMERGENCY_STOP, strokes, t)
        return Ack(m.cmd_id, self._run_id())

    def _on_set_watchdog(self, m: SetWatchdog, t: float) -> Message:
        ms = m.timeout_ms
        if not L.HEARTBEAT_MIN_MS <= ms <= L.HEARTBEAT_MAX_MS:
            limit = L.HEARTBEAT_MIN_MS if ms < L.HEARTBEAT_MIN_MS else L.HEARTBEAT_MAX_MS
            return Nak(m.cmd_id, ErrorCode.WATCHDOG_OUT_OF_RANGE, ms, limit)
        self.watchdog_ms = ms
        if self.state is PenState.RUNNING:
            self._wd_at = self._last_rx + ms / 1000.0
            self._reschedule()
        return Ack(m.cmd_id, 0)

    def _on_set_telemetry(self, m: SetTelemetry, t: float) -> Message:
        if m.rate_hz > L.TELEMETRY_MAX_HZ:
            return Nak(m.cmd_id, ErrorCode.TELEMETRY_OUT_OF_RANGE, m.rate_hz, L.TELEMETRY_MAX_HZ)
        self.telemetry_hz = m.rate_hz
        self._align_telemetry(t)
        return Ack(m.cmd_id, 0)

    def _on_set_telemetry_batch(self, m: SetTelemetryBatch, t: float) -> Message:
        if not self.unit.capabilities & Capability.TELEMETRY_BATCH:  # a pen from before it
            return Nak(m.cmd_id, ErrorCode.UNKNOWN_COMMAND, m.ID, 0)
        self._flush_batch(t)  # what was taken so far goes out as it was asked for
        self._batch_max = m.max_samples
        self._batch_delay = m.max_delay_ms / 1000.0
        return Ack(m.cmd_id, m.max_samples)

    def _on_get_cartridge(self, m: GetCartridge, t: float) -> Message:
        return self.slot.info(m.cmd_id, self._cartridge_strokes(), self._cartridge_ms(t))

    def _cartridge_ms(self, t: float) -> int:
        cart, run = self.slot.cartridge, self.run
        if cart is None:
            return 0
        live = (t - run.start_t) * 1000.0 if run is not None and run.end_t is None else 0.0
        return int(cart.run_ms_used + live)

    def _on_cal_read(self, m: CalRead, t: float) -> Message:
        return self.nvm.cal.cal_data(m.cmd_id, m.bank)

    def _on_cal_write(self, m: CalWrite, t: float) -> Message:
        refusal = self.nvm.cal.write_staging(CalRecord.from_write(m))
        return Ack(m.cmd_id, 0) if refusal is None else self._nak(m.cmd_id, refusal)

    def _on_cal_commit(self, m: CalCommit, t: float) -> Message:
        refusal = self.nvm.cal.commit(m.crc)
        if refusal is not None:
            return self._nak(m.cmd_id, refusal)
        self._load_calibration()
        self._cal_reported = False
        active = self.nvm.cal.active
        counter = 0 if active is None else active.counter
        self._notify(Event(0, EventCode.CALIBRATION_COMMITTED, i32(counter), 0), t)
        return Ack(m.cmd_id, counter)

    def _on_clear_fault(self, m: ClearFault, t: float) -> Message:
        if self.state is not PenState.FAULT:
            return Ack(m.cmd_id, 0)
        self._sample(t)
        code = self.fault
        standing = self._standing_fault(code)
        if standing is not None:
            return Nak(m.cmd_id, ErrorCode.FAULT_ACTIVE, int(standing), 0)
        self._transition(Trigger.CLEAR)
        self.fault = FaultCode.NONE
        self._retick(t)
        self._notify(Event(0, EventCode.FAULT_CLEARED, int(code), self._run_id()), t)
        return Ack(m.cmd_id, int(code))

    def _standing_fault(self, code: FaultCode) -> FaultCode | None:
        """The fault that still stands: the latched one's cause, or a wet or jammed pen
        whatever was latched last (an e-stop must not hide fluid ingress)."""
        ph = self.physics
        gone: dict[FaultCode, Callable[[], bool]] = {
            FaultCode.STALL: lambda: not ph.stalled,
            FaultCode.OVER_TEMPERATURE: lambda: self._m_temp_dc < L.TEMP_LIMIT_DC,
            FaultCode.BATTERY_LOW: lambda: self._m_battery >= L.BATTERY_STOP_MV,
            FaultCode.FLUID_INGRESS: lambda: not ph.fluid_ingress,
            FaultCode.DEPTH_ERROR: lambda: abs(ph.depth_drift_um) <= L.DEPTH_FAULT_TOL_UM,
            FaultCode.RETRACT_SLOW: lambda: ph.act_pos_um <= 0.0,
        }
        for candidate in (code, FaultCode.FLUID_INGRESS, FaultCode.STALL):
            check = gone.get(candidate)
            if check is not None and not check():
                return candidate
        return None

    # ------------------------------------------------------------------ service mode
    def _on_set_service_mode(self, m: SetServiceMode, t: float) -> Message:
        if not m.enabled:
            self._leave_service(ServiceExit.ASKED, t)
            return Ack(m.cmd_id, 0)
        if self._in_service():
            return Ack(m.cmd_id, 1)  # already this session's: idempotent
        if self.state is not PenState.IDLE:
            return Nak(m.cmd_id, ErrorCode.BAD_STATE, int(self.state), int(PenState.IDLE))
        if self.service.held:  # another host's: it ends, and says so, before this one begins
            self._leave_service(ServiceExit.SESSION_ENDED, t)
        self.service.enter(self._open_session(), self.link.epoch)
        self._notify(Event(0, EventCode.SERVICE_MODE_ENTERED, 0, self._run_id()), t)
        return Ack(m.cmd_id, 1)

    def _in_service(self) -> bool:
        """Held by the session named on this link epoch (not merely the last one named: a
        host that never names its session must not inherit another's service mode)."""
        return self.service.held_by(self._open_session(), self.link.epoch)

    def _leave_service(self, reason: ServiceExit, t: float) -> None:
        """End service mode; a bench-fixture run still going stops with it."""
        if not self.service.leave():
            return
        on_fixture = self.run is not None and self.run.area == L.Area.BENCH_FIXTURE
        if self.state is PenState.RUNNING and on_fixture:
            self._finish_run(RunOutcome.STOPPED, t)
        self._notify(Event(0, EventCode.SERVICE_MODE_LEFT, int(reason), self._run_id()), t)

    # ------------------------------------------------------------------ simulator commands
    # ------------------------------------------------------------------ pairing
    def _on_pair_request(self, m: PairRequest, t: float) -> Message:
        mode = self.pairing_mode
        if not mode.is_open(t):
            self._notify(Event(0, EventCode.SECURITY_DENIED, m.ID, 0), t)
            return Nak(m.cmd_id, ErrorCode.PAIRING_CLOSED, 0, 0)
        if mode.pending is not None or m.host_id in self.nvm.pairings.hosts:
            # one request per press of the button (a second party cannot slip in), and a
            # paired host id is never re-keyed by whoever claims it (revoke it first)
            self._notify(Event(0, EventCode.SECURITY_DENIED, m.ID, 0), t)
            busy = mode.pending is not None
            return Nak(m.cmd_id, ErrorCode.PAIRING_BUSY, int(busy), 0)
        pen_public = mode.request(m.host_id, m.host_public, m.host_name)
        return PairOffer(m.cmd_id, self.nvm.pairings.pen_id, pen_public)

    def _on_pair_confirm(self, m: PairConfirm, t: float) -> Message:
        mode = self.pairing_mode
        if not mode.is_open(t):
            return Nak(m.cmd_id, ErrorCode.PAIRING_CLOSED, 0, 0)
        store = self.nvm.pairings
        pending = mode.pending
        full = len(store.hosts) >= MAX_PAIRINGS_HELD
        if full and pending is not None and pending.host_id not in store.hosts:
            return Nak(m.cmd_id, ErrorCode.PAIRINGS_FULL, len(store.hosts), MAX_PAIRINGS_HELD)
        if pending is not None and pending.host_id == m.host_id and not pending.accepted:
            return Nak(m.cmd_id, ErrorCode.PAIRING_NOT_ACCEPTED, 0, 0)
        paired = mode.confirm(m.host_id, m.proof)
        if paired is None:
            self._notify(Event(0, EventCode.SECURITY_DENIED, m.ID, 0), t)
            return Nak(m.cmd_id, ErrorCode.PAIRING_FAILED, 0, 0)
        store.add(paired)
        self._notify(Event(0, EventCode.PAIRED, i32(m.host_id), 0), t)
        return Ack(m.cmd_id, store.pen_id)

    def _on_get_pairing(self, m: GetPairing, t: float) -> Message:
        listing = self.nvm.pairings.listing()
        if m.position >= len(listing):
            return Pairing(m.cmd_id, m.position, len(listing), 0, "")
        found = listing[m.position]
        return Pairing(m.cmd_id, m.position, len(listing), found.host_id, found.name)

    def _on_unpair(self, m: Unpair, t: float) -> Message:
        store = self.nvm.pairings
        if store.remove(m.host_id):
            self._notify(Event(0, EventCode.UNPAIRED, i32(m.host_id), 0), t)
        return Ack(m.cmd_id, len(store.hosts))

    def add_pairing(self, pairing: HostPairing) -> bool:
        """The bench's (or factory's) own pairing of a host: a local act, not over the link."""
        return self.nvm.pairings.add(pairing)

    # ------------------------------------------------------------------ firmware update
    def _on_fw_begin(self, m: FwBegin, t: float) -> Message:
        return self._update_reply(self.update.begin(m, t), t)

    def _on_fw_chunk(self, m: FwChunk, t: float) -> Message:
        return self._update_reply(self.update.chunk(m, t), t)

    def _on_fw_finish(self, m: FwFinish, t: float) -> Message:
        return self._update_reply(self.update.finish(m.cmd_id, t), t)

    def _on_fw_test_boot(self, m: FwTestBoot, t: float) -> Message:
        return self._update_reply(self.update.test_boot(m.cmd_id, t), t)

    def _on_fw_confirm(self, m: FwConfirm, t: float) -> Message:
        return self._update_reply(self.update.confirm(m.cmd_id), t)

    def _on_fw_get_slot(self, m: FwGetSlot, t: float) -> Message:
        return self.update.slot(m.cmd_id, m.slot, t)

    def _update_reply(self, reply: Message, t: float) -> Message:
        """The updater's security events (refused images, confirmations) go out as events."""
        events, self.update.events = self.update.events, []
        for code, value in events:
            self._notify(Event(0, code, value, 0), t)
        return reply

    def _on_sim_set(self, m: SimSet, t: float) -> Message:
        refusal = self.apply_sim_param(m.param, m.value, t)
        return Ack(m.cmd_id, int(m.param)) if refusal is None else self._nak(m.cmd_id, refusal)

    def _on_sim_get(self, m: SimGet, t: float) -> Message:
        if PARAM_SPECS[m.param].group == "link" and self.link_faults is None:
            return Nak(m.cmd_id, ErrorCode.UNKNOWN_COMMAND, int(m.param), 0)
        return SimParamValue(m.cmd_id, m.param, i32(self.sim_param(m.param, t)))

    def _on_sim_mount(self, m: SimMountCartridge, t: float) -> Message:
        cartridge = None
        if m.cartridge_id:
            cartridge = Cartridge(m.cartridge_id, m.lot, m.manufactured_day, m.expiry_day)
        self.mount(cartridge, t)
        return Ack(m.cmd_id, int(self.slot.state))

    def apply_sim_param(self, param: SimParam, value: int, t: float) -> Refusal | None:
        """SimSet's effect: validated and applied by faults.apply_param, then announced."""
        refusal = apply_param(self, param, value, t)
        if refusal is None:
            self._sampled_at = -_INF
            self._notify(Event(0, EventCode.SIM_PARAMETER_CHANGED, int(param), self._run_id()), t)
        return refusal

    def sim_param(self, param: SimParam, t: float) -> int:
        """The current value of a simulator parameter (what SimGet answers)."""
        return read_param(self, param, t)

    # ------------------------------------------------------------------ physical events
    def mount(self, cartridge: Cartridge | None, t: float) -> None:
        """A cartridge is taken off and/or put on (``None``: only taken off)."""
        old = self.bay.cartridge
        records = self.nvm.cartridges
        if old is not None:
            if self.state is PenState.RUNNING:
                self.slot.retire(records)
                self._fault(FaultCode.CARTRIDGE_REMOVED, i32(old.cartridge_id), t)
            records.locked_id = 0  # this mounting is over: putting it back is a re-mount
            self.bay.cartridge = None
            self.slot.assess(None, self.unit.today(t), records)
            self._notify(Event(0, EventCode.CARTRIDGE_REMOVED, i32(old.cartridge_id), 0), t)
        if cartridge is not None:
            self.bay.cartridge = cartridge
            self.slot.assess(cartridge, self.unit.today(t), records)
            self._notify(Event(0, EventCode.CARTRIDGE_MOUNTED, i32(cartridge.cartridge_id), 0), t)

    def fluid_ingress(self, t: float) -> None:
        """The ingress sensor tripped: retire the cartridge, fault, needles home."""
        cart = self.slot.cartridge
        self.slot.retire(self.nvm.cartridges)
        if cart is not None:
            self._notify(Event(0, EventCode.CARTRIDGE_RETIRED, i32(cart.cartridge_id), 0), t)
        self._fault(FaultCode.FLUID_INGRESS, 1, t)


def _u16(value: float) -> int:
    """A reading as its u16 telemetry field (what _telemetry writes)."""
    return 0 if value <= 0.0 else (0xFFFF if value >= 65534.5 else _trunc(value + 0.5))


def _sample_tables(
    table: list[float], belief: float, omega: float, sensed_ma: float
) -> tuple[list[int], list[int], list[int]]:
    """Telemetry's depth, rate and current fields for every draw of the noise table, in a
    steady state (_sample's readings and _telemetry's rounding, value for value)."""
    return (
        [_u16(belief + _NOISE_DEPTH * z) for z in table],
        [_u16(omega * (1.0 + _NOISE_RATE * z) * 100.0) for z in table],
        [_u16(sensed_ma + _NOISE_CURRENT * z if sensed_ma else 0.0) for z in table],
    )


def _clamp(value: float, hi: int) -> int:
    v = int(value + 0.5) if value > 0.0 else 0
    return v if v < hi else hi


_HANDLERS: dict[type[Message], _Handler] = {
    Hello: Firmware._on_hello,
    GetStatus: Firmware._on_get_status,
    SetDepth: Firmware._on_set_depth,
    SetRate: Firmware._on_set_rate,
    Run: Firmware._on_run,
    Stop: Firmware._on_stop,
    EmergencyStop: Firmware._on_emergency_stop,
    SetWatchdog: Firmware._on_set_watchdog,
    SetTelemetry: Firmware._on_set_telemetry,
    SetTelemetryBatch: Firmware._on_set_telemetry_batch,
    GetCartridge: Firmware._on_get_cartridge,
    CalRead: Firmware._on_cal_read,
    CalWrite: Firmware._on_cal_write,
    CalCommit: Firmware._on_cal_commit,
    ClearFault: Firmware._on_clear_fault,
    OpenSession: Firmware._on_open_session,
    SimSet: Firmware._on_sim_set,
    SimGet: Firmware._on_sim_get,
    SimMountCartridge: Firmware._on_sim_mount,
    FwBegin: Firmware._on_fw_begin,
    FwChunk: Firmware._on_fw_chunk,
    FwFinish: Firmware._on_fw_finish,
    FwTestBoot: Firmware._on_fw_test_boot,
    FwConfirm: Firmware._on_fw_confirm,
    FwGetSlot: Firmware._on_fw_get_slot,
    PairRequest: Firmware._on_pair_request,
    PairConfirm: Firmware._on_pair_confirm,
    GetPairing: Firmware._on_get_pairing,
    Unpair: Firmware._on_unpair,
    SetServiceMode: Firmware._on_set_service_mode,
}
assert set(_HANDLERS) == set(ALLOWED_STATES), "every command needs a handler and a state rule"
