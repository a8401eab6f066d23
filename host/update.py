"""Firmware update from the host: upload (pipelined, resumable), test boot, confirm.

Why it works this way:

* **The pen is the authority on progress.** Every answer carries the offset the pen wants
  next; the host sends from there. After a cable pull, a reconnect or even a pen reboot the
  host asks again with ``FwBegin`` (same size and digest: the pen resumes, or starts over if
  it rebooted) — it never guesses what arrived.
* **Busy is an answer, not a timeout.** Erasing and verifying take the pen seconds; it says
  so (``busy_ms``) and the host sleeps exactly that long on the loop's clock, so no request
  times out and nothing is retransmitted into a busy pen (SMP clients' first-chunk timeouts).
* **Pipelined chunks.** Up to ``window`` chunks are in flight, each an ordinary command with
  its own id, so the reliable link keeps the line full instead of one round trip per chunk;
  any answer that is not the expected next offset drains the window and restarts from the
  pen's offset.
* **Refuses while a run is active** (the pen refuses too: BAD_STATE).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from micropen.protocol import image as img
from micropen.protocol.messages import (
    FW_CHUNK_BYTES,
    Ack,
    ErrorCode,
    FwBegin,
    FwChunk,
    FwConfirm,
    FwFinish,
    FwGetSlot,
    FwPhase,
    FwProgress,
    FwSlot,
    FwSlotId,
    FwTestBoot,
    PenState,
)
from micropen.protocol.schema import Message

from .errors import (
    ConnectionLost,
    HostError,
    InvalidInput,
    OutcomeUnknown,
    PenNotReady,
    PenRebooted,
    PenRefused,
    PenTimeout,
)
from .tasks import TaskScope

if TYPE_CHECKING:
    from .connection import AsyncPen

__all__ = ["DEFAULT_WINDOW", "FirmwareUpdate", "SlotReport", "UpdateRefused", "read_slots"]

DEFAULT_WINDOW = 8
RECONNECT_TIMEOUT_S = 30.0  # how long a lost link may take to come back mid-upload
MAX_RESUMES = 20  # reconnects within one upload before giving up


class _UploadForgotten(HostError):
    """The pen answered NO_UPLOAD: it rebooted and lost the upload (RAM); begin again."""


_LINK_TROUBLE = (ConnectionLost, OutcomeUnknown, PenTimeout, PenRebooted, _UploadForgotten)


class UpdateRefused(HostError):
    """The pen refused the image or a step of the update; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class SlotReport:
    """One flash slot, as the pen's bootloader reports it."""

    slot: str
    present: bool
    valid: bool
    version: str
    security_counter: int
    size: int
    digest: str
    active: bool
    confirmed: bool
    pending: bool

    @classmethod
    def from_message(cls, m: FwSlot) -> SlotReport:
        build = f"+{m.version_build}" if m.version_build else ""
        version = f"{m.version_major}.{m.version_minor}.{m.version_patch}{build}"
        return cls(
            m.slot.name.lower(), bool(m.present), bool(m.valid), version if m.present else "",
            m.security_counter, m.size, m.digest.hex() if m.present else "", bool(m.active),
            bool(m.confirmed), bool(m.pending),
        )  # fmt: skip


async def read_slots(pen: AsyncPen) -> tuple[list[SlotReport], FwSlot]:
    """Both slots; the raw primary answer too (the pen's counter and upload phase)."""
    answers = [await pen.expect(_slot_query(slot), FwSlot) for slot in FwSlotId]
    return [SlotReport.from_message(a) for a in answers], answers[0]


def _slot_query(slot: FwSlotId) -> Callable[[int], Message]:
    return lambda cmd_id: FwGetSlot(cmd_id, slot)


def _refusal(error: PenRefused) -> HostError:
    if error.code is ErrorCode.NO_UPLOAD:
        return _UploadForgotten(str(error))
    return UpdateRefused(_refusal_text(error))


def _refusal_text(error: PenRefused) -> str:
    code, value, limit = error.code, error.value, error.limit
    if code is ErrorCode.IMAGE_REJECTED:
        fault = img.ImageFault(value) if value in set(img.ImageFault) else value
        name = fault.name if isinstance(fault, img.ImageFault) else str(fault)
        return (
            f"the pen rejected the image ({name}): it accepts only intact images signed with "
            "its manufacturer key (check it with micropen firmware verify)"
        )
    if code is ErrorCode.IMAGE_DOWNGRADE:
        return (
            f"security counter {value} is below the pen's {limit}: the pen refuses "
            "downgrades; sign the image with --security-counter of at least "
            f"{limit}"
        )
    if code is ErrorCode.IMAGE_TOO_LARGE:
        return f"the image is {value} bytes; the pen's update slot holds {limit}"
    if code is ErrorCode.IMAGE_ON_TRIAL:
        return (
            "the pen runs an image on trial: keep it with micropen firmware confirm, or "
            "reboot the pen to go back to the previous one, then upload"
        )
    if code in (ErrorCode.BAD_STATE, ErrorCode.FAULT_ACTIVE):
        return f"the pen refused ({code.name}): stop the run first, then update"
    return f"the pen refused ({code.name}, value {value}, limit {limit})"


class FirmwareUpdate:
    """One image to one pen. ``progress(sent, total)`` is called as the pen takes bytes."""

    def __init__(
        self,
        pen: AsyncPen,
        data: bytes,
        *,
        window: int = DEFAULT_WINDOW,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if not 1 <= window <= 64:
            raise InvalidInput(f"window {window} outside 1..64 chunks")
        self.image = img.parse(data)  # local checks first: never send a malformed file
        self.pen, self.data, self.window = pen, data, window
        self.digest = hashlib.sha256(data).digest()
        self._progress = progress or (lambda sent, total: None)
        self.resumes = 0  # reconnects the upload survived
        self.busy_waits = 0  # times the pen said "busy" and the host waited
        self.started_at: int | None = None  # the offset the pen first wanted (> 0: resumed)
        self.sent_bytes = 0  # image bytes this host sent (re-sends included)

    # ------------------------------------------------------------------ the whole job
    async def upload(self) -> None:
        """Put the image in the pen's update slot and have the pen verify it."""
        await self._refuse_if_running()
        while True:
            try:
                await self._upload_once()
                return
            except _LINK_TROUBLE as exc:
                await self._resume_after(exc)

    async def _resume_after(self, exc: BaseException) -> None:
        self.resumes += 1
        if self.resumes > MAX_RESUMES:
            raise ConnectionLost(
                f"the upload was interrupted {MAX_RESUMES} times ({exc}); check the cable "
                "and run the same command again: it resumes where the pen stands"
            ) from exc
        await self.pen.wait_connected(RECONNECT_TIMEOUT_S)

    async def _refuse_if_running(self) -> None:
        status = await self.pen.status()
        if status.state in (PenState.RUNNING, PenState.STOPPING):
            raise PenNotReady(
                f"the pen is {status.state.name.lower()} (run {status.run_id}): stop the run, "
                "then update"
            )

    async def _upload_once(self) -> None:
        progress = await self._until_idle(self._begin)
        if self.started_at is None:
            self.started_at = progress.next_offset
        self._progress(progress.next_offset, len(self.data))
        if progress.phase is not FwPhase.VERIFIED:
            await self._send_chunks(progress.next_offset)
        await self._until_idle(lambda i: FwFinish(i))

    def _begin(self, cmd_id: int) -> FwBegin:
        return FwBegin(cmd_id, len(self.data), self.digest, self.image.security_counter)

    async def _until_idle(
        self, build: Callable[[int], Message], done: FwPhase | None = None
    ) -> FwProgress:
        """Send ``build`` until the pen is not busy with it (or reports ``done``: a test boot's
        answer is busy for the reboot that follows it); the answer it finally gives."""
        while True:
            try:
                reply = await self.pen.expect(build, FwProgress)
            except PenRefused as exc:
                raise _refusal(exc) from None
            if not reply.busy_ms or reply.phase is done:
                return reply
            self.busy_waits += 1
            await asyncio.sleep(reply.busy_ms / 1000)

    async def _send_chunks(self, start: int) -> None:
        size = len(self.data)
        offset = start
        while offset < size:
            offset = await self._window_from(offset)

    async def _window_from(self, offset: int) -> int:
        """Keep ``window`` chunks in flight from ``offset``; returns where to go on from (the
        pen's next offset, after draining the window when it disagreed or was busy)."""
        size = len(self.data)
        inflight: deque[tuple[int, asyncio.Task[Message]]] = deque()
        async with TaskScope("firmware upload window") as scope:
            while True:
                while len(inflight) < self.window and offset < size:
                    end = min(offset + FW_CHUNK_BYTES, size)
                    inflight.append((end, scope.start(self._chunk(offset, end))))
                    offset = end
                if not inflight:
                    return offset
                expected, task = inflight.popleft()
                reply = await task
                assert isinstance(reply, FwProgress)
                self._progress(reply.next_offset, size)
                if reply.busy_ms or reply.next_offset != expected:
                    for _, rest in inflight:
                        await rest  # answered from the pen's offset: harmless, but drained
                    if reply.busy_ms:
                        self.busy_waits += 1
                        await asyncio.sleep(reply.busy_ms / 1000)
                    return reply.next_offset

    async def _chunk(self, offset: int, end: int) -> Message:
        piece = self.data[offset:end].ljust(FW_CHUNK_BYTES, b"\xff")
        self.sent_bytes += end - offset
        try:
            return await self.pen.expect(
                lambda i: FwChunk(i, offset, end - offset, piece), FwProgress
            )
        except PenRefused as exc:
            raise _refusal(exc) from None

    # ------------------------------------------------------------------ test boot, confirm
    async def test_boot(self, timeout: float = 60.0) -> None:
        """Reboot the pen into the uploaded image on trial; returns once the new boot has
        handshaken. Its Identity then names the new version."""
        identity = self.pen.identity
        old_boot = identity.boot_id if identity is not None else None
        await self._until_idle(lambda i: FwTestBoot(i), done=FwPhase.TEST_PENDING)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            identity = self.pen.identity
            if identity is not None and identity.boot_id != old_boot and self.pen.connected:
                return
            if loop.time() >= deadline:
                raise PenTimeout(
                    f"the pen did not come back within {timeout:.0f} s of its test boot; "
                    "check it with micropen firmware status"
                )
            await asyncio.sleep(0.05)

    async def confirm(self) -> int:
        """Keep the running image; returns the pen's security counter from now on."""
        return await self.confirm_running(self.pen)

    @staticmethod
    async def confirm_running(pen: AsyncPen) -> int:
        """Confirm whatever image the pen runs on trial (harmless when it is confirmed)."""
        reply = await pen.request(lambda i: FwConfirm(i))
        if not isinstance(reply, Ack):
            raise HostError(f"expected Ack, the pen sent {type(reply).__name__}")
        return reply.value
