"""Hypothesis strategies generated from the message schema, so a new message is tested unasked.

Everything here is derived from ``micropen.protocol.schema.REGISTRY`` and each message's
``Field`` specs (kind, lo, hi, enum, size). Other test areas may import these too: values are
always valid unless the strategy's name says otherwise.
"""

from __future__ import annotations

import string
import struct
from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st

from micropen.protocol import messages as _messages  # registers every message
from micropen.protocol.schema import REGISTRY, Field, Kind, Message

__all__ = [
    "ALL_MESSAGES",
    "PRINTABLE_ASCII",
    "any_message",
    "field_offset",
    "field_values",
    "invalid_field_values",
    "invalid_wire_values",
    "message_classes",
    "messages",
    "tagged",
    "wire_range",
]

assert _messages.PROTOCOL_VERSION >= 1
ALL_MESSAGES: tuple[type[Message], ...] = tuple(REGISTRY[i] for i in sorted(REGISTRY))
PRINTABLE_ASCII = "".join(chr(c) for c in range(0x20, 0x7F))  # no NUL, no control characters


def wire_range(f: Field) -> tuple[int, int]:
    """Every value the field's wire type can carry (for ints), from its struct code."""
    bits = 8 * f.byte_size
    if f.struct_code.islower():  # b h i: signed
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def field_values(f: Field) -> st.SearchStrategy[Any]:
    """Valid values for one field: enum members, integers in [lo, hi], or printable ASCII."""
    if f.kind == "str":
        return st.text(alphabet=PRINTABLE_ASCII, max_size=f.size)
    if f.kind == "bytes":
        return st.binary(min_size=f.size, max_size=f.size)
    if f.enum is not None:
        return st.sampled_from(list(f.enum))
    return st.integers(f.lo, f.hi)


def messages(cls: type[Message]) -> st.SearchStrategy[Message]:
    """Valid instances of one message class."""
    return st.builds(cls, **{f.name: field_values(f) for f in cls.FIELDS})


def message_classes(kinds: Iterable[Kind] | None = None) -> tuple[type[Message], ...]:
    """Registered classes of the given kinds (all when None), by id."""
    wanted = set(Kind if kinds is None else kinds)
    return tuple(cls for cls in ALL_MESSAGES if cls.KIND in wanted)


def any_message(kinds: Iterable[Kind] | None = None) -> st.SearchStrategy[Message]:
    """A valid message of any registered class (of the given kinds)."""
    classes = message_classes(kinds)
    if not classes:
        raise ValueError(f"no registered message of kinds {kinds!r}")
    return st.sampled_from(classes).flatmap(messages)


def tagged(message: Message, tag: int) -> Message:
    """The same message with its first field (a u32 in every message) set to ``tag``.

    Link tests use it to make each sent message unique (a command's ``cmd_id``, a
    notification's timestamp or run id) so deliveries can be counted per message.
    """
    first = message.FIELDS[0]
    if first.kind != "u32" or first.enum is not None or not first.lo <= tag <= first.hi:
        raise ValueError(f"{type(message).__name__}.{first.name} cannot carry tag {tag}")
    return message.replace(**{first.name: tag})


def field_offset(cls: type[Message], name: str) -> int:
    """Byte offset of a field in the body (after the message id byte)."""
    codes = ""
    for f in cls.FIELDS:
        if f.name == name:
            return struct.calcsize("<" + codes)
        codes += f.struct_code
    raise KeyError(f"{cls.__name__} has no field {name!r}")


def _ints_outside(f: Field, lo: int, hi: int) -> list[st.SearchStrategy[int]]:
    """Integers in [lo, hi] that the field refuses: outside [f.lo, f.hi] or not an enum value."""
    parts: list[st.SearchStrategy[int]] = []
    if lo < f.lo:
        parts.append(st.integers(lo, f.lo - 1))
    if f.hi < hi:
        parts.append(st.integers(f.hi + 1, hi))
    if f.enum is not None:
        members = {m.value for m in f.enum}
        gaps = [v for v in range(f.lo, f.hi + 1) if v not in members]
        if gaps:
            parts.append(st.sampled_from(gaps))
    return parts


def invalid_field_values(f: Field) -> st.SearchStrategy[object]:
    """Values the constructor must refuse for this field (always some: wrong types at least)."""
    wrong_types: st.SearchStrategy[object] = st.one_of(
        st.none(), st.floats(allow_nan=False), st.booleans(), st.binary(max_size=4)
    )
    if f.kind == "str":
        bad_chars = st.sampled_from(["\0", "\n", "\x7f", "é", "\x01", "µ"])
        bad_text = st.tuples(
            st.text(PRINTABLE_ASCII, max_size=f.size - 1),
            bad_chars,
            st.text(PRINTABLE_ASCII, max_size=2),
        ).map("".join)
        too_long = st.text(PRINTABLE_ASCII, min_size=f.size + 1, max_size=f.size + 8)
        return st.one_of(wrong_types, st.integers(), bad_text, too_long)
    if f.kind == "bytes":
        wrong_size = st.binary(max_size=f.size + 8).filter(lambda b: len(b) != f.size)
        return st.one_of(st.none(), st.integers(), st.text(max_size=4), wrong_size)
    wire_lo, wire_hi = wire_range(f)
    ints = [*_ints_outside(f, wire_lo - (1 << 40), wire_hi + (1 << 40)), st.just(f"{f.lo}")]
    return st.one_of(wrong_types, *ints)


def invalid_wire_values(f: Field) -> st.SearchStrategy[Any] | None:
    """Raw values the decoder must refuse for this field, or None when every wire value is
    valid (a u32 with no limits). Ints are packed with the field's struct code; bytes are the
    raw contents of a string field."""
    if f.kind == "str":
        printable = st.text(PRINTABLE_ASCII, max_size=f.size - 1).map(str.encode)
        bad_byte = st.sampled_from([0x01, 0x0A, 0x1F, 0x7F, 0x80, 0xC3, 0xFF])
        inner_nul = st.tuples(printable, st.sampled_from(string.ascii_letters)).map(
            lambda pair: b"\0" + pair[0][: f.size - 2] + pair[1].encode()
        )
        with_bad = st.tuples(printable, bad_byte).map(lambda pair: pair[0] + bytes([pair[1]]))
        return st.one_of(with_bad, inner_nul).map(lambda raw: raw[: f.size].ljust(f.size, b"\0"))
    if f.kind == "bytes":
        return None  # every byte string of the layout's size is valid
    parts = _ints_outside(f, *wire_range(f))
    return st.one_of(*parts) if parts else None
