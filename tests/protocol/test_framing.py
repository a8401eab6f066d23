"""Framing: COBS + CRC-32 between 0x00 delimiters. Valid frames always come out, nothing else
ever does, nothing raises, and the receiver resynchronises at the next intact frame."""

from __future__ import annotations

import zlib

import pytest
from cobs import cobs
from framing_corpus import MAX_MESSAGE, Frame, Segment, feed_in_chunks, frames, make_frame, segments
from hypothesis import given, settings
from hypothesis import strategies as st

from micropen.protocol.framing import (
    CRC_RESIDUE,
    HEADER,
    MAX_RAW_FRAME,
    MAX_WIRE_FRAME,
    SACK,
    FrameDecoder,
)


# ------------------------------------------------------------------------------ layout
@given(frame=frames)
def test_frame_layout(frame: Frame) -> None:
    wire = frame.wire
    assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
    raw = cobs.decode(wire[1:-1])
    assert raw == frame.raw
    assert zlib.crc32(raw) == CRC_RESIDUE  # the residue check the decoder relies on
    assert len(raw) <= MAX_RAW_FRAME and len(wire) <= MAX_WIRE_FRAME


def test_maximum_sizes() -> None:
    # the largest message with a SACK bitmap and an authentication trailer (12 bytes)
    sack_and_message = b"\xff" * (SACK.size + MAX_MESSAGE + 12)
    worst = make_frame(0xFF, 0xFF, 0xFFFF, 0xFFFF, sack_and_message)  # no zero to stuff
    assert len(worst.raw) == MAX_RAW_FRAME == HEADER.size + SACK.size + MAX_MESSAGE + 12 + 4
    assert len(worst.wire) == MAX_WIRE_FRAME
    assert FrameDecoder().feed(worst.wire) == [worst.raw]


# ------------------------------------------------------------------------------ clean streams
@settings(max_examples=60, deadline=None)
@given(batch=st.lists(frames, max_size=6))
def test_byte_at_a_time(batch: list[Frame]) -> None:
    decoder = FrameDecoder()
    stream = b"".join(f.wire for f in batch)
    out = [raw for i in range(len(stream)) for raw in decoder.feed(stream[i : i + 1])]
    assert out == [f.raw for f in batch]
    assert decoder.stats.frames == len(batch) and decoder.stats.bytes_in == len(stream)
    assert decoder.stats.bytes_discarded == 0


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(frames, max_size=8), data=st.data())
def test_random_split_points(batch: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(f.wire for f in batch)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    decoder = FrameDecoder()
    assert feed_in_chunks(decoder, stream, cuts) == [f.raw for f in batch]


def test_accepts_bytearray_and_memoryview() -> None:
    frame = make_frame(1, 2, 3, 4, b"\x05hello")
    assert FrameDecoder().feed(bytearray(frame.wire)) == [frame.raw]
    assert FrameDecoder().feed(memoryview(frame.wire)) == [frame.raw]


# ------------------------------------------------------------------------------ damage
def _is_subsequence(sub: list[bytes], seq: list[bytes]) -> bool:
    it = iter(seq)
    return all(any(x == y for y in it) for x in sub)


@settings(max_examples=150, deadline=None)
@given(line=st.lists(segments(), min_size=1, max_size=10), data=st.data())
def test_damage_never_yields_a_wrong_frame_and_intact_frames_survive(
    line: list[Segment], data: st.DataObject
) -> None:
    stream = b"".join(s.wire for s in line)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    decoder = FrameDecoder()
    out = feed_in_chunks(decoder, stream, cuts)  # must not raise
    originals = [s.frame.raw for s in line if s.frame is not None]
    assert _is_subsequence(out, originals), "a frame came out that was never sent"
    intact = [s.frame.raw for s in line if s.intact and s.frame is not None]
    assert _is_subsequence(intact, out), "an intact frame after damage was not recovered"
    for raw in out:
        assert zlib.crc32(raw) == CRC_RESIDUE and len(raw) <= MAX_RAW_FRAME


@settings(max_examples=300, deadline=None)
@given(junk=st.binary(max_size=600), data=st.data())
def test_arbitrary_bytes_never_raise(junk: bytes, data: st.DataObject) -> None:
    decoder = FrameDecoder()
    cuts = data.draw(st.lists(st.integers(0, len(junk)), max_size=5))
    for raw in feed_in_chunks(decoder, junk, cuts):
        assert zlib.crc32(raw) == CRC_RESIDUE
        assert HEADER.size + 4 <= len(raw) <= MAX_RAW_FRAME
    assert decoder.stats.bytes_in == len(junk)


# ------------------------------------------------------------------------------ counters
def test_oversize_runs_are_discarded_and_counted_in_one_feed() -> None:
    good = make_frame(1, 1, 1, 1, b"\x44" * 20)
    decoder = FrameDecoder()
    junk = b"\x55" * (MAX_WIRE_FRAME + 1)
    assert decoder.feed(b"\0" + junk + good.wire) == [good.raw]
    assert decoder.stats.oversize == 1 and decoder.stats.bytes_discarded == len(junk)


def test_oversize_tail_is_dropped_without_waiting_for_a_delimiter() -> None:
    good = make_frame(1, 1, 1, 1, b"\x44" * 20)
    decoder = FrameDecoder()
    for _ in range(10):  # 10 × 100 bytes without a delimiter: memory stays bounded
        assert decoder.feed(b"\x66" * 100) == []
    assert decoder.stats.oversize >= 1
    assert decoder.feed(good.wire) == [good.raw]
    stats = decoder.stats
    assert stats.bytes_discarded + len(good.wire) - 2 >= 1000 - 2 * MAX_WIRE_FRAME


@pytest.mark.parametrize("extra", [1, 2])
def test_frames_longer_than_max_raw_frame_are_discarded(extra: int) -> None:
    """framing.py promises raw frames of at most MAX_RAW_FRAME bytes ("larger pieces are
    discarded as garbage"). The COBS piece between delimiters must therefore be compared with
    MAX_WIRE_FRAME - 2, not MAX_WIRE_FRAME, or raw frames 1 or 2 bytes too long get through."""
    message_size = MAX_RAW_FRAME - HEADER.size - 4 + extra
    too_big = make_frame(1, 1, 1, 1, b"\x01" * message_size)
    assert len(too_big.raw) == MAX_RAW_FRAME + extra
    decoder = FrameDecoder()
    assert decoder.feed(too_big.wire) == []
    assert decoder.stats.oversize == 1


def test_the_largest_message_fits_with_a_sack_bitmap() -> None:
    """A SACK bitmap (4 bytes after the header) and an authentication trailer (12 bytes before
    the CRC) may ride on any frame, the largest message's included: MAX_RAW_FRAME allows it."""
    frame = make_frame(0x43, 1, 1, 1, SACK.pack(0xFFFF_FFFF) + b"\x01" * (MAX_MESSAGE + 12))
    assert len(frame.raw) == MAX_RAW_FRAME and len(frame.wire) <= MAX_WIRE_FRAME
    assert FrameDecoder().feed(frame.wire) == [frame.raw]


def test_crc_and_cobs_failures_are_counted() -> None:
    good = make_frame(3, 9, 7, 5, b"\x08\x01\x02\x03\x04")
    decoder = FrameDecoder()
    bad_crc = b"\0" + cobs.encode(good.raw[:-1] + bytes([good.raw[-1] ^ 1])) + b"\0"
    bad_cobs = b"\0\x09\x01\x02\0"  # code byte promises 8 bytes, 2 follow
    short = b"\0" + cobs.encode(b"\x01\x02\x03") + b"\0"  # shorter than a header and CRC
    out = decoder.feed(bad_crc + bad_cobs + short + good.wire)
    assert out == [good.raw]
    s = decoder.stats
    assert (s.frames, s.crc_failures, s.cobs_failures) == (1, 2, 1)
    assert s.bytes_discarded == (len(good.wire) - 2) + 3 + (len(short) - 2)


def test_reset_forgets_a_partial_frame() -> None:
    good = make_frame(1, 2, 3, 4, b"\x05")
    decoder = FrameDecoder()
    assert decoder.feed(good.wire[:-3]) == []
    decoder.reset()
    assert decoder.stats.bytes_discarded == len(good.wire) - 4
    assert decoder.feed(good.wire[-3:] + good.wire) == [good.raw]
