"""Hypothesis drives the generated C codec through ctypes (a non-sanitized shared library: an
ASan library cannot be loaded into this process; the sanitizers see the same code in
test_codec_vectors.py).

* any bytes: C's mp_unpack accepts exactly what Python's decoder accepts, re-packs it to the
  same bytes, and refuses the rest with the refusal the Python pen answers;
* any valid message, as a C struct filled through ctypes: C's pack gives Python's bytes;
* any integer a field's C type can hold: C's pack accepts it exactly when Python's
  constructor does.
"""

from __future__ import annotations

import ctypes
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _codec_kit import Refusal, build_driver, ctypes_struct, pen_answer, to_ctypes, write_kit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from micropen.protocol import cgen
from micropen.protocol.errors import LocalProtocolError, RemoteProtocolError
from micropen.protocol.schema import MAX_BODY, REGISTRY, Field, Message, decode_message

MP_E_MALFORMED, MP_E_RANGE = -1, -2
ALL = tuple(REGISTRY[i] for i in sorted(REGISTRY))


def _strategies() -> ModuleType:
    """tests/protocol/strategies.py: the schema-driven strategies other areas share."""
    path = Path(__file__).resolve().parents[1] / "protocol" / "strategies.py"
    spec = importlib.util.spec_from_file_location("protocol_strategies", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("protocol_strategies", module)
    spec.loader.exec_module(module)
    return module


S = _strategies()


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    root = tmp_path_factory.mktemp("codec-ctypes")
    library = ctypes.CDLL(str(build_driver(write_kit(root), root, shared=True)))
    library.mp_unpack.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p,
                                  ctypes.POINTER(Refusal)]  # fmt: skip
    library.mp_pack.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
    library.drv_line.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    for cls in ALL:
        getattr(library, f"mp_{cls.__name__}_pack").argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
        ]  # fmt: skip
        getattr(library, f"mp_{cls.__name__}_unpack").argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.POINTER(Refusal),
        ]  # fmt: skip
    return library


def c_unpack(lib: ctypes.CDLL, payload: bytes) -> tuple[int, Refusal, bytes | None]:
    """mp_unpack, then mp_pack of what it gave: (rc, refusal, re-packed bytes or None)."""
    message = ctypes.create_string_buffer(cgen.message_struct_size())
    why = Refusal(0xEE, 0x5A5A5A5A, 0x5A5A5A5A)
    rc = lib.mp_unpack(payload, len(payload), message, ctypes.byref(why))
    if rc != 0:
        return rc, why, None
    out = ctypes.create_string_buffer(MAX_BODY + 1)
    n = lib.mp_pack(message, out, len(out))
    assert n > 0, f"mp_pack refused what mp_unpack accepted: {n}"
    return rc, why, out.raw[:n]


def payloads() -> st.SearchStrategy[bytes]:
    """Mostly almost-right messages: a known id with a body of the right length (random
    bytes: fields out of range, bad strings), or off by one; sometimes anything."""
    right = st.sampled_from(ALL).flatmap(
        lambda cls: st.binary(min_size=cls.STRUCT.size, max_size=cls.STRUCT.size).map(
            lambda body: bytes([cls.ID]) + body
        )
    )
    mutated = st.tuples(S.any_message(), st.integers(0, 255), st.integers(0, 255)).map(
        lambda t: _mutate(t[0].encode(), t[1], t[2])
    )
    return st.one_of(right, mutated, st.binary(max_size=250))


def _mutate(wire: bytes, where: int, value: int) -> bytes:
    """One byte of a valid message replaced (the id byte now and then)."""
    data = bytearray(wire)
    data[where % len(data)] = value
    return bytes(data)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads())
def test_any_bytes_c_unpack_agrees_with_python(lib: ctypes.CDLL, payload: bytes) -> None:
    rc, why, again = c_unpack(lib, payload)
    try:
        decoded: Message | None = decode_message(payload)
    except RemoteProtocolError:
        decoded = None
    if decoded is not None:
        assert rc == 0, f"C refused {payload.hex()} ({why.error}, {why.value}, {why.limit})"
        assert again == payload
        return
    assert rc in (MP_E_MALFORMED, MP_E_RANGE), rc
    assert (why.error, why.value, why.limit) == pen_answer(payload), payload.hex()


@given(payload=payloads())
def test_each_message_unpack_agrees_with_the_generic_one(lib: ctypes.CDLL, payload: bytes) -> None:
    if not payload or payload[0] not in REGISTRY:
        return
    cls = REGISTRY[payload[0]]
    struct = ctypes_struct(cls)()
    why = Refusal(0xEE, 0, 0)
    rc = getattr(lib, f"mp_{cls.__name__}_unpack")(payload, len(payload), ctypes.byref(struct),
                                                    ctypes.byref(why))  # fmt: skip
    generic_rc, generic_why, _ = c_unpack(lib, payload)
    assert rc == generic_rc
    if rc == 0:
        assert _values(cls, struct) == list(decode_message(payload))
    else:
        assert (why.error, why.value, why.limit) == (
            generic_why.error, generic_why.value, generic_why.limit,
        )  # fmt: skip


def _values(cls: type[Message], struct: ctypes.Structure) -> list[Any]:
    out: list[Any] = []
    for f in cls.FIELDS:
        value = getattr(struct, f.name)
        if f.kind == "str":
            out.append(value.decode("ascii"))
        elif f.kind == "bytes":
            out.append(bytes(value))
        else:
            out.append(value)
    return out


@given(message=S.any_message())
def test_any_valid_message_c_packs_to_pythons_bytes(lib: ctypes.CDLL, message: Message) -> None:
    cls = type(message)
    struct = to_ctypes(cls, message)
    out = ctypes.create_string_buffer(cls.STRUCT.size + 1)
    n = getattr(lib, f"mp_{cls.__name__}_pack")(ctypes.byref(struct), out, len(out))
    assert out.raw[:n] == message.encode()


def _is_int(f: Field) -> bool:
    return f.kind not in ("str", "bytes")


@st.composite
def field_values(draw: st.DrawFn) -> tuple[type[Message], int, int]:
    """A message class, one of its integer fields and any value its C type holds."""
    cls = draw(st.sampled_from([c for c in ALL if any(_is_int(f) for f in c.FIELDS)]))
    index = draw(st.sampled_from([i for i, f in enumerate(cls.FIELDS) if _is_int(f)]))
    f = cls.FIELDS[index]
    lo, hi = S.wire_range(f)
    near = st.sampled_from([v for v in (f.lo - 1, f.lo, f.hi, f.hi + 1) if lo <= v <= hi])
    return cls, index, draw(st.one_of(near, st.integers(lo, hi)))


@given(case=field_values(), data=st.data())
def test_c_pack_refuses_exactly_what_the_constructor_refuses(
    lib: ctypes.CDLL, case: tuple[type[Message], int, int], data: st.DataObject
) -> None:
    cls, index, value = case
    base = data.draw(S.messages(cls))
    values = list(base)
    values[index] = value
    try:
        expected: bytes | None = cls(*values).encode()
    except LocalProtocolError:
        expected = None
    struct = to_ctypes(cls, base)
    setattr(struct, cls.FIELDS[index].name, value)
    out = ctypes.create_string_buffer(cls.STRUCT.size + 1)
    n = getattr(lib, f"mp_{cls.__name__}_pack")(ctypes.byref(struct), out, len(out))
    if expected is None:
        assert n == MP_E_RANGE
    else:
        assert out.raw[:n] == expected


def test_ctypes_layouts_are_the_c_layouts(lib: ctypes.CDLL) -> None:
    """The ctypes mirrors above are the compiler's structs (else these tests prove nothing)."""
    out = ctypes.create_string_buffer(8192)
    assert lib.drv_line(b"S", out, len(out)) == 0
    sizes = dict(item.split("=") for item in out.value.decode().split()[1:])
    for cls in ALL:
        assert ctypes.sizeof(ctypes_struct(cls)) == int(sizes[f"mp_{cls.__name__}"])
