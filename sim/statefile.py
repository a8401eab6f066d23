"""A simulated unit's non-volatile memory in a file: what a real pen keeps in its flash.

``sim://?seed=44&state=PATH`` and ``micropen sim serve --state PATH`` keep one unit's NVM —
calibration banks and security counter, cartridge records (used, retired, locked), lifetime
strokes — and the cartridge left in its bay, between processes, so that calibrating in one
process and verifying in the next works as on a real pen.

Written as a pen writes its flash:

* **At every change** of non-volatile data (a commit, a run's start and end, a cartridge locked,
  retired, mounted or taken off, power-off), before the pen's answer leaves it.
* **Atomically**: a temporary file beside it, ``fsync``, ``rename`` over the old one, ``fsync``
  of the folder. A crash leaves the old file or the new one, never half of one.
* **Checked**: a format name, a format version and a SHA-256 over everything else. A file that
  does not check out is refused with one line naming the path and what to do — never loaded in
  part, never silently replaced by a factory-fresh unit.
* **One holder**: an exclusive OS lock (``flock``) on ``PATH.lock`` for as long as the unit is
  powered, as a physical pen can be powered on only once. A second process (or a second pen in
  the same process) is refused while the first holds it; the OS drops the lock if the holder
  dies. (POSIX only: ``fcntl`` is imported when a state file is used, so the simulator itself
  still imports everywhere.)
* **Bound to one unit**: the file names the seed, serial and the hidden hardware it was made
  for; another unit's file is refused.

The file is JSON (readable for a curious engineer, but edit it and the checksum refuses it)::

    {"format": "micropen-sim-nvm", "version": 1, "sha256": "…",
     "unit": {"seed": 44, "serial": "SIM-000044", …}, "nvm": {…}}
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micropen.protocol.errors import LocalProtocolError

from .bootloader import BootState
from .calstore import CalRecord
from .cartridge import Cartridge
from .pairing import HostPairing

__all__ = [
    "FORMAT",
    "VERSION",
    "MountedCartridge",
    "NvmImage",
    "StateFile",
    "StateFileBusy",
    "StateFileDamaged",
    "StateFileError",
    "StateFileMismatch",
    "UnitBinding",
]

FORMAT = "micropen-sim-nvm"
VERSION = 1
_U32 = 0xFFFF_FFFF


MAX_STATE_BYTES = 1 << 20  # a state file is a few kB; anything near this is not one


class StateFileError(LocalProtocolError):
    """The state file cannot be used; the message is one line naming the path and the fix."""


class StateFileBusy(StateFileError):
    """Another process (or another pen in this one) holds the unit's state file."""


class StateFileDamaged(StateFileError):
    """The file does not check out (unreadable, checksum, structure, unknown version)."""


class StateFileMismatch(StateFileError):
    """The file was made for another unit."""


@dataclass(frozen=True, slots=True)
class UnitBinding:
    """What makes a unit that unit: its seed, serial and hidden hardware. A state file made
    for one binding is never loaded into another (the calibration in it would be wrong)."""

    seed: int
    serial: str
    model: str
    hardware_revision: int
    manufacturing_errors: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "serial": self.serial,
            "model": self.model,
            "hardware_revision": self.hardware_revision,
            "manufacturing_errors": self.manufacturing_errors,
        }


@dataclass(frozen=True, slots=True)
class MountedCartridge:
    """The cartridge in the bay, with its tag's usage."""

    cartridge_id: int
    lot: str
    manufactured_day: int
    expiry_day: int
    strokes_used: int
    run_ms_used: float


@dataclass(slots=True)
class NvmImage:
    """Everything the file holds about the unit, as plain values."""

    cal_active: CalRecord | None = None
    cal_staging: CalRecord | None = None
    cal_counter_floor: int = 0
    used_ids: set[int] = field(default_factory=set)
    retired_ids: set[int] = field(default_factory=set)
    locked_id: int = 0
    lifetime_strokes: int = 0
    mounted: MountedCartridge | None = None
    # A run had started and its end (and usage) was never written: the unit lost power without
    # its shutdown write (the process was killed). The cartridge's usage is then unknown.
    run_in_progress: bool = False
    boot: BootState = field(default_factory=BootState)  # the bootloader's record
    pen_id: int = 0  # 0: none recorded (files from before pairing): the unit's own is used
    pairings: list[HostPairing] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        m = self.mounted
        return {
            "calibration": {
                "active": _record_json(self.cal_active),
                "staging": _record_json(self.cal_staging),
                "counter_floor": self.cal_counter_floor,
            },
            "cartridges": {
                "used_ids": sorted(self.used_ids),
                "retired_ids": sorted(self.retired_ids),
                "locked_id": self.locked_id,
            },
            "lifetime_strokes": self.lifetime_strokes,
            "mounted": None
            if m is None
            else {
                "cartridge_id": m.cartridge_id,
                "lot": m.lot,
                "manufactured_day": m.manufactured_day,
                "expiry_day": m.expiry_day,
                "strokes_used": m.strokes_used,
                "run_ms_used": m.run_ms_used,
            },
            "run_in_progress": self.run_in_progress,
            "pairing": {
                "pen_id": self.pen_id,
                "hosts": [
                    {"host_id": p.host_id, "key": p.key.hex(), "name": p.name}
                    for p in self.pairings
                ],
            },
            "boot": {
                "security_counter": self.boot.security_counter,
                "trial": self.boot.trial,
                "pending": self.boot.pending,
                "swap_kind": self.boot.swap_kind,
                "swap_sectors": self.boot.swap_sectors,
                "swap_done": self.boot.swap_done,
            },
        }


def _record_json(record: CalRecord | None) -> list[int] | None:
    if record is None:
        return None
    return [
        record.version, record.depth_gain_ppm, record.depth_offset_um, record.rate_gain_ppm,
        record.written_at, record.counter, record.crc,
    ]  # fmt: skip


def _digest(document: dict[str, Any]) -> str:
    """SHA-256 over the canonical JSON of everything but the digest itself."""
    body = {k: v for k, v in document.items() if k != "sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class StateFile:
    """One unit's state file, locked for as long as this object holds it.

    :meth:`open` locks and reads it (``None`` when it does not exist yet); :meth:`write`
    replaces it atomically; :meth:`release` unlocks it and :meth:`reclaim` locks it again,
    telling whether anybody changed it meanwhile.
    """

    def __init__(self, path: str | os.PathLike[str], unit: UnitBinding) -> None:
        try:  # the lock belongs to the file, not to one of its names (a symlink is one more)
            self.path = Path(os.path.realpath(os.path.expanduser(os.fspath(path))))
        except ValueError as exc:  # e.g. a NUL byte in the path
            raise StateFileError(
                f"simulator state file {path!r}: {exc}; give a plain path"
            ) from None
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.unit = unit
        self.writes = 0
        self._lock_fd: int | None = None
        self._digest: str | None = None  # of the file as last read or written by us

    # ------------------------------------------------------------------ lock
    @property
    def held(self) -> bool:
        return self._lock_fd is not None

    def open(self) -> NvmImage | None:
        """Lock the file and read it: the unit's NVM, or None for a unit never powered."""
        self._lock()
        try:
            return self._read()
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Unlock (the file stays as last written)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor of the lock releases it

    def reclaim(self) -> bool:
        """Lock again after :meth:`release`; False when the file changed meanwhile (another
        process powered the unit: what this process holds in memory is stale)."""
        if self.held:
            return True
        self._lock()
        try:
            current = self._current_digest()
        except BaseException:
            self.release()
            raise
        return current == self._digest

    def _lock(self) -> None:
        if self.held:
            return
        try:
            import fcntl
        except ImportError:
            raise StateFileError(
                f"simulator state file {self.path}: state files need POSIX file locks (fcntl), "
                "which this platform lacks; run the simulator without state="
            ) from None
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateFileError(
                f"cannot open simulator state file {self.path}: {exc.strerror or exc}; "
                "give a path in a folder that exists and is writable"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f"process {holder}" if holder else "another process"
                raise StateFileBusy(
                    f"simulator state file {self.path} is in use by {who}: a pen can be "
                    "powered on only once; stop that simulator first, or use another state file"
                ) from None
            raise StateFileError(
                f"cannot lock simulator state file {self.path}: {exc.strerror or exc}"
            ) from None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    # ------------------------------------------------------------------ read
    def _load_document(self) -> dict[str, Any] | None:
        raw = self._read_bytes()
        if raw is None:
            return None
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self._damaged("not valid JSON: truncated or overwritten") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise self._damaged(f"not a {FORMAT} file")
        try:
            digest = _digest(document)
        except (ValueError, TypeError, RecursionError):  # NaN, huge numbers, deep nesting
            raise self._damaged("values no simulator writes (NaN, huge or nested)") from None
        if document.get("sha256") != digest:
            raise self._damaged("checksum mismatch: the contents were altered or corrupted")
        version = document.get("version")
        if version != VERSION:
            raise StateFileDamaged(
                f"simulator state file {self.path} has format version {version!r}; this "
                f"simulator reads version {VERSION}: use the micropen release that wrote it, "
                "or another state file"
            )
        return document

    def _read_bytes(self) -> bytes | None:
        """The file's bytes; only a regular file of a sane size, with one name, is read (not
        /dev/zero, a FIFO, or a hard link that a second lock could hide behind)."""
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateFileError(
                f"cannot read simulator state file {self.path}: {exc.strerror or exc}"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise StateFileError(
                f"simulator state file {self.path} is not a regular file; give the path of a "
                "file (it is created on first use)"
            )
        if info.st_nlink > 1:
            raise StateFileError(
                f"simulator state file {self.path} has {info.st_nlink} names (hard links): one "
                "unit, one file — copy it instead of linking it"
            )
        if info.st_size > MAX_STATE_BYTES:
            raise self._damaged(f"{info.st_size} bytes, more than any state file holds")
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise StateFileError(
                f"cannot read simulator state file {self.path}: {exc.strerror or exc}"
            ) from None

    def _current_digest(self) -> str | None:
        document = self._load_document()
        return None if document is None else str(document["sha256"])

    def _read(self) -> NvmImage | None:
        document = self._load_document()
        if document is None:
            self._digest = None
            return None
        self._check_unit(document.get("unit"))
        try:
            image = _parse_nvm(document.get("nvm"))
        except (KeyError, TypeError, ValueError) as exc:
            raise self._damaged(f"unexpected contents ({exc})") from None
        self._digest = str(document["sha256"])
        return image

    def _check_unit(self, found: Any) -> None:
        wanted = self.unit.to_json()
        if not isinstance(found, dict) or set(found) != set(wanted):
            raise self._damaged("no valid unit record")
        if found == wanted:
            return
        if (found["seed"], found["serial"]) != (wanted["seed"], wanted["serial"]):
            raise StateFileMismatch(
                f"simulator state file {self.path} belongs to unit {found['serial']} "
                f"(seed {found['seed']}), not {wanted['serial']} (seed {wanted['seed']}); "
                f"use seed={found['seed']} with it, or another state file"
            )
        differs = sorted(k for k in wanted if found[k] != wanted[k])
        detail = ", ".join(f"{k}={found[k]!r} in the file, {wanted[k]!r} now" for k in differs)
        raise StateFileMismatch(
            f"simulator state file {self.path} was made for unit {found['serial']} with other "
            f"hardware ({detail}); use the same options with it, or another state file"
        )

    def _damaged(self, detail: str) -> StateFileDamaged:
        return StateFileDamaged(
            f"simulator state file {self.path} is damaged ({detail}); nothing was loaded: "
            f"restore it from a backup, or delete it to start unit {self.unit.serial} "
            "factory-fresh (its calibration and cartridge records are then lost)"
        )

    # ------------------------------------------------------------------ write
    def write(self, image: NvmImage) -> None:
        """Replace the file with ``image``: temp file, fsync, rename, fsync of the folder."""
        if not self.held:
            raise StateFileError(
                f"simulator state file {self.path} is not held by this pen; nothing written"
            )
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "unit": self.unit.to_json(),
            "nvm": image.to_json(),
        }
        digest = _digest(document)
        document["sha256"] = digest
        data = (json.dumps(document, sort_keys=True, indent=1, allow_nan=False) + "\n").encode()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            _fsync_folder(self.path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise StateFileError(
                f"cannot write simulator state file {self.path}: {exc.strerror or exc}; the "
                "unit's last saved state is still there — free space or fix permissions"
            ) from None
        self._digest = digest
        self.writes += 1


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


# ---------------------------------------------------------------------- parsing (strict)
def _int(value: Any, name: str, lo: int = 0, hi: int = _U32) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} = {value!r}")
    return value


def _ids(value: Any, name: str) -> set[int]:
    if not isinstance(value, list):
        raise ValueError(f"{name} is not a list")
    return {_int(v, name, 1) for v in value}


def _record(value: Any, name: str) -> CalRecord | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != 7:
        raise ValueError(f"{name} is not a calibration record")
    lo = -(1 << 31)
    version, gain, offset, rate, written_at, counter, crc = value
    return CalRecord(
        _int(version, name, 0, 0xFF),
        _int(gain, name, lo, (1 << 31) - 1),
        _int(offset, name, lo, (1 << 31) - 1),
        _int(rate, name, lo, (1 << 31) - 1),
        _int(written_at, name),
        _int(counter, name),
        _int(crc, name),
    )


def _pairings(found: Any) -> tuple[int, list[HostPairing]]:
    if not isinstance(found, dict) or not isinstance(found["hosts"], list):
        raise ValueError("pairing is not an object with a host list")
    hosts = []
    for entry in found["hosts"]:
        key = bytes.fromhex(entry["key"]) if isinstance(entry["key"], str) else b""
        name = entry["name"]
        if len(key) != 32 or not isinstance(name, str) or len(name) > 16:
            raise ValueError("pairing.hosts has an entry that is not a pairing")
        hosts.append(HostPairing(_int(entry["host_id"], "pairing.host_id", 1), key, name))
    return _int(found["pen_id"], "pairing.pen_id", 1), hosts


def _boot_state(boot: Any) -> BootState:
    if not isinstance(boot, dict):
        raise ValueError("boot is not an object")
    flags = [boot["trial"], boot["pending"]]
    if not all(isinstance(flag, bool) for flag in flags):
        raise ValueError("boot.trial / boot.pending are not true/false")
    if boot["swap_kind"] not in ("", "install", "revert", "recover"):
        raise ValueError(f"boot.swap_kind = {boot['swap_kind']!r}")
    state = BootState(
        _int(boot["security_counter"], "boot.security_counter"),
        boot["trial"],
        boot["pending"],
        boot["swap_kind"],
        _int(boot["swap_sectors"], "boot.swap_sectors", 0, 64),
        _int(boot["swap_done"], "boot.swap_done", 0, 3 * 64),
    )
    if state.swap_done > 3 * state.swap_sectors:
        raise ValueError("boot.swap_done is past the end of the swap")
    return state


def _parse_nvm(nvm: Any) -> NvmImage:
    if not isinstance(nvm, dict):
        raise ValueError("nvm is not an object")
    cal, carts, mounted = nvm["calibration"], nvm["cartridges"], nvm["mounted"]
    image = NvmImage(
        cal_active=_record(cal["active"], "calibration.active"),
        cal_staging=_record(cal["staging"], "calibration.staging"),
        cal_counter_floor=_int(cal["counter_floor"], "calibration.counter_floor"),
        used_ids=_ids(carts["used_ids"], "cartridges.used_ids"),
        retired_ids=_ids(carts["retired_ids"], "cartridges.retired_ids"),
        locked_id=_int(carts["locked_id"], "cartridges.locked_id"),
        lifetime_strokes=_int(nvm["lifetime_strokes"], "lifetime_strokes", 0, 1 << 62),
        run_in_progress=nvm["run_in_progress"] is True,
    )
    if not isinstance(nvm["run_in_progress"], bool):
        raise ValueError("run_in_progress is not true/false")
    if "boot" in nvm:  # files written before the bootloader existed have none
        image.boot = _boot_state(nvm["boot"])
    if "pairing" in nvm:  # nor pairings, before link authentication
        image.pen_id, image.pairings = _pairings(nvm["pairing"])
    if mounted is not None:
        run_ms = mounted["run_ms_used"]
        if isinstance(run_ms, bool) or not isinstance(run_ms, int | float) or not run_ms >= 0:
            raise ValueError(f"mounted.run_ms_used = {run_ms!r}")
        lot = mounted["lot"]
        if not isinstance(lot, str):
            raise ValueError(f"mounted.lot = {lot!r}")
        image.mounted = MountedCartridge(
            _int(mounted["cartridge_id"], "mounted.cartridge_id", 1),
            lot,
            _int(mounted["manufactured_day"], "mounted.manufactured_day"),
            _int(mounted["expiry_day"], "mounted.expiry_day"),
            _int(mounted["strokes_used"], "mounted.strokes_used", 0, 1 << 62),
            float(run_ms),
        )
        m = image.mounted
        try:  # the tag rules a physical cartridge obeys (lot characters, length, days)
            Cartridge(m.cartridge_id, m.lot, m.manufactured_day, m.expiry_day)
        except LocalProtocolError as exc:
            raise ValueError(f"mounted: {exc}") from None
    return image
