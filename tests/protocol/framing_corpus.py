"""The framing test corpus: frames, damaged line segments (garbage, truncation, bit flips,
oversize junk) and chunked feeding, shared by the Python framer's tests
(tests/protocol/test_framing.py) and the C deframer's (tests/ckit/test_core_framer.py), so both
are fed exactly the same kinds of input."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Protocol

from hypothesis import strategies as st

from micropen.protocol.framing import HEADER, MAX_WIRE_FRAME, encode_frame
from micropen.protocol.schema import MAX_BODY

__all__ = [
    "MAX_MESSAGE",
    "Frame",
    "Segment",
    "feed_in_chunks",
    "flip",
    "frames",
    "make_frame",
    "segments",
]

MAX_MESSAGE = 1 + MAX_BODY  # id byte + body


@dataclass(frozen=True)
class Frame:
    wire: bytes  # what encode_frame returned, delimiters included
    raw: bytes  # what FrameDecoder.feed must return for it


def make_frame(flags: int, epoch: int, seq: int, ack: int, message: bytes) -> Frame:
    """The frame as encode_frame writes it, and the raw frame computed independently."""
    body = HEADER.pack(flags, epoch, seq, ack) + message
    raw = body + zlib.crc32(body).to_bytes(4, "little")
    return Frame(encode_frame(flags, epoch, seq, ack, message), raw)


frames = st.builds(
    make_frame,
    st.integers(0, 0xFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(max_size=MAX_MESSAGE),
)


class Feedable(Protocol):
    def feed(self, data: bytes) -> list[bytes]: ...


def feed_in_chunks(decoder: Feedable, stream: bytes, cuts: list[int]) -> list[bytes]:
    """Feed ``stream`` cut at ``cuts``; every frame that came out, in order."""
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        out += decoder.feed(stream[start:cut])
        start = cut
    return out


@dataclass(frozen=True)
class Segment:
    frame: Frame | None  # the frame this segment came from (None for pure garbage)
    wire: bytes  # the bytes actually put on the line
    intact: bool


def flip(wire: bytes, bits: list[int]) -> bytes:
    out = bytearray(wire)
    for bit in bits:
        out[(bit // 8) % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


@st.composite
def segments(draw: st.DrawFn) -> Segment:
    frame = draw(frames)
    how = draw(st.sampled_from(["intact", "intact", "garbage", "truncated", "flipped", "junk"]))
    if how == "intact":
        return Segment(frame, frame.wire, True)
    if how == "garbage":
        return Segment(None, draw(st.binary(min_size=1, max_size=300)), False)
    if how == "junk":  # a long run without any delimiter
        return Segment(None, draw(st.binary(min_size=MAX_WIRE_FRAME, max_size=700)), False)
    if how == "truncated":
        cut = draw(st.integers(1, len(frame.wire) - 1))
        return Segment(frame, frame.wire[:cut], False)
    bits = draw(st.lists(st.integers(0, 8 * len(frame.wire) - 1), min_size=1, max_size=3))
    return Segment(frame, flip(frame.wire, bits), False)
