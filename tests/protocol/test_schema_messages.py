"""Every registered message: round trip, constructor validation, decoder validation, layout rules.

Parametrised over ``REGISTRY`` and each message's fields, so a message added later is covered
without touching this file.
"""

from __future__ import annotations

import pickle
import struct
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import (
    ALL_MESSAGES,
    field_offset,
    invalid_field_values,
    invalid_wire_values,
    messages,
)

from micropen.protocol import messages as m
from micropen.protocol.errors import LocalProtocolError, MicropenError, RemoteProtocolError
from micropen.protocol.schema import (
    MAX_BODY,
    REGISTRY,
    Field,
    Kind,
    Message,
    decode_message,
    encode_message,
    field,
    schema_hash,
)

FIELD_CASES = [
    pytest.param(cls, f, id=f"{cls.__name__}.{f.name}") for cls in ALL_MESSAGES for f in cls.FIELDS
]
WIRE_CASES = [case for case in FIELD_CASES if invalid_wire_values(case.values[1]) is not None]
CLASSES = [pytest.param(cls, id=cls.__name__) for cls in ALL_MESSAGES]


# ------------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("cls", CLASSES)
@settings(max_examples=40, deadline=None)
@given(data=st.data(), prefix=st.binary(max_size=8), suffix=st.binary(max_size=8))
def test_round_trip(cls: type[Message], data: st.DataObject, prefix: bytes, suffix: bytes) -> None:
    message = data.draw(messages(cls))
    encoded = message.encode()
    assert encoded == encode_message(message)
    assert encoded[0] == cls.ID and len(encoded) == 1 + cls.STRUCT.size
    decoded = decode_message(encoded)
    assert type(decoded) is cls and decoded == message
    assert hash(decoded) == hash(message) and decoded.to_dict() == message.to_dict()
    framed = prefix + encoded + suffix  # as the link and the benchmark slice a raw frame
    end = len(prefix) + len(encoded)
    for buf in (framed, bytearray(framed), memoryview(framed)):
        assert decode_message(buf, len(prefix), end) == message
    assert pickle.loads(pickle.dumps(message)) == message


@pytest.mark.parametrize("cls", CLASSES)
def test_enum_fields_decode_to_members(cls: type[Message]) -> None:
    values = {f.name: (min(f.enum) if f.enum else f.lo) for f in cls.FIELDS}
    values.update({f.name: "" for f in cls.FIELDS if f.kind == "str"})
    values.update({f.name: bytes(f.size) for f in cls.FIELDS if f.kind == "bytes"})
    plain = cls(**{k: int(v) if isinstance(v, IntEnum) else v for k, v in values.items()})
    for f, value in zip(cls.FIELDS, decode_message(plain.encode()), strict=True):
        if f.enum is not None:
            assert type(value) is f.enum, f"{cls.__name__}.{f.name}"
    assert plain.to_dict() == {
        f.name: (value.name if isinstance(value, IntEnum) else value)
        for f, value in zip(cls.FIELDS, plain, strict=True)
    }


def test_messages_compare_by_type_and_value() -> None:
    assert m.Stop(cmd_id=5) != m.EmergencyStop(cmd_id=5)
    assert m.Stop(cmd_id=5) != (5,)
    assert m.Stop(cmd_id=5) == m.Stop(5)
    assert m.Stop(5).replace(cmd_id=6) == m.Stop(6)
    assert repr(m.SetRate(1, 90)) == "SetRate(cmd_id=1, rate_sps=90)"


# ------------------------------------------------------------------------------ constructor
@pytest.mark.parametrize(("cls", "f"), FIELD_CASES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_constructor_rejects_values_outside_the_field(
    cls: type[Message], f: Field, data: st.DataObject
) -> None:
    valid = data.draw(messages(cls))
    bad = data.draw(invalid_field_values(f), label=f.name)
    with pytest.raises(LocalProtocolError) as info:
        valid.replace(**{f.name: bad})
    assert f"{cls.__name__}.{f.name}" in str(info.value)


def test_replace_validates_and_keeps_the_original() -> None:
    depth = m.SetDepth(cmd_id=1, depth_um=500, soft_cap_override=0)
    with pytest.raises(LocalProtocolError, match=r"SetDepth\.depth_um = 2501 outside 0–2500 µm"):
        depth.replace(depth_um=2501)
    assert depth.depth_um == 500


def test_messages_are_immutable() -> None:
    """The schema promises immutable, slotted messages: no attribute can be set, so a typo such
    as ``status.depth = 300`` fails loudly instead of being silently kept on the side."""
    rate = m.SetRate(cmd_id=1, rate_sps=90)
    with pytest.raises(AttributeError):
        rate.rate_sps = 100  # type: ignore[misc]
    with pytest.raises(AttributeError):
        rate.rate = 100  # type: ignore[attr-defined]
    assert not hasattr(rate, "__dict__")


# ------------------------------------------------------------------------------ decoder
def _body_with(cls: type[Message], f: Field, raw: Any, base: Message) -> bytes:
    body = bytearray(base.encode())
    offset = 1 + field_offset(cls, f.name)
    if isinstance(raw, bytes):
        body[offset : offset + f.size] = raw
    else:
        struct.pack_into("<" + f.struct_code, body, offset, raw)
    return bytes(body)


@pytest.mark.parametrize(("cls", "f"), WIRE_CASES)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_decoder_rejects_out_of_range_bytes(
    cls: type[Message], f: Field, data: st.DataObject
) -> None:
    strategy = invalid_wire_values(f)
    assert strategy is not None
    payload = _body_with(cls, f, data.draw(strategy, label=f.name), data.draw(messages(cls)))
    with pytest.raises(RemoteProtocolError) as info:
        decode_message(payload)
    assert f"{cls.__name__}.{f.name}" in str(info.value)


@pytest.mark.parametrize("cls", CLASSES)
@given(extra=st.integers(-3, 3).filter(bool))
def test_decoder_rejects_a_body_of_the_wrong_length(cls: type[Message], extra: int) -> None:
    encoded = messages_example(cls).encode()
    payload = encoded + bytes(extra) if extra > 0 else encoded[:extra]
    if len(payload) == 0:
        payload = bytes([cls.ID])
    with pytest.raises(RemoteProtocolError, match=cls.__name__):
        decode_message(payload)


def messages_example(cls: type[Message]) -> Message:
    values = {
        f.name: ("" if f.kind == "str" else min(f.enum) if f.enum else f.lo) for f in cls.FIELDS
    }
    values.update({f.name: bytes(f.size) for f in cls.FIELDS if f.kind == "bytes"})
    return cls(**values)


@given(payload=st.binary(max_size=300))
@settings(max_examples=300)
def test_decoder_raises_only_remote_protocol_errors(payload: bytes) -> None:
    try:
        decoded = decode_message(payload)
    except RemoteProtocolError:
        return
    assert decoded.encode() == payload  # anything accepted re-encodes to the same bytes


def test_decoder_names_unknown_ids_and_empty_payloads() -> None:
    unused = next(i for i in range(1, 256) if i not in REGISTRY)
    with pytest.raises(RemoteProtocolError, match=f"unknown message id 0x{unused:02X}"):
        decode_message(bytes([unused, 0, 0]))
    with pytest.raises(RemoteProtocolError, match="empty"):
        decode_message(b"")
    with pytest.raises(RemoteProtocolError, match="empty"):
        decode_message(b"\x01\x02", 2, 2)


# ------------------------------------------------------------------------------ layout rules
@pytest.mark.parametrize("cls", CLASSES)
def test_layout_rules(cls: type[Message]) -> None:
    first = cls.FIELDS[0]
    # a command's cmd_id is never 0 (reserved for a Nak to a message too short to carry one)
    lowest = 1 if cls.KIND in (Kind.COMMAND, Kind.SIM_COMMAND) else 0
    assert first.kind == "u32" and (first.lo, first.hi) == (lowest, 0xFFFF_FFFF)
    assert cls.STRUCT.size <= MAX_BODY and cls.STRUCT.format.startswith("<")
    expected_ids = {
        Kind.COMMAND: range(0x01, 0x40),
        Kind.HOST_NOTIFY: range(0x01, 0x40),
        Kind.REPLY: range(0x40, 0x80),
        Kind.NOTIFY: range(0x40, 0x80),
        Kind.SIM_COMMAND: range(0xE0, 0x100),
    }
    assert cls.ID in expected_ids[cls.KIND]
    if cls.KIND in (Kind.COMMAND, Kind.SIM_COMMAND):
        assert cls.REPLY is not None and cls.REPLY.KIND is Kind.REPLY
        assert first.name == "cmd_id"
    elif cls.KIND is Kind.REPLY:
        assert first.name == "cmd_id"
    else:
        assert cls.REPLY is None


def test_handshake_layouts_are_frozen_forever() -> None:
    """Hello and Identity must stay readable by every version: their bytes never change."""
    assert (m.Hello.ID, m.Hello.STRUCT.format) == (0x01, "<IHI")
    assert (m.Identity.ID, m.Identity.STRUCT.format) == (0x40, "<IHI16s16sBBBBBIHHHBBI")
    assert [f.name for f in m.Identity.FIELDS[:3]] == ["cmd_id", "protocol_version", "schema_hash"]


def test_schema_hash_covers_layout_and_limits() -> None:
    assert schema_hash() == schema_hash(dict(REGISTRY))
    assert 0 <= schema_hash() <= 0xFFFF_FFFF
    smaller = {i: cls for i, cls in REGISTRY.items() if i != m.SetRate.ID}
    assert schema_hash(smaller) != schema_hash()


def test_schema_hash_changes_with_one_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    before = schema_hash()
    narrower = Field(**{**_field_kwargs(m.SetRate.FIELDS[1]), "hi": 149})
    monkeypatch.setattr(m.SetRate, "FIELDS", (m.SetRate.FIELDS[0], narrower))
    assert schema_hash() != before


def _field_kwargs(f: Field) -> dict[str, Any]:
    return {name: getattr(f, name) for name in Field.__slots__}  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------ declarations
def test_bad_declarations_are_refused_without_touching_the_registry() -> None:
    before = dict(REGISTRY)
    with pytest.raises(ValueError, match="used twice"):

        class Twice(Message, msg_id=m.Stop.ID, kind=Kind.COMMAND):
            cmd_id: int = field("u32")

    with pytest.raises(ValueError, match="reserved"):

        class Squatter(Message, msg_id=0xEF, kind=Kind.COMMAND):
            cmd_id: int = field("u32")

    with pytest.raises(ValueError, match="outside 1..255"):

        class Huge(Message, msg_id=0x100, kind=Kind.COMMAND):
            cmd_id: int = field("u32")

    with pytest.raises(ValueError, match="body"):

        class Fat(Message, msg_id=0x3E, kind=Kind.COMMAND):
            blob: str = field("str", size=MAX_BODY + 1)

    with pytest.raises(TypeError, match="needs a field"):

        class Bare(Message, msg_id=0x3E, kind=Kind.COMMAND):
            cmd_id: int

    assert before == REGISTRY


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "u64"}, "unknown field kind"),
        ({"kind": "u8", "lo": 0, "hi": 256}, "does not fit"),
        ({"kind": "i8", "lo": 5, "hi": 4}, "does not fit"),
        ({"kind": "str"}, "size="),
    ],
)
def test_bad_fields_are_refused(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        field(**kwargs)


def test_local_errors_are_value_errors_and_micropen_errors() -> None:
    assert issubclass(LocalProtocolError, ValueError)
    assert issubclass(LocalProtocolError, MicropenError)
    assert issubclass(RemoteProtocolError, MicropenError)
    assert not issubclass(RemoteProtocolError, LocalProtocolError)
