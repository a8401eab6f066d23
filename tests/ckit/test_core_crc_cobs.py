"""The C core's CRC-32 and COBS (protocol/c/mp_crc32.c, mp_cobs.c) against the libraries the
Python side uses — zlib.crc32 and the cobs package — on hypothesis data through ctypes, and on
fixed vectors in a sanitized C program."""

from __future__ import annotations

import ctypes
import zlib

import cbuild
import pytest
from _core_harness import E_BUFFER, E_COBS, Recorder, core_lib, hx, replay
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st


def c_crc(data: bytes, crc: int = 0) -> int:
    return int(core_lib().mp_crc32(crc, data, len(data)))


def c_encode(data: bytes, cap: int | None = None) -> bytes | None:
    cap = len(data) + len(data) // 254 + 1 if cap is None else cap
    out = ctypes.create_string_buffer(max(cap, 1))
    n = core_lib().mp_cobs_encode(data, len(data), out, cap)
    return out.raw[:n] if n else None


def c_decode(data: bytes, cap: int = 4096) -> bytes | int:
    out = ctypes.create_string_buffer(max(cap, 1))
    rc = core_lib().mp_cobs_decode(data, len(data), out, cap)
    return out.raw[:rc] if rc >= 0 else int(rc)


def py_decode(data: bytes) -> bytes | None:
    try:
        return bytes(cobs.decode(data))
    except cobs.DecodeError:
        return None


# ------------------------------------------------------------------------------ CRC-32
def test_crc32_check_value() -> None:
    # the CRC-32/ISO-HDLC check value of "123456789" and the frame residue (docs/protocol.md)
    assert c_crc(b"123456789") == 0xCBF43926
    assert c_crc(b"") == 0
    frame = b"\x03\x2a\x01\x00\x00\x00\x08\x01\x00\x00\x00"
    assert c_crc(frame + c_crc(frame).to_bytes(4, "little")) == 0x2144DF1C


@settings(max_examples=300)
@given(data=st.binary(max_size=600), split=st.integers(0, 600))
def test_crc32_is_zlibs(data: bytes, split: int) -> None:
    assert c_crc(data) == zlib.crc32(data)
    head, tail = data[:split], data[split:]
    assert c_crc(tail, c_crc(head)) == zlib.crc32(data)  # continues a running CRC


# ------------------------------------------------------------------------------ COBS
@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=700), st.binary(min_size=250, max_size=520).map(
    lambda b: b.replace(b"\0", b"\1"))))  # fmt: skip
def test_cobs_encode_is_the_cobs_packages(data: bytes) -> None:
    encoded = c_encode(data)
    assert encoded == cobs.encode(data)
    assert c_decode(encoded) == data


@settings(max_examples=300)
@given(data=st.one_of(st.binary(max_size=600), st.binary(max_size=600).map(
    lambda b: b.replace(b"\0", b"\xff"))))  # fmt: skip
def test_cobs_decode_accepts_and_rejects_what_the_cobs_package_does(data: bytes) -> None:
    expected = py_decode(data)
    got = c_decode(data)
    if expected is None:
        assert got == E_COBS
    else:
        assert got == expected


@given(data=st.binary(min_size=1, max_size=300))
def test_cobs_decodes_in_place(data: bytes) -> None:
    encoded = cobs.encode(data)
    buf = ctypes.create_string_buffer(encoded, len(encoded))
    n = core_lib().mp_cobs_decode(buf, len(encoded), buf, len(encoded))
    assert buf.raw[:n] == data


@given(data=st.binary(min_size=1, max_size=300), short=st.integers(1, 300))
def test_a_short_buffer_is_refused_not_overrun(data: bytes, short: int) -> None:
    encoded = cobs.encode(data)
    if short < len(encoded):
        assert c_encode(data, cap=short) is None
    if short < len(data):
        assert c_decode(encoded, cap=short) == E_BUFFER


# ------------------------------------------------------------------------------ sanitized
# the examples of the COBS paper (Cheshire & Baker 1999) and its usual edge cases
FIXED_COBS = [
    (b"", b"\x01"),
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255))),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
]


def test_fixed_vectors_under_the_sanitizers() -> None:
    if not cbuild.sanitizers_work():
        pytest.skip("this toolchain cannot build and run ASan/UBSan programs")
    rec = Recorder()
    rec._log("crc " + b"123456789".hex(), "cbf43926")
    rec._log("crc -", "00000000")
    for size in (1, 253, 254, 255, 256, 267, 508, 509, 600):
        data = bytes((i * 37 + size) & 0xFF for i in range(size))
        rec._log("crc " + data.hex(), f"{zlib.crc32(data):08x}")
        rec._log("cobs_enc " + data.hex(), cobs.encode(data).hex())
        rec._log(f"cobs_dec {cobs.encode(data).hex()} 4096", f"{len(data)} {hx(data)}")
        rec._log(f"cobs_dec {cobs.encode(data).hex()} {size - 1}", f"{E_BUFFER} -")
    for raw, encoded in FIXED_COBS:
        assert cobs.encode(raw) == encoded and cobs.decode(encoded) == raw
        rec._log("cobs_enc " + hx(raw), encoded.hex())
        rec._log(f"cobs_dec {encoded.hex()} 4096", f"{len(raw)} {hx(raw)}")
    for bad in (b"\x02", b"\x03\x05", b"\x05\x00\x01\x01\x01", b"\x00", b"\xff" + b"a" * 200):
        rec._log(f"cobs_dec {bad.hex()} 4096", f"{E_COBS} -")
    replay(rec)
