"""The pen's bootloader: verify before swap, test boot, confirm or revert, a rising counter.

Shaped after MCUboot's swap mode, because firmware teams know it and because its guarantees
are the ones a Class II device needs:

* **Verify before swap.** An image in the UPDATE slot is installed only when its hash and its
  Ed25519 signature verify against the manufacturer key held here, and its security counter
  is not below the pen's (non-volatile, only ever raised). Otherwise it is refused and the
  refusal is reported at the next boot as a security event.
* **Swap with a scratch sector, resumable.** Installing exchanges the two slots sector by
  sector in three steps (primary → scratch, update → primary, scratch → update), recording in
  non-volatile state after each step how many are done. Every step reads only what earlier
  steps left intact, so a power cut at any instant is repaired by doing the recorded next
  step again: the pen always ends up with one whole image in each slot.
* **Test boot, confirm or revert.** A freshly installed image runs on trial. The running
  firmware confirms it (``FwConfirm``: the security counter rises to the image's); a reboot
  before that swaps the previous image back.
* **The primary is verified at every boot.** Should it ever fail (flash damage), a valid image
  in the update slot is swapped in; with none, the pen stays in its bootloader.

Time: each swap step costs a sector erase and a program (``flash.py``); the caller runs the
steps as its clock passes them, so a power cut lands in a real place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from micropen.protocol import image as img
from micropen.protocol.errors import MicropenError
from micropen.protocol.messages import EventCode, FwSlotId

from .flash import (
    ERASE_S_PER_SECTOR,
    PROGRAM_S_PER_SECTOR,
    SCRATCH,
    SECTOR,
    SLOT_BYTES,
    Flash,
    slot_base,
)

__all__ = [
    "STEP_S",
    "BootState",
    "Bootloader",
    "NoBootableImage",
    "SlotView",
]

STEP_S = ERASE_S_PER_SECTOR + PROGRAM_S_PER_SECTOR  # one swap step: erase and program a sector
_STEPS_PER_SECTOR = 3
_U32 = 0xFFFF_FFFF


class NoBootableImage(MicropenError):
    """Neither slot holds an image this bootloader may start (never expected: tests check)."""


@dataclass(slots=True)
class BootState:
    """The bootloader's non-volatile record (kept with the rest of the NVM)."""

    security_counter: int = 0  # images below it are refused; only ever raised
    trial: bool = False  # the primary image runs on trial: a reboot before confirm reverts it
    pending: bool = False  # the next boot installs the update slot's image on trial
    swap_kind: str = ""  # "install", "revert" or "recover" while a swap is under way
    swap_sectors: int = 0
    swap_done: int = 0  # swap steps completed (three per sector)

    def as_tuple(self) -> tuple[int, bool, bool, str, int, int]:
        return (
            self.security_counter,
            self.trial,
            self.pending,
            self.swap_kind,
            self.swap_sectors,
            self.swap_done,
        )


@dataclass(frozen=True, slots=True)
class SlotView:
    """What one slot holds, as the bootloader judges it."""

    slot: FwSlotId
    image: img.FirmwareImage | None  # parsed (None: nothing parseable)
    valid: bool  # signature by the manufacturer key verifies
    fault: img.ImageFault | None = None


@dataclass(slots=True)
class _Notes:
    events: list[tuple[EventCode, int]] = field(default_factory=list)


class Bootloader:
    """Runs at every power-on and reset, before the firmware; see the module docstring."""

    def __init__(self, flash: Flash, state: BootState, key: Ed25519PublicKey) -> None:
        self.flash, self.state, self._key = flash, state, key
        self.notes: list[tuple[EventCode, int]] = []  # events for the firmware to report
        self._step_started = False

    # ------------------------------------------------------------------ reading slots
    def slot_bytes(self, slot: FwSlotId) -> bytes | None:
        raw = self.flash.read(slot_base(slot), SLOT_BYTES)
        try:
            return raw[: img.stored_length(raw)]
        except img.ImageError:
            return None

    def view(self, slot: FwSlotId) -> SlotView:
        data = self.slot_bytes(slot)
        if data is None:
            return SlotView(slot, None, False, img.ImageFault.BAD_MAGIC)
        try:
            parsed = img.parse(data)
        except img.ImageError as exc:
            return SlotView(slot, None, False, exc.fault)
        try:
            img.verify(data, (self._key,))
        except img.ImageError as exc:
            return SlotView(slot, parsed, False, exc.fault)
        return SlotView(slot, parsed, True)

    def check_installable(self, data: bytes) -> img.FirmwareImage:
        """What an image must pass to be installed (ImageError says which check failed)."""
        found = img.verify(data, (self._key,))
        if found.security_counter < self.state.security_counter:
            raise Downgrade(found.security_counter, self.state.security_counter)
        return found

    # ------------------------------------------------------------------ factory
    def provision(self, image_bytes: bytes) -> None:
        """The factory programs the first image (confirmed) into a blank flash."""
        found = img.verify(image_bytes, (self._key,))
        self.flash.erase(slot_base(FwSlotId.PRIMARY), _sectors(len(image_bytes)))
        self.flash.program(slot_base(FwSlotId.PRIMARY), image_bytes)
        self.state.security_counter = max(self.state.security_counter, found.security_counter)
        self.state.trial = self.state.pending = False

    # ------------------------------------------------------------------ a boot
    def start(self) -> float:
        """Decide what this boot must do first; returns the seconds of flash work (swap steps)
        it needs before the firmware can start (0: none)."""
        self.notes = []
        st = self.state
        if not st.swap_kind:
            if st.pending:
                st.pending = False
                self._begin_install()
            elif st.trial and self.view(FwSlotId.UPDATE).valid:
                self._begin_swap("revert")
                self.notes.append((EventCode.FIRMWARE_REVERTED, self._primary_counter()))
            elif not self.view(FwSlotId.PRIMARY).valid:
                self._begin_recovery()
        return self.steps_left() * STEP_S

    def steps_left(self) -> int:
        st = self.state
        return st.swap_sectors * _STEPS_PER_SECTOR - st.swap_done if st.swap_kind else 0

    def step(self) -> None:
        """Do the next swap step and record it (the caller persists the state after each)."""
        st = self.state
        sector, part = divmod(st.swap_done, _STEPS_PER_SECTOR)
        primary = slot_base(FwSlotId.PRIMARY) + sector * SECTOR
        update = slot_base(FwSlotId.UPDATE) + sector * SECTOR
        source, target = ((primary, SCRATCH), (update, primary), (SCRATCH, update))[part]
        self.flash.copy_sector(source, target)
        st.swap_done += 1
        if st.swap_done == st.swap_sectors * _STEPS_PER_SECTOR:
            self._end_swap()

    def step_target(self) -> tuple[int, int]:
        """Where the next step writes (what a power cut in the middle of it damages)."""
        sector, part = divmod(self.state.swap_done, _STEPS_PER_SECTOR)
        primary = slot_base(FwSlotId.PRIMARY) + sector * SECTOR
        update = slot_base(FwSlotId.UPDATE) + sector * SECTOR
        return (SCRATCH, primary, update)[part], SECTOR

    def boot_image(self) -> img.FirmwareImage:
        """The image the firmware starts from (after any swap): the verified primary."""
        view = self.view(FwSlotId.PRIMARY)
        if view.valid and view.image is not None:
            return view.image
        raise NoBootableImage("no valid signed image in the primary slot")

    # ------------------------------------------------------------------ the running firmware
    def request_test_boot(self) -> None:
        self.state.pending = True

    def confirm(self) -> int:
        """Keep the running image; the counter rises to its own. Returns the counter."""
        st = self.state
        running = self.boot_image()
        st.trial = False
        st.security_counter = max(st.security_counter, running.security_counter)
        return st.security_counter

    # ------------------------------------------------------------------ internals
    def _begin_install(self) -> None:
        data = self.slot_bytes(FwSlotId.UPDATE)
        try:
            if data is None:
                raise img.ImageError(img.ImageFault.BAD_MAGIC, "no image in the update slot")
            self.check_installable(data)
        except img.ImageError as exc:  # verify before swap: never install what fails
            self.notes.append((EventCode.IMAGE_REJECTED, int(exc.fault)))
            return
        self._begin_swap("install")

    def _begin_recovery(self) -> None:
        update = self.view(FwSlotId.UPDATE)
        usable = (
            update.valid
            and update.image is not None
            and update.image.security_counter >= self.state.security_counter
        )
        if usable:
            self._begin_swap("recover")

    def _begin_swap(self, kind: str) -> None:
        st = self.state
        sizes = [len(d) for d in map(self.slot_bytes, FwSlotId) if d is not None]
        st.swap_kind, st.swap_sectors, st.swap_done = kind, _sectors(max(sizes, default=1)), 0

    def _end_swap(self) -> None:
        st = self.state
        kind = st.swap_kind
        st.swap_kind, st.swap_sectors, st.swap_done = "", 0, 0
        if kind == "install":
            st.trial = True
            self.notes.append((EventCode.FIRMWARE_TEST_BOOT, self._primary_counter()))
        elif kind == "revert":
            st.trial = False
        else:  # recovery: the image now running is a verified one; keep it
            st.trial = False

    def _primary_counter(self) -> int:
        view = self.view(FwSlotId.PRIMARY)
        return view.image.security_counter if view.image is not None else 0


class Downgrade(img.ImageError):
    """The image's security counter is below the pen's."""

    def __init__(self, counter: int, floor: int) -> None:
        super().__init__(
            img.ImageFault.DOWNGRADE,
            f"security counter {counter} is below the pen's {floor}: a downgrade",
        )
        self.counter, self.floor = counter, floor


def _sectors(size: int) -> int:
    return max(1, -(-size // SECTOR))
