"""Frames on the wire: header, message, CRC-32, COBS-stuffed between 0x00 delimiters.

Layout before stuffing (little-endian)::

    flags u8 | epoch u8 | seq u16 | ack u16 | [sack u32] | message (id u8 + body) | crc32 u32

The ``sack`` bitmap is there only when the frame's SACK flag is set (see ``link.py``); this
module treats it as the first four bytes of the message, and sizes allow for it.

* **COBS** (the C-backed ``cobs`` package) removes every 0x00 from the frame, so 0x00 only ever
  delimits. A receiver that starts mid-stream, or sees garbage, a truncated frame or a false
  start, resynchronises at the next 0x00 — no hunting as in Modbus RTU. Every frame is sent as
  ``00 <cobs> 00`` so garbage before a frame can never merge into it.
* **CRC-32** (IEEE, ``zlib.crc32``) over header and message. Its minimum Hamming distance is 4
  for any frame up to 11 KiB, so every 1-, 2- and 3-bit error is detected, and so is every burst
  of up to 32 bits; ``tests/protocol/test_crc.py`` proves this exhaustively for maximum-size
  frames rather than trusting this comment. The receiver checks the CRC residue
  (``crc32(frame) == 0x2144DF1C``) without slicing.
* Maximum sizes: message body 240 bytes; raw frame 267 bytes with a SACK bitmap and the
  12-byte authentication trailer of an authenticated epoch (``linkauth.py``), on the wire 271
  bytes (``MAX_WIRE_FRAME``). Larger pieces are discarded as garbage.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from cobs import cobs

from .linkauth import TRAILER_BYTES
from .schema import MAX_BODY

__all__ = [
    "CRC_RESIDUE",
    "HEADER",
    "MAX_RAW_FRAME",
    "MAX_WIRE_FRAME",
    "SACK",
    "FrameDecoder",
    "FramerStats",
    "encode_frame",
    "encode_raw_frame",
]

HEADER = struct.Struct("<BBHH")  # flags, epoch, seq, ack
SACK = struct.Struct("<I")  # selective-acknowledgement bitmap, right after HEADER (SACK flag)
CRC = struct.Struct("<I")
CRC_RESIDUE = 0x2144DF1C
UART_DEFAULT_BAUD = 1_000_000  # 8N1; a USB CDC-ACM pen ignores the rate
MIN_RAW_FRAME = HEADER.size + CRC.size
MAX_RAW_FRAME = HEADER.size + SACK.size + 1 + MAX_BODY + TRAILER_BYTES + CRC.size
MAX_STUFFED = MAX_RAW_FRAME + MAX_RAW_FRAME // 254 + 1  # longest COBS piece between delimiters
MAX_WIRE_FRAME = MAX_STUFFED + 2  # and its two delimiters

_cobs_encode = cobs.encode
_cobs_decode = cobs.decode
_crc32 = zlib.crc32
_pack_header = HEADER.pack
_pack_crc = CRC.pack


def encode_frame(flags: int, epoch: int, seq: int, ack: int, message: bytes = b"") -> bytes:
    """Bytes to write for one frame, delimiters included."""
    return encode_raw_frame(_pack_header(flags, epoch, seq, ack) + message)


def encode_raw_frame(raw: bytes) -> bytes:
    """Bytes to write for a frame already laid out as header and message (the link builds the
    header once for the tag and the frame): CRC, COBS and delimiters added."""
    stuffed: bytes = _cobs_encode(raw + _pack_crc(_crc32(raw)))
    return b"".join((b"\0", stuffed, b"\0"))


def _too_long(piece: bytes) -> bool:
    """A COBS piece of MAX_STUFFED bytes holds MAX_RAW_FRAME bytes, or one more (COBS adds one
    byte per 254 and the longest frame crosses that line): only decoding tells which."""
    if len(piece) > MAX_STUFFED:
        return True
    try:
        return len(_cobs_decode(piece)) > MAX_RAW_FRAME
    except cobs.DecodeError:
        return False  # counted as a COBS failure by the caller


@dataclass(slots=True)
class FramerStats:
    """What the receiver saw: good frames, and what it threw away while resynchronising."""

    frames: int = 0
    bytes_in: int = 0
    crc_failures: int = 0
    cobs_failures: int = 0
    oversize: int = 0
    bytes_discarded: int = 0


class FrameDecoder:
    """Splits a byte stream into CRC-checked raw frames. Never raises on any input."""

    __slots__ = ("_pending", "stats")

    def __init__(self) -> None:
        self._pending = b""
        self.stats = FramerStats()

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add received bytes; return every complete, CRC-valid raw frame (header..crc)."""
        stats = self.stats
        stats.bytes_in += len(data)
        buf = self._pending + bytes(data) if self._pending else bytes(data)
        pieces = buf.split(b"\0")
        tail = pieces.pop()
        if len(tail) > MAX_STUFFED:  # no delimiter for too long: garbage, drop it now
            stats.oversize += 1
            stats.bytes_discarded += len(tail)
            tail = b""
        self._pending = tail
        frames: list[bytes] = []
        append = frames.append
        for piece in pieces:
            if not piece:
                continue
            if len(piece) >= MAX_STUFFED and _too_long(piece):
                stats.oversize += 1
                stats.bytes_discarded += len(piece)
                continue
            try:
                raw = _cobs_decode(piece)
            except cobs.DecodeError:
                stats.cobs_failures += 1
                stats.bytes_discarded += len(piece)
                continue
            if len(raw) < MIN_RAW_FRAME or _crc32(raw) != CRC_RESIDUE:
                stats.crc_failures += 1
                stats.bytes_discarded += len(piece)
                continue
            append(raw)
        stats.frames += len(frames)
        return frames

    def reset(self) -> None:
        """Forget a partial frame (after reopening a port)."""
        self.stats.bytes_discarded += len(self._pending)
        self._pending = b""
