"""The fault model of the link proxy: one direction of a faulty line, sans-I/O.

One fault vocabulary for the simulator and a bench: the frame-level faults (drop, one-bit
corruption, duplication, fixed delay) are the simulator's own :class:`micropen.sim.faults.
LinkFaults`, driven through the same :class:`SimParam` names and ppm units, so a rate that
breaks a test on the simulator means the same thing in front of a real pen
(:meth:`FaultSpec.sim_params` gives the ``SimSet`` values that reproduce a proxy setting inside
the simulator). Two things ``LinkFaults`` does not model are added here, and only here:

* **bit errors on the line** (``corrupt_bytes``): every byte is hit independently with the given
  probability and gets one random bit flipped. ``LinkFaults`` flips one bit per *frame* with a
  fixed probability, which cannot express a byte error rate (a long frame must be hit more
  often than a short one) and never hits the delimiters, whereas line noise does: a flipped
  0x00 merges two frames and a new 0x00 splits one, the resynchronisation cases COBS must
  survive. Bit errors apply after the frame stage, as noise on the wire after the sender.
* **per-direction statistics** (bytes, frames, dropped, corrupted, duplicated, delayed):
  ``LinkFaults`` keeps one shared counter set, so the proxy uses one instance per direction and
  counts frames itself.

Everything is seeded: the same seed and the same byte stream give the same faults, however the
stream is chunked (frame draws happen per frame, bit-error gaps carry over between chunks).
Time is passed in (``now``, seconds on any monotonic origin).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.messages import SimParam
from micropen.sim.faults import PARAM_SPECS, PPM, LinkFaults

__all__ = ["BitErrors", "DirectionStats", "FaultSpec", "FaultyDirection", "FrameCounter"]

_MAX_DELAY_MS = PARAM_SPECS[SimParam.LINK_DELAY_MS].hi


def _rate_to_ppm(name: str, rate: float) -> int:
    if not (isinstance(rate, int | float) and math.isfinite(rate) and 0.0 <= rate <= 1.0):
        raise LocalProtocolError(f"{name} = {rate!r} is not a probability; give 0 ≤ {name} ≤ 1")
    return round(rate * PPM)


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """What the line does to the bytes, in both directions (probabilities 0–1, delay in ms)."""

    drop_frames: float = 0.0
    corrupt_frames: float = 0.0
    duplicate_frames: float = 0.0
    corrupt_bytes: float = 0.0
    delay_ms: int = 0

    def __post_init__(self) -> None:
        for name in ("drop_frames", "corrupt_frames", "duplicate_frames", "corrupt_bytes"):
            _rate_to_ppm(name, getattr(self, name))
        if isinstance(self.delay_ms, bool) or not isinstance(self.delay_ms, int):
            raise LocalProtocolError(f"delay_ms = {self.delay_ms!r} is not a whole number of ms")
        if not 0 <= self.delay_ms <= _MAX_DELAY_MS:
            raise LocalProtocolError(
                f"delay_ms = {self.delay_ms} outside 0–{_MAX_DELAY_MS} ms; choose a smaller delay"
            )

    def sim_params(self) -> dict[SimParam, int]:
        """The ``SimSet`` values giving the same frame-level faults inside the simulator (bit
        errors have no simulator parameter: they exist only on a line)."""
        return {
            SimParam.LINK_DROP_PPM: _rate_to_ppm("drop_frames", self.drop_frames),
            SimParam.LINK_CORRUPT_PPM: _rate_to_ppm("corrupt_frames", self.corrupt_frames),
            SimParam.LINK_DUPLICATE_PPM: _rate_to_ppm("duplicate_frames", self.duplicate_frames),
            SimParam.LINK_DELAY_MS: self.delay_ms,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class DirectionStats:
    """What one direction of the proxy did. ``corrupted`` counts bit flips (frame-level and
    line-level together); ``delayed`` counts frames held back by the delay."""

    bytes: int = 0
    bytes_out: int = 0
    frames: int = 0
    dropped: int = 0
    corrupted: int = 0
    duplicated: int = 0
    delayed: int = 0
    corrupted_frames: int = 0
    corrupted_bytes: int = 0
    discarded: int = 0  # bytes lost to a disconnect
    unsent: int = 0  # bytes the proxy could not hand on (the far side was not open)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class FrameCounter:
    """Counts complete frames (non-empty runs of bytes ended by a 0x00 delimiter)."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open = False  # a frame has started but its closing delimiter has not come

    def feed(self, data: bytes) -> int:
        if not data:
            return 0
        pieces = data.split(b"\0")
        tail = pieces.pop()
        count = 0
        for i, piece in enumerate(pieces):
            if piece or (i == 0 and self._open):
                count += 1
        self._open = bool(tail)
        return count


class BitErrors:
    """Independent per-byte errors at probability ``rate``: one random bit of a hit byte flips.

    Gaps between hits are drawn from the geometric distribution, so the cost is per hit, not
    per byte, and the pattern depends only on the byte position in the stream.
    """

    __slots__ = ("_gap", "_log_keep", "_rng", "flips", "rate")

    def __init__(self, rate: float, rng: random.Random) -> None:
        self._rng = rng
        self.flips = 0
        self.rate = 0.0
        self._log_keep = 0.0
        self._gap = -1
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        """Use ``rate`` from the next byte on."""
        _rate_to_ppm("corrupt_bytes", rate)
        self.rate = rate
        self._log_keep = math.log1p(-rate) if 0.0 < rate < 1.0 else 0.0
        self._gap = self._next_gap()

    def _next_gap(self) -> int:
        """Untouched bytes before the next hit."""
        if self.rate <= 0.0:
            return -1
        if self.rate >= 1.0:
            return 0
        u = 1.0 - self._rng.random()  # (0, 1]
        return int(math.log(u) / self._log_keep)

    def apply(self, data: bytes) -> bytes:
        if self._gap < 0 or not data:
            return data
        if self._gap >= len(data):
            self._gap -= len(data)
            return data
        out = bytearray(data)
        pos = self._gap
        while pos < len(out):
            out[pos] ^= 1 << self._rng.randrange(8)
            self.flips += 1
            pos += 1 + self._next_gap()
        self._gap = pos - len(out)
        return bytes(out)


@dataclass(slots=True)
class FaultyDirection:
    """One direction of the faulty line: frame faults (``LinkFaults``), then bit errors."""

    name: str
    spec: FaultSpec
    seed: int
    stats: DirectionStats = field(default_factory=DirectionStats)
    _frames: LinkFaults = field(init=False)
    _bits: BitErrors = field(init=False)
    _counter: FrameCounter = field(init=False, default_factory=FrameCounter)

    def __post_init__(self) -> None:
        self._frames = LinkFaults(self.seed)
        self._bits = BitErrors(
            self.spec.corrupt_bytes, random.Random(f"micropen-proxy-bits-{self.seed}")
        )
        self.configure(self.spec, 0.0)

    def configure(self, spec: FaultSpec, now: float) -> None:
        """Change the faults from now on (the random streams carry on)."""
        self.spec = spec
        for param, value in spec.sim_params().items():
            self._frames.set(param, value, now)
        self._bits.set_rate(spec.corrupt_bytes)

    def disconnect(self, ms: int, now: float) -> None:
        """Carry nothing for ``ms`` milliseconds from ``now`` (0 ends a disconnect)."""
        self._frames.set(SimParam.DISCONNECT, ms, now)

    def feed(self, data: bytes, now: float) -> bytes:
        """Bytes from the sender; returns what reaches the receiver now."""
        frames = self._counter.feed(data)
        self.stats.bytes += len(data)
        self.stats.frames += frames
        if self.spec.delay_ms:
            self.stats.delayed += frames
        return self._finish(self._frames.inbound(data, now))

    def release(self, now: float) -> bytes:
        """Delayed bytes now due."""
        return self._finish(self._frames.release_inbound(now))

    def next_deadline(self) -> float | None:
        """When delayed bytes fall due (None: nothing waits)."""
        return self._frames.next_inbound()

    def _finish(self, data: bytes) -> bytes:
        data = self._bits.apply(data)
        stats, frame_stats = self.stats, self._frames.stats
        stats.dropped = frame_stats["dropped"]
        stats.duplicated = frame_stats["duplicated"]
        stats.corrupted_frames = frame_stats["corrupted"]
        stats.corrupted_bytes = self._bits.flips
        stats.corrupted = stats.corrupted_frames + stats.corrupted_bytes
        stats.discarded = frame_stats["discarded"]
        stats.bytes_out += len(data)
        return data
