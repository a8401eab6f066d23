"""Firmware images and a lock-step uploader for the simulated pen, driven through the test
harness's bare Link (no host library: every refusal seen comes from the pen)."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from test_firmware_harness import Host

from micropen.protocol import image
from micropen.protocol.messages import (
    FW_CHUNK_BYTES,
    FwBegin,
    FwChunk,
    FwFinish,
    FwGetSlot,
    FwProgress,
    FwSlot,
    FwSlotId,
    FwTestBoot,
    Nak,
)
from micropen.protocol.schema import Message
from micropen.sim.devkey import dev_private_key

__all__ = ["begin", "finish", "make_image", "reboot_into_update", "send_chunks", "slot", "upload"]


def make_image(
    version: tuple[int, int, int] = (1, 1, 0),
    counter: int = 2,
    size: int = 20_000,
    key: Ed25519PrivateKey | None = None,
    *,
    unsigned: bool = False,
) -> bytes:
    payload = hashlib.sha256(repr((version, counter)).encode()).digest() * (size // 32 + 1)
    return image.build(
        payload[:size],
        version=version,
        security_counter=counter,
        key=None if unsigned else (key or dev_private_key()),
    )


def _wait_busy(host: Host, reply: Message) -> None:
    if isinstance(reply, FwProgress) and reply.busy_ms:
        host.run_for(reply.busy_ms / 1000)


def begin(host: Host, data: bytes, counter: int | None = None) -> Message:
    """FwBegin; waits out the erase when accepted. Returns the pen's answer."""
    if counter is None:  # from the header when it parses (a broken image claims 2)
        try:
            counter = image.parse(data).security_counter
        except image.ImageError:
            counter = 2
    reply = host.cmd(FwBegin, len(data), hashlib.sha256(data).digest(), counter)
    _wait_busy(host, reply)
    return reply


def send_chunks(host: Host, data: bytes, start: int, limit: int | None = None) -> int:
    """Chunks in lock-step from ``start`` (at most ``limit``); returns the pen's next offset."""
    offset, sent = start, 0
    while offset < len(data) and (limit is None or sent < limit):
        piece = data[offset : offset + FW_CHUNK_BYTES]
        reply = host.cmd(FwChunk, offset, len(piece), piece.ljust(FW_CHUNK_BYTES, b"\xff"))
        assert isinstance(reply, FwProgress), reply
        offset = reply.next_offset
        sent += 1
    return offset


def finish(host: Host) -> Message:
    """FwFinish until the pen is not busy verifying: FwProgress(VERIFIED) or a Nak."""
    while True:
        reply = host.cmd(FwFinish)
        if isinstance(reply, Nak) or not reply.busy_ms:
            return reply
        _wait_busy(host, reply)


def upload(host: Host, data: bytes) -> Message:
    reply = begin(host, data)
    if isinstance(reply, Nak):
        return reply
    send_chunks(host, data, 0)
    return finish(host)


def reboot_into_update(host: Host) -> FwProgress:
    """FwTestBoot, then wait out the reboot and swap and handshake with the new boot."""
    reply = host.cmd(FwTestBoot)
    assert isinstance(reply, FwProgress), reply
    host.run_for(reply.busy_ms / 1000 + 0.2)
    host.connect()
    host.hello()
    return reply


def slot(host: Host, which: FwSlotId) -> FwSlot:
    reply = host.cmd(FwGetSlot, which)
    assert isinstance(reply, FwSlot), reply
    return reply
