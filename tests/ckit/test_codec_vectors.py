"""Byte-exact vectors between the Python codec and the generated C codec, for every message.

The C side is a test driver (``_codec_kit``) built with strict warnings, once plain and once
under ASan/UBSan; every vector is fed to it on stdin in one run:

* valid messages (each field at its bounds, strings empty and full, every enum member, random
  ones) are unpacked by C and packed again — byte-identical — and C packs them from their field
  values to the bytes Python encodes;
* invalid bytes (each field just outside its range, enum values of no member, wrong lengths,
  unknown ids, bad strings) are refused by C with the refusal (error, value, limit) the Python
  pen answers, computed by the simulator's own handler;
* values the Python constructor refuses are refused by C's pack.
"""

from __future__ import annotations

import random
from pathlib import Path

import cbuild
import pytest
from _codec_kit import (
    build_driver,
    constants,
    expected_answer,
    invalid_payloads,
    pack_refusals,
    parse_unpacked,
    pen_answer,
    tokens,
    valid_messages,
    write_kit,
)

from micropen.protocol import behaviour, cgen, limits
from micropen.protocol.errors import FieldOutOfRange, LocalProtocolError, RemoteProtocolError
from micropen.protocol.events import MessageReceived
from micropen.protocol.link import Link, Role
from micropen.protocol.messages import (
    CalRead,
    ErrorCode,
    GetStatus,
    Nak,
    Run,
    SetDepth,
    calibration_crc,
)
from micropen.protocol.schema import REGISTRY, Kind, Message, decode_message

MP_E_MALFORMED, MP_E_RANGE, MP_E_SPACE = -1, -2, -3  # the contract's result codes


@pytest.fixture(scope="module")
def kit_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("codec-vectors")
    write_kit(root)
    return root


@pytest.fixture(scope="module", params=["plain", "sanitized"])
def driver(request: pytest.FixtureRequest, kit_root: Path) -> Path:
    sanitize = request.param == "sanitized"
    if sanitize and not cbuild.sanitizers_work():
        pytest.skip("this toolchain cannot link and run ASan/UBSan programs")
    kit = write_kit(kit_root)
    return build_driver(kit, kit_root, sanitize=sanitize)


def ask(driver: Path, lines: list[str]) -> list[str]:
    """Every request in one run of the driver; one answer line per request."""
    out = cbuild.run(driver, stdin=("\n".join(lines) + "\n").encode()).decode().splitlines()
    assert len(out) == len(lines), "the driver answered a different number of lines"
    return out


def _all_valid() -> list[Message]:
    found = []
    for msg_id in sorted(REGISTRY):
        found += valid_messages(REGISTRY[msg_id], random.Random(msg_id))
    return found


def test_every_message_round_trips_byte_exact_through_c(driver: Path) -> None:
    valid = _all_valid()
    assert {type(m) for m in valid} == set(REGISTRY.values())
    lines = []
    for m in valid:
        name, wire = type(m).__name__, m.encode().hex()
        lines += [f"U {name} {wire}", f"G {wire}"]
    answers = ask(driver, lines)
    for i, m in enumerate(valid):
        want = tokens(type(m), list(m))
        for answer in answers[2 * i : 2 * i + 2]:
            fields, packed = parse_unpacked(answer)
            assert fields == want, f"{m}: C unpacked {fields}"
            assert packed == m.encode().hex(), f"{m}: C re-packed {packed}"


def test_c_packs_from_field_values_what_python_decodes_equal(driver: Path) -> None:
    valid = _all_valid()
    lines = []
    for m in valid:
        cls = type(m)
        values = " ".join(tokens(cls, list(m)))
        lines += [f"P {cls.__name__} {cls.STRUCT.size + 1} {values}"]
        lines += [f"Q {cls.__name__} {cls.STRUCT.size + 1} {values}"]
    answers = ask(driver, lines)
    for i, m in enumerate(valid):
        for answer in answers[2 * i : 2 * i + 2]:
            assert answer.startswith("OK "), f"{m}: {answer}"
            wire = bytes.fromhex(answer.split()[1])
            assert decode_message(wire) == m
            assert wire == m.encode()


def _expected_rc(payload: bytes) -> int:
    try:
        decode_message(payload)
    except FieldOutOfRange as error:
        field = next(f for f in REGISTRY[payload[0]].FIELDS if f.name == error.name)
        return MP_E_MALFORMED if field.enum is not None else MP_E_RANGE
    except RemoteProtocolError:
        return MP_E_MALFORMED
    raise AssertionError(f"{payload.hex()} decodes")


def _invalid_vectors() -> list[tuple[str, bytes]]:
    vectors: list[tuple[str, bytes]] = [("empty", b"")]
    for msg_id in sorted(REGISTRY):
        cls = REGISTRY[msg_id]
        found = invalid_payloads(cls, random.Random(msg_id))
        vectors += [(f"{cls.__name__} {label}", p) for label, p in found]
    unknown = [i for i in range(256) if i not in REGISTRY]
    vectors += [(f"unknown id 0x{i:02X}", bytes([i, 1, 0, 0, 0])) for i in unknown]
    return vectors


def test_bad_bytes_get_the_refusal_the_python_pen_answers(driver: Path) -> None:
    vectors = _invalid_vectors()
    # the refusals these vectors must reach, stated from the spec: a depth of 2501 µm is
    # DEPTH_OUT_OF_RANGE with the bound 2500; area 10 is UNKNOWN_AREA with the bound 9
    depth = SetDepth(7, 2500, 0).encode()
    assert pen_answer(depth[:5] + (2501).to_bytes(2, "little") + depth[7:]) == (4, 2501, 2500)
    run = Run(7, 9, 0, 1, 0).encode()
    assert pen_answer(run[:5] + bytes([10]) + run[6:]) == (11, 10, 9)
    lines, expected = [], []
    for label, payload in vectors:
        answer = pen_answer(payload)
        assert answer is not None, f"{label}: Python decodes {payload.hex()}"
        want = f"ERR {_expected_rc(payload)} {answer[0]} {answer[1]} {answer[2]}"
        lines.append(f"G {payload.hex() or '-'}")
        expected.append((label, want))
        if payload and payload[0] in REGISTRY:  # the message's own unpack says the same
            lines.append(f"U {REGISTRY[payload[0]].__name__} {payload.hex()}")
            expected.append((label, want))
    answers = ask(driver, lines)
    wrong = [
        f"{label}: C {got!r}, Python pen {want!r}"
        for (label, want), got in zip(expected, answers, strict=True)
        if got != want
    ]
    assert not wrong, "\n".join(wrong[:20])
    codes = {int(a.split()[2]) for a in answers}
    assert {ErrorCode.MALFORMED, ErrorCode.UNKNOWN_COMMAND, ErrorCode.DEPTH_OUT_OF_RANGE} <= codes


def test_a_message_unpacked_as_another_is_refused(driver: Path) -> None:
    """mp_X_unpack of bytes that are not an X: an unknown id or nothing is UNKNOWN_COMMAND (value
    the id, 0 when empty), another message's id MALFORMED (value the id), limit 0."""
    status = GetStatus(9).encode().hex()
    answers = ask(driver, ["U SetDepth " + status, "U SetDepth 3a09000000", "U SetDepth -"])
    assert answers == ["ERR -1 1 2 0", "ERR -1 2 58 0", "ERR -1 2 0 0"]


def test_pack_refuses_what_the_python_constructor_refuses(driver: Path) -> None:
    lines, cases = [], []
    for msg_id in sorted(REGISTRY):
        cls = REGISTRY[msg_id]
        for label, toks in pack_refusals(cls):
            values = _values_from_tokens(cls, toks)
            with pytest.raises(LocalProtocolError):
                cls(*values)
            for op in "PQ":
                lines.append(f"{op} {cls.__name__} {cls.STRUCT.size + 1} {' '.join(toks)}")
                cases.append(f"{cls.__name__} {label} ({op})")
    assert any("SetDepth depth_um=2501" in c for c in cases)
    answers = ask(driver, lines)
    wrong = [f"{c}: {a}" for c, a in zip(cases, answers, strict=True) if a != f"ERR {MP_E_RANGE}"]
    assert not wrong, "\n".join(wrong[:20])


def _values_from_tokens(cls: type[Message], toks: list[str]) -> list[object]:
    values: list[object] = []
    for f, tok in zip(cls.FIELDS, toks, strict=True):
        if f.kind in ("str", "bytes"):
            raw = b"" if tok == "-" else bytes.fromhex(tok)
            values.append(raw.decode("latin-1") if f.kind == "str" else raw)
        else:
            values.append(int(tok))
    return values


def test_pack_needs_room_for_the_id_and_the_body(driver: Path) -> None:
    lines, want = [], []
    for msg_id in sorted(REGISTRY):
        cls = REGISTRY[msg_id]
        m = valid_messages(cls, random.Random(msg_id), randoms=0)[0]
        values = " ".join(tokens(cls, list(m)))
        for cap in (0, cls.STRUCT.size, cls.STRUCT.size + 1):
            lines.append(f"P {cls.__name__} {cap} {values}")
            ok = cap == cls.STRUCT.size + 1
            want.append(f"OK {m.encode().hex()}" if ok else f"ERR {MP_E_SPACE}")
    assert ask(driver, lines) == want


def test_ids_kinds_names_and_admission_follow_the_declarations(driver: Path) -> None:
    answers = ask(driver, [f"I {i}" for i in range(256)])
    for msg_id, answer in enumerate(answers):
        cls = REGISTRY.get(msg_id)
        parts = answer.split()
        if cls is None:
            assert parts == ["OK", "-1", "0", "-", "-"]
            continue
        assert parts[1:4] == [str(cls.STRUCT.size), str(int(cls.KIND)), cls.__name__]
        if cls.KIND not in (Kind.COMMAND, Kind.SIM_COMMAND):
            assert parts[4:] == ["-"], f"{cls.__name__} is not a command"
            continue
        states = sum(1 << s for s in behaviour.ALLOWED_STATES[cls])
        flags = (
            (cls in behaviour.NO_HANDSHAKE_NEEDED)
            | (cls in behaviour.NO_PAIRING_NEEDED) << 1
            | (cls in behaviour.NEVER_CACHED) << 2
        )
        assert parts[4:] == [str(msg_id), str(states), str(flags)], cls.__name__
    # stated from the spec: Run only in IDLE (bit 1); Stop in every state, before Hello,
    # unpaired and never from the cache
    run, stop = answers[0x05].split(), answers[0x06].split()
    assert run[5:] == [str(1 << 1), "0"]
    assert stop[5:] == [str(0b111111), str(1 | 2 | 4)]


def test_area_table_and_constants_follow_limits(driver: Path) -> None:
    answers = ask(driver, [f"A {i}" for i in range(12)] + ["K"])
    for area_id, answer in enumerate(answers[:12]):
        profile = limits.AREAS.get(area_id)  # type: ignore[call-overload]
        if profile is None:
            assert answer == "OK -"
            continue
        lo, hi = profile.levels
        want = [area_id, profile.name, profile.default_um, profile.max_um]
        want += [profile.override_max_um, lo, hi]
        assert answer.split()[1:] == [str(v) for v in want]
    assert answers[4].split()[1:3] == ["4", "cheeks"]  # the spec's cheeks: 1.5 mm, 2.0 mm override
    assert answers[4].split()[4:6] == ["1500", "2000"]
    got = dict(item.split("=", 1) for item in answers[-1].split()[1:])
    want = {name: str(value) for name, value in constants().items()}
    assert {k: got.get(k) for k in want} == want
    # safety numbers, stated from the spec rather than read from limits.py
    assert got["MP_L_DEPTH_MAX_UM"] == "2500"
    assert got["MP_L_DEPTH_SOFT_CAP_UM"] == "1500"
    assert got["MP_L_RETRACT_MAX_MS"] == "50"
    assert (got["MP_L_HEARTBEAT_MIN_MS"], got["MP_L_HEARTBEAT_MAX_MS"]) == ("100", "2000")
    assert (got["MP_L_RATE_MIN_SPS"], got["MP_L_RATE_MAX_SPS"]) == ("50", "150")
    assert got["RATE_LEVELS"] == "50,70,90,110,130,150"
    assert got["MP_L_STROKES_MAX"] == "1000000"


def test_calibration_crc_is_pythons(driver: Path) -> None:
    cases = [
        (1, 0, 0, 0, 0, 0),
        (255, -200_000, -500, 200_000, 0xFFFF_FFFF, 0xFFFF_FFFF),
        (3, 12345, 17, -4321, 1_700_000_000, 42),
    ]
    answers = ask(driver, ["C " + " ".join(map(str, c)) for c in cases])
    assert answers == [f"OK {calibration_crc(*c)}" for c in cases]


def test_struct_sizes_are_the_ones_documented(driver: Path) -> None:
    (answer,) = ask(driver, ["S"])
    got = dict(item.split("=") for item in answer.split()[1:])
    want = {f"mp_{cls.__name__}": str(cgen.c_struct_size(cls.FIELDS)) for cls in REGISTRY.values()}
    want["mp_message"] = str(cgen.message_struct_size())
    assert got == want


def test_the_refusal_oracle_is_what_the_pen_sends_on_the_wire() -> None:
    """pen_answer calls the simulator's handler directly; here the same bytes travel through a
    real link to a simulated pen, whose Nak must be the same."""
    from micropen.sim.pen import SimConfig, SimulatedPen

    pen = SimulatedPen(SimConfig(), now=0.0)
    host = Link(Role.HOST)
    now = 0.0
    host.connect(now)

    def pump() -> list[Message]:
        nonlocal now
        got = []
        for _ in range(50):
            now += 0.01
            pen.receive_data(host.data_to_send(now), now)
            host.receive_data(pen.data_to_send(now), now)
            got += [e.message for e in host.events() if isinstance(e, MessageReceived)]
        return got

    pump()
    assert host.connected
    depth = SetDepth(77, 2500, 0).encode()
    payloads = [
        depth[:5] + (2501).to_bytes(2, "little") + depth[7:],
        CalRead(78, 0).encode()[:-1] + b"\x07",  # no such bank: MALFORMED
        depth[:-1],  # short
        bytes([0x3A, 79, 0, 0, 0]),  # unknown id
    ]
    for payload in payloads:
        host.send(_Raw(payload), now)
        naks = [m for m in pump() if isinstance(m, Nak)]
        assert len(naks) == 1, payload.hex()
        (nak,) = naks
        assert (int(nak.error), nak.value, nak.limit) == pen_answer(payload)
        assert (int(nak.error), nak.value, nak.limit) == expected_answer(payload, REGISTRY)


class _Raw:
    """A payload the host link frames as is (an invalid message in a valid frame)."""

    KIND = Kind.COMMAND

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def encode(self) -> bytes:
        return self.payload


def test_the_mirrored_refusal_rule_agrees_with_the_pen() -> None:
    """expected_answer (used for schemas the pen does not run) against the pen itself."""
    for _, payload in _invalid_vectors():
        assert expected_answer(payload, dict(REGISTRY)) == pen_answer(payload), payload.hex()
