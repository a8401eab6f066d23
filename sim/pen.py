"""A simulated pen: firmware, physics, NVM, a cartridge bay, a faulty line and a bench.

Sans-I/O, as the protocol core: a driver passes bytes and ``now`` in and takes bytes out::

    pen.receive_data(chunk, clock.now()); pen.advance(clock.now())
    out = pen.data_to_send(clock.now())        # write these to the host
    sleep until pen.next_deadline()            # when idle

The same seed gives the same unit (serial, manufacturing errors, sensor noise, cartridge,
boot ids) and — for the same inputs at the same times — the same results.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qsl

from micropen.protocol.errors import LocalProtocolError
from micropen.protocol.messages import (
    Capability,
    FaultCode,
    Identity,
    PenState,
    SimParam,
    Status,
)

from .bench import Bench
from .calstore import CAL_MODES, CalStore, Nvm
from .cartridge import Bay, Cartridge
from .faults import LinkFaults
from .firmware import BootReason, Firmware, RunRecord, UnitInfo
from .physics import Noise, Physics, UnitErrors

__all__ = ["SimConfig", "SimulatedPen"]

_U32 = 0xFFFF_FFFF
CARTRIDGE_AGE_DAYS = 30  # the boot cartridge was made a month before "today"


def _rtc_today() -> int:
    """Days since 1970-01-01 today (UTC): the simulated pen's real-time clock, used for
    cartridge expiry and instrument due dates. Tests pin ``today_day`` for repeatability."""
    return (datetime.now(UTC).date() - date(1970, 1, 1)).days


@dataclass(frozen=True)
class SimConfig:
    """One simulated unit. Every field can be given in a ``sim://?key=value&…`` query."""

    seed: int = 0
    serial: str | None = None
    model: str = "MP-12 SIM"
    firmware: tuple[int, int, int] = (1, 0, 0)
    hardware_revision: int = 1
    manufacturing_errors: bool = True
    cartridge: bool = True
    calibration: str = "nominal"
    today_day: int = field(default_factory=_rtc_today)  # the pen's real-time clock
    link_faults: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not 0 <= self.seed <= 999_999_999_999:
            raise LocalProtocolError(f"seed {self.seed!r} outside 0..999999999999")
        for name, text in (("serial", self.serial_number), ("model", self.model)):
            if not (text.isascii() and text.isprintable()) or not 1 <= len(text) <= 16:
                raise LocalProtocolError(f"{name} {text!r} must be 1–16 printable ASCII chars")
        if len(self.firmware) != 3 or not all(0 <= int(v) <= 255 for v in self.firmware):
            raise LocalProtocolError(f"firmware {self.firmware!r} must be three numbers 0..255")
        if not 0 <= self.hardware_revision <= 255:
            raise LocalProtocolError(f"hardware_revision {self.hardware_revision} outside 0..255")
        if self.calibration not in CAL_MODES:
            raise LocalProtocolError(
                f"calibration {self.calibration!r}; valid: {', '.join(CAL_MODES)}"
            )
        if not 0 <= self.today_day <= _U32:
            raise LocalProtocolError(f"today_day {self.today_day} outside 0..{_U32}")

    @property
    def serial_number(self) -> str:
        return self.serial if self.serial is not None else f"SIM-{self.seed:06d}"

    @classmethod
    def from_query(cls, query: str) -> SimConfig:
        """``"seed=7&cartridge=0&calibration=blank"``; unknown keys are refused by name."""
        valid = [f.name for f in fields(cls)]
        values: dict[str, Any] = {}
        for key, raw in parse_qsl(query.lstrip("?"), keep_blank_values=True):
            if key not in valid:
                raise LocalProtocolError(
                    f"unknown simulator option {key!r}; valid: {', '.join(valid)}"
                )
            values[key] = _parse_value(key, raw)
        return cls(**values)


def _parse_value(key: str, raw: str) -> Any:
    try:
        if key in ("seed", "hardware_revision", "today_day"):
            return int(raw)
        if key in ("manufacturing_errors", "cartridge", "link_faults"):
            return _parse_bool(raw)
        if key == "firmware":
            major, minor, patch = (int(part) for part in raw.split("."))
            return (major, minor, patch)
    except ValueError:
        raise LocalProtocolError(f"simulator option {key}={raw!r} is not valid") from None
    return raw


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


class SimulatedPen:
    """One simulated unit behind the byte interface a serial port or socket would carry."""

    def __init__(self, config: SimConfig = SimConfig(), *, now: float = 0.0) -> None:
        self.config = config
        seed = config.seed
        self._rng = random.Random(f"micropen-pen-{seed}")
        # Boot ids come from the seed *and* the power-on time: deterministic for a test that
        # starts at a given time, yet a restarted simulator process looks rebooted to a host.
        self._boot_rng = random.Random(f"micropen-boot-{seed}-{now!r}")
        errors = UnitErrors.from_seed(seed) if config.manufacturing_errors else UnitErrors()
        self.physics = Physics(errors, now)
        self.nvm = Nvm(CalStore(config.calibration, config.today_day))
        self.bay = Bay(self._boot_cartridge() if config.cartridge else None)
        self.link_faults: LinkFaults | None = LinkFaults(seed) if config.link_faults else None
        self._noise = Noise(seed)
        self._t = now
        capabilities = (
            Capability.CALIBRATION_STORAGE
            | Capability.TELEMETRY
            | Capability.SIMULATOR
            | Capability.DEVICE_FAULT_INJECTION
            | Capability.BENCH_INSTRUMENTS
            | (Capability.LINK_FAULT_INJECTION if config.link_faults else 0)
        )
        self._unit = UnitInfo(
            config.model,
            config.serial_number,
            config.firmware,
            config.hardware_revision,
            int(capabilities),
            config.today_day,
        )
        self.firmware = self._boot(now, BootReason.POWER_ON)
        self.bench = Bench(
            self._true_depth_at, self._true_rate_at, seed=seed, today_day=config.today_day
        )

    def _boot_cartridge(self) -> Cartridge:
        today = self.config.today_day
        made = max(0, today - CARTRIDGE_AGE_DAYS)
        return Cartridge(
            self._rng.randrange(1, _U32),
            f"L{self._rng.randrange(10**8):08d}",
            made,
            made + 2 * 365,
        )

    def _boot(self, now: float, reason: BootReason) -> Firmware:
        return Firmware(
            self._unit,
            physics=self.physics,
            nvm=self.nvm,
            bay=self.bay,
            link_faults=self.link_faults,
            noise=self._noise,
            rng=self._boot_rng,
            now=now,
            boot_reason=reason,
        )

    # ================================================================== byte interface
    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the host (through link-fault injection)."""
        self.advance(now)
        chunk = bytes(data)
        if self.link_faults is not None:
            chunk = self.link_faults.inbound(chunk, self._t)
        if chunk:
            self.firmware.feed(chunk, self._t)

    def data_to_send(self, now: float) -> bytes:
        """Bytes for the host (through link-fault injection, delays respected)."""
        self.advance(now)
        out = self.firmware.link.data_to_send(self._t)
        if self.link_faults is not None:
            out = self.link_faults.outbound(out, self._t)
        return out

    def advance(self, now: float) -> None:
        """Run firmware and physics up to ``now``. An earlier ``now`` than already reached is
        a no-op (time never runs backwards)."""
        if now > self._t:
            self._t = now
        now = self._t
        faults = self.link_faults
        while True:
            fw = self.firmware
            arrival = None if faults is None else faults.next_inbound()
            brownout = fw.brownout_at
            if (
                brownout is not None
                and brownout <= now
                and (arrival is None or brownout <= arrival)
            ):
                fw.advance(brownout)
                self._power_cycle(brownout, BootReason.BROWNOUT)
                continue
            if faults is None or arrival is None or arrival > now:
                break
            fw.advance(arrival)
            data = faults.release_inbound(arrival)
            if data:
                fw.feed(data, arrival)
        self.firmware.advance(now)

    def next_deadline(self) -> float | None:
        """When advance()/data_to_send() must next be called if no bytes arrive."""
        candidates = [self.firmware.next_deadline(), self.firmware.link.next_deadline()]
        if self.link_faults is not None:
            candidates += [self.link_faults.next_inbound(), self.link_faults.next_outbound()]
        known = [c for c in candidates if c is not None]
        return max(min(known), self._t) if known else None

    # ================================================================== the CLI's levers
    def set_param(self, param: SimParam, value: int, now: float) -> None:
        """Same effect as a SimSet message; a refused value raises LocalProtocolError."""
        self.advance(now)
        param = SimParam(param)
        refusal = self.firmware.apply_sim_param(param, value, self._t)
        if refusal is not None:
            raise LocalProtocolError(
                f"simulator parameter {param.name} = {value} refused: {refusal.error.name} "
                f"(limit {refusal.limit})"
            )

    def get_param(self, param: SimParam, now: float) -> int:
        self.advance(now)
        return self.firmware.sim_param(SimParam(param), self._t)

    def mount_cartridge(
        self, cartridge_id: int, lot: str, manufactured_day: int, expiry_day: int, now: float
    ) -> None:
        """Put a cartridge on (id 0 takes the mounted one off)."""
        cartridge = (
            Cartridge(cartridge_id, lot, manufactured_day, expiry_day) if cartridge_id else None
        )
        self.advance(now)
        self.firmware.mount(cartridge, self._t)

    def power_cycle(self, now: float) -> None:
        """Reset: a new boot_id; RAM state lost; NVM, cartridge and physics kept."""
        self.advance(now)
        self._power_cycle(self._t, BootReason.RESET)

    def _power_cycle(self, t: float, reason: BootReason) -> None:
        self.firmware.shutdown(t)
        self.firmware = self._boot(t, reason)

    # ================================================================== inspection (tests)
    @property
    def identity(self) -> Identity:
        return self.firmware.identity()

    @property
    def now(self) -> float:
        """The latest time the pen has been advanced to."""
        return self._t

    @property
    def state(self) -> PenState:
        return self.firmware.state

    @property
    def fault(self) -> FaultCode:
        return self.firmware.fault

    @property
    def boot_id(self) -> int:
        return self.firmware.boot_id

    @property
    def unit_errors(self) -> UnitErrors:
        return self.physics.errors

    @property
    def run(self) -> RunRecord | None:
        return self.firmware.run

    @property
    def cartridge(self) -> Cartridge | None:
        return self.bay.cartridge

    def status(self) -> Status:
        """The Status the pen would answer now (cmd_id 0)."""
        return self.firmware.status(0, self._t)

    def true_depth_um(self) -> float:
        return self.physics.true_depth_um()

    def true_rate_sps(self) -> float:
        return self.physics.omega

    def _true_depth_at(self, now: float) -> float:
        self.advance(now)
        return self.physics.true_depth_um()

    def _true_rate_at(self, now: float) -> float:
        self.advance(now)
        return self.physics.omega

    def __repr__(self) -> str:
        return (
            f"SimulatedPen(serial={self._unit.serial!r}, state={self.state.name}, t={self._t:.3f})"
        )
