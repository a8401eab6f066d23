"""Proof, not sampling: the CRC-32 check as framing.py uses it detects every 1-, 2- and 3-bit
error and every burst of up to 32 bits (explicitly enumerated up to 16) in a maximum-size raw
frame (``MAX_RAW_FRAME`` bytes, CRC included).

Method. For a fixed length, ``zlib.crc32`` is affine over GF(2):
``crc(m ^ e) = crc(m) ^ crc(e) ^ crc(0…0)``. A receiver accepts ``m ^ e`` exactly when
``crc(m ^ e) == CRC_RESIDUE == crc(m)``, i.e. when the *syndrome*
``syn(e) = crc(e) ^ crc(0…0)`` is zero; and ``syn`` is linear, so the syndrome of any error is
the XOR of the syndromes of its bits. We compute each single-bit syndrome once with the real
``zlib.crc32`` (no reimplementation; linearity itself is checked first), then:

* 1 bit: no syndrome is zero;
* 2 bits: no two are equal;
* 3 bits: no XOR of two equals a third (a set lookup for each of the ~2M pairs);
* bursts ≤ 16: for every start bit p, all 2^15 patterns (bit p set, any of the next 15) are
  enumerated by meet-in-the-middle: XORs of the next 7 bits against a set of XORs of the 8
  after them, so each pattern is looked at once;
* bursts ≤ 32: for every start bit, the 32 syndromes from it on are linearly independent, so no
  non-empty combination of them (in particular no burst starting there) has syndrome zero.

Bursts are counted in UART order (least significant bit of each byte first, which is also the
reflected CRC's own polynomial order) and, as a cross-check, most significant bit first (there
the independence argument reaches 30 bits; enumeration still covers every burst ≤ 16).
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Sequence
from functools import cache

from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from micropen.protocol.framing import (
    CRC_RESIDUE,
    HEADER,
    MAX_RAW_FRAME,
    FrameDecoder,
    encode_frame,
)

N_BITS = 8 * MAX_RAW_FRAME
MESSAGE_MAX = MAX_RAW_FRAME - HEADER.size - 4


def _crc_with_bits(bits: Sequence[int], length: int = MAX_RAW_FRAME) -> int:
    frame = bytearray(length)
    for bit in bits:
        frame[bit // 8] ^= 1 << (bit % 8)
    return zlib.crc32(frame)


@cache
def syndromes_lsb_first() -> tuple[int, ...]:
    """syn(bit i) for i = 8 * byte + bit-in-byte (least significant first)."""
    zero = zlib.crc32(bytes(MAX_RAW_FRAME))
    frame = bytearray(MAX_RAW_FRAME)
    out = []
    for i in range(N_BITS):
        frame[i // 8] = 1 << (i % 8)
        out.append(zlib.crc32(frame) ^ zero)
        frame[i // 8] = 0
    return tuple(out)


def syndromes_msb_first() -> tuple[int, ...]:
    lsb = syndromes_lsb_first()
    return tuple(lsb[8 * (i // 8) + 7 - i % 8] for i in range(N_BITS))


def test_crc_is_affine_so_syndromes_add() -> None:
    """The premise of the whole proof, checked on the real zlib.crc32."""
    rng = random.Random(2024)
    zero = zlib.crc32(bytes(MAX_RAW_FRAME))
    syn = syndromes_lsb_first()
    for _ in range(200):
        message = rng.randbytes(MAX_RAW_FRAME)
        bits = rng.sample(range(N_BITS), rng.randint(1, 40))
        error = _crc_with_bits(bits)
        flipped = bytes(a ^ b for a, b in zip(message, _bits_to_bytes(bits), strict=True))
        assert zlib.crc32(flipped) == zlib.crc32(message) ^ error ^ zero
        combined = 0
        for bit in bits:
            combined ^= syn[bit]
        assert combined == error ^ zero


def _bits_to_bytes(bits: Sequence[int]) -> bytes:
    out = bytearray(MAX_RAW_FRAME)
    for bit in bits:
        out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_residue_check_is_equivalent_to_comparing_the_crc() -> None:
    """crc32(frame) == CRC_RESIDUE holds exactly when the last 4 bytes are the CRC of the rest:
    for a fixed body, crc32(body + x) is a bijection of x (see the 32-bit independence below)."""
    rng = random.Random(7)
    for _ in range(500):
        body = rng.randbytes(rng.randint(HEADER.size, MAX_RAW_FRAME - 4))
        good = zlib.crc32(body).to_bytes(4, "little")
        assert zlib.crc32(body + good) == CRC_RESIDUE
        other = rng.randbytes(4)
        assert (zlib.crc32(body + other) == CRC_RESIDUE) == (other == good)


def test_every_single_bit_error_is_detected() -> None:
    syn = syndromes_lsb_first()
    # 267 bytes: the largest message with a SACK bitmap and an authentication trailer
    assert len(syn) == N_BITS == 2136
    assert all(syn), "some single-bit error has syndrome 0"


def test_every_two_bit_error_is_detected() -> None:
    syn = syndromes_lsb_first()
    assert len(set(syn)) == N_BITS, "two single-bit errors share a syndrome"


def test_every_three_bit_error_is_detected() -> None:
    """For i < j, syn_i ^ syn_j must not be any syndrome (k == i or j is impossible: the
    syndromes are non-zero and distinct). That is every triple i < j < k, all ~2M pairs."""
    syn = syndromes_lsb_first()
    single = set(syn)
    started = time.perf_counter()
    pairs = 0
    for i, a in enumerate(syn):
        tail = syn[i + 1 :]
        pairs += len(tail)
        assert single.isdisjoint([a ^ b for b in tail]), f"a 3-bit error with bit {i} passes"
    assert pairs == N_BITS * (N_BITS - 1) // 2
    assert time.perf_counter() - started < 20


def _bursts_up_to_16_are_detected(syn: Sequence[int]) -> int:
    """Meet in the middle per start bit; returns how many burst patterns were covered."""
    covered = 0
    for p, first in enumerate(syn):
        low = _span(syn[p + 1 : p + 8])  # every XOR of bits p+1..p+7 (2^7 values)
        high = set(_span(syn[p + 8 : p + 16]))  # every XOR of bits p+8..p+15 (2^8 values)
        assert high.isdisjoint([first ^ a for a in low]), f"a burst from bit {p} passes"
        covered += len(low) * len(high)
    return covered


def _span(vectors: Sequence[int]) -> list[int]:
    """XOR of every subset of ``vectors`` (2^len values; distinct when independent)."""
    out = [0]
    for v in vectors:
        out += [v ^ x for x in out]
    return out


def test_every_burst_of_up_to_16_bits_is_detected() -> None:
    expected = sum(1 << min(15, N_BITS - 1 - p) for p in range(N_BITS))
    for syn in (syndromes_lsb_first(), syndromes_msb_first()):
        assert _bursts_up_to_16_are_detected(syn) == expected  # every pattern, exactly once


def _independent(vectors: Sequence[int]) -> bool:
    """Gaussian elimination over GF(2): True when no non-empty subset XORs to zero."""
    basis: list[int] = []
    for v in vectors:
        for b in basis:
            v = min(v, v ^ b)
        if v == 0:
            return False
        basis.append(v)
        basis.sort(reverse=True)
    return True


def test_every_burst_of_up_to_32_bits_is_detected() -> None:
    """What framing.py's docstring claims: for every start bit, the next 32 syndromes are
    independent, so every burst that starts there and is at most 32 bits long is detected.

    This holds in UART order (least significant bit first), the order of the reflected CRC's
    polynomial. Counted most significant bit first, a burst that crosses a byte boundary is
    spread over more polynomial terms; there the same argument proves bursts up to 30 bits."""
    lsb, msb = syndromes_lsb_first(), syndromes_msb_first()
    for p in range(N_BITS):
        assert _independent(lsb[p : p + 32]), f"a burst of ≤ 32 bits from bit {p} passes"
        assert _independent(msb[p : p + 30]), f"an MSB-first burst ≤ 30 bits from {p} passes"
    assert not all(_independent(msb[p : p + 32]) for p in range(N_BITS))  # the bound is real


def test_the_proof_would_notice_a_weak_check() -> None:
    """The same checks fail for a check that cannot see some errors (a sum of bytes)."""

    def byte_sum(data: bytes | bytearray) -> int:
        return sum(data) & 0xFFFF_FFFF

    zero = byte_sum(bytes(64))
    frame = bytearray(64)
    weak = []
    for i in range(8 * 64):
        frame[i // 8] = 1 << (i % 8)
        weak.append(byte_sum(frame) ^ zero)
        frame[i // 8] = 0
    assert all(weak)
    assert len(set(weak)) < len(weak)  # bit 0 of byte 0 and bit 0 of byte 1 collide
    assert not _independent(weak[:32])


# ------------------------------------------------------------------------------ on the wire
max_frames = st.builds(
    lambda flags, epoch, seq, ack, message: encode_frame(flags, epoch, seq, ack, message),
    st.integers(0, 0xFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.binary(min_size=MESSAGE_MAX, max_size=MESSAGE_MAX),
)


@settings(max_examples=400, deadline=None)
@given(wire=max_frames, data=st.data())
def test_bit_flips_on_the_wire_never_yield_a_different_frame(
    wire: bytes, data: st.DataObject
) -> None:
    """Flips in COBS bytes move zeros and change lengths, which the raw-frame proof above does
    not cover; the CRC still has to stop every one of them."""
    original = cobs.decode(wire[1:-1])
    assert len(original) == MAX_RAW_FRAME
    flips = data.draw(st.sets(st.integers(0, 8 * len(wire) - 1), min_size=1, max_size=3))
    damaged = bytearray(wire)
    for bit in flips:
        damaged[bit // 8] ^= 1 << (bit % 8)
    follower = encode_frame(1, 2, 3, 4, b"\x08\x00\x00\x00\x00")
    out = FrameDecoder().feed(bytes(damaged) + follower)
    assert out[-1] == cobs.decode(follower[1:-1]), "the next intact frame was lost"
    assert out[:-1] in ([], [original]), "a damaged frame was accepted as a different one"
