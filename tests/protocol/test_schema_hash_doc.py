"""The schema hash can be recomputed from docs/protocol.md alone.

A firmware team has only the document. This test reads the committed document as such a reader
would — the message headings, the field tables, the enumeration tables — rebuilds the canonical
text by the algorithm the "Schema hash" chapter spells out, and checks that its hash is the one
the document states and the one the code computes. A field, a range, an enum member or a typed
refusal missing from the tables, or an algorithm described wrongly, fails it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from micropen.protocol.schema import canonical_schema_text, schema_hash

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_HEADING = re.compile(r"^### 0x([0-9A-F]{2}) (\w+)$")
_ENUM_HEADING = re.compile(r"^### (\w+)$")
_INT_RANGE = re.compile(r"^(-?\d+)–(-?\d+)$")


def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [p.strip().replace("\\|", "|") for p in parts]


def _enum_tables(lines: list[str]) -> dict[str, list[tuple[str, int]]]:
    start = lines.index("## Enumerations")
    tables: dict[str, list[tuple[str, int]]] = {}
    current: list[tuple[str, int]] | None = None
    for line in lines[start:]:
        if line.startswith("## ") and line != "## Enumerations":
            break
        heading = _ENUM_HEADING.match(line)
        if heading:
            current = tables.setdefault(heading.group(1), [])
        elif current is not None and line.startswith("| ") and not line.startswith("| value"):
            value, name = _cells(line)
            current.append((name, int(value)))
    return tables


def _field_part(cells: list[str], enums: dict[str, list[tuple[str, int]]]) -> str:
    name, wire, range_text = cells[1].strip("`"), cells[2], cells[5]
    refuse = ""
    if " → `" in range_text:
        range_text, code = range_text.split(" → `")
        refuse = str(dict(enums["ErrorCode"])[code.rstrip("`")])
    sized = re.fullmatch(r"(char|u8)\[(\d+)\]", wire)
    if sized:
        kind = "str" if sized.group(1) == "char" else "bytes"
        size = int(sized.group(2))
        return f"{name}:{kind}:0:{size}:{size}::{refuse}"
    enum_name = re.match(r"^\[?(\w+)\]?(?:\(#\w+\))?(?::| \()", range_text)
    if enum_name and enum_name.group(1) in enums:
        members = enums[enum_name.group(1)]
        values = [v for _, v in members]
        text = ",".join(f"{n}={v}" for n, v in members)
        return f"{name}:{wire}:{min(values)}:{max(values)}:0:{text}:{refuse}"
    bounds = _INT_RANGE.match(range_text)
    assert bounds, f"field {name}: cannot read the range {range_text!r}"
    return f"{name}:{wire}:{bounds.group(1)}:{bounds.group(2)}:0::{refuse}"


def _canonical_from_document(text: str) -> str:
    lines = text.splitlines()
    enums = _enum_tables(lines)
    messages: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        heading = _HEADING.match(lines[i])
        if not heading:
            i += 1
            continue
        msg_id, name = int(heading.group(1), 16), heading.group(2)
        kind = re.match(r"^\*\*(\w+)\*\*", lines[i + 2])
        assert kind, f"{name}: no kind line under its heading"
        parts = [f"{msg_id}:{name}:{kind.group(1)}"]
        i += 3
        while i < len(lines) and not lines[i].startswith("### ") and not lines[i].startswith("## "):
            cells = _cells(lines[i]) if lines[i].startswith("| ") else []
            if len(cells) == 7 and cells[1].startswith("`"):
                parts.append(_field_part(cells, enums))
            i += 1
        messages.append((msg_id, "|".join(parts)))
    return "\n".join(line for _, line in sorted(messages))


def test_the_schema_hash_is_recomputed_from_the_documents_own_tables() -> None:
    text = DOC.read_text(encoding="utf-8")
    canonical = _canonical_from_document(text)
    assert canonical == canonical_schema_text()  # names the first differing line on failure
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    recomputed = int.from_bytes(digest[:4], "little")
    stated = re.search(r"schema hash \*\*0x([0-9A-F]{8})\*\*", text)
    assert stated is not None
    assert recomputed == int(stated.group(1), 16) == schema_hash()


def test_the_document_shows_the_canonical_texts_first_lines() -> None:
    text = DOC.read_text(encoding="utf-8")
    for line in canonical_schema_text().splitlines()[:3]:
        assert f"\n{line}\n" in text
