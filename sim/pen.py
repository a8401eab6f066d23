"""A simulated pen: firmware, physics, NVM, a cartridge bay, a faulty line and a bench.

Sans-I/O, as the protocol core: a driver passes bytes and ``now`` in and takes bytes out::

    pen.receive_data(chunk, clock.now()); pen.advance(clock.now())
    out = pen.data_to_send(clock.now())        # write these to the host
    sleep until pen.next_deadline()            # when idle

The same seed gives the same unit (serial, manufacturing errors, sensor noise, cartridge) and
— for the same inputs at the same times — the same results. Boot ids are drawn from the OS's
randomness at every power-on, as a real pen draws them, so two processes simulating the same
unit never look like the same boot to a host (its treatment log keys runs on them); a test that
needs them repeatable sets ``boot_seed``.

With ``state=PATH`` the unit's non-volatile memory lives in a file (see :mod:`.statefile`): it
is loaded at power-on, written at every change, and locked while the pen is powered.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from micropen.protocol.device import PRODUCTION_CAPABILITIES
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
from .bootloader import STEP_S, Bootloader, BootState, NoBootableImage
from .calstore import CAL_MODES, CalStore, Nvm
from .cartridge import Bay, Cartridge
from .devkey import dev_public_key, factory_image
from .faults import LinkFaults
from .firmware import BootReason, Firmware, RunRecord, UnitInfo
from .flash import FLASH_BYTES, SECTOR, Flash
from .pairing import MAX_PAIRINGS, HostPairing, PairingMode, PairingStore
from .physics import Noise, Physics, UnitErrors
from .statefile import MountedCartridge, NvmImage, StateFile, UnitBinding

__all__ = ["SimConfig", "SimulatedPen"]

_U32 = 0xFFFF_FFFF
_BOOT_SEED_MAX = (1 << 64) - 1
CARTRIDGE_AGE_DAYS = 30  # the boot cartridge was made a month before "today"
_BROWNOUT, _UPDATE = BootReason.BROWNOUT, BootReason.UPDATE  # read at every advance (an Enum
# attribute costs a Python call on CPython 3.11)


def _pen_id(rng: random.Random) -> int:
    """A factory-fresh unit's pairing id, drawn once (from the OS's randomness unless a test
    asked for repeatable boots) and kept in its NVM (a state file keeps it): two simulators of
    one seed without a state file are two units to a host."""
    return rng.getrandbits(32) or 1


def _rtc_now() -> tuple[int, float]:
    """Days since 1970-01-01 today (UTC), and seconds into that day: where the simulated pen's
    real-time clock starts. Tests pin ``today_day`` for repeatability."""
    now = datetime.now(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return (now.date() - date(1970, 1, 1)).days, (now - midnight).total_seconds()


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
    # The pen's real-time clock (cartridge expiry, instrument due dates) at power-on: the day,
    # and seconds into it; it runs on with the pen's clock, so a long `sim serve` sees the
    # date change at midnight UTC. Default: now. A pinned day starts at its midnight.
    today_day: int = -1
    day_seconds: float = field(default=-1.0, compare=False)  # not what the unit is
    link_faults: bool = True
    telemetry_batch: bool = True  # False: a pen from before TelemetryBatch (sends singles only)
    boot_seed: int | None = None  # None: boot ids from the OS's randomness (as a real pen)
    state: str | None = None  # a file keeping the unit's NVM between processes

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
        if self.today_day == -1:  # the real date and time, unless pinned
            rtc_day, rtc_seconds = _rtc_now()
            object.__setattr__(self, "today_day", rtc_day)
            if self.day_seconds == -1.0:
                object.__setattr__(self, "day_seconds", rtc_seconds)
        elif self.day_seconds == -1.0:
            object.__setattr__(self, "day_seconds", 0.0)
        if not 0.0 <= self.day_seconds < 86_400.0:
            raise LocalProtocolError(f"day_seconds {self.day_seconds} outside 0..86400")
        if not 0 <= self.today_day <= _U32:
            raise LocalProtocolError(f"today_day {self.today_day} outside 0..{_U32}")
        if self.boot_seed is not None and (
            isinstance(self.boot_seed, bool) or not 0 <= self.boot_seed <= _BOOT_SEED_MAX
        ):
            raise LocalProtocolError(f"boot_seed {self.boot_seed!r} outside 0..{_BOOT_SEED_MAX}")
        if self.state is not None and not self.state.strip():
            raise LocalProtocolError("state needs a file path, e.g. state=/var/tmp/pen-44.json")

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
        if key in ("seed", "hardware_revision", "today_day", "boot_seed"):
            return int(raw)
        if key in ("manufacturing_errors", "cartridge", "link_faults", "telemetry_batch"):
            return _parse_bool(raw)
        if key == "day_seconds":
            return float(raw)
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


LOCAL_PAIRING_NAME = "this process"  # how the pen lists the pairing of its in-process host


class SimulatedPen:
    """One simulated unit behind the byte interface a serial port or socket would carry."""

    def __init__(self, config: SimConfig = SimConfig(), *, now: float = 0.0) -> None:
        self.config = config
        seed = config.seed
        self._rtc_origin = now  # the real-time clock reads config.today_day here
        self._rng = random.Random(f"micropen-pen-{seed}")
        # Boot ids: a new one at every power-on, from the OS's randomness, as a real pen draws
        # them; repeatable only when a test asks for it (boot_seed).
        self._boot_rng = (
            random.Random(int.from_bytes(os.urandom(16), "little"))
            if config.boot_seed is None
            else random.Random(f"micropen-boot-{seed}-{config.boot_seed}")
        )
        errors = UnitErrors.from_seed(seed) if config.manufacturing_errors else UnitErrors()
        self.physics = Physics(errors, now)
        self.nvm = Nvm(
            CalStore(config.calibration, config.today_day),
            pairings=PairingStore(_pen_id(self._boot_rng)),
        )
        self.display: list[str] = []  # the pen's screen (pairing codes), oldest first
        self._state: StateFile | None = None
        self._saved: tuple[Any, ...] | None = None
        image: NvmImage | None = None
        if config.state is not None:
            self._state = StateFile(
                config.state,
                UnitBinding(
                    seed,
                    config.serial_number,
                    config.model,
                    config.hardware_revision,
                    config.manufacturing_errors,
                ),
            )
            image = self._state.open()  # locked from here on; refused with one line
        try:
            self._power_on(config, image, now)
        except BaseException:
            if self._state is not None:
                self._state.release()  # a pen that never came up holds nothing
            raise

    def _power_on(self, config: SimConfig, image: NvmImage | None, now: float) -> None:
        seed = config.seed
        if image is None:  # factory-fresh (no state file, or a new one)
            self.bay = Bay(self._boot_cartridge() if config.cartridge else None)
        else:
            self.bay = Bay(self._load_image(image))
        self.link_faults: LinkFaults | None = LinkFaults(seed) if config.link_faults else None
        self._noise = Noise(seed)
        self._t = now
        self._open_flash(config, image)
        capabilities = (
            PRODUCTION_CAPABILITIES  # what any pen announces, and what only a simulator does
            | Capability.SIMULATOR
            | Capability.DEVICE_FAULT_INJECTION
            | Capability.BENCH_INSTRUMENTS
            | (Capability.LINK_FAULT_INJECTION if config.link_faults else 0)
            | (Capability.TELEMETRY_BATCH if config.telemetry_batch else 0)
        )
        self._capabilities = int(capabilities)
        self._swap_at: float | None = None  # the bootloader is swapping: next step's end
        self._swap_reason = BootReason.POWER_ON
        self._finish_swap_now()  # a swap a killed process left half done completes first
        self.firmware = self._boot(now, BootReason.POWER_ON)
        self.bench = Bench(
            self._true_depth_at, self._true_rate_at, seed=seed, today_day=config.today_day
        )
        if self._state is not None:
            if image is not None and not image.run_in_progress and not self._boot_changed:
                self._saved = self._nvm_fingerprint()  # the file already says exactly this
            self._sync_nvm()

    def _open_flash(self, config: SimConfig, image: NvmImage | None) -> None:
        """The program flash (beside the state file, if any) and the bootloader's record; a
        unit new from the factory gets the factory image, confirmed."""
        path = None if config.state is None or self._state is None else self._state.path
        self.flash = Flash(None if path is None else Path(f"{path}.flash"))
        self.boot_state = BootState() if image is None else image.boot
        self.bootloader = Bootloader(self.flash, self.boot_state, dev_public_key())
        if image is None or self.flash.fresh:
            self.flash.erase(0, FLASH_BYTES // SECTOR)
            self.bootloader.provision(factory_image(config.firmware))

    def _finish_swap_now(self) -> None:
        """At power-on the bootloader's flash work is done before anything else runs (the
        process that simulates the unit starts here: there is no earlier firmware to show)."""
        before = self.boot_state.as_tuple()
        self.bootloader.start()
        while self.bootloader.steps_left():
            self.bootloader.step()
        self._boot_changed = self.boot_state.as_tuple() != before

    def _unit_info(self) -> UnitInfo:
        """Identity as the running image says it (the version comes from its header)."""
        running = self.bootloader.boot_image()
        major, minor, patch = running.version
        config = self.config
        return UnitInfo(
            config.model,
            config.serial_number,
            (major, minor, min(patch, 0xFF)),
            config.hardware_revision,
            self._capabilities,
            self.today,
        )

    def today(self, t: float) -> int:
        """The real-time clock's day (days since 1970-01-01, UTC) at the pen's time ``t``."""
        config = self.config
        return config.today_day + int((config.day_seconds + t - self._rtc_origin) // 86_400)

    def _boot_cartridge(self) -> Cartridge:
        today = self.config.today_day
        made = max(0, today - CARTRIDGE_AGE_DAYS)
        return Cartridge(
            self._rng.randrange(1, _U32),
            f"L{self._rng.randrange(10**8):08d}",
            made,
            made + 2 * 365,
        )

    def _load_image(self, image: NvmImage) -> Cartridge | None:
        """Put the state file's NVM in place; returns the cartridge left in the bay."""
        cal, records = self.nvm.cal, self.nvm.cartridges
        cal.active, cal.staging = image.cal_active, image.cal_staging
        cal.counter_floor = image.cal_counter_floor
        records.used_ids = set(image.used_ids)
        records.retired_ids = set(image.retired_ids)
        records.locked_id = image.locked_id
        self.nvm.lifetime_strokes = image.lifetime_strokes
        if image.pen_id:
            self.nvm.pairings = PairingStore(image.pen_id, {p.host_id: p for p in image.pairings})
        m = image.mounted
        if m is None:
            return None
        cartridge = Cartridge(
            m.cartridge_id, m.lot, m.manufactured_day, m.expiry_day, m.strokes_used, m.run_ms_used
        )
        if image.run_in_progress:
            # The unit lost power mid-run without its shutdown write (the process was killed):
            # how much of this cartridge was used is unknown, so it never runs again.
            records.used_ids.add(m.cartridge_id)
            records.retired_ids.add(m.cartridge_id)
        return cartridge

    def _nvm_fingerprint(self) -> tuple[Any, ...]:
        """Everything the state file holds, cheaply (the id sets only grow)."""
        nvm = self.nvm
        cal, records, cart = nvm.cal, nvm.cartridges, self.bay.cartridge
        run = self.firmware.run
        return (
            cal.active,
            cal.staging,
            cal.counter_floor,
            len(records.used_ids),
            len(records.retired_ids),
            records.locked_id,
            nvm.lifetime_strokes,
            None
            if cart is None
            else (
                cart.cartridge_id,
                cart.lot,
                cart.manufactured_day,
                cart.expiry_day,
                cart.strokes_used,
                cart.run_ms_used,
            ),
            run is not None and run.end_t is None,
            self.boot_state.as_tuple(),
            nvm.pairings.fingerprint(),
        )

    def _nvm_image(self, *, powered_off: bool = False) -> NvmImage:
        nvm = self.nvm
        cal, records, cart = nvm.cal, nvm.cartridges, self.bay.cartridge
        run = self.firmware.run
        return NvmImage(
            cal_active=cal.active,
            cal_staging=cal.staging,
            cal_counter_floor=cal.counter_floor,
            used_ids=set(records.used_ids),
            retired_ids=set(records.retired_ids),
            locked_id=records.locked_id,
            lifetime_strokes=nvm.lifetime_strokes,
            mounted=None
            if cart is None
            else MountedCartridge(
                cart.cartridge_id,
                cart.lot,
                cart.manufactured_day,
                cart.expiry_day,
                cart.strokes_used,
                cart.run_ms_used,
            ),
            run_in_progress=not powered_off and run is not None and run.end_t is None,
            boot=BootState(*self.boot_state.as_tuple()),
            pen_id=nvm.pairings.pen_id,
            pairings=nvm.pairings.listing(),
        )

    def _sync_nvm(self) -> None:
        """Write the state file if non-volatile data changed since it was last written (called
        at the end of every entry point, so before any answer leaves the pen)."""
        state = self._state
        if state is None or not state.held:
            return
        fingerprint = self._nvm_fingerprint()
        if fingerprint != self._saved:
            state.write(self._nvm_image())
            self._saved = fingerprint

    def _boot(self, now: float, reason: BootReason) -> Firmware:
        self._unit = self._unit_info()
        return Firmware(
            self._unit,
            physics=self.physics,
            nvm=self.nvm,
            bay=self.bay,
            link_faults=self.link_faults,
            noise=self._noise,
            rng=self._boot_rng,
            now=now,
            boot=self.bootloader,
            pairing_mode=PairingMode(self.display),
            boot_reason=reason,
        )

    # ================================================================== byte interface
    def receive_data(self, data: bytes, now: float) -> None:
        """Bytes from the host (through link-fault injection)."""
        self.advance(now)
        chunk = bytes(data)
        if self.link_faults is not None:
            chunk = self.link_faults.inbound(chunk, self._t)
        if chunk and self._swap_at is None:  # the bootloader does not listen
            self.firmware.feed(chunk, self._t)
        if self._state is not None:
            self._sync_nvm()

    def data_to_send(self, now: float) -> bytes:
        """Bytes for the host (through link-fault injection, delays respected)."""
        self.advance(now)
        if self._swap_at is not None:
            return b""
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
            if self._swap_at is not None:  # the bootloader works; nothing else runs
                if self._swap_at > now:
                    break
                self._swap_step(self._swap_at)
                continue
            fw = self.firmware
            arrival = None if faults is None else faults.next_inbound()
            reset, reason = fw.brownout_at, _BROWNOUT
            update_reset = fw.update.reset_at
            if update_reset is not None and (reset is None or update_reset < reset):
                reset, reason = update_reset, _UPDATE
            if reset is not None and reset <= now and (arrival is None or reset <= arrival):
                fw.advance(reset)
                self._power_cycle(reset, reason)
                continue
            if faults is None or arrival is None or arrival > now:
                break
            fw.advance(arrival)
            data = faults.release_inbound(arrival)
            if data:
                fw.feed(data, arrival)
        if self._swap_at is None:
            self.firmware.advance(now)
        if self._state is not None:
            self._sync_nvm()

    def _swap_step(self, at: float) -> None:
        """One swap step is done at ``at``; after the last one the firmware starts."""
        self.bootloader.step()
        if self.bootloader.steps_left():
            self._swap_at = at + STEP_S
        else:
            self._swap_at = None
            self._start_firmware(at, self._swap_reason)
        if self._state is not None:
            self._sync_nvm()  # the step is recorded before the next one starts

    def _start_firmware(self, t: float, reason: BootReason) -> None:
        """Boot the verified primary image; with none, the pen stays in its bootloader for
        good (silent: it never runs an image that does not verify)."""
        try:
            self.firmware = self._boot(t, reason)
        except NoBootableImage:
            self._swap_at = math.inf

    def next_deadline(self) -> float | None:
        """When advance()/data_to_send() must next be called if no bytes arrive."""
        if self._swap_at is not None:
            return self._swap_at
        candidates = [self.firmware.next_deadline(), self.firmware.link.next_deadline()]
        if self.link_faults is not None:
            candidates += [self.link_faults.next_inbound(), self.link_faults.next_outbound()]
        known = [c for c in candidates if c is not None]
        return max(min(known), self._t) if known else None

    # ================================================================== pairing (physical acts)
    def press_pairing_button(self, now: float) -> None:
        """The pen's pairing button: opens pairing mode (one host may ask within a minute), or
        accepts the request whose code the screen shows."""
        self.advance(now)
        if self._swap_at is None:
            self.firmware.pairing_mode.press(self._t)

    def add_pairing(self, host_id: int, key: bytes, name: str, now: float) -> int:
        """Pair a host without the exchange (the bench owns this simulated unit: it is the
        local, physical act). Returns the pen id the host files the key under."""
        self.advance(now)
        if not self.nvm.pairings.add(HostPairing(host_id, key, name)):
            raise LocalProtocolError(
                f"the pen holds {MAX_PAIRINGS} pairings; revoke one (micropen pair revoke)"
            )
        self._sync_nvm()
        return self.nvm.pairings.pen_id

    def add_local_pairing(self, host_id: int, key: bytes, now: float) -> int:
        """Pair the host of this very process (the built-in simulator's own host). One such
        pairing at a time: each process brings a new host id and a throwaway key, so with a
        state file the pairings of earlier processes would pile up until the pen is full."""
        self.advance(now)
        for earlier in self.nvm.pairings.listing():
            if earlier.name == LOCAL_PAIRING_NAME:
                self.nvm.pairings.remove(earlier.host_id)
        return self.add_pairing(host_id, key, LOCAL_PAIRING_NAME, now)

    def take_display(self) -> list[str]:
        """What the pen's screen showed since the last call."""
        shown, self.display[:] = list(self.display), []
        return shown

    # ================================================================== the CLI's levers
    def set_param(self, param: SimParam, value: int, now: float) -> None:
        """Same effect as a SimSet message; a refused value raises LocalProtocolError."""
        self.advance(now)
        param = SimParam(param)
        refusal = self.firmware.apply_sim_param(param, value, self._t)
        self._sync_nvm()
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
        self._sync_nvm()

    def power_cycle(self, now: float) -> None:
        """Reset: a new boot_id; RAM state lost; NVM, cartridge and physics kept."""
        self.advance(now)
        self._power_cycle(self._t, BootReason.RESET)
        self._sync_nvm()

    def close(self, now: float) -> None:
        """Power off: the firmware's shutdown writes the tag and lifetime counter, the state
        file (if any) gets its last write and is unlocked. The pen is not to be driven after
        this; another pen (in this process or another) may then power the unit on."""
        self.advance(now)
        if self._swap_at is None:
            self.firmware.shutdown(self._t)
        self.flash.close()
        state, self._state = self._state, None
        if state is not None and state.held:
            try:
                state.write(self._nvm_image(powered_off=True))
            finally:
                state.release()

    # ================================================================== the state file
    @property
    def state_file(self) -> StateFile | None:
        """The file keeping this unit's NVM (None: NVM lives and dies with this object)."""
        return self._state

    def release_state(self) -> None:
        """Save and unlock the state file without powering off (a host closed the port of
        an in-process pen): until :meth:`reclaim_state`, nothing is written."""
        state = self._state
        if state is not None and state.held:
            try:
                self._sync_nvm()
            finally:
                state.release()  # even when the write failed: the lock is not kept hostage

    def reclaim_state(self) -> bool:
        """Lock the state file again; False (and left unlocked) when another process changed
        it meanwhile: this object is then stale and must be replaced by a new power-on."""
        state = self._state
        if state is None or state.held:
            return True
        if not state.reclaim():
            state.release()
            return False
        self._sync_nvm()  # what changed while the file was not ours to write
        return True

    def _power_cycle(self, t: float, reason: BootReason) -> None:
        if self._swap_at is None:
            self.firmware.shutdown(t)
        else:  # power went in the middle of a swap step: that sector is half written
            self.flash.damage(*self.bootloader.step_target())
        self._swap_reason = reason
        if self.bootloader.start():
            self._swap_at = t + STEP_S  # the old firmware stays down until the swap is done
        else:
            self._swap_at = None
            self._start_firmware(t, reason)

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
        return PenState.BOOTLOADER if self._swap_at is not None else self.firmware.state

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
