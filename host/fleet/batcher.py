"""Telemetry batching and rate limiting, with time passed in.

The pen may stream up to 1 kHz; the fleet wants a steady, bounded message rate. Samples are
collected and taken as one batch per interval (one MQTT message), each batch numbered so a
consumer sees a lost one as a jump in ``seq``. Above ``max_hz`` (by the pen's own clock,
``t_ms``) samples are decimated and the count of dropped ones travels with the next batch: a
thinned stream is visible, never silent. A batch is also cut early at ``max_samples`` so one
message stays small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Batch", "TelemetryBatcher"]


@dataclass(frozen=True, slots=True)
class Batch:
    seq: int
    samples: tuple[tuple[int, ...], ...]
    decimated: int


class TelemetryBatcher:
    """Collects samples (tuples whose first item is the pen's ``t_ms``) into numbered batches."""

    def __init__(self, *, interval: float = 0.1, max_hz: int = 200, max_samples: int = 500) -> None:
        if interval <= 0 or max_hz <= 0 or max_samples <= 0:
            raise ValueError("interval, max_hz and max_samples must be positive")
        self.interval = interval
        self.max_hz = max_hz
        self.max_samples = max_samples
        self._samples: list[tuple[int, ...]] = []
        self._decimated = 0
        self._last_kept_ms: int | None = None
        self._min_gap_ms = 1000 / max_hz
        self._next_seq = 0
        self._last_take: float | None = None
        self.counters = {"samples": 0, "decimated": 0, "batches": 0}

    def add(self, sample: Sequence[int]) -> None:
        t_ms = int(sample[0])
        last = self._last_kept_ms
        if last is not None and 0 <= t_ms - last < self._min_gap_ms - 1e-9:
            self._decimated += 1
            self.counters["decimated"] += 1
            return
        self._last_kept_ms = t_ms  # a jump backwards (pen reboot) restarts the limiter
        self._samples.append(tuple(int(v) for v in sample))
        self.counters["samples"] += 1

    @property
    def pending(self) -> int:
        return len(self._samples)

    def due(self, now: float) -> bool:
        """A batch should be taken: the interval has passed, or the batch is full."""
        if len(self._samples) >= self.max_samples:
            return True
        if not self._samples and not self._decimated:
            return False
        return self._last_take is None or now - self._last_take >= self.interval

    def next_deadline(self, now: float) -> float:
        """When :meth:`due` becomes true at the latest (given no new samples)."""
        return now if self._last_take is None else self._last_take + self.interval

    def take(self, now: float) -> Batch | None:
        """The next numbered batch (None when there is nothing to send)."""
        self._last_take = now
        if not self._samples and not self._decimated:
            return None
        samples = tuple(self._samples[: self.max_samples])
        del self._samples[: self.max_samples]
        batch = Batch(self._next_seq, samples, self._decimated)
        self._decimated = 0
        self._next_seq += 1
        self.counters["batches"] += 1
        return batch
