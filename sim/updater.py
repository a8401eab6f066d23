"""The running firmware's side of an update: receive an image into the update slot, verify it,
ask the bootloader for a test boot, confirm.

Why it is shaped this way (the pain of SMP users, ../shared/field-lessons.md):

* **The pen says which offset it wants** (``FwProgress.next_offset``). A chunk at any other
  offset is not written, only answered with the wanted one, so a re-sent chunk, a chunk
  overtaken by a reconnect, or a host that resumes after a cable pull can never corrupt the
  image or make it skip bytes. ``FwBegin`` with the same size and digest resumes.
* **Slow flash work is announced, never waited out in silence.** Erasing the slot (20 ms per
  sector) and verifying the image take time; a command arriving meanwhile is answered at once
  with ``busy_ms`` (how long until the pen can do it) and not done. The host waits that long
  instead of timing out and retransmitting into a busy pen.
* **Nothing is trusted before verification**: digest, structure, Ed25519 signature by the
  bootloader's key and the security counter, checked at ``FwFinish`` and again by the
  bootloader before it swaps.

Upload progress is RAM: a reboot forgets it (the slot is erased again by the next FwBegin).
"""

from __future__ import annotations

import hashlib
import math

from micropen.protocol import device
from micropen.protocol import image as img
from micropen.protocol.messages import (
    Ack,
    ErrorCode,
    EventCode,
    FwBegin,
    FwChunk,
    FwPhase,
    FwProgress,
    FwSlot,
    FwSlotId,
    Nak,
)
from micropen.protocol.schema import Message

from .bootloader import STEP_S, Bootloader, Downgrade
from .flash import ERASE_S_PER_SECTOR, SECTOR, SLOT_BYTES, slot_base

__all__ = ["RESET_DELAY_S", "SIGNATURE_S", "VERIFY_S_PER_KIB", "UpdateAgent"]

VERIFY_S_PER_KIB = 0.002  # SHA-256 on a small Cortex-M: about 0.5 MB/s
SIGNATURE_S = 0.050  # one Ed25519 verification on a small Cortex-M
# after FwTestBoot's reply, so the reply leaves before the reset
RESET_DELAY_S = device.TEST_BOOT_RESET_DELAY_MS / 1000
_MAX_BUSY_MS = 0xFFFF


class UpdateAgent:
    """One boot's upload state (see the module docstring). Every method returns the reply."""

    def __init__(self, boot: Bootloader) -> None:
        self.boot = boot
        self.phase = FwPhase.NONE
        self.size = 0
        self.digest = b""
        self.next_offset = 0
        self.busy_until = -math.inf
        self.fault: img.ImageFault | None = None
        self.reset_at: float | None = None  # when the firmware must reset into the bootloader
        self.events: list[tuple[EventCode, int]] = []  # security events for the firmware

    # ------------------------------------------------------------------ state
    def current_phase(self, t: float) -> FwPhase:
        if t >= self.busy_until:
            if self.phase is FwPhase.ERASING:
                self.phase = FwPhase.RECEIVING
            elif self.phase is FwPhase.VERIFYING:
                self.phase = FwPhase.REJECTED if self.fault is not None else FwPhase.VERIFIED
        return self.phase

    def _busy_ms(self, t: float) -> int:
        return min(_MAX_BUSY_MS, max(1, math.ceil((self.busy_until - t) * 1000)))

    def _progress(self, cmd_id: int, t: float, busy_ms: int = 0) -> FwProgress:
        return FwProgress(cmd_id, self.current_phase(t), self.next_offset, self.size, busy_ms)

    def _busy(self, cmd_id: int, t: float) -> FwProgress | None:
        if t < self.busy_until:
            return self._progress(cmd_id, t, self._busy_ms(t))
        return None

    def _refuse(
        self, cmd_id: int, error: ErrorCode, fault: img.ImageFault, value: int, limit: int
    ) -> Nak:
        self.events.append((EventCode.IMAGE_REJECTED, int(fault)))
        return Nak(cmd_id, error, value, limit)

    # ------------------------------------------------------------------ commands
    def begin(self, m: FwBegin, t: float) -> Message:
        busy = self._busy(m.cmd_id, t)
        if busy is not None:
            return busy
        floor = self.boot.state.security_counter
        if self.boot.state.trial:  # the update slot holds the image a revert needs: keep it
            return Nak(m.cmd_id, ErrorCode.IMAGE_ON_TRIAL, 0, 0)
        if m.size > SLOT_BYTES:
            return self._refuse(
                m.cmd_id, ErrorCode.IMAGE_TOO_LARGE, img.ImageFault.TOO_LARGE, m.size, SLOT_BYTES
            )
        if m.security_counter < floor:
            return self._refuse(
                m.cmd_id, ErrorCode.IMAGE_DOWNGRADE, img.ImageFault.DOWNGRADE,
                m.security_counter, floor,
            )  # fmt: skip
        phase = self.current_phase(t)
        same = m.size == self.size and m.digest == self.digest
        if same and phase in (FwPhase.RECEIVING, FwPhase.VERIFIED):
            return self._progress(m.cmd_id, t)  # resume where the pen stands
        sectors = -(-m.size // SECTOR)
        self.boot.state.pending = False  # a new upload replaces whatever was staged
        self.boot.flash.erase(slot_base(FwSlotId.UPDATE), sectors)
        self.phase, self.size, self.digest = FwPhase.ERASING, m.size, m.digest
        self.next_offset, self.fault = 0, None
        self.busy_until = t + sectors * ERASE_S_PER_SECTOR
        return self._progress(m.cmd_id, t, self._busy_ms(t))

    def chunk(self, m: FwChunk, t: float) -> Message:
        busy = self._busy(m.cmd_id, t)
        if busy is not None:
            return busy
        phase = self.current_phase(t)
        if phase in (FwPhase.VERIFIED, FwPhase.VERIFYING, FwPhase.TEST_PENDING):
            return self._progress(m.cmd_id, t)  # a late copy of a chunk: harmless
        if phase is not FwPhase.RECEIVING:
            return Nak(m.cmd_id, ErrorCode.NO_UPLOAD, int(phase), 0)
        end = m.offset + m.length
        if end > self.size:
            return Nak(m.cmd_id, ErrorCode.CHUNK_OUT_OF_RANGE, end, self.size)
        if m.offset == self.next_offset:
            self.boot.flash.program(slot_base(FwSlotId.UPDATE) + m.offset, m.data[: m.length])
            self.next_offset = end
        return self._progress(m.cmd_id, t)

    def finish(self, cmd_id: int, t: float) -> Message:
        busy = self._busy(cmd_id, t)
        if busy is not None:
            return busy
        phase = self.current_phase(t)
        if phase is FwPhase.REJECTED and self.fault is not None:
            return Nak(cmd_id, ErrorCode.IMAGE_REJECTED, int(self.fault), 0)
        if phase in (FwPhase.VERIFIED, FwPhase.TEST_PENDING):
            return self._progress(cmd_id, t)
        if phase is not FwPhase.RECEIVING:
            return Nak(cmd_id, ErrorCode.NO_UPLOAD, int(phase), 0)
        if self.next_offset < self.size:
            return Nak(cmd_id, ErrorCode.UPLOAD_INCOMPLETE, self.next_offset, self.size)
        self.fault = self._verify()
        if self.fault is not None:
            self.events.append((EventCode.IMAGE_REJECTED, int(self.fault)))
        self.phase = FwPhase.VERIFYING
        self.busy_until = t + SIGNATURE_S + VERIFY_S_PER_KIB * self.size / 1024
        return self._progress(cmd_id, t, self._busy_ms(t))

    def _verify(self) -> img.ImageFault | None:
        data = self.boot.flash.read(slot_base(FwSlotId.UPDATE), self.size)
        if hashlib.sha256(data).digest() != self.digest:
            return img.ImageFault.HASH_MISMATCH  # not the file FwBegin announced
        try:
            self.boot.check_installable(data)
        except Downgrade:
            return img.ImageFault.DOWNGRADE
        except img.ImageError as exc:
            return exc.fault
        return None

    def test_boot(self, cmd_id: int, t: float) -> Message:
        busy = self._busy(cmd_id, t)
        if busy is not None:
            return busy
        phase = self.current_phase(t)
        if phase is FwPhase.TEST_PENDING:
            return self._progress(cmd_id, t, self._downtime_ms(t))
        if phase is not FwPhase.VERIFIED:
            return Nak(cmd_id, ErrorCode.IMAGE_NOT_VERIFIED, int(phase), 0)
        self.boot.request_test_boot()
        self.phase = FwPhase.TEST_PENDING
        self.reset_at = t + RESET_DELAY_S
        return self._progress(cmd_id, t, self._downtime_ms(t))

    def _downtime_ms(self, t: float) -> int:
        """How long the pen will be away: the reset delay and the swap (an estimate)."""
        sizes = [self.size, len(self.boot.slot_bytes(FwSlotId.PRIMARY) or b"")]
        steps = 3 * -(-max(sizes) // SECTOR)
        left = (self.reset_at or t) - t + steps * STEP_S
        return min(_MAX_BUSY_MS, math.ceil(left * 1000))

    def confirm(self, cmd_id: int) -> Message:
        trial = self.boot.state.trial
        counter = self.boot.confirm()
        if trial:
            self.events.append((EventCode.FIRMWARE_CONFIRMED, counter))
        return Ack(cmd_id, counter)

    def slot(self, cmd_id: int, slot: FwSlotId, t: float) -> FwSlot:
        view = self.boot.view(slot)
        st = self.boot.state
        image = view.image
        version = (0, 0, 0) if image is None else image.version
        return FwSlot(
            cmd_id,
            slot,
            int(image is not None),
            int(view.valid),
            version[0],
            version[1],
            version[2],
            0 if image is None else image.build,
            0 if image is None else image.security_counter,
            0 if image is None else image.size,
            bytes(32) if image is None else image.digest,
            int(slot is FwSlotId.PRIMARY),
            int(slot is FwSlotId.PRIMARY and not st.trial),
            int(slot is FwSlotId.UPDATE and st.pending),
            st.security_counter,
            self.current_phase(t),
            self.next_offset,
        )
