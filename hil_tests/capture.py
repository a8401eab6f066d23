"""Everything the pen tells the host during a test, with the host's receive times.

A :class:`Capture` is a listener on the pen: it keeps every notification (telemetry, events,
fault reports, run reports, connection notices) stamped with ``time.monotonic()`` when the host
received it, and lets a test wait — bounded, without sleeping — until something has arrived.
The pen's own clock (``t_ms``) is mapped to the host's from the telemetry stream, so latencies
can be measured on the pen's clock and reported against the pen's limits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from micropen.host import Pen
from micropen.protocol.messages import (
    Event,
    EventCode,
    FaultReport,
    RunReport,
    Telemetry,
)

__all__ = ["Capture", "capture"]

T = TypeVar("T")


class Capture:
    """Notifications from one pen, in arrival order, as ``(host_time, message)``."""

    def __init__(self) -> None:
        self.items: list[tuple[float, Any]] = []
        self._cond = threading.Condition()

    def __call__(self, message: Any) -> None:
        """The listener (runs on the pen's event-loop thread)."""
        with self._cond:
            self.items.append((time.monotonic(), message))
            self._cond.notify_all()

    def of(self, kind: type[T]) -> list[T]:
        with self._cond:
            return [m for _, m in self.items if isinstance(m, kind)]

    def stamped(self, kind: type[T]) -> list[tuple[float, T]]:
        with self._cond:
            return [(h, m) for h, m in self.items if isinstance(m, kind)]

    def telemetry(self) -> list[Telemetry]:
        return self.of(Telemetry)

    def events(self, code: EventCode | None = None) -> list[Event]:
        return [e for e in self.of(Event) if code is None or e.code is code]

    def faults(self) -> list[FaultReport]:
        return self.of(FaultReport)

    def report(self, run_id: int) -> RunReport | None:
        found = [r for r in self.of(RunReport) if r.run_id == run_id]
        return found[-1] if found else None

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait until ``predicate()`` is truthy (re-checked on every notification); returns its
        value, or fails the test naming ``what`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
                self._cond.wait(min(left, 0.05))

    def wait_event(self, code: EventCode, timeout: float, run_id: int | None = None) -> Event:
        def found() -> Event | None:
            for e in self.events(code):
                if run_id is None or e.run_id == run_id:
                    return e
            return None

        event: Event = self.wait_for(found, timeout, f"event {code.name}")
        return event

    def wait_telemetry(
        self, predicate: Callable[[Telemetry], bool], timeout: float, what: str
    ) -> Telemetry:
        def found() -> Telemetry | None:
            for sample in reversed(self.telemetry()):
                if predicate(sample):
                    return sample
            return None

        sample: Telemetry = self.wait_for(found, timeout, what)
        return sample

    def pen_to_host_offset(self) -> float:
        """host_time - pen_time (s): the smallest seen, i.e. with the least transit delay."""
        stamped = self.stamped(Telemetry)
        if not stamped:
            raise AssertionError("no telemetry received: cannot relate the pen's clock")
        return min(h - s.t_ms / 1000.0 for h, s in stamped)


@contextmanager
def capture(pen: Pen) -> Iterator[Capture]:
    """Record the pen's notifications for the duration of the block."""
    recorder = Capture()
    remove = pen.add_listener(recorder)
    try:
        yield recorder
    finally:
        remove()


def steady_rate(samples: list[Telemetry], skip_ms: int = 150) -> tuple[float, float]:
    """(rate from the stroke counter, mean sensor rate), strokes/s, over the samples of the
    running phase after ``skip_ms`` of spin-up.

    The counter rate is the least-squares slope of strokes over pen time: the counter is a
    staircase, and the end points alone would carry up to one stroke of quantisation (2 % of a
    one-second window at 50 strokes/s); the slope over every sample does not.
    """
    from micropen.protocol.messages import PenState

    running = [s for s in samples if s.state is PenState.RUNNING]
    if len(running) < 3:
        raise AssertionError(f"only {len(running)} telemetry samples while running")
    start = running[0].t_ms + skip_ms
    steady = [s for s in running if s.t_ms >= start]
    if len(steady) < 10:
        raise AssertionError("the run was too short to measure a steady stroke rate")
    ts = [s.t_ms / 1000.0 for s in steady]
    ns = [float(s.run_strokes) for s in steady]
    t_mean, n_mean = sum(ts) / len(ts), sum(ns) / len(ns)
    covariance = sum((t - t_mean) * (n - n_mean) for t, n in zip(ts, ns, strict=True))
    variance = sum((t - t_mean) ** 2 for t in ts)
    sensed = sum(s.rate_csps for s in steady) / len(steady) / 100.0
    return covariance / variance, sensed
