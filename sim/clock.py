"""Clocks for the simulator. The simulated pen never reads a clock: callers pass ``now``.

A clock is only something a driver (a server loop, a test, the benchmark) asks for ``now``.
:class:`VirtualClock` lets tests and the benchmark run a 30-minute treatment in seconds and
reproduce it exactly; :class:`RealClock` serves a pen to another process in real time.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from micropen.protocol.errors import LocalProtocolError

__all__ = ["Clock", "RealClock", "VirtualClock"]


@runtime_checkable
class Clock(Protocol):
    """Seconds, monotonic, arbitrary origin."""

    def now(self) -> float: ...


class VirtualClock:
    """A clock that moves only when told to: deterministic and as fast as the CPU allows."""

    __slots__ = ("_now",)

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, dt: float) -> None:
        """Move forward by ``dt`` seconds (time never runs backwards)."""
        if not dt >= 0.0:
            raise LocalProtocolError(f"cannot advance a clock by {dt!r} s; give dt >= 0")
        self._now += dt

    def advance_to(self, t: float) -> None:
        """Jump to ``t`` (a deadline, usually); ``t`` earlier than now is refused."""
        if not t >= self._now:
            raise LocalProtocolError(
                f"cannot move a clock back from {self._now!r} s to {t!r} s; give t >= now"
            )
        self._now = float(t)

    def __repr__(self) -> str:
        return f"VirtualClock(now={self._now!r})"


class RealClock:
    """``time.monotonic()``: for process-to-process tests and bench-like runs."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()
