"""The C deframer (mp_deframer in protocol/c/mp_cobs.c) fed the very corpus the Python framer's
tests use (tests/protocol/framing_corpus.py: frames, garbage, truncations, bit flips, oversize
junk, random cuts): the same frames come out and the same statistics are counted as
protocol/framing.py's FrameDecoder, chunk for chunk."""

from __future__ import annotations

import sys
from pathlib import Path

import cbuild
import pytest
from _core_harness import CDeframer, replay
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "protocol"))
from framing_corpus import (
    MAX_MESSAGE,
    Frame,
    Segment,
    feed_in_chunks,
    frames,
    make_frame,
    segments,
)

from micropen.protocol.framing import (
    MAX_RAW_FRAME,
    MAX_WIRE_FRAME,
    SACK,
    FrameDecoder,
)


def both(stream: bytes, cuts: list[int]) -> tuple[CDeframer, list[bytes]]:
    """Feed both framers the same chunks; their frames and statistics must agree."""
    python, c = FrameDecoder(), CDeframer()
    expected = feed_in_chunks(python, stream, cuts)
    got = feed_in_chunks(c, stream, cuts)
    assert got == expected
    stats = python.stats
    assert c.stats() == {
        "frames": stats.frames,
        "bytes_in": stats.bytes_in,
        "crc_failures": stats.crc_failures,
        "cobs_failures": stats.cobs_failures,
        "oversize": stats.oversize,
        "bytes_discarded": stats.bytes_discarded,
    }
    return c, got


@settings(max_examples=100, deadline=None)
@given(batch=st.lists(frames, max_size=8), data=st.data())
def test_clean_streams_cut_anywhere(batch: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(f.wire for f in batch)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    _, got = both(stream, cuts)
    assert got == [f.raw for f in batch]


@settings(max_examples=200, deadline=None)
@given(line=st.lists(segments(), min_size=1, max_size=10), data=st.data())
def test_damaged_streams_give_the_same_frames_and_counts(
    line: list[Segment], data: st.DataObject
) -> None:
    stream = b"".join(s.wire for s in line)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    both(stream, cuts)


@settings(max_examples=200, deadline=None)
@given(junk=st.binary(max_size=900), data=st.data())
def test_arbitrary_bytes(junk: bytes, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(junk)), max_size=6))
    both(junk, cuts)


@pytest.mark.parametrize("chunk", [1, 7, 100, 271, 1000])
def test_long_runs_without_a_delimiter_in_chunks(chunk: int) -> None:
    good = make_frame(1, 1, 1, 1, b"\x44" * 20)
    stream = b"\x66" * 1000 + good.wire + b"\x55" * (MAX_WIRE_FRAME + 1) + b"\0" + good.wire
    c, got = both(stream, list(range(chunk, len(stream), chunk)))
    assert got == [good.raw, good.raw]
    assert c.stats()["oversize"] >= 2


@pytest.mark.parametrize("extra", [0, 1, 2])
def test_the_size_limit_is_the_longest_frame(extra: int) -> None:
    # 267 raw bytes pass (a SACK bitmap, the largest message and a 12-byte trailer); 268 do not
    message = SACK.pack(0xFFFF_FFFF) + b"\x01" * (MAX_MESSAGE + 12 + extra)
    frame = make_frame(0x43, 1, 1, 1, message)
    assert len(frame.raw) == 267 + extra == MAX_RAW_FRAME + extra
    _, got = both(frame.wire, [])
    assert got == ([frame.raw] if extra == 0 else [])


def test_reset_counts_the_partial_frame() -> None:
    good = make_frame(1, 2, 3, 4, b"\x05")
    python, c = FrameDecoder(), CDeframer()
    for framer in (python, c):
        assert framer.feed(good.wire[:-3]) == []
        framer.reset()
    assert c.stats()["bytes_discarded"] == python.stats.bytes_discarded == len(good.wire) - 4
    for framer in (python, c):
        assert framer.feed(good.wire[-3:] + good.wire) == [good.raw]
    assert c.stats()["bytes_discarded"] == python.stats.bytes_discarded


def test_the_corpus_under_the_sanitizers() -> None:
    """A fixed slice of the corpus through the sanitized deframer: same frames, same counts."""
    if not cbuild.sanitizers_work():
        pytest.skip("this toolchain cannot build and run ASan/UBSan programs")
    good = make_frame(3, 9, 7, 5, b"\x08\x01\x02\x03\x04")
    bad_crc = b"\0" + cobs.encode(good.raw[:-1] + bytes([good.raw[-1] ^ 1])) + b"\0"
    streams = [
        good.wire + b"\0\x09\x01\x02\0" + bad_crc + b"\0" + cobs.encode(b"\x01\x02\x03") + b"\0",
        b"\x66" * 700 + good.wire,
        make_frame(0x43, 1, 1, 1, b"\x01" * (MAX_RAW_FRAME - 10)).wire,
        make_frame(0x43, 1, 1, 1, b"\x01" * (MAX_RAW_FRAME - 9)).wire,
        bytes(range(256)) * 3,
    ]
    recorders = []
    for stream in streams:
        for cut in (1, 13, 271, len(stream)):
            c = CDeframer()
            both(stream, list(range(cut, len(stream), cut)))
            feed_in_chunks(c, stream, list(range(cut, len(stream), cut)))
            c.reset()
            c.stats()
            recorders.append(c)
    replay(*recorders)
