"""docs/protocol.md is generated from the schema; this fails when the committed copy is stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from micropen.protocol import docgen
from micropen.protocol.messages import PROTOCOL_VERSION
from micropen.protocol.schema import REGISTRY, schema_hash

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
FIX = f"cd {DOC.parents[1]} && {docgen.COMMAND}"


def test_committed_reference_is_up_to_date() -> None:
    assert DOC.exists(), f"docs/protocol.md is missing; generate it with: {FIX}"
    committed = DOC.read_text(encoding="utf-8")
    assert committed == docgen.render(), f"docs/protocol.md is stale; regenerate it with: {FIX}"


def test_reference_names_every_message_field_and_the_schema_hash() -> None:
    text = docgen.render()
    assert f"schema hash **0x{schema_hash():08X}**" in text
    assert f"Protocol version **{PROTOCOL_VERSION}**" in text
    for msg_id, cls in REGISTRY.items():
        assert f"### 0x{msg_id:02X} {cls.__name__}" in text
        for f in cls.FIELDS:
            assert f"`{f.name}`" in text
    assert text.count("```mermaid") == 3  # the link (host, pen) and the pen's states


def test_command_line_prints_and_writes_the_same_text(tmp_path: Path) -> None:
    out = tmp_path / "protocol.md"
    docgen.main(["--write", str(out)])
    printed = subprocess.run(
        [sys.executable, "-m", "micropen.protocol.docgen"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.read_text(encoding="utf-8") == printed == docgen.render()
