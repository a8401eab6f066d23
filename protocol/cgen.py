"""Generate the C kit's message codec (``mp_messages.h``/``.c``) from the protocol declarations.

Everything in the two files is read from :mod:`.messages` (the registry, every field's kind,
range, enumeration, size and refusal code), :mod:`.limits` (the envelope, the area table),
:mod:`.behaviour` (which command is obeyed when) and :mod:`.schema` (the schema hash): no message
is written by hand in C. The codec is table-driven: one descriptor per field (offset in the C
struct, wire kind, range or enumeration, refusal code) and one small pack/unpack walker, so a
Cortex-M0 pays for the walker once, not for an unrolled coder per message.

``micropen protocol gen-c OUT/`` writes these two files and copies the hand-written portable core
(``protocol/c/*.c``, ``*.h``) beside them; :func:`kit_files` is what it writes. The output is
deterministic: the same declarations give the same bytes.

Usage (the C kit's document, ``docs/c-kit.md``, is partly generated)::

    python3 -m micropen.protocol.cgen --write-doc docs/c-kit.md   # regenerate its blocks
    python3 -m micropen.protocol.cgen --check-doc docs/c-kit.md   # exit 1 when they drifted
    python3 -m micropen.protocol.cgen --size OUT/ [--json]        # -Os sizes of OUT/*.c
"""

from __future__ import annotations

import argparse
import inspect
import re
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from pathlib import Path

from . import behaviour, limits, messages
from .errors import LocalProtocolError
from .schema import MAX_BODY, REGISTRY, Field, Kind, Message, schema_hash

__all__ = [
    "CORE_DIR",
    "GENERATED",
    "KitError",
    "c_struct_size",
    "core_files",
    "generate",
    "kit_files",
    "message_struct_size",
    "render_doc_blocks",
]

GENERATOR = "micropen.protocol.cgen"
GENERATED = ("mp_messages.h", "mp_messages.c")
CORE_DIR = Path(__file__).resolve().parent / "c"
DOC_COMMAND = "python3 -m micropen.protocol.cgen --write-doc docs/c-kit.md"

# wire kind → (C type, bytes, signed, walker code)
_INT_KINDS: dict[str, tuple[str, int, bool, int]] = {
    "u8": ("uint8_t", 1, False, 0),
    "u16": ("uint16_t", 2, False, 1),
    "u32": ("uint32_t", 4, False, 2),
    "i8": ("int8_t", 1, True, 3),
    "i16": ("int16_t", 2, True, 4),
    "i32": ("int32_t", 4, True, 5),
}
_STR_CODE, _BYTES_CODE = 6, 7
_TYPE_LIMITS = {
    kind: ((-(1 << (8 * n - 1)), (1 << (8 * n - 1)) - 1) if signed else (0, (1 << (8 * n)) - 1))
    for kind, (_, n, signed, _) in _INT_KINDS.items()
}
# struct format characters of calibration_crc's layout → C parameter type
_FORMAT_TYPES = {"B": "uint8_t", "b": "int8_t", "H": "uint16_t", "h": "int16_t"}
_FORMAT_TYPES |= {"I": "uint32_t", "i": "int32_t"}
# the admission flags of the contract, from behaviour.py's sets
_ADMIT_FLAGS = (
    ("MP_ADMIT_BEFORE_HELLO", "NO_HANDSHAKE_NEEDED", "obeyed before Hello on this link epoch"),
    ("MP_ADMIT_UNPAIRED", "NO_PAIRING_NEEDED", "obeyed on an epoch no paired host proved"),
    ("MP_ADMIT_NEVER_CACHED", "NEVER_CACHED", "never answered from the reply cache"),
)
# a tuple constant of limits.py gets a count macro; this one has the contract's name
_COUNT_NAMES = {"RATE_LEVELS_SPS": "RATE_LEVEL_COUNT"}


_AnyIntEnum = type[IntEnum] | type[IntFlag]


class KitError(LocalProtocolError):
    """The declarations cannot be expressed in the C kit (the message says what to change)."""


# ------------------------------------------------------------------------------ model
@dataclass(frozen=True, slots=True)
class _Check:
    """How one integer field is checked: a range (``lo``..``hi``), an enumeration, or nothing."""

    kind: str  # "range", "enum" or ""
    index: int = 0


def _c_int(value: int) -> str:
    """A C integer literal for ``value`` (an unsuffixed decimal takes the first of int, long
    that holds it, so a 16-bit int is no trap; above INT32_MAX it is unsigned)."""
    if value == -(1 << 31):
        return "(-2147483647 - 1)"
    if value < 0:
        return f"({value})"
    return f"{value}u" if value > 0x7FFF_FFFF else str(value)


def _c_string(text: str) -> str:
    if not text.isascii() or not text.isprintable():
        raise KitError(f"{text!r} is not printable ASCII; the C kit's names must be")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _comment(text: str) -> str:
    """``text`` made safe inside a C block comment, in ASCII (the kit is ASCII only)."""
    swaps = {"→": "->", "–": "-", "—": "-", "≤": "<=", "≥": ">=", "µ": "u", "°": "deg ", "±": "+-"}
    for old, new in swaps.items():
        text = text.replace(old, new)
    text = re.sub(r":\w+:`~?([^`]*)`", r"\1", text).replace("``", "")
    text = text.replace("*/", "* /").replace("/*", "/ *")
    return text.encode("ascii", "replace").decode("ascii")


def _enum_macro(enum: _AnyIntEnum, member: str) -> str:
    return f"MP_{enum.__name__.upper()}_{member}"


def _enum_values(enum: _AnyIntEnum) -> list[int]:
    """Every value the Python decoder accepts for a field of this enumeration (aliases and
    named flag combinations included), in ascending order."""
    return sorted({int(m) for m in enum.__members__.values()})


def _int_check_needed(f: Field) -> bool:
    return f.enum is not None or (f.lo, f.hi) != _TYPE_LIMITS[f.kind]


def _field_kind(owner: type[Message], f: Field) -> None:
    if f.kind in ("str", "bytes"):
        if not 0 < f.size <= 255:
            raise KitError(f"{owner.__name__}.{f.name}: size {f.size} outside 1..255")
        return
    if f.kind not in _INT_KINDS:
        raise KitError(
            f"{owner.__name__}.{f.name}: field kind {f.kind!r} has no C form; teach "
            f"protocol/cgen.py (known: {', '.join([*_INT_KINDS, 'str', 'bytes'])})"
        )


def _exported_enums(registry: Mapping[int, type[Message]]) -> list[_AnyIntEnum]:
    """messages.py's enumerations, limits.Area, schema.Kind and any other one a field or a
    refusal names, each once, in that order."""
    found: list[_AnyIntEnum] = [*messages.protocol_enums(), Kind]
    for cls in (registry[i] for i in sorted(registry)):
        for f in cls.FIELDS:
            if f.enum is not None:
                found.append(f.enum)
            if f.refuse is not None:
                found.append(type(f.refuse))
    unique: list[_AnyIntEnum] = []
    for enum in found:
        if enum not in unique:
            unique.append(enum)
    return unique


def _limit_constants() -> tuple[list[tuple[str, int, str]], list[tuple[str, tuple[int, ...]]]]:
    """limits.py's integer constants (float percentages become ppm) and integer tuples."""
    scalars: list[tuple[str, int, str]] = []
    tuples: list[tuple[str, tuple[int, ...]]] = []
    for name, value in vars(limits).items():
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name) or isinstance(value, type | bool):
            continue
        if isinstance(value, int):
            scalars.append((name, int(value), ""))
        elif isinstance(value, float):
            ppm = value * 10_000
            if not name.endswith("_PCT") or ppm != int(ppm):
                raise KitError(
                    f"limits.{name} = {value} is a float; the C kit has no floating point: "
                    "give it an integer unit (a _PCT float becomes _PPM when exact)"
                )
            scalars.append((name[: -len("_PCT")] + "_PPM", int(ppm), f"limits.{name} = {value} %"))
        elif isinstance(value, tuple) and value and all(type(v) is int for v in value):
            tuples.append((name, value))
    return scalars, tuples


def c_struct_size(fields: Iterable[Field]) -> int:
    """``sizeof`` of a message's C struct under natural alignment (a type's alignment is its
    size; char arrays align to 1) — the rule of the Arm EABI and of x86-64 System V, checked
    against the compiler by tests/ckit."""
    offset, align = 0, 1
    for f in fields:
        if f.kind == "str":
            size, a = f.size + 1, 1
        elif f.kind == "bytes":
            size, a = f.size, 1
        else:
            size = a = _INT_KINDS[f.kind][1]
        offset = (offset + a - 1) // a * a + size
        align = max(align, a)
    offset = max(offset, 1)  # a message without fields gets one placeholder byte
    return (offset + align - 1) // align * align


def message_struct_size(registry: Mapping[int, type[Message]] | None = None) -> int:
    """``sizeof(mp_message)``: the id byte and the union of every message struct."""
    registry = REGISTRY if registry is None else registry
    sizes = [c_struct_size(cls.FIELDS) for cls in registry.values()]
    aligns = [
        max([1, *(_INT_KINDS[f.kind][1] for f in cls.FIELDS if f.kind in _INT_KINDS)])
        for cls in registry.values()
    ]
    align = max(aligns)
    union = (max(sizes) + align - 1) // align * align
    return (align + union + align - 1) // align * align


# ------------------------------------------------------------------------------ rendering
class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, *lines: str) -> None:
        self.lines.extend(lines)

    def text(self) -> str:
        return "\n".join(self.lines).rstrip("\n") + "\n"


def _banner(name: str, what: str, registry: Mapping[int, type[Message]]) -> list[str]:
    return [
        f"/* {name}: {what}",
        f" * Generated by {GENERATOR} (micropen protocol gen-c) from the protocol declarations;",
        " * do not edit: change protocol/messages.py, limits.py or behaviour.py and regenerate.",
        f" * Wire protocol version {messages.PROTOCOL_VERSION}, "
        f"schema hash 0x{schema_hash(dict(registry)):08X}.",
        " */",
    ]


class _Tables:
    """The codec's descriptor tables, numbered as the C arrays will be."""

    def __init__(self, registry: Mapping[int, type[Message]]) -> None:
        self.messages = [registry[i] for i in sorted(registry)]
        self.ranges: list[tuple[int, int]] = []
        self.enums: list[type[IntEnum]] = []
        self.checks: dict[tuple[int, str], _Check] = {}
        for cls in self.messages:
            if len(cls.FIELDS) > 255:
                raise KitError(f"{cls.__name__} has more than 255 fields")
            for f in cls.FIELDS:
                _field_kind(cls, f)
                self.checks[(cls.ID, f.name)] = self._check(f)
        if len(self.ranges) > 256 or len(self.enums) > 256:
            raise KitError("more than 256 distinct ranges or enumerations; widen mp__field.arg")
        values = [v for e in self.enums for v in _enum_values(e)]
        if all(0 <= v <= 0xFF for v in values):
            self.enum_type = "uint8_t"
        elif all(0 <= v <= 0xFFFF for v in values):
            self.enum_type = "uint16_t"
        else:
            self.enum_type = "uint32_t"

    def _check(self, f: Field) -> _Check:
        if f.kind not in _INT_KINDS or not _int_check_needed(f):
            return _Check("")
        if f.enum is not None:
            if f.enum not in self.enums:
                self.enums.append(f.enum)
            return _Check("enum", self.enums.index(f.enum))
        pair = (f.lo, f.hi)
        if pair not in self.ranges:
            self.ranges.append(pair)
        return _Check("range", self.ranges.index(pair))


def _render_header(registry: Mapping[int, type[Message]], tables: _Tables) -> str:
    w = _Writer()
    w(*_banner("mp_messages.h", "the micropen message codec, ids, limits and tables", registry))
    w("#ifndef MP_MESSAGES_H", "#define MP_MESSAGES_H", "")
    w("#include <stddef.h>", "#include <stdint.h>", "")
    w("#ifdef __cplusplus", 'extern "C" {', "#endif", "")
    w(f"#define MP_PROTOCOL_VERSION {messages.PROTOCOL_VERSION}")
    w(f"#define MP_SCHEMA_HASH 0x{schema_hash(dict(registry)):08X}u")
    w(f"#define MP_MAX_BODY {MAX_BODY} /* the most body bytes any message may ever have */")
    largest = max(cls.STRUCT.size for cls in tables.messages)
    w(f"#define MP_MAX_MESSAGE {largest + 1} /* id byte + the largest body of this schema */")
    w("")
    w("/* results: >= 0 success, negative MP_E_* (the core's, in mp_port.h, are -20 and below) */")
    for name, value, meaning in (
        ("MP_E_MALFORMED", -1, "wrong id or length, bad string, value of no enumeration"),
        ("MP_E_RANGE", -2, "a field outside its declared range"),
        ("MP_E_SPACE", -3, "the output buffer is too small"),
    ):
        w(f"#define {name} ({value}) /* {meaning} */")
    w("")
    for enum in _exported_enums(registry):
        doc = _first_line(enum)
        where = f"{enum.__module__.rsplit('.', 1)[-1]}.{enum.__name__}"
        flags = " (bit flags)" if issubclass(enum, IntFlag) else ""
        w(f"/* {where}{flags}{': ' + _comment(doc) if doc else ''} */")
        for member, value in enum.__members__.items():
            w(f"#define {_enum_macro(enum, member)} {_c_int(int(value))}")
        w("")
    scalars, tuples = _limit_constants()
    w("/* protocol/limits.py: the pen's envelope */")
    for name, value, note in scalars:
        w(f"#define MP_L_{name} {_c_int(value)}" + (f" /* {_comment(note)} */" if note else ""))
    for name, values in tuples:
        w(f"#define MP_L_{name} {{{', '.join(_c_int(v) for v in values)}}}")
        w(f"#define MP_L_{_COUNT_NAMES.get(name, name + '_COUNT')} {len(values)}")
    extra = [
        (n, v)
        for n, v in vars(messages).items()
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", n) and type(v) is int and n != "PROTOCOL_VERSION"
    ]
    if extra:
        w("", "/* protocol/messages.py's constants */")
        w(*(f"#define MP_{n} {_c_int(v)}" for n, v in extra))
    w("")
    w("/* limits.AREAS: depth and speed limits per treatment area (levels 1-based) */")
    w(f"#define MP_AREA_COUNT {len(limits.AREAS)}")
    w(
        "typedef struct mp_area {",
        "    uint8_t id; /* MP_AREA_* */",
        "    const char *name; /* lower-case, as the host's --area takes it */",
        "    uint16_t default_um, max_um, override_max_um;",
        "    uint8_t level_lo, level_hi; /* levels allowed: MP_L_RATE_LEVELS_SPS[lo-1..hi-1] */",
        "} mp_area;",
        "extern const mp_area mp_areas[MP_AREA_COUNT];",
        "const mp_area *mp_area_find(uint8_t id); /* NULL: no such area */",
        "",
    )
    w("/* behaviour.ALLOWED_STATES and friends: which command the pen obeys when */")
    for index, (macro, source, meaning) in enumerate(_ADMIT_FLAGS):
        w(f"#define {macro} {1 << index}u /* behaviour.{source}: {meaning} */")
    w(f"#define MP_ADMISSION_COUNT {len(_admitted(registry))}")
    w(
        "typedef struct mp_admission {",
        "    uint8_t id; /* MP_ID_* of a command */",
        "    uint8_t states; /* bit (1u << MP_PENSTATE_x) set: obeyed in state x */",
        "    uint8_t flags; /* MP_ADMIT_* */",
        "} mp_admission;",
        "extern const mp_admission mp_admissions[MP_ADMISSION_COUNT];",
        "const mp_admission *mp_admission_find(uint8_t id); /* NULL: not a command */",
        "",
    )
    w(
        "/* Why a message was refused, filled exactly as the Python pen fills its Nak:",
        " * error: the field's declared refusal code (e.g. MP_ERRORCODE_DEPTH_OUT_OF_RANGE) with",
        " * value = the field's value (u32 as its i32 bit pattern) and limit = the bound it broke",
        " * (0 for a value of no enumeration); otherwise MP_ERRORCODE_MALFORMED (known id) or",
        " * MP_ERRORCODE_UNKNOWN_COMMAND (unknown id, empty message) with value = the id byte",
        " * (0 when empty) and limit = 0. The first failing field in declared order wins. */",
        "typedef struct mp_refusal {",
        "    uint8_t error; /* MP_ERRORCODE_* */",
        "    int32_t value;",
        "    int32_t limit;",
        "} mp_refusal;",
        "",
    )
    w(
        "/* Every message: MP_ID_x (its id byte), MP_SIZE_x (body bytes after the id), the",
        " * struct mp_x with the Python field names, and",
        " *   int mp_x_pack(const mp_x *m, uint8_t *out, size_t cap);",
        " *     writes the id byte and the body; returns the bytes written, MP_E_SPACE when",
        " *     cap < 1 + MP_SIZE_x (checked first), MP_E_RANGE when a field is one the Python",
        " *     constructor refuses (out of range, no member of its enumeration, a string not",
        " *     NUL-terminated within its size or with a byte outside 0x20..0x7E).",
        " *   int mp_x_unpack(const uint8_t *msg, size_t len, mp_x *m, mp_refusal *why);",
        " *     msg starts at the id byte; returns 0, MP_E_MALFORMED or MP_E_RANGE (why filled,",
        " *     may be NULL); on an error *m is unspecified.",
        " * Strings: char[size + 1], NUL-terminated here, NUL-padded on the wire. */",
        "",
    )
    for cls in tables.messages:
        _render_message_decl(w, cls)
    w(
        "/* Any message: id picks the union member (u.Hello, u.SetDepth, ...) */",
        "typedef struct mp_message {",
        "    uint8_t id;",
        "    union {",
    )
    w(*(f"        mp_{cls.__name__} {cls.__name__};" for cls in tables.messages))
    w(
        "    } u;",
        "} mp_message;",
        "",
        "/* mp_unpack: any message (an unknown id is refused as UNKNOWN_COMMAND); mp_pack: the",
        " * member m->id names (MP_E_RANGE for an id of no message). Results as above. */",
        "int mp_unpack(const uint8_t *msg, size_t len, mp_message *m, mp_refusal *why);",
        "int mp_pack(const mp_message *m, uint8_t *out, size_t cap);",
        "int mp_message_size(uint8_t id); /* body bytes, or -1: no such message */",
        "uint8_t mp_message_kind(uint8_t id); /* MP_KIND_*, or 0: no such message */",
        'const char *mp_message_name(uint8_t id); /* e.g. "SetDepth", or NULL */',
        "",
    )
    w(f"/* messages.calibration_crc: {_comment(_first_line(messages.calibration_crc))} */")
    w(_cal_crc_prototype() + ";", "")
    w("#ifdef __cplusplus", "}", "#endif", "", "#endif /* MP_MESSAGES_H */")
    return w.text()


def _first_line(obj: object) -> str:
    """The first line of ``obj``'s own docstring (a class's is not inherited)."""
    doc = vars(obj).get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc).splitlines()[0] if doc else ""


def _admitted(registry: Mapping[int, type[Message]]) -> list[type[Message]]:
    commands = [
        registry[i]
        for i in sorted(registry)
        if registry[i].KIND in (Kind.COMMAND, Kind.SIM_COMMAND)
    ]
    missing = [c.__name__ for c in commands if c not in behaviour.ALLOWED_STATES]
    if missing:
        raise KitError(
            f"no admission rule for {', '.join(missing)}: add it to "
            "protocol/behaviour.py ALLOWED_STATES"
        )
    return commands


def _render_message_decl(w: _Writer, cls: type[Message]) -> None:
    name = cls.__name__
    w(f"/* 0x{cls.ID:02X} {name}: {cls.KIND.name}{_summary(cls)} */")
    w(f"#define MP_ID_{name} 0x{cls.ID:02X}")
    w(f"#define MP_SIZE_{name} {cls.STRUCT.size}")
    w(f"typedef struct mp_{name} {{")
    if not cls.FIELDS:
        w("    uint8_t mp_empty; /* C has no empty struct; not on the wire */")
    for f in cls.FIELDS:
        w(f"    {_member(f)}; /* {_field_note(f)} */")
    w(f"}} mp_{name};")
    w(f"int mp_{name}_pack(const mp_{name} *m, uint8_t *out, size_t cap);")
    w(f"int mp_{name}_unpack(const uint8_t *msg, size_t len, mp_{name} *m, mp_refusal *why);")
    w("")


def _summary(cls: type[Message]) -> str:
    line = _first_line(cls)
    return f". {_comment(line)}" if line else ""


def _member(f: Field) -> str:
    if f.kind == "str":
        return f"char {f.name}[{f.size} + 1]"
    if f.kind == "bytes":
        return f"uint8_t {f.name}[{f.size}]"
    return f"{_INT_KINDS[f.kind][0]} {f.name}"


def _field_note(f: Field) -> str:
    if f.kind == "str":
        text = f"printable ASCII, <= {f.size} chars"
    elif f.kind == "bytes":
        text = f"{f.size} bytes"
    elif f.enum is not None:
        text = f"{f.kind} MP_{f.enum.__name__.upper()}_*"
    else:
        text = f"{f.kind} {f.lo}..{f.hi}"
    if f.unit:
        text += f" {f.unit}"
    if f.refuse is not None:
        text += f"; refused as {_enum_macro(type(f.refuse), f.refuse.name)}"
    return _comment(text)


def _cal_crc_parts() -> tuple[list[str], list[str]]:
    layout = messages._CAL_CRC_LAYOUT.format
    codes = layout.lstrip("<")
    if not layout.startswith("<") or any(c not in _FORMAT_TYPES for c in codes):
        raise KitError(f"calibration_crc layout {layout!r} has no C form; teach protocol/cgen.py")
    names = list(inspect.signature(messages.calibration_crc).parameters)
    if len(names) != len(codes):
        raise KitError("calibration_crc's parameters and its layout disagree")
    return names, [_FORMAT_TYPES[c] for c in codes]


def _cal_crc_prototype() -> str:
    names, types = _cal_crc_parts()
    args = ", ".join(f"{t} {n}" for t, n in zip(types, names, strict=True))
    return f"uint32_t mp_calibration_crc({args})"


# the walker: generic C, the same for every schema (the tables below it are the schema)
_WALKER = r"""
/* ------------------------------------------------------------------ the walker */
/* field kinds; the high bits say how the value is checked */
#define MP__U8 0u
#define MP__U16 1u
#define MP__U32 2u
#define MP__I8 3u
#define MP__I16 4u
#define MP__I32 5u
#define MP__STR 6u
#define MP__BYTES 7u
#define MP__KIND 0x0Fu
#define MP__RANGE 0x10u /* arg: index into mp__ranges */
#define MP__ENUM 0x20u /* arg: index into mp__enums */

typedef struct mp__field {
    uint16_t offset; /* of the member in its struct */
    uint8_t kind; /* MP__U8.. | MP__RANGE / MP__ENUM */
    uint8_t arg; /* range or enumeration index; the size of a str or bytes field */
    uint8_t refuse; /* MP_ERRORCODE_* answered when out of range; 0: MALFORMED */
} mp__field;

typedef struct mp__range {
    uint32_t lo, hi; /* bit patterns; signed kinds compare as int32_t */
} mp__range;

typedef struct mp__enum {
    uint16_t first; /* into mp__enum_values */
    uint16_t count;
} mp__enum;

typedef struct mp__message {
    uint8_t id;
    uint8_t kind; /* MP_KIND_* */
    uint8_t body; /* bytes after the id */
    uint8_t nfields;
    uint16_t first; /* into mp__fields */
    const char *name;
} mp__message;

static const mp__field mp__fields[];
static const mp__range mp__ranges[];
static const mp__enum mp__enums[];
static const mp__enum_value mp__enum_values[];
static const mp__message mp__messages[MP__MESSAGE_COUNT];

static const uint8_t mp__width[6] = {1u, 2u, 4u, 1u, 2u, 4u};

/* an int32_t from its bit pattern, without implementation-defined conversions */
static int32_t mp__i32(uint32_t u)
{
    return u <= 0x7FFFFFFFul ? (int32_t)u : -(int32_t)(~u) - 1;
}

static uint32_t mp__get(const uint8_t *p, unsigned width)
{
    uint32_t v = 0u;
    while (width-- > 0u) {
        v = (v << 8) | p[width];
    }
    return v;
}

static void mp__put(uint8_t *p, uint32_t v, unsigned width)
{
    unsigned i;
    for (i = 0u; i < width; i++) {
        p[i] = (uint8_t)(v & 0xFFu);
        v >>= 8;
    }
}

/* a member's value as the bit pattern of its wire kind, sign-extended to 32 bits */
static uint32_t mp__load(const uint8_t *at, unsigned kind)
{
    switch (kind) {
    case MP__U8: return *at;
    case MP__U16: return *(const uint16_t *)(const void *)at;
    case MP__U32: return *(const uint32_t *)(const void *)at;
    case MP__I8: return (uint32_t)(int32_t)*(const int8_t *)(const void *)at;
    case MP__I16: return (uint32_t)(int32_t)*(const int16_t *)(const void *)at;
    default: return (uint32_t)*(const int32_t *)(const void *)at;
    }
}

static void mp__store(uint8_t *at, unsigned kind, uint32_t v)
{
    switch (kind) {
    case MP__U8: *at = (uint8_t)v; break;
    case MP__U16: *(uint16_t *)(void *)at = (uint16_t)v; break;
    case MP__U32: *(uint32_t *)(void *)at = v; break;
    case MP__I8: *(int8_t *)(void *)at = (int8_t)mp__i32(v); break;
    case MP__I16: *(int16_t *)(void *)at = (int16_t)mp__i32(v); break;
    default: *(int32_t *)(void *)at = mp__i32(v); break;
    }
}

/* 1 when v (sign-extended pattern) is allowed; *limit: the bound it broke */
static int mp__allowed(const mp__field *f, uint32_t v, int32_t *limit)
{
    unsigned kind = f->kind & MP__KIND;
    if ((f->kind & MP__ENUM) != 0u) {
        const mp__enum *e = &mp__enums[f->arg];
        uint16_t i;
        for (i = 0u; i < e->count; i++) {
            if ((uint32_t)mp__enum_values[e->first + i] == v) {
                return 1;
            }
        }
        *limit = 0;
        return 0;
    }
    if ((f->kind & MP__RANGE) != 0u) {
        const mp__range *r = &mp__ranges[f->arg];
        int below, above;
        if (kind >= MP__I8) {
            below = mp__i32(v) < mp__i32(r->lo);
            above = mp__i32(v) > mp__i32(r->hi);
        } else {
            below = v < r->lo;
            above = v > r->hi;
        }
        if (below || above) {
            *limit = mp__i32(below ? r->lo : r->hi);
            return 0;
        }
    }
    return 1;
}

static const mp__message *mp__find(uint8_t id)
{
    unsigned i;
    for (i = 0u; i < MP__MESSAGE_COUNT; i++) {
        if (mp__messages[i].id == id) {
            return &mp__messages[i];
        }
    }
    return NULL;
}

static int mp__refuse(mp_refusal *why, uint8_t error, int32_t value, int32_t limit, int rc)
{
    if (why != NULL) {
        why->error = error;
        why->value = value;
        why->limit = limit;
    }
    return rc;
}

/* the answer to a message whose id is not the one expected */
static int mp__unknown(const uint8_t *msg, size_t len, mp_refusal *why)
{
    if (len == 0u) {
        return mp__refuse(why, MP_ERRORCODE_UNKNOWN_COMMAND, 0, 0, MP_E_MALFORMED);
    }
    if (mp__find(msg[0]) == NULL) {
        return mp__refuse(why, MP_ERRORCODE_UNKNOWN_COMMAND, msg[0], 0, MP_E_MALFORMED);
    }
    return mp__refuse(why, MP_ERRORCODE_MALFORMED, msg[0], 0, MP_E_MALFORMED);
}

/* printable ASCII, as Python's str.isprintable() on ASCII */
static int mp__printable(uint8_t c)
{
    return c >= 0x20u && c <= 0x7Eu;
}

static int mp__decode(const mp__message *d, const uint8_t *msg, size_t len, void *out,
                      mp_refusal *why)
{
    const mp__field *f = &mp__fields[d->first];
    const uint8_t *p = msg + 1;
    uint8_t *base = (uint8_t *)out;
    uint8_t n;
    if (len - 1u != d->body) {
        return mp__refuse(why, MP_ERRORCODE_MALFORMED, d->id, 0, MP_E_MALFORMED);
    }
    for (n = 0u; n < d->nfields; n++, f++) {
        unsigned kind = f->kind & MP__KIND;
        uint8_t *at = base + f->offset;
        if (kind == MP__STR) {
            size_t size = f->arg, end = size, i;
            while (end > 0u && p[end - 1u] == 0u) {
                end--;
            }
            for (i = 0u; i < end; i++) {
                if (!mp__printable(p[i])) {
                    return mp__refuse(why, MP_ERRORCODE_MALFORMED, d->id, 0, MP_E_MALFORMED);
                }
                at[i] = p[i];
            }
            for (; i <= size; i++) {
                at[i] = 0u;
            }
            p += size;
        } else if (kind == MP__BYTES) {
            memcpy(at, p, f->arg);
            p += f->arg;
        } else {
            unsigned width = mp__width[kind];
            uint32_t v = mp__get(p, width);
            int32_t limit = 0;
            if (kind >= MP__I8 && width < 4u) {
                uint32_t sign = (uint32_t)1u << (8u * width - 1u);
                v = (v ^ sign) - sign;
            }
            if (!mp__allowed(f, v, &limit)) {
                int rc = (f->kind & MP__ENUM) != 0u ? MP_E_MALFORMED : MP_E_RANGE;
                if (f->refuse != 0u) {
                    return mp__refuse(why, f->refuse, mp__i32(v), limit, rc);
                }
                return mp__refuse(why, MP_ERRORCODE_MALFORMED, d->id, 0, rc);
            }
            mp__store(at, kind, v);
            p += width;
        }
    }
    return 0;
}

static int mp__unpack(const mp__message *d, const uint8_t *msg, size_t len, void *out,
                      mp_refusal *why)
{
    if (msg == NULL) {
        len = 0u;
    }
    if (len == 0u || msg[0] != d->id) {
        return mp__unknown(msg, len, why);
    }
    return mp__decode(d, msg, len, out, why);
}

static int mp__pack(const mp__message *d, const void *in, uint8_t *out, size_t cap)
{
    const mp__field *f = &mp__fields[d->first];
    const uint8_t *base = (const uint8_t *)in;
    uint8_t *p = out;
    uint8_t n;
    int32_t limit;
    if (out == NULL || cap < 1u + (size_t)d->body) {
        return MP_E_SPACE;
    }
    *p++ = d->id;
    for (n = 0u; n < d->nfields; n++, f++) {
        unsigned kind = f->kind & MP__KIND;
        const uint8_t *at = base + f->offset;
        if (kind == MP__STR) {
            size_t size = f->arg, i;
            for (i = 0u; i <= size && at[i] != 0u; i++) {
                if (!mp__printable(at[i])) {
                    return MP_E_RANGE;
                }
            }
            if (i > size) {
                return MP_E_RANGE;
            }
            memcpy(p, at, i);
            memset(p + i, 0, size - i);
            p += size;
        } else if (kind == MP__BYTES) {
            memcpy(p, at, f->arg);
            p += f->arg;
        } else {
            uint32_t v = mp__load(at, kind);
            if (!mp__allowed(f, v, &limit)) {
                return MP_E_RANGE;
            }
            mp__put(p, v, mp__width[kind]);
            p += mp__width[kind];
        }
    }
    return (int)(p - out);
}

int mp_unpack(const uint8_t *msg, size_t len, mp_message *m, mp_refusal *why)
{
    const mp__message *d;
    if (msg == NULL) {
        len = 0u;
    }
    d = len == 0u ? NULL : mp__find(msg[0]);
    if (d == NULL) {
        return mp__unknown(msg, len, why);
    }
    m->id = d->id;
    return mp__decode(d, msg, len, &m->u, why);
}

int mp_pack(const mp_message *m, uint8_t *out, size_t cap)
{
    const mp__message *d = mp__find(m->id);
    if (d == NULL) {
        return MP_E_RANGE;
    }
    return mp__pack(d, &m->u, out, cap);
}

int mp_message_size(uint8_t id)
{
    const mp__message *d = mp__find(id);
    return d == NULL ? -1 : (int)d->body;
}

uint8_t mp_message_kind(uint8_t id)
{
    const mp__message *d = mp__find(id);
    return d == NULL ? 0u : d->kind;
}

const char *mp_message_name(uint8_t id)
{
    const mp__message *d = mp__find(id);
    return d == NULL ? NULL : d->name;
}

const mp_area *mp_area_find(uint8_t id)
{
    unsigned i;
    for (i = 0u; i < MP_AREA_COUNT; i++) {
        if (mp_areas[i].id == id) {
            return &mp_areas[i];
        }
    }
    return NULL;
}

const mp_admission *mp_admission_find(uint8_t id)
{
    unsigned i;
    for (i = 0u; i < MP_ADMISSION_COUNT; i++) {
        if (mp_admissions[i].id == id) {
            return &mp_admissions[i];
        }
    }
    return NULL;
}
"""


def _render_source(registry: Mapping[int, type[Message]], tables: _Tables) -> str:
    w = _Writer()
    w(*_banner("mp_messages.c", "the micropen message codec (table-driven)", registry))
    w("#include <stddef.h>", "#include <stdint.h>", "#include <string.h>", "")
    w('#include "mp_crc32.h"', '#include "mp_messages.h"', "")
    w(f"#define MP__MESSAGE_COUNT {len(tables.messages)}u")
    w(f"typedef {tables.enum_type} mp__enum_value;")
    # tentative definitions of static arrays of unknown size are not C99: the walker declares
    # them after the tables instead, so the tables come first
    walker = _WALKER.replace(
        "static const mp__field mp__fields[];\n"
        "static const mp__range mp__ranges[];\n"
        "static const mp__enum mp__enums[];\n"
        "static const mp__enum_value mp__enum_values[];\n"
        "static const mp__message mp__messages[MP__MESSAGE_COUNT];\n",
        "@TABLES@\n",
    )
    head, tail = walker.split("@TABLES@\n")
    w(*head.rstrip("\n").splitlines())
    _render_tables(w, tables)
    w(*tail.rstrip("\n").splitlines())
    w("")
    for index, cls in enumerate(tables.messages):
        name = cls.__name__
        w(
            f"int mp_{name}_pack(const mp_{name} *m, uint8_t *out, size_t cap)",
            "{",
            f"    return mp__pack(&mp__messages[{index}], m, out, cap);",
            "}",
            "",
            f"int mp_{name}_unpack(const uint8_t *msg, size_t len, mp_{name} *m, mp_refusal *why)",
            "{",
            f"    return mp__unpack(&mp__messages[{index}], msg, len, m, why);",
            "}",
            "",
        )
    _render_cal_crc(w)
    return w.text()


def _render_tables(w: _Writer, tables: _Tables) -> None:
    w("/* ------------------------------------------------------------------ the schema */")
    w("static const mp__range mp__ranges[] = {")
    for lo, hi in tables.ranges or [(0, 0)]:
        w(f"    {{0x{lo & 0xFFFF_FFFF:08X}u, 0x{hi & 0xFFFF_FFFF:08X}u}}, /* {lo}..{hi} */")
    w("};", "")
    w("static const mp__enum_value mp__enum_values[] = {")
    first = 0
    spans: list[tuple[int, int]] = []
    for enum in tables.enums:
        values = _enum_values(enum)
        spans.append((first, len(values)))
        first += len(values)
        w(f"    /* {enum.__name__} */")
        for start in range(0, len(values), 12):
            w("    " + " ".join(f"{v & 0xFFFF_FFFF}u," for v in values[start : start + 12]))
    if not tables.enums:
        w("    0u /* no enumerated field */")
    w("};", "", "static const mp__enum mp__enums[] = {")
    w(
        *(
            f"    {{{s}u, {n}u}}, /* {e.__name__} */"
            for (s, n), e in zip(spans, tables.enums, strict=True)
        )
    )
    if not tables.enums:
        w("    {0u, 0u}")
    w("};", "", "static const mp__field mp__fields[] = {")
    count = 0
    for cls in tables.messages:
        w(f"    /* 0x{cls.ID:02X} {cls.__name__} */")
        for f in cls.FIELDS:
            w(f"    {{{_field_row(cls, f, tables)}}},")
            count += 1
    if count == 0:
        w("    {0u, 0u, 0u, 0u}")
    w("};", "", "static const mp__message mp__messages[MP__MESSAGE_COUNT] = {")
    first = 0
    for cls in tables.messages:
        row = f"0x{cls.ID:02X}u, MP_KIND_{cls.KIND.name}, {cls.STRUCT.size}u, {len(cls.FIELDS)}u"
        w(f"    {{{row}, {first}u, {_c_string(cls.__name__)}}},")
        first += len(cls.FIELDS)
    w("};", "")
    w("const mp_area mp_areas[MP_AREA_COUNT] = {")
    for area, p in sorted(limits.AREAS.items()):
        lo, hi = p.levels
        w(
            f"    {{{_enum_macro(limits.Area, area.name)}, {_c_string(p.name)}, {p.default_um}u, "
            f"{p.max_um}u, {p.override_max_um}u, {lo}u, {hi}u}},"
        )
    w("};", "")
    w("const mp_admission mp_admissions[MP_ADMISSION_COUNT] = {")
    for cls in _admitted({c.ID: c for c in tables.messages}):
        states = sum(1 << int(s) for s in behaviour.ALLOWED_STATES[cls])
        if states > 0xFF:
            raise KitError("a pen state above 7 does not fit mp_admission.states")
        flags = [m for m, source, _ in _ADMIT_FLAGS if cls in getattr(behaviour, source)]
        names = " ".join(s.name for s in sorted(behaviour.ALLOWED_STATES[cls]))
        w(
            f"    {{MP_ID_{cls.__name__}, 0x{states:02X}u, {' | '.join(flags) or '0u'}}},"
            f" /* {names} */"
        )
    w("};", "")


def _field_row(cls: type[Message], f: Field, tables: _Tables) -> str:
    offset = f"(uint16_t)offsetof(mp_{cls.__name__}, {f.name})"
    if f.kind == "str":
        return f"{offset}, MP__STR, {f.size}u, 0u"
    if f.kind == "bytes":
        return f"{offset}, MP__BYTES, {f.size}u, 0u"
    check = tables.checks[(cls.ID, f.name)]
    kind = f"MP__{f.kind.upper()}"
    if check.kind == "range":
        kind += " | MP__RANGE"
    elif check.kind == "enum":
        kind += " | MP__ENUM"
    refuse = "0u" if f.refuse is None else _enum_macro(type(f.refuse), f.refuse.name)
    return f"{offset}, {kind}, {check.index}u, {refuse}"


def _render_cal_crc(w: _Writer) -> None:
    names, types = _cal_crc_parts()
    size = struct.calcsize(messages._CAL_CRC_LAYOUT.format)
    w(_cal_crc_prototype(), "{", f"    uint8_t b[{size}];")
    offset = 0
    for name, ctype in zip(names, types, strict=True):
        width = int(re.sub(r"\D", "", ctype)) // 8
        w(f"    mp__put(b + {offset}, (uint32_t){name}, {width}u);")
        offset += width
    w("    return mp_crc32(0u, b, sizeof b);", "}")


# ------------------------------------------------------------------------------ the kit
def generate(registry: Mapping[int, type[Message]] | None = None) -> dict[str, bytes]:
    """``mp_messages.h`` and ``mp_messages.c`` for ``registry`` (default: every message)."""
    registry = dict(REGISTRY if registry is None else registry)
    tables = _Tables(registry)
    names: dict[str, str] = {}
    header = _render_header(registry, tables)
    for macro in re.findall(r"^#define (\w+)", header, flags=re.M):
        if macro in names:
            raise KitError(f"two declarations give the C name {macro}; rename one")
        names[macro] = macro
    source = _render_source(registry, tables)
    return {
        "mp_messages.h": header.encode("ascii"),
        "mp_messages.c": source.encode("ascii"),
    }


def core_files(folder: Path = CORE_DIR) -> dict[str, bytes]:
    """The hand-written core: every ``*.c`` and ``*.h`` directly in ``folder`` (none if the
    folder is absent), by name."""
    if not folder.is_dir():
        return {}
    found = sorted(p for p in folder.iterdir() if p.suffix in (".c", ".h") and p.is_file())
    clash = [p.name for p in found if p.name in GENERATED]
    if clash:
        raise KitError(f"protocol/c/{clash[0]} would overwrite a generated file; rename it")
    return {p.name: p.read_bytes() for p in found}


def kit_files(folder: Path = CORE_DIR) -> dict[str, tuple[str, bytes]]:
    """What ``gen-c`` writes: name → (origin "generated" or "core", content), sorted by name."""
    files = {name: ("generated", data) for name, data in generate().items()}
    files |= {name: ("core", data) for name, data in core_files(folder).items()}
    return dict(sorted(files.items()))


# ------------------------------------------------------------------------------ docs
_BLOCK = re.compile(
    r"(<!-- BEGIN cgen:(?P<name>[a-z-]+) .*?-->\n)(?P<body>.*?)(<!-- END cgen:(?P=name) -->)",
    re.S,
)


def _table(header: tuple[str, ...], rows: Iterable[Iterable[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _doc_files() -> str:
    rows = [(f"`{name}`", origin) for name, (origin, _) in kit_files().items()]
    return _table(("file", "origin"), rows)


def _doc_messages() -> str:
    rows = []
    for msg_id in sorted(REGISTRY):
        cls = REGISTRY[msg_id]
        rows.append(
            (f"0x{msg_id:02X}", f"`mp_{cls.__name__}`", cls.KIND.name, cls.STRUCT.size,
             c_struct_size(cls.FIELDS))
        )  # fmt: skip
    text = _table(("id", "struct", "kind", "body bytes", "sizeof"), rows)
    largest = max(REGISTRY.values(), key=lambda c: c_struct_size(c.FIELDS))
    return (
        text + f"\nLargest message struct: `mp_{largest.__name__}`, "
        f"{c_struct_size(largest.FIELDS)} bytes; `sizeof(mp_message)` (any message): "
        f"{message_struct_size()} bytes. Largest message on the wire: "
        f"`MP_MAX_MESSAGE` = {max(c.STRUCT.size for c in REGISTRY.values()) + 1} bytes.\n"
    )


def _doc_sizes() -> str:
    from .cgen_size import measure_kit  # compiles: only when the sizes block is asked for

    return measure_kit(kit_files()).markdown()


_DOC_BLOCKS: dict[str, Callable[[], str]] = {
    "files": _doc_files,
    "messages": _doc_messages,
    "sizes": _doc_sizes,
}


def render_doc_blocks(text: str, only: Iterable[str] | None = None) -> str:
    """``text`` with every generated block (between ``<!-- BEGIN cgen:NAME … -->`` and
    ``<!-- END cgen:NAME -->``) rendered afresh; ``only`` limits which blocks."""
    wanted = set(_DOC_BLOCKS if only is None else only)
    found = {m.group("name") for m in _BLOCK.finditer(text)}
    unknown = found - set(_DOC_BLOCKS)
    if unknown:
        raise KitError(f"unknown generated block {sorted(unknown)[0]!r}")

    def swap(m: re.Match[str]) -> str:
        name = m.group("name")
        body = _DOC_BLOCKS[name]() if name in wanted else m.group("body")
        return m.group(1) + body + m.group(4)

    return _BLOCK.sub(swap, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m micropen.protocol.cgen",
        description="The C kit's generator: its document's generated blocks and its sizes. "
        "(To write the kit: micropen protocol gen-c OUT/.)",
    )
    do = parser.add_mutually_exclusive_group(required=True)
    do.add_argument("--write-doc", metavar="PATH", help="regenerate the blocks of docs/c-kit.md")
    do.add_argument("--check-doc", metavar="PATH", help="exit 1 when PATH's blocks drifted")
    do.add_argument("--size", metavar="DIR", help="compile DIR/*.c with -Os; print the sizes")
    parser.add_argument("--json", action="store_true", help="with --size: one JSON document")
    args = parser.parse_args(argv)
    if args.size:
        from .cgen_size import measure_folder

        report = measure_folder(Path(args.size))
        sys.stdout.write(report.json() + "\n" if args.json else report.markdown())
        return 0
    path = Path(args.write_doc or args.check_doc)
    text = path.read_text(encoding="utf-8")
    fresh = render_doc_blocks(text)
    if args.write_doc:
        path.write_text(fresh, encoding="utf-8")
        return 0
    if fresh != text:
        sys.stderr.write(f"{path}: generated blocks drifted; run {DOC_COMMAND}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
