"""TelemetryBatch: up to 8 Telemetry bodies in one message, unpacked with the Telemetry decoder.

Layout facts are stated literally from the spec (27-byte samples, 8 per batch, 240-byte
bodies), not taken from the constants under test.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import messages

from micropen.protocol.errors import LocalProtocolError, RemoteProtocolError
from micropen.protocol.framing import encode_frame
from micropen.protocol.messages import (
    Capability,
    ErrorCode,
    PenState,
    SetTelemetryBatch,
    Telemetry,
    TelemetryBatch,
    pack_telemetry,
    telemetry_sample,
    unpack_telemetry,
)
from micropen.protocol.schema import decode_message

SAMPLES = st.lists(messages(Telemetry), min_size=1, max_size=8)


@given(first=st.integers(0, 0xFFFF_FFFF), samples=SAMPLES)
def test_a_batch_carries_its_samples_exactly(first: int, samples: list[Telemetry]) -> None:
    batch = pack_telemetry(first, samples)
    wire = batch.encode()
    decoded = decode_message(wire)
    assert isinstance(decoded, TelemetryBatch)
    assert decoded == batch
    assert decoded.first_seq == first and decoded.sample_count == len(samples)
    assert unpack_telemetry(decoded) == samples
    for index, sample in enumerate(samples):
        assert telemetry_sample(decoded, index) == sample


@given(first=st.integers(0, 0xFFFF_FFFF), samples=SAMPLES)
def test_each_sample_is_the_telemetry_body_a_single_would_carry(
    first: int, samples: list[Telemetry]
) -> None:
    """A C peer unpacks a batch with its Telemetry decoder: sample i is exactly the body of
    the single Telemetry (without its id byte) at offset 5 + 1 + 27 * i of the message."""
    wire = pack_telemetry(first, samples).encode()
    assert wire[0] == 0x4F
    assert struct.unpack_from("<IB", wire, 1) == (first, len(samples))
    for i, sample in enumerate(samples):
        single = sample.encode()
        assert single[0] == 0x44
        assert wire[6 + 27 * i : 6 + 27 * (i + 1)] == single[1:]
    assert wire[6 + 27 * len(samples) :] == bytes(27 * (8 - len(samples)))  # zeros after


def test_the_layout_is_fixed_and_fits_a_frame() -> None:
    assert TelemetryBatch.STRUCT.format == "<IB216s"
    assert TelemetryBatch.STRUCT.size == 221 <= 240
    sample = Telemetry(1, PenState.RUNNING, 500, 11000, 7, 425, 300, 4000, 9, 7)
    frame = encode_frame(0x03, 1, 0, 0, pack_telemetry(0, [sample] * 8).encode())
    assert len(frame) <= 271  # the protocol's largest frame on the wire
    assert Capability.TELEMETRY_BATCH == 128
    assert SetTelemetryBatch.STRUCT.format == "<IBB"


def test_a_batch_holds_one_to_eight_samples() -> None:
    sample = Telemetry(1, PenState.IDLE, 0, 0, 0, 0, 250, 4000, 0, 0)
    with pytest.raises(LocalProtocolError):
        pack_telemetry(0, [])
    with pytest.raises(LocalProtocolError):
        pack_telemetry(0, [sample] * 9)
    with pytest.raises(LocalProtocolError):
        TelemetryBatch(0, 0, bytes(216))
    with pytest.raises(LocalProtocolError):
        TelemetryBatch(0, 9, bytes(216))
    with pytest.raises(RemoteProtocolError):  # a peer that claims 9 samples is refused whole
        decode_message(b"\x4f" + struct.pack("<IB", 0, 9) + bytes(216))


def test_a_sample_out_of_range_is_refused_by_the_telemetry_decoder() -> None:
    good = Telemetry(1, PenState.IDLE, 0, 0, 0, 0, 250, 4000, 0, 0)
    body = bytearray(pack_telemetry(5, [good, good]).samples)
    body[27 + 4] = 99  # the second sample's state: no such PenState
    batch = TelemetryBatch(5, 2, bytes(body))
    with pytest.raises(RemoteProtocolError, match="state"):
        unpack_telemetry(batch)
    assert telemetry_sample(batch, 0) == good
    with pytest.raises(LocalProtocolError):
        telemetry_sample(batch, 2)


def test_set_telemetry_batch_declares_its_refusals() -> None:
    """Out of range on the wire: TELEMETRY_OUT_OF_RANGE (not MALFORMED), both fields."""
    fields = {f.name: f for f in SetTelemetryBatch.FIELDS}
    assert (fields["max_samples"].lo, fields["max_samples"].hi) == (0, 8)
    assert (fields["max_delay_ms"].lo, fields["max_delay_ms"].hi) == (1, 100)
    assert {f.refuse for f in fields.values() if f.name != "cmd_id"} == {
        ErrorCode.TELEMETRY_OUT_OF_RANGE
    }


@given(
    count=st.integers(1, 8),
    raw=st.binary(min_size=216, max_size=216),
    valid_states=st.booleans(),
)
def test_the_one_unpack_fast_path_decodes_as_the_sample_decoder_does(
    count: int, raw: bytes, valid_states: bool
) -> None:
    """Any bytes at all: the batch's fast path gives exactly what decoding each sample with
    Telemetry's own decoder gives, or the same refusal."""
    body = bytearray(raw)
    if valid_states:  # the state byte of each sample (offset 4) a PenState (0–5)
        for i in range(8):
            body[27 * i + 4] %= 6
    body = bytes(body)
    batch = TelemetryBatch(0, count, body)
    try:
        expected: list[Telemetry] | type[Exception] = [
            Telemetry._decode(body, 27 * i, 27 * (i + 1))  # type: ignore[misc]
            for i in range(count)
        ]
    except RemoteProtocolError:
        expected = RemoteProtocolError
    if expected is RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):
            unpack_telemetry(batch)
    else:
        got = unpack_telemetry(batch)
        assert got == expected
        assert all(type(s) is Telemetry and isinstance(s.state, PenState) for s in got)


def test_the_fast_path_is_on_for_the_telemetry_layout() -> None:
    """It may only run while the state is the one Telemetry field with a range or enum."""
    from micropen.protocol import messages

    assert messages._ONLY_STATE_CHECKED
