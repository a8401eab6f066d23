"""The bench: a depth gauge and an optical tachometer reading the unit's *true* state.

This channel is not the pen protocol. The pen reports what it believes (its own sensors,
through its calibration); the instruments see what the needles really do, as a dial
indicator on a fixture and a strobe would. Calibration compares the two. Each instrument has
its own seeded noise stream, so reading it does not change what the pen does.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import date, timedelta

__all__ = ["Bench", "DepthGauge", "Tachometer"]

GAUGE_NOISE_MM = 0.0015  # 1 sigma; a 0.001 mm dial indicator is good to about ±0.003 mm
GAUGE_RESOLUTION_MM = 0.001
TACHO_NOISE_FRACTION = 0.0005  # 1 sigma of the reading
TACHO_RESOLUTION_SPS = 0.01
CAL_DUE_AFTER_DAYS = 180  # the simulated instruments were calibrated recently
MANUFACTURER = "micropen simulator"
_EPOCH = date(1970, 1, 1)


class _Instrument:
    """Identity and calibration due date, as a bench record names them."""

    manufacturer = MANUFACTURER
    model = ""

    def __init__(self, serial: str, cal_due_day: int, seed: str) -> None:
        self.serial = serial
        self.cal_due_day = cal_due_day
        self._rng = random.Random(seed)

    @property
    def cal_due(self) -> date:
        return _EPOCH + timedelta(days=self.cal_due_day)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, serial={self.serial!r})"


class DepthGauge(_Instrument):
    """Digital dial indicator on a fixture: true needle extension, 0.001 mm resolution."""

    model = "SIM-DG-1"

    def __init__(self, true_depth_um: Callable[[float], float], serial: str, cal_due_day: int):
        super().__init__(serial, cal_due_day, f"micropen-gauge-{serial}")
        self._source = true_depth_um

    def read_mm(self, now: float) -> float:
        true_mm = self._source(now) / 1000.0
        if true_mm <= 0.0:
            return 0.0
        reading = true_mm + self._rng.gauss(0.0, GAUGE_NOISE_MM)
        return round(round(reading / GAUGE_RESOLUTION_MM) * GAUGE_RESOLUTION_MM, 3)


class Tachometer(_Instrument):
    """Optical tachometer aimed at the needle carrier: true strokes per second."""

    model = "SIM-TA-1"

    def __init__(self, true_rate_sps: Callable[[float], float], serial: str, cal_due_day: int):
        super().__init__(serial, cal_due_day, f"micropen-tacho-{serial}")
        self._source = true_rate_sps

    def read_sps(self, now: float) -> float:
        true_sps = self._source(now)
        if true_sps <= 0.0:
            return 0.0
        reading = true_sps * (1.0 + self._rng.gauss(0.0, TACHO_NOISE_FRACTION))
        return round(round(reading / TACHO_RESOLUTION_SPS) * TACHO_RESOLUTION_SPS, 2)


class Bench:
    """The instruments set up around one simulated pen."""

    def __init__(
        self,
        true_depth_um: Callable[[float], float],
        true_rate_sps: Callable[[float], float],
        *,
        seed: int,
        today_day: int,
    ) -> None:
        due = today_day + CAL_DUE_AFTER_DAYS
        self.gauge = DepthGauge(true_depth_um, f"DG-{seed:06d}", due)
        self.tachometer = Tachometer(true_rate_sps, f"TA-{seed:06d}", due)
