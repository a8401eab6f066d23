"""Fault injection: the simulator parameters, and the link-fault injector on the byte path.

Every :class:`SimParam` is declared once in :data:`PARAM_SPECS` (range, unit, group, meaning);
``SimSet`` values outside the range are refused with a Nak naming the limit, and the parameter
table in ``docs/simulator.md`` is generated from (and tested against) the same declarations.

:class:`LinkFaults` sits between the serial line and the pen's link, in both directions. It
works on whole frames (the 0x00 delimiters make that unambiguous): it drops, corrupts (one bit)
or duplicates a frame with the configured probabilities, delays bytes by a fixed time (order is
kept), and while "disconnected" it neither reads nor writes. With every parameter at 0 it is a
pass-through that costs one test.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from micropen.protocol import limits as L
from micropen.protocol.messages import ErrorCode, SimParam

from .calstore import Nvm
from .cartridge import Bay, Cartridge, Refusal
from .physics import Physics

__all__ = [
    "PARAM_SPECS",
    "FaultTarget",
    "LinkFaults",
    "ParamSpec",
    "apply_param",
    "param_table_markdown",
    "read_param",
]

PPM = 1_000_000


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One simulator parameter: allowed values, unit, group and what it does."""

    param: SimParam
    lo: int
    hi: int
    unit: str
    group: str  # "link", "device", "manufacturing", "environment"
    doc: str


def _spec(param: SimParam, lo: int, hi: int, unit: str, group: str, doc: str) -> ParamSpec:
    return ParamSpec(param, lo, hi, unit, group, doc)


P = SimParam
PARAM_SPECS: dict[SimParam, ParamSpec] = {
    s.param: s
    for s in (
        _spec(P.LINK_DROP_PPM, 0, PPM, "ppm", "link", "probability a frame is lost, each way"),
        _spec(P.LINK_CORRUPT_PPM, 0, PPM, "ppm", "link", "probability a frame has one bit flipped"),
        _spec(P.LINK_DUPLICATE_PPM, 0, PPM, "ppm", "link", "probability a frame arrives twice"),
        _spec(P.LINK_DELAY_MS, 0, 10_000, "ms", "link", "fixed delay of every byte, each way"),
        _spec(
            P.DISCONNECT, 0, 600_000, "ms",
            "link", "for this long the pen neither reads nor writes (0 ends it now)",
        ),
        _spec(
            P.STALL, 0, 1, "flag",
            "device", "1 jams the motor: speed falls to 0, current rises to 1400 mA",
        ),
        _spec(
            P.OVERHEAT, 0, 1000, "0.1 °C",
            "device", "extra heat source: raises the steady handpiece temperature",
        ),
        _spec(
            P.BROWNOUT_RESET, 0, 60_000, "ms",
            "device", "a brown-out reset this many ms from now (0 cancels a pending one)",
        ),
        _spec(P.BATTERY_MV, 2500, 4300, "mV", "device", "sets the open-circuit battery voltage"),
        _spec(
            P.CARTRIDGE_REMOVE, 0, 1, "flag",
            "device", "1 pulls the cartridge out (a fault if running)",
        ),
        _spec(
            P.FLUID_INGRESS, 0, 1, "flag",
            "device", "1 trips the fluid-ingress sensor (fault, cartridge retired); 0 dries it",
        ),
        _spec(
            P.DEPTH_DRIFT_UM, -L.DEPTH_MAX_UM, L.DEPTH_MAX_UM, "µm",
            "device", "offset added to the pen's own depth sensor reading",
        ),
        _spec(P.AMBIENT_DC, -200, 600, "0.1 °C", "environment", "ambient temperature"),
        _spec(
            P.DEPTH_GAIN_ERROR_PPM, -100_000, 100_000, "ppm",
            "manufacturing", "the unit's depth gain error (overrides the seeded one)",
        ),
        _spec(
            P.DEPTH_OFFSET_ERROR_UM, -300, 300, "µm",
            "manufacturing", "the unit's depth offset error (overrides the seeded one)",
        ),
        _spec(
            P.SPEED_GAIN_ERROR_PPM, -100_000, 100_000, "ppm",
            "manufacturing", "the unit's motor speed gain error (overrides the seeded one)",
        ),
        _spec(
            P.CALIBRATION_CORRUPT, 0, 1, "flag",
            "device", "1 flips a bit of the active calibration record in NVM",
        ),
        _spec(
            P.ACTUATOR_SPEED_PCT, 1, 100, "%",
            "device", "depth actuator speed, % of nominal (a worn actuator retracts slowly)",
        ),
    )
}  # fmt: skip
del P


class FaultTarget(Protocol):
    """What a simulator parameter acts on: the firmware and the hardware around it."""

    physics: Physics
    nvm: Nvm
    bay: Bay
    link_faults: LinkFaults | None
    brownout_at: float | None

    def mount(self, cartridge: Cartridge | None, t: float) -> None: ...

    def fluid_ingress(self, t: float) -> None: ...

    def actuator_speed_changed(self, t: float) -> None: ...


def apply_param(target: FaultTarget, param: SimParam, value: int, t: float) -> Refusal | None:
    """Validate a value against its spec and apply it; a Refusal says why not."""
    spec = PARAM_SPECS[param]
    if spec.group == "link" and target.link_faults is None:
        return Refusal.of(ErrorCode.UNKNOWN_COMMAND, int(param))
    if not spec.lo <= value <= spec.hi:
        return Refusal.of(ErrorCode.MALFORMED, value, spec.lo if value < spec.lo else spec.hi)
    if spec.group == "link":
        assert target.link_faults is not None
        target.link_faults.set(param, value, t)
    else:
        _APPLY[param](target, value, t)
    return None


def read_param(target: FaultTarget, param: SimParam, t: float) -> int:
    """A parameter's current value (for manufacturing errors: seeded or overridden)."""
    if PARAM_SPECS[param].group == "link":
        return 0 if target.link_faults is None else target.link_faults.get(param, t)
    return _READ[param](target, t)


def _set_errors(target: FaultTarget, **change: int) -> None:
    target.physics.set_errors(replace(target.physics.errors, **change))


def _remove(target: FaultTarget, value: int, t: float) -> None:
    if value:
        target.mount(None, t)


def _ingress(target: FaultTarget, value: int, t: float) -> None:
    target.physics.fluid_ingress = bool(value)
    if value:
        target.fluid_ingress(t)


def _actuator_speed(target: FaultTarget, value: int, t: float) -> None:
    target.physics.actuator_speed_pct = float(value)
    target.actuator_speed_changed(t)


def _brownout(target: FaultTarget, value: int, t: float) -> None:
    target.brownout_at = t + value / 1000.0 if value else None


def _corrupt(target: FaultTarget, value: int, t: float) -> None:
    if value:
        target.nvm.cal.corrupt_active()


def _brownout_left(target: FaultTarget, t: float) -> int:
    at = target.brownout_at
    return 0 if at is None else max(0, round((at - t) * 1000.0))


_Apply = Callable[[FaultTarget, int, float], None]
_APPLY: dict[SimParam, _Apply] = {
    SimParam.STALL: lambda x, v, t: setattr(x.physics, "stalled", bool(v)),
    SimParam.OVERHEAT: lambda x, v, t: setattr(x.physics, "extra_heat_c", v / 10.0),
    SimParam.BROWNOUT_RESET: _brownout,
    SimParam.BATTERY_MV: lambda x, v, t: setattr(x.physics, "v_oc", v / 1000.0),
    SimParam.CARTRIDGE_REMOVE: _remove,
    SimParam.FLUID_INGRESS: _ingress,
    SimParam.DEPTH_DRIFT_UM: lambda x, v, t: setattr(x.physics, "depth_drift_um", float(v)),
    SimParam.AMBIENT_DC: lambda x, v, t: setattr(x.physics, "ambient_c", v / 10.0),
    SimParam.DEPTH_GAIN_ERROR_PPM: lambda x, v, t: _set_errors(x, depth_gain_ppm=v),
    SimParam.DEPTH_OFFSET_ERROR_UM: lambda x, v, t: _set_errors(x, depth_offset_um=v),
    SimParam.SPEED_GAIN_ERROR_PPM: lambda x, v, t: _set_errors(x, speed_gain_ppm=v),
    SimParam.CALIBRATION_CORRUPT: _corrupt,
    SimParam.ACTUATOR_SPEED_PCT: _actuator_speed,
}
_READ: dict[SimParam, Callable[[FaultTarget, float], int]] = {
    SimParam.STALL: lambda x, t: int(x.physics.stalled),
    SimParam.OVERHEAT: lambda x, t: round(x.physics.extra_heat_c * 10.0),
    SimParam.BROWNOUT_RESET: _brownout_left,
    SimParam.BATTERY_MV: lambda x, t: round(x.physics.v_oc * 1000.0),
    SimParam.CARTRIDGE_REMOVE: lambda x, t: int(x.bay.cartridge is None),
    SimParam.FLUID_INGRESS: lambda x, t: int(x.physics.fluid_ingress),
    SimParam.DEPTH_DRIFT_UM: lambda x, t: round(x.physics.depth_drift_um),
    SimParam.AMBIENT_DC: lambda x, t: round(x.physics.ambient_c * 10.0),
    SimParam.DEPTH_GAIN_ERROR_PPM: lambda x, t: x.physics.errors.depth_gain_ppm,
    SimParam.DEPTH_OFFSET_ERROR_UM: lambda x, t: x.physics.errors.depth_offset_um,
    SimParam.SPEED_GAIN_ERROR_PPM: lambda x, t: x.physics.errors.speed_gain_ppm,
    SimParam.CALIBRATION_CORRUPT: lambda x, t: int(x.nvm.cal.corrupt),
    SimParam.ACTUATOR_SPEED_PCT: lambda x, t: round(x.physics.actuator_speed_pct),
}


def param_table_markdown() -> str:
    """The parameter table of docs/simulator.md, from the declarations above."""
    rows = ["| id | parameter | group | range | unit | effect |", "|---|---|---|---|---|---|"]
    for spec in PARAM_SPECS.values():
        rows.append(
            f"| {int(spec.param)} | `{spec.param.name}` | {spec.group} | "
            f"{spec.lo}…{spec.hi} | {spec.unit} | {spec.doc} |"
        )
    return "\n".join(rows)


class LinkFaults:
    """The faulty line between host and pen, applied to frames in both directions."""

    __slots__ = (
        "_in_q",
        "_out_q",
        "_pending",
        "_rng",
        "corrupt_ppm",
        "delay_s",
        "disconnected_until",
        "drop_ppm",
        "duplicate_ppm",
        "stats",
    )

    def __init__(self, seed: int) -> None:
        self.drop_ppm = self.corrupt_ppm = self.duplicate_ppm = 0
        self.delay_s = 0.0
        self.disconnected_until = float("-inf")
        self._rng = random.Random(f"micropen-link-faults-{seed}")
        self._in_q: deque[tuple[float, bytes]] = deque()
        self._out_q: deque[tuple[float, bytes]] = deque()
        self._pending = {"in": b"", "out": b""}
        self.stats = {"dropped": 0, "corrupted": 0, "duplicated": 0, "discarded": 0}

    # ------------------------------------------------------------------ parameters
    def set(self, param: SimParam, value: int, now: float) -> None:
        if param is SimParam.LINK_DROP_PPM:
            self.drop_ppm = value
        elif param is SimParam.LINK_CORRUPT_PPM:
            self.corrupt_ppm = value
        elif param is SimParam.LINK_DUPLICATE_PPM:
            self.duplicate_ppm = value
        elif param is SimParam.LINK_DELAY_MS:
            self.delay_s = value / 1000.0
        elif param is SimParam.DISCONNECT:
            self.disconnected_until = now + value / 1000.0 if value else float("-inf")

    def get(self, param: SimParam, now: float) -> int:
        if param is SimParam.DISCONNECT:  # milliseconds of outage left (0 when connected)
            if not self.disconnected(now):
                return 0
            return round((self.disconnected_until - now) * 1000.0)
        return {
            SimParam.LINK_DROP_PPM: self.drop_ppm,
            SimParam.LINK_CORRUPT_PPM: self.corrupt_ppm,
            SimParam.LINK_DUPLICATE_PPM: self.duplicate_ppm,
            SimParam.LINK_DELAY_MS: round(self.delay_s * 1000.0),
        }[param]

    def disconnected(self, now: float) -> bool:
        return now < self.disconnected_until

    # ------------------------------------------------------------------ byte path
    def inbound(self, data: bytes, now: float) -> bytes:
        """Host → pen: the bytes the pen reads now; delayed ones wait in a queue."""
        return self._pass("in", self._in_q, data, now) or self.release(self._in_q, now, b"")

    def outbound(self, data: bytes, now: float) -> bytes:
        """Pen → host: the bytes that reach the wire now (plus any delayed ones now due)."""
        return self._pass("out", self._out_q, data, now) or self.release(self._out_q, now, b"")

    def release_inbound(self, now: float) -> bytes:
        return self.release(self._in_q, now, b"")

    def next_inbound(self) -> float | None:
        return self._in_q[0][0] if self._in_q else None

    def next_outbound(self) -> float | None:
        return self._out_q[0][0] if self._out_q else None

    def release(self, queue: deque[tuple[float, bytes]], now: float, head: bytes) -> bytes:
        if not queue or queue[0][0] > now:
            return head
        parts = [head]
        while queue and queue[0][0] <= now:
            parts.append(queue.popleft()[1])
        return self._unless_disconnected(b"".join(parts), now)

    def _pass(
        self, direction: str, queue: deque[tuple[float, bytes]], data: bytes, now: float
    ) -> bytes:
        if not data:
            return b""
        if self.disconnected(now):
            self.stats["discarded"] += len(data)
            return b""
        if self.drop_ppm or self.corrupt_ppm or self.duplicate_ppm:
            data = self._mangle(direction, data)
        elif self._pending[direction]:
            data, self._pending[direction] = self._pending[direction] + data, b""
        if self.delay_s > 0.0 or queue:
            if data:
                queue.append((now + self.delay_s, data))
            return b""
        return data

    def _unless_disconnected(self, data: bytes, now: float) -> bytes:
        if data and self.disconnected(now):
            self.stats["discarded"] += len(data)
            return b""
        return data

    def _mangle(self, direction: str, data: bytes) -> bytes:
        """Drop, corrupt or duplicate whole frames; a partial frame waits for its end."""
        pieces = (self._pending[direction] + data).split(b"\0")
        self._pending[direction] = pieces.pop()
        rng, stats = self._rng, self.stats
        out = bytearray()
        for piece in pieces:
            if not piece:
                continue
            if self.drop_ppm and rng.randrange(PPM) < self.drop_ppm:
                stats["dropped"] += 1
                continue
            frame = bytearray(b"\0" + piece + b"\0")
            if self.corrupt_ppm and rng.randrange(PPM) < self.corrupt_ppm:
                stats["corrupted"] += 1
                frame[rng.randrange(1, len(frame) - 1)] ^= 1 << rng.randrange(8)
            out += frame
            if self.duplicate_ppm and rng.randrange(PPM) < self.duplicate_ppm:
                stats["duplicated"] += 1
                out += frame
        return bytes(out)
