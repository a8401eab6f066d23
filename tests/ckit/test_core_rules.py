"""The hand-written C core keeps the kit's rules: C99 with every warning an error (more than the
kit's own flags), only <stdint.h>, <stddef.h> and <string.h>, no malloc, no stdio, no floating
point, no variable-length arrays, every exported name mp_/MP_, each header compiling alone;
and protocol/c/CORE.md states the sizes _core_sizes.py measures."""

from __future__ import annotations

import platform
import re
import subprocess
from pathlib import Path

import _core_sizes
import cbuild
import pytest
from _core_harness import CORE, CORE_SOURCES

HEADERS = sorted(CORE.glob("mp_*.h"))
ALLOWED = {"stdint.h", "stddef.h", "string.h"}
EXTRA = [
    "-Wconversion",
    "-Wsign-conversion",
    "-Wshadow",
    "-Wcast-qual",
    "-Wstrict-prototypes",
    "-Wmissing-prototypes",
    "-Wvla",
    "-Wdouble-promotion",
    "-Wfloat-equal",
    "-Wcast-align",
    "-Wundef",
    "-Wpointer-arith",
]


def _code(path: Path) -> str:
    """The source without comments and string literals."""
    text = re.sub(r"/\*.*?\*/", " ", path.read_text(encoding="utf-8"), flags=re.S)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def test_the_core_is_what_the_contract_lists() -> None:
    names = sorted(p.name for p in CORE.glob("*.[ch]"))
    assert names == [
        "mp_cobs.c", "mp_cobs.h", "mp_crc32.c", "mp_crc32.h", "mp_frame.c", "mp_frame.h",
        "mp_link.c", "mp_link.h", "mp_port.h", "mp_replycache.c", "mp_replycache.h",
    ]  # fmt: skip


@pytest.mark.parametrize("path", [*CORE_SOURCES, *HEADERS], ids=lambda p: p.name)
def test_only_the_three_standard_headers_and_nothing_that_needs_a_runtime(path: Path) -> None:
    code = _code(path)
    system = set(re.findall(r"#\s*include\s*<([^>]+)>", code))
    assert system <= ALLOWED, f"{path.name} includes {sorted(system - ALLOWED)}"
    local = set(re.findall(r'#\s*include\s*"([^"]+)"', path.read_text(encoding="utf-8")))
    assert all((CORE / name).exists() for name in local), local
    banned = (
        r"\b(malloc|calloc|realloc|free|printf|fprintf|sprintf|snprintf|puts|FILE|float"
        r"|double|abort|exit)\b"
    )
    assert not re.search(banned, code), f"{path.name}: {re.search(banned, code)}"


@pytest.mark.parametrize("opt", ["-O0", "-O2", "-Os"])
def test_more_warnings_than_the_kit_asks_are_still_errors(opt: str, tmp_path: Path) -> None:
    for source in CORE_SOURCES:
        cbuild.build(
            [source], tmp_path / (source.stem + ".o"), include=[CORE], extra=[opt, *EXTRA, "-c"]
        )


@pytest.mark.parametrize("header", HEADERS, ids=lambda p: p.name)
def test_each_header_compiles_alone(header: Path, tmp_path: Path) -> None:
    source = tmp_path / "one.c"
    source.write_text(
        f'#include "{header.name}"\nint mp_probe(void);\nint mp_probe(void) {{ return 0; }}\n'
    )
    cbuild.build([source], tmp_path / "one.o", include=[CORE], extra=["-c"])


def test_every_exported_symbol_is_mp(tmp_path: Path) -> None:
    exported = []
    for source in CORE_SOURCES:
        obj = cbuild.build([source], tmp_path / (source.stem + ".o"), include=[CORE], extra=["-c"])
        out = subprocess.run(
            ["nm", "-g", "--defined-only", str(obj)], capture_output=True, text=True, check=True
        )
        exported += [line.split()[-1] for line in out.stdout.splitlines() if line.strip()]
    assert exported and all(name.startswith("mp_") for name in exported), exported


def test_the_byte_table_crc_is_the_same_crc(tmp_path: Path) -> None:
    probe = tmp_path / "crc.c"
    probe.write_text(
        '#include "mp_crc32.h"\n'
        "int main(void) {\n"
        '    static const uint8_t check[] = "123456789";\n'
        "    return mp_crc32(0, check, 9) == 0xCBF43926u ? 0 : 1;\n"
        "}\n"
    )
    for defines in ([], ["-DMP_CRC32_TABLE256"]):
        exe = cbuild.build(
            [probe, CORE / "mp_crc32.c"], tmp_path / "crc", include=[CORE], extra=defines
        )
        cbuild.run(exe)


def test_core_md_states_the_measured_sizes() -> None:
    text = (CORE / "CORE.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- sizes:[^>]*-->\n(.*?)\n<!-- /sizes -->", text, re.S)
    assert block, "CORE.md lost its sizes block"
    recorded = re.search(r"Measured with `([^`]+)` on (\S+) ", block.group(1))
    assert recorded
    here = (_core_sizes.compiler_version(), platform.machine())
    if (recorded.group(1), recorded.group(2)) != here:
        pytest.skip(f"sizes recorded with {recorded.groups()}, this machine has {here}")
    assert block.group(1) == _core_sizes.table(), (
        "protocol/c/CORE.md is stale: run python3 tests/ckit/_core_sizes.py --write"
    )
