"""What the codec tests share: the kit built into a scratch folder, a C test driver, vectors and
the Python pen's answer to a bad message.

The driver is C written here, from the declarations, by code independent of the generator: it
sets and reads every struct member by its Python field name, so a header that named or typed a
field differently fails to compile. It speaks a line protocol on stdin (or one line at a time
through ``drv_line`` in a shared library for ctypes), one answer line per request:

``U NAME HEX``      mp_NAME_unpack, then mp_NAME_pack of what it gave
``G HEX``           mp_unpack, then mp_pack (any message)
``P NAME CAP TOK…`` mp_NAME_pack from field values into a buffer of exactly CAP bytes
``Q NAME CAP TOK…`` the same through mp_pack
``I ID``            mp_message_size / kind / name and mp_admission_find
``A ID``            mp_area_find
``C V…``            mp_calibration_crc
``K``               every constant the test asks for, by name (see ``constants``)
``S``               sizeof of every message struct and of mp_message

Answers: ``OK TOK… | HEX`` (the fields, then the re-packed bytes), ``OK HEX`` (pack), ``ERR rc
error value limit`` (unpack), ``ERR rc`` (pack). Tokens: integers in decimal, ``str`` and
``bytes`` as hex, ``-`` when empty. Input buffers are allocated at exactly their length, so
the sanitizers see any read or write past them.
"""

from __future__ import annotations

import ctypes
import random
import string
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from pathlib import Path
from typing import Any

import cbuild

from micropen.protocol import cgen, limits, messages
from micropen.protocol.errors import FieldOutOfRange, RemoteProtocolError
from micropen.protocol.schema import (
    REGISTRY,
    WIRE_RANGES,
    Field,
    Kind,
    Message,
    decode_message,
    field,
)

C_TYPES = {
    "u8": ("uint8_t", ctypes.c_uint8, False),
    "u16": ("uint16_t", ctypes.c_uint16, False),
    "u32": ("uint32_t", ctypes.c_uint32, False),
    "i8": ("int8_t", ctypes.c_int8, True),
    "i16": ("int16_t", ctypes.c_int16, True),
    "i32": ("int32_t", ctypes.c_int32, True),
}
TYPE_RANGE = WIRE_RANGES  # the schema's own bounds per wire type
# a CRC-32 for the tests only, while the hand-written core (protocol/c/mp_crc32.*) is absent
STUB_CRC_H = """#ifndef MP_CRC32_H
#define MP_CRC32_H
#include <stddef.h>
#include <stdint.h>
uint32_t mp_crc32(uint32_t crc, const uint8_t *data, size_t n);
#endif
"""
STUB_CRC_C = """#include "mp_crc32.h"
/* test-only bitwise CRC-32 (IEEE, zlib's); the kit's own is protocol/c/mp_crc32.c */
uint32_t mp_crc32(uint32_t crc, const uint8_t *data, size_t n)
{
    size_t i;
    int k;
    crc = ~crc;
    for (i = 0; i < n; i++) {
        crc ^= data[i];
        for (k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return ~crc;
}
"""


# ------------------------------------------------------------------------------ the kit
@dataclass(frozen=True)
class Kit:
    folder: Path  # what gen-c would write
    include: list[Path]
    sources: list[Path]  # mp_messages.c and a CRC-32
    stub_crc: bool


def write_kit(root: Path, files: Mapping[str, bytes] | None = None) -> Kit:
    """The kit (``cgen.kit_files()``, or ``files``) in ``root/kit``; a test-only CRC-32 in
    ``root/stub`` when the core's is not there."""
    folder = root / "kit"
    folder.mkdir(parents=True, exist_ok=True)
    if files is None:
        files = {name: data for name, (_, data) in cgen.kit_files().items()}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    if (folder / "mp_crc32.c").exists() and (folder / "mp_crc32.h").exists():
        return Kit(folder, [folder], [folder / "mp_messages.c", folder / "mp_crc32.c"], False)
    stub = root / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "mp_crc32.h").write_text(STUB_CRC_H, encoding="ascii")
    (stub / "mp_crc32.c").write_text(STUB_CRC_C, encoding="ascii")
    return Kit(folder, [folder, stub], [folder / "mp_messages.c", stub / "mp_crc32.c"], True)


def build_driver(
    kit: Kit,
    root: Path,
    registry: Mapping[int, type[Message]] | None = None,
    *,
    sanitize: bool = False,
    shared: bool = False,
) -> Path:
    """The driver program (or, ``shared``, a library exporting ``drv_line``) over ``kit``."""
    source = root / "codec_driver.c"
    source.write_text(driver_source(REGISTRY if registry is None else registry), encoding="ascii")
    name = "codec_driver" + ("_san" if sanitize else "") + (".so" if shared else "")
    extra = ["-DDRIVER_LIB"] if shared else []
    return cbuild.build(
        [*kit.sources, source], root / name, include=kit.include, sanitize=sanitize,
        shared=shared, extra=extra,
    )  # fmt: skip


# ------------------------------------------------------------------------------ the driver
_DRIVER_HEAD = r"""
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "mp_messages.h"

typedef struct sink { char *p; size_t left; } sink;

static void emit(sink *o, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(o->p, o->left, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->left) {
        fprintf(stderr, "driver: answer too long\n");
        exit(3);
    }
    o->p += n;
    o->left -= (size_t)n;
}

static void emit_hex(sink *o, const uint8_t *p, size_t n)
{
    size_t i;
    emit(o, " ");
    if (n == 0) {
        emit(o, "-");
    }
    for (i = 0; i < n; i++) {
        emit(o, "%02x", p[i]);
    }
}

static void emit_str(sink *o, const char *s, size_t cap)
{
    size_t n = 0;
    while (n < cap && s[n] != '\0') {
        n++;
    }
    emit_hex(o, (const uint8_t *)s, n);
}

static int hexv(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* "-" is empty; the length, or -1 */
static long unhex(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    if (strcmp(s, "-") == 0) return 0;
    while (s[0] != '\0' && s[1] != '\0') {
        int h = hexv(s[0]), l = hexv(s[1]);
        if (h < 0 || l < 0 || n >= cap) return -1;
        out[n++] = (uint8_t)(h * 16 + l);
        s += 2;
    }
    return s[0] != '\0' ? -1 : (long)n;
}

static int set_chars(char *dst, size_t cap, const char *tok)
{
    uint8_t tmp[512];
    long n = unhex(tok, tmp, cap);
    if (n < 0) return -1;
    memset(dst, 0, cap);
    memcpy(dst, tmp, (size_t)n);
    return 0;
}

static int set_bytes(uint8_t *dst, size_t size, const char *tok)
{
    long n = unhex(tok, dst, size);
    return n == (long)size ? 0 : -1;
}

/* an exactly-sized copy of a hex message, so the sanitizers see reads past its end */
static uint8_t *load(const char *tok, size_t *len)
{
    uint8_t tmp[1024];
    long n = unhex(tok, tmp, sizeof tmp);
    uint8_t *copy;
    if (n < 0) return NULL;
    copy = (uint8_t *)malloc(n > 0 ? (size_t)n : 1u);
    if (copy == NULL) exit(4);
    memcpy(copy, tmp, (size_t)n);
    *len = (size_t)n;
    return copy;
}

static void emit_refusal(sink *o, int rc, const mp_refusal *why)
{
    emit(o, "ERR %d %u %ld %ld", rc, (unsigned)why->error, (long)why->value, (long)why->limit);
}

static void emit_packed(sink *o, int n, const uint8_t *out)
{
    if (n < 0) {
        emit(o, " ERR %d", n);
    } else {
        emit_hex(o, out, (size_t)n);
    }
}
"""

_DRIVER_TAIL = r"""
static int tokenize(char *line, char **tok, int max)
{
    int n = 0;
    char *p = strtok(line, " \t\r\n");
    while (p != NULL && n < max) {
        tok[n++] = p;
        p = strtok(NULL, " \t\r\n");
    }
    return n;
}

static void answer(char *line, sink *o)
{
    char *tok[64];
    int n = tokenize(line, tok, 64);
    if (n == 0) {
        emit(o, "BAD empty");
    } else if (strcmp(tok[0], "U") == 0 && n == 3) {
        size_t len = 0;
        uint8_t *msg = load(tok[2], &len);
        if (msg == NULL || do_unpack(tok[1], msg, len, o) != 0) emit(o, "BAD U");
        free(msg);
    } else if (strcmp(tok[0], "G") == 0 && n == 2) {
        size_t len = 0;
        uint8_t *msg = load(tok[1], &len);
        if (msg == NULL) {
            emit(o, "BAD G");
        } else {
            do_generic(msg, len, o);
        }
        free(msg);
    } else if ((strcmp(tok[0], "P") == 0 || strcmp(tok[0], "Q") == 0) && n >= 3) {
        size_t cap = (size_t)strtoul(tok[2], NULL, 10);
        if (do_pack(tok[0][0] == 'Q', tok[1], cap, tok + 3, n - 3, o) != 0) emit(o, "BAD P");
    } else if (strcmp(tok[0], "I") == 0 && n == 2) {
        uint8_t id = (uint8_t)strtoul(tok[1], NULL, 10);
        const mp_admission *a = mp_admission_find(id);
        const char *name = mp_message_name(id);
        emit(o, "OK %d %u %s", mp_message_size(id), (unsigned)mp_message_kind(id),
             name == NULL ? "-" : name);
        if (a == NULL) {
            emit(o, " -");
        } else {
            emit(o, " %u %u %u", (unsigned)a->id, (unsigned)a->states, (unsigned)a->flags);
        }
    } else if (strcmp(tok[0], "A") == 0 && n == 2) {
        const mp_area *a = mp_area_find((uint8_t)strtoul(tok[1], NULL, 10));
        if (a == NULL) {
            emit(o, "OK -");
        } else {
            emit(o, "OK %u %s %u %u %u %u %u", (unsigned)a->id, a->name, (unsigned)a->default_um,
                 (unsigned)a->max_um, (unsigned)a->override_max_um, (unsigned)a->level_lo,
                 (unsigned)a->level_hi);
        }
    } else if (strcmp(tok[0], "C") == 0) {
        if (do_crc(tok + 1, n - 1, o) != 0) emit(o, "BAD C");
    } else if (strcmp(tok[0], "K") == 0) {
        emit(o, "OK");
        do_constants(o);
    } else if (strcmp(tok[0], "S") == 0) {
        emit(o, "OK");
        do_sizes(o);
    } else {
        emit(o, "BAD %s", tok[0]);
    }
}

int drv_line(const char *in, char *out, size_t cap)
{
    char line[8192];
    sink o;
    o.p = out;
    o.left = cap;
    if (strlen(in) >= sizeof line) return -1;
    strcpy(line, in);
    answer(line, &o);
    return 0;
}

#ifndef DRIVER_LIB
int main(void)
{
    static char line[8192], out[8192];
    while (fgets(line, sizeof line, stdin) != NULL) {
        if (drv_line(line, out, sizeof out) != 0) return 5;
        puts(out);
    }
    return 0;
}
#endif
"""


def _show(cls: type[Message], var: str) -> list[str]:
    lines = []
    for f in cls.FIELDS:
        if f.kind == "str":
            lines.append(f"emit_str(o, {var}->{f.name}, sizeof {var}->{f.name});")
        elif f.kind == "bytes":
            lines.append(f"emit_hex(o, {var}->{f.name}, sizeof {var}->{f.name});")
        elif C_TYPES[f.kind][2]:
            lines.append(f'emit(o, " %ld", (long){var}->{f.name});')
        else:
            lines.append(f'emit(o, " %lu", (unsigned long){var}->{f.name});')
    return lines


def _fill(cls: type[Message], var: str) -> list[str]:
    lines = [f"if (ntok != {len(cls.FIELDS)}) return -1;"]
    for i, f in enumerate(cls.FIELDS):
        if f.kind == "str":
            lines.append(
                f"if (set_chars({var}->{f.name}, sizeof {var}->{f.name}, tok[{i}])) return -1;"
            )
        elif f.kind == "bytes":
            lines.append(
                f"if (set_bytes({var}->{f.name}, sizeof {var}->{f.name}, tok[{i}])) return -1;"
            )
        else:
            ctype = C_TYPES[f.kind][0]
            lines.append(f"{var}->{f.name} = ({ctype})strtoll(tok[{i}], NULL, 10);")
    return lines


def driver_source(registry: Mapping[int, type[Message]]) -> str:
    classes = [registry[i] for i in sorted(registry)]
    out = [_DRIVER_HEAD]
    for cls in classes:
        n = cls.__name__
        out.append(f"static void show_{n}(sink *o, const mp_{n} *m)\n{{")
        out += [f"    {line}" for line in _show(cls, "m")] or ["    (void)o; (void)m;"]
        out.append("}\n")
        out.append(f"static int fill_{n}(mp_{n} *m, char **tok, int ntok)\n{{")
        out += [f"    {line}" for line in _fill(cls, "m")]
        if not cls.FIELDS:
            out.append("    (void)m; (void)tok;")
        out.append("    return 0;\n}\n")
    # U: per-message unpack (whatever the id byte says) and re-pack
    out.append("static int do_unpack(const char *name, const uint8_t *msg, size_t len, sink *o)\n{")
    for cls in classes:
        n = cls.__name__
        out.append(f'    if (strcmp(name, "{n}") == 0) {{')
        out.append(f"        mp_{n} m; mp_refusal why = {{0xEE, 0x5A5A5A5A, 0x5A5A5A5A}};")
        out.append(f"        uint8_t *buf = (uint8_t *)malloc(MP_SIZE_{n} + 1); int rc, k;")
        out.append("        memset(&m, 0x5A, sizeof m);")
        out.append(f"        rc = mp_{n}_unpack(msg, len, &m, &why);")
        out.append("        if (rc != 0) { emit_refusal(o, rc, &why); free(buf); return 0; }")
        out.append(f'        emit(o, "OK"); show_{n}(o, &m); emit(o, " |");')
        out.append(f"        k = mp_{n}_pack(&m, buf, MP_SIZE_{n} + 1);")
        out.append("        emit_packed(o, k, buf); free(buf); return 0;")
        out.append("    }")
    out.append("    return -1;\n}\n")
    # G: any message
    out.append("static void do_generic(const uint8_t *msg, size_t len, sink *o)\n{")
    out.append("    mp_message m; mp_refusal why = {0xEE, 0x5A5A5A5A, 0x5A5A5A5A};")
    out.append("    uint8_t *buf; int rc, k;")
    out.append("    memset(&m, 0x5A, sizeof m);")
    out.append("    rc = mp_unpack(msg, len, &m, &why);")
    out.append("    if (rc != 0) { emit_refusal(o, rc, &why); return; }")
    out.append('    emit(o, "OK");')
    out.append("    switch (m.id) {")
    for cls in classes:
        n = cls.__name__
        out.append(f"    case MP_ID_{n}: show_{n}(o, &m.u.{n}); break;")
    out.append('    default: emit(o, " ?id");')
    out.append("    }")
    out.append('    emit(o, " |");')
    out.append("    buf = (uint8_t *)malloc((size_t)mp_message_size(m.id) + 1u);")
    out.append("    k = mp_pack(&m, buf, (size_t)mp_message_size(m.id) + 1u);")
    out.append("    emit_packed(o, k, buf); free(buf);\n}\n")
    # P / Q: pack from values
    out.append(
        "static int do_pack(int generic, const char *name, size_t cap, char **tok, int ntok, "
        "sink *o)\n{"
    )
    out.append("    uint8_t *buf = (uint8_t *)malloc(cap > 0 ? cap : 1u); int k = -100;")
    out.append("    mp_message any;")
    out.append("    memset(&any, 0x5A, sizeof any);")
    for cls in classes:
        n = cls.__name__
        out.append(f'    if (strcmp(name, "{n}") == 0) {{')
        out.append(f"        if (fill_{n}(&any.u.{n}, tok, ntok) != 0) {{ free(buf); return -1; }}")
        out.append(f"        any.id = MP_ID_{n};")
        out.append(
            f"        k = generic ? mp_pack(&any, buf, cap) : mp_{n}_pack(&any.u.{n}, buf, cap);"
        )
        out.append("    }")
    out.append("    if (k == -100) { free(buf); return -1; }")
    out.append(
        '    if (k < 0) emit(o, "ERR %d", k); else { emit(o, "OK"); emit_hex(o, buf, (size_t)k); }'
    )
    out.append("    free(buf); return 0;\n}\n")
    # C: calibration CRC, K: constants, S: sizes
    names, types = _cal_crc_signature()
    out.append("static int do_crc(char **tok, int ntok, sink *o)\n{")
    out.append(f"    if (ntok != {len(names)}) return -1;")
    args = ", ".join(f"({t})strtoll(tok[{i}], NULL, 10)" for i, t in enumerate(types))
    out.append(f'    emit(o, "OK %lu", (unsigned long)mp_calibration_crc({args}));')
    out.append("    return 0;\n}\n")
    out.append("static void do_constants(sink *o)\n{")
    for name in constants(registry):
        out.append(f'    emit(o, " %s=%lld", "{name}", (long long){name});')
    out.append("    { static const long long levels[] = MP_L_RATE_LEVELS_SPS; size_t i;")
    out.append('      emit(o, " RATE_LEVELS=");')
    out.append("      for (i = 0; i < sizeof levels / sizeof levels[0]; i++) "
               'emit(o, "%s%lld", i ? "," : "", levels[i]); }')  # fmt: skip
    out.append("}\n")
    out.append("static void do_sizes(sink *o)\n{")
    for cls in classes:
        out.append(
            f'    emit(o, " mp_{cls.__name__}=%lu", (unsigned long)sizeof(mp_{cls.__name__}));'
        )
    out.append('    emit(o, " mp_message=%lu", (unsigned long)sizeof(mp_message));')
    out.append("}\n")
    out.append(_DRIVER_TAIL)
    return "\n".join(out)


def _cal_crc_signature() -> tuple[list[str], list[str]]:
    # independent of the generator: the Python function and its documented struct layout
    import inspect

    names = list(inspect.signature(messages.calibration_crc).parameters)
    codes = {"B": "uint8_t", "i": "int32_t", "h": "int16_t", "I": "uint32_t"}
    types = [codes[c] for c in messages._CAL_CRC_LAYOUT.format.lstrip("<")]
    return names, types


# ------------------------------------------------------------------------------ expectations
def _public_enums() -> list[type[IntEnum] | type[IntFlag]]:
    return [*messages.protocol_enums(), Kind]


def constants(registry: Mapping[int, type[Message]] | None = None) -> dict[str, int]:
    """Every macro the contract names, with the value Python gives it."""
    registry = REGISTRY if registry is None else registry
    found: dict[str, int] = {
        "MP_PROTOCOL_VERSION": messages.PROTOCOL_VERSION,
        "MP_MAX_BODY": 240,
        "MP_AREA_COUNT": len(limits.Area),
        "MP_L_RATE_LEVEL_COUNT": len(limits.RATE_LEVELS_SPS),
        "MP_ADMIT_BEFORE_HELLO": 1,
        "MP_ADMIT_UNPAIRED": 2,
        "MP_ADMIT_NEVER_CACHED": 4,
    }
    from micropen.protocol.schema import schema_hash

    found["MP_SCHEMA_HASH"] = schema_hash(dict(registry))
    for enum in _public_enums():
        for member, value in enum.__members__.items():
            found[f"MP_{enum.__name__.upper()}_{member}"] = int(value)
    for name, value in vars(limits).items():
        if name.isupper() and type(value) is int:
            found[f"MP_L_{name}"] = value
    for cls in registry.values():
        found[f"MP_ID_{cls.__name__}"] = cls.ID
        found[f"MP_SIZE_{cls.__name__}"] = cls.STRUCT.size
    return found


def tokens(cls: type[Message], values: Sequence[Any]) -> list[str]:
    out = []
    for f, v in zip(cls.FIELDS, values, strict=True):
        if f.kind in ("str", "bytes"):
            raw = v.encode("latin-1") if isinstance(v, str) else bytes(v)
            out.append(raw.hex() or "-")
        else:
            out.append(str(int(v)))
    return out


def parse_unpacked(line: str) -> tuple[list[str], str]:
    """``OK TOK… | HEX`` → (tokens, packed hex); asserts the shape."""
    assert line.startswith("OK"), line
    fields, _, packed = line[2:].partition(" |")
    return fields.split(), packed.strip()


# ------------------------------------------------------------------------------ vectors
def _printable(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits + " ~!-_.") for _ in range(n))


def _value(f: Field, rng: random.Random, how: str) -> Any:
    if f.kind == "str":
        return {"lo": "", "hi": "~" * f.size, "space": " " * f.size}.get(
            how, _printable(rng, rng.randint(0, f.size))
        )
    if f.kind == "bytes":
        return {"lo": bytes(f.size), "hi": b"\xff" * f.size}.get(how, rng.randbytes(f.size))
    if f.enum is not None:
        members = sorted(int(m) for m in f.enum.__members__.values())
        pick = {"lo": members[0], "hi": members[-1]}.get(how, rng.choice(members))
        return f.enum(pick)
    return {"lo": f.lo, "hi": f.hi}.get(how, rng.randint(f.lo, f.hi))


def valid_messages(cls: type[Message], rng: random.Random, randoms: int = 4) -> list[Message]:
    """Boundaries (all fields at lo, all at hi, strings empty, full of "~" and full of spaces;
    each integer field alone at lo and at hi, each enumeration at every member) and random
    messages."""
    out = [cls(*(_value(f, rng, how) for f in cls.FIELDS)) for how in ("lo", "hi", "space")]
    for i, f in enumerate(cls.FIELDS):
        if f.kind not in C_TYPES:
            continue
        picks = [f.lo, f.hi] if f.enum is None else sorted(_members(f))
        for pick in picks:
            values = [_value(g, rng, "random") for g in cls.FIELDS]
            values[i] = pick if f.enum is None else f.enum(pick)
            out.append(cls(*values))
    out += [cls(*(_value(f, rng, "random") for f in cls.FIELDS)) for _ in range(randoms)]
    return out


def _members(f: Field) -> set[int]:
    assert f.enum is not None
    return {int(m) for m in f.enum.__members__.values()}


def _body_offsets(cls: type[Message]) -> Iterator[tuple[Field, int]]:
    offset = 1
    for f in cls.FIELDS:
        yield f, offset
        offset += f.byte_size


def invalid_payloads(cls: type[Message], rng: random.Random) -> list[tuple[str, bytes]]:
    """Bytes the Python decoder refuses: each integer field just outside its range and at
    the far end of its type, enum values of no member, wrong lengths, bad strings."""
    base = bytearray(valid_messages(cls, rng, randoms=1)[-1].encode())
    out: list[tuple[str, bytes]] = [("short", bytes(base[:-1])), ("long", bytes(base) + b"\x00")]
    if cls.STRUCT.size > 1:
        out.append(("id only", bytes(base[:1])))
    for f, offset in _body_offsets(cls):
        if f.kind in C_TYPES:
            tlo, thi = TYPE_RANGE[f.kind]
            if f.enum is not None:
                members = _members(f)
                bad = [v for v in (max(members) + 1, min(members) - 1, thi, tlo) if tlo <= v <= thi]
                bad += [v for v in range(min(members), max(members)) if v not in members][:2]
                bad = [v for v in bad if v not in members]
            else:
                bad = [v for v in (f.lo - 1, f.hi + 1, tlo, thi) if tlo <= v <= thi]
                bad = [v for v in bad if not f.lo <= v <= f.hi]
            for v in dict.fromkeys(bad):
                payload = bytearray(base)
                payload[offset : offset + f.byte_size] = struct.pack("<" + f.struct_code, v)
                out.append((f"{f.name}={v}", bytes(payload)))
        elif f.kind == "str":
            for label, text in (
                ("interior NUL", b"A\x00B"),
                ("leading NUL", b"\x00A"),
                ("non-ASCII", b"A\x80"),
                ("control", b"\x1f"),
                ("DEL", b"\x7f"),
                ("newline", b"ab\n"),
            ):
                if len(text) <= f.size:
                    payload = bytearray(base)
                    payload[offset : offset + f.size] = text.ljust(f.size, b"\x00")
                    out.append((f"{f.name} {label}", bytes(payload)))
    return out


def pack_refusals(cls: type[Message]) -> list[tuple[str, list[str]]]:
    """Field values the Python constructor refuses (and that the C struct can hold), as
    driver tokens: each integer field outside its range, strings too long or not printable."""
    rng = random.Random(cls.ID)
    base = valid_messages(cls, rng, randoms=1)[-1]
    out = []
    for i, f in enumerate(cls.FIELDS):
        candidates: list[Any] = []
        if f.kind in C_TYPES:
            tlo, thi = TYPE_RANGE[f.kind]
            if f.enum is not None:
                members = _members(f)
                candidates = [v for v in (max(members) + 1, tlo, thi) if v not in members]
            else:
                candidates = [v for v in (f.lo - 1, f.hi + 1) if tlo <= v <= thi]
        elif f.kind == "str":
            candidates = ["x" * (f.size + 1), "a\tb", "\x7f", "caf\xe9"]
        for v in candidates:
            values = list(base)
            values[i] = v
            out.append((f"{f.name}={v!r}", tokens(cls, values)))
    return out


# ------------------------------------------------------------------------------ the pen
_firmware: Any = None


def pen_answer(payload: bytes) -> tuple[int, int, int] | None:
    """The Nak (error, value, limit) the Python pen answers to ``payload`` when its decoder
    refuses it — computed by the simulator's own handler — or None when it decodes."""
    global _firmware
    try:
        decode_message(payload)
    except RemoteProtocolError as error:
        if _firmware is None:
            from micropen.sim.pen import SimConfig, SimulatedPen

            _firmware = SimulatedPen(SimConfig(), now=0.0).firmware
        sent: list[Message] = []
        _firmware._notify = lambda message, t, urgent=False: sent.append(message)
        _firmware._on_bad_message(payload, error, 0.0)
        (nak,) = sent
        assert isinstance(nak, messages.Nak)
        return int(nak.error), nak.value, nak.limit
    return None


def _i32(value: int) -> int:
    return ((value + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000


def expected_answer(
    payload: bytes, registry: Mapping[int, type[Message]] | None = None
) -> tuple[int, int, int] | None:
    """The refusal for ``payload``: the Python pen's own answer for the real registry; for
    another registry the same rule (sim/firmware.py ``_on_bad_message``), applied here — a
    test checks the two agree on the real registry."""
    if registry is None:
        return pen_answer(payload)
    try:
        synthetic_decode(registry, payload)
    except FieldOutOfRange as error:
        if error.refusal:
            return error.refusal, _i32(error.value), _i32(error.limit)
        return int(messages.ErrorCode.MALFORMED), payload[0], 0
    except RemoteProtocolError:
        known = bool(payload) and payload[0] in registry
        code = messages.ErrorCode.MALFORMED if known else messages.ErrorCode.UNKNOWN_COMMAND
        return int(code), payload[0] if payload else 0, 0
    return None


# ------------------------------------------------------------------------------ ctypes
class Refusal(ctypes.Structure):
    _fields_ = [("error", ctypes.c_uint8), ("value", ctypes.c_int32), ("limit", ctypes.c_int32)]


def ctypes_struct(cls: type[Message]) -> type[ctypes.Structure]:
    """The C struct mp_NAME as ctypes sees it (natural alignment, as the C compiler lays it)."""
    fields: list[tuple[str, Any]] = []
    for f in cls.FIELDS:
        if f.kind == "str":
            fields.append((f.name, ctypes.c_char * (f.size + 1)))
        elif f.kind == "bytes":
            fields.append((f.name, ctypes.c_uint8 * f.size))
        else:
            fields.append((f.name, C_TYPES[f.kind][1]))
    if not fields:
        fields = [("mp_empty", ctypes.c_uint8)]
    return type(f"mp_{cls.__name__}", (ctypes.Structure,), {"_fields_": fields})


def to_ctypes(cls: type[Message], message: Message) -> ctypes.Structure:
    struct_type = ctypes_struct(cls)
    values = {}
    for f, v in zip(cls.FIELDS, message, strict=True):
        if f.kind == "str":
            values[f.name] = v.encode("ascii")
        elif f.kind == "bytes":
            values[f.name] = (ctypes.c_uint8 * f.size)(*v)
        else:
            values[f.name] = int(v)
    return struct_type(**values)


# ------------------------------------------------------------------------------ synthetic
def synthetic_registry() -> dict[int, type[Message]]:
    """Messages using every field kind the schema supports — i8, enums on u16 and i16 fields
    with negative members, negative ranges, a message without fields — declared without
    staying in the global registry (ids 0xD0–0xD3 are free)."""

    class Tone(IntEnum):
        LOW = -3
        MID = 0
        HIGH = 7

    class Wide(IntEnum):
        A = 1
        B = 300
        C = 65535

    made: list[type[Message]] = []
    try:

        class SynInts(Message, msg_id=0xD0, kind=Kind.NOTIFY):
            a: int = field("i8", lo=-100, hi=100)
            b: int = field("i8")
            c: int = field("u16", lo=5, hi=60000)
            d: int = field("i16", lo=-300, hi=-10, refuse=messages.ErrorCode.DEPTH_OUT_OF_RANGE)
            e: int = field("i32", lo=-2_000_000_000, hi=2_000_000_000)
            f: int = field("u32", lo=7, hi=0xFFFF_FFF0, refuse=messages.ErrorCode.BAD_STATE)
            g: int = field("u8", lo=3, hi=3)

        made.append(SynInts)

        class SynEnums(Message, msg_id=0xD1, kind=Kind.NOTIFY):
            tone: Tone = field("i16", enum=Tone, refuse=messages.ErrorCode.UNKNOWN_AREA)
            wide: Wide = field("u16", enum=Wide)
            small: Tone = field("i8", enum=Tone)

        made.append(SynEnums)

        class SynEmpty(Message, msg_id=0xD2, kind=Kind.NOTIFY):
            pass

        made.append(SynEmpty)

        class SynBlobs(Message, msg_id=0xD3, kind=Kind.NOTIFY):
            one: str = field("str", size=1)
            raw: bytes = field("bytes", size=1)
            pad: int = field("u8")
            name: str = field("str", size=7)
            tail: int = field("u32")

        made.append(SynBlobs)
    finally:
        for cls in made:
            REGISTRY.pop(cls.ID, None)
    return {cls.ID: cls for cls in made}


def synthetic_decode(registry: Mapping[int, type[Message]], payload: bytes) -> Message:
    """decode_message for a registry that is not the global one."""
    if not payload:
        raise RemoteProtocolError("empty message")
    cls = registry.get(payload[0])
    if cls is None:
        raise RemoteProtocolError(f"unknown message id 0x{payload[0]:02X}")
    return cls._decode(payload, 1, len(payload))


__all__ = [
    "Kit",
    "Refusal",
    "build_driver",
    "constants",
    "ctypes_struct",
    "driver_source",
    "expected_answer",
    "invalid_payloads",
    "pack_refusals",
    "parse_unpacked",
    "pen_answer",
    "synthetic_decode",
    "synthetic_registry",
    "to_ctypes",
    "tokens",
    "valid_messages",
    "write_kit",
]
