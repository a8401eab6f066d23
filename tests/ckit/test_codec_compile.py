"""The generated codec as a firmware team meets it: strict C99 with the warnings firmware builds
turn on, C++ compatible, no allocation, no stdio, no floating point, only ``mp_`` names exported,
small, deterministic — and generic: a schema using every field kind compiles and round-trips
unchanged (the next message someone declares needs no change here)."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cbuild
import pytest
from _codec_kit import (
    build_driver,
    expected_answer,
    invalid_payloads,
    parse_unpacked,
    synthetic_decode,
    synthetic_registry,
    tokens,
    valid_messages,
    write_kit,
)

from micropen.protocol import behaviour, cgen, limits
from micropen.protocol.cgen_size import measure_kit
from micropen.protocol.messages import PROTOCOL_VERSION, SetDepth
from micropen.protocol.schema import REGISTRY, schema_hash

# what firmware builds commonly add to -Wall -Wextra (cbuild adds -std=c99 -pedantic -Werror)
FIRMWARE_WARNINGS = [
    "-Wconversion", "-Wsign-conversion", "-Wshadow", "-Wcast-qual", "-Wstrict-prototypes",
    "-Wmissing-prototypes", "-Wundef", "-Wredundant-decls", "-Wvla", "-Wswitch-default",
]  # fmt: skip


def test_compiles_with_strict_and_firmware_warnings_at_every_level(tmp_path: Path) -> None:
    kit = write_kit(tmp_path)
    source = kit.folder / "mp_messages.c"
    for level in ("-O0", "-O2", "-Os"):
        obj = tmp_path / f"m{level}.o"
        cbuild.build([source], obj, include=kit.include, extra=["-c", level, *FIRMWARE_WARNINGS])
        assert obj.stat().st_size > 0


def test_header_and_source_compile_as_cpp(tmp_path: Path) -> None:
    cbuild.compiler()  # skips, with the reason, when there is no C compiler at all
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None:
        pytest.skip("no C++ compiler (c++ or $CXX); the kit is C99, C++ use is optional")
    kit = write_kit(tmp_path)
    args = [cxx, "-x", "c++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic",
            *(f"-I{p}" for p in kit.include), "-c", str(kit.folder / "mp_messages.c"),
            "-o", str(tmp_path / "m.o")]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def _nm(obj: Path, *flags: str) -> list[str]:
    nm = shutil.which("nm")
    assert nm is not None, "binutils' nm is needed (it ships with the C toolchain)"
    out = subprocess.run([nm, *flags, str(obj)], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]


def test_no_allocation_no_stdio_no_floats_and_only_mp_names(tmp_path: Path) -> None:
    kit = write_kit(tmp_path)
    obj = cbuild.build([kit.folder / "mp_messages.c"], tmp_path / "m.o", include=kit.include,
                       extra=["-c", "-Os"])  # fmt: skip
    # it calls nothing but the core's CRC and two string.h functions the compiler may inline
    assert set(_nm(obj, "-u")) <= {"mp_crc32", "memcpy", "memset"}
    exported = _nm(obj, "-g", "--defined-only")
    assert exported and all(name.startswith("mp_") for name in exported), exported
    for name in ("mp_messages.h", "mp_messages.c"):
        text = (kit.folder / name).read_text(encoding="ascii")
        includes = set(re.findall(r'#include [<"]([^>"]+)[>"]', text))
        assert includes <= {"stddef.h", "stdint.h", "string.h", "mp_crc32.h", "mp_messages.h"}
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        assert not re.search(
            r"\b(float|double|malloc|free|printf|static\s+\w+\s+\w+\s*\[\s*\])\b", code
        )


def test_the_codec_uses_no_ram_and_fits_a_small_flash() -> None:
    """All tables are const (flash); -Os code and tables stay well inside a Cortex-M0's flash.
    The budget (12 KiB on the host compiler) is a tripwire for a generator change that bloats
    the output, not a measurement: docs/c-kit.md carries the measured figures."""
    cbuild.compiler()
    report = measure_kit({n: ("generated", d) for n, d in cgen.generate().items()})
    (codec,) = report.objects
    assert codec.name == "mp_messages.o"
    assert (codec.data, codec.bss) == (0, 0)
    assert 1024 < codec.text <= 12 * 1024


def test_output_is_deterministic_and_names_its_maker() -> None:
    first = cgen.generate()
    assert cgen.generate() == first
    # another process, another hash seed: the same bytes
    code = (
        "import hashlib, sys; from micropen.protocol import cgen; "
        "sys.stdout.write(''.join(hashlib.sha256(d).hexdigest() "
        "for _, d in sorted(cgen.generate().items())))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                           check=True).stdout  # fmt: skip
    import hashlib

    assert other == "".join(hashlib.sha256(d).hexdigest() for _, d in sorted(first.items()))
    for data in first.values():
        head = data.decode("ascii").split("*/", 1)[0]
        assert "micropen.protocol.cgen" in head and "gen-c" in head
        assert f"version {PROTOCOL_VERSION}" in head
        assert f"0x{schema_hash():08X}" in head
        assert data.isascii()
    header = first["mp_messages.h"].decode("ascii")
    assert f"#define MP_SCHEMA_HASH 0x{schema_hash():08X}u" in header
    assert "#define MP_MAX_BODY 240" in header


def test_every_field_kind_round_trips_in_a_schema_that_uses_them_all(tmp_path: Path) -> None:
    """i8 fields, enums on u16/i16/i8 fields with negative members, ranges below zero, a u32
    range short of the top, a message without fields, one-byte strings and bytes, refusal codes
    on signed and enumerated fields: generated, compiled (sanitized when the toolchain can) and
    checked against the Python codec and the pen's refusal rule."""
    synthetic = synthetic_registry()
    registry = {**REGISTRY, **synthetic}
    files = cgen.generate(registry)
    assert files != cgen.generate()
    kit = write_kit(tmp_path, {**{n: d for n, (_, d) in cgen.kit_files().items()}, **files})
    driver = build_driver(kit, tmp_path, registry, sanitize=cbuild.sanitizers_work())
    lines: list[str] = []
    expected: list[str] = []
    for cls in synthetic.values():
        rng = random.Random(cls.ID)
        for m in valid_messages(cls, rng):
            wire = m.encode()
            assert synthetic_decode(registry, wire) == m
            lines.append(f"G {wire.hex()}")
            expected.append(f"OK {' '.join(tokens(cls, list(m)))} | {wire.hex()}")
            values = " ".join(tokens(cls, list(m)))
            lines.append(f"P {cls.__name__} {cls.STRUCT.size + 1} {values}".rstrip())
            expected.append(f"OK {wire.hex() or '-'}")
        for label, payload in invalid_payloads(cls, rng):
            answer = expected_answer(payload, registry)
            assert answer is not None, f"{cls.__name__} {label} decodes"
            lines.append(f"G {payload.hex() or '-'}")
            expected.append(" ".join(map(str, answer)))
    out = cbuild.run(driver, stdin=("\n".join(lines) + "\n").encode()).decode().splitlines()
    assert len(out) == len(lines)
    for line, want, got in zip(lines, expected, out, strict=True):
        if want.startswith("OK") and line.startswith("G"):
            assert parse_unpacked(got) == parse_unpacked(want), line
        elif want.startswith("OK"):
            assert got == want, line
        else:
            assert got.startswith("ERR ") and got.split()[2:] == want.split(), f"{line}: {got}"
    # a signed field's refusal carries its negative value and bound
    ints = next(c for c in synthetic.values() if c.__name__ == "SynInts")
    bad = bytearray(ints(0, 0, 5, -10, 0, 7, 3).encode())
    bad[5:7] = (-301).to_bytes(2, "little", signed=True)
    assert expected_answer(bytes(bad), registry) == (4, -301, -300)


def test_what_c_cannot_express_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "SPRAY_RATIO", 0.5, raising=False)
    with pytest.raises(cgen.KitError, match="SPRAY_RATIO"):
        cgen.generate()
    monkeypatch.delattr(limits, "SPRAY_RATIO")
    rules = dict(behaviour.ALLOWED_STATES)
    del rules[SetDepth]
    monkeypatch.setattr(behaviour, "ALLOWED_STATES", rules)
    with pytest.raises(cgen.KitError, match="SetDepth"):
        cgen.generate()


def test_a_percentage_becomes_ppm() -> None:
    header = cgen.generate()["mp_messages.h"].decode("ascii")
    # the spec's 5 % rate tolerance, without floating point
    assert re.search(r"#define MP_L_RATE_ACCEPT_TOL_PPM 50000\b", header)
    assert "MP_L_RATE_ACCEPT_TOL_PCT" not in header
