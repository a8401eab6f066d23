"""Machinery that turns one message declaration into encoder, decoder, validator and docs.

A message is declared once as a class whose annotated attributes are :func:`field` specs. From
that declaration this module generates, with ``exec`` as ``namedtuple`` does:

* a validating constructor (bad values raise :class:`LocalProtocolError`),
* a ``struct`` layout (fixed, little-endian, no padding: a C firmware can use it unchanged),
* a decoder that unpacks and range-checks in one generated function (bad bytes raise
  :class:`RemoteProtocolError`), and skips the constructor, because decoding is the hot path,
* the rows of ``docs/protocol.md`` and the schema hash exchanged at handshake.

Messages are tuple subclasses: immutable, slotted, cheap to build (the decode target is 400k
frames/s in pure Python), and ``typing.dataclass_transform`` gives type checkers the constructor.
"""

from __future__ import annotations

import hashlib
import inspect
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from operator import itemgetter
from typing import Any, ClassVar, dataclass_transform

from .errors import FieldOutOfRange, LocalProtocolError, RemoteProtocolError

__all__ = [
    "REGISTRY",
    "WIRE_RANGES",
    "Field",
    "Kind",
    "Message",
    "canonical_schema_text",
    "decode_message",
    "encode_message",
    "field",
    "schema_hash",
]

_STRUCT_CODES = {"u8": "B", "u16": "H", "u32": "I", "i8": "b", "i16": "h", "i32": "i"}
WIRE_RANGES = {
    "u8": (0, 0xFF),
    "u16": (0, 0xFFFF),
    "u32": (0, 0xFFFF_FFFF),
    "i8": (-0x80, 0x7F),
    "i16": (-0x8000, 0x7FFF),
    "i32": (-0x8000_0000, 0x7FFF_FFFF),
}
_SIZED = ("str", "bytes")  # fixed-size fields that are not integers
MAX_BODY = 240  # bytes of message body; with headers and CRC a frame stays under 256 on the wire


class Kind(IntEnum):
    """Who sends a message and whether it expects an answer."""

    COMMAND = 1  # host → pen, answered by a reply or a Nak carrying the same cmd_id
    REPLY = 2  # pen → host, answers one command
    NOTIFY = 3  # pen → host, unsolicited (telemetry, events, faults, run reports)
    HOST_NOTIFY = 4  # host → pen, unanswered (heartbeat)
    SIM_COMMAND = 5  # host → simulator only (reserved id range 0xE0–0xFF)


@dataclass(frozen=True, slots=True)
class Field:
    """One fixed-size field: wire type, allowed range, unit and meaning."""

    kind: str  # u8 u16 u32 i8 i16 i32, "str" or "bytes"
    lo: int
    hi: int
    unit: str = ""
    doc: str = ""
    enum: type[IntEnum] | None = None
    size: int = 0  # bytes, for "str" (NUL padded ASCII) and "bytes" (exactly this many)
    name: str = ""
    refuse: IntEnum | None = None  # a command field out of range is answered with this code

    def out_of_range(self, value: int) -> int:
        """The bound ``value`` breaks: the lower when below, the upper when above (0 for a
        value that is no member of the field's enumeration)."""
        if self.enum is not None:
            return 0
        return self.lo if value < self.lo else self.hi

    @property
    def struct_code(self) -> str:
        return f"{self.size}s" if self.kind in _SIZED else _STRUCT_CODES[self.kind]

    @property
    def byte_size(self) -> int:
        return struct.calcsize("<" + self.struct_code)

    def describe_range(self) -> str:
        if self.enum is not None:
            return ", ".join(f"{m.value}={m.name}" for m in self.enum)
        if self.kind == "str":
            return f"ASCII, ≤ {self.size} chars"
        if self.kind == "bytes":
            return f"{self.size} bytes"
        return f"{self.lo}–{self.hi}"


def field(
    kind: str,
    *,
    lo: int | None = None,
    hi: int | None = None,
    unit: str = "",
    doc: str = "",
    enum: type[IntEnum] | None = None,
    size: int = 0,
    refuse: IntEnum | None = None,
) -> Any:
    """Declare a message field. Ranges default to the wire type's full range.

    ``refuse`` names the error code a pen answers when a command arrives with this field out
    of range (``DEPTH_OUT_OF_RANGE`` for a depth), so a well-formed command asking for too
    much is refused for what it asked, not as ``MALFORMED``.
    """
    if kind in _SIZED:
        if size <= 0 or refuse is not None:
            raise ValueError(f"a {kind} field needs size= and cannot be out of range")
        return Field(kind, 0, size, unit, doc, None, size)
    if kind not in WIRE_RANGES:
        raise ValueError(f"unknown field kind {kind!r}; valid: {', '.join(WIRE_RANGES)}, str")
    tlo, thi = WIRE_RANGES[kind]
    if enum is not None:
        values = [m.value for m in enum]
        lo, hi = min(values), max(values)
    lo = tlo if lo is None else lo
    hi = thi if hi is None else hi
    if not tlo <= lo <= hi <= thi:
        raise ValueError(f"range {lo}..{hi} does not fit {kind}")
    return Field(kind, lo, hi, unit, doc, enum, 0, refuse=refuse)


REGISTRY: dict[int, type[Message]] = {}
_tuple_new = tuple.__new__


class _Slotted(type):
    """Gives every message class ``__slots__ = ()``: no per-instance ``__dict__``, so a message
    is really immutable (``msg.typo = 1`` raises) and a little cheaper to build."""

    def __new__(mcls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kw: Any) -> type:
        ns.setdefault("__slots__", ())
        return super().__new__(mcls, name, bases, ns, **kw)


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
class Message(tuple, metaclass=_Slotted):  # type: ignore[type-arg]
    """Base of every message. Subclass with ``msg_id=`` and ``kind=`` class keywords."""

    __slots__ = ()
    ID: ClassVar[int]
    KIND: ClassVar[Kind]
    FIELDS: ClassVar[tuple[Field, ...]]
    STRUCT: ClassVar[struct.Struct]
    REPLY: ClassVar[type[Message] | None]
    _decode: ClassVar[Callable[[bytes | bytearray, int, int], Message]]

    def __init_subclass__(
        cls, *, msg_id: int, kind: Kind, reply: type[Message] | None = None, **kw: Any
    ) -> None:
        super().__init_subclass__(**kw)
        if msg_id in REGISTRY:
            raise ValueError(f"message id 0x{msg_id:02X} used twice")
        if not 0 < msg_id <= 0xFF:
            raise ValueError(f"message id {msg_id} outside 1..255")
        if (kind == Kind.SIM_COMMAND) != (msg_id >= 0xE0) and kind != Kind.REPLY:
            raise ValueError("ids 0xE0–0xFF are reserved for simulator commands")
        fields = tuple(_collect_fields(cls))
        cls.ID, cls.KIND, cls.REPLY, cls.FIELDS = msg_id, kind, reply, fields
        cls.STRUCT = struct.Struct("<" + "".join(f.struct_code for f in fields))
        if cls.STRUCT.size > MAX_BODY:
            raise ValueError(f"{cls.__name__} body {cls.STRUCT.size} > {MAX_BODY} bytes")
        for index, f in enumerate(fields):
            setattr(cls, f.name, property(itemgetter(index), doc=f.doc))
        _generate(cls)
        REGISTRY[msg_id] = cls

    # -- conveniences; all generated code lives in _generate --------------------------------
    def __repr__(self) -> str:
        inner = ", ".join(f"{f.name}={v!r}" for f, v in zip(self.FIELDS, self, strict=True))
        return f"{type(self).__name__}({inner})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and tuple.__eq__(self, other)  # type: ignore[arg-type]

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((type(self).ID, tuple(self)))

    def __getnewargs__(self) -> tuple[Any, ...]:
        return tuple(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain values keyed by field name; enums as their names, for JSON and logs."""
        return {
            f.name: (v.name if isinstance(v, IntEnum) else v)
            for f, v in zip(self.FIELDS, self, strict=True)
        }

    def replace(self, **changes: Any) -> Message:
        values = {f.name: v for f, v in zip(self.FIELDS, self, strict=True)}
        values.update(changes)
        return type(self)(**values)

    def encode(self) -> bytes:
        """Message id byte followed by the packed body."""
        return bytes((self.ID,)) + self.STRUCT.pack(*self._wire_values())

    def _wire_values(self) -> Iterator[Any]:
        for f, v in zip(self.FIELDS, self, strict=True):
            yield v.encode("ascii") if f.kind == "str" else v


def _collect_fields(cls: type) -> Iterator[Field]:
    for name in inspect.get_annotations(cls):
        spec = cls.__dict__.get(name)
        if not isinstance(spec, Field):
            raise TypeError(f"{cls.__name__}.{name} needs a field(...) spec")
        if hasattr(tuple, name):  # messages are tuples: count/index would shadow their methods
            raise TypeError(f"{cls.__name__}.{name} shadows a tuple method; rename the field")
        object.__setattr__(spec, "name", name)
        yield spec


def _check_expr(f: Field, var: str, error: str) -> list[str]:
    """Source lines that validate one value ``var`` and raise ``error`` naming the limit.

    A decoded value out of range raises :class:`FieldOutOfRange` (built by ``_range``), which
    carries the field, the value, the bound and the declared refusal code."""
    if f.kind in _SIZED:
        return []
    remote = error == "_Remote"
    if f.enum is not None:
        text = f"f'{{_N}}.{f.name} = {{{var}!r}} is not a {f.enum.__name__} ({f.describe_range()})'"
        raise_it = f"_range(_F_{f.name}, _N, {var}, {text})" if remote else f"{error}({text})"
        return [
            f"    try: {var} = _E_{f.name}[{var}]",
            f"    except (KeyError, TypeError): raise {raise_it} from None",
        ]
    text = (
        f"f'{{_N}}.{f.name} = {{{var}!r}} outside {f.lo}–{f.hi}{(' ' + f.unit) if f.unit else ''}'"
    )
    raise_it = f"_range(_F_{f.name}, _N, {var}, {text})" if remote else f"{error}({text})"
    return [f"    if not ({f.lo} <= {var} <= {f.hi}):", f"        raise {raise_it}"]


def _range(f: Field, owner: str, value: int, text: str) -> FieldOutOfRange:
    refusal = 0 if f.refuse is None else int(f.refuse)
    return FieldOutOfRange(owner, f.name, value, f.out_of_range(value), refusal, text)


def _generate(cls: type[Message]) -> None:
    names = [f.name for f in cls.FIELDS]
    ns: dict[str, Any] = {
        "_N": cls.__name__,
        "_tuple_new": _tuple_new,
        "_unpack_from": cls.STRUCT.unpack_from,
        "_size": cls.STRUCT.size,
        "_Local": LocalProtocolError,
        "_Remote": RemoteProtocolError,
        "_check_int": _check_int,
        "_check_str": _check_str,
        "_decode_str": _decode_str,
        "_check_bytes": _check_bytes,
        "_range": _range,
    }
    for f in cls.FIELDS:
        ns[f"_F_{f.name}"] = f
        if f.enum is not None:
            ns[f"_E_{f.name}"] = dict(f.enum._value2member_map_)
    # constructor: validates every field
    src = [f"def __new__(cls, {', '.join(names)}):"]
    for f in cls.FIELDS:
        if f.kind == "str":
            src.append(f"    _check_str(_N, {f.name!r}, {f.name}, {f.size})")
        elif f.kind == "bytes":
            src.append(f"    {f.name} = _check_bytes(_N, {f.name!r}, {f.name}, {f.size})")
        else:
            src.append(f"    _check_int(_N, {f.name!r}, {f.name})")
            src.extend(_check_expr(f, f.name, "_Local"))
    src.append(f"    return _tuple_new(cls, ({''.join(n + ', ' for n in names)}))")
    # decoder: buf[start:end] is the body
    src.append("def _decode(buf, start, end):")
    src.append("    if end - start != _size:")
    src.append("        raise _Remote(f'{_N} body is {end - start} bytes, expected {_size}')")
    if names:
        src.append(f"    {''.join(n + ', ' for n in names)}= _unpack_from(buf, start)")
    for f in cls.FIELDS:
        if f.kind == "str":
            src.append(f"    {f.name} = _decode_str(_N, {f.name!r}, {f.name})")
        elif f.kind == "bytes":
            pass  # any bytes are valid; the size is the layout's
        else:
            src.extend(_check_expr(f, f.name, "_Remote"))
    src.append(f"    return _tuple_new(_cls, ({''.join(n + ', ' for n in names)}))")
    # encoder: one pack call (the generic Message.encode walks a generator per field)
    packed = ", ".join(
        f"{f.name}.encode('ascii')" if f.kind == "str" else f.name for f in cls.FIELDS
    )
    src.append("def encode(self):")
    if names:
        src.append(f"    {''.join(n + ', ' for n in names)}= self")
    src.append(f"    return _prefix + _pack({packed})")
    ns["_prefix"], ns["_pack"] = bytes((cls.ID,)), cls.STRUCT.pack
    ns["_cls"] = cls
    exec("\n".join(src), ns)  # generated from our own declarations only
    cls.__new__ = ns["__new__"]  # type: ignore[method-assign]
    cls._decode = staticmethod(ns["_decode"])  # type: ignore[assignment]
    cls.encode = ns["encode"]  # type: ignore[method-assign]


def _check_int(owner: str, name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LocalProtocolError(f"{owner}.{name} = {value!r} is not an integer")


def _check_str(owner: str, name: str, value: object, size: int) -> None:
    if not isinstance(value, str) or not value.isascii() or "\0" in value:
        raise LocalProtocolError(f"{owner}.{name} = {value!r} is not printable ASCII")
    if len(value) > size:
        raise LocalProtocolError(f"{owner}.{name} = {value!r} longer than {size} characters")
    if not value.isprintable():
        raise LocalProtocolError(f"{owner}.{name} = {value!r} is not printable ASCII")


def _check_bytes(owner: str, name: str, value: object, size: int) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise LocalProtocolError(f"{owner}.{name} = {value!r:.40} is not bytes")
    if len(value) != size:
        raise LocalProtocolError(f"{owner}.{name} is {len(value)} bytes, expected exactly {size}")
    return bytes(value)


def _decode_str(owner: str, name: str, raw: bytes) -> str:
    text = raw.rstrip(b"\0")
    if b"\0" in text or not text.isascii():
        raise RemoteProtocolError(f"{owner}.{name} is not NUL-padded ASCII")
    value = text.decode("ascii")
    if not value.isprintable():
        raise RemoteProtocolError(f"{owner}.{name} has control characters")
    return value


def decode_message(
    payload: bytes | bytearray | memoryview, start: int = 0, end: int = -1
) -> Message:
    """Decode ``payload[start:end]`` (message id byte first) into a message object."""
    if end < 0:
        end = len(payload)
    if end <= start:
        raise RemoteProtocolError("empty message")
    cls = REGISTRY.get(payload[start])
    if cls is None:
        raise RemoteProtocolError(f"unknown message id 0x{payload[start]:02X}")
    buf = bytes(payload) if isinstance(payload, memoryview) else payload
    return cls._decode(buf, start + 1, end)


def encode_message(message: Message) -> bytes:
    """Message id byte and body, ready for the link to frame."""
    return message.encode()


def canonical_schema_text(registry: dict[int, type[Message]] | None = None) -> str:
    """The text the schema hash is taken of (docs/protocol.md, "Schema hash", spells it out
    so a peer can recompute it): one line per message in id order, fields in declared order."""
    registry = REGISTRY if registry is None else registry
    text = []
    for msg_id in sorted(registry):
        cls = registry[msg_id]
        parts = [f"{msg_id}:{cls.__name__}:{cls.KIND.name}"]
        for f in cls.FIELDS:
            members = ",".join(f"{m.name}={m.value}" for m in f.enum) if f.enum else ""
            refuse = "" if f.refuse is None else str(int(f.refuse))
            parts.append(f"{f.name}:{f.kind}:{f.lo}:{f.hi}:{f.size}:{members}:{refuse}")
        text.append("|".join(parts))
    return "\n".join(text)


def schema_hash(registry: dict[int, type[Message]] | None = None) -> int:
    """32-bit hash of every layout and limit (MAVLink's CRC_EXTRA, for the whole schema):
    the first 4 bytes, little-endian, of SHA-256 over :func:`canonical_schema_text`.

    Two ends whose hashes differ disagree about some byte somewhere; the handshake refuses them.
    """
    digest = hashlib.sha256(canonical_schema_text(registry).encode()).digest()
    return int.from_bytes(digest[:4], "little")
