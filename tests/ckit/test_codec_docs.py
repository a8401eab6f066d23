"""docs/c-kit.md says what the kit is; this keeps it true.

Its generated blocks (the files gen-c writes, the message structs and their sizes, the measured
flash and RAM) must be what ``python3 -m micropen.protocol.cgen --write-doc docs/c-kit.md``
renders now, and its C examples must compile against the kit and behave as the text says."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import cbuild
import pytest
from _codec_kit import write_kit

from micropen.protocol import cgen
from micropen.protocol.messages import Ack, ErrorCode, Nak, Run, SetDepth
from micropen.protocol.schema import decode_message

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "c-kit.md"
FIX = "run: python3 -m micropen.protocol.cgen --write-doc docs/c-kit.md"


def _block(text: str, name: str) -> str:
    found = re.search(rf"<!-- BEGIN cgen:{name} .*?-->\n(.*?)<!-- END cgen:{name} -->", text, re.S)
    assert found is not None, f"docs/c-kit.md lost its generated {name} block"
    return found.group(1)


def test_the_files_and_structs_blocks_are_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert cgen.render_doc_blocks(text, only=["files", "messages"]) == text, FIX
    assert "`mp_messages.h` | generated" in _block(text, "files")


def test_the_sizes_block_is_measured_from_this_kit() -> None:
    cbuild.compiler()
    text = DOC.read_text(encoding="utf-8")
    documented = _block(text, "sizes")
    measured = _block(cgen.render_doc_blocks(text, only=["sizes"]), "sizes")

    def rows(block: str) -> list[str]:  # the objects and structs named, without figures
        return re.findall(r"^\| `([^`]+)` \|", block, re.M)

    assert rows(documented) == rows(measured), f"the kit's files changed; {FIX}"
    same_compiler = documented.splitlines()[0] == measured.splitlines()[0]
    if same_compiler:  # CI's compiler: the figures are exact
        assert documented == measured, f"the measured sizes changed; {FIX}"


def _examples() -> list[str]:
    blocks = re.findall(r"```c\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    return [b for b in blocks if b.startswith('#include "mp_messages.h"')]


def test_the_c_examples_compile_and_the_dispatcher_answers_as_documented(tmp_path: Path) -> None:
    examples = _examples()
    assert len(examples) >= 2
    kit = write_kit(tmp_path)
    sources = []
    for i, code in enumerate(examples):
        source = tmp_path / f"example{i}.c"
        source.write_text(code, encoding="ascii")
        sources.append(source)
    library = cbuild.build([*kit.sources, *sources], tmp_path / "examples.so", include=kit.include,
                           shared=True)  # fmt: skip
    lib = ctypes.CDLL(str(library))

    class Pen(ctypes.Structure):
        _fields_ = [("state", ctypes.c_uint8), ("fault", ctypes.c_uint8),
                    ("handshaken", ctypes.c_int), ("paired", ctypes.c_int),
                    ("depth_um", ctypes.c_uint16)]  # fmt: skip

    def answer(pen: Pen, payload: bytes) -> object:
        out = ctypes.create_string_buffer(64)
        n = lib.pen_answer(ctypes.byref(pen), payload, ctypes.c_size_t(len(payload)), out,
                           ctypes.c_size_t(len(out)))  # fmt: skip
        assert n > 0
        return decode_message(out.raw[:n])

    idle = Pen(1, 0, 1, 1, 0)
    assert answer(idle, SetDepth(5, 1000, 0).encode()) == Ack(5, 0)
    assert idle.depth_um == 1000
    wire = bytearray(SetDepth(6, 2500, 1).encode())
    wire[5:7] = (2501).to_bytes(2, "little")  # the codec refuses it with the field's own code
    assert answer(idle, bytes(wire)) == Nak(6, ErrorCode.DEPTH_OUT_OF_RANGE, 2501, 2500)
    assert answer(idle, SetDepth(7, 1600, 0).encode()) == Nak(
        7, ErrorCode.SOFT_CAP_NEEDS_OVERRIDE, 1600, 1500
    )
    assert answer(Pen(1, 0, 0, 1, 0), SetDepth(8, 1000, 0).encode()) == Nak(
        8, ErrorCode.NOT_CONNECTED, SetDepth.ID, 0
    )
    # Run is obeyed only in IDLE: in FAULT (emergency stop latched) and while RUNNING it is not
    assert answer(Pen(4, 9, 1, 1, 0), Run(9, 2, 0, 100, 0).encode()) == Nak(
        9, ErrorCode.FAULT_ACTIVE, 9, 0
    )
    assert answer(Pen(2, 0, 1, 1, 0), Run(10, 2, 0, 100, 0).encode()) == Nak(
        10, ErrorCode.BAD_STATE, 2, 0
    )
    # forehead (area 2) takes levels 1-3: 50, 70, 90 strokes/s
    assert [lib.rate_allowed(2, r) for r in (50, 90, 110)] == [1, 1, 0]
    assert lib.rate_allowed(99, 50) == 0


def test_the_readme_names_the_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "`micropen protocol gen-c OUT/`" in readme
    assert "docs/c-kit.md" in readme


@pytest.mark.parametrize("name", ["files", "messages", "sizes"])
def test_every_block_is_rendered_by_the_generator(name: str) -> None:
    text = DOC.read_text(encoding="utf-8")
    stale = text.replace(_block(text, name), "stale\n")
    if name == "sizes":
        cbuild.compiler()
    assert cgen.render_doc_blocks(stale, only=[name]) != stale
