"""The host's own stroke-rate check (hazard 6), from the telemetry the pen streams.

The pen stops a run whose stroke rate drifts more than ±5 % off the set rate; the host checks
the same thing again from what the pen reports, so a pen whose own check failed is still
stopped. Same rule as the firmware: once the motor has had time to reach speed
(``RATE_DRIFT_SETTLE_MS`` of RUNNING samples), samples more than ``RATE_ACCEPT_TOL_PCT`` off for
``RATE_DRIFT_HOLD_MS`` mean drift. Bench-fixture runs (calibration measures the drift) are not
watched.
"""

from __future__ import annotations

from dataclasses import dataclass

from micropen.protocol import limits as L
from micropen.protocol.messages import PenState, Telemetry

__all__ = ["Drift", "RateWatch"]


@dataclass(frozen=True, slots=True)
class Drift:
    measured_sps: float
    set_sps: int

    @property
    def percent(self) -> float:
        return (self.measured_sps - self.set_sps) * 100.0 / self.set_sps

    def __str__(self) -> str:
        return (
            f"stroke rate {self.measured_sps:.1f}/s is {self.percent:+.1f} % off the "
            f"{self.set_sps}/s set (limit ±{L.RATE_ACCEPT_TOL_PCT:g} %)"
        )


class RateWatch:
    """Feed it one run's telemetry; it answers the first Drift it sees, else None."""

    def __init__(self, set_sps: int) -> None:
        self.set_sps = set_sps
        self._running_since: int | None = None  # pen time (ms) of the first RUNNING sample
        self._off_since: int | None = None

    def sample(self, t: Telemetry) -> Drift | None:
        if t.state is not PenState.RUNNING:
            self._running_since = self._off_since = None
            return None
        if self._running_since is None:
            self._running_since = t.t_ms
        if t.t_ms - self._running_since < L.RATE_DRIFT_SETTLE_MS:
            return None
        measured = t.rate_csps / 100.0
        if abs(measured - self.set_sps) * 100.0 <= L.RATE_ACCEPT_TOL_PCT * self.set_sps:
            self._off_since = None
            return None
        if self._off_since is None:
            self._off_since = t.t_ms
        if t.t_ms - self._off_since >= L.RATE_DRIFT_HOLD_MS:
            return Drift(measured, self.set_sps)
        return None
