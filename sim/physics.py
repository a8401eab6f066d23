"""The pen's physical state: motor, depth actuator, heat, battery and the unit's own errors.

Simple, documented models (``docs/simulator.md`` derives them), integrated exactly over a step
so the step size only limits how often the firmware looks, not how accurate the physics is:

* **Motor**: first-order lag (``MOTOR_TAU_S``) toward ``commanded_raw * (1 + speed_gain_err)``;
  a jam (stall injection) pulls the target to 0 and the current to ``MOTOR_STALL_MA``. Strokes
  are whole turns of the cam: the motor phase, integrated in closed form. Switching the drive
  off brakes the cam at once (dynamic braking + cam park; the coast of a fraction of a turn is
  not modelled), so no stroke happens after a stop.
* **Depth actuator**: moves at ``ACTUATOR_SPEED_UM_S`` toward its raw target; the needles'
  true extension is ``raw * (1 + depth_gain_err) + depth_offset_err`` (0 at the home stop).
* **Heat**: first-order toward ``ambient + extra + HEAT_C_PER_A * current``.
* **Battery**: open-circuit voltage falls linearly with charge drawn; the terminal voltage
  sags by ``current * BATTERY_R_OHM``.
* **Noise**: the pen's own sensors add seeded Gaussian noise from a fixed table (cheap and
  reproducible); the bench instruments have their own streams (sim/bench.py).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["Noise", "Physics", "UnitErrors"]

# --- per-unit manufacturing errors: bounds; each unit draws its own from its seed ------------
DEPTH_GAIN_ERR_PPM_MAX = 30_000  # ±3 %
DEPTH_OFFSET_ERR_UM_MAX = 80  # ±0.08 mm
SPEED_GAIN_ERR_PPM_MAX = 40_000  # ±4 %
ERROR_MAGNITUDE_MIN_FRACTION = 0.5  # a unit is off by at least half the bound (see docs)

# --- motor --------------------------------------------------------------------------------------
MOTOR_TAU_S = 0.030  # speed lag time constant (assumed)
MOTOR_NOLOAD_MA = 150.0
MOTOR_MA_PER_SPS = 2.5  # 110 strokes/s ≈ 425 mA
MOTOR_ACCEL_MA_PER_SPS = 3.0  # extra current while below the target speed
MOTOR_STALL_MA = 1400.0  # a jammed motor draws this (over the 900 mA threshold)
MOTOR_SETTLED_SPS = 1e-6  # closer than this to the target counts as there

# --- depth actuator -----------------------------------------------------------------------------
ACTUATOR_SPEED_UM_S = 60_000.0  # 60 mm/s: the full 2.7 mm travel takes 45 ms (< 50 ms retract)
ACTUATOR_TRAVEL_UM = 2700.0  # mechanical stop; home is 0

# --- thermal ------------------------------------------------------------------------------------
AMBIENT_DEFAULT_C = 25.0
THERMAL_TAU_S = 120.0  # handpiece surface time constant (assumed)
HEAT_C_PER_A = 25.0  # steady rise per ampere of motor current (425 mA → +10.6 °C)

# --- battery ------------------------------------------------------------------------------------
BATTERY_CAPACITY_AH = 0.8
BATTERY_FULL_V = 4.2
BATTERY_EMPTY_V = 3.0
BATTERY_START_V = 4.05
BATTERY_R_OHM = 0.15
ELECTRONICS_MA = 30.0  # drawn whenever the pen is on
_V_PER_AS = (BATTERY_FULL_V - BATTERY_EMPTY_V) / (BATTERY_CAPACITY_AH * 3600.0)

# --- the pen's own sensors: 1-sigma noise -------------------------------------------------------
NOISE_DEPTH_UM = 2.0
NOISE_RATE_FRACTION = 0.001
NOISE_CURRENT_MA = 4.0
NOISE_TEMP_C = 0.05
NOISE_BATTERY_MV = 2.0
NOISE_TABLE_SIZE = 4096  # power of two


@dataclass(frozen=True, slots=True)
class UnitErrors:
    """One unit's hidden manufacturing errors (what calibration must find)."""

    depth_gain_ppm: int = 0
    depth_offset_um: int = 0
    speed_gain_ppm: int = 0

    @classmethod
    def from_seed(cls, seed: int) -> UnitErrors:
        """Magnitudes uniform in [half, all] of each bound, signs independent: every unit
        leaves the line noticeably off, so calibration always has something to find."""
        rng = random.Random(f"micropen-unit-errors-{seed}")

        def draw(bound: int) -> int:
            magnitude = rng.uniform(ERROR_MAGNITUDE_MIN_FRACTION, 1.0) * bound
            return round(magnitude if rng.random() < 0.5 else -magnitude)

        return cls(
            draw(DEPTH_GAIN_ERR_PPM_MAX),
            draw(DEPTH_OFFSET_ERR_UM_MAX),
            draw(SPEED_GAIN_ERR_PPM_MAX),
        )

    def true_depth_um(self, raw_um: float) -> float:
        """Needle extension for an actuator position (0 at the home stop)."""
        if raw_um <= 0.0:
            return 0.0
        return max(0.0, raw_um * (1.0 + self.depth_gain_ppm / 1e6) + self.depth_offset_um)


class Noise:
    """Seeded standard-normal draws from a fixed table: reproducible and a list index cheap."""

    __slots__ = ("_i", "high", "low", "table")

    def __init__(self, seed: int) -> None:
        rng = random.Random(f"micropen-sensor-noise-{seed}")
        self.table = [rng.gauss(0.0, 1.0) for _ in range(NOISE_TABLE_SIZE)]
        self.low, self.high = min(self.table), max(self.table)  # no draw is beyond these
        self._i = 0

    def draw(self) -> float:
        self._i = i = (self._i + 1) & (NOISE_TABLE_SIZE - 1)
        return self.table[i]

    def take(self, n: int) -> list[float]:
        """``n`` consecutive draws at once (one slice instead of ``n`` calls)."""
        i = self._i
        end = i + n
        if end <= NOISE_TABLE_SIZE:
            self._i = end & (NOISE_TABLE_SIZE - 1)
            return self.table[i:end]
        return [self.draw() for _ in range(n)]


class Physics:
    """True physical state of one unit, advanced in exact closed-form steps."""

    __slots__ = (
        "_depth_gain",
        "_depth_offset",
        "_speed_gain",
        "act_pos_um",
        "act_target_um",
        "actuator_speed_pct",
        "ambient_c",
        "depth_drift_um",
        "errors",
        "extra_heat_c",
        "fluid_ingress",
        "motor_cmd_sps",
        "motor_drive",
        "omega",
        "phase",
        "stalled",
        "t",
        "temp_c",
        "v_oc",
    )

    def __init__(self, errors: UnitErrors, now: float) -> None:
        self.t = now
        self.errors = errors
        self._depth_gain = self._depth_offset = self._speed_gain = 0.0
        self.set_errors(errors)
        self.motor_drive = False
        self.motor_cmd_sps = 0.0  # raw drive command (after the firmware's correction)
        self.omega = 0.0  # true strokes per second
        self.phase = 0.0  # strokes since the firmware last zeroed it (a run start)
        self.stalled = False
        self.act_pos_um = 0.0
        self.act_target_um = 0.0
        self.actuator_speed_pct = 100.0  # a worn or obstructed actuator moves slower
        self.ambient_c = AMBIENT_DEFAULT_C
        self.extra_heat_c = 0.0
        self.temp_c = AMBIENT_DEFAULT_C
        self.v_oc = BATTERY_START_V
        self.fluid_ingress = False
        self.depth_drift_um = 0.0

    # ------------------------------------------------------------------ configuration
    def set_errors(self, errors: UnitErrors) -> None:
        self.errors = errors
        self._depth_gain = 1.0 + errors.depth_gain_ppm / 1e6
        self._depth_offset = float(errors.depth_offset_um)
        self._speed_gain = 1.0 + errors.speed_gain_ppm / 1e6

    # ------------------------------------------------------------------ actuators
    def drive_motor(self, cmd_sps: float) -> None:
        self.motor_drive = True
        self.motor_cmd_sps = cmd_sps

    def brake(self) -> None:
        """Drive off and cam parked: the motor stops within the current stroke."""
        self.motor_drive = False
        self.motor_cmd_sps = 0.0
        self.omega = 0.0

    def move_actuator(self, raw_um: float) -> None:
        self.act_target_um = min(max(raw_um, 0.0), ACTUATOR_TRAVEL_UM)

    def actuator_arrival(self) -> float:
        """When the actuator reaches its target at its present speed."""
        return self.t + abs(self.act_target_um - self.act_pos_um) / self._actuator_speed()

    def _actuator_speed(self) -> float:
        return ACTUATOR_SPEED_UM_S * self.actuator_speed_pct / 100.0

    # ------------------------------------------------------------------ readings (true values)
    def true_depth_um(self) -> float:
        pos = self.act_pos_um
        if pos <= 0.0:
            return 0.0
        depth = pos * self._depth_gain + self._depth_offset
        return depth if depth > 0.0 else 0.0

    def motor_target(self) -> float:
        if not self.motor_drive or self.stalled:
            return 0.0
        return self.motor_cmd_sps * self._speed_gain

    def current_ma(self) -> float:
        if not self.motor_drive:
            return 0.0
        if self.stalled:
            return MOTOR_STALL_MA
        lag = self.motor_cmd_sps * self._speed_gain - self.omega
        return (
            MOTOR_NOLOAD_MA + MOTOR_MA_PER_SPS * self.omega + MOTOR_ACCEL_MA_PER_SPS * max(lag, 0)
        )

    def battery_mv(self) -> float:
        return (self.v_oc - (self.current_ma() + ELECTRONICS_MA) * 1e-3 * BATTERY_R_OHM) * 1000.0

    # ------------------------------------------------------------------ time
    def step(self, t_end: float, stroke_limit: float) -> bool:
        """Advance to ``t_end``, or only to the instant the phase reaches ``stroke_limit``.

        Returns True when it stopped at the limit: ``phase`` is then exactly the limit and
        ``t`` the crossing time, so a run bounded by N strokes can never deliver N + 1.
        """
        dt = t_end - self.t
        if dt <= 0.0:
            return False
        if self.motor_drive:
            gained = self._phase_gain(dt)
            if self.phase + gained >= stroke_limit:
                dt = self._crossing_dt(dt, stroke_limit - self.phase)
                self._integrate(dt, self._phase_gain(dt))
                self.phase = stroke_limit
                self.t += dt
                return True
            self._integrate(dt, gained)
        else:
            self._integrate(dt, 0.0)
        self.t = t_end
        return False

    def _phase_gain(self, dt: float) -> float:
        wt, w0 = self.motor_target(), self.omega
        if w0 == wt:
            return wt * dt
        return wt * dt + (w0 - wt) * MOTOR_TAU_S * (1.0 - math.exp(-dt / MOTOR_TAU_S))

    def _crossing_dt(self, dt: float, need: float) -> float:
        """Smallest step (to float precision) after which the phase has gained ``need``."""
        if need <= 0.0:
            return 0.0
        lo, hi = 0.0, dt
        for _ in range(64):
            mid = (lo + hi) * 0.5
            if mid in (lo, hi):
                break
            if self._phase_gain(mid) >= need:
                hi = mid
            else:
                lo = mid
        return hi

    def _integrate(self, dt: float, gained: float) -> None:
        """Closed-form motion (``gained``: the phase this step adds, from _phase_gain); heat
        and charge use the step's mean current (exact for the battery, and for heat whenever
        the motor is at speed)."""
        current = 0.0
        if self.motor_drive:
            w0 = self.omega
            wt = 0.0 if self.stalled else self.motor_cmd_sps * self._speed_gain
            if w0 != wt:
                w1 = wt + (w0 - wt) * math.exp(-dt / MOTOR_TAU_S)
                self.omega = wt if abs(w1 - wt) < MOTOR_SETTLED_SPS else w1
            self.phase += gained
            if self.stalled:
                current = MOTOR_STALL_MA
            else:
                mean_w = gained / dt
                lag = wt - mean_w
                current = (
                    MOTOR_NOLOAD_MA
                    + MOTOR_MA_PER_SPS * mean_w
                    + (MOTOR_ACCEL_MA_PER_SPS * lag if lag > 0.0 else 0.0)
                )
        pos, target = self.act_pos_um, self.act_target_um
        if pos != target:
            move = self._actuator_speed() * dt
            if abs(target - pos) <= move + 1e-9:
                self.act_pos_um = target
            else:
                self.act_pos_um = pos + move if target > pos else pos - move
        t_ss = self.ambient_c + self.extra_heat_c + HEAT_C_PER_A * current * 1e-3
        self.temp_c = t_ss + (self.temp_c - t_ss) * math.exp(-dt / THERMAL_TAU_S)
        v = self.v_oc - (current + ELECTRONICS_MA) * 1e-3 * dt * _V_PER_AS
        self.v_oc = v if v > BATTERY_EMPTY_V else BATTERY_EMPTY_V
